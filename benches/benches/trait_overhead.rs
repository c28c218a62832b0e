//! Criterion: one 4 KiB read from the page cache, directly with `pread` and through the
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a bench: a failed step panics
//! blocking backend (owned buffer, future, queue, thread hop), at queue depth 1.

use std::os::unix::fs::FileExt;

use criterion::{Criterion, criterion_group, criterion_main};
use diskio::{DiskIo, OpenOptions};
use diskio_blocking::BlockingDisk;

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("diskio-criterion-{}", std::process::id()));
    let path = benches::scratch::ensure_file(&dir, "cached.dat", 16 << 20).unwrap();
    benches::scratch::warm(&path).unwrap();
    let file_bytes = 16u64 << 20;

    let std_file = std::fs::File::open(&path).unwrap();
    let mut offsets = benches::Offsets::new(1, file_bytes, 4096);
    let mut buf = vec![0u8; 4096];
    c.bench_function("pread 4K cached", |b| {
        b.iter(|| std_file.read_at(&mut buf, offsets.random()).unwrap())
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let disk = BlockingDisk::with_defaults().unwrap();
    let file = rt.block_on(disk.open(&path, &OpenOptions::new())).unwrap();
    let mut slot = Some(disk.alloc(4096).unwrap());
    c.bench_function("diskio-blocking read_at 4K cached", |b| {
        b.iter(|| {
            let mut buf = slot.take().unwrap();
            buf.resize(4096).unwrap();
            let (res, back) = rt.block_on(disk.read_at(file, buf, offsets.random()));
            res.unwrap();
            slot = Some(back);
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
