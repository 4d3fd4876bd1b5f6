//! Alerts end to end: events produced to the mock cluster, transitions read
//! back from the alert topic with the expected ids, keys and fields, the
//! firing set over REST with the access rules of §7, and the push hand-off.

mod common;

use std::time::Duration;

use common::*;
use cspulse::alert::alert_id;
use cspulse::alert::rules::ScopeKind;
use cspulse::app::App;
use cspulse::auth::Role;
use cspulse::time::parse_rfc3339;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_topic_rest_metrics_and_push() {
    let (_cluster, config) = cluster_and_config();
    let app = App::start(&config).await.expect("engine starts");
    let mut pushed = app.shared.alerts.subscribe();
    let p = producer(&config.kafka.brokers);
    let events = [
        (
            "cs.accounts",
            json!({"event_id":"a1","ts":"2026-11-01T00:00:00Z","account_id":"acme","name":"Acme Corp","csm_id":"csm-7","segment":"smb"}),
        ),
        (
            "cs.tickets",
            json!({"event_id":"t1","ts":"2026-11-01T00:01:00Z","account_id":"acme","ticket_id":"T1","action":"opened","priority":"p1"}),
        ),
        (
            "cs.tickets",
            json!({"event_id":"t2","ts":"2026-11-01T00:02:00Z","account_id":"acme","ticket_id":"T1","action":"first_response"}),
        ),
        (
            "cs.tickets",
            json!({"event_id":"t3","ts":"2026-11-01T00:03:00Z","account_id":"acme","ticket_id":"T1","action":"resolved"}),
        ),
        ("cs.revenue", json!({"event_id":"r1","ts":"2026-11-01T00:04:00Z","account_id":"acme","kind":"churn"})),
        ("cs.accounts", json!({"event_id":"a2","ts":"2026-11-01T00:05:00Z","account_id":"other","csm_id":"csm-8"})),
    ];
    // The upsert first, folded before the rest (topics are consumed in any
    // interleaving), so the p1 alert already knows the account's name.
    let (topic, body) = &events[0];
    produce(&p, topic, 0, "acme", &serde_json::to_vec(body).unwrap()).await;
    let base = format!("http://{}", app.addr);
    let exec = token(Role::Executive, None);
    wait_for("the upsert folded", Duration::from_secs(30), || {
        let (url, exec) = (format!("{base}/api/v1/accounts/acme"), exec.clone());
        async move { (get(&url, Some(&exec)).await.1["info"]["name"] == json!("Acme Corp")).then_some(()) }
    })
    .await;
    for (topic, body) in &events[1..] {
        produce(&p, topic, 0, "acme", &serde_json::to_vec(body).unwrap()).await;
    }
    // account_red ×2 (acme, other) + p1 firing + p1 resolved + churned = 5.
    let records = tokio::task::spawn_blocking({
        let brokers = config.kafka.brokers.clone();
        move || consume_all(&brokers, "cs.alerts", 5, Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert_eq!(records.len(), 5, "{records:#?}");
    let find = |rule: &str, state: &str| {
        records
            .iter()
            .find(|(_, v)| v["rule"] == json!(rule) && v["state"] == json!(state))
            .unwrap_or_else(|| panic!("{rule} {state}: {records:#?}"))
    };
    // Topics interleave as the consumer fetches them, so the watermark at
    // which p1 fires is the ticket's ts or later; the id follows started_at.
    let (key, firing) = find("p1_ticket_open", "firing");
    assert_eq!(key.as_deref(), Some("acme"), "keyed by scope_id");
    let started = parse_rfc3339(firing["started_at"].as_str().unwrap()).unwrap();
    assert!(started >= parse_rfc3339("2026-11-01T00:01:00Z").unwrap());
    assert_eq!(firing["alert_id"], json!(alert_id("p1_ticket_open", ScopeKind::Account, "acme", started)));
    assert_eq!(firing["ts"], firing["started_at"]);
    assert_eq!(firing["account_name"], json!("Acme Corp"));
    assert_eq!(firing["csm_id"], json!("csm-7"));
    assert_eq!(firing["values"], json!({"tickets.open_p1": 1.0}));
    let (_, resolved) = find("p1_ticket_open", "resolved");
    assert_eq!(resolved["alert_id"], firing["alert_id"]);
    assert_eq!(resolved["started_at"], firing["started_at"]);
    assert!(parse_rfc3339(resolved["ts"].as_str().unwrap()).unwrap() >= parse_rfc3339("2026-11-01T00:03:00Z").unwrap());
    let (_, churned) = find("churned", "fired");
    assert_eq!(churned["values"], json!({"kind": "churn"}));
    assert_eq!(churned["severity"], json!("critical"));

    // Pushed the moment they were folded, in order.
    let first = tokio::time::timeout(Duration::from_secs(5), pushed.recv()).await.unwrap().unwrap();
    let cspulse::ingest::Pushed::Alert(first) = first else { panic!("an alert first: {first:?}") };
    assert_eq!(first.rule, "account_red");

    let (status, all) = get(&format!("{base}/api/v1/alerts?state=firing"), Some(&token(Role::Manager, None))).await;
    assert_eq!(status, 200);
    let rules: Vec<_> =
        all["alerts"].as_array().unwrap().iter().map(|a| (a["rule"].clone(), a["scope_id"].clone())).collect();
    assert!(
        rules.contains(&(json!("account_red"), json!("acme")))
            && rules.contains(&(json!("account_red"), json!("other"))),
        "{all}"
    );
    assert!(!rules.iter().any(|(r, _)| r == "churned" || r == "p1_ticket_open"), "only what is firing now: {all}");
    let (_, mine) = get(&format!("{base}/api/v1/alerts?state=firing"), Some(&token(Role::Csm, Some("csm-7")))).await;
    let ids: Vec<_> = mine["alerts"].as_array().unwrap().iter().map(|a| a["scope_id"].clone()).collect();
    assert_eq!(ids, [json!("acme")], "a csm sees its own book only");
    let (status, _) = get(&format!("{base}/api/v1/alerts?state=resolved"), Some(&token(Role::Manager, None))).await;
    assert_eq!(status, 400);
    assert_eq!(get(&format!("{base}/api/v1/alerts"), None).await.0, 401);

    let (_, metrics) = get(&format!("{base}/metrics"), None).await;
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains("cspulse_alerts_emitted_total{rule=\"p1_ticket_open\",state=\"resolved\"} 1"), "{text}");
    app.shutdown().await;
}
