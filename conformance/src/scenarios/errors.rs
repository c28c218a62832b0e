//! Bad ids, bad paths, and buffers given back on every error path.

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

use diskio::{BadFileReason, DiskIo, Error, FileId, OpenOptions, SyncKind};

use super::{buf_of, create, pattern};
use crate::harness::{Cx, Outcome};

/// A buffer given back by a failed operation is the same buffer (same memory), unchanged.
#[track_caller]
fn assert_intact(what: &str, back: &diskio::AlignedBuf, ptr: *const u8, data: &[u8]) {
    assert_eq!(back.as_ptr(), ptr, "{what}: a different buffer came back");
    assert_eq!(&back[..], data, "{what}: the buffer came back changed");
}

/// Failed reads, writes and vectored writes give their buffers back intact.
pub async fn buffers_returned_on_errors<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let disk = &*cx.disk;
    let data = pattern(9, 4096);
    let file = create(cx, "errors").await;
    disk.close(file).await.expect("close");

    // Read on a closed file.
    let buf = buf_of(disk, &data);
    let ptr = buf.as_ptr();
    let (res, back) = disk.read_at(file, buf, 0).await;
    assert!(
        matches!(res, Err(Error::BadFile { .. })),
        "read on a closed file: {res:?}"
    );
    assert_intact("read on a closed file", &back, ptr, &data);

    // Write on a read-only file.
    let path = cx.path("read-only");
    std::fs::write(&path, b"x").expect("create a file");
    let ro = disk
        .open(&path, &OpenOptions::new())
        .await
        .expect("open read-only");
    let buf = buf_of(disk, &data);
    let ptr = buf.as_ptr();
    let (res, back) = disk.write_at(ro, buf, 0).await;
    assert!(res.is_err(), "a write on a read-only file must fail");
    assert_intact("write on a read-only file", &back, ptr, &data);

    // Vectored write on an unknown id.
    let bufs: Vec<_> = (0..3).map(|i| buf_of(disk, &pattern(i, 100))).collect();
    let ptrs: Vec<_> = bufs.iter().map(|b| b.as_ptr()).collect();
    let (res, back) = disk
        .writev_at(FileId::from_raw(u64::MAX - 1), bufs, 0)
        .await;
    assert!(
        matches!(res, Err(Error::BadFile { .. })),
        "writev on an unknown id: {res:?}"
    );
    assert_eq!(back.len(), 3, "every buffer comes back");
    for (i, b) in back.iter().enumerate() {
        assert_intact(
            "writev on an unknown id",
            b,
            ptrs[i],
            &pattern(i as u64, 100),
        );
    }

    // An offset past what the OS accepts.
    let file = create(cx, "errors-range").await;
    let buf = buf_of(disk, &data);
    let ptr = buf.as_ptr();
    let (res, back) = disk.write_at(file, buf, u64::MAX - 10).await;
    let err = res.expect_err("write at u64::MAX - 10 must fail");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_intact("write past the largest offset", &back, ptr, &data);
    Outcome::Passed
}

/// An id never issued is `Unknown`; an id of a closed file is `Closed`, for every operation.
pub async fn unknown_and_closed_file_id<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let disk = &*cx.disk;
    let reason = |e: &Error| match e {
        Error::BadFile { reason, .. } => Some(*reason),
        _ => None,
    };
    let unknown = FileId::from_raw(u64::MAX - 7);
    let err = disk
        .fsync(unknown, SyncKind::Data)
        .await
        .expect_err("fsync of an unknown id");
    assert_eq!(reason(&err), Some(BadFileReason::Unknown), "{err}");
    let err = disk
        .file_len(unknown)
        .await
        .expect_err("file_len of an unknown id");
    assert_eq!(reason(&err), Some(BadFileReason::Unknown), "{err}");

    let file = create(cx, "closed").await;
    disk.close(file).await.expect("first close");
    let err = disk.close(file).await.expect_err("second close");
    assert_eq!(reason(&err), Some(BadFileReason::Closed), "{err}");
    let (res, _) = disk.read_at(file, disk.alloc(16).expect("alloc"), 0).await;
    let err = res.expect_err("read of a closed file");
    assert_eq!(reason(&err), Some(BadFileReason::Closed), "{err}");
    assert_eq!(
        err.context().and_then(|c| c.file),
        Some(file),
        "the error names the file: {err}"
    );
    for res in [
        disk.fsync(file, SyncKind::All).await,
        disk.set_len(file, 0).await,
        disk.preallocate(file, 0, 4096).await,
        disk.file_len(file).await.map(|_| ()),
    ] {
        let err = res.expect_err("an operation on a closed file");
        assert_eq!(reason(&err), Some(BadFileReason::Closed), "{err}");
    }
    assert!(
        disk.direct_alignment(file).is_err(),
        "direct_alignment of a closed file"
    );
    // A new file gets a new id.
    let again = create(cx, "closed").await;
    assert_ne!(again, file, "ids are never reused");
    Outcome::Passed
}

#[track_caller]
fn assert_names_path(err: &Error, path: &Path) {
    assert_eq!(
        err.path(),
        Some(path),
        "the error must carry the path: {err}"
    );
    assert!(
        err.to_string().contains(&*path.to_string_lossy()),
        "the message names the path: {err}"
    );
}

/// Opening a missing path fails with `NotFound` and the path.
pub async fn open_missing_path<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let path = cx.path("no/such/file");
    let err = cx
        .disk
        .open(&path, &OpenOptions::new())
        .await
        .expect_err("opening a missing file");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_names_path(&err, &path);
    let path = cx.path("missing");
    let err = cx
        .disk
        .open(&path, &OpenOptions::new().write(true))
        .await
        .expect_err("no create");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    Outcome::Passed
}

/// Opening a directory fails (`EISDIR`) with the path, read-only or not.
pub async fn open_directory<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let path = cx.path("a-directory");
    std::fs::create_dir(&path).expect("mkdir");
    for opts in [
        OpenOptions::new(),
        OpenOptions::new().read(true).write(true),
    ] {
        let err = cx
            .disk
            .open(&path, &opts)
            .await
            .expect_err("opening a directory must fail");
        assert_eq!(err.raw_os_error(), Some(libc::EISDIR), "{err}");
        assert_names_path(&err, &path);
    }
    Outcome::Passed
}

/// Opening a file the process may not open fails with `PermissionDenied` and the path.
///
/// As root, permission bits do not apply, so the file is made immutable (`chattr +i`), which
/// refuses opening it for writing even to root. Skipped where neither works.
pub async fn open_without_permission<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let path = cx.path("forbidden");
    std::fs::write(&path, b"secret").expect("create a file");
    let root = is_root();
    let guard = if root {
        match Command::new("chattr").arg("+i").arg(&path).output() {
            Ok(out) if out.status.success() => Immutable(Some(path.clone())),
            Ok(out) => {
                return Outcome::Skipped(format!(
                    "running as root and `chattr +i` failed ({}), so no file can be forbidden",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(e) => {
                return Outcome::Skipped(format!(
                    "running as root and `chattr` is unavailable ({e}), so no file can be forbidden"
                ));
            }
        }
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
        Immutable(None)
    };
    let opts = if root {
        OpenOptions::new().read(true).write(true)
    } else {
        OpenOptions::new()
    };
    let res = cx.disk.open(&path, &opts).await;
    drop(guard);
    let err = res.expect_err("opening a forbidden file must fail");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_names_path(&err, &path);
    Outcome::Passed
}

/// Clears the immutable flag again so the scratch directory can be removed.
struct Immutable(Option<std::path::PathBuf>);

impl Drop for Immutable {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(path).output();
        }
    }
}

fn is_root() -> bool {
    // `/proc/self/status` has "Uid: real effective saved fs"; no unsafe `geteuid` needed.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
