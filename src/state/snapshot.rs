//! What readers see (SPEC §3, §6.2, §7): the state as of one publish
//! barrier, immutable and shared.
//!
//! The fold publishes a [`Snapshot`] at each barrier (see
//! `Engine::publish`); HTTP, WebSocket and exports read the latest one
//! without waiting for the fold. A snapshot shares everything that did not
//! change with the one before it: account records and rendered KPI objects
//! are reference-counted and held in persistent maps, so a barrier costs
//! what changed since the last one, not what exists.
//!
//! An account's figures are taken at the barrier's watermark, when it was
//! last refreshed: the fold refreshes every account whose figures time
//! alone changes (its wake-up), so a record taken then stays exact until
//! the account is refreshed again. The two figures that move with `now`
//! without a refresh (`days_to_renewal` and the book order that depends on
//! it) are derived at read time from the snapshot's `now`.

use std::cmp::Reverse;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use smol_str::SmolStr;

use super::account::{Account, Info, Metrics};
use super::health::Tier;
use super::view::{Channel, Facts, account_value, kpi};
use super::{FoldStats, Progress};
use crate::alert::Alert;
use crate::event::Topic;
use crate::exact::Exact;
use crate::metric::{ACCOUNT, insert_at};
use crate::state::window::FastMap;
use crate::time::{Ts, format_rfc3339};

/// One account as of a barrier: what its object (§3.1) shows.
#[derive(Clone, Debug)]
pub struct Record {
    /// The barrier it was taken at: a record with the same id and version
    /// is the same record (readers tell what changed by it).
    pub version: u64,
    /// The engine's slot of the account (see [`Snapshot::numbering`]).
    pub slot: u32,
    pub id: Arc<str>,
    pub info: Info,
    pub metrics: Metrics,
    pub last_activity: Option<Ts>,
    /// Firing condition alerts of account scope: critical, warning.
    pub alerts: [u64; 2],
    /// The features used in the last 30 days, sorted (the accounts list's
    /// `feature` filter: a feature row's accounts, §19); `None` for none.
    /// A thin pointer: the record stays as small as the list's walk wants.
    pub features: Option<Arc<Vec<Arc<str>>>>,
}

/// The priority key of §3.4: red renewing within 90 days, tier, score,
/// ARR descending, account id. Scores compare exactly (§4): equal scores
/// fall through to ARR and id.
pub type PriorityKey<'a> = (bool, Tier, &'a Exact, Reverse<i64>, &'a str);

impl Record {
    pub fn of(a: &Account, slot: u32, metrics: Metrics, version: u64, features: Vec<Arc<str>>) -> Record {
        Record {
            version,
            slot,
            id: a.id.clone(),
            info: a.info.clone(),
            metrics,
            last_activity: a.usage.last_activity,
            alerts: a.alerts,
            features: (!features.is_empty()).then(|| Arc::new(features)),
        }
    }

    /// Whether the account used `feature` in the last 30 days.
    pub fn used(&self, feature: &str) -> bool {
        self.features.as_ref().is_some_and(|fs| fs.binary_search_by(|f| (**f).cmp(feature)).is_ok())
    }

    pub fn days_to_renewal(&self, now: Ts) -> Option<i64> {
        self.info.days_to_renewal(now)
    }

    /// The account's place in the §3.4 order at `now` (unique: it ends with the id).
    pub fn priority_key(&self, now: Ts) -> PriorityKey<'_> {
        let m = &self.metrics;
        let renewing = m.tier() == Tier::Red && self.days_to_renewal(now).is_some_and(|d| (0..=90).contains(&d));
        (!renewing, m.tier(), &m.health.exact, Reverse(m.arr), &self.id)
    }

    fn facts(&self, now: Ts) -> Facts<'_> {
        Facts { info: &self.info, metrics: &self.metrics, last_activity: self.last_activity, alerts: self.alerts, now }
    }

    /// One figure of the account at `now` (from the catalogue).
    pub fn value(&self, id: crate::metric::AccountMetric, now: Ts) -> crate::metric::MetricValue {
        account_value(id, &self.facts(now))
    }

    /// The account object of §3.1 at `now`, with its rank in its book.
    pub fn object(&self, rank: Option<usize>, now: Ts) -> Value {
        let mut object = Map::new();
        object.insert("account_id".into(), json!(&*self.id));
        for name in SECTIONS {
            object.insert(name.into(), self.section(name, rank, now));
        }
        Value::Object(object)
    }

    /// One section of the account object (`info`, `usage`, `tickets`,
    /// `revenue`, `health`, `alerts`): its figures from the catalogue, and
    /// in `health` the account's `rank` in its book.
    pub fn section(&self, name: &str, rank: Option<usize>, now: Ts) -> Value {
        let facts = self.facts(now);
        let mut section = Map::new();
        for m in ACCOUNT {
            let (of, path) = m.section();
            if of == name {
                insert_at(&mut section, path, account_value(m.id, &facts).to_view(m.unit, true));
            }
        }
        if name == "health" {
            section.insert("rank".into(), json!(rank));
        }
        Value::Object(section)
    }
}

/// The sections of an account object, in the order it lists them.
pub const SECTIONS: [&str; 6] = ["info", "usage", "tickets", "revenue", "health", "alerts"];

fn instant(ts: Option<Ts>) -> Value {
    ts.map_or(Value::Null, |t| Value::String(format_rfc3339(t)))
}

/// A CSM's book: its accounts' records, in no particular order (the order
/// depends on `now`: see [`Snapshot::book_order`]).
#[derive(Clone, Debug)]
pub struct Book {
    /// The barrier it was taken at: a book whose version is unchanged has
    /// the same members with the same records.
    pub version: u64,
    pub members: Vec<Arc<Record>>,
}

/// A rendered JSON object of a snapshot (a KPI object, the features map)
/// and, once a reader asked for it, its JSON text: the REST answers of a
/// barrier write each object's text once, however many read it, and copy
/// it after that.
#[derive(Debug, Default)]
pub struct Rendered {
    value: Value,
    text: std::sync::OnceLock<Box<serde_json::value::RawValue>>,
}

impl Rendered {
    pub fn new(value: Value) -> Rendered {
        Rendered { value, text: std::sync::OnceLock::new() }
    }

    /// The object as JSON text (written on the first call).
    pub fn text(&self) -> &serde_json::value::RawValue {
        self.text.get_or_init(|| serde_json::value::to_raw_value(&self.value).expect("JSON values serialise"))
    }
}

impl std::ops::Deref for Rendered {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// Rendered KPI objects by scope name (only scopes holding accounts).
pub type Kpis = imbl::OrdMap<Arc<str>, Arc<Rendered>>;

/// The state as of one publish barrier.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Counts the barriers published by this process (0: none yet).
    pub barrier: u64,
    pub now: Option<Ts>,
    pub(super) accounts: imbl::HashMap<SmolStr, Arc<Record>>,
    /// Which engine numbered the slots (a restore numbers them anew): a
    /// slot of a record stays that account's while this is the same.
    pub(super) numbering: u64,
    /// Each slot's tier (`None`: no record yet), for readers that compare
    /// many accounts' tiers (SPEC §15 improvement rate) without a map
    /// lookup each.
    pub(super) tiers: Arc<Vec<Option<Tier>>>,
    pub(super) books: imbl::OrdMap<Arc<str>, Arc<Book>>,
    pub(super) portfolio: Arc<Rendered>,
    pub(super) unassigned: Arc<Rendered>,
    pub(super) segments: Kpis,
    pub(super) regions: Kpis,
    pub(super) csms: Kpis,
    /// The analyst channel's `features` map.
    pub(super) features: Arc<Rendered>,
    pub(super) histogram: [i64; 10],
    /// Condition alerts firing at the barrier.
    pub(super) alerts: Arc<[Alert]>,
    pub(super) positions: Arc<FastMap<(Topic, i32), Progress>>,
    pub(super) stats: Arc<FoldStats>,
}

impl Snapshot {
    fn as_of(&self) -> Value {
        instant(self.now)
    }

    fn at(&self) -> Ts {
        self.now.unwrap_or(0)
    }

    /// Per input partition: the position and lateness reference as of the
    /// barrier (consumer lag is measured against these, so a lag of 0
    /// means the snapshot holds everything consumed).
    pub fn partitions(&self) -> &FastMap<(Topic, i32), Progress> {
        &self.positions
    }

    pub fn stats(&self) -> &FoldStats {
        &self.stats
    }

    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Condition alerts firing at the barrier.
    pub fn firing_alerts(&self) -> &[Alert] {
        &self.alerts
    }

    pub fn record(&self, account_id: &str) -> Option<&Arc<Record>> {
        self.accounts.get(account_id)
    }

    /// The engine numbering of the slots in this snapshot's records.
    pub fn numbering(&self) -> u64 {
        self.numbering
    }

    /// The tier of the account in `slot` (of this snapshot's numbering).
    pub fn slot_tier(&self, slot: u32) -> Option<Tier> {
        self.tiers.get(slot as usize).copied().flatten()
    }

    /// Every account's record, in no order (a walk of the whole map is
    /// cheaper than as many lookups).
    pub fn records(&self) -> impl Iterator<Item = (&str, &Arc<Record>)> {
        self.accounts.iter().map(|(id, r)| (id.as_str(), r))
    }

    /// The book of `csm_id` (unordered), if it holds accounts.
    pub fn book(&self, csm_id: &str) -> Option<&Arc<Book>> {
        self.books.get(csm_id)
    }

    /// The CSMs with a book.
    pub fn csm_ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.books.keys()
    }

    /// A CSM's book in priority order (§3.4).
    pub fn book_order(&self, csm_id: &str) -> Vec<&Arc<Record>> {
        let Some(book) = self.books.get(csm_id) else { return Vec::new() };
        let now = self.at();
        let mut keyed: Vec<(PriorityKey<'_>, &Arc<Record>)> =
            book.members.iter().map(|r| (r.priority_key(now), r)).collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        keyed.into_iter().map(|(_, r)| r).collect()
    }

    /// The instant the snapshot's figures are as of (0 before any event).
    pub fn now_or_zero(&self) -> Ts {
        self.at()
    }

    fn rank_of(&self, r: &Record) -> Option<usize> {
        let csm = r.info.csm_id.as_deref()?;
        self.book_order(csm).iter().position(|x| x.id == r.id).map(|p| p + 1)
    }

    /// The account object of §3.1, or `None` for an unknown account.
    pub fn account_view(&self, account_id: &str) -> Option<Value> {
        let r = self.accounts.get(account_id)?;
        Some(r.object(self.rank_of(r), self.at()))
    }

    /// The account's `csm_id`, if the account exists (for access checks).
    pub fn account_owner(&self, account_id: &str) -> Option<Option<&str>> {
        Some(self.accounts.get(account_id)?.info.csm_id.as_deref())
    }

    pub fn portfolio(&self) -> &Arc<Rendered> {
        &self.portfolio
    }

    pub fn unassigned(&self) -> &Arc<Rendered> {
        &self.unassigned
    }

    pub fn segments(&self) -> &Kpis {
        &self.segments
    }

    pub fn regions(&self) -> &Kpis {
        &self.regions
    }

    pub fn csms(&self) -> &Kpis {
        &self.csms
    }

    /// The analyst channel's `features` map.
    pub fn features(&self) -> &Arc<Rendered> {
        &self.features
    }

    pub fn histogram(&self) -> [i64; 10] {
        self.histogram
    }

    /// The rendered KPI object of a CSM's scope, if it holds accounts.
    pub fn csm_scope(&self, csm_id: &str) -> Option<&Arc<Rendered>> {
        self.csms.get(csm_id)
    }

    /// The KPI object of a CSM's book (the empty scope's when it has none).
    pub fn csm_kpis(&self, csm_id: &str) -> Value {
        match self.csms.get(csm_id) {
            Some(k) => Value::clone(k),
            None => kpi(&super::scope::Scope::default()),
        }
    }

    /// A CSM channel's `accounts` map: each account object with its rank.
    pub fn book_objects(&self, csm_id: &str) -> Map<String, Value> {
        let now = self.at();
        self.book_order(csm_id)
            .into_iter()
            .enumerate()
            .map(|(rank, r)| (r.id.to_string(), r.object(Some(rank + 1), now)))
            .collect()
    }

    /// The data of a channel (§6.2).
    pub fn channel_view(&self, channel: &Channel) -> Value {
        serde_json::to_value(self.channel_data(channel, false)).expect("JSON values serialise")
    }

    /// Every view at once: the three shared channels, every CSM channel and
    /// every account object (what the property tests compare).
    pub fn all_views(&self) -> Value {
        let csm: Map<String, Value> =
            self.books.keys().map(|id| (id.to_string(), self.channel_view(&Channel::Csm(id.to_string())))).collect();
        let now = self.at();
        let accounts: Map<String, Value> =
            self.accounts.values().map(|r| (r.id.to_string(), r.object(self.rank_of(r), now))).collect();
        json!({
            "executive": self.channel_view(&Channel::Executive),
            "manager": self.channel_view(&Channel::Manager),
            "analyst": self.channel_view(&Channel::Analyst),
            "csm": csm,
            "accounts": accounts,
        })
    }
}

/// A rendered object as a channel's data carries it: as its JSON text
/// (REST) or as its value (push, which diffs values).
#[derive(Clone, Copy)]
struct Shown<'a> {
    object: &'a Rendered,
    text: bool,
}

impl serde::Serialize for Shown<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.text { self.object.text().serialize(s) } else { self.object.value.serialize(s) }
    }
}

/// A keyed KPI map serialised straight from the snapshot's objects.
struct KeyedRef<'a> {
    kpis: &'a Kpis,
    text: bool,
}

impl serde::Serialize for KeyedRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.kpis.iter().map(|(k, v)| (&**k, Shown { object: v, text: self.text })))
    }
}

/// The data of a channel, borrowed from the snapshot: written as JSON text
/// (REST) or made into a value (push) without copying the rendered objects
/// into one value first.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum ChannelData<'a> {
    Executive {
        as_of: Value,
        portfolio: Shown<'a>,
        segments: KeyedRef<'a>,
    },
    Manager {
        as_of: Value,
        csms: KeyedRef<'a>,
        unassigned: Shown<'a>,
    },
    Analyst {
        as_of: Value,
        portfolio: Shown<'a>,
        segments: KeyedRef<'a>,
        regions: KeyedRef<'a>,
        features: Shown<'a>,
        health_histogram: [i64; 10],
    },
    Csm {
        as_of: Value,
        csm_id: &'a str,
        kpis: Value,
        accounts: Map<String, Value>,
    },
}

impl Snapshot {
    /// `text`: rendered objects as their JSON text, else as values.
    fn channel_data<'a>(&'a self, channel: &'a Channel, text: bool) -> ChannelData<'a> {
        let shown = |object: &'a Arc<Rendered>| Shown { object, text };
        let keyed = |kpis: &'a Kpis| KeyedRef { kpis, text };
        match channel {
            Channel::Executive => ChannelData::Executive {
                as_of: self.as_of(),
                portfolio: shown(&self.portfolio),
                segments: keyed(&self.segments),
            },
            Channel::Manager => ChannelData::Manager {
                as_of: self.as_of(),
                csms: keyed(&self.csms),
                unassigned: shown(&self.unassigned),
            },
            Channel::Analyst => ChannelData::Analyst {
                as_of: self.as_of(),
                portfolio: shown(&self.portfolio),
                segments: keyed(&self.segments),
                regions: keyed(&self.regions),
                features: shown(&self.features),
                health_histogram: self.histogram,
            },
            Channel::Csm(id) => ChannelData::Csm {
                as_of: self.as_of(),
                csm_id: id,
                kpis: self.csm_kpis(id),
                accounts: self.book_objects(id),
            },
        }
    }

    /// The data of a channel as JSON text (what REST answers).
    pub fn channel_json(&self, channel: &Channel) -> String {
        serde_json::to_string(&self.channel_data(channel, true)).expect("JSON values serialise")
    }
}
