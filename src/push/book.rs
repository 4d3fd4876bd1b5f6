//! Change-driven ticks of CSM channels: a tick renders only the accounts of
//! a book whose record or rank changed since that topic's last tick, and
//! skips a book nothing in which changed (SPEC §6.4; what a tick costs
//! follows what changed, not how many accounts are watched).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{ChannelState, PushTopic, merge_diff, strip_nulls, take_sections};
use crate::state::snapshot::Snapshot;
use crate::time::{Ts, format_rfc3339, utc_day};

/// What one account looked like when a topic last ticked: its record's
/// version, its rank and its days to renewal (the two derived from `now`).
type Shown = (u64, usize, Option<i64>);

/// What a topic's last tick of one CSM channel was taken from.
#[derive(Debug, Default)]
struct TopicSeen {
    ticked: bool,
    book: Option<u64>,
    day: Option<i32>,
    now: Option<Ts>,
    kpis: Option<Arc<Value>>,
    accounts: HashMap<Arc<str>, Shown>,
}

/// Per topic, what a CSM channel's ticks were last taken from.
#[derive(Debug, Default)]
pub struct BookSeen {
    topics: [TopicSeen; 5],
}

/// What may have changed in a CSM channel since a topic's last tick.
#[derive(Debug)]
pub struct BookChanges {
    as_of: Value,
    /// The channel's `kpis`, when they may have changed.
    kpis: Option<Value>,
    /// Accounts whose object may have changed (new members included).
    accounts: Vec<(Arc<str>, Value)>,
    /// The book's members, when they may have changed (what else the
    /// channel holds left the book).
    members: Option<HashMap<Arc<str>, Shown>>,
}

impl BookSeen {
    /// The changes of `csm_id`'s channel for a tick of `topic` in
    /// `snapshot`, or `None` when nothing the topic could show changed.
    /// Records what it returns as shown (a tick that is then not applied
    /// costs a re-render later, never a missed change: the channel's data
    /// is compared before anything is sent).
    pub fn changes(&mut self, topic: PushTopic, snapshot: &Snapshot, csm_id: &str) -> Option<BookChanges> {
        let seen = &mut self.topics[topic as usize];
        let book = snapshot.book(csm_id);
        let kpis = snapshot.csm_scope(csm_id);
        let now = snapshot.now;
        let day = now.map(utc_day);
        let same_kpis = match (&seen.kpis, kpis) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let same_book = seen.book == book.map(|b| b.version) && seen.day == day;
        if seen.ticked && same_book && same_kpis && (topic != PushTopic::Health || seen.now == now) {
            return None;
        }
        let at = now.unwrap_or(0);
        let mut changes = BookChanges {
            as_of: now.map_or(Value::Null, |t| Value::String(format_rfc3339(t))),
            kpis: (!seen.ticked || !same_kpis).then(|| snapshot.csm_kpis(csm_id)),
            accounts: Vec::new(),
            members: None,
        };
        if !seen.ticked || !same_book {
            let order = snapshot.book_order(csm_id);
            let mut held = HashMap::with_capacity(order.len());
            for (i, r) in order.into_iter().enumerate() {
                let shown = (r.version, i + 1, r.days_to_renewal(at));
                if seen.accounts.get(&r.id) != Some(&shown) {
                    changes.accounts.push((r.id.clone(), r.object(Some(i + 1), at)));
                }
                held.insert(r.id.clone(), shown);
            }
            seen.accounts = held.clone();
            changes.members = Some(held);
        }
        seen.ticked = true;
        seen.book = book.map(|b| b.version);
        seen.day = day;
        seen.now = now;
        seen.kpis = kpis.cloned();
        Some(changes)
    }
}

impl ChannelState {
    /// A tick of `topic` on a CSM channel from what may have changed: the
    /// same message `tick` sends for the channel's whole data, made from
    /// the changed parts alone.
    pub fn tick_book(&mut self, topic: PushTopic, changes: &BookChanges) -> Option<Arc<str>> {
        let mut patch = Map::new();
        let Value::Object(data) = &mut self.published else { return None };
        if topic == PushTopic::Health {
            let old = data.get("as_of");
            if old != Some(&changes.as_of) && !(old.is_none() && changes.as_of.is_null()) {
                patch.insert("as_of".into(), changes.as_of.clone());
            }
            data.insert("as_of".into(), changes.as_of.clone());
        }
        if let Some(kpis) = &changes.kpis {
            let old = data.get("kpis").cloned().unwrap_or(Value::Null);
            let desired = take_sections(&old, kpis, topic);
            if let Some(p) = merge_diff(&old, &desired) {
                patch.insert("kpis".into(), p);
            }
            data.insert("kpis".into(), desired);
        }
        let mut accounts_patch = Map::new();
        let accounts = data.entry("accounts").or_insert_with(|| json!({}));
        if let Value::Object(accounts) = accounts {
            for (id, object) in &changes.accounts {
                match accounts.get_mut(&**id) {
                    Some(old) => {
                        let desired = take_sections(old, object, topic);
                        if let Some(p) = merge_diff(old, &desired) {
                            accounts_patch.insert(id.to_string(), p);
                        }
                        *old = desired;
                    }
                    // Membership belongs to health (§14).
                    None if topic == PushTopic::Health => {
                        accounts_patch.insert(id.to_string(), strip_nulls(object));
                        accounts.insert(id.to_string(), object.clone());
                    }
                    None => {}
                }
            }
            if topic == PushTopic::Health
                && let Some(members) = &changes.members
            {
                accounts.retain(|id, _| {
                    let held = members.contains_key(id.as_str());
                    if !held {
                        accounts_patch.insert(id.clone(), Value::Null);
                    }
                    held
                });
            }
        }
        if !accounts_patch.is_empty() {
            patch.insert("accounts".into(), Value::Object(accounts_patch));
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
