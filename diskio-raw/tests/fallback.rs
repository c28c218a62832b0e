//! With io_uring made unavailable, construction fails with `Unsupported` and a reason, and
//! `auto` falls back to the blocking backend, which works. (Its own test binary: it sets an
//! environment variable for the whole process.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step panics

use diskio::{DiskIo, Error, OpenOptions};

#[test]
fn disabled_ring_is_unsupported_and_auto_falls_back() {
    // SAFETY: this binary holds this one test, which sets the variable before starting any
    // thread, so nothing reads the environment concurrently.
    unsafe { std::env::set_var(diskio_raw::DISABLE_ENV, "1") };

    match diskio_raw::RawDisk::with_defaults() {
        Err(Error::Unsupported { reason }) => {
            assert!(reason.contains(diskio_raw::DISABLE_ENV), "{reason}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }

    let chosen = diskio_raw::auto(
        diskio_raw::RawOptions::new(),
        diskio_blocking::BlockingOptions::new().threads(2),
    )
    .expect("auto falls back");
    assert_eq!(chosen.disk.name(), "blocking");
    let reason = chosen.fallback_reason.expect("a fallback says why");
    assert!(reason.contains(diskio_raw::DISABLE_ENV), "{reason}");

    // The fallback is a working backend.
    let dir = std::env::temp_dir().join(format!("diskio-raw-fallback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let disk = &chosen.disk;
        let file = disk
            .open(&dir.join("f"), &OpenOptions::read_write_create())
            .await
            .unwrap();
        let buf = diskio::AlignedBuf::from_slice(b"fallback", disk.alignment()).unwrap();
        let (res, _) = disk.write_all_at(file, buf, 0).await;
        res.unwrap();
        let (res, back) = disk.read_at(file, disk.alloc(8).unwrap(), 0).await;
        assert_eq!(res.unwrap(), 8);
        assert_eq!(&back[..], b"fallback");
    });
    std::fs::remove_dir_all(&dir).unwrap();

    // Bad options are an error, not a reason to fall back.
    let res = diskio_raw::auto(
        diskio_raw::RawOptions::new().entries(0),
        diskio_blocking::BlockingOptions::new(),
    );
    assert!(matches!(res, Err(Error::InvalidInput { .. })), "{res:?}");
}
