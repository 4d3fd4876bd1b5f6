//! Checkpoints (SPEC §10): the whole engine state with the input positions it
//! reflects, written atomically to the configured store every
//! `checkpoint.interval` and at shutdown, and restored before consuming.
//!
//! Stores: `file://DIR` (see [`file`]: a locked directory, the checkpoint
//! replaced by an atomic rename), `redis://…` (see [`redis`]: bounded chunks
//! under a manifest switched atomically, keys under
//! `cspulse:{group_id}:checkpoint`), and `memory` (nothing is kept: a
//! restart rebuilds the state from Kafka).

pub mod file;
pub mod fork;
pub mod redis;
mod resp;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use tracing::{info, warn};

use crate::ingest::Shared;
pub use file::FileStore;
pub use redis::RedisStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("checkpoint file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error(
        "the checkpoint directory {} is in use by another cspulse process (it holds {}/lock); \
         two instances must not share a directory store",
        .0.display(), .0.display()
    )]
    Locked(PathBuf),
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis: {0}")]
    RedisWire(#[from] resp::WireError),
    #[error("the checkpoint in the store is damaged: {0}")]
    Corrupt(String),
    #[error("checkpoint writer: {0}")]
    Writer(String),
    #[error("unsupported state store {0:?}")]
    Unsupported(String),
}

impl StoreError {
    /// The store answered, but what it holds cannot be a checkpoint: retrying
    /// cannot help (unlike an unreachable store).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt(_))
    }
}

/// Where checkpoints live.
#[derive(Clone, Debug)]
pub enum Store {
    Memory,
    File(FileStore),
    Redis(RedisStore),
}

impl Store {
    /// From `state.store`; the Redis keys are scoped by the consumer group.
    /// A directory store is locked for this process (fails if another holds it).
    pub fn open(spec: &str, group_id: &str) -> Result<Store, StoreError> {
        if spec == "memory" {
            Ok(Store::Memory)
        } else if let Some(dir) = spec.strip_prefix("file://") {
            Ok(Store::File(FileStore::open(std::path::Path::new(dir))?))
        } else if spec.starts_with("redis://") || spec.starts_with("rediss://") {
            Ok(Store::Redis(RedisStore::open(spec, group_id)?))
        } else {
            Err(StoreError::Unsupported(crate::config::secrets::mask_url(spec)))
        }
    }

    /// Sets the chunk size of a Redis store (`checkpoint.redis_chunk_bytes`).
    pub fn with_chunk_bytes(self, bytes: usize) -> Store {
        match self {
            Store::Redis(r) => Store::Redis(r.with_chunk_bytes(bytes)),
            other => other,
        }
    }

    /// Whether checkpoints are kept at all (`memory` keeps nothing, so the
    /// engine takes none).
    pub fn keeps_state(&self) -> bool {
        !matches!(self, Store::Memory)
    }

    /// A printable name (the password of a URL masked).
    pub fn describe(&self) -> String {
        match self {
            Store::Memory => "memory".into(),
            Store::File(f) => format!("file://{}", f.dir().display()),
            Store::Redis(r) => format!("{} key {}", crate::config::secrets::mask_url(r.url()), r.key()),
        }
    }

    /// The latest checkpoint, if any.
    pub fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Memory => Ok(None),
            Store::File(f) => f.load(),
            Store::Redis(r) => r.load(),
        }
    }

    /// Replaces the checkpoint atomically.
    pub fn save(&self, blob: &[u8]) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::File(f) => f.save(blob),
            Store::Redis(r) => r.save(blob),
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
