//! Change-driven ticks (SPEC §6.4): a tick of a topic renders and compares
//! only what changed since that topic's last tick on the channel, told by
//! identity in the published snapshot (rendered KPI objects by pointer,
//! account records and books by version), so what a tick costs follows
//! what changed, not how much is watched. [`ChannelState::tick_changes`]
//! then sends exactly the message the whole-data `tick` would.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{ChannelState, PushTopic, merge_diff, strip_nulls, take_sections};
use crate::state::snapshot::{Kpis, Rendered, Snapshot};
use crate::state::view::Channel;
use crate::time::{Ts, format_rfc3339, utc_day};

/// What one account looked like when a topic last ticked: its record's
/// version, its rank (health only: the rank is a health field) and its
/// days to renewal (derived from `now`).
type Shown = (u64, usize, Option<i64>);

/// What a topic's last tick of one channel was taken from.
#[derive(Debug, Default)]
struct TopicSeen {
    ticked: bool,
    now: Option<Ts>,
    day: Option<i32>,
    histogram: Option<[i64; 10]>,
    /// Rendered objects by key (portfolio, unassigned, kpis, features).
    objects: HashMap<&'static str, Option<Arc<Rendered>>>,
    /// Keyed KPI maps by key (segments, regions, csms).
    maps: HashMap<&'static str, Kpis>,
    book: Option<u64>,
    accounts: HashMap<Arc<str>, Shown>,
}

/// Per topic, what a channel's ticks were last taken from.
#[derive(Debug, Default)]
pub struct ChannelSeen {
    topics: [TopicSeen; 5],
}

/// A keyed map's changes: entries that may have changed (new ones
/// included) and, when membership may have changed, the members.
type MapChanges = (&'static str, Vec<(Arc<str>, Value)>, Option<HashSet<Arc<str>>>);

/// What may have changed in a channel since a topic's last tick.
#[derive(Debug, Default)]
pub struct Changes {
    /// Top-level values: `as_of`, `csm_id`, `health_histogram`,
    /// `features`, and the KPI objects `portfolio`, `unassigned`, `kpis`.
    top: Vec<(&'static str, Value)>,
    maps: Vec<MapChanges>,
}

/// What a tick of `topic` takes of a KPI or account object: all of it for
/// health (which owns membership: a new member comes whole), else the
/// topic's own section.
fn owned(v: &Value, topic: PushTopic) -> Value {
    if topic == PushTopic::Health {
        return v.clone();
    }
    let name = topic.as_str();
    let mut out = Map::new();
    if let Some(section) = v.get(name) {
        out.insert(name.to_owned(), section.clone());
    }
    Value::Object(out)
}

impl TopicSeen {
    fn object(
        &mut self,
        changes: &mut Changes,
        topic: PushTopic,
        key: &'static str,
        current: Option<&Arc<Rendered>>,
        render: impl Fn() -> Value,
    ) {
        let same = match (self.objects.get(key), current) {
            (Some(Some(a)), Some(b)) => Arc::ptr_eq(a, b),
            (Some(None), None) => true,
            _ => false,
        };
        if !same {
            let value = match current {
                Some(v) if key == "features" => Value::clone(v),
                Some(v) => owned(v, topic),
                None => owned(&render(), topic),
            };
            changes.top.push((key, value));
            self.objects.insert(key, current.cloned());
        }
    }

    fn kpi_map(&mut self, changes: &mut Changes, topic: PushTopic, key: &'static str, current: &Kpis) {
        let old = self.maps.get(key);
        if old.is_some_and(|old| old.ptr_eq(current)) {
            return;
        }
        let empty = Kpis::new();
        let old = old.unwrap_or(&empty);
        let mut changed = Vec::new();
        let mut joined = false;
        for (name, kpi) in current {
            match old.get(name) {
                Some(o) if Arc::ptr_eq(o, kpi) => {}
                o => {
                    joined |= o.is_none();
                    changed.push((name.clone(), owned(kpi, topic)));
                }
            }
        }
        let left = old.keys().any(|name| !current.contains_key(name));
        let members = (joined || left).then(|| current.keys().cloned().collect());
        if !changed.is_empty() || members.is_some() {
            changes.maps.push((key, changed, members));
        }
        self.maps.insert(key, current.clone());
    }

    fn book(&mut self, changes: &mut Changes, topic: PushTopic, snapshot: &Snapshot, csm_id: &str) {
        let book = snapshot.book(csm_id);
        let day = snapshot.now.map(utc_day);
        if self.ticked && self.book == book.map(|b| b.version) && self.day == day {
            return;
        }
        let at = snapshot.now.unwrap_or(0);
        let mut changed = Vec::new();
        let mut held = HashMap::with_capacity(book.map_or(0, |b| b.members.len()));
        if topic == PushTopic::Health {
            for (i, r) in snapshot.book_order(csm_id).into_iter().enumerate() {
                let shown = (r.version, i + 1, r.days_to_renewal(at));
                if self.accounts.get(&r.id) != Some(&shown) {
                    changed.push((r.id.clone(), r.object(Some(i + 1), at)));
                }
                held.insert(r.id.clone(), shown);
            }
        } else {
            // Other topics own no rank (a health field): no order needed,
            // and only their own section is rendered.
            for r in book.iter().flat_map(|b| &b.members) {
                let shown = (r.version, 0, r.days_to_renewal(at));
                if self.accounts.get(&r.id) != Some(&shown) {
                    let section = topic.as_str();
                    changed.push((r.id.clone(), json!({ section: r.section(section, None, at) })));
                }
                held.insert(r.id.clone(), shown);
            }
        }
        let members = (topic == PushTopic::Health).then(|| held.keys().cloned().collect());
        changes.maps.push(("accounts", changed, members));
        self.accounts = held;
        self.book = book.map(|b| b.version);
        self.day = day;
    }
}

impl ChannelSeen {
    /// What may have changed in `channel` for a tick of `topic` in
    /// `snapshot`, or `None` when nothing did. Records what it returns as
    /// shown: a tick that is then not applied costs a re-render later,
    /// never a missed change, because the channel's data is compared
    /// before anything is sent.
    pub fn changes(&mut self, topic: PushTopic, snapshot: &Snapshot, channel: &Channel) -> Option<Changes> {
        let seen = &mut self.topics[topic as usize];
        let mut changes = Changes::default();
        if topic == PushTopic::Health && (!seen.ticked || seen.now != snapshot.now) {
            changes.top.push(("as_of", snapshot.now.map_or(Value::Null, |t| Value::String(format_rfc3339(t)))));
        }
        seen.now = snapshot.now;
        let empty_kpi = || crate::state::view::kpi(&crate::state::scope::Scope::default());
        match channel {
            Channel::Executive => {
                seen.object(&mut changes, topic, "portfolio", Some(snapshot.portfolio()), empty_kpi);
                seen.kpi_map(&mut changes, topic, "segments", snapshot.segments());
            }
            Channel::Manager => {
                seen.kpi_map(&mut changes, topic, "csms", snapshot.csms());
                seen.object(&mut changes, topic, "unassigned", Some(snapshot.unassigned()), empty_kpi);
            }
            Channel::Analyst => {
                seen.object(&mut changes, topic, "portfolio", Some(snapshot.portfolio()), empty_kpi);
                seen.kpi_map(&mut changes, topic, "segments", snapshot.segments());
                seen.kpi_map(&mut changes, topic, "regions", snapshot.regions());
                seen.object(&mut changes, topic, "features", Some(snapshot.features()), || json!({}));
                let histogram = snapshot.histogram();
                if seen.histogram != Some(histogram) {
                    changes.top.push(("health_histogram", json!(histogram)));
                    seen.histogram = Some(histogram);
                }
            }
            Channel::Csm(id) => {
                if !seen.ticked {
                    changes.top.push(("csm_id", json!(id)));
                }
                seen.object(&mut changes, topic, "kpis", snapshot.csm_scope(id), empty_kpi);
                seen.book(&mut changes, topic, snapshot, id);
            }
        }
        seen.ticked = true;
        (!changes.top.is_empty() || changes.maps.iter().any(|(_, c, m)| !c.is_empty() || m.is_some()))
            .then_some(changes)
    }
}

/// Puts into `patch` what turns `data[key]` into `desired` (as
/// `merge_diff` of the whole data would), and stores it.
fn diff_into(patch: &mut Map<String, Value>, data: &mut Map<String, Value>, key: &str, desired: Value) {
    match data.get(key) {
        Some(old) if *old == desired => {}
        Some(old @ Value::Object(_)) if desired.is_object() => {
            if let Some(p) = merge_diff(old, &desired) {
                patch.insert(key.to_owned(), p);
            }
        }
        None if desired.is_null() => {}
        _ => {
            patch.insert(key.to_owned(), strip_nulls(&desired));
        }
    }
    data.insert(key.to_owned(), desired);
}

/// Moves `topic`'s sections of `current` into the KPI or account object
/// `old` in place, returning the patch that does it (what `merge_diff`
/// of `old` and `take_sections(old, current, topic)` gives, without
/// copying `old`).
fn sections_into(old: &mut Value, current: &Value, topic: PushTopic) -> Option<Value> {
    let (Value::Object(o), Value::Object(c)) = (&mut *old, current) else {
        let desired = take_sections(old, current, topic);
        let patch = merge_diff(old, &desired);
        *old = desired;
        return patch;
    };
    let mut patch = Map::new();
    for (k, v) in c {
        if super::section_owner(k) == Some(topic) {
            diff_into(&mut patch, o, k, v.clone());
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

impl ChannelState {
    /// A tick of `topic` from what may have changed: the message `tick`
    /// sends for the channel's whole data, made from the changed parts.
    pub fn tick_changes(&mut self, topic: PushTopic, changes: &Changes) -> Option<Arc<str>> {
        let mut patch = Map::new();
        let Value::Object(data) = &mut self.published else { return None };
        for (key, value) in &changes.top {
            let owner = match *key {
                "as_of" | "csm_id" | "health_histogram" => Some(PushTopic::Health),
                "features" => Some(PushTopic::Usage),
                _ => None,
            };
            match owner {
                Some(o) if o != topic => {}
                Some(_) => diff_into(&mut patch, data, key, value.clone()),
                None => match data.get_mut(*key) {
                    Some(old) => {
                        if let Some(p) = sections_into(old, value, topic) {
                            patch.insert((*key).to_owned(), p);
                        }
                    }
                    None => diff_into(&mut patch, data, key, value.clone()),
                },
            }
        }
        for (key, entries, members) in &changes.maps {
            let mut map_patch = Map::new();
            let map = data.entry(*key).or_insert_with(|| json!({}));
            let Value::Object(map) = map else { continue };
            for (id, value) in entries {
                match map.get_mut(&**id) {
                    Some(old) => {
                        if let Some(p) = sections_into(old, value, topic) {
                            map_patch.insert(id.to_string(), p);
                        }
                    }
                    // Membership belongs to health (§14).
                    None if topic == PushTopic::Health => {
                        map_patch.insert(id.to_string(), strip_nulls(value));
                        map.insert(id.to_string(), value.clone());
                    }
                    None => {}
                }
            }
            if topic == PushTopic::Health
                && let Some(members) = members
            {
                map.retain(|id, old| {
                    let held = members.contains(id.as_str());
                    if !held && !old.is_null() {
                        map_patch.insert(id.clone(), Value::Null);
                    }
                    held
                });
            }
            if !map_patch.is_empty() {
                patch.insert((*key).to_owned(), Value::Object(map_patch));
            }
        }
        if patch.is_empty() {
            return None;
        }
        let as_of = data.get("as_of").cloned().unwrap_or(Value::Null);
        Some(self.record(json!({
            "type": "update", "channel": self.name, "seq": 0,
            "topic": topic.as_str(), "as_of": as_of, "patch": patch,
        })))
    }
}
