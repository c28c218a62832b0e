//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`): every input that ever mattered
//! runs in every `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // tests: a failed step panics

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} is missing: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect()
}

#[test]
fn decode_corpus_replays() {
    let inputs = corpus("decode");
    assert!(!inputs.is_empty());
    for (path, data) in &inputs {
        eprintln!("decode {}", path.display());
        wal_fuzz::decode(data);
    }
    eprintln!("decode: {} inputs replayed", inputs.len());
}

#[test]
fn recover_corpus_replays() {
    let inputs = corpus("recover");
    assert!(!inputs.is_empty());
    for (path, data) in &inputs {
        eprintln!("recover {}", path.display());
        wal_fuzz::recover(data);
    }
    eprintln!("recover: {} inputs replayed", inputs.len());
}

/// The seeds reach the paths a CRC guards: their records verify (format version 2).
#[test]
fn seeds_hold_valid_records() {
    let seeds = wal_fuzz::seeds();
    let get = |name: &str| {
        seeds
            .iter()
            .find(|(_, n, _)| n == name)
            .map(|(_, _, b)| b.clone())
            .unwrap()
    };
    assert_eq!(wal_fuzz::recovered(&get("seed-v2-one-segment")), Some(8));
    assert_eq!(wal_fuzz::recovered(&get("seed-v2-two-segments")), Some(13));
    let torn = wal_fuzz::recovered(&get("seed-v2-torn-tail")).unwrap();
    assert!((1..8).contains(&torn), "a torn tail is cut: {torn} records");
    assert_eq!(
        wal_fuzz::recovered(&get("seed-v2-damaged")),
        None,
        "damage before the tail"
    );
    // Every seed is in the committed corpus (written by the seed_corpus example).
    for (target, name, bytes) in &seeds {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target)
            .join(name);
        assert_eq!(
            std::fs::read(&path).ok().as_ref(),
            Some(bytes),
            "{} is missing or stale: cargo run -p wal-fuzz --example seed_corpus",
            path.display()
        );
    }
}
