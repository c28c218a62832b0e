//! The filesystem's state: what the files and directories hold now, and what the disk holds.
//!
//! A file's bytes are `current` (what reads see) and `durable` (what survives a power cut);
//! the writes and size changes since its last sync are `pending`, in order, so a power cut can
//! keep a prefix of them and tear the next one at 512-byte sectors. A directory's entries are
//! likewise `entries` and `durable_entries`: creating, renaming and removing a file changes the
//! first, a sync of the directory copies it to the second.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};

use crate::Rng;
use crate::failing::{FaultMode, FaultPlan, FaultTarget};

/// The root directory's inode.
pub(crate) const ROOT: u64 = 1;

/// The sector a torn write is torn at.
const SECTOR: u64 = 512;

/// A change to a file not yet synced.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

impl Pending {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Pending::Write { offset, data } => write_into(bytes, *offset, data),
            Pending::SetLen(len) => bytes.resize(usize::try_from(*len).unwrap_or(usize::MAX), 0),
        }
    }
}

fn write_into(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let end = start.saturating_add(data.len());
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[start..end].copy_from_slice(data);
}

#[derive(Debug)]
pub(crate) enum Node {
    File {
        current: Vec<u8>,
        durable: Vec<u8>,
        pending: Vec<Pending>,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        durable_entries: BTreeMap<OsString, u64>,
    },
}

/// What a power cut did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// The seed that replays the cut's choices.
    pub seed: u64,
    /// Unsynced writes and size changes dropped.
    pub dropped: usize,
    /// Unsynced writes and size changes kept (the disk had them before the power went).
    pub kept: usize,
    /// Whether one write was torn at sector boundaries.
    pub torn: bool,
    /// Directories whose unsynced entries were dropped.
    pub dirs_reverted: usize,
}

/// How a power cut treats what was not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Seeds the choices below (printed in the report, so a run can be replayed).
    pub seed: u64,
    /// Keep a random prefix of each file's unsynced changes (and each directory's unsynced
    /// entries with probability one half), as a disk that wrote some of them back would.
    pub keep_some: bool,
    /// Tear the first unsynced write a file does not keep: a random subset of its 512-byte
    /// sectors reaches the disk.
    pub tear: bool,
}

impl Cut {
    /// Drops everything not synced.
    pub fn clean(seed: u64) -> Self {
        Self {
            seed,
            keep_some: false,
            tear: false,
        }
    }

    /// Keeps a random part of what was not synced, tearing a write.
    pub fn ragged(seed: u64) -> Self {
        Self {
            seed,
            keep_some: true,
            tear: true,
        }
    }
}

pub(crate) struct Model {
    pub(crate) nodes: HashMap<u64, Node>,
    next_ino: u64,
    plan: Option<FaultPlan>,
    matched: u64,
    pub(crate) injected: u64,
    pub(crate) refuse_fallocate: bool,
    pub(crate) fallocates_refused: u64,
    /// Processes whose requests are refused (killed before a power cut: what their kernel
    /// threads still send would land after the cut).
    pub(crate) fenced: std::collections::HashSet<u32>,
}

/// An errno.
pub(crate) type Errno = i32;

impl Model {
    pub(crate) fn new() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node::Dir {
                entries: BTreeMap::new(),
                durable_entries: BTreeMap::new(),
            },
        );
        Self {
            nodes,
            next_ino: ROOT + 1,
            plan: None,
            matched: 0,
            injected: 0,
            refuse_fallocate: false,
            fallocates_refused: 0,
            fenced: std::collections::HashSet::new(),
        }
    }

    pub(crate) fn arm(&mut self, plan: Option<FaultPlan>) {
        self.plan = plan;
        self.matched = 0;
    }

    /// Whether this operation (of `target`'s kind) is the one to fail.
    fn fault(&mut self, kind: FaultTarget) -> Option<Errno> {
        let plan = self.plan?;
        if plan.target != kind && plan.target != FaultTarget::Any {
            return None;
        }
        self.matched += 1;
        let fire = match plan.mode {
            FaultMode::Once => self.matched == plan.nth,
            FaultMode::FromThenOn => self.matched >= plan.nth,
        };
        if fire {
            self.injected += 1;
            Some(plan.errno)
        } else {
            None
        }
    }

    fn dir(&self, ino: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get(&ino) {
            Some(Node::Dir { entries, .. }) => Ok(entries),
            Some(Node::File { .. }) => Err(libc::ENOTDIR),
            None => Err(libc::ENOENT),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir { entries, .. }) => Ok(entries),
            Some(Node::File { .. }) => Err(libc::ENOTDIR),
            None => Err(libc::ENOENT),
        }
    }

    pub(crate) fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?.get(name).copied().ok_or(libc::ENOENT)
    }

    pub(crate) fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    /// Makes a file or directory `name` in `parent`.
    pub(crate) fn make(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<u64, Errno> {
        if self.dir(parent)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let node = if dir {
            Node::Dir {
                entries: BTreeMap::new(),
                durable_entries: BTreeMap::new(),
            }
        } else {
            Node::File {
                current: Vec::new(),
                durable: Vec::new(),
                pending: Vec::new(),
            }
        };
        self.nodes.insert(ino, node);
        self.dir_mut(parent)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    pub(crate) fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        match (self.node(ino)?, dir) {
            (Node::Dir { entries, .. }, true) if !entries.is_empty() => {
                return Err(libc::ENOTEMPTY);
            }
            (Node::Dir { .. }, false) => return Err(libc::EISDIR),
            (Node::File { .. }, true) => return Err(libc::ENOTDIR),
            _ => {}
        }
        self.dir_mut(parent)?.remove(name);
        Ok(())
    }

    pub(crate) fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        to_parent: u64,
        to_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        if let Ok(existing) = self.lookup(to_parent, to_name) {
            if no_replace {
                return Err(libc::EEXIST);
            }
            if let Node::Dir { entries, .. } = self.node(existing)?
                && !entries.is_empty()
            {
                return Err(libc::ENOTEMPTY);
            }
        }
        self.dir(to_parent)?;
        self.dir_mut(parent)?.remove(name);
        self.dir_mut(to_parent)?.insert(to_name.to_owned(), ino);
        Ok(())
    }

    pub(crate) fn read(&self, ino: u64, offset: u64, size: usize) -> Result<&[u8], Errno> {
        match self.node(ino)? {
            Node::File { current, .. } => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(current.len());
                let end = start.saturating_add(size).min(current.len());
                Ok(&current[start..end])
            }
            Node::Dir { .. } => Err(libc::EISDIR),
        }
    }

    fn change(&mut self, ino: u64, change: Pending) -> Result<(), Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File {
                current, pending, ..
            }) => {
                change.apply(current);
                pending.push(change);
                Ok(())
            }
            Some(Node::Dir { .. }) => Err(libc::EISDIR),
            None => Err(libc::ENOENT),
        }
    }

    pub(crate) fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        if let Some(errno) = self.fault(FaultTarget::Write) {
            return Err(errno);
        }
        self.change(
            ino,
            Pending::Write {
                offset,
                data: data.to_vec(),
            },
        )?;
        Ok(data.len())
    }

    pub(crate) fn set_len(&mut self, ino: u64, len: u64) -> Result<(), Errno> {
        self.change(ino, Pending::SetLen(len))
    }

    pub(crate) fn len(&self, ino: u64) -> Result<u64, Errno> {
        match self.node(ino)? {
            Node::File { current, .. } => Ok(current.len() as u64),
            Node::Dir { entries, .. } => Ok(entries.len() as u64),
        }
    }

    pub(crate) fn fallocate(
        &mut self,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        if self.refuse_fallocate || (mode & !libc::FALLOC_FL_KEEP_SIZE) != 0 {
            self.fallocates_refused += 1;
            return Err(libc::EOPNOTSUPP);
        }
        let end = offset.saturating_add(len);
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > self.len(ino)? {
            self.set_len(ino, end)?;
        }
        Ok(())
    }

    /// A file's sync: its bytes become durable, or (on an injected failure) its unsynced
    /// changes are dropped, as Linux drops dirty pages whose writeback failed.
    pub(crate) fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        if let Some(Node::Dir { .. }) = self.nodes.get(&ino) {
            return self.fsyncdir(ino); // counted once, as a directory sync
        }
        let fault = self.fault(FaultTarget::Sync);
        match self.nodes.get_mut(&ino) {
            Some(Node::File {
                current,
                durable,
                pending,
            }) => {
                if let Some(errno) = fault {
                    pending.clear();
                    current.clone_from(durable);
                    return Err(errno);
                }
                // The changes, not the whole file: syncs of a large file stay cheap.
                for change in pending.drain(..) {
                    change.apply(durable);
                }
                Ok(())
            }
            Some(Node::Dir { .. }) | None => Err(libc::ENOENT),
        }
    }

    /// A directory's sync: its entries become durable.
    pub(crate) fn fsyncdir(&mut self, ino: u64) -> Result<(), Errno> {
        if let Some(errno) = self.fault(FaultTarget::Sync) {
            return Err(errno);
        }
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir {
                entries,
                durable_entries,
            }) => {
                durable_entries.clone_from(entries);
                Ok(())
            }
            Some(Node::File { .. }) => Err(libc::ENOTDIR),
            None => Err(libc::ENOENT),
        }
    }

    /// The power goes: every file and directory falls back to what the disk holds, as `cut`
    /// says; what no durable directory entry reaches is gone.
    pub(crate) fn power_cut(&mut self, cut: Cut) -> CutReport {
        let mut rng = Rng::new(cut.seed);
        let mut report = CutReport {
            seed: cut.seed,
            ..CutReport::default()
        };
        let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
        inos.sort_unstable(); // the seed's choices must not depend on hashing
        for ino in inos {
            let Some(node) = self.nodes.get_mut(&ino) else {
                continue;
            };
            match node {
                Node::File {
                    current,
                    durable,
                    pending,
                } => {
                    let keep = if cut.keep_some {
                        (rng.next_u64() % (pending.len() as u64 + 1)) as usize
                    } else {
                        0
                    };
                    for change in &pending[..keep] {
                        change.apply(durable);
                    }
                    if cut.tear
                        && let Some(Pending::Write { offset, data }) = pending.get(keep)
                    {
                        tear(durable, *offset, data, &mut rng);
                        report.torn = true;
                    }
                    report.kept += keep;
                    report.dropped += pending.len() - keep;
                    pending.clear();
                    current.clone_from(durable);
                }
                Node::Dir {
                    entries,
                    durable_entries,
                } => {
                    let keep = cut.keep_some && rng.next_u64() % 2 == 0;
                    if keep {
                        durable_entries.clone_from(entries);
                    } else if entries != durable_entries {
                        report.dirs_reverted += 1;
                        entries.clone_from(durable_entries);
                    }
                }
            }
        }
        self.collect();
        report
    }

    /// Drops what no directory entry reaches from the root.
    fn collect(&mut self) {
        let mut live = std::collections::HashSet::new();
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if !live.insert(ino) {
                continue;
            }
            if let Some(Node::Dir { entries, .. }) = self.nodes.get(&ino) {
                stack.extend(entries.values().copied());
            }
        }
        self.nodes.retain(|ino, _| live.contains(ino));
    }
}

/// Applies the sectors of a write that a coin keeps.
fn tear(bytes: &mut Vec<u8>, offset: u64, data: &[u8], rng: &mut Rng) {
    let end = offset + data.len() as u64;
    let mut at = offset;
    while at < end {
        let sector_end = ((at / SECTOR) + 1) * SECTOR;
        let to = sector_end.min(end);
        if rng.next_u64() % 2 == 0 {
            let from = (at - offset) as usize;
            write_into(bytes, at, &data[from..from + (to - at) as usize]);
        }
        at = to;
    }
}
