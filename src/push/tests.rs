//! Clients that apply snapshots and patches end with the channel's data;
//! patches touch only what their topic owns; `seq` has no gaps; resume
//! replays exactly the missed messages.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::event::Topic;
use crate::state::view::Channel;
use crate::state::{Engine, Input, StateConfig};
use crate::time::{MICROS_PER_MIN, format_rfc3339, parse_rfc3339};

#[derive(Clone, Debug)]
enum Op {
    Fold {
        account: u8,
        kind: u8,
        n: u8,
        minutes: u16,
    },
    Tick(u8),
    /// A book change pushed at once (`ChannelState::membership`).
    Books,
    /// Client 1 drops its connection (keeps its copy and last seq).
    Drop,
    /// Client 1 comes back with `since` = its last seq.
    Resume,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0u8..6, any::<u8>(), 0u16..3000).prop_map(|(account, kind, n, minutes)| Op::Fold { account, kind, n, minutes }),
        4 => (0u8..5).prop_map(Op::Tick),
        2 => Just(Op::Books),
        1 => Just(Op::Drop),
        1 => Just(Op::Resume),
    ]
}

fn event(account: u8, kind: u8, n: u8, ts: i64, id: usize) -> (Topic, Value) {
    let a = format!("a{account}");
    let base = json!({"event_id": format!("e{id}"), "ts": format_rfc3339(ts), "account_id": a});
    let (topic, extra) = match kind {
        0 => (
            Topic::Accounts,
            json!({"csm_id": format!("c{}", n % 2), "segment": (["smb","ent","mid"][n as usize % 3]), "seats": n % 9}),
        ),
        1 | 2 => {
            (Topic::Usage, json!({"user_id": format!("u{}", n % 4), "feature": (["api","reports"][n as usize % 2])}))
        }
        3 => (
            Topic::Tickets,
            json!({"ticket_id": format!("T{}", n % 3), "action": (["opened","first_response","resolved","escalated"][n as usize % 4]), "priority": "p2"}),
        ),
        4 => (Topic::Tickets, json!({"ticket_id": "C", "action": "csat", "score": 1 + n % 5})),
        _ => (
            Topic::Revenue,
            json!({"kind": (["new","expansion","contraction","churn"][n as usize % 4]), "arr": (100 + n as u32)}),
        ),
    };
    let mut v = base;
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    (topic, v)
}

/// A client's view of a channel.
#[derive(Default)]
struct Client {
    copy: Value,
    seq: u64,
    connected: bool,
}

impl Client {
    fn receive(&mut self, text: &str) -> Result<(), String> {
        let m: Value = serde_json::from_str(text).unwrap();
        let seq = m["seq"].as_u64().unwrap();
        match m["type"].as_str().unwrap() {
            // A snapshot or the replayed messages follow and set the seq.
            "subscribed" => {}
            "snapshot" => {
                self.copy = m["data"].clone();
                self.seq = seq;
            }
            "update" | "alert" => {
                if seq != self.seq + 1 {
                    return Err(format!("gap: had {}, got {seq}", self.seq));
                }
                self.seq = seq;
                if m["type"] == "update" {
                    merge_apply(&mut self.copy, &m["patch"]);
                }
            }
            other => return Err(format!("unexpected {other}")),
        }
        Ok(())
    }
}

/// Equality where a missing key equals null (§14).
fn same_modulo_nulls(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .all(|k| same_modulo_nulls(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null)))
        }
        _ => a == b,
    }
}

/// A patch of `topic` may only touch what the topic owns (§14).
fn touches_only(patch: &Value, topic: PushTopic, path: &str) -> Result<(), String> {
    let Some(p) = patch.as_object() else { return Ok(()) };
    for (k, v) in p {
        let here = format!("{path}.{k}");
        let ok = match k.as_str() {
            "as_of" | "csm_id" | "health_histogram" => topic == PushTopic::Health,
            "features" => topic == PushTopic::Usage,
            "portfolio" | "kpis" | "unassigned" => sections_only(v, topic, &here).map(|_| true)?,
            "segments" | "regions" | "csms" | "accounts" => {
                for (member, mv) in v.as_object().into_iter().flatten() {
                    let appears_or_goes = mv.is_null()
                        || mv.get("health").is_some_and(|h| h.get("accounts").is_some() || h.get("tier").is_some())
                            && topic == PushTopic::Health;
                    if !appears_or_goes {
                        sections_only(mv, topic, &format!("{here}.{member}"))?;
                    }
                }
                true
            }
            _ => false,
        };
        if !ok {
            return Err(format!("{topic:?} patch touches {here}"));
        }
    }
    Ok(())
}

fn sections_only(v: &Value, topic: PushTopic, path: &str) -> Result<(), String> {
    for k in v.as_object().into_iter().flatten().map(|(k, _)| k) {
        if section_owner(k) != Some(topic) {
            return Err(format!("{topic:?} patch touches {path}.{k}"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn clients_converge_on_the_channel_data(ops in proptest::collection::vec(op(), 1..80), history in 1usize..12) {
        let mut engine = Engine::new(StateConfig::default());
        let channels = [Channel::Executive, Channel::Manager, Channel::Analyst, Channel::Csm("c1".into())];
        let mut hub: Vec<ChannelState> =
            channels.iter().map(|c| ChannelState::new(c.to_string(), engine.channel_view(c), history)).collect();
        // Every channel once more, ticked from what changed in published
        // snapshots (`push::book`): each must send exactly what the
        // whole-data tick sends.
        let mut by_changes: Vec<(ChannelState, book::ChannelSeen)> = channels
            .iter()
            .map(|c| (ChannelState::new(c.to_string(), engine.channel_view(c), history), book::ChannelSeen::default()))
            .collect();
        // Client 0 on every channel from the start; client 1 drops and resumes.
        let mut clients: Vec<[Client; 2]> = hub
            .iter()
            .map(|ch| {
                let mut pair = [Client::default(), Client::default()];
                for c in &mut pair {
                    for m in ch.subscribe(None, usize::MAX) {
                        c.receive(&m).unwrap();
                    }
                    c.connected = true;
                }
                pair
            })
            .collect();
        let mut ts = parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Fold { account, kind, n, minutes } => {
                    ts += *minutes as i64 * MICROS_PER_MIN;
                    let (topic, body) = event(*account, *kind, *n, ts, i);
                    let payload = serde_json::to_vec(&body).unwrap();
                    engine.fold(&Input { topic, partition: 0, offset: i as i64, payload: &payload, wall: ts });
                }
                Op::Tick(t) => {
                    let topic = PushTopic::ALL[*t as usize];
                    let published = engine.publish();
                    for (((ch, state), pair), (other, seen)) in channels.iter().zip(&mut hub).zip(&mut clients).zip(&mut by_changes) {
                        let sent = state.tick(topic, &engine.channel_view(ch));
                        let from_changes = seen.changes(topic, &published, ch).and_then(|c| other.tick_changes(topic, &c));
                        prop_assert_eq!(&sent, &from_changes, "{} {} tick from the changes", ch, topic.as_str());
                        if let Some(m) = sent {
                            let v: Value = serde_json::from_str(&m).unwrap();
                            touches_only(&v["patch"], topic, "").map_err(TestCaseError::fail)?;
                            prop_assert_eq!(&v["topic"], &json!(topic.as_str()));
                            for c in pair.iter_mut().filter(|c| c.connected) {
                                c.receive(&m).map_err(TestCaseError::fail)?;
                            }
                        }
                    }
                }
                Op::Books => {
                    for (ch, (other, _)) in channels.iter().zip(&mut by_changes) {
                        other.membership("accounts", &engine.channel_view(ch));
                    }
                    for ((ch, state), pair) in channels.iter().zip(&mut hub).zip(&mut clients) {
                        let now = engine.channel_view(ch);
                        if let Some(m) = state.membership("accounts", &now) {
                            let v: Value = serde_json::from_str(&m).unwrap();
                            touches_only(&v["patch"], PushTopic::Health, "").map_err(TestCaseError::fail)?;
                            for c in pair.iter_mut().filter(|c| c.connected) {
                                c.receive(&m).map_err(TestCaseError::fail)?;
                                let keys = |d: &Value| d["accounts"].as_object().map(|a| a.keys().cloned().collect::<Vec<_>>());
                                prop_assert_eq!(keys(&c.copy), keys(&now), "{} holds the book's members now", ch);
                            }
                        }
                    }
                }
                Op::Drop => clients.iter_mut().for_each(|p| p[1].connected = false),
                Op::Resume => {
                    for (state, pair) in hub.iter().zip(&mut clients) {
                        let c = &mut pair[1];
                        if !c.connected {
                            let msgs = state.subscribe(Some(c.seq), usize::MAX);
                            let replayed = msgs.len() - 1;
                            for m in &msgs {
                                c.receive(m).map_err(TestCaseError::fail)?;
                            }
                            prop_assert_eq!(c.seq, state.seq(), "caught up ({} replayed)", replayed);
                            c.connected = true;
                        }
                    }
                }
            }
        }
        // After a tick of every topic, every connected client holds the data.
        for topic in PushTopic::ALL {
            for ((ch, state), pair) in channels.iter().zip(&mut hub).zip(&mut clients) {
                if let Some(m) = state.tick(topic, &engine.channel_view(ch)) {
                    for c in pair.iter_mut().filter(|c| c.connected) {
                        c.receive(&m).map_err(TestCaseError::fail)?;
                    }
                }
            }
        }
        for ((ch, state), pair) in channels.iter().zip(&mut hub).zip(&clients) {
            let now = engine.channel_view(ch);
            prop_assert!(same_modulo_nulls(state.snapshot(), &now), "{ch} snapshot");
            for c in pair.iter().filter(|c| c.connected) {
                prop_assert!(same_modulo_nulls(&c.copy, &now), "{ch}: client copy differs\n{}\n{}", c.copy, now);
            }
            prop_assert!(state.tick(PushTopic::Health, &now).is_none(), "nothing is sent when nothing changed");
        }
    }
}

#[test]
fn merge_diff_round_trips_and_deletes() {
    let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]});
    let new = json!({"a": 1, "b": {"c": 5}, "e": [2], "f": {"g": null, "h": 1}});
    let patch = merge_diff(&old, &new).unwrap();
    assert_eq!(patch, json!({"b": {"c": 5, "d": null}, "e": [2], "f": {"h": 1}}));
    let mut client = old.clone();
    merge_apply(&mut client, &patch);
    assert!(same_modulo_nulls(&client, &new));
    assert_eq!(merge_diff(&new, &new), None);
}

#[test]
fn resume_replays_or_falls_back_to_a_snapshot() {
    let mut ch = ChannelState::new("executive", json!({"as_of": "t0", "portfolio": {"health": {"accounts": 0}}}), 2);
    for i in 1..=3 {
        ch.tick(PushTopic::Health, &json!({"as_of": format!("t{i}"), "portfolio": {"health": {"accounts": i}}}))
            .unwrap();
    }
    let kinds = |msgs: Vec<Arc<str>>| -> Vec<String> {
        msgs.iter().map(|m| serde_json::from_str::<Value>(m).unwrap()["type"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(kinds(ch.subscribe(Some(3), usize::MAX)), ["subscribed"], "up to date");
    assert_eq!(kinds(ch.subscribe(Some(1), usize::MAX)), ["subscribed", "update", "update"], "2 and 3 are kept");
    assert_eq!(kinds(ch.subscribe(Some(0), usize::MAX)), ["subscribed", "snapshot"], "1 is gone: snapshot");
    assert_eq!(kinds(ch.subscribe(Some(9), usize::MAX)), ["subscribed", "snapshot"], "from the future: snapshot");
    assert_eq!(kinds(ch.subscribe(Some(1), 1)), ["subscribed", "snapshot"], "more than max_replay: snapshot");
    let first: Value = serde_json::from_str(&ch.subscribe(None, usize::MAX)[1]).unwrap();
    assert_eq!(first["seq"], json!(3), "the snapshot carries the subscribed seq");

    // A restarted server numbers above its predecessor: an old `since` gets a snapshot.
    let restarted = ChannelState::new("executive", json!({"as_of": "t9"}), 2).starting_at(1_000_000);
    assert_eq!(kinds(restarted.subscribe(Some(3), usize::MAX)), ["subscribed", "snapshot"]);
}

#[test]
fn since_is_honoured_only_within_the_epoch() {
    let mut ch = ChannelState::new("manager", json!({"as_of": "t0"}), 10).starting_at(100).in_epoch(7);
    for i in 1..=3 {
        ch.tick(PushTopic::Health, &json!({"as_of": format!("t{i}")})).unwrap();
    }
    let kinds = |msgs: Vec<Arc<str>>| -> Vec<String> {
        msgs.iter().map(|m| serde_json::from_str::<Value>(m).unwrap()["type"].as_str().unwrap().to_owned()).collect()
    };
    let subscribed: Value = serde_json::from_str(&ch.subscribe(None, usize::MAX)[0]).unwrap();
    assert_eq!(subscribed, json!({"type": "subscribed", "channel": "manager", "seq": 103, "epoch": 7}));
    assert_eq!(kinds(ch.subscribe_in(Some(7), Some(101), usize::MAX)), ["subscribed", "update", "update"]);
    assert_eq!(kinds(ch.subscribe_in(None, Some(101), usize::MAX)), ["subscribed", "update", "update"]);
    assert_eq!(kinds(ch.subscribe_in(Some(8), Some(101), usize::MAX)), ["subscribed", "snapshot"], "another epoch");
    assert_eq!(kinds(ch.subscribe_in(None, Some(99), usize::MAX)), ["subscribed", "snapshot"], "below this epoch");
}

#[derive(Clone, Debug)]
enum SlowOp {
    Fold(Op),
    Tick(u8),
    Alert(u8),
    /// The slow client finally reads everything queued.
    Read,
}

fn slow_op() -> impl Strategy<Value = SlowOp> {
    prop_oneof![
        6 => (0u8..4, 0u8..6, any::<u8>(), 0u16..3000)
            .prop_map(|(account, kind, n, minutes)| SlowOp::Fold(Op::Fold { account, kind, n, minutes })),
        6 => (0u8..5).prop_map(SlowOp::Tick),
        1 => (0u8..4).prop_map(SlowOp::Alert),
        1 => Just(SlowOp::Read),
    ]
}

/// Applies what a slow client reads; folded updates make `seq` jump, but
/// it never goes back.
fn read_all(outbox: &outbox::Outbox, names: &[String], copies: &mut [Client]) -> Result<(), String> {
    for q in outbox.take_queued() {
        let m: Value = serde_json::from_str(&q.text).unwrap();
        let i = names.iter().position(|n| m["channel"] == json!(n)).unwrap();
        let c = &mut copies[i];
        let seq = m["seq"].as_u64().unwrap();
        match m["type"].as_str().unwrap() {
            "subscribed" => {}
            "snapshot" => {
                c.copy = m["data"].clone();
                c.seq = seq;
            }
            "update" | "alert" => {
                if seq <= c.seq {
                    return Err(format!("seq went back: had {}, got {seq}", c.seq));
                }
                c.seq = seq;
                if m["type"] == "update" {
                    merge_apply(&mut c.copy, &m["patch"]);
                }
            }
            other => return Err(format!("unexpected {other}")),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A client whose queue overflows gets older updates folded into later
    /// ones and still ends with exactly the channel data; it is only
    /// refused when nothing can be folded.
    #[test]
    fn a_slow_client_with_folded_updates_converges(ops in proptest::collection::vec(slow_op(), 1..200), capacity in 4usize..40) {
        let mut engine = Engine::new(StateConfig::default());
        let channels = [Channel::Executive, Channel::Manager, Channel::Analyst, Channel::Csm("c1".into())];
        let names: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
        let mut hub: Vec<ChannelState> =
            channels.iter().map(|c| ChannelState::new(c.to_string(), engine.channel_view(c), 1000)).collect();
        let outbox = outbox::Outbox::new(capacity);
        let mut copies: Vec<Client> = channels.iter().map(|_| Client::default()).collect();
        for (i, state) in hub.iter().enumerate() {
            for m in state.subscribe(None, usize::MAX) {
                outbox.push(outbox::Queued { text: m.as_ref().into(), kind: outbox::Kind::Barrier(i as u64) }).unwrap();
            }
            read_all(&outbox, &names, &mut copies).map_err(TestCaseError::fail)?;
        }
        let mut ts = parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
        let push = |text: Arc<str>, kind: outbox::Kind| outbox.push(outbox::Queued { text: text.as_ref().into(), kind });
        for (i, op) in ops.iter().enumerate() {
            let pushed = match op {
                SlowOp::Fold(Op::Fold { account, kind, n, minutes }) => {
                    ts += *minutes as i64 * MICROS_PER_MIN;
                    let (topic, body) = event(*account, *kind, *n, ts, i);
                    let payload = serde_json::to_vec(&body).unwrap();
                    engine.fold(&Input { topic, partition: 0, offset: i as i64, payload: &payload, wall: ts });
                    Ok(())
                }
                SlowOp::Fold(_) => unreachable!("only folds"),
                SlowOp::Tick(t) => {
                    let topic = PushTopic::ALL[*t as usize];
                    let mut r = Ok(());
                    for (c, (ch, state)) in channels.iter().zip(&mut hub).enumerate() {
                        if let Some(m) = state.tick(topic, &engine.channel_view(ch)) {
                            r = r.and(push(m, outbox::Kind::Update(c as u64, topic)));
                        }
                    }
                    r
                }
                SlowOp::Alert(c) => {
                    let m = hub[*c as usize].alert(&json!({"alert_id": format!("x{i}")}));
                    push(m, outbox::Kind::Alert(*c as u64))
                }
                SlowOp::Read => {
                    read_all(&outbox, &names, &mut copies).map_err(TestCaseError::fail)?;
                    Ok(())
                }
            };
            if pushed.is_err() {
                // Refused: only when no update in the queue could be folded.
                prop_assert!(outbox.is_slow());
                return Ok(());
            }
        }
        for topic in PushTopic::ALL {
            for (c, (ch, state)) in channels.iter().zip(&mut hub).enumerate() {
                if let Some(m) = state.tick(topic, &engine.channel_view(ch)) {
                    if push(m, outbox::Kind::Update(c as u64, topic)).is_err() {
                        prop_assert!(outbox.is_slow());
                        return Ok(());
                    }
                }
            }
        }
        read_all(&outbox, &names, &mut copies).map_err(TestCaseError::fail)?;
        for ((ch, state), c) in channels.iter().zip(&hub).zip(&copies) {
            let now = engine.channel_view(ch);
            prop_assert!(same_modulo_nulls(&c.copy, &now), "{ch}: slow client's copy differs\n{}\n{}", c.copy, now);
            prop_assert_eq!(c.seq, state.seq(), "{}: ends at the channel's seq", ch);
        }
    }
}

fn small_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![Just(Value::Null), (0i64..3).prop_map(|n| json!(n))];
    leaf.prop_recursive(3, 16, 3, |inner| {
        proptest::collection::btree_map(prop_oneof![Just("a"), Just("b"), Just("c")], inner, 0..3)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    })
}

proptest! {
    /// A composed patch does what its two parts do one after the other.
    #[test]
    fn merge_compose_equals_applying_both(target in small_json(), first in small_json(), second in small_json()) {
        if let Some(both) = merge_compose(&first, &second) {
            let mut one = target.clone();
            merge_apply(&mut one, &both);
            let mut two = target.clone();
            merge_apply(&mut two, &first);
            merge_apply(&mut two, &second);
            prop_assert_eq!(one, two);
        } else {
            prop_assert!(second.is_object() && !first.is_object() || first.is_object());
        }
    }
}
