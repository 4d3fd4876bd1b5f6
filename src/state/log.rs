//! The history log (SPEC §15): rows the fold produces for the history
//! store, kept in the engine state until the store has committed them.
//!
//! The fold appends the alert log (every alert transition) and the tier log
//! (every change of an account's tier, with the event or the passing of time
//! that caused it). The history writer (`crate::history::writer`) takes the
//! rows not yet committed, writes them in one transaction per batch, and only
//! then are they dropped here. So the fold never waits for the database, an
//! outage only makes the log longer, and a checkpoint carries every row not
//! yet committed: a kill -9 loses none, and a row written twice (a restart
//! after the commit, before the checkpoint) is the same row under the same
//! key (the store's inserts are idempotent).

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::health::Tier;
use crate::alert::Alert;
use crate::event::Topic;
use crate::time::{Ts, format_rfc3339};

/// Why an account's tier changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    /// An accepted event of the account.
    Event { topic: Topic, event_id: String },
    /// The passing of event time (window expiry, SLA clock, renewal
    /// countdown, a new quarter).
    Time,
}

impl Cause {
    pub fn to_json(&self) -> Value {
        match self {
            Cause::Event { topic, event_id } => json!({"topic": topic.default_name(), "event_id": event_id}),
            Cause::Time => json!({"time": true}),
        }
    }
}

/// One entry of the tier log (SPEC §15).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TierChange {
    pub account_id: Arc<str>,
    /// The watermark at the change.
    pub ts: Ts,
    /// The fold's arrival sequence at the change: with `account_id`, the
    /// row's key (one refresh per account and event).
    pub seq: u64,
    /// `None` for an account's first tier.
    pub from: Option<Tier>,
    pub to: Tier,
    /// The score after the change, unrounded.
    pub score: f64,
    pub cause: Cause,
}

impl TierChange {
    pub fn to_json(&self) -> Value {
        json!({
            "account_id": &*self.account_id,
            "ts": format_rfc3339(self.ts),
            "from": self.from.map(Tier::as_str),
            "to": self.to.as_str(),
            "score": self.score,
            "cause": self.cause.to_json(),
        })
    }
}

/// A row on its way to the history store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Row {
    Alert(Arc<Alert>),
    Tier(Arc<TierChange>),
}

/// Rows the fold produced and the store has not committed yet, numbered in
/// the order they were made. Part of the engine state (checkpointed).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Log {
    /// Whether rows are recorded at all (`history.store = "off"`: none).
    #[serde(skip)]
    enabled: bool,
    /// The number the next row gets.
    next: u64,
    rows: VecDeque<(u64, Row)>,
}

impl Log {
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        if !on {
            self.rows.clear();
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn push(&mut self, row: Row) {
        if self.enabled {
            self.rows.push_back((self.next, row));
            self.next += 1;
        }
    }

    /// Up to `max` uncommitted rows after number `after` (all if `None`),
    /// oldest first.
    pub fn pending(&self, after: Option<u64>, max: usize) -> Vec<(u64, Row)> {
        let start = match after {
            Some(n) => self.rows.partition_point(|(k, _)| *k <= n),
            None => 0,
        };
        self.rows.range(start..).take(max).cloned().collect()
    }

    /// The store committed every row up to number `n`.
    pub fn commit_through(&mut self, n: u64) {
        while self.rows.front().is_some_and(|(k, _)| *k <= n) {
            self.rows.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(n: u64) -> Row {
        Row::Tier(Arc::new(TierChange {
            account_id: "a".into(),
            ts: n as i64,
            seq: n,
            from: None,
            to: Tier::Green,
            score: 80.0,
            cause: Cause::Time,
        }))
    }

    #[test]
    fn rows_leave_the_log_only_when_committed() {
        let mut log = Log::default();
        log.push(tier(0));
        assert!(log.is_empty(), "nothing is recorded while history is off");
        log.set_enabled(true);
        for i in 0..5 {
            log.push(tier(i));
        }
        let first: Vec<u64> = log.pending(None, 2).iter().map(|r| r.0).collect();
        assert_eq!(first, [0, 1]);
        let next: Vec<u64> = log.pending(Some(1), 10).iter().map(|r| r.0).collect();
        assert_eq!(next, [2, 3, 4]);
        log.commit_through(2);
        assert_eq!(log.len(), 2);
        assert_eq!(log.pending(None, 10)[0].0, 3, "uncommitted rows are offered again (a failed write)");
    }
}
