//! Reading the log from any LSN, across segments, while writers append.

use std::sync::Arc;

use diskio::{DiskIo, OpenOptions};

use crate::Lsn;
use crate::error::{Damage, Result, WalError};
use crate::format::{FRAME_HEADER_LEN, Frame, HEADER_LEN, decode_frame, frame_len};
use crate::state::Inner;
use crate::window::{OpenSegment, fill};

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its LSN.
    pub lsn: Lsn,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// Streams records in LSN order from a starting LSN, across segments, with memory bounded by
/// one read window (64 KiB at first, doubling up to 1 MiB as the reader moves on through a
/// segment, or one record if larger), and a second 1 MiB window once the windows are at their
/// largest: the next one, read ahead while this one is handed out. It sees only records that
/// are durable (in [`Durability::None`](crate::Durability::None): written);
/// [`next`](Self::next) returns `None` at the end of those and can be called again after more
/// appends.
pub struct Reader<D: DiskIo> {
    inner: Arc<Inner<D>>,
    next: Lsn,
    /// Records below this were visible when last asked.
    visible: Lsn,
    seg: Option<OpenSegment>,
    /// The last batch: (LSN, offset, length) of each record in the window or in `scratch`.
    batch: Vec<(Lsn, usize, usize)>,
    /// A record read the careful way, for a batch of one.
    scratch: Vec<u8>,
}

/// Consecutive records from [`Reader::next_batch`], borrowed from the reader's window: reading
/// them copies nothing. Every record in it was verified (checksum, LSN, segment).
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    bytes: &'a [u8],
    items: &'a [(Lsn, usize, usize)],
}

impl<'a> Batch<'a> {
    /// How many records.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none (never, for a batch `next_batch` returned).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The records in LSN order: each LSN with its bytes.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (Lsn, &'a [u8])> + 'a {
        let bytes = self.bytes;
        self.items
            .iter()
            .map(move |&(lsn, at, len)| (lsn, &bytes[at..at + len]))
    }
}

impl<D: DiskIo> Reader<D> {
    pub(crate) fn new(inner: Arc<Inner<D>>, from: Lsn) -> Self {
        Self {
            inner,
            next: from.max(1),
            visible: 0,
            seg: None,
            batch: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The next records, as many as the reader's window holds complete (up to its 1 MiB),
    /// borrowed rather than copied; `None` when every visible record has been read. The fastest
    /// way to replay a log: no copy and no call per record.
    ///
    /// # Errors
    ///
    /// As [`next`](Self::next).
    pub async fn next_batch(&mut self) -> Result<Option<Batch<'_>>> {
        self.batch.clear();
        if self.next >= self.visible {
            self.visible = self.inner.visible_end();
        }
        // Whole frames already in the window, complete when it was read and visible now.
        if let Some(seg) = self.seg.as_mut() {
            let limit = self.visible.min(seg.window_visible);
            let record_max = self.inner.opts.record_max;
            while seg.lsn == self.next && seg.lsn < limit {
                let at = (seg.pos - seg.window_at) as usize;
                let Some(rest) = seg.window.get(at..) else {
                    break;
                };
                match decode_frame(rest, seg.lsn, seg.salt, record_max) {
                    Frame::Record {
                        payload, frame_len, ..
                    } => {
                        self.batch
                            .push((seg.lsn, at + FRAME_HEADER_LEN, payload.len()));
                        seg.pos += frame_len as u64;
                        seg.lsn += 1;
                        self.next += 1;
                    }
                    Frame::End | Frame::Invalid(_) => break,
                }
            }
        }
        if !self.batch.is_empty() {
            // (The batch was filled from the open segment, so there is one.)
            let (bytes, items): (&[u8], &[_]) = match &self.seg {
                Some(seg) => (&seg.window[..], &self.batch),
                None => (&[], &[]),
            };
            return Ok(Some(Batch { bytes, items }));
        }
        // Anything else (a read, the next segment, a stale window, an error): one record the
        // careful way; the window it reads serves the next batches.
        let mut scratch = std::mem::take(&mut self.scratch);
        let got = self.next_into(&mut scratch).await;
        self.scratch = scratch;
        match got? {
            None => Ok(None),
            Some(lsn) => {
                self.batch.push((lsn, 0, self.scratch.len()));
                Ok(Some(Batch {
                    bytes: &self.scratch,
                    items: &self.batch,
                }))
            }
        }
    }

    /// Waits until the record at [`position`](Self::position) can be read (durable in
    /// [`Durability::Sync`](crate::Durability::Sync), written otherwise): for a reader that
    /// follows the log as it grows. Cancel-safe: dropping the future (a `select!` with a
    /// shutdown signal, a client gone) loses nothing, and the reader stays where it was.
    ///
    /// # Errors
    ///
    /// [`WalError::Poisoned`] once the log is poisoned, [`WalError::Closed`] once it is closed
    /// (records already readable are still returned by [`next`](Self::next) first).
    pub async fn wait(&mut self) -> Result<()> {
        let want = self.next;
        let mut outcome = Ok(());
        let inner = Arc::clone(&self.inner);
        inner
            .wait_for(|st| {
                if inner.visible_in(st) > want {
                    return true;
                }
                if let Some(cause) = &st.poison {
                    outcome = Err(WalError::Poisoned {
                        cause: Arc::clone(cause),
                    });
                    return true;
                }
                if st.closed {
                    outcome = Err(WalError::Closed);
                    return true;
                }
                false
            })
            .await;
        outcome
    }

    /// The LSN the next record will have.
    pub fn position(&self) -> Lsn {
        self.next
    }

    /// The next record, or `None` if every visible record has been read.
    ///
    /// # Errors
    ///
    /// [`WalError::Truncated`] if the records asked for were removed;
    /// [`WalError::Corrupt`] if a record that is durable does not verify; [`WalError::Io`].
    pub async fn next(&mut self) -> Result<Option<Record>> {
        let mut data = Vec::new();
        Ok(self
            .next_into(&mut data)
            .await?
            .map(|lsn| Record { lsn, data }))
    }

    /// Like [`next`](Self::next), but puts the record's bytes into `data` (replacing what was
    /// there, reusing its memory) and returns only the LSN: a replay that reuses one vector
    /// allocates nothing per record.
    ///
    /// # Errors
    ///
    /// As [`next`](Self::next).
    pub async fn next_into(&mut self, data: &mut Vec<u8>) -> Result<Option<Lsn>> {
        loop {
            if self.next >= self.visible {
                // Asked of the log only when the last answer is used up: one lock per batch of
                // records, not per record.
                self.visible = self.inner.visible_end();
                if self.next >= self.visible {
                    return Ok(None);
                }
            }
            if self.seg.is_none() {
                self.open_segment().await?;
            }
            let Some(seg) = self.seg.as_mut() else {
                return Ok(None);
            };
            let record_max = self.inner.opts.record_max;
            let visible = self.visible;
            fill(&self.inner, seg, FRAME_HEADER_LEN, visible).await?;
            let have = &seg.window[(seg.pos - seg.window_at) as usize..];
            let need = if have.len() >= FRAME_HEADER_LEN {
                let mut len = [0u8; 4];
                len.copy_from_slice(&have[4..8]);
                frame_len((u32::from_le_bytes(len) as usize).min(record_max + 1))
            } else {
                FRAME_HEADER_LEN
            };
            fill(&self.inner, seg, need, visible).await?;
            let at = (seg.pos - seg.window_at) as usize;
            match decode_frame(&seg.window[at..], seg.lsn, seg.salt, record_max) {
                Frame::Record {
                    payload, frame_len, ..
                } => {
                    let lsn = seg.lsn;
                    let wanted = lsn == self.next;
                    if wanted {
                        data.clear();
                        data.extend_from_slice(payload);
                    }
                    seg.pos += frame_len as u64;
                    seg.lsn += 1;
                    if wanted {
                        self.next += 1;
                        return Ok(Some(lsn));
                    }
                }
                Frame::End | Frame::Invalid(_) => {
                    // The records of this segment end here if the next segment starts at this
                    // LSN (what follows the last record of a sealed segment is never read).
                    let (segments, _) = self.inner.segments();
                    let continues = segments
                        .iter()
                        .any(|s| s.first_lsn == seg.lsn && s.first_lsn != seg.first_lsn);
                    if !continues && seg.lsn >= seg.window_visible {
                        // The window was read before this record was complete: read again.
                        seg.window.clear();
                        seg.window_at = seg.pos;
                        continue;
                    }
                    let damage =
                        match decode_frame(&seg.window[at..], seg.lsn, seg.salt, record_max) {
                            Frame::Invalid(d) if !continues => Some(d),
                            Frame::End if !continues => Some(Damage::DurableZeros),
                            _ => None,
                        };
                    if let Some(damage) = damage {
                        let path = segments
                            .iter()
                            .rev()
                            .find(|s| s.first_lsn <= seg.first_lsn)
                            .map(|s| s.path.clone())
                            .unwrap_or_default();
                        return Err(WalError::Corrupt {
                            segment: path,
                            offset: seg.pos,
                            lsn: seg.lsn,
                            damage,
                        });
                    }
                    self.next = self.next.max(seg.lsn);
                    let _ = seg.settle().await;
                    let file = seg.file;
                    self.seg = None;
                    self.inner.disk.close(file).await?;
                }
            }
        }
    }

    /// Opens the segment that holds `self.next`.
    async fn open_segment(&mut self) -> Result<()> {
        let (segments, first) = self.inner.segments();
        if self.next < first {
            return Err(WalError::Truncated {
                lsn: self.next,
                first,
            });
        }
        let Some(seg) = segments.iter().rev().find(|s| s.first_lsn <= self.next) else {
            return Ok(());
        };
        let disk = &self.inner.disk;
        let file = match disk.open(&seg.path, &OpenOptions::new()).await {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let (_, first) = self.inner.segments();
                return Err(WalError::Truncated {
                    lsn: self.next,
                    first,
                });
            }
            Err(e) => return Err(e.into()),
        };
        // The header need not be read: this log read it at recovery, or wrote it, and knows
        // the salt. Start at the last indexed record at or before the one wanted, not at the
        // first.
        let (lsn, pos) = seg
            .index
            .seek(self.next)
            .unwrap_or((seg.first_lsn, HEADER_LEN as u64));
        self.seg = Some(OpenSegment::new(file, seg, lsn, pos));
        Ok(())
    }
}

impl<D: DiskIo> Drop for Reader<D> {
    fn drop(&mut self) {
        if let Some(mut seg) = self.seg.take() {
            // Closing is an async call; a file id left open is released with the backend.
            // Spawn the close where a runtime is at hand, after any read ahead on the file.
            let inner = Arc::clone(&self.inner);
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    let _ = seg.settle().await;
                    let _ = inner.disk.close(seg.file).await;
                });
            }
        }
    }
}
