//! Topics: each a [`Partitioned`] log in its own directory under the data directory, with its
//! partition count in `topic.json` (written atomically before the logs are created).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use diskio::DiskIo;
use tokio::sync::RwLock;
use wal::{Partitioned, WalOptions};

/// The backend logd's logs run on.
pub type Disk = wal::DefaultDisk;

/// One topic, its partitions on the backend `D`.
pub struct Topic<D: DiskIo = Disk> {
    /// Its name.
    pub name: String,
    /// Its partitions.
    pub log: Partitioned<D>,
    /// The next partition for a record without a key.
    next: AtomicUsize,
}

impl<D: DiskIo> Topic<D> {
    /// The partition a record goes to: by its key, or round-robin without one.
    pub fn route(&self, key: Option<&[u8]>) -> usize {
        match key {
            Some(k) => self.log.partition_of(k),
            None => self.next.fetch_add(1, Ordering::Relaxed) % self.log.len(),
        }
    }
}

/// Why a topic could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// A name that is not `[A-Za-z0-9._-]{1,128}` (and not `.` or `..`).
    #[error("invalid topic name {0:?}: use 1 to 128 of A-Z a-z 0-9 . _ - (not . or ..)")]
    BadName(String),
    /// A partition count out of range.
    #[error("partitions must be 1..={max}, not {got}")]
    BadPartitions {
        /// The count asked for.
        got: usize,
        /// The largest allowed.
        max: usize,
    },
    /// The topic exists with another partition count.
    #[error("topic {name:?} exists with {existing} partitions, not {asked}")]
    Conflict {
        /// The topic.
        name: String,
        /// Its partitions.
        existing: usize,
        /// The count asked for.
        asked: usize,
    },
    /// The log failed.
    #[error("{0}")]
    Wal(#[from] wal::WalError),
    /// The data directory failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Every topic, by name, on the backend `D` (logd runs on [`Disk`]; tests inject faults).
pub struct Topics<D: DiskIo = Disk> {
    dir: PathBuf,
    opts: WalOptions,
    disk: D,
    map: RwLock<HashMap<String, Arc<Topic<D>>>>,
}

/// Checks a topic's name and partition count before it is created.
///
/// # Errors
///
/// [`TopicError::BadName`], [`TopicError::BadPartitions`].
pub fn check(name: &str, partitions: usize) -> Result<(), TopicError> {
    if !valid_name(name) {
        return Err(TopicError::BadName(name.to_owned()));
    }
    if !(1..=wal::PARTITIONS_MAX).contains(&partitions) {
        return Err(TopicError::BadPartitions {
            got: partitions,
            max: wal::PARTITIONS_MAX,
        });
    }
    Ok(())
}

/// Whether `name` is a topic name.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TopicFile {
    partitions: usize,
}

const TOPIC_FILE: &str = "topic.json";

impl<D: DiskIo + Clone> Topics<D> {
    /// Opens every topic in `dir` (created if missing).
    ///
    /// # Errors
    ///
    /// The data directory's, a topic's recovery errors.
    pub async fn open(dir: &Path, opts: WalOptions, disk: D) -> Result<Self, TopicError> {
        std::fs::create_dir_all(dir)?;
        let mut map = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !valid_name(&name) || !path.join(TOPIC_FILE).exists() {
                continue;
            }
            let file: TopicFile = serde_json::from_slice(&std::fs::read(path.join(TOPIC_FILE))?)
                .map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.join(TOPIC_FILE).display()),
                    )
                })?;
            let topic = open_topic(&path, &name, file.partitions, &opts, &disk).await?;
            tracing::info!(topic = %name, partitions = file.partitions, "topic opened");
            map.insert(name, Arc::new(topic));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            opts,
            disk,
            map: RwLock::new(map),
        })
    }

    /// The topic `name`, if it exists.
    pub async fn get(&self, name: &str) -> Option<Arc<Topic<D>>> {
        self.map.read().await.get(name).cloned()
    }

    /// Every topic.
    pub async fn all(&self) -> Vec<Arc<Topic<D>>> {
        let mut v: Vec<_> = self.map.read().await.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates topic `name` with `partitions` partitions; `Ok(false)` if it exists with that
    /// many already.
    ///
    /// # Errors
    ///
    /// [`TopicError::BadName`], [`TopicError::BadPartitions`], [`TopicError::Conflict`], and the
    /// directory's or the log's errors.
    pub async fn create(&self, name: &str, partitions: usize) -> Result<bool, TopicError> {
        check(name, partitions)?;
        let mut map = self.map.write().await;
        if let Some(t) = map.get(name) {
            if t.log.len() == partitions {
                return Ok(false);
            }
            return Err(TopicError::Conflict {
                name: name.to_owned(),
                existing: t.log.len(),
                asked: partitions,
            });
        }
        let path = self.dir.join(name);
        std::fs::create_dir_all(&path)?;
        write_atomically(
            &path,
            TOPIC_FILE,
            &serde_json::to_vec(&TopicFile { partitions }).map_err(std::io::Error::other)?,
        )?;
        sync_dir(&self.dir)?;
        let topic = open_topic(&path, name, partitions, &self.opts, &self.disk).await?;
        tracing::info!(topic = %name, partitions, "topic created");
        map.insert(name.to_owned(), Arc::new(topic));
        Ok(true)
    }

    /// Makes everything appended to every topic durable.
    ///
    /// # Errors
    ///
    /// The first failure; every topic is asked.
    pub async fn sync(&self) -> Result<(), wal::WalError> {
        let mut first = None;
        for t in self.all().await {
            if let Err(e) = t.log.sync().await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Closes every topic (everything appended made durable).
    ///
    /// # Errors
    ///
    /// The first failure; every topic is asked.
    pub async fn close(&self) -> Result<(), wal::WalError> {
        let topics: Vec<Arc<Topic<D>>> = self.map.write().await.drain().map(|(_, t)| t).collect();
        let mut first = None;
        for t in topics {
            let res = match Arc::try_unwrap(t) {
                Ok(t) => t.log.close().await,
                // Still held by a request in flight: make what it appended durable.
                Err(t) => t.log.sync().await,
            };
            if let Err(e) = res {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

async fn open_topic<D: DiskIo + Clone>(
    path: &Path,
    name: &str,
    partitions: usize,
    opts: &WalOptions,
    disk: &D,
) -> Result<Topic<D>, TopicError> {
    let (log, _reports) =
        Partitioned::open(path, partitions, opts.clone(), |_| disk.clone()).await?;
    Ok(Topic {
        name: name.to_owned(),
        log,
        next: AtomicUsize::new(0),
    })
}

/// Writes `dir/name` through a temporary file, synced, renamed.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&temp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&temp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
