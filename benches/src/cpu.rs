//! CPU time spent by the whole process (every thread: runtime workers, backend threads, the
//! kernel's io_uring workers, which are threads of the process) during a measurement window.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};

/// CPU time of the process: in its own code (user) and in the kernel on its behalf (system).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTime {
    /// User time.
    pub user: Duration,
    /// System time.
    pub system: Duration,
}

impl CpuTime {
    /// User plus system time.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    fn since(self, before: CpuTime) -> Option<CpuTime> {
        Some(CpuTime {
            user: self.user.checked_sub(before.user)?,
            system: self.system.checked_sub(before.system)?,
        })
    }
}

/// A thread that reads the process's CPU time (user and system, `getrusage(RUSAGE_SELF)`) when
/// the window opens and when it closes. It sleeps in between, so it adds nothing to what it
/// measures.
pub struct CpuWindow {
    handle: JoinHandle<Option<CpuTime>>,
}

impl CpuWindow {
    /// Measures from `from` to `until`.
    pub fn start(from: Instant, until: Instant) -> Self {
        let handle = std::thread::spawn(move || {
            sleep_until(from);
            let before = process_cpu()?;
            sleep_until(until);
            let after = process_cpu()?;
            after.since(before)
        });
        Self { handle }
    }

    /// The CPU time spent in the window (waits for it to close); `None` if it could not be read.
    pub fn finish(self) -> Option<CpuTime> {
        self.handle.join().ok().flatten()
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// User and system time of every thread of the process so far.
fn process_cpu() -> Option<CpuTime> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let time = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec().max(0) as u64)
            + Duration::from_micros(tv.tv_usec().max(0) as u64)
    };
    Some(CpuTime {
        user: time(usage.user_time()),
        system: time(usage.system_time()),
    })
}
