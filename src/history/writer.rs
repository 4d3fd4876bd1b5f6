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
//!
//! While writes fail, the rows that are never dropped (account rows, the
//! alert and tier logs, gaps) beyond `history.spill_after` in memory are
//! appended to the spill file (`history.spill`, fsynced) and only then
//! leave the log, so memory stays bounded through a long outage and the
//! checkpoint no longer needs to carry them. When writes succeed again the
//! spill file is written to the store first, then removed. A crash while
//! it is drained writes some of its rows again, which changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use tokio::sync::watch;
use tracing::{info, warn};

use super::ledger::Planner;
use super::store::{HistoryStore, Retention};
use crate::ingest::Shared;
use crate::state::log::Row;

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

/// Rows moved to the spill file at a time.
const SPILL_CHUNK: usize = 10_000;

/// The writer's settings.
#[derive(Clone)]
pub struct Settings {
    pub keep: Retention,
    pub spill: PathBuf,
    pub spill_after: usize,
    /// Delivery (SPEC §16): plans each alert's messages in the transaction
    /// that records it, then wakes the sender.
    pub deliveries: Option<Deliveries>,
}

/// The delivery planner and the sender's wake-up.
#[derive(Clone)]
pub struct Deliveries {
    pub planner: Arc<dyn Planner>,
    pub planned: Arc<tokio::sync::Notify>,
}

/// Writes `rows`, planning their alerts' messages if delivery is on.
async fn write_rows(
    store: &HistoryStore,
    rows: &[(u64, Row)],
    deliveries: Option<&Deliveries>,
) -> Result<(), sqlx::Error> {
    match deliveries {
        Some(d) if rows.iter().any(|(_, r)| matches!(r, Row::Alert(_))) => {
            store.write_planned(rows, &*d.planner, crate::time::wall_now()).await?;
            d.planned.notify_one();
            Ok(())
        }
        _ => store.write(rows).await,
    }
}

/// Writes the history log to `store` until `stop`, then once more; every
/// [`PRUNE_EVERY`] (and at start) deletes the rows `keep` no longer keeps.
pub async fn run(
    shared: Arc<Shared>,
    store: HistoryStore,
    status: Arc<Status>,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    let mut pruned: Option<Instant> = None;
    let mut spill = Spill { path: settings.spill.clone(), read: 0 };
    loop {
        let stopping = *stop.borrow();
        if !stopping && pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            prune(&shared, &store, settings.keep).await;
            pruned = Some(Instant::now());
        }
        let deliveries = settings.deliveries.as_ref();
        let drained = if stopping { Ok(()) } else { spill.drain(&store, deliveries).await };
        let written = match drained {
            Ok(()) => write_once(&shared, &store, &status, deliveries).await,
            Err(e) => Err(e),
        };
        match written {
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
                if let Err(e) = spill.spill_from(&shared, settings.spill_after).await {
                    warn!(file = %spill.path.display(), error = %e, "cannot spill history rows; they stay in memory");
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

/// The spill file: JSON lines of rows, appended while the store fails,
/// written to the store (from `read` on) once it works.
struct Spill {
    path: PathBuf,
    /// Bytes of the file already written to the store.
    read: u64,
}

impl Spill {
    /// Moves the oldest rows that are never dropped beyond `after` in
    /// memory to the file (appended, fsynced, then dropped from the log).
    async fn spill_from(&mut self, shared: &Arc<Shared>, after: usize) -> std::io::Result<()> {
        loop {
            let rows = {
                let shared = shared.clone();
                tokio::task::spawn_blocking(move || {
                    let engine = shared.engine();
                    let over = engine.history_logs_len().saturating_sub(after);
                    engine.history_oldest_logs(over.min(SPILL_CHUNK))
                })
                .await
                .unwrap_or_default()
            };
            let Some(&(last, _)) = rows.last() else { return Ok(()) };
            let path = self.path.clone();
            let n = rows.len();
            tokio::task::spawn_blocking(move || append(&path, &rows)).await.map_err(std::io::Error::other)??;
            let left = {
                let shared = shared.clone();
                tokio::task::spawn_blocking(move || shared.engine().history_spilled(last)).await.unwrap_or_default()
            };
            counter!("cspulse_history_spilled_rows_total").increment(n as u64);
            info!(rows = n, file = %self.path.display(), in_memory = left, "history rows spilled to disk");
            if n < SPILL_CHUNK {
                return Ok(());
            }
        }
    }

    /// Writes what the file holds to the store, a batch at a time, and
    /// removes the file once all of it is in.
    async fn drain(&mut self, store: &HistoryStore, deliveries: Option<&Deliveries>) -> Result<(), sqlx::Error> {
        loop {
            let (path, from) = (self.path.clone(), self.read);
            let read = tokio::task::spawn_blocking(move || read_from(&path, from, BATCH)).await;
            let (rows, next) = match read {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => {
                    warn!(file = %self.path.display(), error = %e, "cannot read the history spill file");
                    return Ok(());
                }
                Err(_) => return Ok(()),
            };
            if !rows.is_empty() {
                write_rows(store, &rows, deliveries).await?;
                counter!("cspulse_history_rows_written_total").increment(rows.len() as u64);
            }
            self.read = next;
            if rows.len() < BATCH {
                info!(file = %self.path.display(), "history spill file written to the store");
                let _ = std::fs::remove_file(&self.path);
                self.read = 0;
                return Ok(());
            }
        }
    }
}

/// Appends `rows` to the file at `path` as JSON lines and syncs it.
fn append(path: &Path, rows: &[(u64, Row)]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut text = Vec::new();
    for (_, row) in rows {
        serde_json::to_writer(&mut text, row)?;
        text.push(b'\n');
    }
    file.write_all(&text)?;
    file.sync_data()
}

/// Rows read from the spill file, and the byte after them.
type SpillRead = (Vec<(u64, Row)>, u64);

/// Up to `max` rows of the spill file from byte `from`, and the byte after
/// them; `None` if there is no file. A line that does not parse (a write
/// cut short by a crash) is skipped.
fn read_from(path: &Path, from: u64, max: usize) -> std::io::Result<Option<SpillRead>> {
    use std::io::{BufRead, Seek};
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut reader = std::io::BufReader::new(file);
    reader.seek(std::io::SeekFrom::Start(from))?;
    let (mut rows, mut at, mut line) = (Vec::new(), from, String::new());
    while rows.len() < max {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            break;
        }
        at += n as u64;
        match serde_json::from_str::<Row>(&line) {
            Ok(row) => rows.push((0, row)),
            Err(e) => warn!(error = %e, "skipping a line of the history spill file that does not parse"),
        }
    }
    Ok(Some((rows, at)))
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
async fn write_once(
    shared: &Arc<Shared>,
    store: &HistoryStore,
    status: &Status,
    deliveries: Option<&Deliveries>,
) -> Result<usize, sqlx::Error> {
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
    write_rows(store, &taken, deliveries).await?;
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
