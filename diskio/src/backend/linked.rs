//! What a backend does with the outcome of a linked write→sync: one ladder for every backend
//! that links them.

use crate::buf::AlignedBuf;
use crate::disk::{DiskIo, write_then_sync};
use crate::error::{BufResult, Error};
use crate::file::{FileId, SyncKind};
use crate::stats::OpTimer;

/// How a linked write→sync ended, as the backend saw it.
#[derive(Debug)]
pub enum Linked {
    /// Every byte written, then synced.
    Synced,
    /// The write moved only this many bytes, which broke the link: nothing was synced.
    Short(usize),
    /// The write failed (or the operation never ran); the sync was not attempted.
    WriteFailed(Error),
    /// The write completed and the sync failed.
    SyncFailed(Error),
    /// The write completed and the kernel cancelled the sync anyway (not expected).
    SyncCancelled,
}

/// Turns a linked write→sync's outcome into the result of
/// [`write_sync_at`](DiskIo::write_sync_at), finishing the write's and the sync's timers, and
/// never reporting success for data that was not synced: a short write is finished and synced
/// with [`write_then_sync`] (rewriting its prefix is harmless: the same bytes at the same
/// place), a cancelled sync is run on its own.
pub async fn finish_linked<D: DiskIo + ?Sized>(
    disk: &D,
    outcome: Linked,
    timers: (OpTimer, OpTimer),
    (file, bufs, offset, kind): (FileId, Vec<AlignedBuf>, u64, SyncKind),
) -> BufResult<usize, Vec<AlignedBuf>> {
    let (write_timer, sync_timer) = timers;
    let total: usize = bufs.iter().map(AlignedBuf::len).sum();
    match outcome {
        Linked::Synced => {
            let end = std::time::Instant::now();
            write_timer.ok_at(total as u64, end);
            sync_timer.ok_at(0, end);
            (Ok(total), bufs)
        }
        Linked::Short(written) => {
            write_timer.ok(written as u64);
            sync_timer.err();
            write_then_sync(disk, file, bufs, offset, kind).await
        }
        Linked::WriteFailed(e) => {
            write_timer.err();
            sync_timer.err();
            (Err(e), bufs)
        }
        Linked::SyncFailed(e) => {
            write_timer.ok(total as u64);
            sync_timer.err();
            (Err(e), bufs)
        }
        Linked::SyncCancelled => {
            write_timer.ok(total as u64);
            sync_timer.err();
            match disk.fsync(file, kind).await {
                Ok(()) => (Ok(total), bufs),
                Err(e) => (Err(e), bufs),
            }
        }
    }
}
