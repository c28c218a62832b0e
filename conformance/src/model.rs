//! Model-based property test: random operation sequences against an in-memory model file.
//!
//! Every case opens a fresh file and applies a random sequence of writes, vectored writes,
//! reads, length changes, syncs and reopens to the backend and to a `Vec<u8>` model; every read
//! and every length must match the model. A failure is shrunk by proptest to a minimal sequence
//! and printed.
//!
//! The number of cases is 256, or `DISKIO_PROPTEST_CASES` when set.

use std::path::{Path, PathBuf};

use diskio::{DiskIo, FileId, OpenOptions, SyncKind};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use crate::harness::{Flavor, ScratchDir, report_skip, runtime};
use crate::scenarios::pattern;

/// Largest offset the generated operations touch.
const SPAN: u64 = 96 * 1024;

/// One step of a case.
#[derive(Debug, Clone)]
pub enum ModelOp {
    /// `write_all_at` of `len` pattern bytes.
    Write {
        /// Where.
        offset: u64,
        /// How many bytes.
        len: usize,
        /// Pattern seed.
        seed: u8,
    },
    /// `writev_all_at` of several pattern buffers.
    Writev {
        /// Where.
        offset: u64,
        /// Length of each buffer.
        lens: Vec<usize>,
        /// Pattern seed.
        seed: u8,
    },
    /// `read_at` looped to `len` bytes or end of file.
    Read {
        /// Where.
        offset: u64,
        /// How many bytes.
        len: usize,
    },
    /// `set_len`.
    SetLen(u64),
    /// `fsync` (data or all).
    Sync(bool),
    /// Close the file and open it again.
    Reopen,
}

fn op_strategy() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        4 => (0..SPAN, 0..9000usize, any::<u8>()).prop_map(|(offset, len, seed)| ModelOp::Write { offset, len, seed }),
        2 => (0..SPAN, prop::collection::vec(0..3000usize, 1..6), any::<u8>())
            .prop_map(|(offset, lens, seed)| ModelOp::Writev { offset, lens, seed }),
        4 => (0..SPAN + 4096, 0..9000usize).prop_map(|(offset, len)| ModelOp::Read { offset, len }),
        1 => (0..SPAN).prop_map(ModelOp::SetLen),
        1 => any::<bool>().prop_map(ModelOp::Sync),
        1 => Just(ModelOp::Reopen),
    ]
}

fn bytes_for(seed: u8, offset: u64, len: usize) -> Vec<u8> {
    pattern(u64::from(seed) << 32 | offset, len)
}

fn apply_write(model: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if data.is_empty() {
        return;
    }
    if model.len() < end {
        model.resize(end, 0);
    }
    model[offset as usize..end].copy_from_slice(data);
}

async fn run_case<D: DiskIo>(disk: &D, path: &Path, ops: &[ModelOp]) -> Result<(), TestCaseError> {
    let fail = |msg: String| TestCaseError::fail(msg);
    let fresh = OpenOptions::read_write_create().truncate(true);
    let again = OpenOptions::read_write_create();
    let mut file: FileId = disk
        .open(path, &fresh)
        .await
        .map_err(|e| fail(format!("open: {e}")))?;
    let mut model: Vec<u8> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            ModelOp::Write { offset, len, seed } => {
                let data = bytes_for(*seed, *offset, *len);
                let mut buf = disk.alloc(data.len()).map_err(|e| fail(e.to_string()))?;
                buf.copy_from_slice(&data);
                let (res, _) = disk.write_all_at(file, buf, *offset).await;
                res.map_err(|e| fail(format!("step {step}: {op:?}: {e}")))?;
                apply_write(&mut model, *offset, &data);
            }
            ModelOp::Writev { offset, lens, seed } => {
                let mut bufs = Vec::new();
                let mut all = Vec::new();
                for (i, &len) in lens.iter().enumerate() {
                    let data = bytes_for(seed.wrapping_add(i as u8), *offset, len);
                    let mut buf = disk.alloc(len).map_err(|e| fail(e.to_string()))?;
                    buf.copy_from_slice(&data);
                    bufs.push(buf);
                    all.extend_from_slice(&data);
                }
                let (res, back) = disk.writev_all_at(file, bufs, *offset).await;
                res.map_err(|e| fail(format!("step {step}: {op:?}: {e}")))?;
                prop_assert_eq!(back.len(), lens.len(), "writev gives every buffer back");
                apply_write(&mut model, *offset, &all);
            }
            ModelOp::Read { offset, len } => {
                let got = crate::scenarios::read_up_to(disk, file, *offset, *len).await;
                let start = (*offset as usize).min(model.len());
                let end = (*offset as usize + len).min(model.len());
                prop_assert!(
                    got == model[start..end],
                    "step {step}: {op:?}: read differs from the model ({} vs {} bytes)",
                    got.len(),
                    end - start
                );
            }
            ModelOp::SetLen(len) => {
                disk.set_len(file, *len)
                    .await
                    .map_err(|e| fail(format!("step {step}: {op:?}: {e}")))?;
                model.resize(*len as usize, 0);
            }
            ModelOp::Sync(all) => {
                let kind = if *all { SyncKind::All } else { SyncKind::Data };
                disk.fsync(file, kind)
                    .await
                    .map_err(|e| fail(format!("step {step}: {op:?}: {e}")))?;
            }
            ModelOp::Reopen => {
                disk.close(file)
                    .await
                    .map_err(|e| fail(format!("step {step}: close: {e}")))?;
                file = disk
                    .open(path, &again)
                    .await
                    .map_err(|e| fail(format!("step {step}: reopen: {e}")))?;
            }
        }
        let len = disk
            .file_len(file)
            .await
            .map_err(|e| fail(format!("file_len: {e}")))?;
        prop_assert_eq!(
            len,
            model.len() as u64,
            "step {}: {:?}: file length differs from the model",
            step,
            op
        );
    }
    disk.close(file)
        .await
        .map_err(|e| fail(format!("close: {e}")))?;
    Ok(())
}

/// Number of cases: `DISKIO_PROPTEST_CASES`, else 256.
pub fn cases() -> u32 {
    std::env::var("DISKIO_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

/// Runs the model-based property test against the backend `make` builds.
///
/// # Panics
///
/// With the shrunk failing sequence when the backend disagrees with the model.
pub fn check<D, M>(test: &str, make: M)
where
    D: DiskIo,
    M: FnOnce() -> diskio::Result<D>,
{
    let rt = runtime(Flavor::MultiThread);
    let made = {
        let _guard = rt.enter();
        make()
    };
    let disk = match made {
        Ok(d) => d,
        Err(diskio::Error::Unsupported { reason }) => {
            report_skip(test, &format!("backend unsupported here: {reason}"));
            return;
        }
        Err(e) => panic!("{test}: cannot construct the backend: {e}"),
    };
    let dir = ScratchDir::new(test);
    let path: PathBuf = dir.path().join("model");
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = prop::collection::vec(op_strategy(), 1..40);
    let result = runner.run(&strategy, |ops| rt.block_on(run_case(&disk, &path, &ops)));
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            panic!(
                "{test}: backend differs from the model: {reason}\nminimal failing sequence: {ops:#?}"
            )
        }
        Err(TestError::Abort(reason)) => panic!("{test}: property test aborted: {reason}"),
    }
}
