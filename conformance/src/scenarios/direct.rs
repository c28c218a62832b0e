//! `O_DIRECT`: aligned round trips, and each kind of misalignment refused before the kernel.

use diskio::{AlignedBuf, DirectAlignment, DiskIo, Error, FileId, Misalignment, OpenOptions};

use super::{assert_bytes_eq, buf_of, pattern};
use crate::harness::{Cx, Outcome};

/// Opens a direct file, or says why this machine cannot.
async fn open_direct<D: DiskIo>(
    cx: &Cx<D>,
    name: &str,
) -> Result<(FileId, DirectAlignment), Outcome> {
    if !cx.disk.capabilities().direct_io {
        return Err(Outcome::Skipped(
            "the backend does not offer O_DIRECT".into(),
        ));
    }
    let path = cx.path(name);
    let opts = OpenOptions::read_write_create().direct(true);
    let file = match cx.disk.open(&path, &opts).await {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return Err(Outcome::Skipped(format!(
                "the filesystem under {} refuses O_DIRECT ({e}); set DISKIO_TEST_DIR to a disk-backed directory",
                cx.dir.path().display()
            )));
        }
        Err(e) => panic!("opening {} with O_DIRECT: {e}", path.display()),
    };
    let align = cx
        .disk
        .direct_alignment(file)
        .expect("direct_alignment")
        .expect("a direct file reports its alignment");
    assert!(
        align.memory >= 1 && align.offset >= 1,
        "alignment {align:?}"
    );
    assert!(
        cx.disk.alignment() % align.max() == 0,
        "buffers from alloc ({}) must satisfy the file's alignment {align:?}",
        cx.disk.alignment()
    );
    Ok((file, align))
}

#[track_caller]
fn assert_misaligned(res: &diskio::Result<usize>, want: Misalignment) {
    match res {
        Err(Error::Misaligned { what, .. }) if *what == want => {}
        other => panic!("expected Misaligned({want:?}), got {other:?}"),
    }
}

/// Aligned reads, writes and vectored writes on a direct file round-trip.
pub async fn direct_round_trip<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let (file, align) = match open_direct(cx, "direct").await {
        Ok(x) => x,
        Err(skip) => return skip,
    };
    let disk = &*cx.disk;
    let block = disk.alignment().max(align.max());
    let data = pattern(1, 4 * block);
    let offset = 2 * block as u64;
    let (res, _) = disk.write_all_at(file, buf_of(disk, &data), offset).await;
    res.expect("aligned direct write");
    let (res, back) = disk
        .read_exact_at(file, disk.alloc(4 * block).expect("alloc"), offset)
        .await;
    res.expect("aligned direct read");
    assert_bytes_eq("direct round trip", &back, &data);
    let parts = [pattern(2, block), pattern(3, 2 * block)];
    let bufs = parts.iter().map(|p| buf_of(disk, p)).collect();
    let (res, _) = disk.writev_all_at(file, bufs, 0).await;
    res.expect("aligned direct writev");
    let (res, back) = disk
        .read_exact_at(file, disk.alloc(3 * block).expect("alloc"), 0)
        .await;
    res.expect("read after direct writev");
    assert_bytes_eq("direct writev", &back, &parts.concat());
    Outcome::Passed
}

/// An offset that is not a multiple of the file's offset alignment is `Misaligned(Offset)`.
pub async fn direct_misaligned_offset<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let (file, align) = match open_direct(cx, "direct-offset").await {
        Ok(x) => x,
        Err(skip) => return skip,
    };
    if align.offset < 2 {
        return Outcome::Skipped(format!("the file accepts any offset ({align:?})"));
    }
    let disk = &*cx.disk;
    let off = u64::from(align.offset / 2);
    let block = disk.alignment();
    let (res, back) = disk
        .write_at(file, disk.alloc(block).expect("alloc"), off)
        .await;
    assert_misaligned(&res, Misalignment::Offset);
    assert_eq!(back.len(), block, "the buffer comes back unchanged");
    let (res, _) = disk
        .read_at(file, disk.alloc(block).expect("alloc"), off)
        .await;
    assert_misaligned(&res, Misalignment::Offset);
    Outcome::Passed
}

/// A length that is not a multiple of the file's offset alignment is `Misaligned(Length)`.
pub async fn direct_misaligned_length<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let (file, align) = match open_direct(cx, "direct-length").await {
        Ok(x) => x,
        Err(skip) => return skip,
    };
    if align.offset < 2 {
        return Outcome::Skipped(format!("the file accepts any length ({align:?})"));
    }
    let disk = &*cx.disk;
    let len = align.offset as usize + align.offset as usize / 2;
    let (res, _) = disk
        .write_at(file, disk.alloc(len).expect("alloc"), 0)
        .await;
    assert_misaligned(&res, Misalignment::Length);
    let (res, _) = disk.read_at(file, disk.alloc(len).expect("alloc"), 0).await;
    assert_misaligned(&res, Misalignment::Length);
    let bufs = vec![
        disk.alloc(4096).expect("alloc"),
        disk.alloc(len).expect("alloc"),
    ];
    let (res, back) = disk.writev_at(file, bufs, 0).await;
    assert_misaligned(&res, Misalignment::Length);
    assert_eq!(back.len(), 2);
    Outcome::Passed
}

/// A buffer whose address is not a multiple of the file's memory alignment is
/// `Misaligned(Buffer)`.
pub async fn direct_misaligned_buffer<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let (file, align) = match open_direct(cx, "direct-buffer").await {
        Ok(x) => x,
        Err(skip) => return skip,
    };
    let disk = &*cx.disk;
    let len = disk.alignment().max(align.max());
    // AlignedBuf never hands out misaligned memory on purpose; ask for alignment 1 until the
    // allocator gives an address the file refuses (keeping the others so they are not reused).
    let mut tried = Vec::new();
    let mut found = None;
    for _ in 0..256 {
        let buf = AlignedBuf::zeroed(len, 1).expect("alloc");
        if buf.as_ptr() as usize % align.memory as usize != 0 {
            found = Some(buf);
            break;
        }
        tried.push(buf);
    }
    let Some(buf) = found else {
        return Outcome::Skipped(format!(
            "the file needs buffers aligned to only {} bytes, and the allocator never returns less",
            align.memory
        ));
    };
    let addr = buf.as_ptr();
    let (res, back) = disk.write_at(file, buf, 0).await;
    assert_misaligned(&res, Misalignment::Buffer);
    assert_eq!(back.as_ptr(), addr, "the same buffer comes back");
    let (res, back) = disk.read_at(file, back, 0).await;
    assert_misaligned(&res, Misalignment::Buffer);
    let (res, _) = disk.writev_at(file, vec![back], 0).await;
    assert_misaligned(&res, Misalignment::Buffer);
    Outcome::Passed
}
