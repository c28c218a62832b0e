//! The images of a crash disk: what is live, what is durable, what is pending, and what a power
//! loss makes of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use diskio::backend::{FileAccess, Stats};

use super::{CrashDisk, CrashMode, SECTOR};
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub(super) enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
pub(super) struct MemFile {
    /// The file's identity (its inode): names point at it.
    pub(super) id: u64,
    pub(super) live: Vec<u8>,
    pub(super) durable: Vec<u8>,
    pub(super) pending: Vec<Pending>,
}

/// What a power loss starts from: the files, the names that survive, and files that are gone
/// from the live namespace but still have a surviving name.
#[derive(Debug, Clone, Default)]
pub(super) struct Image {
    /// The live namespace.
    pub(super) files: HashMap<PathBuf, MemFile>,
    /// Names that survive a power loss: path to file id.
    pub(super) durable_names: HashMap<PathBuf, u64>,
    /// Files removed or replaced since their name was last made durable.
    pub(super) detached: HashMap<u64, MemFile>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) img: Image,
    /// Directory entries become durable only by `sync_dir` (else at once).
    pub(super) strict_dirs: bool,
    pub(super) next_file: u64,
    /// Open files: what admission checks (the path follows renames).
    pub(super) open: HashMap<u64, FileAccess>,
    pub(super) next_id: u64,
    /// Operations that changed the disk (or asked for durability) so far.
    pub(super) ops: u64,
    /// Take `frozen` once `ops` reaches this.
    pub(super) freeze_at: Option<u64>,
    /// The disk as it was right after operation `freeze_at`.
    pub(super) frozen: Option<Image>,
}

impl State {
    /// After a change of the namespace under `path`'s directory: without strict directories
    /// the change is durable at once.
    pub(super) fn entries_changed(&mut self, path: &Path) {
        if !self.strict_dirs {
            if let Some(dir) = path.parent() {
                self.sync_entries(dir);
            }
        }
    }

    /// Makes the entries of `dir` durable as they are now.
    pub(super) fn sync_entries(&mut self, dir: &Path) {
        let img = &mut self.img;
        img.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, f) in &img.files {
            if p.parent() == Some(dir) {
                img.durable_names.insert(p.clone(), f.id);
            }
        }
        let named: std::collections::HashSet<u64> = img.durable_names.values().copied().collect();
        img.detached.retain(|id, _| named.contains(id));
    }

    /// Keeps a file that left the live namespace if a durable name still points at it.
    pub(super) fn detach(&mut self, f: MemFile) {
        if self.img.durable_names.values().any(|&id| id == f.id) {
            self.img.detached.insert(f.id, f);
        }
    }
}

/// The disk after a power loss: every durably named file, from its durable image and its pending
/// operations as `mode` and `seed` decide.
pub(super) fn crash_image(img: &Image, strict_dirs: bool, seed: u64, mode: CrashMode) -> CrashDisk {
    let mut rng = Rng::new(seed);
    let mut names: Vec<(&PathBuf, &u64)> = img.durable_names.iter().collect();
    names.sort(); // a fixed order, so the seed's choices land on the same operations
    let mut out = HashMap::new();
    let mut next_file = 1;
    for (path, id) in names {
        let found = img
            .files
            .values()
            .find(|f| f.id == *id)
            .or_else(|| img.detached.get(id));
        let Some(f) = found else { continue };
        let mut image = f.durable.clone();
        for op in &f.pending {
            apply_at_crash(&mut image, op, mode, &mut rng);
        }
        next_file = next_file.max(id + 1);
        let file = MemFile {
            id: *id,
            live: image.clone(),
            durable: image,
            pending: Vec::new(),
        };
        out.insert(path.clone(), file);
    }
    let durable_names = out.iter().map(|(p, f)| (p.clone(), f.id)).collect();
    CrashDisk {
        state: Arc::new(Mutex::new(State {
            img: Image {
                files: out,
                durable_names,
                detached: HashMap::new(),
            },
            strict_dirs,
            next_file,
            next_id: 1,
            ..State::default()
        })),
        stats: Stats::new(),
    }
}

pub(super) fn apply_at_crash(image: &mut Vec<u8>, op: &Pending, mode: CrashMode, rng: &mut Rng) {
    // 0 keep, 1 drop, 2 tear, 3 tear with garbage in the lost sectors.
    let choice = match mode {
        CrashMode::Random => rng.below(4),
        CrashMode::RandomAtomic => rng.below(3),
        CrashMode::KeepAll => 0,
        CrashMode::DropAll => 1,
        CrashMode::TearAll => 2,
        CrashMode::GarbageAll => 3,
    };
    match op {
        Pending::SetLen(len) => {
            if choice == 0 || (choice >= 2 && rng.one_in(2)) {
                image.resize(*len as usize, 0);
            }
        }
        Pending::Write { offset, data } => match choice {
            0 => write_into(image, *offset, data),
            1 => {}
            _ => {
                let start = *offset as usize;
                let end = start + data.len();
                let mut at = start;
                while at < end {
                    let sector_end = ((at / SECTOR) + 1) * SECTOR;
                    let upto = sector_end.min(end);
                    if rng.one_in(2) {
                        write_into(image, at as u64, &data[at - start..upto - start]);
                    } else if choice == 3 {
                        let junk: Vec<u8> = (at..upto).map(|_| rng.next_u64() as u8).collect();
                        write_into(image, at as u64, &junk);
                    }
                    at = upto;
                }
            }
        },
    }
}

pub(super) fn write_into(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let start = offset as usize;
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}
