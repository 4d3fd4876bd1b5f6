//! One account's state (SPEC §1, §3.1): reference data, usage windows, ticket
//! lifecycles, revenue history. Everything is kept so that the §3.1 figures at
//! the watermark are read off counters, and so that the next instant at which
//! any of them changes by the mere passing of time is known.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use smol_str::SmolStr;

use crate::event::{AccountUpsert, Priority, RevenueKind, TicketAction, TicketEvent};
use crate::time::{Ts, days};

use super::LimitKind;
use super::config::{Limits, OTHER_FEATURE, StateConfig};
use super::health::{Health, Tier};
use super::ids::Id;
use super::window::{FastMap, LatestSeen, Scores, Touch, WideSeen, Window, min_opt};

/// Reference data from `cs.accounts` upserts, with the ts that last set each field.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Info {
    pub name: Option<String>,
    pub csm_id: Option<Arc<str>>,
    pub segment: Arc<str>,
    pub region: Arc<str>,
    pub seats: u64,
    pub renewal_date: Option<i32>,
    /// When each field was last set, in the order above (`None`: never).
    set_at: [Option<Ts>; 6],
    /// Bumped when `csm_id`, `segment` or `region` change (scope membership).
    pub scope_version: u64,
}

impl Info {
    /// Whole UTC days from `now` to the renewal date, if one is known.
    pub fn days_to_renewal(&self, now: Ts) -> Option<i64> {
        self.renewal_date.map(|d| d as i64 - crate::time::utc_day(now) as i64)
    }
}

impl Default for Info {
    fn default() -> Self {
        Info {
            name: None,
            csm_id: None,
            segment: Arc::from("unknown"),
            region: Arc::from("unknown"),
            seats: 0,
            renewal_date: None,
            set_at: [None; 6],
            scope_version: 0,
        }
    }
}

impl Info {
    /// Applies the present fields of an upsert whose ts is >= the ts that last
    /// set each of them (so replays and reordering converge).
    pub fn upsert(&mut self, u: &AccountUpsert<'_>, ts: Ts) {
        let mut newer = |i: usize| {
            let ok = self.set_at[i].is_none_or(|at| ts >= at);
            if ok {
                self.set_at[i] = Some(ts);
            }
            ok
        };
        let take_name = u.name.is_some() && newer(0);
        let take_csm = u.csm_id.is_some() && newer(1);
        let take_segment = u.segment.is_some() && newer(2);
        let take_region = u.region.is_some() && newer(3);
        let take_seats = u.seats.is_some() && newer(4);
        let take_renewal = u.renewal_date.is_some() && newer(5);
        if take_csm || take_segment || take_region {
            self.scope_version += 1;
        }
        if take_name {
            self.name = u.name.as_deref().map(str::to_owned);
        }
        if take_csm {
            self.csm_id = u.csm_id.as_ref().and_then(|c| c.as_deref()).map(Arc::from);
        }
        if take_segment {
            self.segment = Arc::from(u.segment.as_deref().unwrap_or_default());
        }
        if take_region {
            self.region = Arc::from(u.region.as_deref().unwrap_or_default());
        }
        if take_seats {
            self.seats = u.seats.unwrap_or_default();
        }
        if take_renewal {
            self.renewal_date = u.renewal_date;
        }
    }
}

/// The window of the features (§3.1 `features_30d`, §3.3).
const FEATURE_WINDOW: i64 = days(30);

/// Feature names with their portfolio-wide 30-day counts (§3.3).
///
/// A feature holds a slot while it is used within the 30-day window: once
/// its last use leaves the window, the slot is released and later reused, so
/// the table holds the features of the last 30 days, not every feature ever
/// seen. At most `limits.max_features` real features hold a slot at once;
/// uses of further ones count under [`OTHER_FEATURE`] (§18), until slots free
/// up. Time-driven work is proportional to what expires: the features are
/// ordered by the instant their user window next changes, and an advance
/// visits only those whose instant has come.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FeatureTable {
    /// By slot; `None`: a free slot.
    names: Vec<Option<Arc<str>>>,
    /// Accounts with a usage event on the feature in the last 30 days.
    pub accounts_30d: Vec<u64>,
    /// Distinct `user_id`s with a usage event on it in 30 days (§14: user
    /// ids are counted as strings across the portfolio).
    pub users_30d: Vec<u64>,
    /// Per feature, the users seen on it in the last 30 days, portfolio-wide.
    users: Vec<WideSeen<Id>>,
    now: Ts,
    /// Names holding a slot → the slot (rebuilt from `names` on restore).
    #[serde(skip)]
    ids: FastMap<Arc<str>, u32>,
    /// Whether each feature counts for adoption (from the configuration).
    #[serde(skip)]
    core: Vec<bool>,
    /// Features with users in the window, by the instant (a lower bound)
    /// at which their window next changes; `scheduled` is each one's key.
    #[serde(skip)]
    due: BTreeSet<(Ts, u32)>,
    #[serde(skip)]
    scheduled: Vec<Ts>,
    /// Slots free for new features.
    #[serde(skip)]
    free: Vec<u32>,
    /// Slots released by this advance: accounts still count them until the
    /// accounts due at the same instant are refreshed (`recycle`).
    #[serde(skip)]
    released: Vec<u32>,
    /// Real features (not `(other)`) holding a slot.
    #[serde(skip)]
    real: usize,
    /// Feature windows visited by advances (how much time-driven work was done).
    #[serde(skip)]
    visits: u64,
}

impl Default for FeatureTable {
    fn default() -> Self {
        FeatureTable {
            names: Vec::new(),
            accounts_30d: Vec::new(),
            users_30d: Vec::new(),
            users: Vec::new(),
            now: Ts::MIN,
            ids: FastMap::default(),
            core: Vec::new(),
            due: BTreeSet::new(),
            scheduled: Vec::new(),
            free: Vec::new(),
            released: Vec::new(),
            real: 0,
            visits: 0,
        }
    }
}

/// What a usage event's feature counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interned {
    /// The slot it counts under (its own, or `(other)`'s); `None` when the
    /// event is already outside the 30-day window (it counts nowhere).
    pub id: Option<u32>,
    /// Whether the feature (by its own name) counts for adoption.
    pub core: bool,
    /// It counts under `(other)` because `limits.max_features` are held.
    pub overflow: bool,
}

fn is_core_name(name: &str, cfg: &StateConfig) -> bool {
    cfg.core_features.is_empty() || cfg.core_features.iter().any(|f| f == name)
}

impl FeatureTable {
    /// Moves the portfolio-wide user windows to `now`: only the features
    /// whose window changes by then are visited; a feature left without
    /// users releases its slot.
    pub fn advance(&mut self, now: Ts) {
        self.now = now;
        while let Some(&(at, f)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            self.visits += 1;
            let i = f as usize;
            let count = &mut self.users_30d[i];
            self.users[i].advance(now, |_| *count -= 1);
            if self.users[i].is_empty() {
                self.scheduled[i] = Ts::MAX;
                let name = self.names[i].take().expect("a scheduled feature holds its slot");
                self.ids.remove(&name);
                if &*name != OTHER_FEATURE {
                    self.real -= 1;
                }
                self.released.push(f);
            } else {
                let next = self.users[i].due();
                self.due.insert((next, f));
                self.scheduled[i] = next;
            }
        }
    }

    /// Frees the slots released by the last advance, once every account
    /// has withdrawn from them (after the accounts due are refreshed).
    pub fn recycle(&mut self) {
        for f in self.released.drain(..) {
            debug_assert_eq!(self.accounts_30d[f as usize], 0, "no account counts a released feature");
            self.free.push(f);
        }
    }

    /// The slot a usage event at `ts` on `name` counts under (§18: beyond
    /// `limits.max_features` real features in the window, `(other)`).
    pub fn intern(&mut self, name: &str, ts: Ts, cfg: &StateConfig) -> Interned {
        if ts <= self.now.saturating_sub(FEATURE_WINDOW) {
            return Interned { id: None, core: is_core_name(name, cfg), overflow: false };
        }
        if let Some(&id) = self.ids.get(name) {
            return Interned { id: Some(id), core: self.core[id as usize], overflow: false };
        }
        if name != OTHER_FEATURE && self.real >= cfg.limits.max_features {
            let id = match self.ids.get(OTHER_FEATURE) {
                Some(&id) => id,
                None => self.register(OTHER_FEATURE, cfg),
            };
            return Interned { id: Some(id), core: is_core_name(name, cfg), overflow: true };
        }
        if name != OTHER_FEATURE {
            self.real += 1;
        }
        let id = self.register(name, cfg);
        Interned { id: Some(id), core: self.core[id as usize], overflow: false }
    }

    fn register(&mut self, name: &str, cfg: &StateConfig) -> u32 {
        let name: Arc<str> = Arc::from(name);
        let core = is_core_name(&name, cfg);
        let mut users = WideSeen::new(FEATURE_WINDOW);
        users.advance(self.now, |_| {});
        let id = match self.free.pop() {
            Some(id) => {
                let i = id as usize;
                debug_assert!(self.names[i].is_none() && self.accounts_30d[i] == 0 && self.users_30d[i] == 0);
                self.names[i] = Some(name.clone());
                self.core[i] = core;
                self.users[i] = users;
                id
            }
            None => {
                self.names.push(Some(name.clone()));
                self.core.push(core);
                self.users.push(users);
                self.accounts_30d.push(0);
                self.users_30d.push(0);
                self.scheduled.push(Ts::MAX);
                (self.names.len() - 1) as u32
            }
        };
        self.ids.insert(name, id);
        id
    }

    fn touch_user(&mut self, feature: u32, user: Id, ts: Ts) {
        let i = feature as usize;
        let users = &mut self.users[i];
        // Only features due by the watermark were advanced; nothing of this
        // one expires yet, but its floor must be the watermark's.
        users.advance(self.now, |_| debug_assert!(false, "a feature due was not advanced"));
        if users.touch(user, ts) == Touch::Entered {
            self.users_30d[i] += 1;
        }
        let next = users.due();
        if next != self.scheduled[i] {
            if self.scheduled[i] != Ts::MAX {
                self.due.remove(&(self.scheduled[i], feature));
            }
            self.due.insert((next, feature));
            self.scheduled[i] = next;
        }
    }

    /// Re-derives what is not stored after a restore: the name index, the
    /// free slots, the expiry order and which features are core.
    pub fn restored(&mut self, cfg: &StateConfig) {
        self.ids.clear();
        self.free.clear();
        self.due.clear();
        self.real = 0;
        self.core = self.names.iter().map(|n| n.as_deref().is_some_and(|n| is_core_name(n, cfg))).collect();
        self.scheduled = vec![Ts::MAX; self.names.len()];
        for (i, name) in self.names.iter().enumerate() {
            let Some(name) = name else {
                self.free.push(i as u32);
                continue;
            };
            self.ids.insert(name.clone(), i as u32);
            if &**name != OTHER_FEATURE {
                self.real += 1;
            }
            if !self.users[i].is_empty() {
                self.scheduled[i] = self.users[i].due();
                self.due.insert((self.scheduled[i], i as u32));
            }
        }
    }

    /// The features with an account in the window: name, accounts, users.
    pub fn live(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        (0..self.names.len())
            .filter(|&i| self.accounts_30d[i] > 0)
            .map(|i| (self.names[i].as_deref().unwrap_or(OTHER_FEATURE), self.accounts_30d[i], self.users_30d[i]))
    }

    /// The shared name of a slot, if it holds a named feature (else it is
    /// the slot of `(other)`).
    pub fn shared_name(&self, slot: u32) -> Option<&Arc<str>> {
        self.names.get(slot as usize).and_then(Option::as_ref)
    }

    /// Slots allocated, free ones included (how large the table grew).
    pub fn slots(&self) -> usize {
        self.names.len()
    }

    /// Feature windows visited by advances so far (not stored).
    pub fn visits(&self) -> u64 {
        self.visits
    }

    /// Slots held (features of the window, `(other)` included).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Usage windows (§3.1 usage section).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Usage events in the last 14 days, counting the last 7 apart.
    events: Window<u64>,
    /// Users (id hashes) seen in the last 30 days, counting the last 7 apart.
    users: LatestSeen<Id>,
    features: LatestSeen<u32>,
    pub last_activity: Option<Ts>,
    /// Latest usage on a core feature (adoption, §3.2).
    pub last_core: Option<Ts>,
    /// The usage of the two latest UTC days with any (the daily account
    /// row reports the day a boundary closes, §15).
    days: [DayTally; 2],
}

/// One UTC day's usage events and distinct users of an account.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct DayTally {
    /// The day's start (`None`: no day yet).
    day: Option<Ts>,
    events: u64,
    /// The users seen that day, sorted.
    users: Vec<Id>,
}

impl DayTally {
    fn record(&mut self, user: Id) {
        self.events += 1;
        if let Err(at) = self.users.binary_search(&user) {
            self.users.insert(at, user);
        }
    }
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            events: Window::new(days(14), Some(days(7))),
            users: LatestSeen::new(days(30), Some(days(7))),
            features: LatestSeen::new(FEATURE_WINDOW, None),
            last_activity: None,
            last_core: None,
            days: Default::default(),
        }
    }
}

impl Usage {
    pub fn advance(&mut self, now: Ts, table: &mut FeatureTable) {
        self.events.advance(now);
        self.users.advance(now, |_| {});
        self.features.advance(now, |f| table.accounts_30d[*f as usize] -= 1);
    }

    pub fn record(&mut self, ts: Ts, user: Id, feature: Interned, table: &mut FeatureTable) {
        self.last_activity = self.last_activity.max(Some(ts));
        if feature.core {
            self.last_core = self.last_core.max(Some(ts));
        }
        self.events.insert(ts, 1);
        self.users.touch(user, ts);
        self.record_day(ts, user);
        if let Some(f) = feature.id {
            if self.features.touch(f, ts) == Touch::Entered {
                table.accounts_30d[f as usize] += 1;
            }
            table.touch_user(f, user, ts);
        }
    }

    /// Counts the event in its UTC day's tally. Only the two latest days
    /// with usage are kept: an event of an older day comes after that day's
    /// boundary closed (a later day's event was folded, so the watermark
    /// passed it), and a late event does not restate a closed day (§15).
    fn record_day(&mut self, ts: Ts, user: Id) {
        let day = ts.div_euclid(crate::time::MICROS_PER_DAY) * crate::time::MICROS_PER_DAY;
        if let Some(t) = self.days.iter_mut().find(|t| t.day == Some(day)) {
            t.record(user);
            return;
        }
        // Replace the older tally (or an unused one) if this day is newer.
        let older = if self.days[0].day <= self.days[1].day { 0 } else { 1 };
        if self.days[older].day < Some(day) {
            self.days[older] = DayTally { day: Some(day), events: 0, users: Vec::new() };
            self.days[older].record(user);
        }
    }

    /// The usage events and distinct users of the UTC day starting at
    /// `day` (0 and 0 if none are kept for it).
    pub fn day_usage(&self, day: Ts) -> (u64, u64) {
        self.days.iter().find(|t| t.day == Some(day)).map_or((0, 0), |t| (t.events, t.users.len() as u64))
    }

    pub fn active_users_7d(&self) -> u64 {
        self.users.short_len() as u64
    }
    pub fn active_users_30d(&self) -> u64 {
        self.users.len() as u64
    }
    pub fn events_7d(&self) -> u64 {
        self.events.short_total()
    }
    pub fn events_prev_7d(&self) -> u64 {
        self.events.outside_short()
    }
    pub fn features_30d(&self) -> u64 {
        self.features.len() as u64
    }

    /// The feature slots used in the last 30 days (see [`FeatureTable::shared_name`]).
    pub fn feature_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.features.iter().map(|(slot, _)| *slot)
    }

    fn next_change(&self, now: Ts) -> Option<Ts> {
        let core = self.last_core.map(|t| t + days(7)).filter(|t| *t > now);
        [self.events.next_change(), self.users.next_change(), self.features.next_change(), core]
            .into_iter()
            .fold(None, min_opt)
    }
}

/// One step of a ticket's history, kept to re-derive its state when events
/// arrive out of order.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct TicketStep {
    ts: Ts,
    seq: u64,
    action: TicketAction,
    priority: Option<Priority>,
}

/// A ticket's state derived from its steps in (ts, arrival) order (§1.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TicketState {
    pub open: bool,
    pub priority: Option<Priority>,
    pub escalated: bool,
    pub first_opened: Option<Ts>,
    pub first_response: Option<Ts>,
}

impl TicketState {
    fn derive<'a>(steps: impl IntoIterator<Item = &'a TicketStep>) -> Self {
        let mut s = TicketState::default();
        for step in steps {
            match step.action {
                TicketAction::Opened => {
                    s.open = true;
                    s.priority = step.priority.or(s.priority);
                    s.first_opened = Some(s.first_opened.map_or(step.ts, |t| t.min(step.ts)));
                }
                TicketAction::Reopened => {
                    s.open = true;
                    s.priority = step.priority.or(s.priority);
                }
                TicketAction::Escalated => {
                    s.escalated = true;
                    s.priority = step.priority.or(s.priority);
                }
                TicketAction::Resolved => {
                    s.open = false;
                    s.escalated = false;
                }
                TicketAction::FirstResponse => {
                    s.first_response = Some(s.first_response.map_or(step.ts, |t| t.min(step.ts)));
                }
                TicketAction::Csat => {}
            }
        }
        s
    }

    /// First-response time in µs, once both ends are known.
    pub fn first_response_time(&self) -> Option<(Ts, i64)> {
        Some((self.first_response?, self.first_response? - self.first_opened?))
    }

    /// When this ticket can breach its SLA: open, opened, unanswered, prioritised.
    fn sla_clock(&self) -> Option<(Ts, Priority)> {
        if self.open && self.first_response.is_none() { Some((self.first_opened?, self.priority?)) } else { None }
    }
}

/// One ticket: its steps in (ts, arrival) order and the state they give.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Ticket {
    steps: Vec<TicketStep>,
    state: TicketState,
}

/// Tickets of one account and the counters §3.1 reads.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Tickets {
    /// Ticket ids → their number in `tickets` (the id is stored once).
    index: FastMap<SmolStr, u32>,
    tickets: Vec<Ticket>,
    pub open: [u64; 4],
    pub open_total: u64,
    pub escalated_open: u64,
    /// The SLA clocks (open, opened, unanswered, prioritised tickets) not
    /// yet past their SLA, by the instant they pass it, and how many are
    /// past it: an advance pops what breaches, so no clock is counted twice.
    /// Kept for the configured SLAs, so not stored (`restore_clocks`).
    #[serde(skip)]
    sla_due: BTreeSet<(Ts, u32)>,
    #[serde(skip)]
    breached: u64,
    /// First-response times by (first-response ts, ticket number), while within 30 days.
    first_responses: BTreeMap<(Ts, u32), i64>,
    /// No first-response time leaves the 30-day window before this instant
    /// (a lower bound; `Ts::MIN` after a restore until the next advance), so
    /// most advances do not walk into the map.
    #[serde(skip, default = "unknown_due")]
    first_responses_due: Ts,
    /// Bumped whenever `first_responses` changes, so the scopes are only
    /// touched when there is something to move.
    first_responses_version: u64,
    csat: Window<Scores>,
}

impl Default for Tickets {
    fn default() -> Self {
        Tickets {
            index: FastMap::default(),
            tickets: Vec::new(),
            open: [0; 4],
            open_total: 0,
            escalated_open: 0,
            sla_due: BTreeSet::new(),
            breached: 0,
            first_responses: BTreeMap::new(),
            first_responses_due: Ts::MAX,
            first_responses_version: 0,
            csat: Window::new(days(90), None),
        }
    }
}

const FIRST_RESPONSE_WINDOW: i64 = days(30);

/// A due time not known yet: the next advance looks.
fn unknown_due() -> Ts {
    Ts::MIN
}

/// The instant an SLA clock passes its SLA (§14: strictly more than the SLA).
fn breach_at((opened, p): (Ts, Priority), cfg: &StateConfig) -> Ts {
    opened + cfg.sla[p.index()] + 1
}

impl Tickets {
    pub fn advance(&mut self, now: Ts, _cfg: &StateConfig) {
        self.csat.advance(now);
        while let Some(&(at, _)) = self.sla_due.first() {
            if at > now {
                break;
            }
            self.sla_due.pop_first();
            self.breached += 1;
        }
        if now < self.first_responses_due {
            return;
        }
        let floor = now - FIRST_RESPONSE_WINDOW;
        while let Some(entry) = self.first_responses.first_entry() {
            if entry.key().0 > floor {
                break;
            }
            entry.remove();
            self.first_responses_version += 1;
        }
        self.first_responses_due =
            self.first_responses.keys().next().map_or(Ts::MAX, |(t, _)| t + FIRST_RESPONSE_WINDOW);
    }

    /// Re-derives the SLA clocks after a restore (the SLAs may have changed).
    pub fn restore_clocks(&mut self, now: Ts, cfg: &StateConfig) {
        self.sla_due.clear();
        self.breached = 0;
        for k in 0..self.tickets.len() as u32 {
            if let Some(clock) = self.tickets[k as usize].state.sla_clock() {
                self.start_clock(k, clock, now, cfg);
            }
        }
    }

    fn start_clock(&mut self, key: u32, clock: (Ts, Priority), now: Ts, cfg: &StateConfig) {
        let at = breach_at(clock, cfg);
        if at <= now {
            self.breached += 1;
        } else {
            self.sla_due.insert((at, key));
        }
    }

    fn stop_clock(&mut self, key: u32, clock: (Ts, Priority), now: Ts, cfg: &StateConfig) {
        let at = breach_at(clock, cfg);
        if at <= now {
            self.breached -= 1;
        } else {
            self.sla_due.remove(&(at, key));
        }
    }

    /// The limit (§18) a ticket event at `ts` would exceed, if any: a
    /// ticket's lifecycle events beyond `max_events_per_ticket`, or one more
    /// open ticket than `max_open_tickets_per_account`. Changes nothing.
    pub fn limit_hit(&self, ev: &TicketEvent<'_>, ts: Ts, limits: &Limits) -> Option<LimitKind> {
        if ev.action == TicketAction::Csat {
            return None;
        }
        let ticket = self.index.get(&*ev.ticket_id).map(|&k| &self.tickets[k as usize]);
        let steps = ticket.map_or(&[][..], |t| &t.steps[..]);
        if steps.len() >= limits.max_events_per_ticket {
            return Some(LimitKind::TicketEvents);
        }
        let opens = matches!(ev.action, TicketAction::Opened | TicketAction::Reopened);
        if opens && self.open_total >= limits.max_open_tickets_per_account && !ticket.is_some_and(|t| t.state.open) {
            // The step would sort after every step at or before its ts
            // (it arrives last); would the ticket be open then?
            let step = TicketStep { ts, seq: u64::MAX, action: ev.action, priority: ev.priority };
            let at = steps.partition_point(|s| s.ts <= ts);
            if TicketState::derive(steps[..at].iter().chain([&step]).chain(&steps[at..])).open {
                return Some(LimitKind::OpenTickets);
            }
        }
        None
    }

    /// Applies a ticket event (the account advanced to `now` first).
    pub fn apply(&mut self, ev: &TicketEvent<'_>, ts: Ts, seq: u64, now: Ts, cfg: &StateConfig) {
        if ev.action == TicketAction::Csat {
            let score = ev.score.unwrap_or_default() as u64;
            self.csat.insert(ts, Scores { count: 1, sum: score });
            return;
        }
        let step = TicketStep { ts, seq, action: ev.action, priority: ev.priority };
        let id: &str = &ev.ticket_id;
        let key = match self.index.get(id) {
            Some(&k) => k,
            None => {
                let k = self.tickets.len() as u32;
                self.index.insert(SmolStr::new(id), k);
                self.tickets.push(Ticket::default());
                k
            }
        };
        let ticket = &mut self.tickets[key as usize];
        let at = ticket.steps.partition_point(|s| (s.ts, s.seq) <= (ts, seq));
        ticket.steps.insert(at, step);
        let new = TicketState::derive(&ticket.steps);
        let old = std::mem::replace(&mut ticket.state, new);
        if new == old {
            return;
        }
        self.count(&old, -1);
        self.count(&new, 1);
        if old.sla_clock() != new.sla_clock() {
            if let Some(clock) = old.sla_clock() {
                self.stop_clock(key, clock, now, cfg);
            }
            if let Some(clock) = new.sla_clock() {
                self.start_clock(key, clock, now, cfg);
            }
        }
        if old.first_response_time() != new.first_response_time() {
            self.first_responses_version += 1;
            if let Some((fr, _)) = old.first_response_time() {
                self.first_responses.remove(&(fr, key));
            }
            if let Some((fr, frt)) = new.first_response_time()
                && fr > now - FIRST_RESPONSE_WINDOW
            {
                self.first_responses.insert((fr, key), frt);
                self.first_responses_due = self.first_responses_due.min(fr + FIRST_RESPONSE_WINDOW);
            }
        }
    }

    fn count(&mut self, s: &TicketState, sign: i64) {
        if !s.open {
            return;
        }
        let add = |v: &mut u64| *v = v.wrapping_add_signed(sign);
        add(&mut self.open_total);
        if let Some(p) = s.priority {
            add(&mut self.open[p.index()]);
        }
        if s.escalated {
            add(&mut self.escalated_open);
        }
    }

    /// Open tickets past their SLA at the watermark the account was advanced to.
    pub fn sla_breached(&self, now: Ts, cfg: &StateConfig) -> u64 {
        debug_assert_eq!(
            self.breached,
            self.tickets.iter().filter_map(|t| t.state.sla_clock()).filter(|c| breach_at(*c, cfg) <= now).count()
                as u64,
            "breaches counted at {now}"
        );
        self.breached
    }

    pub fn csat(&self) -> Scores {
        self.csat.total()
    }

    pub fn first_responses_version(&self) -> u64 {
        self.first_responses_version
    }

    /// First-response times (µs) whose first response is within 30 days.
    pub fn first_response_times(&self) -> impl Iterator<Item = i64> + '_ {
        self.first_responses.values().copied()
    }

    fn next_change(&self) -> Option<Ts> {
        let breach = self.sla_due.first().map(|(at, _)| *at);
        // The bound kept by `advance` and `apply` (exact but for a first
        // response withdrawn since, which at worst wakes the account early),
        // so the map is not walked: its first leaf is rarely in cache.
        debug_assert!(
            self.first_responses_due
                <= self.first_responses.keys().next().map_or(Ts::MAX, |(t, _)| t + FIRST_RESPONSE_WINDOW)
        );
        let fr = (self.first_responses_due != Ts::MAX).then_some(self.first_responses_due);
        [self.csat.next_change(), breach, fr].into_iter().fold(None, min_opt)
    }
}

/// One revenue event as kept in the history.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct RevenueStep {
    ts: Ts,
    seq: u64,
    kind: RevenueKind,
    arr: i64,
}

/// Revenue history of one account, ordered by (ts, arrival) (§1.4, §3.2).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Revenue {
    history: Vec<RevenueStep>,
}

/// An account's share of a retention cohort (§3.2), in cents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CohortShare {
    pub start: i64,
    pub current: i64,
    pub capped: i64,
}

/// ARR movements of the quarter to date, positive magnitudes in cents
/// (128-bit: each event moves up to `MAX_ARR_CENTS`, events are unbounded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flows {
    pub expansion: i128,
    pub contraction: i128,
    pub churned: i128,
}

pub const T12M: i64 = days(365);

impl Revenue {
    pub fn record(&mut self, ts: Ts, seq: u64, kind: RevenueKind, arr: i64) {
        let at = self.history.partition_point(|s| (s.ts, s.seq) <= (ts, seq));
        self.history.insert(at, RevenueStep { ts, seq, kind, arr });
    }

    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    /// Whether an event has a ts at or after `s`.
    pub fn has_since(&self, s: Ts) -> bool {
        self.history.last().is_some_and(|step| step.ts >= s)
    }

    /// ARR now (every accepted event has ts <= now).
    pub fn arr(&self) -> i64 {
        self.history.last().map_or(0, |s| s.arr)
    }

    /// ARR at the last instant before `s`.
    pub fn arr_before(&self, s: Ts) -> i64 {
        let i = self.history.partition_point(|step| step.ts < s);
        if i == 0 { 0 } else { self.history[i - 1].arr }
    }

    pub fn cohort(&self, s: Ts) -> CohortShare {
        let start = self.arr_before(s);
        if start <= 0 {
            return CohortShare::default();
        }
        let current = self.arr();
        CohortShare { start, current, capped: current.min(start) }
    }

    /// Expansion, contraction and churn since `quarter_start`, each event
    /// measured against the previous one in (ts, arrival) order.
    pub fn flows(&self, quarter_start: Ts) -> Flows {
        let first = self.history.partition_point(|s| s.ts < quarter_start);
        let mut prev = if first == 0 { 0 } else { self.history[first - 1].arr };
        let mut f = Flows::default();
        for step in &self.history[first..] {
            match step.kind {
                RevenueKind::Expansion => f.expansion += (step.arr - prev).max(0) as i128,
                RevenueKind::Contraction => f.contraction += (prev - step.arr).max(0) as i128,
                RevenueKind::Churn => f.churned += prev as i128,
                RevenueKind::New | RevenueKind::Renewal => {}
            }
            prev = step.arr;
        }
        f
    }

    /// When the trailing-twelve-month cohort start next changes: the first
    /// event not yet before `now − 365d` crosses it just after `ts + 365d`.
    fn next_change(&self, now: Ts) -> Option<Ts> {
        let i = self.history.partition_point(|s| s.ts < now - T12M);
        self.history.get(i).map(|s| s.ts + T12M + 1)
    }
}

/// Everything known about one account.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Account {
    pub id: Arc<str>,
    pub info: Info,
    pub usage: Usage,
    pub tickets: Tickets,
    pub revenue: Revenue,
    /// Firing condition alerts of account scope: critical, warning.
    pub alerts: [u64; 2],
}

/// The §3.1 figures of an account at the watermark, before presentation.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    pub active_users_7d: u64,
    pub active_users_30d: u64,
    pub usage_events_7d: u64,
    pub usage_events_prev_7d: u64,
    pub features_30d: u64,
    pub open: [u64; 4],
    pub open_total: u64,
    pub escalated_open: u64,
    pub sla_breached: u64,
    pub csat: Scores,
    pub arr: i64,
    pub health: Health,
}

impl Metrics {
    pub fn drop_ratio(&self) -> f64 {
        if self.usage_events_prev_7d > 0 {
            1.0 - self.usage_events_7d as f64 / self.usage_events_prev_7d as f64
        } else {
            0.0
        }
    }

    pub fn csat_avg(&self) -> Option<f64> {
        (self.csat.count > 0).then(|| self.csat.sum as f64 / self.csat.count as f64)
    }

    pub fn tier(&self) -> Tier {
        self.health.tier
    }
}

impl Account {
    pub fn new(id: &str) -> Self {
        Account {
            id: Arc::from(id),
            info: Info::default(),
            usage: Usage::default(),
            tickets: Tickets::default(),
            revenue: Revenue::default(),
            alerts: [0; 2],
        }
    }

    /// Moves every window (and the SLA breach count) to `now`.
    pub fn advance(&mut self, now: Ts, cfg: &StateConfig, table: &mut FeatureTable) {
        self.usage.advance(now, table);
        self.tickets.advance(now, cfg);
    }

    pub fn metrics(&self, now: Ts, cfg: &StateConfig) -> Metrics {
        let u = &self.usage;
        let t = &self.tickets;
        let mut m = Metrics {
            active_users_7d: u.active_users_7d(),
            active_users_30d: u.active_users_30d(),
            usage_events_7d: u.events_7d(),
            usage_events_prev_7d: u.events_prev_7d(),
            features_30d: u.features_30d(),
            open: t.open,
            open_total: t.open_total,
            escalated_open: t.escalated_open,
            sla_breached: t.sla_breached(now, cfg),
            csat: t.csat(),
            arr: self.revenue.arr(),
            health: Health::default(),
        };
        m.health = Health::score(&m, self.info.seats, cfg);
        m
    }

    /// Whether the account used a core feature in the last 7 days.
    pub fn core_usage_7d(&self, now: Ts) -> bool {
        self.usage.last_core.is_some_and(|t| t > now - days(7))
    }

    /// The next instant after `now` at which a figure changes by time alone.
    pub fn next_change(&self, now: Ts) -> Option<Ts> {
        [self.usage.next_change(now), self.tickets.next_change(), self.revenue.next_change(now)]
            .into_iter()
            .fold(None, min_opt)
    }

    /// Whole days from `now`'s UTC date to the renewal date.
    pub fn days_to_renewal(&self, now: Ts) -> Option<i64> {
        self.info.days_to_renewal(now)
    }
}
