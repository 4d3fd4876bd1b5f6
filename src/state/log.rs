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

/// One scope's KPI object as of a boundary (SPEC §15 "scope snapshots"):
/// every figure of `metric::KPI`, in its order, as reported (null where the
/// figure is).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScopeRow {
    /// `portfolio`, `segment`, `region`, `csm` or `unassigned`.
    pub kind: ScopeKind,
    /// The segment, region or CSM id (`portfolio` and `unassigned` for those).
    pub id: Arc<str>,
    /// The boundary B.
    pub at: Ts,
    pub values: Arc<[Option<f64>]>,
}

/// The scopes that get a row at every boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScopeKind {
    Portfolio,
    Segment,
    Region,
    Csm,
    Unassigned,
}

impl ScopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Portfolio => "portfolio",
            ScopeKind::Segment => "segment",
            ScopeKind::Region => "region",
            ScopeKind::Csm => "csm",
            ScopeKind::Unassigned => "unassigned",
        }
    }
}

impl ScopeRow {
    /// The row's KPI object (§3.2), as the channels show it.
    pub fn kpi(&self) -> Value {
        kpi_object(&self.values)
    }
}

/// The KPI object (§3.2) of figures stored in `metric::KPI` order (rows
/// written before a figure was appended to the catalogue lack it).
pub fn kpi_object(values: &[Option<f64>]) -> Value {
    let mut object = serde_json::Map::new();
    for (m, v) in crate::metric::KPI.iter().zip(values) {
        let shown = v.map_or(Value::Null, |x| crate::metric::shown(x, m.unit, false));
        crate::metric::insert_at(&mut object, m.path, shown);
    }
    Value::Object(object)
}

/// The KPI object's JSON text, cut at each figure: `(text before, figure
/// index)` pieces and the text after the last. Made once from
/// [`kpi_object`] itself, so the text has its keys, nesting and order.
struct KpiText {
    pieces: Vec<(String, usize)>,
    tail: String,
}

static KPI_TEXT: std::sync::LazyLock<KpiText> = std::sync::LazyLock::new(|| {
    let mut object = serde_json::Map::new();
    for (i, m) in crate::metric::KPI.iter().enumerate() {
        crate::metric::insert_at(&mut object, m.path, json!(format!("\u{1}{i}\u{1}")));
    }
    let text = Value::Object(object).to_string();
    let (open, close) = ("\"\\u0001", "\\u0001\"");
    let (mut pieces, mut rest) = (Vec::new(), text.as_str());
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        let end = after.find(close).expect("a closed marker");
        pieces.push((rest[..start].to_owned(), after[..end].parse().expect("a figure index")));
        rest = &after[end + close.len()..];
    }
    KpiText { pieces, tail: rest.to_owned() }
});

/// Appends the JSON text of [`kpi_object`]`(values)` to `out`, without
/// building the object (history answers hold thousands of them).
pub fn write_kpi_json(values: &[Option<f64>], out: &mut String) {
    use std::fmt::Write as _;
    if values.len() < crate::metric::KPI.len() {
        // A row older than some figures lacks them: the object omits them.
        let _ = write!(out, "{}", kpi_object(values));
        return;
    }
    let t = &*KPI_TEXT;
    for (before, i) in &t.pieces {
        out.push_str(before);
        let m = &crate::metric::KPI[*i];
        match values[*i] {
            None => out.push_str("null"),
            Some(x) => {
                let _ = write!(out, "{}", crate::metric::shown(x, m.unit, false));
            }
        }
    }
    out.push_str(&t.tail);
}

/// One account's object as of a UTC day boundary (SPEC §15 "account
/// snapshots"): every figure of `metric::ACCOUNT` as the account object
/// shows it, then the closed day's usage events and distinct users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountRow {
    pub account_id: Arc<str>,
    /// The day boundary B (the row reports the day that ends there).
    pub at: Ts,
    /// The account's scopes and tier at B (columns of their own, so the
    /// store can select a scope's accounts at a past day).
    pub csm_id: Option<Arc<str>>,
    pub segment: Arc<str>,
    pub region: Arc<str>,
    pub tier: Tier,
    /// The figures as a JSON array: `usage.events_day` and
    /// `usage.active_users_day`, then the catalogue's in its order (new
    /// figures are appended to it, so old rows stay readable).
    pub values: Box<str>,
}

/// The fields a daily account row adds to the account object (the closed
/// day's usage), before the catalogue's.
pub const DAY_FIELDS: [&str; 2] = ["usage.events_day", "usage.active_users_day"];

/// The account object (§3.1, without `rank`) of a daily row's values.
pub fn account_object(account_id: &str, values: &[Value]) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("account_id".into(), json!(account_id));
    let paths = DAY_FIELDS.into_iter().chain(crate::metric::ACCOUNT.iter().map(|m| m.path));
    for (path, v) in paths.zip(values) {
        crate::metric::insert_at(&mut object, path, v.clone());
    }
    Value::Object(object)
}

/// A row on its way to the history store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Row {
    Alert(Arc<Alert>),
    Tier(Arc<TierChange>),
    Scope(Arc<ScopeRow>),
    /// Never dropped (with the alert and tier logs).
    Account(Arc<AccountRow>),
    /// Scope rows of the boundaries in [from, to] were dropped (the log was
    /// full while the store was unreachable): shown as a gap.
    Gap {
        from: Ts,
        to: Ts,
    },
}

/// Rows the fold produced and the store has not committed yet, numbered in
/// the order they were made. Part of the engine state (checkpointed).
///
/// Two queues, both in number order: the scope rows (which may be dropped
/// when the log is full) and everything else (the alert and tier logs and
/// the gaps, never dropped). Dropping the oldest scope row and extending the
/// newest gap cost O(1) and O(log n), whatever the log holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Log {
    /// Whether rows are recorded at all (`history.store = "off"`: none).
    #[serde(skip)]
    enabled: bool,
    /// `history.buffer`: beyond this many rows the oldest scope rows go.
    #[serde(skip, default = "default_buffer")]
    buffer: usize,
    /// Scope rows dropped so far (`cspulse_history_dropped_rows_total`).
    dropped: u64,
    /// The number the next row gets.
    next: u64,
    scopes: VecDeque<(u64, Row)>,
    logs: VecDeque<(u64, Row)>,
    /// The number of the newest gap row, while it is uncommitted.
    open_gap: Option<u64>,
}

fn default_buffer() -> usize {
    1_000_000
}

impl Default for Log {
    fn default() -> Self {
        Log {
            enabled: false,
            buffer: default_buffer(),
            dropped: 0,
            next: 0,
            scopes: VecDeque::new(),
            logs: VecDeque::new(),
            open_gap: None,
        }
    }
}

impl Log {
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        if !on {
            self.scopes.clear();
            self.logs.clear();
            self.open_gap = None;
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn set_buffer(&mut self, rows: usize) {
        self.buffer = rows.max(1);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn push(&mut self, row: Row) {
        if !self.enabled {
            return;
        }
        let n = self.next;
        self.next += 1;
        match row {
            Row::Scope(_) => self.scopes.push_back((n, row)),
            _ => self.logs.push_back((n, row)),
        }
        if self.len() > self.buffer {
            self.drop_oldest_scope_row();
        }
    }

    /// Over the buffer: the oldest scope row goes (the alert and tier logs
    /// never do), and its boundary joins the newest gap or opens one.
    fn drop_oldest_scope_row(&mut self) {
        let Some((_, Row::Scope(r))) = self.scopes.pop_front() else { return };
        self.dropped += 1;
        let at = r.at;
        let open = self.open_gap.and_then(|g| {
            let i = self.logs.binary_search_by_key(&g, |(k, _)| *k).ok()?;
            match &mut self.logs[i].1 {
                Row::Gap { from, to } if at >= *from && at <= to.saturating_add(crate::time::MICROS_PER_DAY) => {
                    Some(to)
                }
                _ => None,
            }
        });
        match open {
            Some(to) => *to = (*to).max(at),
            None => {
                let n = self.next;
                self.next += 1;
                self.logs.push_back((n, Row::Gap { from: at, to: at }));
                self.open_gap = Some(n);
            }
        }
    }

    /// Up to `max` uncommitted rows, oldest first.
    pub fn pending(&self, max: usize) -> Vec<(u64, Row)> {
        let (mut a, mut b) = (self.scopes.iter().peekable(), self.logs.iter().peekable());
        let mut out = Vec::with_capacity(max.min(self.len()));
        while out.len() < max {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => {
                    if x.0 < y.0 {
                        a.next()
                    } else {
                        b.next()
                    }
                }
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            out.extend(next.cloned());
        }
        out
    }

    /// The store committed every row up to number `n` (a gap committed is
    /// closed: a later drop opens a new one).
    pub fn commit_through(&mut self, n: u64) {
        for q in [&mut self.scopes, &mut self.logs] {
            while q.front().is_some_and(|(k, _)| *k <= n) {
                q.pop_front();
            }
        }
        if self.open_gap.is_some_and(|g| g <= n) {
            self.open_gap = None;
        }
    }

    /// Up to `max` of the oldest rows that are never dropped (to spill).
    pub fn oldest_logs(&self, max: usize) -> Vec<(u64, Row)> {
        self.logs.iter().take(max).cloned().collect()
    }

    /// The rows that are never dropped numbered up to `n` are safe in the
    /// spill file: they leave the log (and the checkpoint).
    pub fn spilled_through(&mut self, n: u64) {
        while self.logs.front().is_some_and(|(k, _)| *k <= n) {
            self.logs.pop_front();
        }
        if self.open_gap.is_some_and(|g| g <= n) {
            self.open_gap = None;
        }
    }

    /// How many rows that are never dropped wait.
    pub fn logs_len(&self) -> usize {
        self.logs.len()
    }

    pub fn len(&self) -> usize {
        self.scopes.len() + self.logs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kpi_text_is_the_kpi_objects_text() {
        let n = crate::metric::KPI.len();
        for seed in 0..50u64 {
            let values: Vec<Option<f64>> = (0..n as u64)
                .map(|i| {
                    let x = (seed * 31 + i * 17) % 11;
                    (x != 0).then(|| (x as f64 - 3.5) * 1234.567 / (seed + 1) as f64)
                })
                .collect();
            let mut text = String::new();
            write_kpi_json(&values, &mut text);
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), kpi_object(&values), "{text}");
            // An old row with fewer figures: they are absent, as in the object.
            let mut text = String::new();
            write_kpi_json(&values[..n - 2], &mut text);
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), kpi_object(&values[..n - 2]));
        }
    }

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
        let first: Vec<u64> = log.pending(2).iter().map(|r| r.0).collect();
        assert_eq!(first, [0, 1]);
        log.push(scope(7));
        let all: Vec<u64> = log.pending(10).iter().map(|r| r.0).collect();
        assert_eq!(all, [0, 1, 2, 3, 4, 5], "both queues, in number order");
        log.commit_through(2);
        assert_eq!(log.len(), 3);
        assert_eq!(log.pending(10)[0].0, 3, "uncommitted rows are offered again (a failed write)");
    }

    fn scope(at: Ts) -> Row {
        Row::Scope(Arc::new(ScopeRow { kind: ScopeKind::Portfolio, id: "portfolio".into(), at, values: Arc::new([]) }))
    }

    #[test]
    fn a_full_log_drops_the_oldest_scope_rows_into_a_gap_and_keeps_the_logs() {
        let mut log = Log::default();
        log.set_enabled(true);
        log.set_buffer(4);
        log.push(tier(0));
        for at in [300, 600, 900, 1200, 1500] {
            log.push(scope(at));
        }
        log.push(tier(1));
        let kinds: Vec<String> = log
            .pending(100)
            .iter()
            .map(|(_, r)| match r {
                Row::Tier(t) => format!("tier {}", t.seq),
                Row::Scope(s) => format!("scope {}", s.at),
                Row::Gap { from, to } => format!("gap {from}..{to}"),
                Row::Alert(_) => "alert".into(),
                Row::Account(_) => "account".into(),
            })
            .collect();
        assert_eq!(kinds, ["tier 0", "scope 1200", "gap 300..900", "scope 1500", "tier 1"]);
        assert_eq!(log.dropped(), 3);
        // A committed gap is closed; the next drop opens another.
        log.commit_through(100);
        for at in [1800, 2100, 2400, 2700, 3000] {
            log.push(scope(at));
        }
        let gaps: Vec<(Ts, Ts)> = log
            .pending(100)
            .iter()
            .filter_map(|(_, r)| if let Row::Gap { from, to } = r { Some((*from, *to)) } else { None })
            .collect();
        assert_eq!(gaps, [(1800, 1800)]);
    }
}
