//! Cardinality limits (§18) through `Engine::fold`, and time-driven work
//! that follows what expires rather than what exists.

use serde_json::{Value, json};

use super::config::{Limits, OTHER_FEATURE};
use super::{Engine, Input, LimitKind, Outcome, StateConfig};
use crate::event::Topic;
use crate::event::decode::Reason;
use crate::time::{MICROS_PER_SEC, Ts, days, format_rfc3339, parse_rfc3339};

fn t0() -> Ts {
    parse_rfc3339("2026-03-02T00:00:00Z").unwrap()
}

/// An engine and the next offset of each partition it was fed.
struct Feed {
    engine: Engine,
    offsets: std::collections::HashMap<(Topic, i32), i64>,
}

impl Feed {
    fn new(limits: Limits) -> Self {
        let cfg = StateConfig { limits, rules: crate::alert::Rules::default(), ..StateConfig::default() };
        Feed { engine: Engine::new(cfg), offsets: Default::default() }
    }

    fn fold(&mut self, topic: Topic, partition: i32, body: Value) -> Outcome {
        let offset = self.offsets.entry((topic, partition)).or_default();
        let payload = serde_json::to_vec(&body).unwrap();
        let ts = parse_rfc3339(body["ts"].as_str().unwrap()).unwrap();
        let input = Input { topic, partition, offset: *offset, payload: &payload, wall: ts + days(1) };
        *offset += 1;
        self.engine.fold(&input)
    }

    fn usage(&mut self, id: &str, ts: Ts, account: &str, feature: &str) -> Outcome {
        let body = json!({"event_id": id, "ts": format_rfc3339(ts), "account_id": account,
            "user_id": format!("u-{id}"), "feature": feature});
        self.fold(Topic::Usage, 0, body)
    }

    fn ticket(&mut self, id: &str, ts: Ts, account: &str, ticket: &str, action: &str) -> Outcome {
        let body = json!({"event_id": id, "ts": format_rfc3339(ts), "account_id": account,
            "ticket_id": ticket, "action": action, "priority": "p3", "score": 4});
        self.fold(Topic::Tickets, 0, body)
    }

    fn upsert(&mut self, id: &str, ts: Ts, account: &str, partition: i32) -> Outcome {
        let body = json!({"event_id": id, "ts": format_rfc3339(ts), "account_id": account, "seats": 5});
        self.fold(Topic::Accounts, partition, body)
    }

    fn overflow(&self, kind: LimitKind) -> u64 {
        self.engine.stats().limit_overflow[kind.index()]
    }
}

fn is_limit(o: &Outcome) -> bool {
    matches!(o, Outcome::Rejected(r) if r.reason == Reason::Limit)
}

/// With `limits.max_features` raised to 200,000 and 100,000 features in use,
/// a watermark advance visits exactly the feature windows that expire, and
/// wakes only the accounts whose figures change; the slots expired are
/// reused, not grown.
#[test]
fn an_advance_visits_only_the_windows_that_expire() {
    let mut feed = Feed::new(Limits { max_features: 200_000, ..Limits::default() });
    const FEATURES: i64 = 100_000;
    const ACCOUNTS: i64 = 100;
    let events: Vec<Vec<u8>> = (0..FEATURES)
        .map(|i| {
            // Feature i is used once, at t0 + i s, by account i mod 100.
            serde_json::to_vec(&json!({"event_id": format!("u{i}"), "ts": format_rfc3339(t0() + i * MICROS_PER_SEC),
                "account_id": format!("acct-{}", i % ACCOUNTS), "user_id": format!("user-{i}"), "feature": format!("/page/{i}")}))
            .unwrap()
        })
        .collect();
    let inputs: Vec<Input<'_>> = events
        .iter()
        .enumerate()
        .map(|(i, p)| Input { topic: Topic::Usage, partition: 0, offset: i as i64, payload: p, wall: t0() + days(40) })
        .collect();
    feed.engine.fold_batch(&inputs, |_, o| assert_eq!(o, Outcome::Accepted));
    feed.offsets.insert((Topic::Usage, 0), FEATURES);
    assert_eq!(feed.engine.feature_count(), FEATURES as usize);
    let before = feed.engine.advance_stats();
    assert_eq!(before.feature_windows, 0, "nothing expired while the features came in");

    // Just past 30 days after the first 250 uses: those 250 leave the window.
    let expire = 250;
    let at = t0() + days(30) + (expire - 1) * MICROS_PER_SEC;
    assert_eq!(feed.upsert("a-1", at, "acct-0", 0), Outcome::Accepted);
    let after = feed.engine.advance_stats();
    assert_eq!(after.feature_windows - before.feature_windows, expire as u64, "visits = windows that expire");
    // The accounts whose figures time changed, each at most once per history
    // boundary the jump crossed (time advances to each, SPEC §15), and no other.
    let last = t0() + (FEATURES - 1) * MICROS_PER_SEC;
    let boundaries = (at - last) / StateConfig::default().resolution + 1;
    let woken = after.accounts_woken - before.accounts_woken;
    assert!(
        (ACCOUNTS as u64..=(ACCOUNTS * (boundaries + 1)) as u64).contains(&woken),
        "{woken} refreshes for {ACCOUNTS} accounts over {boundaries} boundaries"
    );
    assert_eq!(feed.engine.feature_count(), (FEATURES - expire) as usize);

    // A second advance of one µs expires one more: one visit, one account.
    assert_eq!(feed.upsert("a-2", at + MICROS_PER_SEC, "acct-1", 0), Outcome::Accepted);
    let again = feed.engine.advance_stats();
    assert_eq!(again.feature_windows - after.feature_windows, 1);
    assert_eq!(again.accounts_woken - after.accounts_woken, 1);

    // A new feature takes a released slot: the table does not grow.
    let slots = feed.engine.features.slots();
    assert_eq!(feed.usage("new", at + MICROS_PER_SEC, "acct-1", "/page/new"), Outcome::Accepted);
    assert_eq!(feed.engine.features.slots(), slots);
    let views = feed.engine.all_views();
    let features = views["analyst"]["features"].as_object().unwrap();
    assert_eq!(features.len() as i64, FEATURES - expire - 1 + 1);
    assert!(!features.contains_key("/page/0") && features.contains_key("/page/new"));
    assert_eq!(feed.overflow(LimitKind::Features), 0);
}

/// Beyond `limits.max_features` features in the window, further ones count
/// as `(other)` (per account and in the analyst map) and are counted as
/// overflows; once the window frees a slot, a new feature gets in again.
#[test]
fn features_beyond_the_limit_count_as_other() {
    let mut feed = Feed::new(Limits { max_features: 2, ..Limits::default() });
    let t = t0();
    for (i, f) in ["reports", "api", "/u/1", "/u/2", "reports"].iter().enumerate() {
        assert_eq!(feed.usage(&format!("e{i}"), t + i as i64, "acme", f), Outcome::Accepted);
    }
    assert_eq!(feed.usage("e9", t + 9, "beta", "/u/3"), Outcome::Accepted);
    let v = feed.engine.all_views();
    assert_eq!(
        v["analyst"]["features"],
        json!({
            "reports": {"accounts_30d": 1, "users_30d": 2},
            "api": {"accounts_30d": 1, "users_30d": 1},
            OTHER_FEATURE: {"accounts_30d": 2, "users_30d": 3},
        })
    );
    assert_eq!(v["accounts"]["acme"]["usage"]["features_30d"], json!(3));
    assert_eq!(v["accounts"]["beta"]["usage"]["features_30d"], json!(1));
    assert_eq!(feed.overflow(LimitKind::Features), 3);
    // 30 days after "api" was last used, its slot is free for a new feature.
    assert_eq!(feed.usage("late", t + days(30) + 1, "beta", "exports"), Outcome::Accepted);
    let v = feed.engine.all_views();
    assert!(v["analyst"]["features"].get("api").is_none());
    assert_eq!(v["analyst"]["features"]["exports"], json!({"accounts_30d": 1, "users_30d": 1}));
    assert_eq!(feed.overflow(LimitKind::Features), 3);
}

/// Accounts are limited per input partition: a further new account of a
/// full partition is `limit` (after `duplicate`), its id not registered; the
/// same account is welcome in another partition.
#[test]
fn new_accounts_beyond_a_partitions_limit_are_rejected() {
    let mut feed = Feed::new(Limits { max_accounts_per_partition: 2, ..Limits::default() });
    let t = t0();
    assert_eq!(feed.upsert("a", t, "a", 0), Outcome::Accepted);
    assert_eq!(feed.upsert("b", t + 1, "b", 0), Outcome::Accepted);
    let rejected = feed.upsert("c", t + 2, "c", 0);
    assert!(is_limit(&rejected), "{rejected:?}");
    let Outcome::Rejected(r) = &rejected else { unreachable!() };
    assert!(r.detail.contains("limits.max_accounts_per_partition"), "{}", r.detail);
    // A duplicate is a duplicate first.
    assert_eq!(feed.upsert("a", t + 3, "c", 0), Outcome::Duplicate);
    // Known accounts still come in; the new one does in partition 1.
    assert_eq!(feed.upsert("a2", t + 4, "a", 0), Outcome::Accepted);
    assert_eq!(feed.upsert("c", t + 5, "c", 1), Outcome::Accepted, "the rejected id was not registered");
    assert!(is_limit(&feed.upsert("c2", t + 6, "c", 0)), "partition 0 is still full");
    assert_eq!(feed.overflow(LimitKind::Accounts), 2);
    assert_eq!(feed.engine.stats().rejected[Reason::Limit.index()], 2);
    assert_eq!(feed.engine.account_count(), 3);
    assert_eq!(feed.engine.partitions()[&(Topic::Accounts, 0)].accounts, 2);
    // Rejected events move neither the watermark nor the partition's lateness reference.
    assert!(is_limit(&feed.upsert("c3", t + days(3), "d", 0)));
    assert_eq!(feed.engine.watermark(), Some(t + 5));
}

#[test]
fn open_tickets_and_ticket_events_beyond_their_limits_are_rejected() {
    let limits = Limits { max_open_tickets_per_account: 2, max_events_per_ticket: 3, ..Limits::default() };
    let mut feed = Feed::new(limits);
    let t = t0();
    assert_eq!(feed.ticket("o1", t, "acme", "T1", "opened"), Outcome::Accepted);
    assert_eq!(feed.ticket("o2", t + 1, "acme", "T2", "opened"), Outcome::Accepted);
    assert!(is_limit(&feed.ticket("o3", t + 2, "acme", "T3", "opened")), "a third open ticket");
    // Other accounts have their own limit; events that open nothing pass.
    assert_eq!(feed.ticket("b1", t + 3, "beta", "T3", "opened"), Outcome::Accepted);
    assert_eq!(feed.ticket("e1", t + 4, "acme", "T1", "escalated"), Outcome::Accepted);
    assert_eq!(feed.ticket("r2", t + 5, "acme", "T2", "resolved"), Outcome::Accepted);
    assert_eq!(feed.ticket("o3", t + 6, "acme", "T3", "opened"), Outcome::Accepted, "a ticket closed: room again");
    // T1 has 2 events; a third is fine, a fourth is `limit`; csat is not kept per ticket.
    assert_eq!(feed.ticket("f1", t + 7, "acme", "T1", "first_response"), Outcome::Accepted);
    assert!(is_limit(&feed.ticket("x1", t + 8, "acme", "T1", "resolved")));
    assert_eq!(feed.ticket("c1", t + 9, "acme", "T1", "csat"), Outcome::Accepted);
    assert_eq!(feed.overflow(LimitKind::OpenTickets), 1);
    assert_eq!(feed.overflow(LimitKind::TicketEvents), 1);
    let v = feed.engine.account_view("acme").unwrap();
    assert_eq!(v["tickets"]["open"], json!(2));
    assert_eq!(v["tickets"]["escalated_open"], json!(1));
}

/// A restored engine keeps the limits' state: admitted accounts per
/// partition, the features holding slots, the SLA clocks.
#[test]
fn limits_survive_a_checkpoint() {
    let limits = Limits { max_accounts_per_partition: 1, max_features: 1, ..Limits::default() };
    let mut feed = Feed::new(limits);
    let t = t0();
    assert_eq!(feed.usage("u1", t, "a", "reports"), Outcome::Accepted);
    assert_eq!(feed.ticket("t1", t + 1, "a", "T1", "opened"), Outcome::Accepted);
    let cfg = feed.engine.config().clone();
    feed.engine = Engine::decode(cfg, &feed.engine.encode()).unwrap();
    assert!(is_limit(&feed.usage("u2", t + 2, "b", "api")), "partition 0 of cs.usage is full");
    assert_eq!(feed.usage("u3", t + 3, "a", "api"), Outcome::Accepted);
    let v = feed.engine.all_views();
    assert_eq!(v["analyst"]["features"][OTHER_FEATURE], json!({"accounts_30d": 1, "users_30d": 1}));
    // p3's SLA (1440 min) passes a day later, restored clock and all.
    assert_eq!(feed.upsert("x", t + days(1) + 2, "a", 0), Outcome::Accepted);
    assert_eq!(feed.engine.account_view("a").unwrap()["tickets"]["sla_breached"], json!(1));
}
