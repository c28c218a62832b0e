//! Writes the seed inputs ([`wal_fuzz::seeds`]) into `fuzz/corpus/<target>/`: run it when the
//! on-disk format changes, then let the fuzzer grow the corpus from them.
//!
//! ```text
//! cargo run -p wal-fuzz --example seed_corpus
//! ```

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, name, bytes) in wal_fuzz::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(&name), &bytes)?;
        println!("{target}/{name}: {} bytes", bytes.len());
    }
    Ok(())
}
