//! The history writer: moves the fold's history log into the store.
//!
//! Every 200 ms (at once while there is more) it takes up to [`BATCH`]
//! uncommitted rows from the engine, writes them in one transaction, and
//! then tells the engine they are committed, which drops them from the log.
//! A failed write leaves them there and is tried again with backoff (250 ms
//! doubling to 30 s); meanwhile the fold goes on and the log grows, and
//! checkpoints carry it. Stopping, it finishes the batch it is writing (or
//! writes one more), and the final checkpoint carries the rest: a stop never
//! waits for a long backlog.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use tokio::sync::watch;
use tracing::{info, warn};

use super::store::{HistoryStore, Retention};
use crate::ingest::Shared;

/// Rows written per transaction at most.
pub const BATCH: usize = 2_000;
const IDLE: Duration = Duration::from_millis(200);

/// What `/readyz` and the metrics say about the writer.
#[derive(Debug, Default)]
pub struct Status {
    /// Rows the fold made that the store has not committed.
    pub pending: AtomicUsize,
    /// The last write's error, while writes fail.
    pub failing: std::sync::Mutex<Option<String>>,
}

impl Status {
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_failing(&self, e: Option<String>) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}

/// How often rows past their retention are deleted (wall time).
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Writes the history log to `store` until `stop`, then once more; every
/// [`PRUNE_EVERY`] (and at start) deletes the rows `keep` no longer keeps.
pub async fn run(
    shared: Arc<Shared>,
    store: HistoryStore,
    status: Arc<Status>,
    keep: Retention,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    let mut pruned: Option<Instant> = None;
    loop {
        let stopping = *stop.borrow();
        if !stopping && pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            prune(&shared, &store, keep).await;
            pruned = Some(Instant::now());
        }
        match write_once(&shared, &store, &status).await {
            // Stopping, one batch is enough: the final checkpoint holds the rest.
            Ok(n) if n == BATCH && !stopping => {
                backoff = Duration::from_millis(250);
                continue;
            }
            Ok(_) => backoff = Duration::from_millis(250),
            Err(e) => {
                counter!("cspulse_history_write_errors_total").increment(1);
                if status.failing().is_none() {
                    warn!(store = store.describe(), error = %e, "history store write failed; rows stay in the log and are retried");
                }
                status.set_failing(Some(e.to_string()));
                if stopping {
                    return;
                }
                let _ = tokio::time::timeout(backoff, stop.changed()).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        }
        if stopping {
            return;
        }
        let _ = tokio::time::timeout(IDLE, stop.changed()).await;
    }
}

/// Deletes the rows past their retention as of the watermark (a failure is
/// logged and tried again next time).
async fn prune(shared: &Shared, store: &HistoryStore, keep: Retention) {
    let Some(now) = shared.snapshot().now else { return };
    let started = Instant::now();
    match store.prune(now, keep).await {
        Ok(0) => {}
        Ok(n) => {
            counter!("cspulse_history_pruned_rows_total").increment(n);
            info!(rows = n, seconds = started.elapsed().as_secs_f64(), "history rows past their retention deleted");
        }
        Err(e) => warn!(store = store.describe(), error = %e, "deleting history rows past their retention failed"),
    }
}

/// One batch: take, write, commit. Returns how many rows it wrote.
async fn write_once(shared: &Arc<Shared>, store: &HistoryStore, status: &Status) -> Result<usize, sqlx::Error> {
    let (taken, pending) = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            let engine = shared.engine();
            counter!("cspulse_history_dropped_rows_total").absolute(engine.history_dropped());
            (engine.history_pending(BATCH), engine.history_len())
        })
        .await
        .unwrap_or_default()
    };
    status.pending.store(pending, Ordering::Relaxed);
    gauge!("cspulse_history_pending_rows").set(pending as f64);
    let Some(&(last, _)) = taken.last() else { return Ok(0) };
    let started = Instant::now();
    store.write(&taken).await?;
    histogram!("cspulse_history_write_seconds").record(started.elapsed().as_secs_f64());
    counter!("cspulse_history_rows_written_total").increment(taken.len() as u64);
    let left = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || shared.engine().history_committed(last)).await.unwrap_or_default()
    };
    status.pending.store(left, Ordering::Relaxed);
    gauge!("cspulse_history_pending_rows").set(left as f64);
    if status.failing().is_some() {
        info!(store = store.describe(), "history store writes again");
        status.set_failing(None);
    }
    Ok(taken.len())
}
