//! Checkpoints (SPEC §10): the whole engine state with the input positions it
//! reflects, written atomically to the configured store every
//! `checkpoint.interval` and at shutdown, and restored before consuming.
//!
//! Stores: `file://DIR` (written to a temporary file, synced, then renamed
//! over `DIR/checkpoint.bin`, so a reader sees the old or the new checkpoint,
//! never a mix), `redis://…` (one `SET` of the blob under
//! `cspulse:{group_id}:checkpoint`, atomic by construction), and `memory`
//! (nothing is kept: a restart rebuilds the state from Kafka).

pub mod fork;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use tracing::{info, warn};

use crate::ingest::Shared;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("checkpoint file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("checkpoint writer: {0}")]
    Writer(String),
    #[error("unsupported state store {0:?}")]
    Unsupported(String),
}

/// Where checkpoints live.
#[derive(Clone, Debug)]
pub enum Store {
    Memory,
    File(PathBuf),
    Redis { client: redis::Client, key: String, url: String },
}

const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

impl Store {
    /// From `state.store`; the Redis key is scoped by the consumer group.
    pub fn open(spec: &str, group_id: &str) -> Result<Store, StoreError> {
        if spec == "memory" {
            Ok(Store::Memory)
        } else if let Some(dir) = spec.strip_prefix("file://") {
            Ok(Store::File(PathBuf::from(dir)))
        } else if spec.starts_with("redis://") || spec.starts_with("rediss://") {
            let client = redis::Client::open(spec)?;
            Ok(Store::Redis { client, key: format!("cspulse:{group_id}:checkpoint"), url: spec.to_owned() })
        } else {
            Err(StoreError::Unsupported(spec.to_owned()))
        }
    }

    /// Whether checkpoints are kept at all (`memory` keeps nothing, so the
    /// engine takes none).
    pub fn keeps_state(&self) -> bool {
        !matches!(self, Store::Memory)
    }

    /// A printable name (without credentials).
    pub fn describe(&self) -> String {
        match self {
            Store::Memory => "memory".into(),
            Store::File(dir) => format!("file://{}", dir.display()),
            Store::Redis { key, url, .. } => {
                let host = url.rsplit('@').next().unwrap_or(url).trim_start_matches("redis://");
                format!("redis://{host} key {key}")
            }
        }
    }

    fn file(dir: &std::path::Path) -> PathBuf {
        dir.join("checkpoint.bin")
    }

    /// The latest checkpoint, if any.
    pub fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Memory => Ok(None),
            Store::File(dir) => {
                let path = Self::file(dir);
                match std::fs::read(&path) {
                    Ok(blob) => Ok(Some(blob)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(StoreError::File { path, source }),
                }
            }
            Store::Redis { client, key, .. } => {
                let mut con = client.get_connection_with_timeout(REDIS_TIMEOUT)?;
                con.set_read_timeout(Some(REDIS_TIMEOUT * 15))?;
                Ok(redis::cmd("GET").arg(key).query::<Option<Vec<u8>>>(&mut con)?)
            }
        }
    }

    /// Replaces the checkpoint atomically.
    pub fn save(&self, blob: &[u8]) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::File(dir) => {
                let err = |path: &std::path::Path| {
                    let path = path.to_owned();
                    move |source| StoreError::File { path, source }
                };
                std::fs::create_dir_all(dir).map_err(err(dir))?;
                let tmp = dir.join("checkpoint.bin.tmp");
                let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
                f.write_all(blob).map_err(err(&tmp))?;
                f.sync_all().map_err(err(&tmp))?;
                drop(f);
                let path = Self::file(dir);
                std::fs::rename(&tmp, &path).map_err(err(&path))?;
                // Make the rename itself durable.
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                Ok(())
            }
            Store::Redis { client, key, .. } => {
                let mut con = client.get_connection_with_timeout(REDIS_TIMEOUT)?;
                con.set_write_timeout(Some(REDIS_TIMEOUT * 15))?;
                redis::cmd("SET").arg(key).arg(blob).query::<()>(&mut con)?;
                Ok(())
            }
        }
    }
}

/// What `/readyz` and `/metrics` report about checkpoints.
#[derive(Debug, Default)]
pub struct CheckpointStatus {
    /// Unix ms of the last successful checkpoint (0: none yet).
    pub last_ok_ms: AtomicU64,
    /// Consecutive failures of the store (0: healthy).
    pub failures: AtomicU64,
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl CheckpointStatus {
    pub fn age_seconds(&self) -> Option<f64> {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        (last > 0).then(|| (now_ms().saturating_sub(last)) as f64 / 1000.0)
    }

    pub fn error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Takes a consistent cut of state and positions under the engine lock and
/// writes it without holding the lock: a forked child encodes and saves the
/// process image of that instant (see [`fork`]), so ingestion pauses only
/// for the fork. If the fork fails, the state is encoded under the lock.
pub fn checkpoint_once(shared: &Shared, store: &Store, status: &CheckpointStatus) -> Result<usize, StoreError> {
    let started = Instant::now();
    let forked = {
        let engine = shared.engine();
        fork::spawn(&engine, store)
    };
    let paused = started.elapsed();
    let result = match forked {
        Ok(writer) => writer.wait(),
        Err(e) => {
            warn!(error = %e, "cannot fork a checkpoint writer; encoding under the engine lock");
            in_process(shared, store)
        }
    };
    let total = started.elapsed();
    match &result {
        Ok(written) => {
            // The writer's buffer-size hint died with it; keep it here.
            crate::state::encoding::note_size(written.bytes);
            status.last_ok_ms.store(now_ms(), Ordering::Relaxed);
            status.failures.store(0, Ordering::Relaxed);
            *status.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
            histogram!("cspulse_checkpoint_duration_seconds").record(total.as_secs_f64());
            histogram!("cspulse_checkpoint_pause_seconds").record(paused.as_secs_f64());
            histogram!("cspulse_checkpoint_encode_seconds").record(written.encode.as_secs_f64());
            gauge!("cspulse_checkpoint_size_bytes").set(written.bytes as f64);
        }
        Err(e) => {
            status.failures.fetch_add(1, Ordering::Relaxed);
            *status.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            counter!("cspulse_checkpoint_errors_total").increment(1);
        }
    }
    result.map(|w| w.bytes)
}

/// The fallback: encodes under the engine lock, writes after releasing it.
fn in_process(shared: &Shared, store: &Store) -> Result<fork::Written, StoreError> {
    let started = Instant::now();
    let blob = shared.engine().encode();
    let encode = started.elapsed();
    store.save(&blob)?;
    Ok(fork::Written { bytes: blob.len(), encode })
}

/// Checkpoints every `interval`; after failures, retries with exponential
/// backoff (up to a minute) while ingestion and serving go on.
pub async fn run_loop(
    shared: Arc<Shared>,
    store: Arc<Store>,
    status: Arc<CheckpointStatus>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wait = interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (sh, sto, st) = (shared.clone(), store.clone(), status.clone());
        let outcome = tokio::task::spawn_blocking(move || checkpoint_once(&sh, &sto, &st)).await;
        match outcome {
            Ok(Ok(bytes)) => {
                if wait != interval {
                    info!(store = %store.describe(), "checkpoints resumed");
                }
                tracing::debug!(bytes, "checkpoint written");
                wait = interval;
            }
            Ok(Err(e)) => {
                wait = (wait * 2).clamp(interval, Duration::from_secs(60));
                warn!(error = %e, retry_in = ?wait, "checkpoint failed; ingestion and serving continue");
            }
            Err(e) => warn!(error = %e, "checkpoint task failed"),
        }
    }
}
