//! A wake-up that costs next to nothing when nobody waits.

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A [`Notify`] for "the log's state changed" that counts its waiters, so that waking nobody
/// is one atomic load rather than the `Notify`'s lock and read-modify-write. A lone durable
/// append wakes the log's waiters three times (group written, queue space freed, committer
/// stopped) and nobody waits.
///
/// The state it announces lives under the log's lock, and this relies on it: a waiter counts
/// itself in before it checks the state under the lock, and a waker changes the state under
/// the lock before it reads the count. So either the waiter's check sees the change, or the
/// waker sees the waiter (its count came before the lock the waker took after it).
#[derive(Default)]
pub(crate) struct Wakeup {
    notify: Notify,
    waiting: AtomicUsize,
}

impl Wakeup {
    /// Wakes every task waiting in [`until`](Self::until). Call it after changing the state,
    /// once the lock is released.
    pub(crate) fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Waits until `check` (which looks at the state under the log's lock) gives a value. It
    /// counts itself in before the first check: a caller whose first check usually succeeds
    /// checks once on its own first, rather than take the lock twice whenever it must wait.
    pub(crate) async fn until<T>(&self, mut check: impl FnMut() -> Option<T>) -> T {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _counted = Counted(&self.waiting);
        loop {
            let mut woken = pin!(self.notify.notified());
            woken.as_mut().enable();
            if let Some(v) = check() {
                return v;
            }
            woken.await;
        }
    }
}

/// A waiter counted in [`Wakeup::until`], counted out when it stops waiting (or is dropped).
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_sees_every_change_made_under_the_lock() {
        let shared = Arc::new((Mutex::new(0u64), Wakeup::default()));
        let waiter = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                for want in 1..=2000u64 {
                    let (state, wakeup) = &*shared;
                    wakeup
                        .until(|| {
                            (*state.lock().unwrap_or_else(|e| e.into_inner()) >= want).then_some(())
                        })
                        .await;
                }
            })
        };
        for _ in 0..2000 {
            let (state, wakeup) = &*shared;
            *state.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            wakeup.wake();
            tokio::task::yield_now().await;
        }
        // A lost wake-up would leave the waiter asleep for good.
        tokio::time::timeout(std::time::Duration::from_secs(20), waiter)
            .await
            .map(|joined| joined.map_err(|e| e.to_string()))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("the waiter missed a wake-up"));
        assert_eq!(
            shared.1.waiting.load(Ordering::SeqCst),
            0,
            "the waiter counted out"
        );
    }
}
