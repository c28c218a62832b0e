//! Partitions: appends routed by key, each partition its own log.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use common::{block_on, payload, read_all, small};

use std::collections::BTreeMap;

use conformance::CrashDisk;
use wal::WalError;

#[test]
fn partitions_route_by_key_and_keep_their_count() {
    block_on(async {
        let disk = CrashDisk::new();
        let (log, reports) = wal::Partitioned::open("plog", 4, small(), |_| disk.clone())
            .await
            .unwrap();
        assert_eq!((log.len(), reports.len()), (4, 4));
        let mut per_key: BTreeMap<u64, (usize, Vec<u64>)> = BTreeMap::new();
        for i in 0..400u64 {
            let key = (i % 37).to_le_bytes();
            let (p, lsn) = log.append(&key, &payload(i, 50)).await.unwrap();
            assert_eq!(p, log.partition_of(&key));
            let e = per_key.entry(i % 37).or_insert((p, Vec::new()));
            assert_eq!(e.0, p, "a key stays in one partition");
            e.1.push(lsn);
        }
        for (_, lsns) in per_key.values() {
            assert!(
                lsns.windows(2).all(|w| w[0] < w[1]),
                "a key's records in order"
            );
        }
        let mut total = 0;
        for i in 0..log.len() {
            let part = log.partition(i).unwrap();
            let got = read_all(part, 1).await;
            for (k, (lsn, _)) in got.iter().enumerate() {
                assert_eq!(*lsn, k as u64 + 1, "partition {i}: contiguous LSNs");
            }
            total += got.len();
        }
        assert_eq!(total, 400);
        assert!(
            (0..4).all(|i| per_key.values().any(|(p, _)| *p == i)),
            "37 keys use every partition"
        );
        log.close().await.unwrap();

        let (log, reports) = wal::Partitioned::open("plog", 4, small(), |_| disk.clone())
            .await
            .unwrap();
        assert_eq!(reports.iter().map(|r| r.records).sum::<u64>(), 400);
        log.close().await.unwrap();
        match wal::Partitioned::open("plog", 3, small(), |_| disk.clone()).await {
            Err(WalError::InvalidOptions(m)) => assert!(m.contains("4 partitions"), "{m}"),
            other => panic!("expected a refusal, got {:?}", other.map(|(l, _)| l)),
        }
        assert!(matches!(
            wal::Partitioned::open("other", 0, small(), |_| disk.clone()).await,
            Err(WalError::InvalidOptions(_))
        ));
    });
}
