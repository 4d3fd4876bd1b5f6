//! The fold: exact, incrementally maintained state (SPEC §2–§4, §9 checks).
//!
//! `Engine::fold` takes one Kafka message and either rejects it (with the
//! reason of §9), drops it as a duplicate, or folds it into the state. It is
//! plain synchronous code over owned data: the wall clock (for `future_ts`)
//! comes in as an argument and event time is the watermark, so replaying the
//! same input gives the same state.
//!
//! Time-driven change (window expiry, SLA breaches, the T12M cohort start) is
//! driven by a wake-up queue: every account knows the next instant at which
//! one of its figures changes by the passing of time alone, and only accounts
//! whose instant has come are re-evaluated when the watermark advances.

pub mod account;
#[cfg(test)]
mod alert_prop;
pub mod config;
pub mod encoding;
#[cfg(test)]
mod exact_tests;
pub mod health;
pub mod ids;
pub mod layers;
#[cfg(test)]
mod limits_tests;
pub mod log;
#[cfg(test)]
pub mod naive;
pub mod publish;
pub mod scope;
pub mod snapshot;
#[cfg(test)]
mod tests;
pub mod view;
pub mod window;

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use smol_str::SmolStr;

use crate::event::decode::{Reason, Rejection, decode};
use crate::event::{Body, Event, Topic};
use crate::time::{Ts, days, format_rfc3339, quarter_start};

use crate::alert::{AccountContext, Alert, Alerting, ScopeKind, Subject};
use account::{Account, FeatureTable, Metrics, T12M};
pub use config::StateConfig;
use health::Tier;
use ids::{Id, IdHasher};
use scope::{Cohort, Scope, ScopeKeys, Scopes, Totals, sorted_diff};
use window::FastMap;

/// What became of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// A known `event_id`: dropped and counted, not dead-lettered.
    Duplicate,
    Rejected(Rejection),
    /// The offset is behind the partition's position: this message is already
    /// reflected in the state (a re-delivery after a rebalance or restart).
    Replayed,
}

/// One input message as the fold sees it.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
    pub payload: &'a [u8],
    /// The wall clock when the message was consumed (for `future_ts`).
    pub wall: Ts,
}

/// Per input partition: lateness reference and consumed position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Largest ts accepted from this partition.
    pub max_ts: Option<Ts>,
    /// Offset of the next message to consume (all before it are folded).
    pub next_offset: i64,
    /// Distinct accounts with an event accepted from this partition (§18
    /// `limits.max_accounts_per_partition`).
    pub accounts: u64,
}

/// Counters of the fold, exported to `/metrics` by the ingest loop.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FoldStats {
    pub accepted: [u64; 4],
    pub rejected: [u64; 6],
    pub duplicates: u64,
    /// Overflows of each cardinality limit, by `LimitKind` (features: usage
    /// events counted under `(other)`; the others: events rejected as `limit`).
    pub limit_overflow: [u64; 4],
}

/// The cardinality limits of §18, as `cspulse_limit_overflow_total{kind}` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    Accounts,
    Features,
    OpenTickets,
    TicketEvents,
}

impl LimitKind {
    pub const ALL: [LimitKind; 4] =
        [LimitKind::Accounts, LimitKind::Features, LimitKind::OpenTickets, LimitKind::TicketEvents];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Accounts => "accounts",
            LimitKind::Features => "features",
            LimitKind::OpenTickets => "open_tickets",
            LimitKind::TicketEvents => "ticket_events",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Work done by time alone, counted so tests can see that it follows what
/// expires, not what exists (not stored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdvanceStats {
    /// Portfolio-wide feature windows visited.
    pub feature_windows: u64,
    /// Accounts refreshed because time changed one of their figures.
    pub accounts_woken: u64,
}

/// What the de-duplication index made of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admit {
    Admitted,
    Duplicate,
    /// Not a duplicate, but over a limit: its id is not registered.
    Refused,
}

/// Accepted event ids (as keyed hashes) with the ts they were accepted at.
///
/// An id counts as seen only while its ts is within the horizon of the
/// watermark; that comparison is explicit, so forgetting can be lazy: ids are
/// dropped from the front of the arrival queue once their ts has left the
/// horizon, and one stuck behind a newer id waits a little longer.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Dedup {
    ts_of: FastMap<Id, Ts>,
    arrivals: VecDeque<(Ts, Id)>,
}

impl Dedup {
    /// Records `id` as accepted at `ts` unless it was seen within the
    /// horizon (a duplicate) or, checked after that, the event is not
    /// `allowed` (over a limit: refused, its id not registered, §14). One
    /// probe of the index.
    fn admit(&mut self, id: Id, ts: Ts, watermark: Option<Ts>, horizon: i64, allowed: bool) -> Admit {
        match self.ts_of.entry(id) {
            Entry::Occupied(mut seen) => {
                if watermark.is_some_and(|w| *seen.get() > w - horizon) {
                    return Admit::Duplicate;
                }
                if !allowed {
                    return Admit::Refused;
                }
                seen.insert(ts);
            }
            Entry::Vacant(slot) => {
                if !allowed {
                    return Admit::Refused;
                }
                slot.insert(ts);
            }
        }
        self.arrivals.push_back((ts, id));
        Admit::Admitted
    }

    fn forget_through(&mut self, floor: Ts) {
        while let Some(&(ts, id)) = self.arrivals.front() {
            if ts > floor {
                break;
            }
            self.arrivals.pop_front();
            if self.ts_of.get(&id) == Some(&ts) {
                self.ts_of.remove(&id);
            }
        }
    }
}

/// An account and what the engine keeps about it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Slot {
    account: Account,
    /// What the account currently adds to the scopes under `keys`.
    totals: Totals,
    /// The first-response times (sorted) it adds, and the version of the
    /// account's ticket state they were taken from.
    first_responses: Vec<i64>,
    first_responses_version: u64,
    keys: Option<ScopeKeys>,
    /// The `Info::scope_version` the keys were taken at.
    keys_version: u64,
    /// The account's entry in the wake-up queue.
    wake: Option<Ts>,
    /// Its last alert evaluation left it no lifecycle state, so the next
    /// one need not look it up (false until then, and after a restore).
    #[serde(skip)]
    alerts_idle: bool,
    /// The input partitions it was admitted from (§18).
    admitted: Admitted,
    /// The quarter start at which it was listed in `Engine::quarter_revenue`.
    #[serde(skip, default = "never")]
    revenue_quarter: Ts,
}

fn never() -> Ts {
    Ts::MIN
}

/// The input partitions an account has had an event accepted from, for
/// `limits.max_accounts_per_partition`: one per topic inline (events are
/// keyed by account, so an account usually lives in one partition of each
/// topic, and the check reads the slot already in cache), others beside.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Admitted {
    /// By topic; -1: none yet.
    home: [i32; 4],
    more: Vec<(Topic, i32)>,
}

impl Default for Admitted {
    fn default() -> Self {
        Admitted { home: [-1; 4], more: Vec::new() }
    }
}

impl Admitted {
    fn contains(&self, topic: Topic, partition: i32) -> bool {
        self.home[topic.index()] == partition || self.more.contains(&(topic, partition))
    }

    /// Adds the partition; returns whether it is new.
    fn insert(&mut self, topic: Topic, partition: i32) -> bool {
        if self.contains(topic, partition) {
            return false;
        }
        match &mut self.home[topic.index()] {
            home @ -1 => *home = partition,
            _ => self.more.push((topic, partition)),
        }
        true
    }
}

/// The whole in-memory state.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Engine {
    /// From the configuration, not the checkpoint.
    #[serde(skip)]
    cfg: StateConfig,
    /// Keys of the id hashes (event ids, user ids).
    ids: IdHasher,
    watermark: Option<Ts>,
    /// Arrival sequence of accepted events (orders equal timestamps).
    seq: u64,
    partitions: FastMap<(Topic, i32), Progress>,
    /// Encoded as a section of its own (see `encoding`).
    #[serde(skip)]
    dedup: Dedup,
    /// Encoded as sections of their own (see `encoding`).
    #[serde(skip)]
    slots: Vec<Slot>,
    /// Account ids → slots; ids of up to 23 bytes are stored inline, so a
    /// lookup compares bytes in the table instead of following a pointer.
    index: FastMap<SmolStr, u32>,
    scopes: Scopes,
    /// Each CSM's book: account slots by `csm_id`.
    books: FastMap<Arc<str>, BTreeSet<u32>>,
    /// Encoded as a section of its own (see `encoding`).
    #[serde(skip)]
    features: FeatureTable,
    wakeups: BTreeSet<(Ts, u32)>,
    /// Start of the watermark's calendar quarter (QTD figures).
    quarter: Ts,
    /// Accounts with a revenue event in the quarter: the only ones whose
    /// QTD figures a new quarter changes (rebuilt on restore).
    #[serde(skip)]
    quarter_revenue: Vec<u32>,
    #[serde(skip)]
    advance_stats: AdvanceStats,
    /// Start of the next quarter (`None`: not yet known, e.g. after a restore).
    #[serde(skip)]
    quarter_end: Option<Ts>,
    stats: FoldStats,
    /// Alert rules, firing alerts, cooldowns and the outbox (§5); encoded
    /// separately, by rule name (see `encoding`).
    #[serde(skip)]
    alerting: Alerting,
    /// Whether account rules read `days_to_renewal`, which changes at UTC midnight.
    #[serde(skip)]
    renewal_rules: bool,
    /// Rule evaluations held back until the event is fully applied.
    #[serde(skip)]
    pending: Pending,
    /// CSMs whose book changed since `take_book_changes`.
    #[serde(skip)]
    book_changes: Vec<Arc<str>>,
    /// What changed since the last publish barrier (see `publish`).
    #[serde(skip)]
    dirty: publish::Dirty,
    /// The last snapshot published, and each slot's record in it.
    #[serde(skip)]
    published: snapshot::Snapshot,
    #[serde(skip)]
    records: Vec<Option<Arc<snapshot::Record>>>,
    /// `Alerting::generation` as of the last barrier.
    #[serde(skip)]
    alerts_published: u64,
    /// Asked before scope-level rules are evaluated (SPEC §12).
    #[serde(skip)]
    leadership: crate::lead::Leadership,
    /// Rows for the history store not yet committed (SPEC §15).
    history: log::Log,
    /// This engine's numbering of account slots, distinct in the process
    /// (published in each snapshot, see `Snapshot::numbering`).
    #[serde(skip)]
    numbering: Numbering,
}

/// A numbering of account slots not handed out before in this process: a
/// restored engine and a clone (whose slots may then diverge) get new ones.
#[derive(Debug)]
struct Numbering(u64);

impl Default for Numbering {
    fn default() -> Self {
        static NUMBERINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Numbering(NUMBERINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
    }
}

impl Clone for Numbering {
    fn clone(&self) -> Self {
        Numbering::default()
    }
}

/// Work held back while one event is folded: the accounts that time alone
/// changed are refreshed (and all rules evaluated) after the event is
/// applied, so rules see the state after the event, never the passing moment
/// between the watermark's advance and the event's own change (which no
/// reader can observe either), and no account is refreshed twice.
#[derive(Clone, Debug, Default)]
struct Pending {
    /// Accounts due for a refresh by the watermark's advance.
    accounts: Vec<u32>,
    portfolio: bool,
    /// Scopes that moved, by index (repeats allowed: sorted and de-duplicated
    /// when evaluated, so the buffers are reused and nothing is allocated).
    segments: Vec<u32>,
    csms: Vec<u32>,
}

impl Pending {
    fn note(&mut self, keys: ScopeKeys) {
        self.portfolio = true;
        self.segments.push(keys.segment);
        self.csms.extend(keys.csm);
    }
}

/// Sorts and de-duplicates scope indices, so rules are evaluated once per
/// scope, in index order.
fn distinct(v: &mut Vec<u32>) -> &[u32] {
    v.sort_unstable();
    v.dedup();
    v
}

impl Engine {
    pub fn new(cfg: StateConfig) -> Self {
        let alerting = Alerting::new(cfg.rules.clone());
        let renewal_rules = cfg.rules.uses_account_metric("revenue.days_to_renewal");
        Engine {
            cfg,
            ids: IdHasher::random(),
            watermark: None,
            seq: 0,
            partitions: FastMap::default(),
            dedup: Dedup::default(),
            slots: Vec::new(),
            index: FastMap::default(),
            scopes: Scopes::default(),
            books: FastMap::default(),
            features: FeatureTable::default(),
            wakeups: BTreeSet::new(),
            quarter: Ts::MIN,
            quarter_revenue: Vec::new(),
            advance_stats: AdvanceStats::default(),
            quarter_end: None,
            stats: FoldStats::default(),
            alerting,
            renewal_rules,
            pending: Pending::default(),
            book_changes: Vec::new(),
            dirty: publish::Dirty::default(),
            published: snapshot::Snapshot::default(),
            records: Vec::new(),
            alerts_published: 0,
            leadership: crate::lead::Leadership::sole(),
            history: log::Log::default(),
            numbering: Numbering::default(),
        }
    }

    /// Alert transitions since the last call, in the order they happened
    /// (not kept for delivery: see [`Engine::post_alerts`]).
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        self.alerting.take_outbox()
    }

    /// Alert transitions since the last call, in the order they happened,
    /// each with its number in the delivery outbox, where it stays (and is
    /// checkpointed) until [`Engine::ack_alert`].
    pub fn post_alerts(&mut self) -> Vec<(u64, Arc<Alert>)> {
        let posted: Vec<(u64, Arc<Alert>)> = self.alerting.post().into_iter().map(|(n, a)| (n, Arc::new(a))).collect();
        if self.history.enabled() {
            for (_, alert) in &posted {
                self.history.push(log::Row::Alert(alert.clone()));
            }
        }
        posted
    }

    /// Records the alert and tier logs for the history store (SPEC §15)
    /// from now on, or (`false`) nothing, dropping what is recorded.
    pub fn set_history(&mut self, on: bool) {
        self.history.set_enabled(on);
    }

    /// `history.buffer`: beyond this many uncommitted rows the oldest scope
    /// rows are dropped (and listed as gaps); the alert and tier logs never.
    pub fn set_history_buffer(&mut self, rows: usize) {
        self.history.set_buffer(rows);
    }

    /// Scope rows dropped because the history buffer was full.
    pub fn history_dropped(&self) -> u64 {
        self.history.dropped()
    }

    /// Up to `max` history rows not yet committed, oldest first.
    pub fn history_pending(&self, max: usize) -> Vec<(u64, log::Row)> {
        self.history.pending(max)
    }

    /// The store committed every history row up to number `n`; returns how
    /// many are left.
    pub fn history_committed(&mut self, n: u64) -> usize {
        self.history.commit_through(n);
        self.history.len()
    }

    /// Up to `max` of the oldest history rows that are never dropped (the
    /// alert and tier logs, account rows, gaps), for the spill file.
    pub fn history_oldest_logs(&self, max: usize) -> Vec<(u64, log::Row)> {
        self.history.oldest_logs(max)
    }

    /// Those rows numbered up to `n` are in the spill file; returns how
    /// many rows that are never dropped still wait in the log.
    pub fn history_spilled(&mut self, n: u64) -> usize {
        self.history.spilled_through(n);
        self.history.logs_len()
    }

    pub fn history_logs_len(&self) -> usize {
        self.history.logs_len()
    }

    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// The broker acknowledged outbox entry `n`; returns how many are left.
    pub fn ack_alert(&mut self, n: u64) -> usize {
        self.alerting.ack(n);
        self.alerting.unacked_len()
    }

    /// Posted alert transitions not yet acknowledged, oldest first.
    pub fn unacked_alerts(&self) -> Vec<(u64, Alert)> {
        self.alerting.unacked().map(|(n, a)| (n, a.clone())).collect()
    }

    pub fn alert_outbox_len(&self) -> usize {
        self.alerting.unacked_len()
    }

    /// The CSMs whose book gained or lost an account since the last call
    /// (sorted, once each): their channels show it at once (§6.2 additions).
    pub fn take_book_changes(&mut self) -> Vec<Arc<str>> {
        let mut changed = std::mem::take(&mut self.book_changes);
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    /// Condition alerts firing now.
    pub fn firing_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerting.firing()
    }

    /// Takes a new rule set (SIGHUP): lifecycle state follows the rules by
    /// name, a removed rule's firing alerts resolve, and every account and
    /// scope is evaluated under the new rules at once, so an alert a new
    /// rule raises does not wait for the account's next event (unless the
    /// rules are the ones in force: then nothing happens). Returns how many
    /// alerts the removed rules resolved.
    pub fn replace_rules(&mut self, rules: crate::alert::Rules) -> usize {
        if &rules == self.alerting.rules() {
            // A reload for people or routes: nothing to evaluate again.
            return 0;
        }
        self.renewal_rules = rules.uses_account_metric("revenue.days_to_renewal");
        self.cfg.rules = rules.clone();
        let now = self.watermark.unwrap_or(0);
        let resolved = self.alerting.replace_rules(rules, now);
        let account_rules = self.alerting.has_rules_for(ScopeKind::Account);
        for slot in &mut self.slots {
            slot.alerts_idle = !self.alerting.has_state(ScopeKind::Account, &slot.account.id);
            if !account_rules {
                slot.account.alerts = [0; 2];
            }
        }
        if self.watermark.is_some() {
            self.pending.accounts.extend(0..self.slots.len() as u32);
            self.pending.portfolio = true;
            self.pending.segments.extend(0..self.scopes.segments.interned());
            self.pending.csms.extend(0..self.scopes.csms.interned());
            self.evaluate_pending(None);
        }
        // Alert counts may have moved anywhere: the next barrier publishes all.
        self.dirty = publish::Dirty::default();
        resolved
    }

    /// Whether alert transitions wait to be posted (a reload raised some).
    pub fn has_unposted_alerts(&self) -> bool {
        self.alerting.has_unposted()
    }

    /// The handle scope-level rules ask before they are evaluated: while
    /// this instance does not lead, portfolio, segment and CSM rules are
    /// not evaluated (account rules, which belong to the partition's owner,
    /// are); once it leads again, each scope's rules are evaluated at its
    /// next change.
    pub fn set_leadership(&mut self, leadership: crate::lead::Leadership) {
        self.leadership = leadership;
    }

    pub fn config(&self) -> &StateConfig {
        &self.cfg
    }

    /// The largest accepted ts (`now`), if any event was accepted.
    pub fn watermark(&self) -> Option<Ts> {
        self.watermark
    }

    pub fn stats(&self) -> &FoldStats {
        &self.stats
    }

    pub fn partitions(&self) -> &FastMap<(Topic, i32), Progress> {
        &self.partitions
    }

    pub fn account_count(&self) -> usize {
        self.slots.len()
    }

    /// Time-driven work done so far (see `AdvanceStats`).
    pub fn advance_stats(&self) -> AdvanceStats {
        AdvanceStats { feature_windows: self.features.visits(), ..self.advance_stats }
    }

    /// Features holding a slot (the 30-day window's, `(other)` included).
    pub fn feature_count(&self) -> usize {
        self.features.len()
    }

    /// Checks one message in the order of SPEC §14 and folds it if accepted.
    pub fn fold(&mut self, input: &Input<'_>) -> Outcome {
        let decoded = decode(input.topic, input.payload, self.cfg.max_message_bytes);
        self.fold_decoded(input, decoded, None)
    }

    /// Folds messages in order, exactly as `fold` one at a time would, and
    /// hands each outcome to `each`. The batch is decoded first, so that
    /// while one event is applied the account of an event a few places
    /// ahead is already looked up and on its way into the cache: the fold
    /// waits on memory more than it computes.
    pub fn fold_batch<'a>(&mut self, inputs: &[Input<'a>], each: impl FnMut(&Input<'a>, Outcome)) {
        let max_bytes = self.cfg.max_message_bytes;
        let decoded = inputs.iter().map(|i| decode(i.topic, i.payload, max_bytes)).collect();
        self.fold_decoded_batch(inputs, decoded, each);
    }

    /// `fold_batch` for messages decoded already (`decoded[i]` is
    /// `decode` of `inputs[i]`, with this engine's `max_message_bytes`):
    /// the ingest loop decodes on another thread while this one folds.
    pub fn fold_decoded_batch<'a>(
        &mut self,
        inputs: &[Input<'a>],
        decoded: Vec<Result<Event<'a>, Rejection>>,
        mut each: impl FnMut(&Input<'a>, Outcome),
    ) {
        assert_eq!(inputs.len(), decoded.len(), "one decoded event per input");
        // Each message decoded, with its account's slot once looked up
        // (slots are never removed, so a slot found stays the account's).
        let mut decoded: Vec<(Option<_>, Option<u32>)> = decoded.into_iter().map(|d| (Some(d), None)).collect();
        // Message `j` is looked up while message `j − PREFETCH_AHEAD` is folded.
        for j in 0..inputs.len() + PREFETCH_AHEAD {
            if let Some((Some(Ok(ev)), slot)) = decoded.get_mut(j) {
                *slot = self.prefetch_account(&ev.account_id);
            }
            let Some(k) = j.checked_sub(PREFETCH_AHEAD) else { continue };
            let (ev, slot) = &mut decoded[k];
            let outcome = self.fold_decoded(&inputs[k], ev.take().expect("each message is folded once"), *slot);
            each(&inputs[k], outcome);
        }
    }

    /// Finds an account's slot and starts loading it into the cache (a
    /// hint: no effect on the state).
    fn prefetch_account(&self, account_id: &str) -> Option<u32> {
        let idx = *self.index.get(account_id)?;
        prefetch(&self.slots[idx as usize]);
        Some(idx)
    }

    /// `slot`: the account's slot if it was looked up already.
    fn fold_decoded(&mut self, input: &Input<'_>, decoded: Result<Event<'_>, Rejection>, slot: Option<u32>) -> Outcome {
        let progress = self.partitions.entry((input.topic, input.partition)).or_default();
        if input.offset < progress.next_offset {
            return Outcome::Replayed;
        }
        progress.next_offset = input.offset + 1;
        let max_ts = progress.max_ts;
        let outcome = match decoded {
            Err(rejection) => Outcome::Rejected(rejection),
            Ok(ev) => self.check_and_apply(ev, input, max_ts, slot),
        };
        match &outcome {
            Outcome::Accepted => self.stats.accepted[input.topic.index()] += 1,
            Outcome::Duplicate => self.stats.duplicates += 1,
            Outcome::Rejected(r) => self.stats.rejected[r.reason.index()] += 1,
            Outcome::Replayed => {}
        }
        outcome
    }

    fn check_and_apply(
        &mut self,
        ev: Event<'_>,
        input: &Input<'_>,
        partition_max: Option<Ts>,
        slot: Option<u32>,
    ) -> Outcome {
        if ev.ts > input.wall.saturating_add(self.cfg.max_future_skew) {
            return Outcome::Rejected(Rejection::new(
                Reason::FutureTs,
                format!(
                    "ts {} is ahead of the wall clock {} by more than the allowed skew",
                    format_rfc3339(ev.ts),
                    format_rfc3339(input.wall)
                ),
            ));
        }
        if let Some(max) = partition_max
            && ev.ts < max - self.cfg.allowed_lateness
        {
            return Outcome::Rejected(Rejection::new(
                Reason::Late,
                format!(
                    "ts {} is older than the partition's latest {} minus the allowed lateness",
                    format_rfc3339(ev.ts),
                    format_rfc3339(max)
                ),
            ));
        }
        // The last checks, `duplicate` then `limit` (§14): an event that
        // passes them is accepted.
        let slot = slot.or_else(|| self.index.get(&*ev.account_id).copied());
        let limit = self.limit_hit(&ev, input, slot);
        let event_id = self.ids.id(&ev.event_id);
        match self.dedup.admit(event_id, ev.ts, self.watermark, self.cfg.dedup_horizon, limit.is_none()) {
            Admit::Admitted => {}
            Admit::Duplicate => return Outcome::Duplicate,
            Admit::Refused => {
                let kind = limit.expect("refused over a limit");
                self.stats.limit_overflow[kind.index()] += 1;
                return Outcome::Rejected(Rejection::new(Reason::Limit, self.limit_detail(kind, &ev, input)));
            }
        }
        let progress = self.partitions.get_mut(&(input.topic, input.partition)).expect("entry made in fold");
        progress.max_ts = progress.max_ts.max(Some(ev.ts));
        self.seq += 1;
        self.close_boundaries(ev.ts);
        self.advance(ev.ts);
        let idx = self.apply(&ev, slot);
        if self.slots[idx as usize].admitted.insert(input.topic, input.partition) {
            self.partitions.get_mut(&(input.topic, input.partition)).expect("entry made in fold").accounts += 1;
        }
        self.evaluate_pending(Some(idx));
        self.features.recycle();
        Outcome::Accepted
    }

    /// The cardinality limit (§18) the event would exceed, if any (changes
    /// nothing). Accounts are counted per input partition, so which accounts
    /// get in never depends on how partitions interleave.
    fn limit_hit(&self, ev: &Event<'_>, input: &Input<'_>, slot: Option<u32>) -> Option<LimitKind> {
        let limits = &self.cfg.limits;
        let account = slot.map(|i| &self.slots[i as usize]);
        if !account.is_some_and(|a| a.admitted.contains(input.topic, input.partition)) {
            let admitted = self.partitions.get(&(input.topic, input.partition)).map_or(0, |p| p.accounts);
            if admitted >= limits.max_accounts_per_partition {
                return Some(LimitKind::Accounts);
            }
        }
        let Body::Ticket(t) = &ev.body else { return None };
        match account {
            Some(a) => a.account.tickets.limit_hit(t, ev.ts, limits),
            None => account::Tickets::default().limit_hit(t, ev.ts, limits),
        }
    }

    fn limit_detail(&self, kind: LimitKind, ev: &Event<'_>, input: &Input<'_>) -> String {
        let l = &self.cfg.limits;
        match (kind, &ev.body) {
            (LimitKind::Accounts, _) => format!(
                "account {:?} would be a new account of partition {} of the {} topic, which has {} \
                 (limits.max_accounts_per_partition)",
                ev.account_id,
                input.partition,
                input.topic.default_name(),
                l.max_accounts_per_partition
            ),
            (LimitKind::OpenTickets, Body::Ticket(t)) => format!(
                "ticket {:?} would be account {:?}'s open ticket beyond {} (limits.max_open_tickets_per_account)",
                t.ticket_id, ev.account_id, l.max_open_tickets_per_account
            ),
            (LimitKind::TicketEvents, Body::Ticket(t)) => format!(
                "ticket {:?} of account {:?} has {} events already (limits.max_events_per_ticket)",
                t.ticket_id, ev.account_id, l.max_events_per_ticket
            ),
            _ => format!("over limits ({})", kind.as_str()),
        }
    }

    /// Before an event at `ts` is applied: every boundary B of the history
    /// resolution with watermark <= B < ts closes (SPEC §15 "as of B"): time
    /// advances to exactly B (time-driven change applied, rules evaluated
    /// at B) and, with history on, every scope's KPI object is recorded as
    /// of B. Only the boundaries of the last 35 days before `ts` are stepped
    /// through (older ones lie beyond the fine rows' retention), so no jump
    /// of the watermark costs more than 10,080 steps at 5 minutes; the
    /// boundaries skipped are recorded as a gap.
    fn close_boundaries(&mut self, ts: Ts) {
        let Some(w) = self.watermark else { return };
        let res = self.cfg.resolution;
        let first = w.div_euclid(res) * res + if w.rem_euclid(res) == 0 { 0 } else { res };
        let floor = (ts - days(35)).div_euclid(res) * res;
        let mut b = first.max(floor);
        if b > first && self.history.enabled() {
            // Boundaries not stepped through have no rows: shown as a gap.
            self.history.push(log::Row::Gap { from: first, to: b - res });
        }
        while b < ts {
            self.advance(b);
            self.evaluate_pending(None);
            if self.history.enabled() {
                self.record_scopes(b);
                if b.rem_euclid(crate::time::MICROS_PER_DAY) == 0 {
                    self.record_accounts(b);
                }
            }
            b += res;
        }
    }

    /// Records every scope's KPI object as of the boundary `at`.
    fn record_scopes(&mut self, at: Ts) {
        use log::ScopeKind as K;
        let values = |scope: &Scope| -> Arc<[Option<f64>]> {
            (0..crate::metric::KPI.len())
                .map(|i| match view::kpi_metric(i, scope) {
                    crate::metric::MetricValue::Num(n) => Some(n.approx),
                    _ => None,
                })
                .collect()
        };
        let mut rows = vec![
            (K::Portfolio, Arc::<str>::from("portfolio"), values(&self.scopes.portfolio)),
            (K::Unassigned, Arc::<str>::from("unassigned"), values(&self.scopes.unassigned)),
        ];
        for (kind, table) in
            [(K::Segment, &self.scopes.segments), (K::Region, &self.scopes.regions), (K::Csm, &self.scopes.csms)]
        {
            rows.extend(table.iter().filter(|(_, s)| !s.is_empty()).map(|(id, s)| (kind, id.clone(), values(s))));
        }
        for (kind, id, values) in rows {
            self.history.push(log::Row::Scope(Arc::new(log::ScopeRow { kind, id, at, values })));
        }
    }

    /// Records every account's object as of the UTC day boundary `at`, with
    /// the usage of the day it closes (SPEC §15 "account snapshots"). Every
    /// time-driven change up to `at` has been applied (the accounts it
    /// concerns were woken), so bringing an account's windows to `at` only
    /// reads what its last refresh counted.
    fn record_accounts(&mut self, at: Ts) {
        use crate::metric::ACCOUNT;
        let day = at - crate::time::MICROS_PER_DAY;
        for slot in &mut self.slots {
            let a = &mut slot.account;
            a.advance(at, &self.cfg, &mut self.features);
            let metrics = a.metrics(at, &self.cfg);
            let facts = view::Facts::of(a, &metrics, at);
            let (events, users) = a.usage.day_usage(day);
            let values: Vec<serde_json::Value> = [serde_json::Value::from(events), serde_json::Value::from(users)]
                .into_iter()
                .chain(ACCOUNT.iter().map(|m| view::account_value(m.id, &facts).to_view(m.unit, true)))
                .collect();
            let row = log::AccountRow {
                account_id: a.id.clone(),
                at,
                csm_id: a.info.csm_id.clone(),
                segment: a.info.segment.clone(),
                region: a.info.region.clone(),
                tier: metrics.tier(),
                values: serde_json::to_string(&values).unwrap_or_default().into(),
            };
            self.history.push(log::Row::Account(Arc::new(row)));
        }
    }

    /// Moves the watermark to `ts` if it is ahead, re-evaluating what time changes.
    fn advance(&mut self, ts: Ts) {
        if self.watermark.is_some_and(|w| w >= ts) {
            return;
        }
        self.watermark = Some(ts);
        self.dedup.forget_through(ts - self.cfg.dedup_horizon);
        self.features.advance(ts);
        if self.quarter_end.is_none_or(|end| ts >= end) {
            self.enter_quarter(ts);
        }
        while let Some(&(at, idx)) = self.wakeups.first() {
            if at > ts {
                break;
            }
            self.wakeups.pop_first();
            self.slots[idx as usize].wake = None;
            self.pending.accounts.push(idx);
            self.advance_stats.accounts_woken += 1;
        }
        for (kind, id) in self.alerting.due_scope_wakes(ts) {
            match kind {
                ScopeKind::Segment => self.pending.segments.extend(self.scopes.segments.find(&id)),
                ScopeKind::Csm => self.pending.csms.extend(self.scopes.csms.find(&id)),
                _ => self.pending.portfolio = true,
            }
        }
    }

    /// Notes the quarter of `ts` (reached by the watermark); when it is a
    /// new one, the QTD figures restart. Only accounts with a revenue event
    /// since the old quarter's start have QTD figures that change: for any
    /// other, the ARR before either start is the same, and no flow falls in
    /// either quarter.
    fn enter_quarter(&mut self, ts: Ts) {
        let quarter = quarter_start(ts);
        self.quarter_end = Some(quarter_start(quarter + days(92)));
        if quarter != self.quarter {
            self.quarter = quarter;
            self.pending.accounts.append(&mut self.quarter_revenue);
        }
    }

    /// Lists the accounts with a revenue event since the quarter's start
    /// (after a restore).
    fn list_quarter_revenue(&mut self) {
        self.quarter_revenue.clear();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.account.revenue.has_since(self.quarter) {
                slot.revenue_quarter = self.quarter;
                self.quarter_revenue.push(i as u32);
            }
        }
    }

    /// Runs the work held back while an event was folded: refreshes the
    /// accounts due by the watermark's advance (other than `done`, refreshed
    /// by the event itself), then evaluates the rules of every scope that
    /// moved.
    fn evaluate_pending(&mut self, done: Option<u32>) {
        let mut accounts = std::mem::take(&mut self.pending.accounts);
        accounts.sort_unstable();
        accounts.dedup();
        for &idx in accounts.iter().filter(|&&i| Some(i) != done) {
            self.refresh(idx);
        }
        accounts.clear();
        self.pending.accounts = accounts;
        let now = self.watermark.expect("evaluated at a watermark");
        let Engine { scopes, pending, alerting, leadership, .. } = self;
        let leads = leadership.leads();
        let rules = |kind| leads && alerting.has_rules_for(kind);
        let (portfolio, segments, csms) =
            (rules(ScopeKind::Portfolio), rules(ScopeKind::Segment), rules(ScopeKind::Csm));
        let mut evaluate = |kind, id: &str, scope: &Scope| {
            let metric = |i: usize| view::kpi_metric(i, scope);
            let subject = Subject {
                scope: kind,
                scope_id: id,
                exists: !scope.is_empty(),
                metric: &metric,
                account: None,
                idle: false,
            };
            alerting.evaluate(&subject, now);
        };
        if std::mem::take(&mut pending.portfolio) && portfolio {
            evaluate(ScopeKind::Portfolio, "portfolio", &scopes.portfolio);
        }
        if segments {
            for &i in distinct(&mut pending.segments) {
                evaluate(ScopeKind::Segment, scopes.segments.name(i), scopes.segments.scope(i));
            }
        }
        pending.segments.clear();
        if csms {
            for &i in distinct(&mut pending.csms) {
                evaluate(ScopeKind::Csm, scopes.csms.name(i), scopes.csms.scope(i));
            }
        }
        pending.csms.clear();
    }

    /// The account's slot (`known`: found already), made if it is new.
    fn slot_of(&mut self, account_id: &str, known: Option<u32>) -> u32 {
        if let Some(idx) = known {
            debug_assert_eq!(&*self.slots[idx as usize].account.id, account_id);
            return idx;
        }
        if let Some(&idx) = self.index.get(account_id) {
            return idx;
        }
        let idx = self.slots.len() as u32;
        let account = Account::new(account_id);
        self.index.insert(SmolStr::new(&*account.id), idx);
        self.slots.push(Slot {
            account,
            totals: Totals::default(),
            first_responses: Vec::new(),
            first_responses_version: u64::MAX,
            keys: None,
            keys_version: u64::MAX,
            wake: None,
            alerts_idle: false,
            admitted: Admitted::default(),
            revenue_quarter: Ts::MIN,
        });
        idx
    }

    /// Applies an accepted event to its account; returns the account's slot.
    fn apply(&mut self, ev: &Event<'_>, slot: Option<u32>) -> u32 {
        let now = self.watermark.expect("advanced before apply");
        let idx = self.slot_of(&ev.account_id, slot);
        let seq = self.seq;
        let account = &mut self.slots[idx as usize].account;
        account.advance(now, &self.cfg, &mut self.features);
        if layers::cut() == layers::Cut::NoState {
            return idx;
        }
        match &ev.body {
            Body::Account(upsert) => account.info.upsert(upsert, ev.ts),
            Body::Usage { user_id, feature } => {
                let feature = self.features.intern(feature, ev.ts, &self.cfg);
                self.stats.limit_overflow[LimitKind::Features.index()] += u64::from(feature.overflow);
                account.usage.record(ev.ts, self.ids.id(user_id), feature, &mut self.features);
            }
            Body::Ticket(t) => account.tickets.apply(t, ev.ts, seq, now, &self.cfg),
            Body::Revenue { kind, arr_cents } => {
                account.revenue.record(ev.ts, seq, *kind, *arr_cents);
                let slot = &mut self.slots[idx as usize];
                if ev.ts >= self.quarter && slot.revenue_quarter != self.quarter {
                    slot.revenue_quarter = self.quarter;
                    self.quarter_revenue.push(idx);
                }
            }
        }
        if layers::cut() == layers::Cut::Full {
            self.refresh_by(idx, Some((ev.body.topic(), &ev.event_id)));
            if let Body::Account(_) = &ev.body {
                // Firing alerts carry the account's current name, owner, segment.
                let a = &self.slots[idx as usize].account;
                self.alerting.update_context(&a.id, &|| account_context(a), now);
            }
        }
        if self.alerting.rules().events.iter().any(|r| r.on == ev.body.topic()) {
            let context = account_context(&self.slots[idx as usize].account);
            self.alerting.on_event(ev.body.topic(), &|f| event_field(ev, f), context, now);
        }
        idx
    }

    /// Brings one account's windows to the watermark, re-derives its
    /// contribution, moves the difference into the scopes and reschedules it
    /// (time-driven: see `refresh_by`).
    fn refresh(&mut self, idx: u32) {
        self.refresh_by(idx, None);
    }

    /// `refresh`, for the event `cause` (topic, event id) or, with `None`,
    /// for the passing of time (what the tier log records as the cause).
    fn refresh_by(&mut self, idx: u32, cause: Option<(Topic, &str)>) {
        let now = self.watermark.expect("refresh needs a watermark");
        let slot = &mut self.slots[idx as usize];
        slot.account.advance(now, &self.cfg, &mut self.features);
        let metrics = slot.account.metrics(now, &self.cfg);
        let mut cooldown_end = None;
        if self.alerting.has_rules_for(ScopeKind::Account) {
            let a = &slot.account;
            let metric = |i: usize| view::account_metric(i, a, &metrics, now);
            let context = || account_context(a);
            let subject = Subject {
                scope: ScopeKind::Account,
                scope_id: &a.id,
                exists: true,
                metric: &metric,
                account: Some(&context),
                idle: slot.alerts_idle,
            };
            let verdict = self.alerting.evaluate(&subject, now);
            slot.account.alerts = verdict.firing;
            slot.alerts_idle = verdict.idle;
            cooldown_end = verdict.next_cooldown_end;
        }
        let totals = totals_of(&slot.account, &metrics, now, self.quarter);
        if self.history.enabled() {
            // The tier it counted under so far (none before its first refresh).
            let from = slot.keys.and(Tier::ALL.into_iter().find(|t| slot.totals.tier_accounts[t.index()] == 1));
            let to = metrics.tier();
            if from != Some(to) {
                self.history.push(log::Row::Tier(Arc::new(log::TierChange {
                    account_id: slot.account.id.clone(),
                    ts: now,
                    seq: self.seq,
                    from,
                    to,
                    score: metrics.health.score,
                    cause: match cause {
                        Some((topic, id)) => log::Cause::Event { topic, event_id: id.to_owned() },
                        None => log::Cause::Time,
                    },
                })));
            }
        }
        let info = &slot.account.info;
        let keys = match slot.keys {
            Some(k) if slot.keys_version == info.scope_version => k,
            _ => ScopeKeys {
                segment: self.scopes.segments.intern(&info.segment),
                region: self.scopes.regions.intern(&info.region),
                csm: info.csm_id.as_ref().map(|c| self.scopes.csms.intern(c)),
            },
        };
        slot.keys_version = info.scope_version;
        let version = slot.account.tickets.first_responses_version();
        let responses_changed = version != slot.first_responses_version;
        let responses = if responses_changed {
            let mut v: Vec<i64> = slot.account.tickets.first_response_times().collect();
            v.sort_unstable();
            Some(v)
        } else {
            None
        };
        // The scopes whose figures moved (old and new when the account moved).
        let mut changed: [Option<ScopeKeys>; 2] = [None, None];
        if slot.keys != Some(keys) {
            // Moving between scopes: withdraw everything, add it all back.
            if let Some(old) = slot.keys.take() {
                changed[0] = Some(old);
                self.scopes.add_first_responses(old, &slot.first_responses, -1);
                self.scopes.add_totals(old, &slot.totals, -1);
                if old.csm != keys.csm
                    && let Some(csm) = old.csm
                {
                    let name = self.scopes.csms.name(csm);
                    if let Some(book) = self.books.get_mut(name) {
                        book.remove(&idx);
                        if book.is_empty() {
                            self.books.remove(name);
                        }
                    }
                    self.book_changes.push(name.clone());
                    self.dirty.books.push(name.clone());
                }
            }
            if let Some(csm) = keys.csm
                && self.books.entry(self.scopes.csms.name(csm).clone()).or_default().insert(idx)
            {
                self.book_changes.push(self.scopes.csms.name(csm).clone());
                self.dirty.books.push(self.scopes.csms.name(csm).clone());
            }
            if let Some(v) = responses {
                slot.first_responses = v;
            }
            self.scopes.add_totals(keys, &totals, 1);
            self.scopes.add_first_responses(keys, &slot.first_responses, 1);
            slot.keys = Some(keys);
            changed[1] = Some(keys);
        } else {
            if totals != slot.totals {
                self.scopes.add_totals(keys, &totals.minus(&slot.totals), 1);
                changed[1] = Some(keys);
            }
            if let Some(v) = responses {
                let (gone, came) = sorted_diff(&slot.first_responses, &v);
                if !gone.is_empty() || !came.is_empty() {
                    self.scopes.add_first_responses(keys, &gone, -1);
                    self.scopes.add_first_responses(keys, &came, 1);
                    changed[1] = Some(keys);
                }
                slot.first_responses = v;
            }
        }
        slot.totals = totals;
        slot.first_responses_version = version;
        let mut next = slot.account.next_change(now);
        if self.renewal_rules && slot.account.info.renewal_date.is_some() {
            // days_to_renewal ticks over at the next UTC midnight.
            next = window::min_opt(next, Some((crate::time::utc_day(now) as i64 + 1) * crate::time::MICROS_PER_DAY));
        }
        next = window::min_opt(next, cooldown_end);
        debug_assert!(next.is_none_or(|t| t > now), "wake-ups lie ahead of the watermark");
        if next != slot.wake {
            if let Some(old) = slot.wake {
                self.wakeups.remove(&(old, idx));
            }
            if let Some(at) = next {
                self.wakeups.insert((at, idx));
            }
            slot.wake = next;
        }
        self.dirty.account(idx);
        for k in changed.into_iter().flatten() {
            self.pending.note(k);
            self.dirty.scopes(k);
        }
    }
}

/// How many messages ahead `fold_batch` starts loading an account.
const PREFETCH_AHEAD: usize = 8;

/// Asks the CPU to load the cache lines of `value` (a hint; it never faults).
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = (value as *const T).cast::<i8>();
        for offset in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: a prefetch reads nothing architecturally and cannot
            // fault; the address lies inside `value` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

fn account_context(a: &Account) -> AccountContext {
    AccountContext {
        account_id: a.id.to_string(),
        name: a.info.name.clone(),
        csm_id: a.info.csm_id.as_deref().map(str::to_owned),
        segment: a.info.segment.to_string(),
    }
}

/// A field of an event as an event rule matches it.
fn event_field(ev: &Event<'_>, field: &str) -> Option<String> {
    let s = |v: &str| Some(v.to_owned());
    match (&ev.body, field) {
        (_, "account_id") => s(&ev.account_id),
        (Body::Account(u), "csm_id") => u.csm_id.as_ref().and_then(|c| c.as_deref()).and_then(s),
        (Body::Account(u), "segment") => u.segment.as_deref().and_then(s),
        (Body::Account(u), "region") => u.region.as_deref().and_then(s),
        (Body::Usage { user_id, .. }, "user_id") => s(user_id),
        (Body::Usage { feature, .. }, "feature") => s(feature),
        (Body::Ticket(t), "ticket_id") => s(&t.ticket_id),
        (Body::Ticket(t), "action") => s(match t.action {
            crate::event::TicketAction::Opened => "opened",
            crate::event::TicketAction::FirstResponse => "first_response",
            crate::event::TicketAction::Escalated => "escalated",
            crate::event::TicketAction::Resolved => "resolved",
            crate::event::TicketAction::Reopened => "reopened",
            crate::event::TicketAction::Csat => "csat",
        }),
        (Body::Ticket(t), "priority") => t.priority.map(|p| format!("p{}", p.index() + 1)),
        (Body::Revenue { kind, .. }, "kind") => s(kind.as_str()),
        _ => None,
    }
}

/// What an account adds to its scopes at `now` (first-response times aside).
fn totals_of(a: &Account, m: &Metrics, now: Ts, quarter: Ts) -> Totals {
    let tier = m.tier().index();
    let paying = i64::from(m.arr > 0);
    let mut t = Totals {
        accounts: 1,
        score_fixed: m.health.score_fixed(),
        arr: m.arr,
        paying,
        active_users_7d: m.active_users_7d as i64,
        active_users_30d: m.active_users_30d as i64,
        usage_events_7d: m.usage_events_7d as i64,
        adoption_base: paying,
        adoption_hit: paying * i64::from(a.core_usage_7d(now)),
        open: m.open.map(|v| v as i64),
        open_total: m.open_total as i64,
        escalated_open: m.escalated_open as i64,
        sla_breached: m.sla_breached as i64,
        csat_count: m.csat.count as i64,
        csat_sum: m.csat.sum as i64,
        qtd: Cohort::of(a.revenue.cohort(quarter)),
        t12m: Cohort::of(a.revenue.cohort(now - T12M)),
        alerts: a.alerts.map(|v| v as i64),
        ..Totals::default()
    };
    t.tier_accounts[tier] = 1;
    t.tier_arr[tier] = m.arr;
    t.histogram[m.health.bucket()] = 1;
    t.set_flows(a.revenue.flows(quarter));
    t
}
