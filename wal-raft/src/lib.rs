//! # wal-raft
//!
//! An [openraft](https://docs.rs/openraft/0.9) log store on diskio's group-commit
//! [`wal`]: `RaftLogStorage` and `RaftLogReader` for any [`RaftTypeConfig`](openraft::RaftTypeConfig)
//! whose entries are serde types, on any [`DiskIo`](diskio::DiskIo) backend.
//!
//! - **Group commit.** `append` queues the entries in the log and returns; openraft's flush
//!   callback fires once the group commit carrying them is durable. Entries of many calls
//!   share one write and one sync; no task or thread is started per entry (one task per
//!   store fires the callbacks in order).
//! - **Readable at once.** Entries are readable when `append` returns: readers take durable
//!   entries from the log and the rest from memory.
//! - **Raft index `i` is LSN `i + 1`.** `truncate` is [`Wal::truncate_from`](wal::Wal::truncate_from),
//!   `purge` is [`Wal::truncate_before`](wal::Wal::truncate_before), and a purge past the end of
//!   the log (after a snapshot) is [`Wal::skip_to`](wal::Wal::skip_to): each crash-safe.
//! - **The vote** and the last purged log id are in `raft-meta` beside the log, replaced
//!   atomically (written to a temporary file, synced, renamed, directory synced) before the
//!   call returns. The committed log id is not kept (openraft's default): the state machine
//!   re-applies from its own last applied entry after a restart.
//! - **Bad input** (an index gap, a truncation below the purged prefix, an entry that does not
//!   decode or sits at the wrong index) is a `StorageError` naming the entry, never a panic.
//!
//! Entries are encoded with `postcard`, chosen by measurement: for an entry carrying a 256-byte
//! value, 269 bytes, encoded in 150–230 ns and decoded in 260–340 ns here, against bincode's
//! 309 bytes, 150–235 ns and 290–380 ns, MessagePack's 285 bytes and 540–630 / 815–1,140 ns,
//! and JSON's 624 bytes and 1.0–1.2 / 2.3–2.7 µs (three runs, best of seven passes over 10,000
//! entries each).
//!
//! [`kv`] is a small state machine (an in-memory key-value map with snapshots, optionally kept
//! on disk) for the examples and tests; [`net`] is a TCP transport, with the `raft-kv` node
//! binary and `raft-bench` on top.
//!
//! ## openraft 0.9, and what it costs a leader
//!
//! This crate uses openraft 0.9, the stable line: 0.10 is in alpha and its storage, network and
//! state-machine traits still change from one alpha to the next. One difference matters for
//! throughput. openraft 0.9's core waits for every `append` it makes to be flushed before it
//! goes on (`RaftCore::append_to_log`), so a leader proposing one entry per client write syncs
//! its log once per write: measured with `raft-kv --stats-every`, 1.0 records per group commit
//! on the leader against 23–30 on its followers (which receive entries in batches), and about
//! 4k replicated writes/s at 64 clients. The followers' group commit works as designed. The
//! `raft-kv` node therefore proposes the client writes that arrive while its previous proposal
//! is in flight as one entry ([`kv::Request::Batch`]), which took 64 clients to 29k writes/s
//! here. openraft 0.10 submits log I/O without waiting for it (its core's `append` path), which
//! would let the store's group commit batch a leader's entries by itself: the move to make once
//! 0.10 is released.

#![forbid(unsafe_code)]

mod error;

/// The repository README's Rust examples, compiled as doc tests (`no_run`: they would write
/// files in the working directory), so that they keep building against the crates' API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;

pub mod kv;
mod meta;
pub mod net;
pub mod snapshot;
mod store;

pub use error::Error;
pub use store::{LogReader, LogStore};
