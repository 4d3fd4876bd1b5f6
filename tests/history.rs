//! The history store (SPEC §15) against real databases: SQLite in a
//! temporary directory and PostgreSQL on 127.0.0.1:5432 (a database of the
//! test's own). The alert and tier logs the running engine writes, read back
//! through `GET /api/v1/accounts/{id}/history`, equal what an engine fed the
//! same events records; a restart neither loses nor repeats a row; a csm
//! sees only its own book's history.

mod common;

use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::auth::Role;
use cspulse::event::Topic;
use cspulse::state::log::{Cause, Row, account_object};
use cspulse::state::{Engine, Input};
use cspulse::time::{MICROS_PER_DAY, MICROS_PER_MIN, format_rfc3339, parse_rfc3339};
use serde_json::{Value, json};

/// Events of two accounts: acct-a active at t0, then silent while acct-b's
/// events move the watermark 10 days on (acct-a's usage leaves its windows:
/// tier changes caused by time), and an escalated P1 ticket on acct-a.
fn events() -> Vec<(Topic, String, Vec<u8>)> {
    let t0 = parse_rfc3339("2026-11-02T00:00:00Z").unwrap();
    let ts = |t: i64| format_rfc3339(t);
    let mut out: Vec<(Topic, String, Value)> = Vec::new();
    for (id, csm) in [("acct-a", "csm-1"), ("acct-b", "csm-2")] {
        out.push((
            Topic::Accounts,
            id.into(),
            json!({"event_id": format!("up-{id}"), "ts": ts(t0), "account_id": id, "name": id.to_uppercase(),
                "csm_id": csm, "segment": "smb", "region": "emea", "seats": 10, "renewal_date": "2027-03-01"}),
        ));
        out.push((
            Topic::Revenue,
            id.into(),
            json!({"event_id": format!("arr-{id}"), "ts": ts(t0 + 1), "account_id": id, "kind": "new", "arr": 50000}),
        ));
    }
    for i in 0..40i64 {
        out.push((
            Topic::Usage,
            "acct-a".into(),
            json!({"event_id": format!("u-a-{i}"), "ts": ts(t0 + 2 + i * MICROS_PER_MIN), "account_id": "acct-a",
                "user_id": format!("user-{}", i % 10), "feature": "api"}),
        ));
    }
    out.push((
        Topic::Tickets,
        "acct-a".into(),
        json!({"event_id": "t-a-1", "ts": ts(t0 + 3 * 3_600_000_000), "account_id": "acct-a", "ticket_id": "T1",
            "action": "opened", "priority": "p1"}),
    ));
    for d in 1..=10i64 {
        out.push((
            Topic::Usage,
            "acct-b".into(),
            json!({"event_id": format!("u-b-{d}"), "ts": ts(t0 + d * MICROS_PER_DAY), "account_id": "acct-b",
                "user_id": "user-b", "feature": "api"}),
        ));
    }
    // On its last day acct-b's seats all come in (its tier rises).
    for u in 0..9i64 {
        out.push((
            Topic::Usage,
            "acct-b".into(),
            json!({"event_id": format!("u-b-last-{u}"), "ts": ts(t0 + 10 * MICROS_PER_DAY - (u + 1) * MICROS_PER_MIN),
                "account_id": "acct-b", "user_id": format!("user-b{u}"), "feature": format!("f{u}")}),
        ));
    }
    out.sort_by_key(|(_, _, v)| parse_rfc3339(v["ts"].as_str().unwrap()).unwrap());
    out.into_iter().map(|(t, k, v)| (t, k, serde_json::to_vec(&v).unwrap())).collect()
}

/// What an engine fed `events` in order records for `account`: its tier
/// changes and alert transitions as the API shows them, the portfolio's KPI
/// object at each boundary, and the account's daily rows.
fn expected_rows(
    config: &cspulse::config::Config,
    events: &[(Topic, String, Vec<u8>)],
    account: &str,
) -> (Value, Value, std::collections::BTreeMap<i64, Value>, Value) {
    let mut engine = Engine::new(config.state_config());
    engine.set_history(true);
    let mut offsets = [0i64; 4];
    for (topic, _, payload) in events {
        let offset = &mut offsets[topic.index()];
        engine.fold(&Input { topic: *topic, partition: 0, offset: *offset, payload, wall: cspulse::time::wall_now() });
        *offset += 1;
        engine.post_alerts();
    }
    let mut tiers = Vec::new();
    let mut alerts = Vec::new();
    let (mut by_event, mut by_time) = (false, false);
    let mut portfolio = std::collections::BTreeMap::new();
    let mut days = Vec::new();
    for (_, row) in engine.history_pending(usize::MAX) {
        match row {
            Row::Account(r) if &*r.account_id == account => {
                let values: Vec<Value> = serde_json::from_str(&r.values).unwrap();
                days.push(json!({"at": format_rfc3339(r.at), "account": account_object(account, &values)}));
            }
            Row::Scope(r) if r.kind == cspulse::state::log::ScopeKind::Portfolio => {
                portfolio.insert(r.at, r.kpi());
            }
            Row::Tier(t) if &*t.account_id == account => {
                by_event |= matches!(t.cause, Cause::Event { .. });
                by_time |= t.cause == Cause::Time;
                let mut v = t.to_json();
                v.as_object_mut().unwrap().remove("account_id");
                tiers.push(v);
            }
            Row::Alert(a) if a.account.as_ref().is_some_and(|c| c.account_id == account) => alerts.push(a.to_json()),
            _ => {}
        }
    }
    assert!(by_event && by_time, "the scenario changes a tier by an event and by time: {tiers:#?}");
    assert!(!alerts.is_empty(), "the scenario raises alerts on {account}");
    (Value::Array(tiers), Value::Array(alerts), portfolio, Value::Array(days))
}

/// `schemas/<name>.schema.json`, with the alert schema it may refer to.
async fn history_of(app: &App, account: &str, token: &str) -> (u16, Value) {
    get(&format!("http://{}/api/v1/accounts/{account}/history", app.addr), Some(token)).await
}

/// The whole scenario against one store.
async fn scenario(store: &str) {
    let (_cluster, mut config) = cluster_and_config();
    let dir = tempfile::tempdir().unwrap();
    config.state.store = format!("file://{}", dir.path().join("state").display());
    config.history.store = store.to_owned();
    // The backlog folds in event-time order (SPEC §2 additions), as the
    // engine below is fed it.
    config.time.align_wait = "50ms".parse().unwrap();
    let target = |name: &str, metric: &str, scope: &str, op: &str, value: f64| cspulse::config::TargetConfig {
        name: name.into(),
        metric: metric.into(),
        scope: scope.into(),
        period: cspulse::time::CalendarPeriod::Month,
        op: op.into(),
        value,
    };
    config.targets = vec![
        target("ARR", "revenue.arr", "portfolio", ">=", 150_000.0),
        target("csm-1 at risk", "health.at_risk_share", "csm:csm-1", "<=", 0.5),
    ];
    let events = events();
    let (want_tiers, want_alerts, portfolio, want_days) = expected_rows(&config, &events, "acct-a");
    // A row at every day boundary crossed (t0 itself closes when the first
    // event after it comes); Nov 3's counts Nov 2's usage (40 events of 10
    // users).
    assert_eq!(want_days.as_array().unwrap().len(), 10, "Nov 2 to Nov 11: {want_days:#}");
    assert_eq!(want_days[1]["at"], "2026-11-03T00:00:00Z", "{want_days:#}");
    assert_eq!(want_days[1]["account"]["usage"]["events_day"], 40);
    assert_eq!(want_days[1]["account"]["usage"]["active_users_day"], 10);
    assert_eq!(want_days[2]["account"]["usage"]["events_day"], 0);

    let p = producer(&config.kafka.brokers);
    for (topic, key, payload) in &events {
        produce(&p, topic.default_name(), 0, key, payload).await;
    }
    let app = App::start(&config).await.expect("engine starts");
    let exec = token(Role::Executive, None);
    let last = std::sync::Mutex::new(Value::Null);
    let got = tokio::time::timeout(
        Duration::from_secs(30),
        wait_for("the history rows", Duration::from_secs(40), || async {
            let (status, body) = history_of(&app, "acct-a", &exec).await;
            *last.lock().unwrap() = body.clone();
            (status == 200
                && body["tier_changes"] == want_tiers
                && body["alerts"] == want_alerts
                && body["days"] == want_days)
                .then_some(body)
        }),
    )
    .await
    .unwrap_or_else(|_| {
        let last = last.lock().unwrap();
        panic!("the history API never showed\n{want_tiers:#}\n{want_alerts:#}\n{want_days:#}\nlast answer: {last:#}")
    });
    assert_eq!(got["account_id"], "acct-a");
    let errors: Vec<String> =
        schema("account-history").iter_errors(&got).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "the answer fits schemas/account-history.schema.json: {errors:#?}");
    let causes: Vec<&Value> = got["tier_changes"].as_array().unwrap().iter().map(|t| &t["cause"]).collect();
    assert!(causes.contains(&&json!({"time": true})), "{causes:?}");
    assert!(causes.iter().any(|c| c["topic"].is_string() && c["event_id"].is_string()), "{causes:?}");

    // A csm sees its own book's history, never another's (as if it did not exist).
    let (status, _) = history_of(&app, "acct-a", &token(Role::Csm, Some("csm-1"))).await;
    assert_eq!(status, 200);
    let (status, body) = history_of(&app, "acct-a", &token(Role::Csm, Some("csm-2"))).await;
    assert_eq!((status, &body["error"]), (404, &json!("not_found")));
    // The range is checked.
    let url = format!("http://{}/api/v1/accounts/acct-a/history?from=yesterday", app.addr);
    let (status, body) = get(&url, Some(&exec)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("from"), "{body}");
    // Only what lies in the range.
    let last = want_tiers.as_array().unwrap().last().unwrap()["ts"].as_str().unwrap().to_owned();
    let url = format!("http://{}/api/v1/accounts/acct-a/history?from={last}", app.addr);
    let (_, body) = get(&url, Some(&exec)).await;
    assert!(body["tier_changes"].as_array().unwrap().iter().all(|t| t["ts"].as_str().unwrap() >= last.as_str()));
    assert!(!body["tier_changes"].as_array().unwrap().is_empty());
    // The portfolio at every hour of the first two days, as the engine fed
    // the same events records it (the rows are all written by now: the
    // tier log came after the first days' boundaries).
    let (from, to) = ("2026-11-02T00:00:00Z", "2026-11-04T00:00:00Z");
    let url = format!("http://{}/api/v1/history/executive?from={from}&to={to}&step=1h", app.addr);
    let (status, body) = get(&url, Some(&exec)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["channel"], &body["step"]), (&json!("executive"), &json!("1h")));
    let errors: Vec<String> =
        schema("channel-history").iter_errors(&body).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "the answer fits schemas/channel-history.schema.json: {errors:#?}");
    let points = body["points"].as_array().unwrap();
    let hours: Vec<(&i64, &Value)> = portfolio
        .iter()
        .filter(|(at, _)| {
            **at % 3_600_000_000 == 0 && (parse_rfc3339(from).unwrap()..=parse_rfc3339(to).unwrap()).contains(*at)
        })
        .collect();
    assert_eq!(points.len(), hours.len(), "{body:#}");
    assert!(points.len() > 40, "two days of hours: {}", points.len());
    for (point, (at, kpi)) in points.iter().zip(hours) {
        assert_eq!(point["at"], format_rfc3339(*at));
        assert_eq!(&point["data"]["portfolio"], kpi, "at {}", format_rfc3339(*at));
        assert_eq!(point["data"]["segments"]["smb"]["health"]["accounts"], 2, "{point}");
    }
    // Fields restrict each KPI object; a csm reads its own channel's history only.
    let url = format!("http://{}/api/v1/history/csm:csm-1?from={from}&to={to}&step=1d&fields=revenue.arr", app.addr);
    let (status, body) = get(&url, Some(&token(Role::Csm, Some("csm-1")))).await;
    assert_eq!(status, 200, "{body}");
    // As of t0 the ARR event (t0 + 1 µs) is not in yet.
    assert_eq!(body["points"][0]["data"], json!({"kpis": {"revenue": {"arr": 0.0}}}), "{body}");
    assert_eq!(body["points"][1]["data"], json!({"kpis": {"revenue": {"arr": 50000.0}}}), "{body}");
    let (status, _) = get(&url, Some(&token(Role::Csm, Some("csm-2")))).await;
    assert_eq!(status, 403);
    let url = format!("http://{}/api/v1/history/executive?from=2026-01-01T00:00:00Z&to={to}&step=5m", app.addr);
    let (status, body) = get(&url, Some(&exec)).await;
    assert_eq!((status, &body["error"]), (400, &json!("too_many_points")), "{body}");
    let url = format!("http://{}/api/v1/history/executive?from={from}&fields=revenue.nope", app.addr);
    let (status, body) = get(&url, Some(&exec)).await;
    assert_eq!(status, 400, "{body}");

    compare_targets_and_csv(&app, &exec, &portfolio).await;

    let (_, ready) = get(&format!("http://{}/readyz", app.addr), Some(&exec)).await;
    assert_eq!(ready["history"]["enabled"], true);
    assert_eq!(ready["history"]["pending_rows"], 0, "{ready}");

    // A restart (final checkpoint, then restore) neither loses nor repeats a row.
    app.shutdown().await;
    let app = App::start(&config).await.expect("engine restarts");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, body) = history_of(&app, "acct-a", &exec).await;
    assert_eq!(status, 200);
    assert_eq!((&body["tier_changes"], &body["alerts"], &body["days"]), (&want_tiers, &want_alerts, &want_days));
    app.shutdown().await;
}

/// `compare`, `targets` and CSV answers over the scenario's history (the
/// watermark is at Nov 12, 00:00).
async fn compare_targets_and_csv(app: &App, exec: &str, portfolio: &std::collections::BTreeMap<i64, Value>) {
    let base = format!("http://{}/api/v1", app.addr);
    let (status, live) = get(&format!("{base}/channels/executive"), Some(exec)).await;
    assert_eq!(status, 200);
    // A week: now against the boundary at Nov 5, 00:00.
    let (status, body) = get(&format!("{base}/compare/executive?period=week"), Some(exec)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["now"], &body["then"]), (&json!("2026-11-12T00:00:00Z"), &json!("2026-11-05T00:00:00Z")));
    let errors: Vec<String> =
        schema("compare").iter_errors(&body).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "the answer fits schemas/compare.schema.json: {errors:#?}");
    let then = &portfolio[&parse_rfc3339("2026-11-05T00:00:00Z").unwrap()];
    for m in cspulse::metric::KPI {
        let at = |v: &Value| m.path.split('.').fold(v.clone(), |v, k| v[k].clone());
        let got = at(&body["data"]["portfolio"]);
        assert_eq!((&got["now"], &got["then"]), (&at(&live["portfolio"]), &at(then)), "{}", m.path);
        if let (Some(n), Some(t)) = (got["now"].as_f64(), got["then"].as_f64()) {
            assert!((got["change"].as_f64().unwrap() - (n - t)).abs() < 1e-6, "{}: {got}", m.path);
            if t != 0.0 {
                assert!((got["change_ratio"].as_f64().unwrap() - (n - t) / t).abs() < 1e-9, "{}: {got}", m.path);
            } else {
                assert_eq!(got["change_ratio"], Value::Null, "{}", m.path);
            }
        }
    }
    assert_eq!(body["data"]["segments"]["smb"]["revenue"]["arr"]["change"], 0.0, "{body}");
    // The improvement rate: of the accounts not green on Nov 5, the share
    // whose tier now is higher (red < yellow < green).
    let rank = |t: &Value| ["red", "yellow", "green"].iter().position(|x| t == x).unwrap();
    let (mut accounts, mut improved) = (0, 0);
    for id in ["acct-a", "acct-b"] {
        let (_, days) =
            get(&format!("{base}/accounts/{id}/history?from=2026-11-05T00:00:00Z&to=2026-11-05T00:00:00Z"), Some(exec))
                .await;
        let then = &days["days"][0]["account"]["health"]["tier"];
        let (_, account) = get(&format!("{base}/accounts/{id}"), Some(exec)).await;
        if then != "green" {
            accounts += 1;
            improved += u64::from(rank(&account["health"]["tier"]) > rank(then));
        }
    }
    let rate = &body["data"]["portfolio"]["health"]["improvement_rate"];
    assert_eq!((rate["accounts"].as_u64(), rate["improved"].as_u64()), (Some(accounts), Some(improved)), "{rate}");
    assert_eq!(improved, 1, "the scenario improves acct-b: {rate}");
    assert_eq!(rate["rate"].as_f64().unwrap(), improved as f64 / accounts as f64);
    // Fields restrict; a month back lies before the history: then is null.
    let (_, body) = get(&format!("{base}/compare/csm:csm-1?period=month&fields=revenue.arr"), Some(exec)).await;
    assert_eq!(body["then"], Value::Null, "{body}");
    assert_eq!(
        body["data"]["kpis"],
        json!({"revenue": {"arr": {"now": 50000.0, "then": null, "change": null, "change_ratio": null}}}),
        "{body}"
    );
    let (status, body) = get(&format!("{base}/compare/executive?period=fortnight"), Some(exec)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("fortnight"), "{body}");
    let csm2 = token(Role::Csm, Some("csm-2"));
    let (status, _) = get(&format!("{base}/compare/csm:csm-1?period=day"), Some(&csm2)).await;
    assert_eq!(status, 403);

    // Targets: the portfolio's ARR (100,000 against 150,000; no history at
    // the month's start, so the projection is the actual).
    let (status, body) = get(&format!("{base}/targets"), Some(exec)).await;
    assert_eq!(status, 200, "{body}");
    let errors: Vec<String> =
        schema("targets").iter_errors(&body).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "the answer fits schemas/targets.schema.json: {errors:#?}");
    let arr = &body["targets"][0];
    assert_eq!((&arr["name"], &arr["actual"], &arr["projected"]), (&json!("ARR"), &json!(100000.0), &json!(100000.0)));
    assert_eq!((&arr["status"], &arr["period_start"]), (&json!("off_track"), &json!("2026-11-01T00:00:00Z")));
    assert_eq!(arr["previous"]["actual"], Value::Null);
    assert_eq!(body["targets"].as_array().unwrap().len(), 2, "{body}");
    let (_, body) = get(&format!("{base}/targets"), Some(&csm2)).await;
    assert_eq!(body["targets"], json!([]), "a csm sees no other book's targets, nor the portfolio's: {body}");
    let (_, body) = get(&format!("{base}/targets"), Some(&token(Role::Csm, Some("csm-1")))).await;
    assert_eq!(body["targets"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["targets"][0]["scope"], "csm:csm-1");

    // CSV: one row per point and scope, one column per field.
    let csv = |url: String| async move {
        let res = reqwest::Client::new().get(url).bearer_auth(exec).header("accept", "text/csv").send().await.unwrap();
        assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
        res.text().await.unwrap()
    };
    let text = csv(format!(
        "{base}/history/executive?from=2026-11-03T00:00:00Z&to=2026-11-04T00:00:00Z&step=1d&fields=revenue.arr,health.accounts"
    ))
    .await;
    assert_eq!(
        text,
        "at,scope,id,health.accounts,revenue.arr\n\
         2026-11-03T00:00:00Z,portfolio,portfolio,2,100000.0\n\
         2026-11-03T00:00:00Z,segment,smb,2,100000.0\n\
         2026-11-04T00:00:00Z,portfolio,portfolio,2,100000.0\n\
         2026-11-04T00:00:00Z,segment,smb,2,100000.0\n"
    );
    let text = csv(format!("{base}/accounts/acct-a/history?from=2026-11-03T00:00:00Z&to=2026-11-03T00:00:00Z")).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("at,account_id,usage.events_day,usage.active_users_day,info.name,"), "{text}");
    assert!(lines[1].starts_with("2026-11-03T00:00:00Z,acct-a,40,10,ACCT-A,csm-1,smb,emea,10,2027-03-01,"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_alert_and_tier_logs() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&format!("sqlite://{}/nested/history.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_the_alert_and_tier_logs() {
    let db = fresh_postgres_database().await;
    scenario(&format!("postgres://postgres@127.0.0.1:5432/{db}")).await;
}

/// Retention (SPEC §15): 5-minute rows go first, then hourly ones, then
/// the daily rows, account rows and logs; each kind keeps its own span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_each_kind_of_row_for_its_span() {
    use cspulse::history::store::{HistoryStore, Retention};
    use cspulse::state::log::{AccountRow, ScopeKind, ScopeRow, TierChange};
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("history.db").display());
    let postgres = format!("postgres://postgres@127.0.0.1:5432/{}", fresh_postgres_database().await);
    let hour = 3_600_000_000i64;
    let now = parse_rfc3339("2026-11-30T00:00:00Z").unwrap();
    for spec in [sqlite, postgres] {
        let store = HistoryStore::open(&spec).await.unwrap();
        let mut rows = Vec::new();
        // Every 5 minutes over the last 10 days.
        for (n, at) in (now - 10 * 24 * hour..=now).step_by(5 * 60 * 1_000_000).enumerate() {
            let values: std::sync::Arc<[Option<f64>]> = vec![Some(1.0)].into();
            let row = ScopeRow { kind: ScopeKind::Portfolio, id: "portfolio".into(), at, values };
            rows.push((n as u64, Row::Scope(std::sync::Arc::new(row))));
        }
        for (i, day) in [9i64, 1].into_iter().enumerate() {
            let at = now - day * 24 * hour;
            rows.push((
                100_000 + i as u64,
                Row::Account(std::sync::Arc::new(AccountRow {
                    account_id: "a".into(),
                    at,
                    csm_id: None,
                    segment: "smb".into(),
                    region: "emea".into(),
                    tier: cspulse::state::health::Tier::Red,
                    values: "[0, 0]".into(),
                })),
            ));
            rows.push((
                200_000 + i as u64,
                Row::Tier(std::sync::Arc::new(TierChange {
                    account_id: "a".into(),
                    ts: at,
                    seq: i as u64,
                    from: None,
                    to: cspulse::state::health::Tier::Red,
                    score: 10.0,
                    cause: Cause::Time,
                })),
            ));
        }
        store.write(&rows).await.unwrap();
        // Fine rows for 2 days, hourly ones for 5, the rest for 8.
        let keep = Retention { fine: 2 * 24 * hour, hourly: 5 * 24 * hour, daily: 8 * 24 * hour };
        let deleted = store.prune(now, keep).await.unwrap();
        let store = &store;
        let at = |step: i64| async move {
            store.scope_rows(ScopeKind::Portfolio, None, (now - 10 * 24 * hour, now, step)).await.unwrap()
        };
        let fine: Vec<i64> = at(5 * 60 * 1_000_000).await.iter().map(|r| r.1).collect();
        let hourly: Vec<i64> = at(hour).await.iter().map(|r| r.1).collect();
        let daily: Vec<i64> = at(24 * hour).await.iter().map(|r| r.1).collect();
        assert_eq!(daily, (2..=8).rev().map(|d| now - d * 24 * hour).chain([now - 24 * hour, now]).collect::<Vec<_>>());
        assert_eq!(hourly.first(), Some(&(now - 8 * 24 * hour)), "{spec}");
        assert_eq!(hourly.iter().filter(|t| **t % (24 * hour) != 0).min(), Some(&(now - 5 * 24 * hour + hour)));
        assert_eq!(fine.iter().filter(|t| **t % hour != 0).min(), Some(&(now - 2 * 24 * hour + 5 * 60 * 1_000_000)));
        // Of 2,881 rows: fine ones older than 2 days, hourly ones older than
        // 5, midnights older than 8; one account row and one tier change.
        let (fine_gone, hourly_gone, daily_gone) = (8 * 24 * 11, 5 * 23, 2);
        assert_eq!(deleted, fine_gone + hourly_gone + daily_gone + 2, "{spec}");
        let days = store.account_days("a", i64::MIN, i64::MAX).await.unwrap();
        assert_eq!(days.iter().map(|d| d.0).collect::<Vec<_>>(), [now - 24 * hour]);
        let tiers = store.tier_changes("a", i64::MIN, i64::MAX).await.unwrap();
        assert_eq!(tiers.len(), 1);
        // Forever (0) keeps everything.
        let forever = Retention { fine: 0, hourly: 0, daily: 0 };
        assert_eq!(store.prune(now + 1000 * 24 * hour, forever).await.unwrap(), 0);
        // A rebuild's swap: the rows in [from, through] are the staged ones.
        store.begin_rebuild().await.unwrap();
        let staged = TierChange {
            account_id: "a".into(),
            ts: now - 12 * hour,
            seq: 9,
            from: None,
            to: cspulse::state::health::Tier::Green,
            score: 90.0,
            cause: Cause::Time,
        };
        store.write_staging(&[(0, Row::Tier(std::sync::Arc::new(staged)))]).await.unwrap();
        store.finish_rebuild(now - 2 * 24 * hour, now).await.unwrap();
        let tiers = store.tier_changes("a", i64::MIN, i64::MAX).await.unwrap();
        assert_eq!(tiers.iter().map(|t| t["to"].clone()).collect::<Vec<_>>(), [json!("green")], "{spec}");
        let rows = store.scope_rows(ScopeKind::Portfolio, None, (i64::MIN, i64::MAX, 1)).await.unwrap();
        assert!(rows.iter().all(|r| r.1 < now - 2 * 24 * hour), "the swapped range held no staged scope rows");
        assert!(!rows.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_off_answers_that_it_is_off() {
    let (_cluster, config) = cluster_and_config();
    assert_eq!(config.history.store, "off");
    let p = producer(&config.kafka.brokers);
    let (topic, key, payload) = &events()[0];
    produce(&p, topic.default_name(), 0, key, payload).await;
    let app = App::start(&config).await.expect("engine starts");
    let exec = token(Role::Executive, None);
    let (status, body) = wait_for("the account", Duration::from_secs(20), || async {
        let r = history_of(&app, "acct-a", &exec).await;
        (r.0 != 404).then_some(r)
    })
    .await;
    assert_eq!((status, &body["error"]), (503, &json!("history_off")), "{body}");
    app.shutdown().await;
}

/// A TCP proxy to PostgreSQL that can be cut (every connection dropped,
/// nothing accepted) and restored on the same port: a database outage.
struct Proxy {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    async fn start(port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("proxy port");
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                links.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Proxy { port, task: Some(task) }
    }

    /// Drops the listener and every connection through it.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// While the database is unreachable the fold goes on, the rows wait in the
/// history log (and in the checkpoint written at shutdown), `/readyz` says
/// the store is failing; once it is back, a restart writes every row, and
/// the history equals that of an uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_loses_nothing() {
    let db = fresh_postgres_database().await;
    let mut proxy = Proxy::start(0).await;
    let (_cluster, mut config) = cluster_and_config();
    let dir = tempfile::tempdir().unwrap();
    config.state.store = format!("file://{}", dir.path().join("state").display());
    config.history.store = format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port);
    // Beyond 5 rows of the logs in memory, they go to the spill file.
    let spill = dir.path().join("spill.jsonl");
    config.history.spill = spill.display().to_string();
    config.history.spill_after = 5;
    config.time.align_wait = "50ms".parse().unwrap();
    let events = events();
    let (want_tiers, want_alerts, _, want_days) = expected_rows(&config, &events, "acct-a");
    let split = events.len() / 2;
    let p = producer(&config.kafka.brokers);
    for (topic, key, payload) in &events[..split] {
        produce(&p, topic.default_name(), 0, key, payload).await;
    }
    let app = App::start(&config).await.expect("engine starts");
    let exec = token(Role::Executive, None);
    wait_for("the first rows committed", Duration::from_secs(20), || async {
        let (_, body) = history_of(&app, "acct-a", &exec).await;
        body["tier_changes"].as_array().is_some_and(|t| !t.is_empty()).then_some(())
    })
    .await;

    proxy.cut();
    for (topic, key, payload) in &events[split..] {
        produce(&p, topic.default_name(), 0, key, payload).await;
    }
    let ready = wait_for("the store reported failing", Duration::from_secs(30), || async {
        let (_, ready) = get(&format!("http://{}/readyz", app.addr), Some(&exec)).await;
        (ready["history"]["failing"] == true && ready["history"]["pending_rows"].as_u64() > Some(0)).then_some(ready)
    })
    .await;
    assert!(ready["history"]["error"].is_string(), "{ready}");
    let spilled = wait_for("rows spilled to the file", Duration::from_secs(20), || async {
        let lines = std::fs::read_to_string(&spill).map(|t| t.lines().count()).unwrap_or(0);
        (lines > 0).then_some(lines)
    })
    .await;
    let (_, ready) = get(&format!("http://{}/readyz", app.addr), Some(&exec)).await;
    let in_memory = ready["history"]["pending_rows"].as_u64().unwrap();
    assert!(spilled >= 10, "the outage's account rows and logs beyond 5 spill: {spilled} lines, {ready}");
    // The fold did not wait: the account shows the last event's effects.
    let (status, account) = get(&format!("http://{}/api/v1/accounts/acct-b", app.addr), Some(&exec)).await;
    assert_eq!(status, 200);
    assert_eq!(account["usage"]["last_activity"], "2026-11-12T00:00:00Z", "{account}");
    let (status, body) = history_of(&app, "acct-a", &exec).await;
    assert_eq!((status, &body["error"]), (503, &json!("history_unavailable")), "{body}");
    app.shutdown().await;

    let proxy = Proxy::start(proxy.port).await;
    let app = App::start(&config).await.expect("engine restarts with the database back");
    let got = wait_for("every row written", Duration::from_secs(30), || async {
        let (status, body) = history_of(&app, "acct-a", &exec).await;
        (status == 200
            && body["tier_changes"] == want_tiers
            && body["alerts"] == want_alerts
            && body["days"] == want_days)
            .then_some(body)
    })
    .await;
    assert!(!got["tier_changes"].as_array().unwrap().is_empty());
    assert!(in_memory > 0, "scope rows stayed in memory (and in the checkpoint)");
    wait_for("the spill file written and removed", Duration::from_secs(10), || async {
        (!spill.exists()).then_some(())
    })
    .await;
    app.shutdown().await;
    drop(proxy);
}

/// The rows of `store` that the API shows for acct-a (daily rows, tier
/// changes, alerts) and the portfolio's rows by boundary.
async fn stored(store: &cspulse::history::store::HistoryStore) -> (Value, Value, Value, Vec<(i64, Value)>) {
    let all = (i64::MIN, i64::MAX);
    let days: Vec<Value> = store
        .account_days("acct-a", all.0, all.1)
        .await
        .unwrap()
        .into_iter()
        .map(|(at, account)| json!({"at": format_rfc3339(at), "account": account}))
        .collect();
    let tiers = store.tier_changes("acct-a", all.0, all.1).await.unwrap();
    let alerts = store.account_alerts("acct-a", all.0, all.1).await.unwrap();
    let portfolio = store
        .scope_rows(cspulse::state::log::ScopeKind::Portfolio, None, (all.0, all.1, 1))
        .await
        .unwrap()
        .into_iter()
        .map(|(_, at, kpi)| (at, kpi))
        .collect();
    (Value::Array(days), Value::Array(tiers), Value::Array(alerts), portfolio)
}

/// `cspulse history …` with the test's broker, secret and store.
fn history_command(brokers: &str, store: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cspulse"))
        .arg("history")
        .args(args)
        .env("CSPULSE__KAFKA__BROKERS", brokers)
        .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
        .env("CSPULSE__HISTORY__STORE", store)
        .env("CSPULSE__LOG__LEVEL", "warn")
        .output()
        .expect("run cspulse history");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cspulse history {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `history rebuild` restates what was lost or changed from `--from` on (and
/// everything without it), beside the running engine; `history import`
/// writes the same history from a file of the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_and_import_restate_the_history() {
    use cspulse::history::store::HistoryStore;
    let (_cluster, mut config) = cluster_and_config();
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("sqlite://{}", dir.path().join("history.db").display());
    config.history.store = spec.clone();
    config.time.align_wait = "50ms".parse().unwrap();
    let events = events();
    let (want_tiers, want_alerts, portfolio, want_days) = expected_rows(&config, &events, "acct-a");
    let want_portfolio: Vec<(i64, Value)> = portfolio.into_iter().collect();
    let p = producer(&config.kafka.brokers);
    for (topic, key, payload) in &events {
        produce(&p, topic.default_name(), 0, key, payload).await;
    }
    let app = App::start(&config).await.expect("engine starts");
    let store = HistoryStore::open(&spec).await.unwrap();
    wait_for("the engine's history", Duration::from_secs(30), || async {
        let (days, tiers, alerts, rows) = stored(&store).await;
        (days == want_days && tiers == want_tiers && alerts == want_alerts && rows == want_portfolio).then_some(())
    })
    .await;

    // Damage: a day row before Nov 5 and one after, a boundary after it gone.
    let pool = sqlx::SqlitePool::connect(&spec).await.unwrap();
    let (nov4, nov8) = (parse_rfc3339("2026-11-04T00:00:00Z").unwrap(), parse_rfc3339("2026-11-08T00:00:00Z").unwrap());
    for at in [nov4, nov8] {
        sqlx::query("UPDATE account_rows SET vals = '[1, 1]' WHERE at = $1").bind(at).execute(&pool).await.unwrap();
    }
    sqlx::query("DELETE FROM scope_rows WHERE at = $1").bind(nov8 + 3_600_000_000).execute(&pool).await.unwrap();
    let damaged = stored(&store).await;
    assert_ne!(damaged.0, want_days);
    assert_eq!(damaged.3.len(), want_portfolio.len() - 1);

    let out = history_command(&config.kafka.brokers, &spec, &["rebuild", "--from", "2026-11-05T00:00:00Z"]);
    assert!(out.contains("history restated"), "{out}");
    let (days, tiers, alerts, rows) = stored(&store).await;
    assert_eq!((&tiers, &alerts), (&want_tiers, &want_alerts));
    assert_eq!(rows, want_portfolio, "the lost boundary is back");
    let at = |d: &Value, t: i64| d.as_array().unwrap().iter().find(|r| r["at"] == format_rfc3339(t)).cloned();
    assert_eq!(at(&days, nov8), at(&want_days, nov8), "restated after --from");
    assert_ne!(at(&days, nov4), at(&want_days, nov4), "before --from, untouched");
    // Without --from, everything; the running engine still serves.
    history_command(&config.kafka.brokers, &spec, &["rebuild"]);
    assert_eq!(
        stored(&store).await,
        (want_days.clone(), want_tiers.clone(), want_alerts.clone(), want_portfolio.clone())
    );
    let (status, _) =
        get(&format!("http://{}/api/v1/channels/executive", app.addr), Some(&token(Role::Executive, None))).await;
    assert_eq!(status, 200);
    app.shutdown().await;

    // Import: the same events from a file (a topic field added), into a new store.
    let file = dir.path().join("events.jsonl");
    let mut lines = String::new();
    for (topic, _, payload) in &events {
        let mut v: Value = serde_json::from_slice(payload).unwrap();
        v["topic"] = json!(topic.default_name());
        lines.push_str(&format!("{v}\n"));
    }
    std::fs::write(&file, lines).unwrap();
    let fresh = format!("sqlite://{}", dir.path().join("imported.db").display());
    let out = history_command(&config.kafka.brokers, &fresh, &["import", file.to_str().unwrap()]);
    assert!(out.contains(&format!("{} events folded", events.len())), "{out}");
    let imported = HistoryStore::open(&fresh).await.unwrap();
    assert_eq!(stored(&imported).await, (want_days, want_tiers, want_alerts, want_portfolio));
    // A bad line is named.
    std::fs::write(&file, "{\"event_id\": \"x\"}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cspulse"))
        .args(["history", "import", file.to_str().unwrap()])
        .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
        .env("CSPULSE__HISTORY__STORE", &fresh)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("events.jsonl:1") && err.contains("topic"), "{err}");
}
