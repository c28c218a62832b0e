//! `Reader::wait`: following a log as it grows, cancel-safe, ended by close.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

mod common;

use std::time::Duration;

use conformance::CrashDisk;
use wal::{Wal, WalError};

#[test]
fn a_follower_gets_each_record_once_durable_and_a_dropped_wait_loses_nothing() {
    common::block_on(async {
        let (log, _) = Wal::open(CrashDisk::new(), "log", common::opts())
            .await
            .unwrap();
        log.append(b"one").await.unwrap();
        let mut reader = log.reader(1);
        assert_eq!(reader.next().await.unwrap().unwrap().data, b"one");
        assert!(reader.next().await.unwrap().is_none());
        // A wait cancelled before anything arrives (a client gone, a shutdown) changes nothing.
        let waited = tokio::time::timeout(Duration::from_millis(20), reader.wait()).await;
        assert!(
            waited.is_err(),
            "nothing was appended, the wait must still be pending"
        );
        assert_eq!(reader.position(), 2);
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                log.append(b"two").await.unwrap()
            })
        };
        reader.wait().await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap().data, b"two");
        assert_eq!(writer.await.unwrap(), 2);
        // Closing the log ends a wait with an error, never a hang.
        let closer = {
            let log = log.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                log.close().await.unwrap();
            })
        };
        assert!(matches!(reader.wait().await, Err(WalError::Closed)));
        closer.await.unwrap();
    });
}
