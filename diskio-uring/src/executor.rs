//! The executor threads: each runs a tokio-uring runtime and serves jobs sent over a bounded
//! channel.
//!
//! tokio-uring's files and futures are `!Send`: they live and complete on the thread whose
//! runtime created them. Each executor keeps its files in a local map, receives jobs (which
//! carry owned buffers and a oneshot reply), runs each job as a local task, and sends the
//! buffers back with the result.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diskio::{AlignedBuf, DirectAlignment, OpenOptions, SyncKind};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_uring::fs::File;

use crate::bufs::Owned;
use crate::files::OpenFile;
use diskio::backend::{IOV_MAX, OpTimer};

/// An operation's stats clocks, travelling with its job (at most two: a write and its sync).
pub(crate) type Clocks = [Option<OpTimer>; 2];

/// Where a job's result goes, with the operation's clocks. The caller takes the clocks back with
/// the result and finishes them; if the caller is gone (its future dropped), the executor
/// finishes them from the result, so a dropped operation is counted with the outcome it had.
pub(crate) struct Reply<T: Counted> {
    tx: oneshot::Sender<(T, Clocks)>,
    clocks: Clocks,
}

impl<T: Counted> Reply<T> {
    /// A reply carrying `clocks`, and the receiver of the result.
    pub(crate) fn new(clocks: Clocks) -> (Self, oneshot::Receiver<(T, Clocks)>) {
        let (tx, rx) = oneshot::channel();
        (Self { tx, clocks }, rx)
    }

    /// Sends the result; `false` if the caller is gone (its clocks then finished here). The
    /// job leaves `pending` first, so a caller holding its answer never finds its own job
    /// still counted there (a lone sync right after a write would miss the caller's thread).
    pub(crate) fn send(self, value: T, pending: &AtomicUsize) -> bool {
        pending.fetch_sub(1, Ordering::Release);
        match self.tx.send((value, self.clocks)) {
            Ok(()) => true,
            Err((value, clocks)) => {
                value.count(clocks);
                false
            }
        }
    }
}

/// A job's result, which can finish the clocks of an operation whose caller is gone.
pub(crate) trait Counted {
    /// Finishes `clocks` with this result.
    fn count(&self, clocks: Clocks);
}

impl<B> Counted for (io::Result<usize>, B) {
    fn count(&self, [clock, _]: Clocks) {
        if let Some(c) = clock {
            match &self.0 {
                Ok(n) => c.ok(*n as u64),
                Err(_) => c.err(),
            }
        }
    }
}

impl<T> Counted for io::Result<T> {
    fn count(&self, clocks: Clocks) {
        for c in clocks.into_iter().flatten() {
            if self.is_ok() { c.ok(0) } else { c.err() }
        }
    }
}

impl Counted for (WriteSync, Vec<AlignedBuf>) {
    fn count(&self, [write, sync]: Clocks) {
        let total: usize = self.1.iter().map(AlignedBuf::len).sum();
        let (written, synced) = match &self.0 {
            WriteSync::Synced => (Some(total), true),
            WriteSync::Short(n) => (Some(*n), false),
            WriteSync::WriteFailed(_) => (None, false),
            WriteSync::SyncFailed(_) => (Some(total), false),
        };
        if let Some(c) = write {
            match written {
                Some(n) => c.ok(n as u64),
                None => c.err(),
            }
        }
        if let Some(c) = sync {
            if synced { c.ok(0) } else { c.err() }
        }
    }
}

/// A result that carries buffers back.
pub(crate) type WithBuf<T, B = AlignedBuf> = (io::Result<T>, B);

/// What happened to a write-then-sync job.
pub(crate) enum WriteSync {
    /// Everything was written and then synced.
    Synced,
    /// The write was short (this many bytes); nothing was synced.
    Short(usize),
    /// The write failed; the sync was not attempted.
    WriteFailed(io::Error),
    /// The write completed and the sync failed.
    SyncFailed(io::Error),
}

/// A file opened by an executor.
pub(crate) struct Opened {
    /// The executor's key for it.
    pub(crate) key: u64,
    /// A second descriptor of the same open file, for the caller's side (`fstat`, `ftruncate`).
    pub(crate) std: std::fs::File,
    /// Its `O_DIRECT` alignment (meaningful for direct opens only).
    pub(crate) direct: DirectAlignment,
}

/// Work for an executor. Every job that carries buffers hands them back in its reply.
pub(crate) enum Job {
    Open {
        path: Arc<Path>,
        options: OpenOptions,
        reply: Reply<io::Result<Opened>>,
    },
    Close {
        key: u64,
    },
    Read {
        key: u64,
        buf: AlignedBuf,
        offset: u64,
        reply: Reply<WithBuf<usize>>,
    },
    Write {
        key: u64,
        buf: AlignedBuf,
        offset: u64,
        reply: Reply<WithBuf<usize>>,
    },
    Writev {
        key: u64,
        bufs: Vec<AlignedBuf>,
        offset: u64,
        reply: Reply<WithBuf<usize, Vec<AlignedBuf>>>,
    },
    WriteSync {
        key: u64,
        bufs: Vec<AlignedBuf>,
        offset: u64,
        kind: SyncKind,
        reply: Reply<(WriteSync, Vec<AlignedBuf>)>,
    },
    Sync {
        key: u64,
        kind: SyncKind,
        reply: Reply<io::Result<()>>,
    },
    Fallocate {
        key: u64,
        offset: u64,
        len: u64,
        reply: Reply<io::Result<()>>,
    },
    SetLen {
        file: Arc<OpenFile>,
        len: u64,
        reply: Reply<io::Result<()>>,
    },
    /// Makes the executor thread panic (tests of a dead executor).
    Crash,
}

impl Job {
    /// The buffer of a job that was never run.
    pub(crate) fn into_buf(self) -> AlignedBuf {
        match self {
            Job::Read { buf, .. } | Job::Write { buf, .. } => buf,
            _ => AlignedBuf::empty(),
        }
    }

    /// The buffers of a job that was never run.
    pub(crate) fn into_bufs(self) -> Vec<AlignedBuf> {
        match self {
            Job::Writev { bufs, .. } | Job::WriteSync { bufs, .. } => bufs,
            _ => Vec::new(),
        }
    }
}

/// An executor thread and the sending end of its queue.
pub(crate) struct Executor {
    pub(crate) jobs: mpsc::Sender<Job>,
    /// Jobs sent by callers and not yet finished by the executor (answered, or dropped by a
    /// caller that left): zero means nothing of anyone's is queued or running here.
    pub(crate) pending: Arc<AtomicUsize>,
    pub(crate) thread: Option<JoinHandle<()>>,
}

/// How each executor is set up.
#[derive(Clone, Copy)]
pub(crate) struct Config {
    pub(crate) entries: u32,
    pub(crate) queue_max: usize,
    pub(crate) in_flight_max: usize,
    pub(crate) spin: Duration,
}

/// Why an executor did not start.
pub(crate) enum StartError {
    /// The thread could not be spawned.
    Thread(io::Error),
    /// tokio-uring's runtime (its ring) could not be created.
    Runtime(io::Error),
}

/// Starts executor `index`; returns once its runtime exists (or failed to).
pub(crate) fn start(index: usize, name: &str, config: Config) -> Result<Executor, StartError> {
    let (jobs, queue) = mpsc::channel(config.queue_max);
    let pending = Arc::new(AtomicUsize::new(0));
    let served = Arc::clone(&pending);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("{name}-{index}"))
        .spawn(move || {
            let mut builder = tokio_uring::builder();
            // Room in the completion queue for every job in flight (the kernel caps it).
            let cq = (config.in_flight_max + 16)
                .max(2 * config.entries as usize)
                .next_power_of_two()
                .min(65_536) as u32;
            builder
                .entries(config.entries)
                .uring_builder(tokio_uring::uring_builder().setup_cqsize(cq));
            let runtime = match tokio_uring::Runtime::new(&builder) {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let _ = started_tx.send(Ok(()));
            runtime.block_on(serve(queue, config, served));
            // Dropping the runtime here waits for anything the kernel still holds.
        })
        .map_err(StartError::Thread)?;
    match started_rx.recv() {
        Ok(Ok(())) => Ok(Executor {
            jobs,
            pending,
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(StartError::Runtime(e))
        }
        Err(_) => {
            let _ = thread.join();
            let e = io::Error::other("the executor thread stopped while starting");
            Err(StartError::Thread(e))
        }
    }
}

type Files = Rc<RefCell<HashMap<u64, Rc<File>>>>;

/// Serves jobs until every sender is gone, then waits for the jobs in flight.
async fn serve(mut queue: mpsc::Receiver<Job>, config: Config, pending: Arc<AtomicUsize>) {
    let in_flight_max = config.in_flight_max;
    let files: Files = Rc::new(RefCell::new(HashMap::new()));
    let permits = Arc::new(Semaphore::new(in_flight_max));
    let mut next_key = 1u64;
    loop {
        // A permit first: with `in_flight_max` jobs running, the queue fills and callers wait.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        // No job running (only ours is taken): nothing else needs this thread, so poll the
        // queue for a while rather than sleep and be woken for the next job.
        let idle = permits.available_permits() + 1 == in_flight_max;
        let job = if idle && !config.spin.is_zero() {
            next_job_spinning(&mut queue, config.spin).await
        } else {
            queue.recv().await
        };
        let Some(job) = job else {
            break;
        };
        match job {
            Job::Open {
                path,
                options,
                reply,
            } => {
                let key = next_key;
                next_key += 1;
                match open(&path, &options, key) {
                    Ok((file, opened)) => {
                        files.borrow_mut().insert(key, Rc::new(file));
                        if !reply.send(Ok(opened), &pending) {
                            // The caller left: nobody will ever close it.
                            files.borrow_mut().remove(&key);
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e), &pending);
                    }
                }
            }
            Job::Close { key } => {
                // Jobs in flight hold their own reference: the descriptor closes after them.
                files.borrow_mut().remove(&key);
            }
            Job::Crash => panic!("diskio-uring: executor crash requested by a test"),
            job => {
                let files = Rc::clone(&files);
                let pending = Arc::clone(&pending);
                tokio_uring::spawn(async move {
                    run(&files, job, &pending).await;
                    drop(permit);
                });
            }
        }
    }
    // Every sender is gone: wait until the jobs in flight have finished.
    let all = u32::try_from(in_flight_max).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// The next job, polling the queue for up to `spin` before waiting for it.
async fn next_job_spinning(queue: &mut mpsc::Receiver<Job>, spin: Duration) -> Option<Job> {
    let until = Instant::now() + spin;
    loop {
        match queue.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) if Instant::now() < until => {
                std::hint::spin_loop();
            }
            Err(mpsc::error::TryRecvError::Empty) => return queue.recv().await,
        }
    }
}

/// Opens the file on this thread (`open(2)`, `fstat`, `statx`) and hands one descriptor to
/// tokio-uring.
fn open(path: &Path, options: &OpenOptions, key: u64) -> io::Result<(File, Opened)> {
    let std = options.to_std().open(path)?;
    if std.metadata()?.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    let direct = if options.is_direct() {
        diskio::backend::direct_alignment(&std)
    } else {
        DirectAlignment::NONE
    };
    let ours = std.try_clone()?;
    Ok((File::from_std(ours), Opened { key, std, direct }))
}

fn not_open() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

/// Runs one I/O job on this thread's ring and replies. A reply that finds its caller gone is
/// dropped, and the buffers with it, after the kernel is done with them.
async fn run(files: &Files, job: Job, pending: &AtomicUsize) {
    let file = |key: &u64| files.borrow().get(key).cloned();
    match job {
        Job::Read {
            key,
            buf,
            offset,
            reply,
        } => {
            let out = match file(&key) {
                Some(f) => {
                    let (res, owned) = f.read_at(Owned::new(buf), offset).await;
                    let mut buf = owned.into_inner();
                    if let Ok(n) = res {
                        buf.truncate(n);
                    }
                    (res, buf)
                }
                None => (Err(not_open()), buf),
            };
            let _ = reply.send(out, pending);
        }
        Job::Write {
            key,
            buf,
            offset,
            reply,
        } => {
            let out = match file(&key) {
                Some(f) => {
                    let (res, owned) = f.write_at(Owned::new(buf), offset).submit().await;
                    (res, owned.into_inner())
                }
                None => (Err(not_open()), buf),
            };
            let _ = reply.send(out, pending);
        }
        Job::Writev {
            key,
            bufs,
            offset,
            reply,
        } => {
            let out = match file(&key) {
                Some(f) => writev(&f, bufs, offset).await,
                None => (Err(not_open()), bufs),
            };
            let _ = reply.send(out, pending);
        }
        Job::WriteSync {
            key,
            bufs,
            offset,
            kind,
            reply,
        } => {
            let out = match file(&key) {
                Some(f) => write_sync(&f, bufs, offset, kind).await,
                None => (WriteSync::WriteFailed(not_open()), bufs),
            };
            let _ = reply.send(out, pending);
        }
        Job::Sync { key, kind, reply } => {
            let res = match file(&key) {
                Some(f) => sync(&f, kind).await,
                None => Err(not_open()),
            };
            let _ = reply.send(res, pending);
        }
        Job::Fallocate {
            key,
            offset,
            len,
            reply,
        } => {
            let res = match file(&key) {
                Some(f) => f.fallocate(offset, len, 0).await,
                None => Err(not_open()),
            };
            let _ = reply.send(res, pending);
        }
        Job::SetLen { file, len, reply } => {
            // tokio-uring has no truncate operation: the system call, on this thread.
            let _ = reply.send(file.std.set_len(len), pending);
        }
        Job::Open { .. } | Job::Close { .. } | Job::Crash => {}
    }
}

async fn sync(file: &File, kind: SyncKind) -> io::Result<()> {
    match kind {
        SyncKind::Data => file.sync_data().await,
        SyncKind::All => file.sync_all().await,
    }
}

/// One `WRITEV` of at most [`IOV_MAX`] buffers (more make a short write).
async fn writev(
    file: &File,
    mut bufs: Vec<AlignedBuf>,
    offset: u64,
) -> WithBuf<usize, Vec<AlignedBuf>> {
    let rest = if bufs.len() > IOV_MAX {
        bufs.split_off(IOV_MAX)
    } else {
        Vec::new()
    };
    let owned: Vec<Owned> = bufs.into_iter().map(Owned::new).collect();
    let (res, owned) = file.writev_at(owned, offset).await;
    let mut bufs: Vec<AlignedBuf> = owned.into_iter().map(Owned::into_inner).collect();
    bufs.extend(rest);
    (res, bufs)
}

/// The write and then the sync, in one job: one trip to this thread instead of two.
async fn write_sync(
    file: &File,
    bufs: Vec<AlignedBuf>,
    offset: u64,
    kind: SyncKind,
) -> (WriteSync, Vec<AlignedBuf>) {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let (res, bufs) = writev(file, bufs, offset).await;
    let outcome = match res {
        Err(e) => WriteSync::WriteFailed(e),
        Ok(n) if n < total => WriteSync::Short(n),
        Ok(_) => match sync(file, kind).await {
            Ok(()) => WriteSync::Synced,
            Err(e) => WriteSync::SyncFailed(e),
        },
    };
    (outcome, bufs)
}
