//! Syncs, preallocation and length changes.

use diskio::{DiskIo, SyncKind};

use super::{assert_bytes_eq, buf_of, create, pattern, read_up_to, write_all};
use crate::harness::{Cx, Outcome};

/// Both sync kinds succeed on a written file, and so does the write-then-sync operation.
pub async fn sync_kinds<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let disk = &*cx.disk;
    let file = create(cx, "sync").await;
    write_all(disk, file, 0, &pattern(1, 8192)).await;
    disk.fsync(file, SyncKind::Data).await.expect("fdatasync");
    disk.fsync(file, SyncKind::All).await.expect("fsync");
    for (i, kind) in [SyncKind::Data, SyncKind::All].into_iter().enumerate() {
        let parts = [pattern(10 + i as u64, 4096), pattern(20 + i as u64, 100)];
        let bufs = parts.iter().map(|p| buf_of(disk, p)).collect();
        let offset = 8192 * (i as u64 + 1);
        let (res, back) = disk.write_sync_at(file, bufs, offset, kind).await;
        assert_eq!(res.expect("write_sync_at"), 4196, "{kind:?}");
        assert_eq!(back.len(), 2);
        let got = read_up_to(disk, file, offset, 4196).await;
        assert_bytes_eq("after write_sync_at", &got, &parts.concat());
    }
    // An empty file syncs too.
    let empty = create(cx, "sync-empty").await;
    disk.fsync(empty, SyncKind::Data)
        .await
        .expect("fdatasync of an empty file");
    Outcome::Passed
}

/// Preallocating grows the file to cover the range, with zeros; it never shrinks it.
pub async fn preallocate_then_len<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let disk = &*cx.disk;
    let file = create(cx, "prealloc").await;
    if let Err(e) = disk.preallocate(file, 0, 1 << 20).await {
        if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
            return Outcome::Skipped(format!("the filesystem cannot preallocate: {e}"));
        }
        panic!("preallocate: {e}");
    }
    assert_eq!(disk.file_len(file).await.expect("file_len"), 1 << 20);
    let got = read_up_to(disk, file, 0, 1 << 20).await;
    assert!(
        got.len() == 1 << 20 && got.iter().all(|&b| b == 0),
        "preallocated bytes read as zeros"
    );
    // Writes inside the range work; preallocating less keeps the length.
    write_all(disk, file, 4096, &pattern(3, 4096)).await;
    disk.preallocate(file, 0, 4096)
        .await
        .expect("small preallocate");
    assert_eq!(disk.file_len(file).await.expect("file_len"), 1 << 20);
    // Past the end grows again.
    disk.preallocate(file, 2 << 20, 4096)
        .await
        .expect("preallocate past the end");
    assert_eq!(
        disk.file_len(file).await.expect("file_len"),
        (2 << 20) + 4096
    );
    disk.preallocate(file, 0, 0)
        .await
        .expect("a zero-length preallocate is a no-op");
    let got = read_up_to(disk, file, 4096, 4096).await;
    assert_bytes_eq(
        "data inside the preallocated range",
        &got,
        &pattern(3, 4096),
    );
    Outcome::Passed
}

/// Shrinking drops bytes; growing again reads zeros, not the old bytes.
pub async fn set_len_down_and_up<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let disk = &*cx.disk;
    let file = create(cx, "set-len").await;
    let data = pattern(5, 10_000);
    write_all(disk, file, 0, &data).await;
    disk.set_len(file, 3000).await.expect("set_len down");
    assert_eq!(disk.file_len(file).await.expect("file_len"), 3000);
    assert_bytes_eq(
        "after shrinking",
        &read_up_to(disk, file, 0, 10_000).await,
        &data[..3000],
    );
    disk.set_len(file, 8000).await.expect("set_len up");
    assert_eq!(disk.file_len(file).await.expect("file_len"), 8000);
    let got = read_up_to(disk, file, 0, 10_000).await;
    assert_bytes_eq("kept part", &got[..3000], &data[..3000]);
    assert!(
        got[3000..].iter().all(|&b| b == 0),
        "grown part reads as zeros"
    );
    assert_eq!(got.len(), 8000);
    disk.set_len(file, 0).await.expect("set_len to 0");
    assert_eq!(disk.file_len(file).await.expect("file_len"), 0);
    let err = disk
        .set_len(file, u64::MAX)
        .await
        .expect_err("set_len(u64::MAX) must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    Outcome::Passed
}

/// Directory operations: files created through the backend are listed, removal takes them out
/// of the listing, syncing the directory succeeds, and removing a missing file is `NotFound`.
pub async fn directory_entries<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let disk = &*cx.disk;
    let dir = cx.path("sub/dir");
    disk.create_dir_all(&dir).await.expect("create_dir_all");
    disk.create_dir_all(&dir)
        .await
        .expect("create_dir_all of an existing directory");
    for name in ["b.log", "a.log"] {
        let f = disk
            .open(&dir.join(name), &diskio::OpenOptions::read_write_create())
            .await
            .expect("create in the new directory");
        disk.close(f).await.expect("close");
    }
    disk.sync_dir(&dir).await.expect("sync_dir");
    assert_eq!(
        disk.list_dir(&dir).await.expect("list_dir"),
        ["a.log", "b.log"],
        "sorted names of the files"
    );
    disk.remove_file(&dir.join("a.log"))
        .await
        .expect("remove_file");
    disk.sync_dir(&dir).await.expect("sync_dir after removal");
    assert_eq!(disk.list_dir(&dir).await.expect("list_dir"), ["b.log"]);
    let err = disk
        .remove_file(&dir.join("a.log"))
        .await
        .expect_err("removing a missing file");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    Outcome::Passed
}
