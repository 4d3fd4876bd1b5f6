//! End-to-end tests of exact decisions (SPEC §4 addition): accounts whose
//! scores and ratios sit exactly on a threshold, folded through the engine.

use serde_json::{Value, json};

use super::{Engine, Input, Outcome, StateConfig};
use crate::alert::rules::{Rules, default_rules};
use crate::event::Topic;
use crate::time::{MICROS_PER_MIN, Ts, days, format_rfc3339, parse_rfc3339};

/// Folds hand-written events, one partition per topic, collecting alerts.
struct Feed {
    engine: Engine,
    offsets: [i64; 4],
    events: u64,
    alerts: Vec<Value>,
}

impl Feed {
    fn new(cfg: StateConfig) -> Feed {
        Feed { engine: Engine::new(cfg), offsets: [0; 4], events: 0, alerts: Vec::new() }
    }

    fn send(&mut self, topic: Topic, ts: Ts, account: &str, fields: Value) {
        self.events += 1;
        let mut body =
            json!({"event_id": format!("e-{}", self.events), "ts": format_rfc3339(ts), "account_id": account});
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        let payload = serde_json::to_vec(&body).unwrap();
        let offset = &mut self.offsets[topic.index()];
        let input = Input { topic, partition: 0, offset: *offset, payload: &payload, wall: ts };
        *offset += 1;
        assert_eq!(self.engine.fold(&input), Outcome::Accepted, "{body}");
        self.alerts.extend(self.engine.take_alerts().iter().map(|a| a.to_json()));
    }

    fn usage(&mut self, ts: Ts, account: &str, user: &str) {
        self.send(Topic::Usage, ts, account, json!({"user_id": user, "feature": "reports"}));
    }

    fn ticket(&mut self, ts: Ts, account: &str, fields: Value) {
        self.send(Topic::Tickets, ts, account, fields);
    }

    fn arr(&mut self, ts: Ts, account: &str, arr: f64) {
        self.send(Topic::Revenue, ts, account, json!({"kind": "new", "arr": arr}));
    }

    fn firing_now(&self, rule: &str, scope_id: &str) -> bool {
        self.engine.firing_alerts().any(|a| a.rule == rule && a.scope_id == scope_id)
    }
}

fn t0() -> Ts {
    parse_rfc3339("2026-03-10T12:00:00Z").unwrap()
}

/// The account of the report (adoption 1/6 of 100, engagement 100, support
/// 50, sentiment 1/12 of 100: exactly 40, 39.99999999999999 in floating
/// point) is yellow and its `account_red` never fires; an account scoring
/// exactly 40 in floating point too ranks by ARR against it (a tie).
#[test]
fn an_account_scoring_exactly_40_is_yellow_end_to_end() {
    let mut f = Feed::new(StateConfig::default());
    let t = t0();
    // beta: adoption 2/5, engagement 50·4/5, support 40, sentiment 40:
    // every component 40, so 40.0 in floating point as well.
    let upsert = |seats: u64| {
        json!({"name": "x", "csm_id": "csm-1", "segment": "smb", "region": "emea",
        "seats": seats, "renewal_date": "2027-12-31"})
    };
    f.send(Topic::Accounts, t - days(10), "beta", upsert(5));
    for i in 0..5 {
        f.usage(t - days(10) + i, "beta", "b1");
    }
    f.send(Topic::Accounts, t - days(1), "acme", upsert(6));
    for i in 0..4 {
        f.usage(t - 60 * MICROS_PER_MIN + i, "beta", if i == 0 { "b2" } else { "b1" });
    }
    for (i, s) in [5, 5, 1, 1, 1].into_iter().enumerate() {
        f.ticket(t - 50 * MICROS_PER_MIN, "beta", json!({"ticket_id": format!("S{i}"), "action": "csat", "score": s}));
    }
    for i in 0..2 {
        f.ticket(
            t - 40 * MICROS_PER_MIN,
            "beta",
            json!({"ticket_id": format!("B{i}"), "action": "opened", "priority": "p1"}),
        );
    }
    f.arr(t - 30 * MICROS_PER_MIN, "beta", 2000.0);
    f.arr(t - 30 * MICROS_PER_MIN, "acme", 1000.0);
    // acme: one of six seats active, usage only this week, one escalated
    // P1 (100 − 30 − 20), csat 1, 1, 2.
    f.usage(t - 20 * MICROS_PER_MIN, "acme", "a1");
    f.ticket(t - 20 * MICROS_PER_MIN, "acme", json!({"ticket_id": "T1", "action": "opened", "priority": "p1"}));
    f.ticket(t - 19 * MICROS_PER_MIN, "acme", json!({"ticket_id": "T1", "action": "escalated"}));
    for (i, s) in [1, 1, 2].into_iter().enumerate() {
        f.ticket(t - 10 * MICROS_PER_MIN, "acme", json!({"ticket_id": format!("C{i}"), "action": "csat", "score": s}));
    }
    // acme now scores exactly 40; later events evaluate it again.
    let settled = f.alerts.len();
    f.usage(t, "acme", "a1");
    f.usage(t + 60 * MICROS_PER_MIN, "acme", "a1");

    let acme = f.engine.account_view("acme").unwrap();
    assert_eq!(
        acme["health"]["components"],
        json!({"adoption": 16.7, "engagement": 100.0, "support": 50.0, "sentiment": 8.3})
    );
    assert_eq!((&acme["health"]["score"], &acme["health"]["tier"]), (&json!(40.0), &json!("yellow")), "{acme}");
    assert!(!f.firing_now("account_red", "acme"), "account_red is firing: {:?}", f.alerts);
    let later: Vec<&Value> = f.alerts[settled..].iter().filter(|a| a["rule"] == "account_red").collect();
    assert!(later.is_empty(), "{later:?}");
    assert!(f.firing_now("p1_ticket_open", "acme"), "the other rules still run");
    let beta = f.engine.account_view("beta").unwrap();
    assert_eq!((&beta["health"]["score"], &beta["health"]["tier"]), (&json!(40.0), &json!("yellow")), "{beta}");
    // Equal scores: ARR descending decides (beta's 2000 before acme's 1000).
    assert_eq!((&beta["health"]["rank"], &acme["health"]["rank"]), (&json!(1), &json!(2)));
    let views = f.engine.all_views();
    assert_eq!(views["analyst"]["health_histogram"], json!([0, 0, 0, 0, 2, 0, 0, 0, 0, 0]));
    assert_eq!(views["executive"]["portfolio"]["health"]["tiers"]["red"]["accounts"], json!(0));
}

/// Rule values exactly met: a drop ratio of exactly 0.45 (0.44999999999999996
/// in floating point) holds `>= 0.45`; an at-risk share of exactly 0.15 does
/// not hold the default `> 0.15` but holds `>= 0.15`; a score of exactly 40
/// holds `>= 40`.
#[test]
fn rule_values_met_exactly_decide_exactly() {
    let mut raw = default_rules();
    let rule = |name: &str, scope: &str, metric: &str, op: &str, value: Value| {
        json!({"name": name, "scope": scope, "severity": "warning",
            "when": [{"metric": metric, "op": op, "value": value}]})
    };
    raw.push(json!({"name": "drop_45", "scope": "account", "severity": "warning",
        "when": [{"metric": "usage.usage_events_prev_7d", "op": ">=", "value": 20},
                 {"metric": "usage.drop_ratio", "op": ">=", "value": 0.45}]}));
    raw.push(rule("share_15", "portfolio", "health.at_risk_share", ">=", json!(0.15)));
    raw.push(rule("at_least_40", "account", "health.score", ">=", json!(40)));
    let rules = Rules::parse(&raw, &Topic::ALL.map(|t| t.default_name().to_owned())).unwrap();
    let mut f = Feed::new(StateConfig { rules, ..StateConfig::default() });
    let t = t0();
    // d: 20 usage events last week, 11 this week.
    for i in 0..20 {
        f.usage(t - days(10) + i, "d", "u");
    }
    for i in 0..11 {
        f.usage(t - 60 * MICROS_PER_MIN + i, "d", "u");
    }
    // r: red (no usage, no tickets: 37) with 150 of 1000 ARR.
    f.arr(t - 30 * MICROS_PER_MIN, "r", 150.0);
    f.arr(t - 30 * MICROS_PER_MIN, "d", 850.0);
    // acme: exactly 40.
    f.send(Topic::Accounts, t - 25 * MICROS_PER_MIN, "acme", json!({"seats": 6}));
    f.usage(t - 20 * MICROS_PER_MIN, "acme", "a1");
    f.ticket(t - 20 * MICROS_PER_MIN, "acme", json!({"ticket_id": "T1", "action": "opened", "priority": "p1"}));
    f.ticket(t - 19 * MICROS_PER_MIN, "acme", json!({"ticket_id": "T1", "action": "escalated"}));
    for (i, s) in [1, 1, 2].into_iter().enumerate() {
        f.ticket(t - 10 * MICROS_PER_MIN, "acme", json!({"ticket_id": format!("C{i}"), "action": "csat", "score": s}));
    }

    let d = f.engine.account_view("d").unwrap();
    assert_eq!(d["usage"]["drop_ratio"], json!(1.0 - 11.0 / 20.0), "reported as before");
    assert!(f.firing_now("drop_45", "d"), "drop ratio exactly 0.45 holds >= 0.45: {:?}", f.alerts);
    assert!(!f.firing_now("usage_drop", "d"), "0.45 is not >= 0.5");
    let portfolio = &f.engine.all_views()["executive"]["portfolio"]["health"];
    assert_eq!(portfolio["at_risk_share"], json!(0.15));
    assert!(!f.firing_now("portfolio_at_risk", "portfolio"), "exactly 0.15 is not > 0.15");
    assert!(f.firing_now("share_15", "portfolio"), "exactly 0.15 is >= 0.15");
    assert!(f.firing_now("at_least_40", "acme"), "a score of exactly 40 is >= 40");
    assert!(!f.firing_now("account_red", "acme"));
    assert!(f.firing_now("account_red", "r"));
}

/// A hostile `arr` (1e17) is a `schema` error, so ARR sums stay within
/// 64-bit cents; QTD flows, which grow with the number of events, are summed
/// in 128 bits (see `scope::tests::qtd_flow_sums_do_not_overflow`).
#[test]
fn an_arr_beyond_the_maximum_is_a_schema_error() {
    let mut engine = Engine::new(StateConfig::default());
    let payload = br#"{"event_id":"r1","ts":"2026-03-10T12:00:00Z","account_id":"a","kind":"new","arr":1e17}"#;
    let wall = t0();
    let input = Input { topic: Topic::Revenue, partition: 0, offset: 0, payload, wall };
    match engine.fold(&input) {
        Outcome::Rejected(r) => {
            assert_eq!(r.reason, crate::event::decode::Reason::Schema);
            assert!(r.detail.starts_with("arr:"), "{r}");
        }
        other => panic!("accepted a hostile arr: {other:?}"),
    }
    let max = br#"{"event_id":"r2","ts":"2026-03-10T12:00:00Z","account_id":"a","kind":"new","arr":10000000000}"#;
    let input = Input { topic: Topic::Revenue, partition: 0, offset: 1, payload: max, wall };
    assert_eq!(engine.fold(&input), Outcome::Accepted);
}
