//! Alert rules on the fold (SPEC §5): each default rule fires once when it
//! starts to hold, stays quiet while it holds, resolves with the same id;
//! time-driven rules fire when only the watermark moves; cooldowns and event
//! rules behave as specified.

use cspulse::alert::rules::{Rules, default_rules};
use cspulse::alert::{Alert, AlertState};
use cspulse::event::Topic;
use cspulse::state::{Engine, Input, StateConfig};
use cspulse::time::{MICROS_PER_MIN, Ts, days, format_rfc3339, parse_rfc3339};
use serde_json::{Value, json};

struct Harness {
    engine: Engine,
    offset: i64,
    n: u64,
}

fn t0() -> Ts {
    parse_rfc3339("2026-03-02T10:00:00Z").unwrap()
}

impl Harness {
    fn new() -> Self {
        Self::with(StateConfig::default())
    }

    fn with(cfg: StateConfig) -> Self {
        Harness { engine: Engine::new(cfg), offset: 0, n: 0 }
    }

    /// Folds one event and returns the alert transitions it caused.
    fn send(&mut self, topic: Topic, account: &str, ts: Ts, fields: Value) -> Vec<Alert> {
        self.n += 1;
        let mut body = json!({"event_id": format!("e{}", self.n), "ts": format_rfc3339(ts), "account_id": account});
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        let payload = serde_json::to_vec(&body).unwrap();
        self.offset += 1;
        let input = Input { topic, partition: 0, offset: self.offset, payload: &payload, wall: ts + days(1) };
        let outcome = self.engine.fold(&input);
        assert_eq!(outcome, cspulse::state::Outcome::Accepted, "{body}");
        self.engine.take_alerts()
    }

    /// Moves the watermark with an event on an unrelated account.
    fn tick(&mut self, ts: Ts) -> Vec<Alert> {
        self.send(Topic::Usage, "zz-clock", ts, json!({"user_id":"clock","feature":"ping"}))
            .into_iter()
            .filter(|a| a.scope_id != "zz-clock")
            .collect()
    }

    /// A green account: seats 1, one active user, usage balanced week over week.
    fn green(&mut self, account: &str, ts: Ts) {
        self.send(
            Topic::Accounts,
            account,
            ts,
            json!({"name": format!("{account} Inc"), "csm_id": "csm-1", "segment": "smb", "seats": 1}),
        );
        self.send(Topic::Usage, account, ts, json!({"user_id":"u1","feature":"reports"}));
        self.send(Topic::Tickets, account, ts, json!({"ticket_id":"c","action":"csat","score":5}));
        self.engine.take_alerts();
    }
}

fn only<'a>(alerts: &'a [Alert], rule: &str) -> Vec<&'a Alert> {
    alerts.iter().filter(|a| a.rule == rule).collect()
}

#[test]
fn account_red_fires_once_and_resolves_with_the_same_id() {
    let mut h = Harness::new();
    let fired =
        h.send(Topic::Accounts, "acme", t0(), json!({"name":"Acme Corp","csm_id":"csm-7","segment":"enterprise"}));
    let red = only(&fired, "account_red");
    assert_eq!(red.len(), 1, "an account with no data is red: {fired:?}");
    let firing = red[0].clone();
    assert_eq!(firing.state, AlertState::Firing);
    let j = firing.to_json();
    assert_eq!(j["scope"], json!("account"));
    assert_eq!(j["scope_id"], json!("acme"));
    assert_eq!(j["account_name"], json!("Acme Corp"));
    assert_eq!(j["csm_id"], json!("csm-7"));
    assert_eq!(j["segment"], json!("enterprise"));
    assert_eq!(j["values"], json!({"health.tier": "red"}));
    assert_eq!(j["ts"], j["started_at"]);
    assert_eq!(j["message"], json!("Acme Corp is red"));
    // Still red: nothing more.
    assert!(only(&h.send(Topic::Accounts, "acme", t0() + 1, json!({"region":"emea"})), "account_red").is_empty());
    // A perfect CSAT lifts it to yellow (45): resolved, same id.
    h.send(Topic::Accounts, "acme", t0() + 2, json!({"seats": 1}));
    let out = h.send(Topic::Tickets, "acme", t0() + 3, json!({"ticket_id":"c","action":"csat","score":5}));
    let resolved = only(&out, "account_red");
    assert_eq!(resolved.len(), 1, "{out:?}");
    assert_eq!(resolved[0].state, AlertState::Resolved);
    assert_eq!(resolved[0].alert_id, firing.alert_id);
    assert_eq!(resolved[0].started_at, firing.started_at);
    assert_eq!(h.engine.firing_alerts().filter(|a| a.rule == "account_red").count(), 0);
}

#[test]
fn red_renewal_90d_fires_when_only_the_watermark_crosses_into_90_days() {
    let mut h = Harness::new();
    let renewal = cspulse::time::format_date(cspulse::time::utc_day(t0()) + 95);
    let out = h.send(Topic::Accounts, "acme", t0(), json!({"name":"Acme","renewal_date": renewal}));
    assert!(only(&out, "red_renewal_90d").is_empty(), "95 days out");
    assert!(h.tick(t0() + days(4)).iter().all(|a| a.rule != "red_renewal_90d"), "91 days out");
    let out = h.tick(t0() + days(5));
    let fired = only(&out, "red_renewal_90d");
    assert_eq!(fired.len(), 1, "{out:?}");
    assert_eq!(fired[0].to_json()["values"], json!({"health.tier":"red","revenue.days_to_renewal":90.0,}));
    assert_eq!(fired[0].message, "Acme is red with renewal in 90 days");
    assert!(h.tick(t0() + days(6)).iter().all(|a| a.rule != "red_renewal_90d"), "keeps holding quietly");
    // Past the renewal date (negative days): resolves.
    let out = h.tick(t0() + days(96));
    assert_eq!(only(&out, "red_renewal_90d")[0].state, AlertState::Resolved);
}

#[test]
fn ticket_rules_fire_and_resolve() {
    let mut h = Harness::new();
    h.green("acme", t0());
    let out = h.send(Topic::Tickets, "acme", t0() + 1, json!({"ticket_id":"T1","action":"opened","priority":"p1"}));
    assert_eq!(only(&out, "p1_ticket_open").len(), 1);
    let out = h.send(Topic::Tickets, "acme", t0() + 2, json!({"ticket_id":"T1","action":"escalated"}));
    assert_eq!(only(&out, "escalation_open").len(), 1);
    assert!(only(&out, "p1_ticket_open").is_empty(), "still holding: quiet");
    let out = h.send(Topic::Tickets, "acme", t0() + 3, json!({"ticket_id":"T1","action":"resolved"}));
    assert_eq!(only(&out, "p1_ticket_open")[0].state, AlertState::Resolved);
    assert_eq!(only(&out, "escalation_open")[0].state, AlertState::Resolved);
}

#[test]
fn sla_breach_fires_when_time_passes_and_resolves_on_first_response() {
    let mut h = Harness::new();
    h.green("acme", t0());
    h.send(Topic::Tickets, "acme", t0(), json!({"ticket_id":"T2","action":"opened","priority":"p2"}));
    assert!(
        h.tick(t0() + 240 * MICROS_PER_MIN).iter().all(|a| a.rule != "first_response_sla_breach"),
        "exactly 240 min: not yet"
    );
    let out = h.tick(t0() + 240 * MICROS_PER_MIN + 1);
    assert_eq!(only(&out, "first_response_sla_breach").len(), 1, "{out:?}");
    let out = h.send(
        Topic::Tickets,
        "acme",
        t0() + 241 * MICROS_PER_MIN,
        json!({"ticket_id":"T2","action":"first_response"}),
    );
    assert_eq!(only(&out, "first_response_sla_breach")[0].state, AlertState::Resolved);
}

#[test]
fn usage_drop_fires_as_old_usage_ages_into_the_previous_week() {
    let mut h = Harness::new();
    h.send(Topic::Accounts, "acme", t0(), json!({"name":"Acme","seats":1}));
    for i in 0..20 {
        h.send(Topic::Usage, "acme", t0() + i, json!({"user_id":"u1","feature":"reports"}));
    }
    h.engine.take_alerts();
    // A week later the 20 events are last week's; this week has none.
    let out = h.tick(t0() + days(7) + 19);
    let drop = only(&out, "usage_drop");
    assert_eq!(drop.len(), 1, "{out:?}");
    assert_eq!(drop[0].to_json()["values"], json!({"usage.usage_events_prev_7d": 20.0, "usage.drop_ratio": 1.0}));
    // Two weeks on they have left both weeks: resolved.
    let out = h.tick(t0() + days(14) + 19);
    assert_eq!(only(&out, "usage_drop")[0].state, AlertState::Resolved);
}

#[test]
fn portfolio_at_risk_is_a_portfolio_scope_alert() {
    let mut h = Harness::new();
    h.green("good", t0());
    h.send(Topic::Revenue, "good", t0(), json!({"kind":"new","arr":100}));
    assert!(h.engine.take_alerts().iter().all(|a| a.rule != "portfolio_at_risk"));
    let out = h.send(Topic::Revenue, "bad", t0() + 1, json!({"kind":"new","arr":20}));
    let risk = only(&out, "portfolio_at_risk");
    assert_eq!(risk.len(), 1, "20/120 > 15%: {out:?}");
    let j = risk[0].to_json();
    assert_eq!((j["scope"].clone(), j["scope_id"].clone()), (json!("portfolio"), json!("portfolio")));
    assert!(j.get("account_id").is_none(), "no account fields outside account scope");
    let out = h.send(Topic::Revenue, "good", t0() + 2, json!({"kind":"expansion","arr":200}));
    assert_eq!(only(&out, "portfolio_at_risk")[0].state, AlertState::Resolved, "20/220 < 15%");
}

#[test]
fn event_rules_fire_once_per_matching_event() {
    let mut h = Harness::new();
    h.green("acme", t0());
    h.send(Topic::Revenue, "acme", t0(), json!({"kind":"new","arr":1000}));
    let out = h.send(Topic::Revenue, "acme", t0() + 1, json!({"kind":"contraction","arr":800}));
    let c = only(&out, "contraction");
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].state, c[0].started_at, c[0].ts), (AlertState::Fired, t0() + 1, t0() + 1));
    assert_eq!(c[0].to_json()["values"], json!({"kind":"contraction"}));
    let out = h.send(Topic::Revenue, "acme", t0() + 2, json!({"kind":"contraction","arr":700}));
    assert_eq!(only(&out, "contraction").len(), 1, "once per event");
    let out = h.send(Topic::Revenue, "acme", t0() + 3, json!({"kind":"churn"}));
    assert_eq!(only(&out, "churned").len(), 1);
    assert_eq!(h.engine.firing_alerts().filter(|a| a.rule == "churned").count(), 0, "event alerts never stay firing");
}

#[test]
fn cooldown_holds_off_refiring_in_event_time() {
    let mut raw = default_rules();
    raw.retain(|r| r["name"] == "p1_ticket_open");
    raw[0]["cooldown"] = json!("30m");
    let rules = Rules::parse(&raw, &Topic::ALL.map(|t| t.default_name().to_owned())).unwrap();
    let mut h = Harness::with(StateConfig { rules, ..StateConfig::default() });
    let open =
        |h: &mut Harness, t, a| h.send(Topic::Tickets, "acme", t, json!({"ticket_id":"T","action":a,"priority":"p1"}));
    assert_eq!(open(&mut h, t0(), "opened").len(), 1);
    assert_eq!(open(&mut h, t0() + MICROS_PER_MIN, "resolved")[0].state, AlertState::Resolved);
    assert!(open(&mut h, t0() + 2 * MICROS_PER_MIN, "reopened").is_empty(), "cooldown: holds but stays quiet");
    // The cooldown ends 30 min after the resolve; the watermark alone re-fires it.
    assert!(h.tick(t0() + 31 * MICROS_PER_MIN - 1).is_empty());
    let out = h.tick(t0() + 31 * MICROS_PER_MIN);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].state, out[0].started_at), (AlertState::Firing, t0() + 31 * MICROS_PER_MIN));
}

#[test]
fn account_alert_counts_flow_into_every_scope() {
    let mut h = Harness::new();
    h.send(Topic::Accounts, "acme", t0(), json!({"csm_id":"csm-7","segment":"smb"}));
    h.send(Topic::Tickets, "acme", t0() + 1, json!({"ticket_id":"T","action":"opened","priority":"p1"}));
    let acct = h.engine.account_view("acme").unwrap();
    assert_eq!(acct["alerts"], json!({"critical": 2, "warning": 0}), "account_red + p1_ticket_open");
    let mgr = h.engine.channel_view(&cspulse::state::view::Channel::Manager);
    assert_eq!(mgr["csms"]["csm-7"]["alerts"], json!({"critical": 2, "warning": 0}));
}
