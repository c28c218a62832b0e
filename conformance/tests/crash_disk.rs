//! `CrashDisk` keeps what was synced, and keeps, drops or tears the rest by a replayable seed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step panics

use std::path::Path;

use conformance::harness::{Flavor, Outcome, run};
use conformance::{CrashDisk, CrashMode, Rng, seed_from_env};
use diskio::{AlignedBuf, DiskIo, FileId, OpenOptions, SyncKind};

fn block(byte: u8, len: usize) -> AlignedBuf {
    AlignedBuf::from_slice(&vec![byte; len], 512).unwrap()
}

async fn write(disk: &CrashDisk, f: FileId, byte: u8, len: usize, offset: u64) {
    let (res, _) = disk.write_at(f, block(byte, len), offset).await;
    assert_eq!(res.unwrap(), len);
}

/// A history: 4 KiB of 0xAA synced, then unsynced 0xBB over [1000, 3000) and a growth to 8 KiB
/// with 0xCC.
async fn history(path: &Path) -> CrashDisk {
    let disk = CrashDisk::new();
    let f = disk
        .open(path, &OpenOptions::read_write_create())
        .await
        .unwrap();
    write(&disk, f, 0xAA, 4096, 0).await;
    disk.fsync(f, SyncKind::Data).await.unwrap();
    write(&disk, f, 0xBB, 2000, 1000).await;
    write(&disk, f, 0xCC, 4096, 4096).await;
    assert_eq!(disk.unsynced_ops(), 2);
    disk
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn synced_data_survives_every_crash() {
    let path = Path::new("log");
    let disk = block_on(history(path));
    let seed = seed_from_env("DISKIO_SEED");
    let mut rng = Rng::new(seed);
    for _ in 0..500 {
        let after = disk.crash(rng.next_u64());
        let image = after.file_image(path).unwrap();
        assert!(image.len() >= 4096, "synced length lost (base seed {seed})");
        for (i, &b) in image[..4096].iter().enumerate() {
            let unsynced_here = (1000..3000).contains(&i);
            // Unsynced bytes may be old, new or garbage; synced ones never change.
            assert!(
                b == 0xAA || unsynced_here,
                "byte {i} = {b:#x} (base seed {seed})"
            );
        }
        assert_eq!(after.unsynced_ops(), 0);
    }
}

#[test]
fn keep_all_and_drop_all_are_the_two_extremes() {
    let path = Path::new("log");
    let disk = block_on(history(path));
    let kept = disk
        .crash_with(1, CrashMode::KeepAll)
        .file_image(path)
        .unwrap();
    assert_eq!(
        kept,
        disk.file_image(path).unwrap(),
        "keep-all equals the live image"
    );
    let dropped = disk
        .crash_with(1, CrashMode::DropAll)
        .file_image(path)
        .unwrap();
    assert_eq!(
        dropped,
        vec![0xAA; 4096],
        "drop-all equals the durable image"
    );
    assert_eq!(disk.durable_image(path).unwrap(), dropped);
}

#[test]
fn torn_writes_tear_at_sector_boundaries_only() {
    let path = Path::new("log");
    let disk = block_on(history(path));
    let mut saw_mixed = false;
    for seed in 0..200 {
        let image = disk
            .crash_with(seed, CrashMode::TearAll)
            .file_image(path)
            .unwrap();
        // Within every 512-byte sector of the 0xBB write, bytes are all old or all new.
        for sector in 1..6 {
            let lo = (sector * 512).max(1000);
            let hi = ((sector + 1) * 512).min(3000);
            let part = &image[lo..hi];
            assert!(
                part.iter().all(|&b| b == 0xAA) || part.iter().all(|&b| b == 0xBB),
                "seed {seed}: sector {sector} torn inside"
            );
        }
        let new = image[1000..3000].iter().filter(|&&b| b == 0xBB).count();
        saw_mixed |= new > 0 && new < 2000;
    }
    assert!(saw_mixed, "200 seeds of TearAll never kept part of a write");
}

#[test]
fn the_same_seed_replays_the_same_disk() {
    let path = Path::new("log");
    let disk = block_on(history(path));
    let seed = seed_from_env("DISKIO_SEED");
    let mut outcomes = std::collections::HashSet::new();
    for s in seed..seed + 50 {
        let a = disk.crash(s).file_image(path).unwrap();
        let b = disk.crash(s).file_image(path).unwrap();
        assert_eq!(a, b, "seed {s} gave two different disks");
        outcomes.insert(a);
    }
    assert!(
        outcomes.len() > 1,
        "50 seeds all gave the same disk: the seed is not used"
    );
}

#[test]
fn crashed_disk_starts_with_no_open_files_and_works() {
    let path = Path::new("log");
    let disk = block_on(history(path));
    let after = disk.crash(7);
    block_on(async {
        let f = after
            .open(path, &OpenOptions::read_write_create())
            .await
            .unwrap();
        assert_eq!(f.into_raw(), 1, "ids restart on the new disk");
        let len = after.file_len(f).await.unwrap();
        write(&after, f, 0xDD, 512, len).await;
        assert_eq!(after.file_len(f).await.unwrap(), len + 512);
    });
}

#[test]
fn direct_files_check_sector_alignment_and_bad_ids_are_typed() {
    run(
        "crash_direct",
        Flavor::CurrentThread,
        CrashDisk::create,
        |cx| async move {
            let disk = &*cx.disk;
            let f = disk
                .open(
                    Path::new("d"),
                    &OpenOptions::read_write_create().direct(true),
                )
                .await
                .unwrap();
            let (res, _) = disk.write_at(f, block(1, 512), 100).await;
            assert!(
                matches!(res, Err(diskio::Error::Misaligned { .. })),
                "{res:?}"
            );
            let (res, _) = disk.write_at(f, block(1, 100), 0).await;
            assert!(
                matches!(res, Err(diskio::Error::Misaligned { .. })),
                "{res:?}"
            );
            disk.close(f).await.unwrap();
            let (res, _) = disk.read_at(f, block(0, 512), 0).await;
            assert!(
                matches!(
                    res,
                    Err(diskio::Error::BadFile {
                        reason: diskio::BadFileReason::Closed,
                        ..
                    })
                ),
                "{res:?}"
            );
            let err = disk
                .open(Path::new("missing"), &OpenOptions::new())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
            Outcome::Passed
        },
    );
}

#[test]
fn crash_disk_keeps_the_model() {
    conformance::model::check("crash_disk_model", CrashDisk::create);
}

#[test]
fn directory_entries_live_in_the_disk_namespace() {
    run(
        "crash_directory_entries",
        Flavor::CurrentThread,
        CrashDisk::create,
        |cx| async move { conformance::scenarios::directory_entries(&cx).await },
    );
}

#[test]
fn a_frozen_snapshot_is_the_disk_right_after_the_nth_operation() {
    block_on(async {
        let make = |n: u64| async move {
            let disk = CrashDisk::new();
            disk.freeze_after(n);
            let f = disk
                .open(Path::new("f"), &OpenOptions::read_write_create())
                .await
                .unwrap(); // op 1: the file is created
            write(&disk, f, 0xAA, 512, 0).await; // op 2
            disk.fsync(f, SyncKind::Data).await.unwrap(); // op 3
            write(&disk, f, 0xBB, 512, 512).await; // op 4
            assert_eq!(disk.ops(), 4);
            disk
        };
        let image = |d: &CrashDisk| d.file_image(Path::new("f"));
        let at2 = make(2).await;
        assert!(at2.is_frozen());
        let lost = at2.crash_frozen(1, CrashMode::DropAll).unwrap();
        assert_eq!(
            image(&lost),
            Some(Vec::new()),
            "the write after the creation was unsynced"
        );
        let kept = at2.crash_frozen(1, CrashMode::KeepAll).unwrap();
        assert_eq!(image(&kept), Some(vec![0xAA; 512]));
        let at3 = make(3).await.crash_frozen(1, CrashMode::DropAll).unwrap();
        assert_eq!(image(&at3), Some(vec![0xAA; 512]), "synced at op 3");
        let at4 = make(4).await.crash_frozen(1, CrashMode::KeepAll).unwrap();
        assert_eq!(image(&at4).unwrap().len(), 1024);
        let never = make(9).await;
        assert!(!never.is_frozen());
        assert!(never.crash_frozen(1, CrashMode::KeepAll).is_none());
    });
}

#[test]
fn with_strict_directories_only_synced_entries_survive() {
    block_on(async {
        let disk = CrashDisk::new().strict_directories();
        let dir = Path::new("d");
        let create = |name: &'static str| {
            let disk = disk.clone();
            async move {
                let f = disk
                    .open(&dir.join(name), &OpenOptions::read_write_create())
                    .await
                    .unwrap();
                write(&disk, f, 1, 512, 0).await;
                disk.fsync(f, SyncKind::All).await.unwrap();
                disk.close(f).await.unwrap();
            }
        };
        create("kept").await;
        create("removed").await;
        create("renamed").await;
        disk.sync_dir(dir).await.unwrap();
        create("unsynced").await;
        disk.remove_file(&dir.join("removed")).await.unwrap();
        disk.rename(&dir.join("renamed"), &dir.join("new-name"))
            .await
            .unwrap();
        assert_eq!(
            disk.list_dir(dir).await.unwrap(),
            ["kept", "new-name", "unsynced"]
        );
        let after = disk.crash_with(1, CrashMode::KeepAll);
        assert_eq!(
            after.list_dir(dir).await.unwrap(),
            ["kept", "removed", "renamed"],
            "the names of the last sync_dir, with their synced contents"
        );
        assert_eq!(after.file_image(&dir.join("removed")), Some(vec![1; 512]));
        disk.sync_dir(dir).await.unwrap();
        let after = disk.crash_with(1, CrashMode::KeepAll);
        assert_eq!(
            after.list_dir(dir).await.unwrap(),
            ["kept", "new-name", "unsynced"]
        );
    });
}
