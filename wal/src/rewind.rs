//! Moving the end of the log: dropping a suffix ([`Wal::truncate_from`](crate::Wal::truncate_from))
//! and restarting at a later LSN ([`Wal::skip_to`](crate::Wal::skip_to)). Both hold appends
//! and take the committer's place while they rewrite the files, and both are crash-safe:
//!
//! - **Truncation** first makes a marker durable ([`CUT_SUFFIX`](crate::format::CUT_SUFFIX), an
//!   empty file named by the first LSN dropped), then removes the later segments, zeros the cut
//!   segment from the first dropped record on and syncs it, and removes the marker (directory
//!   synced) before it returns. A crash while the marker is there is finished by recovery, so a
//!   half-zeroed record never passes for damage to acknowledged data; once the call returns,
//!   no dropped record can come back.
//! - **A skip** writes the new first segment under a temporary name, synced, and renames it to
//!   a skip name ([`SKIP_SUFFIX`](crate::format::SKIP_SUFFIX)), directory synced: from that
//!   rename on the skip has happened, and recovery finishes it if a crash stops it. Then every
//!   older segment is removed, oldest first, and the skip file takes its segment name.

use std::sync::Arc;

use diskio::{DiskIo, OpenOptions};

use crate::Lsn;
use crate::direct::reopen_direct;
use crate::error::{Damage, Result, WalError};
use crate::format::{
    Frame, HEADER_LEN, TEMP_SUFFIX, cut_name, decode_frame, segment_name, skip_name,
};
use crate::recovery::{ActiveFound, FoundSegment, load_segment, zero_from};
use crate::state::{Active, Inner, SegmentRef};

/// Appends held and the committer's place taken, for as long as it lives.
struct Hold<'a, D: DiskIo> {
    inner: &'a Arc<Inner<D>>,
    _one_at_a_time: tokio::sync::MutexGuard<'a, ()>,
    /// This hold is the committer (it took the place from an idle log).
    committer: bool,
}

impl<D: DiskIo> Drop for Hold<'_, D> {
    fn drop(&mut self) {
        let restart = {
            let mut st = self.inner.lock();
            st.rewriting = false;
            if self.committer {
                // Records queued meanwhile (none: appends waited) or a sync asked for meanwhile
                // (the `Periodic` timer, `Wal::sync`) need the committer back.
                let work = st.poison.is_none() && (!st.pending.queue.is_empty() || st.sync_wanted);
                st.committing = work;
                work
            } else {
                false
            }
        };
        if restart {
            // A failure to spawn poisons the log, which wakes every waiter.
            let _ = Inner::spawn_committer(self.inner);
        }
        self.inner.progress.wake();
        self.inner.space.wake();
    }
}

impl<D: DiskIo> Inner<D> {
    /// Holds appends, makes everything appended so far durable, and takes the committer's
    /// place.
    async fn hold(inner: &Arc<Self>) -> Result<Hold<'_, D>> {
        let one_at_a_time = inner.rewrites.lock().await;
        inner.lock().rewriting = true;
        let mut hold = Hold {
            inner,
            _one_at_a_time: one_at_a_time,
            committer: false,
        };
        // What was queued before the hold keeps its LSNs: it goes down first.
        let last = {
            let mut st = inner.lock();
            st.usable()?;
            let last = st.next_lsn - 1;
            if st.marks.durable_end <= last {
                st.sync_wanted = true;
                if !st.committing {
                    st.committing = true;
                    drop(st);
                    Inner::spawn_committer(inner)?;
                }
            }
            last
        };
        let mut failed = None;
        inner
            .wait_for(|st| {
                if let Some(cause) = &st.poison {
                    failed = Some(Arc::clone(cause));
                    return true;
                }
                if st.marks.durable_end > last && !st.committing {
                    st.committing = true;
                    return true;
                }
                false
            })
            .await;
        if let Some(cause) = failed {
            return Err(WalError::Poisoned { cause });
        }
        hold.committer = true;
        Ok(hold)
    }

    /// Drops every record from `lsn` on (see [`Wal::truncate_from`](crate::Wal::truncate_from)).
    pub(crate) async fn truncate_from(inner: &Arc<Self>, lsn: Lsn) -> Result<()> {
        let _hold = Self::hold(inner).await?;
        let (segs, first, next) = {
            let st = inner.lock();
            (st.segments.all(), st.segments.first_lsn, st.next_lsn)
        };
        if lsn > next {
            return Err(WalError::NotAppended { lsn, next });
        }
        if lsn < first {
            return Err(WalError::Truncated { lsn, first });
        }
        if lsn == next {
            return Ok(());
        }
        let Some(k) = segs.iter().rposition(|s| s.first_lsn <= lsn) else {
            return Err(WalError::Truncated { lsn, first });
        };
        match inner.cut(&segs, k, lsn).await {
            Ok(active) => {
                let mut st = inner.lock();
                st.segments.sealed.truncate(k);
                st.segments.active = Some(active);
                st.next_lsn = lsn;
                st.marks.written_end = lsn;
                st.marks.durable_end = lsn;
                st.pending.first = lsn;
                Ok(())
            }
            Err(e) => Err(inner.rewrite_failed(e)),
        }
    }

    /// The file work of a truncation: later segments removed, segment `k` zeroed from `lsn` on
    /// and reopened as the active one.
    async fn cut(&self, segs: &[SegmentRef], k: usize, lsn: Lsn) -> Result<Active> {
        let disk = &self.disk;
        // The marker first: from here on recovery finishes the truncation, so a crash part way
        // (a zeroing write torn, a segment left) never looks like damage to acknowledged data.
        let marker = self.dir.join(cut_name(lsn));
        let f = disk
            .open(
                &marker,
                &OpenOptions::new().write(true).create(true).truncate(true),
            )
            .await?;
        disk.close(f).await?;
        disk.sync_dir(&self.dir).await?;
        let old = self.lock().segments.active.as_ref().map(|a| a.file);
        if let Some(file) = old {
            disk.close(file).await?;
        }
        for later in segs[k + 1..].iter().rev() {
            disk.remove_file(&later.path).await?;
        }
        if k + 1 < segs.len() {
            disk.sync_dir(&self.dir).await?;
        }
        let seg = &segs[k];
        let (file, image, header) = load_segment(disk, &seg.path).await?;
        // Every record before `lsn` is durable and was verified when the log was opened or
        // written; one that no longer verifies is damage found now.
        let mut at = HEADER_LEN;
        let mut expected = seg.first_lsn;
        while expected < lsn {
            let damage =
                match decode_frame(&image[at..], expected, header.salt, self.opts.record_max) {
                    Frame::Record { frame_len, .. } => {
                        at += frame_len;
                        expected += 1;
                        continue;
                    }
                    Frame::End => Damage::ZerosThenData,
                    Frame::Invalid(damage) => damage,
                };
            return Err(WalError::Corrupt {
                segment: seg.path.clone(),
                offset: at as u64,
                lsn: expected,
                damage,
            });
        }
        zero_from(disk, file, &image, at).await?;
        seg.index.cut(lsn);
        // Done and durable: the marker goes before anything is appended at `lsn`.
        disk.remove_file(&marker).await?;
        disk.sync_dir(&self.dir).await?;
        let found = ActiveFound {
            segment: FoundSegment {
                first_lsn: seg.first_lsn,
                path: seg.path.clone(),
                index: Arc::clone(&seg.index),
            },
            file,
            salt: header.salt,
            offset: at as u64,
        };
        let found = if self.opts.direct_io {
            let (found, tail) = reopen_direct(disk, found).await?;
            self.direct.reopened(tail, seg.first_lsn, found.offset);
            found
        } else {
            found
        };
        Ok(Active {
            seg: seg.clone(),
            file: found.file,
            offset: found.offset,
        })
    }

    /// Drops every record and restarts the log at `lsn` (see
    /// [`Wal::skip_to`](crate::Wal::skip_to)).
    pub(crate) async fn skip_to(inner: &Arc<Self>, lsn: Lsn) -> Result<()> {
        let _hold = Self::hold(inner).await?;
        let (segs, next, active_first) = {
            let st = inner.lock();
            let active_first = st.segments.active.as_ref().map(|a| a.seg.first_lsn);
            (st.segments.all(), st.next_lsn, active_first)
        };
        if lsn < next {
            return Err(WalError::SkipBackwards { lsn, next });
        }
        if active_first == Some(lsn) {
            // The active segment starts there and holds nothing: only older segments go.
            let doomed = {
                let mut st = inner.lock();
                st.segments.first_lsn = lsn;
                std::mem::take(&mut st.segments.sealed)
            };
            let removed = async {
                for seg in &doomed {
                    inner.disk.remove_file(&seg.path).await?;
                }
                inner.disk.sync_dir(&inner.dir).await
            };
            return removed.await.map_err(|e| inner.rewrite_failed(e.into()));
        }
        match inner.restart_at(&segs, lsn).await {
            Ok(active) => {
                inner.direct.restart(lsn, HEADER_LEN as u64);
                let mut st = inner.lock();
                st.segments.sealed.clear();
                st.segments.active = Some(active);
                st.segments.first_lsn = lsn;
                st.next_lsn = lsn;
                st.marks.written_end = lsn;
                st.marks.durable_end = lsn;
                st.pending.first = lsn;
                Ok(())
            }
            Err(e) => Err(inner.rewrite_failed(e)),
        }
    }

    /// The file work of a skip: the new segment made and committed under its skip name, the
    /// old ones removed, the new one renamed.
    async fn restart_at(&self, segs: &[SegmentRef], lsn: Lsn) -> Result<Active> {
        let disk = &self.disk;
        let temp = self.dir.join(format!("skip-{lsn}{TEMP_SUFFIX}"));
        match disk.remove_file(&temp).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let mut active = self.create_file(temp.clone(), lsn).await?;
        let skip = self.dir.join(skip_name(lsn));
        disk.rename(&temp, &skip).await?;
        // From here on the skip has happened: recovery finishes it.
        disk.sync_dir(&self.dir).await?;
        let old = self.lock().segments.active.as_ref().map(|a| a.file);
        if let Some(file) = old {
            disk.close(file).await?;
        }
        for seg in segs {
            disk.remove_file(&seg.path).await?;
        }
        disk.sync_dir(&self.dir).await?;
        let path = self.dir.join(segment_name(lsn));
        disk.rename(&skip, &path).await?;
        disk.sync_dir(&self.dir).await?;
        active.seg.path = path;
        Ok(active)
    }

    /// A rewrite that failed part way leaves the files in a state only recovery sorts out:
    /// the log is poisoned.
    fn rewrite_failed(&self, e: WalError) -> WalError {
        let cause = match e {
            WalError::Io(cause) => cause,
            other => Arc::new(diskio::Error::Unsupported {
                reason: other.to_string(),
            }),
        };
        self.poison_with(Arc::clone(&cause));
        WalError::Poisoned { cause }
    }
}
