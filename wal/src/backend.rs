//! The backend chosen by cargo feature, and the run-time choice between io_uring and the
//! blocking backend.

/// The backend selected by cargo feature: `diskio_raw::RawDisk` with `raw`, else
/// `diskio_uring::UringDisk` with `uring`, else `diskio_blocking::BlockingDisk`.
#[cfg(feature = "raw")]
pub type DefaultDisk = diskio_raw::RawDisk;

/// The backend selected by cargo feature: `diskio_raw::RawDisk` with `raw`, else
/// `diskio_uring::UringDisk` with `uring`, else `diskio_blocking::BlockingDisk`.
#[cfg(all(feature = "uring", not(feature = "raw")))]
pub type DefaultDisk = diskio_uring::UringDisk;

/// The backend selected by cargo feature: `diskio_raw::RawDisk` with `raw`, else
/// `diskio_uring::UringDisk` with `uring`, else `diskio_blocking::BlockingDisk`.
#[cfg(not(any(feature = "raw", feature = "uring")))]
pub type DefaultDisk = diskio_blocking::BlockingDisk;

/// The io_uring backend if this machine allows it, else the blocking one; the reason for a
/// fallback is logged (`tracing`) and returned.
///
/// # Errors
///
/// If neither backend can start.
#[cfg(feature = "raw")]
pub fn auto_disk() -> diskio::Result<(std::sync::Arc<dyn diskio::DynDiskIo>, Option<String>)> {
    let auto = diskio_raw::auto(
        diskio_raw::RawOptions::new(),
        diskio_blocking::BlockingOptions::new(),
    )?;
    Ok((auto.disk, auto.fallback_reason))
}

/// The io_uring backend if this machine allows it, else the blocking one; the reason for a
/// fallback is logged (`tracing`) and returned.
///
/// # Errors
///
/// If neither backend can start.
#[cfg(all(feature = "uring", not(feature = "raw")))]
pub fn auto_disk() -> diskio::Result<(std::sync::Arc<dyn diskio::DynDiskIo>, Option<String>)> {
    let auto = diskio_uring::auto(
        diskio_uring::UringOptions::new(),
        diskio_blocking::BlockingOptions::new(),
    )?;
    Ok((auto.disk, auto.fallback_reason))
}
