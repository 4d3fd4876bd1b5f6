//! A scripted portfolio produced to the mock cluster, folded by the running
//! engine, and read back over REST against hand-computed figures.

mod common;

use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::auth::Role;
use serde_json::{Value, json};

const NOW: &str = "2026-11-20T12:00:00Z";

/// (topic, account, payload). Partitions follow the account.
fn script() -> Vec<(&'static str, &'static str, Value)> {
    let mut ev = Vec::new();
    let mut n = 0;
    let mut push = |topic: &'static str, account: &'static str, ts: &str, fields: Value| {
        n += 1;
        let mut body = json!({"event_id": format!("s-{n}"), "ts": ts, "account_id": account});
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        ev.push((topic, account, body));
    };
    let t0 = "2026-08-01T00:00:00Z";
    push(
        "cs.accounts",
        "acme",
        t0,
        json!({"name":"Acme Corp","csm_id":"csm-7","segment":"enterprise","region":"emea","seats":10,"renewal_date":"2026-12-31"}),
    );
    push(
        "cs.accounts",
        "globex",
        t0,
        json!({"name":"Globex","csm_id":"csm-7","segment":"smb","region":"na","seats":4,"renewal_date":"2026-12-15"}),
    );
    push("cs.accounts", "initech", t0, json!({"name":"Initech","csm_id":null,"segment":"smb","region":"na"}));
    push("cs.revenue", "acme", "2026-09-01T00:00:00Z", json!({"kind":"new","arr":100000.00}));
    push("cs.revenue", "globex", "2026-08-01T00:00:00Z", json!({"kind":"new","arr":20000}));
    push("cs.revenue", "initech", "2026-10-15T00:00:00Z", json!({"kind":"new","arr":5000.00}));
    push("cs.revenue", "acme", "2026-11-02T00:00:00Z", json!({"kind":"expansion","arr":150000.00}));
    push("cs.revenue", "globex", "2026-11-03T00:00:00Z", json!({"kind":"contraction","arr":15000.50}));
    for (i, day) in ["08", "09", "10", "11", "12"].iter().enumerate() {
        push(
            "cs.usage",
            "acme",
            &format!("2026-11-{day}T12:00:00Z"),
            json!({"user_id":"u1","feature":"reports","n":i}),
        );
    }
    push("cs.tickets", "acme", "2026-11-15T00:00:00Z", json!({"ticket_id":"T3","action":"opened","priority":"p3"}));
    push("cs.tickets", "acme", "2026-11-15T01:30:00Z", json!({"ticket_id":"T3","action":"first_response"}));
    push("cs.tickets", "acme", "2026-11-15T02:00:00Z", json!({"ticket_id":"T3","action":"resolved"}));
    push("cs.tickets", "globex", "2026-11-18T00:00:00Z", json!({"ticket_id":"T9","action":"csat","score":5}));
    push("cs.tickets", "globex", "2026-11-19T00:00:00Z", json!({"ticket_id":"T2","action":"opened","priority":"p2"}));
    push("cs.tickets", "globex", "2026-11-19T00:30:00Z", json!({"ticket_id":"T2","action":"first_response"}));
    push("cs.tickets", "globex", "2026-11-19T01:00:00Z", json!({"ticket_id":"T2","action":"escalated"}));
    push("cs.tickets", "acme", "2026-11-20T10:00:00Z", json!({"ticket_id":"T1","action":"opened","priority":"p1"}));
    for (i, user) in ["u1", "u2", "u3", "u4", "u5"].iter().enumerate() {
        push(
            "cs.usage",
            "acme",
            &format!("2026-11-20T{:02}:00:00Z", 8 + i),
            json!({"user_id":user,"feature":"reports"}),
        );
    }
    ev
}

fn partition_of(account: &str) -> i32 {
    match account {
        "acme" => 0,
        "globex" => 3,
        _ => 5,
    }
}

fn close(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-9)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_portfolio_reads_back_exactly_over_rest() {
    let (_cluster, config) = cluster_and_config();
    let app = App::start(&config).await.expect("engine starts");
    let p = producer(&config.kafka.brokers);
    let events = script();
    for (topic, account, body) in &events {
        produce(&p, topic, partition_of(account), account, &serde_json::to_vec(body).unwrap()).await;
    }
    let base = format!("http://{}", app.addr);
    let exec = token(Role::Executive, None);
    let data = wait_for("every scripted event folded", Duration::from_secs(30), || {
        let url = format!("{base}/api/v1/channels/executive");
        let exec = exec.clone();
        async move {
            let (status, v) = get(&url, Some(&exec)).await;
            (status == 200 && v["as_of"] == json!(NOW)).then_some(v)
        }
    })
    .await;
    assert_eq!(app.shared.engine().stats().accepted.iter().sum::<u64>(), events.len() as u64);

    let pf = &data["portfolio"];
    assert_eq!(pf["health"]["accounts"], json!(3));
    assert_eq!(pf["health"]["tiers"]["green"], json!({"accounts": 0, "arr": 0.0}));
    assert_eq!(pf["health"]["tiers"]["yellow"], json!({"accounts": 1, "arr": 150000.0}));
    assert_eq!(pf["health"]["tiers"]["red"], json!({"accounts": 2, "arr": 20000.5}));
    assert_eq!(pf["health"]["at_risk_arr"], json!(20000.5));
    assert!(close(&pf["health"]["at_risk_share"], 20000.5 / 170000.5));
    // acme 57 (yellow), globex 36.25 and initech 37 (red).
    assert!(close(&pf["health"]["avg_score"], (57.0 + 36.25 + 37.0) / 3.0), "{}", pf["health"]);
    assert_eq!(pf["usage"]["active_users_7d"], json!(5));
    assert_eq!(pf["usage"]["usage_events_7d"], json!(5));
    assert!(close(&pf["usage"]["adoption_rate"], 1.0 / 3.0));
    assert_eq!(pf["tickets"]["open"], json!({"p1":1,"p2":1,"p3":0,"p4":0,"total":2}));
    assert_eq!(pf["tickets"]["escalated_open"], json!(1));
    assert_eq!(pf["tickets"]["sla_breached"], json!(1));
    assert_eq!(pf["tickets"]["first_response_minutes"], json!({"count":2,"p50":30.0,"p90":90.0,"p99":90.0}));
    assert_eq!(pf["tickets"]["csat_avg_90d"], json!(5.0));
    let rev = &pf["revenue"];
    assert_eq!(rev["arr"], json!(170000.5));
    assert_eq!(rev["paying_accounts"], json!(3));
    assert!(close(&rev["nrr_qtd"], 165000.5 / 120000.0), "{rev}");
    assert!(close(&rev["grr_qtd"], 115000.5 / 120000.0), "{rev}");
    assert_eq!(rev["nrr_t12m"], Value::Null);
    assert_eq!(rev["expansion_arr_qtd"], json!(50000.0));
    assert_eq!(rev["contraction_arr_qtd"], json!(4999.5));
    assert_eq!(rev["churned_arr_qtd"], json!(0.0));
    assert_eq!(data["segments"]["smb"]["health"]["accounts"], json!(2));
    assert_eq!(data["segments"]["enterprise"]["revenue"]["arr"], json!(150000.0));

    let (_, manager) = get(&format!("{base}/api/v1/channels/manager"), Some(&token(Role::Manager, None))).await;
    assert_eq!(manager["csms"]["csm-7"]["health"]["accounts"], json!(2));
    assert_eq!(manager["unassigned"]["health"]["accounts"], json!(1));

    let (_, analyst) = get(&format!("{base}/api/v1/channels/analyst"), Some(&token(Role::Analyst, None))).await;
    assert_eq!(analyst["features"], json!({"reports": {"accounts_30d": 1, "users_30d": 5}}));
    assert_eq!(analyst["health_histogram"], json!([0, 0, 0, 2, 0, 1, 0, 0, 0, 0]));
    assert_eq!(analyst["regions"]["na"]["health"]["accounts"], json!(2));

    let csm = token(Role::Csm, Some("csm-7"));
    let (status, book) = get(&format!("{base}/api/v1/channels/csm:csm-7"), Some(&csm)).await;
    assert_eq!(status, 200);
    let acme = &book["accounts"]["acme"];
    assert_eq!(acme["health"]["score"], json!(57.0));
    assert_eq!(acme["health"]["tier"], json!("yellow"));
    assert_eq!(
        acme["health"]["components"],
        json!({"adoption":50.0,"engagement":50.0,"support":70.0,"sentiment":60.0})
    );
    assert_eq!(acme["usage"]["usage_events_prev_7d"], json!(5));
    assert_eq!(acme["usage"]["drop_ratio"], json!(0.0));
    assert_eq!(acme["usage"]["last_activity"], json!(NOW));
    assert_eq!(acme["tickets"]["sla_breached"], json!(1));
    assert_eq!(acme["revenue"], json!({"arr": 150000.0, "days_to_renewal": 41}));
    // Globex is red and renews in 25 days: first in the book.
    assert_eq!(book["accounts"]["globex"]["health"]["rank"], json!(1));
    assert_eq!(acme["health"]["rank"], json!(2));
    assert_eq!(book["accounts"]["globex"]["health"]["score"], json!(36.3));
    assert!(book["accounts"].get("initech").is_none());

    let (status, one) = get(&format!("{base}/api/v1/accounts/acme"), Some(&csm)).await;
    assert_eq!((status, &one["account_id"]), (200, &json!("acme")));
    assert_eq!(one["health"]["rank"], json!(2));
    let (status, initech) = get(&format!("{base}/api/v1/accounts/initech"), Some(&exec)).await;
    assert_eq!(status, 200);
    assert_eq!(initech["health"]["rank"], Value::Null);
    assert_eq!(initech["info"]["csm_id"], Value::Null);

    wait_for("ready once caught up", Duration::from_secs(10), || {
        let url = format!("{base}/readyz");
        async move { (get(&url, None).await.0 == 200).then_some(()) }
    })
    .await;
    app.shutdown().await;
}
