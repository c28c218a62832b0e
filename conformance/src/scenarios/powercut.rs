//! Durability on the power-cutting filesystem ([`PowerCutFs`]): what a backend says is synced
//! survives a power cut. Each scenario mounts its own filesystem in the scratch directory, or
//! reports a skip saying why it cannot (no FUSE here).

use std::path::{Path, PathBuf};

use diskio::{DiskIo, FileId, OpenOptions, SyncKind};

use super::{assert_bytes_eq, buf_of, pattern, read_up_to, write_all};
use crate::failing::{FaultMode, FaultPlan, FaultTarget};
use crate::harness::{Cx, Outcome};
use crate::powercut::{Cut, PowerCutFs};

/// Mounts a power-cutting filesystem in the scratch directory.
fn mount<D>(cx: &Cx<D>) -> Result<PowerCutFs, Outcome> {
    let at = cx.path("powercut");
    std::fs::create_dir_all(&at).unwrap_or_else(|e| panic!("mkdir {}: {e}", at.display()));
    PowerCutFs::mount(&at).map_err(Outcome::Skipped)
}

async fn open<D: DiskIo>(disk: &D, path: &Path) -> FileId {
    disk.open(path, &OpenOptions::read_write_create())
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// The bytes of `path` after a power cut (reopened through the backend).
async fn contents<D: DiskIo>(disk: &D, path: &Path) -> Vec<u8> {
    let f = disk
        .open(path, &OpenOptions::new().read(true))
        .await
        .unwrap_or_else(|e| panic!("{} is gone after the power cut: {e}", path.display()));
    let len = disk.file_len(f).await.expect("file_len");
    let bytes = read_up_to(disk, f, 0, len as usize).await;
    disk.close(f).await.expect("close");
    bytes
}

/// A file made durable with its directory entry, empty.
async fn durable_file<D: DiskIo>(disk: &D, fs: &PowerCutFs, name: &str) -> (PathBuf, FileId) {
    let path = fs.path().join(name);
    let f = open(disk, &path).await;
    disk.sync_dir(fs.path()).await.expect("sync_dir");
    (path, f)
}

/// Data synced with `fsync(Data)` and with `fsync(All)` survives a power cut; a write after
/// the last sync does not (the power-cut filesystem drops it, so the file's length shows
/// exactly what was synced).
pub async fn power_cut_keeps_synced_data<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let fs = match mount(cx) {
        Ok(fs) => fs,
        Err(skip) => return skip,
    };
    let disk = &*cx.disk;
    let (path, f) = durable_file(disk, &fs, "synced").await;
    let (a, b) = (pattern(1, 10_000), pattern(2, 3_000));
    write_all(disk, f, 0, &a).await;
    disk.fsync(f, SyncKind::Data).await.expect("fsync(Data)");
    write_all(disk, f, 20_000, &b).await;
    disk.fsync(f, SyncKind::All).await.expect("fsync(All)");
    write_all(disk, f, 40_000, &pattern(3, 100)).await;
    disk.close(f).await.expect("close");
    let cut = fs.power_cut(Cut::clean(0));
    let got = contents(disk, &path).await;
    let mut want = a.clone();
    want.resize(20_000, 0);
    want.extend_from_slice(&b);
    assert_bytes_eq(
        &format!("after a power cut ({cut:?}), the synced bytes of a file"),
        &got,
        &want,
    );
    Outcome::Passed
}

/// Data never synced may vanish: after a clean cut a file holds what was synced and nothing
/// more; after a ragged cut (a seeded part kept, a write torn) each 512-byte sector holds the
/// old bytes or the new ones, never anything else.
pub async fn power_cut_may_drop_unsynced_data<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let fs = match mount(cx) {
        Ok(fs) => fs,
        Err(skip) => return skip,
    };
    let disk = &*cx.disk;
    let (path, f) = durable_file(disk, &fs, "unsynced").await;
    write_all(disk, f, 0, &pattern(4, 4096)).await;
    fs.power_cut(Cut::clean(1));
    assert!(
        contents(disk, &path).await.is_empty(),
        "a write never synced survived a clean power cut"
    );
    let old = pattern(5, 8192);
    let new = pattern(6, 8192);
    let f = open(disk, &path).await;
    write_all(disk, f, 0, &old).await;
    disk.fsync(f, SyncKind::Data).await.expect("fsync");
    write_all(disk, f, 0, &new).await;
    disk.close(f).await.expect("close");
    let seed = crate::seed_from_env("DISKIO_SEED");
    let cut = fs.power_cut(Cut::ragged(seed));
    let got = contents(disk, &path).await;
    assert_eq!(got.len(), 8192, "length after {cut:?}");
    for (i, sector) in got.chunks(512).enumerate() {
        let range = i * 512..(i + 1) * 512;
        assert!(
            sector == &old[range.clone()] || sector == &new[range],
            "sector {i} after {cut:?} is neither the old bytes nor the new"
        );
    }
    Outcome::Passed
}

/// `write_sync_at` (linked or not) is durable when it returns.
pub async fn power_cut_after_write_sync_at<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let fs = match mount(cx) {
        Ok(fs) => fs,
        Err(skip) => return skip,
    };
    let disk = &*cx.disk;
    let (path, f) = durable_file(disk, &fs, "write-sync").await;
    let mut want = Vec::new();
    for (i, kind) in [SyncKind::Data, SyncKind::All, SyncKind::Data]
        .into_iter()
        .enumerate()
    {
        let data = pattern(10 + i as u64, 4096);
        let (res, _) = disk
            .write_sync_at(f, vec![buf_of(disk, &data)], want.len() as u64, kind)
            .await;
        res.unwrap_or_else(|e| panic!("write_sync_at #{i}: {e}"));
        want.extend_from_slice(&data);
    }
    // The power goes the moment the last call returned.
    let cut = fs.power_cut(Cut::clean(2));
    disk.close(f).await.expect("close");
    assert_bytes_eq(
        &format!("after a power cut ({cut:?}), what write_sync_at acknowledged"),
        &contents(disk, &path).await,
        &want,
    );
    Outcome::Passed
}

/// A file written, synced, renamed into place and its directory synced survives under its new
/// name; a rename whose directory was not synced is undone by the cut.
pub async fn power_cut_rename_then_sync_dir<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let fs = match mount(cx) {
        Ok(fs) => fs,
        Err(skip) => return skip,
    };
    let disk = &*cx.disk;
    let dir = fs.path().to_path_buf();
    let data = pattern(20, 5000);
    let (tmp, f) = durable_file(disk, &fs, "file.tmp").await;
    write_all(disk, f, 0, &data).await;
    disk.fsync(f, SyncKind::All).await.expect("fsync");
    disk.close(f).await.expect("close");
    disk.rename(&tmp, &dir.join("file")).await.expect("rename");
    disk.sync_dir(&dir).await.expect("sync_dir");
    // A second rename, never made durable.
    disk.rename(&dir.join("file"), &dir.join("moved"))
        .await
        .expect("rename");
    let cut = fs.power_cut(Cut::clean(3));
    let names = disk.list_dir(&dir).await.expect("list_dir");
    assert_eq!(
        names,
        vec!["file".to_owned()],
        "after a power cut ({cut:?}), the directory holds the synced rename only"
    );
    assert_bytes_eq(
        "the renamed file",
        &contents(disk, &dir.join("file")).await,
        &data,
    );
    Outcome::Passed
}

/// `O_DIRECT` writes that were synced survive a power cut.
pub async fn power_cut_direct_writes<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let fs = match mount(cx) {
        Ok(fs) => fs,
        Err(skip) => return skip,
    };
    let disk = &*cx.disk;
    let path = fs.path().join("direct");
    let f = match disk
        .open(&path, &OpenOptions::read_write_create().direct(true))
        .await
    {
        Ok(f) => f,
        Err(e) => return Outcome::Skipped(format!("O_DIRECT refused on the FUSE mount: {e}")),
    };
    disk.sync_dir(fs.path()).await.expect("sync_dir");
    let mut data = pattern(30, 16384);
    write_all(disk, f, 0, &data).await;
    disk.fsync(f, SyncKind::Data).await.expect("fsync");
    // The WAL's path: a durable write of whole blocks (one RWF_DSYNC write where the backend
    // can), of each kind.
    for (i, kind) in [SyncKind::Data, SyncKind::All].into_iter().enumerate() {
        let block = pattern(32 + i as u64, 4096);
        let at = data.len() as u64;
        let (res, _) = disk
            .write_sync_at(f, vec![buf_of(disk, &block)], at, kind)
            .await;
        assert_eq!(res.expect("write_sync_at on an O_DIRECT file"), 4096);
        data.extend_from_slice(&block);
    }
    write_all(disk, f, data.len() as u64, &pattern(31, 4096)).await; // never synced
    disk.close(f).await.expect("close");
    let cut = fs.power_cut(Cut::clean(4));
    assert_bytes_eq(
        &format!("after a power cut ({cut:?}), synced O_DIRECT writes"),
        &contents(disk, &path).await,
        &data,
    );
    Outcome::Passed
}

/// An `EIO` from the filesystem's sync reaches the caller as an error naming the operation,
/// never as success; the filesystem then drops the file's unsynced data, as Linux does, so a
/// later sync that succeeds does not bring it back.
pub async fn power_cut_sync_error_reaches_caller<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let fs = match mount(cx) {
        Ok(fs) => fs,
        Err(skip) => return skip,
    };
    let disk = &*cx.disk;
    let (path, f) = durable_file(disk, &fs, "eio").await;
    let old = pattern(40, 4096);
    write_all(disk, f, 0, &old).await;
    disk.fsync(f, SyncKind::Data).await.expect("fsync");
    write_all(disk, f, 0, &pattern(41, 4096)).await;
    fs.arm(Some(
        FaultPlan::new(FaultTarget::Sync, 1).mode(FaultMode::Once),
    ));
    let res = disk.fsync(f, SyncKind::Data).await;
    fs.arm(None);
    let err = match res {
        Ok(()) => panic!(
            "fsync returned Ok although the filesystem failed it with EIO ({} injected)",
            fs.injected()
        ),
        Err(e) => e,
    };
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "the error: {err}");
    let text = err.to_string();
    assert!(
        text.to_lowercase().contains("sync"),
        "the error should name the operation: {text}"
    );
    let (res, _) = disk
        .write_sync_at(
            f,
            vec![buf_of(disk, &pattern(42, 512))],
            8192,
            SyncKind::Data,
        )
        .await;
    res.expect("a later write_sync_at");
    disk.close(f).await.expect("close");
    fs.power_cut(Cut::clean(5));
    let got = contents(disk, &path).await;
    assert_bytes_eq(
        "the bytes whose sync failed are the old ones",
        &got[..4096],
        &old,
    );
    Outcome::Passed
}

/// Directories made with [`diskio::create_dir_all_durable`] survive a power cut with the file
/// synced in the deepest; made with `create_dir_all` alone (no sync of their parents), they
/// do not.
pub async fn power_cut_created_directories<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let fs = match mount(cx) {
        Ok(fs) => fs,
        Err(skip) => return skip,
    };
    let disk = &*cx.disk;
    let data = pattern(50, 3000);
    for (top, durable) in [("durable", true), ("plain", false)] {
        let deep = fs.path().join(top).join("b").join("c");
        if durable {
            diskio::create_dir_all_durable(disk, &deep)
                .await
                .expect("create_dir_all_durable");
        } else {
            disk.create_dir_all(&deep).await.expect("create_dir_all");
        }
        let f = open(disk, &deep.join("f")).await;
        write_all(disk, f, 0, &data).await;
        disk.fsync(f, SyncKind::All).await.expect("fsync");
        disk.close(f).await.expect("close");
        disk.sync_dir(&deep).await.expect("sync_dir");
    }
    let cut = fs.power_cut(Cut::clean(6));
    assert_bytes_eq(
        &format!("after a power cut ({cut:?}), a file in durably created directories"),
        &contents(disk, &fs.path().join("durable/b/c/f")).await,
        &data,
    );
    let plain = disk.list_dir(&fs.path().join("plain")).await;
    assert!(
        plain
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound),
        "after a power cut ({cut:?}), a directory whose creation was never synced: {plain:?}"
    );
    Outcome::Passed
}
