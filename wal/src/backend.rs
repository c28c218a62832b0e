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

/// The io_uring backend of the cargo features (`raw`, else `uring`) if this machine allows it,
/// else the blocking one; the reason for a fallback is logged (`tracing`) and returned.
///
/// # Errors
///
/// If neither backend can start.
#[cfg(any(feature = "raw", feature = "uring"))]
pub fn auto_disk() -> diskio::Result<(std::sync::Arc<dyn diskio::DynDiskIo>, Option<String>)> {
    let blocking = diskio_blocking::BlockingOptions::new();
    #[cfg(feature = "raw")]
    let auto = diskio_raw::auto(diskio_raw::RawOptions::new(), blocking)?;
    #[cfg(not(feature = "raw"))]
    let auto = diskio_uring::auto(diskio_uring::UringOptions::new(), blocking)?;
    Ok((auto.disk, auto.fallback_reason))
}
