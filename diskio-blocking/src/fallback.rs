//! The fallback of the io_uring backends: this backend, when io_uring cannot run here.

use std::sync::Arc;

use diskio::{DiskIo, DynDiskIo, Error, Result};

use crate::{BlockingDisk, BlockingOptions};

/// A backend chosen at run time: the one that could start, and why io_uring was not used.
pub struct AutoDisk {
    /// The backend, through the object-safe form.
    pub disk: Arc<dyn DynDiskIo>,
    /// Why the io_uring backend was not used (`None` when `disk` is that backend).
    pub fallback_reason: Option<String>,
}

impl std::fmt::Debug for AutoDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoDisk")
            .field("backend", &DynDiskIo::name(&*self.disk))
            .field("fallback_reason", &self.fallback_reason)
            .finish()
    }
}

/// The backend `tried` if it started; if it failed with [`Error::Unsupported`] (io_uring
/// disabled, refused or too old here), the blocking backend with `options`, the reason logged
/// (`tracing` warning) and returned. Any other error (bad options) is returned as it is. The
/// io_uring backends' `auto` functions are this, with their own constructor.
///
/// # Errors
///
/// `tried`'s error when it is not `Unsupported`; the blocking backend's construction errors.
pub fn fallback<D: DiskIo>(tried: Result<D>, options: BlockingOptions) -> Result<AutoDisk> {
    match tried {
        Ok(disk) => Ok(AutoDisk {
            disk: Arc::new(disk),
            fallback_reason: None,
        }),
        Err(Error::Unsupported { reason }) => {
            tracing::warn!("diskio: io_uring unavailable, using the blocking backend: {reason}");
            Ok(AutoDisk {
                disk: Arc::new(BlockingDisk::new(options)?),
                fallback_reason: Some(reason),
            })
        }
        Err(e) => Err(e),
    }
}
