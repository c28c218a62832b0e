//! With the backend turned off by its environment variable, construction fails with
//! `Unsupported` and says why. (Its own test binary: it sets an environment variable for the
//! whole process.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step panics

use diskio::Error;

#[test]
fn disabled_backend_is_unsupported_with_the_reason() {
    // SAFETY: this binary holds this one test, which sets the variable before starting any
    // thread, so nothing reads the environment concurrently.
    unsafe { std::env::set_var(diskio_uring::DISABLE_ENV, "1") };
    match diskio_uring::UringDisk::with_defaults() {
        Err(Error::Unsupported { reason }) => {
            assert!(reason.contains(diskio_uring::DISABLE_ENV), "{reason}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}
