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
