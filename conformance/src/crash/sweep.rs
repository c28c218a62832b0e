//! The power-loss sweep: a workload on a [`CrashDisk`], crashed after every one of its
//! operations in turn, each crash checked under several [`CrashMode`]s.

use std::future::Future;

use super::{CrashDisk, CrashMode};
use crate::Rng;

/// How a sweep runs.
#[derive(Debug, Clone)]
pub struct Sweep<'a> {
    /// What the sweep is called in its messages.
    pub name: String,
    /// Crash states to check in all (spread evenly over the crash points).
    pub target: u64,
    /// Seeds the crash choices; the `DISKIO_SEED` the caller drew its workload from, so that
    /// the seed a failure names replays both.
    pub seed: u64,
    /// The modes the crashes at each point cycle through.
    pub modes: &'a [CrashMode],
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Crash states checked.
    pub states: u64,
    /// Crash points the workload reached (runs that stopped early do not count).
    pub reached: u64,
    /// Operations of one clean run of the workload: the crash points.
    pub points: u64,
}

impl Sweep<'_> {
    /// Runs `workload` once on a fresh disk (with strict directories) to count its operations,
    /// handing its outcome and disk to `counted` for the caller's own checks; then, for every
    /// operation, runs it again on a disk frozen after that operation and hands `check` each
    /// crashed disk, (a clone of) the outcome of the frozen run (what the workload saw
    /// acknowledged), and a description of the crash that names the seed.
    ///
    /// # Panics
    ///
    /// When `check` does (that is how a sweep fails), and when fewer than nine in ten crash
    /// points were reached or fewer than nine in ten of `target` states checked.
    pub async fn run<T, W, WF, K, KF, C, CF>(
        &self,
        mut workload: W,
        counted: K,
        mut check: C,
    ) -> SweepReport
    where
        T: Clone,
        W: FnMut(CrashDisk) -> WF,
        WF: Future<Output = T>,
        K: FnOnce(T, CrashDisk) -> KF,
        KF: Future<Output = ()>,
        C: FnMut(CrashDisk, T, String) -> CF,
        CF: Future<Output = ()>,
    {
        let Self {
            name,
            target,
            seed,
            modes,
        } = self;
        // Not the workload's own stream: the same seed, mixed.
        let mut rng = Rng::new(seed.rotate_left(29) ^ 0xC2B2_AE3D_27D4_EB4F);
        let disk = CrashDisk::new().strict_directories();
        let done = workload(disk.clone()).await;
        let points = disk.ops();
        counted(done, disk).await;
        let per_point = target.div_ceil(points).max(1);
        let (mut states, mut reached) = (0u64, 0u64);
        for point in 1..=points {
            let disk = CrashDisk::new().strict_directories();
            disk.freeze_after(point);
            let done = workload(disk.clone()).await;
            if !disk.is_frozen() {
                continue; // this run did fewer operations than the counting one
            }
            reached += 1;
            for k in 0..per_point {
                let crash_seed = rng.next_u64();
                let mode = modes[(k % modes.len() as u64) as usize];
                let what = format!(
                    "{name}: crash after operation {point} of {points}, {mode:?} seed \
                     {crash_seed} (DISKIO_SEED={seed})"
                );
                let Some(crashed) = disk.crash_frozen(crash_seed, mode) else {
                    panic!("{what}: the disk was frozen but gives no crash image");
                };
                check(crashed, done.clone(), what).await;
                states += 1;
            }
        }
        assert!(
            reached * 10 >= points * 9,
            "{name}: most crash points were reached ({reached} of {points})"
        );
        assert!(
            states >= target * 9 / 10,
            "{name}: {states} crash states, wanted {target}"
        );
        SweepReport {
            states,
            reached,
            points,
        }
    }
}
