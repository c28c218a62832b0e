//! Round trips, end of file, short reads, stats.

use diskio::{DiskIo, Op};

use super::{assert_bytes_eq, buf_of, create, pattern, read_up_to, write_all};
use crate::harness::{Cx, Outcome};

/// Writes and reads back 0, 1, 511, 4096 bytes, 1 MiB and 64 MiB; the file length matches.
pub async fn round_trip_sizes<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let disk = &*cx.disk;
    for (i, size) in [0usize, 1, 511, 4096, 1 << 20, 64 << 20]
        .into_iter()
        .enumerate()
    {
        let file = create(cx, &format!("round-trip-{size}")).await;
        let data = pattern(i as u64, size);
        write_all(disk, file, 0, &data).await;
        assert_eq!(
            disk.file_len(file).await.expect("file_len"),
            size as u64,
            "length after writing {size} bytes"
        );
        let (res, back) = disk
            .read_exact_at(file, disk.alloc(size).expect("alloc"), 0)
            .await;
        res.unwrap_or_else(|e| panic!("read_exact_at of {size} bytes: {e}"));
        assert_bytes_eq(&format!("round trip of {size} bytes"), &back, &data);
        // A larger buffer reads exactly what is there.
        let (res, back) = disk
            .read_at(file, disk.alloc(size + 100).expect("alloc"), 0)
            .await;
        let n = res.expect("read_at past the end");
        assert!(n <= size, "read {n} bytes from a {size}-byte file");
        assert_bytes_eq("read with a larger buffer", &back, &data[..n]);
        disk.close(file).await.expect("close");
    }
    Outcome::Passed
}

/// Reading at or past the end of the file returns `Ok(0)` and an empty buffer.
pub async fn read_at_and_past_eof<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let disk = &*cx.disk;
    let file = create(cx, "eof").await;
    for offset in [0u64, 1, 4096] {
        let (res, buf) = disk
            .read_at(file, disk.alloc(64).expect("alloc"), offset)
            .await;
        assert_eq!(
            res.expect("read of an empty file"),
            0,
            "empty file, offset {offset}"
        );
        assert!(buf.is_empty());
    }
    write_all(disk, file, 0, &pattern(1, 100)).await;
    for offset in [100u64, 101, 1 << 20, i64::MAX as u64 - 64] {
        let (res, buf) = disk
            .read_at(file, disk.alloc(64).expect("alloc"), offset)
            .await;
        assert_eq!(
            res.expect("read past the end"),
            0,
            "offset {offset} of a 100-byte file"
        );
        assert!(
            buf.is_empty(),
            "the buffer is truncated to the 0 bytes read"
        );
    }
    Outcome::Passed
}

/// A read that crosses the end of the file returns the bytes up to it; `read_exact_at` reports
/// `UnexpectedEof`.
pub async fn short_read_at_tail<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let disk = &*cx.disk;
    let file = create(cx, "tail").await;
    let data = pattern(7, 10_000);
    write_all(disk, file, 0, &data).await;
    let (res, buf) = disk
        .read_at(file, disk.alloc(4096).expect("alloc"), 8192)
        .await;
    let n = res.expect("read across the end");
    assert!(
        n > 0 && n <= 1808,
        "read {n} bytes at 8192 of a 10000-byte file"
    );
    assert_bytes_eq("tail", &buf, &data[8192..8192 + n]);
    assert_eq!(
        read_up_to(disk, file, 8192, 4096).await,
        &data[8192..],
        "tail by looping"
    );
    let (res, buf) = disk
        .read_exact_at(file, disk.alloc(4096).expect("alloc"), 8192)
        .await;
    let err = res.expect_err("read_exact_at across the end must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    assert_bytes_eq(
        "what read_exact_at got before the end",
        &buf,
        &data[8192..8192 + buf.len()],
    );
    Outcome::Passed
}

/// Operations are counted in the backend's stats, bytes included.
pub async fn stats_are_counted<D: DiskIo>(cx: &Cx<D>) -> Outcome {
    let disk = &*cx.disk;
    let before = disk.stats();
    let file = create(cx, "stats").await;
    let (res, _) = disk.write_at(file, buf_of(disk, &[1; 4096]), 0).await;
    assert_eq!(res.expect("write"), 4096);
    let (res, _) = disk
        .read_at(file, disk.alloc(4096).expect("alloc"), 0)
        .await;
    assert_eq!(res.expect("read"), 4096);
    let (res, _) = disk
        .read_at(file, disk.alloc(16).expect("alloc"), u64::MAX)
        .await;
    assert!(res.is_err(), "a read at offset u64::MAX must fail");
    let after = disk.stats();
    for op in [Op::Write, Op::Read] {
        let (b, a) = (before.op(op), after.op(op));
        assert!(a.ops > b.ops, "{op} was not counted");
        assert!(a.bytes >= b.bytes + 4096, "{op} bytes were not counted");
        assert!(
            a.latency_ns.len() > b.latency_ns.len(),
            "{op} latency was not recorded"
        );
    }
    assert!(
        after.op(Op::Read).errors > before.op(Op::Read).errors,
        "failed read not counted"
    );
    Outcome::Passed
}
