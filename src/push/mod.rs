//! The push hub's core (SPEC §6.3–§6.5), transport-free: per channel, the
//! copy every client holds after applying all messages so far, per-topic
//! updates as JSON Merge Patches (RFC 7386) that touch only what the topic
//! owns (§14), `seq` numbering shared by all subscribers, a bounded history
//! for resume, and `alert` messages. Messages are serialized once and shared
//! (`Arc<str>`) by every subscriber.
//!
//! The WebSocket layer (issue #4) drives it: it calls `tick` at each topic's
//! cadence with the channel's current data, `alert` as alerts happen, and
//! `subscribe` when a client joins.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Map, Value, json};

/// The update topics of §6.4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PushTopic {
    Health,
    Usage,
    Tickets,
    Revenue,
    Alerts,
}

impl PushTopic {
    pub const ALL: [PushTopic; 5] =
        [PushTopic::Health, PushTopic::Usage, PushTopic::Tickets, PushTopic::Revenue, PushTopic::Alerts];

    pub fn as_str(self) -> &'static str {
        match self {
            PushTopic::Health => "health",
            PushTopic::Usage => "usage",
            PushTopic::Tickets => "tickets",
            PushTopic::Revenue => "revenue",
            PushTopic::Alerts => "alerts",
        }
    }
}

/// The RFC 7386 patch turning `old` into `new`, or `None` when equal.
/// (A `null` in `new` is sent as a deletion: clients read a missing key as
/// null, §14.)
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov @ Value::Object(_)) if nv.is_object() => {
                        if let Some(p) = merge_diff(ov, nv) {
                            patch.insert(k.clone(), p);
                        }
                    }
                    None if nv.is_null() => {}
                    _ => {
                        patch.insert(k.clone(), strip_nulls(nv));
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) && !o[k].is_null() {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ if old == new => None,
        _ => Some(strip_nulls(new)),
    }
}

/// An object value as a patch can carry it: nulls inside are left out.
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect())
        }
        other => other.clone(),
    }
}

/// Applies an RFC 7386 merge patch (what clients do).
pub fn merge_apply(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_apply(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// One merge patch with the effect of applying `first`, then `second`, or
/// `None` when RFC 7386 cannot say it in one patch: where `first` replaces a
/// value by a non-object (or deletes it) and `second` then patches an object
/// into that place, one patch would merge into the client's old object
/// instead of starting from an empty one.
pub fn merge_compose(first: &Value, second: &Value) -> Option<Value> {
    match (first, second) {
        (Value::Object(a), Value::Object(b)) => {
            let mut out = a.clone();
            for (k, bv) in b {
                let composed = match a.get(k) {
                    Some(av) => merge_compose(av, bv)?,
                    None => bv.clone(),
                };
                out.insert(k.clone(), composed);
            }
            Some(Value::Object(out))
        }
        (_, Value::Object(_)) => None,
        (_, b) => Some(b.clone()),
    }
}

/// Sections of KPI and account objects, and which topic owns each.
fn section_owner(key: &str) -> Option<PushTopic> {
    Some(match key {
        "health" | "info" | "account_id" => PushTopic::Health,
        "usage" => PushTopic::Usage,
        "tickets" => PushTopic::Tickets,
        "revenue" => PushTopic::Revenue,
        "alerts" => PushTopic::Alerts,
        _ => return None,
    })
}

/// `published` with what `topic` owns taken from `current` (§14): sections
/// of KPI and account objects by name; map membership (accounts, segments,
/// regions, CSMs), `as_of`, `csm_id` and `health_histogram` by health;
/// `features` by usage. A key that appears comes with its whole object.
fn take_owned(published: &Value, current: &Value, topic: PushTopic) -> Value {
    let (Some(p), Some(c)) = (published.as_object(), current.as_object()) else { return current.clone() };
    let mut out = p.clone();
    for (k, cv) in c {
        let owner = match k.as_str() {
            "as_of" | "csm_id" | "health_histogram" => Some(PushTopic::Health),
            "features" => Some(PushTopic::Usage),
            _ => None,
        };
        match owner {
            Some(o) if o == topic => {
                out.insert(k.clone(), cv.clone());
            }
            Some(_) => {}
            None => match k.as_str() {
                "portfolio" | "kpis" | "unassigned" => {
                    out.insert(k.clone(), take_sections(p.get(k).unwrap_or(&Value::Null), cv, topic));
                }
                "segments" | "regions" | "csms" | "accounts" => {
                    out.insert(k.clone(), take_keyed(p.get(k).unwrap_or(&Value::Null), cv, topic));
                }
                _ => {
                    if topic == PushTopic::Health {
                        out.insert(k.clone(), cv.clone());
                    }
                }
            },
        }
    }
    if topic == PushTopic::Health {
        out.retain(|k, _| c.contains_key(k));
    }
    Value::Object(out)
}

/// A KPI or account object with `topic`'s sections from `current`.
fn take_sections(published: &Value, current: &Value, topic: PushTopic) -> Value {
    let Some(c) = current.as_object() else { return current.clone() };
    let Some(p) = published.as_object() else { return current.clone() };
    let mut out = p.clone();
    for (k, v) in c {
        if section_owner(k) == Some(topic) {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// A keyed map whose membership health owns, with `topic`'s sections taken
/// in the members that exist on both sides.
fn take_keyed(published: &Value, current: &Value, topic: PushTopic) -> Value {
    let empty = Map::new();
    let p = published.as_object().unwrap_or(&empty);
    let Some(c) = current.as_object() else { return current.clone() };
    let mut out = Map::new();
    for (k, pv) in p {
        match c.get(k) {
            Some(cv) => {
                out.insert(k.clone(), take_sections(pv, cv, topic));
            }
            None if topic != PushTopic::Health => {
                out.insert(k.clone(), pv.clone());
            }
            None => {}
        }
    }
    if topic == PushTopic::Health {
        for (k, cv) in c {
            if !p.contains_key(k) {
                out.insert(k.clone(), cv.clone());
            }
        }
    }
    Value::Object(out)
}

/// One channel's push state.
#[derive(Debug)]
pub struct ChannelState {
    name: String,
    /// Names this channel's sequence (§12): a `since` is honoured only
    /// within it; a dropped and recreated channel has a new one.
    epoch: u64,
    /// The seq of the last message sent on this channel.
    seq: u64,
    /// What every client holds after applying all messages so far.
    published: Value,
    /// The last `history_limit` messages, by seq.
    history: VecDeque<(u64, Arc<str>)>,
    history_limit: usize,
}

impl ChannelState {
    /// A channel starting from `data` (its first snapshot).
    pub fn new(name: impl Into<String>, data: Value, history_limit: usize) -> Self {
        ChannelState {
            name: name.into(),
            epoch: 0,
            seq: 0,
            published: data,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
        }
    }

    /// Numbers this channel's messages from `seq` on (see `PushService`:
    /// a restarted server starts above anything it sent before).
    pub fn starting_at(mut self, seq: u64) -> Self {
        self.seq = seq;
        self
    }

    /// Names this channel's sequence (see `PushService`: random per channel
    /// and creation).
    pub fn in_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The data a new subscriber starts from.
    pub fn snapshot(&self) -> &Value {
        &self.published
    }

    fn record(&mut self, mut message: Value) -> Arc<str> {
        self.seq += 1;
        message["seq"] = json!(self.seq);
        let text: Arc<str> = Arc::from(message.to_string());
        self.history.push_back((self.seq, text.clone()));
        while self.history.len() > self.history_limit {
            self.history.pop_front();
        }
        text
    }

    /// At a tick of `topic`: the update message, or `None` when nothing it
    /// owns changed.
    pub fn tick(&mut self, topic: PushTopic, current: &Value) -> Option<Arc<str>> {
        let desired = take_owned(&self.published, current, topic);
        let patch = merge_diff(&self.published, &desired)?;
        self.published = desired;
        let as_of = self.published.get("as_of").cloned().unwrap_or(Value::Null);
        Some(self.record(json!({
            "type": "update", "channel": self.name, "seq": 0,
            "topic": topic.as_str(), "as_of": as_of, "patch": patch,
        })))
    }

    /// An update that moves only the membership of the keyed map `key` (a
    /// book's `accounts`) to `current`: members gone are deleted, new ones
    /// come whole; `None` when the membership is the same. Membership
    /// belongs to `health` (§14); this is how a book's change is pushed at
    /// once instead of at the health cadence (§6.2 additions).
    pub fn membership(&mut self, key: &str, current: &Value) -> Option<Arc<str>> {
        let (Some(Value::Object(published)), Some(Value::Object(now))) = (self.published.get(key), current.get(key))
        else {
            return None;
        };
        let mut patch = Map::new();
        for k in published.keys().filter(|k| !now.contains_key(*k)) {
            patch.insert(k.clone(), Value::Null);
        }
        for (k, v) in now.iter().filter(|(k, _)| !published.contains_key(*k)) {
            patch.insert(k.clone(), strip_nulls(v));
        }
        if patch.is_empty() {
            return None;
        }
        let members = self.published[key].as_object_mut().expect("checked above");
        for k in patch.keys() {
            match now.get(k) {
                Some(whole) => members.insert(k.clone(), whole.clone()),
                None => members.remove(k),
            };
        }
        let as_of = self.published.get("as_of").cloned().unwrap_or(Value::Null);
        Some(self.record(json!({
            "type": "update", "channel": self.name, "seq": 0,
            "topic": PushTopic::Health.as_str(), "as_of": as_of, "patch": {key: patch},
        })))
    }

    /// An `alert` message on this channel.
    pub fn alert(&mut self, alert: &Value) -> Arc<str> {
        self.record(json!({"type": "alert", "channel": self.name, "seq": 0, "alert": alert}))
    }

    /// What a subscriber receives first: `subscribed`, then either the
    /// messages after `since` (if all are still kept and there are at most
    /// `max_replay` of them) or a snapshot.
    pub fn subscribe(&self, since: Option<u64>, max_replay: usize) -> Vec<Arc<str>> {
        self.subscribe_in(None, since, max_replay)
    }

    /// As `subscribe`, for a client that names the epoch its `since` is
    /// from: another epoch's `since` gets a snapshot. (Without it, a `since`
    /// outside this epoch's numbers gets one too: they start above every
    /// earlier epoch's on this instance.)
    pub fn subscribe_in(&self, epoch: Option<u64>, since: Option<u64>, max_replay: usize) -> Vec<Arc<str>> {
        let subscribed: Arc<str> = Arc::from(
            json!({"type": "subscribed", "channel": self.name, "seq": self.seq, "epoch": self.epoch}).to_string(),
        );
        if let Some(since) = since
            && epoch.is_none_or(|e| e == self.epoch)
            && since <= self.seq
        {
            let oldest_kept = self.history.front().map_or(self.seq + 1, |(s, _)| *s);
            if since + 1 >= oldest_kept && self.seq - since <= max_replay as u64 {
                let mut out = vec![subscribed];
                out.extend(self.history.iter().filter(|(s, _)| *s > since).map(|(_, m)| m.clone()));
                return out;
            }
        }
        let snapshot = json!({"type": "snapshot", "channel": self.name, "seq": self.seq, "data": self.published});
        vec![subscribed, Arc::from(snapshot.to_string())]
    }
}

pub mod book;
pub mod outbox;
pub mod server;

#[cfg(test)]
mod tests;
