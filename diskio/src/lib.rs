//! # diskio
//!
//! One asynchronous trait for disk I/O, [`DiskIo`], whose operations take and return **owned,
//! aligned buffers** ([`AlignedBuf`]), with typed errors ([`Error`]) and a buffer pool
//! ([`BufPool`]). Backends live in their own crates (`diskio-blocking` is the portable one);
//! the `conformance` crate proves that a backend keeps the contract.
//!
//! What backends share (admission of an operation, the table of open files, stats, `statx`
//! alignment, the explanation of a refused io_uring) is in [`backend`], for the authors of
//! backends.
//!
//! This crate has no runtime dependency: the futures of every backend are `Send` and run on any
//! Tokio runtime (or any executor the backend supports).
//!
//! ```
//! use diskio::{AlignedBuf, DiskIo, OpenOptions, SyncKind};
//!
//! /// Appends a block to a file and makes it durable; generic over the backend.
//! async fn append_block<D: DiskIo>(disk: &D, path: &std::path::Path, data: &[u8]) -> diskio::Result<u64> {
//!     let file = disk.open(path, &OpenOptions::read_write_create()).await?;
//!     let end = disk.file_len(file).await?;
//!     let buf = AlignedBuf::from_slice(data, disk.alignment())?;
//!     let (res, _buf) = disk.write_sync_at(file, vec![buf], end, SyncKind::Data).await;
//!     res?;
//!     disk.close(file).await?;
//!     Ok(end)
//! }
//! ```

#![deny(unsafe_code)]

pub mod backend;
#[allow(unsafe_code)] // the one module that allocates memory by hand
mod buf;
mod disk;
mod dynamic;
mod error;
mod file;
mod pool;
mod stats;

pub use buf::{AlignedBuf, BUF_ALIGN_MAX, BUF_BYTES_MAX};
pub use disk::{DiskIo, create_dir_all_durable};
pub use dynamic::DynDiskIo;
pub use error::{BadFileReason, BufResult, Context, Error, Misalignment, Op, Result};
pub use file::{Capabilities, DirectAlignment, FileId, OpenOptions, SyncKind};
pub use pool::BufPool;
pub use stats::{OpStats, StatsSnapshot};
