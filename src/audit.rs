//! The audit trail (SPEC §18): every authenticated request, WebSocket
//! subscription, download, resend, unsubscribe and reload is an event
//! `{at, subject, role, csm_id, action, target, outcome}`, logged with the
//! tracing target `audit` and kept in the history store for
//! `audit.retention`.
//!
//! Recording never waits: events go through a bounded queue to a writer
//! task that inserts them in batches. While the store cannot take them the
//! writer holds its batch and retries; if the queue fills meanwhile, further
//! events are only logged (`cspulse_audit_dropped_total`). With history off
//! there is no store and events are only logged.

use std::time::Duration;

use metrics::counter;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::auth::Principal;
use crate::history::store::HistoryStore;
use crate::time::{Ts, format_rfc3339, wall_now};

/// Events queued for the store at most.
const QUEUE: usize = 100_000;
/// Events written per statement at most.
pub const BATCH: usize = 500;

/// One audit event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Wall time.
    pub at: Ts,
    pub subject: String,
    pub role: &'static str,
    pub csm_id: Option<String>,
    /// `request`, `download`, `subscribe`.
    pub action: &'static str,
    /// What was acted on: `GET /api/v1/history/executive`, a channel name.
    pub target: String,
    /// `ok`, or the error code answered (`forbidden`, `not_found`, …).
    pub outcome: String,
}

impl Event {
    pub fn to_json(&self) -> Value {
        json!({
            "at": format_rfc3339(self.at),
            "subject": self.subject,
            "role": self.role,
            "csm_id": self.csm_id,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
        })
    }
}

/// Where audit events go: the log, and the store's queue if there is one.
#[derive(Debug)]
pub struct Audit {
    queue: Option<mpsc::Sender<Event>>,
}

impl Audit {
    /// An audit trail written to the store by [`run`] on the receiver.
    pub fn new() -> (Audit, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Audit { queue: Some(tx) }, rx)
    }

    /// An audit trail that is only logged (history off).
    pub fn log_only() -> Audit {
        Audit { queue: None }
    }

    /// Records that `who` did `action` on `target` with `outcome`.
    pub fn record(&self, who: &Principal, action: &'static str, target: String, outcome: &str) {
        self.write(Event {
            at: wall_now(),
            subject: who.sub.clone(),
            role: who.role.as_str(),
            csm_id: who.csm_id.clone(),
            action,
            target,
            outcome: outcome.to_owned(),
        });
    }

    /// Records what the process did on an operator's signal (a reload on
    /// SIGHUP): role `system`, the signal as the subject.
    pub fn record_system(&self, subject: &str, action: &'static str, target: String, outcome: &str) {
        self.write(Event {
            at: wall_now(),
            subject: subject.to_owned(),
            role: "system",
            csm_id: None,
            action,
            target,
            outcome: outcome.to_owned(),
        });
    }

    fn write(&self, event: Event) {
        info!(
            target: "audit",
            subject = %event.subject,
            role = event.role,
            csm_id = event.csm_id.as_deref(),
            action = event.action,
            target = %event.target,
            outcome = %event.outcome,
            "audit"
        );
        counter!("cspulse_audit_events_total").increment(1);
        if let Some(queue) = &self.queue
            && queue.try_send(event).is_err()
        {
            counter!("cspulse_audit_dropped_total").increment(1);
        }
    }
}

/// Writes queued events to `store` until `stop` (then what is queued), and
/// every 10 minutes deletes those older than `retention` (0: never).
pub async fn run(
    mut rx: mpsc::Receiver<Event>,
    store: HistoryStore,
    retention: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
    let mut backoff = Duration::from_millis(250);
    let mut pruned: Option<std::time::Instant> = None;
    loop {
        if !retention.is_zero() && pruned.is_none_or(|t| t.elapsed() >= Duration::from_secs(600)) {
            let before = wall_now() - retention.as_micros() as i64;
            match store.prune_audit(before).await {
                Ok(n) if n > 0 => info!(rows = n, "audit events past audit.retention deleted"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "deleting old audit events failed"),
            }
            pruned = Some(std::time::Instant::now());
        }
        let stopping = *stop.borrow();
        if batch.is_empty() {
            if stopping {
                // What was queued before the stop, then done.
                while let Ok(e) = rx.try_recv() {
                    batch.push(e);
                }
                if batch.is_empty() {
                    return;
                }
            } else {
                tokio::select! {
                    n = rx.recv_many(&mut batch, BATCH) => if n == 0 { return },
                    _ = stop.changed() => continue,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => continue,
                }
            }
        }
        match store.write_audit(&batch).await {
            Ok(()) => {
                batch.clear();
                backoff = Duration::from_millis(250);
            }
            Err(e) => {
                warn!(error = %e, events = batch.len(), "writing audit events failed; retrying");
                if stopping {
                    return;
                }
                let _ = tokio::time::timeout(backoff, stop.changed()).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
