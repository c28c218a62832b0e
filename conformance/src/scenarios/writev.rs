//! Vectored writes.

use diskio::DiskIo;

use super::{assert_bytes_eq, buf_of, create, pattern, read_up_to};
use crate::harness::{Cx, Outcome};

/// Buffers of different sizes (empty ones included) land back to back, in order, at the offset.
pub async fn writev_order_and_offsets<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let disk = &*cx.disk;
    let file = create(cx, "writev").await;
    let sizes = [1usize, 0, 511, 4096, 3, 0, 10_000, 77];
    let parts: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(100 + i as u64, n))
        .collect();
    let bufs = parts.iter().map(|p| buf_of(disk, p)).collect();
    let offset = 777u64;
    let (res, back) = disk.writev_all_at(file, bufs, offset).await;
    res.expect("writev_all_at");
    assert_eq!(back.len(), sizes.len(), "every buffer is given back");
    for (b, p) in back.iter().zip(&parts) {
        assert_bytes_eq("buffer given back by writev", b, p);
    }
    let expected: Vec<u8> = parts.concat();
    let got = read_up_to(disk, file, 0, offset as usize + expected.len() + 10).await;
    assert_eq!(
        got.len(),
        offset as usize + expected.len(),
        "file length after writev"
    );
    assert!(
        got[..offset as usize].iter().all(|&b| b == 0),
        "bytes before the offset are zero"
    );
    assert_bytes_eq("writev contents", &got[offset as usize..], &expected);
    // A second writev overwrites in place, at an offset inside the first.
    let over = [pattern(900, 100), pattern(901, 50)];
    let bufs = over.iter().map(|p| buf_of(disk, p)).collect();
    let (res, _) = disk.writev_all_at(file, bufs, offset + 5).await;
    res.expect("second writev");
    let got = read_up_to(disk, file, offset + 5, 150).await;
    assert_bytes_eq("overwrite by writev", &got, &over.concat());
    // An empty list writes nothing.
    let (res, back) = disk.writev_at(file, Vec::new(), 0).await;
    assert_eq!(res.expect("empty writev"), 0);
    assert!(back.is_empty());
    Outcome::Passed
}

/// More buffers than `IOV_MAX` (1024 on Linux) still land, in order.
pub async fn writev_more_than_iov_max<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let disk = &*cx.disk;
    let file = create(cx, "writev-many").await;
    let parts: Vec<Vec<u8>> = (0..3000u64)
        .map(|i| pattern(i, 1 + (i as usize * 7) % 200))
        .collect();
    let bufs = parts.iter().map(|p| buf_of(disk, p)).collect();
    let (res, back) = disk.writev_all_at(file, bufs, 5).await;
    res.expect("writev_all_at of 3000 buffers");
    assert_eq!(back.len(), 3000, "every buffer is given back");
    let expected = parts.concat();
    let got = read_up_to(disk, file, 5, expected.len()).await;
    assert_bytes_eq("3000-buffer writev", &got, &expected);
    // The single call, not the looping helper, also takes them all (it may be short, not wrong).
    let bufs = parts.iter().rev().map(|p| buf_of(disk, p)).collect();
    let (res, _) = disk.writev_at(file, bufs, 0).await;
    let n = res.expect("writev_at of 3000 buffers");
    let expected: Vec<u8> = parts.iter().rev().flatten().copied().collect();
    assert!(n > 0 && n <= expected.len());
    let got = read_up_to(disk, file, 0, n).await;
    assert_bytes_eq("3000-buffer writev_at prefix", &got, &expected[..n]);
    Outcome::Passed
}
