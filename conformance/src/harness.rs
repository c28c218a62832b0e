//! Running scenarios: runtimes, scratch directories, and visible skips.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use diskio::{DiskIo, Error, OpenOptions, SyncKind};

/// What a scenario reports when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check ran and held.
    Passed,
    /// The scenario could not run here; the reason says why (printed, never silent).
    Skipped(String),
}

/// What every scenario gets: the backend under test and a scratch directory of its own.
pub struct Cx<D> {
    /// The backend under test, shared so scenarios can spawn tasks with it.
    pub disk: Arc<D>,
    /// A fresh directory, removed afterwards.
    pub dir: ScratchDir,
}

impl<D> Cx<D> {
    /// A path inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A directory removed (with its contents) when dropped.
///
/// Created under `$DISKIO_TEST_DIR` if set, else under the system's temporary directory. Point
/// `DISKIO_TEST_DIR` at the filesystem you care about: `O_DIRECT` scenarios skip on filesystems
/// that refuse `O_DIRECT` (tmpfs before Linux 6.6, some FUSE and network filesystems).
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `diskio-<label>-<pid>-<n>`.
    ///
    /// # Panics
    ///
    /// If the directory cannot be created: a test cannot run without it.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var_os("DISKIO_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("diskio-{label}-{}-{n}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&path) {
            panic!("cannot create scratch directory {}: {e}", path.display());
        }
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Prints a skip where it cannot be missed: straight to the process's stderr, past the test
/// harness's output capture.
pub fn report_skip(test: &str, reason: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "SKIPPED {test}: {reason}");
}

/// `Some(reason)` when the filesystem under `dir` refuses `O_DIRECT` (tmpfs before Linux 6.6, for one): tests
/// of direct I/O then skip with that reason.
pub fn direct_io_refused(dir: &Path) -> Option<String> {
    let probe = dir.join(".direct-probe");
    let opened = diskio::OpenOptions::read_write_create()
        .direct(true)
        .to_std()
        .open(&probe);
    let _ = std::fs::remove_file(&probe);
    opened.err().map(|e| {
        format!(
            "O_DIRECT refused under {} ({e}); set DISKIO_TEST_DIR to a directory on a disk",
            dir.display()
        )
    })
}

/// Which Tokio runtime a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// A multi-threaded runtime with 4 workers.
    MultiThread,
    /// A current-thread runtime.
    CurrentThread,
}

/// Builds the runtime.
///
/// # Panics
///
/// If Tokio cannot start (no threads): a test cannot run without it.
pub fn runtime(flavor: Flavor) -> tokio::runtime::Runtime {
    let mut builder = match flavor {
        Flavor::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(4);
            b
        }
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
    };
    match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start a Tokio runtime: {e}"),
    }
}

/// Constructs the backend with `make` (inside the runtime, for backends that need one) and runs
/// one scenario on it. A backend that reports [`Error::Unsupported`] is a visible skip.
///
/// # Panics
///
/// When the scenario fails (that is how a test fails), or when `make` fails otherwise.
pub fn run<D, M, F, Fut>(test: &str, flavor: Flavor, make: M, scenario: F)
where
    D: DiskIo,
    M: FnOnce() -> diskio::Result<D>,
    F: FnOnce(Arc<Cx<D>>) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let rt = runtime(flavor);
    let made = {
        let _guard = rt.enter();
        make()
    };
    let disk = match made {
        Ok(disk) => disk,
        Err(Error::Unsupported { reason }) => {
            report_skip(test, &format!("backend unsupported here: {reason}"));
            return;
        }
        Err(e) => panic!("{test}: cannot construct the backend: {e}"),
    };
    let cx = Arc::new(Cx {
        disk: Arc::new(disk),
        dir: ScratchDir::new(test),
    });
    match rt.block_on(scenario(Arc::clone(&cx))) {
        Outcome::Passed => {}
        Outcome::Skipped(reason) => report_skip(test, &reason),
    }
}

/// Where a backend runs a lone sync: of `rounds` syncs of `kind`, each alone in flight after a
/// one-block write to the same file, how many were done on their first poll, on a
/// multi-thread runtime (the caller is [`run`]'s thread inside it). `None` when the backend is
/// unsupported here (a visible skip, as in [`run`]).
///
/// A backend that makes a lone sync's system call on its caller's thread (as the shipped ones
/// do for [`SyncKind::Data`] when the caller may block) finishes every one there. One that
/// hands the sync to another thread, and does not poll for the answer before returning
/// `Pending` (turn its spin off), almost never does: its caller would have to lose its CPU for
/// the whole sync between the hand-off and the first check.
///
/// # Panics
///
/// When the backend cannot be built, or the file cannot be opened, written, synced or closed.
pub fn lone_syncs_done_at_once<D, M>(
    test: &str,
    make: M,
    kind: SyncKind,
    rounds: usize,
) -> Option<usize>
where
    D: DiskIo,
    M: FnOnce() -> diskio::Result<D>,
{
    let mut counted = None;
    run(test, Flavor::MultiThread, make, |cx| {
        let counted = &mut counted;
        async move {
            match count_lone_syncs_done_at_once(&cx, kind, rounds).await {
                Ok(n) => *counted = Some(n),
                Err(e) => panic!("{test}: {e}"),
            }
            Outcome::Passed
        }
    });
    counted
}

async fn count_lone_syncs_done_at_once<D: DiskIo>(
    cx: &Cx<D>,
    kind: SyncKind,
    rounds: usize,
) -> diskio::Result<usize> {
    let disk = &cx.disk;
    let file = disk
        .open(&cx.path("lone-sync"), &OpenOptions::read_write_create())
        .await?;
    let mut at_once = 0;
    let mut waker = std::task::Context::from_waker(std::task::Waker::noop());
    for round in 0..rounds {
        let block = disk.alignment();
        let (written, _) = disk
            .write_at(file, disk.alloc(block)?, (round * block) as u64)
            .await;
        written?;
        let mut sync = pin!(disk.fsync(file, kind));
        match sync.as_mut().poll(&mut waker) {
            std::task::Poll::Ready(res) => {
                res?;
                at_once += 1;
            }
            std::task::Poll::Pending => sync.await?,
        }
    }
    disk.close(file).await?;
    Ok(at_once)
}
