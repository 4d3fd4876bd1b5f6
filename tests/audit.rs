//! The audit trail (SPEC §18) against the real engine and a SQLite history
//! store: authenticated requests, downloads and WebSocket subscriptions
//! are audit events, kept in the store and read back by executives.

mod common;

use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::auth::{Auth, Role};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

fn mint(subject: &str, role: Role, csm: Option<&str>) -> String {
    Auth::new(SECRET, false).mint(subject, role, csm, Duration::from_secs(3600)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_downloads_and_subscriptions_are_audited() {
    let (_cluster, mut config) = cluster_and_config();
    let dir = tempfile::tempdir().unwrap();
    config.history.store = format!("sqlite://{}", dir.path().join("history.db").display());
    let app = App::start(&config).await.expect("engine starts");
    let base = format!("http://{}", app.addr);
    let (alice, bob) = (mint("alice", Role::Executive, None), mint("bob", Role::Csm, Some("csm-7")));

    let (status, _) = get(&format!("{base}/api/v1/channels/executive"), Some(&alice)).await;
    assert_eq!(status, 200);
    let (status, _) = get(&format!("{base}/api/v1/channels/csm:csm-1?token={bob}"), None).await;
    assert_eq!(status, 403);
    let csv = reqwest::Client::new()
        .get(format!("{base}/api/v1/history/executive"))
        .bearer_auth(&alice)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    // Unauthenticated requests are not audit events.
    let (status, _) = get(&format!("{base}/api/v1/channels/executive"), None).await;
    assert_eq!(status, 401);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws?token={bob}", app.addr)).await.unwrap();
    for channel in ["csm:csm-7", "executive"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            json!({"op": "subscribe", "channel": channel}).to_string(),
        ))
        .await
        .unwrap();
    }
    // The refusal of the second subscription arrives after the first's snapshot.
    let mut refused = false;
    while !refused {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        refused = msg.to_text().unwrap().contains("forbidden");
    }

    // bob may not read the trail; alice sees every event, newest first.
    let (status, body) = get(&format!("{base}/api/v1/audit"), Some(&bob)).await;
    assert_eq!((status, &body["error"]), (403, &json!("forbidden")), "{body}");
    let wanted: Vec<Value> = vec![
        json!({"subject": "alice", "role": "executive", "csm_id": null, "action": "request",
            "target": "GET /api/v1/channels/executive", "outcome": "ok"}),
        json!({"subject": "bob", "role": "csm", "csm_id": "csm-7", "action": "request",
            "target": "GET /api/v1/channels/csm:csm-1", "outcome": "forbidden"}),
        json!({"subject": "alice", "role": "executive", "csm_id": null, "action": "download",
            "target": "GET /api/v1/history/executive", "outcome": "ok"}),
        json!({"subject": "bob", "role": "csm", "csm_id": "csm-7", "action": "request", "target": "GET /ws",
            "outcome": "ok"}),
        json!({"subject": "bob", "role": "csm", "csm_id": "csm-7", "action": "subscribe", "target": "csm:csm-7",
            "outcome": "ok"}),
        json!({"subject": "bob", "role": "csm", "csm_id": "csm-7", "action": "subscribe", "target": "executive",
            "outcome": "denied"}),
        json!({"subject": "bob", "role": "csm", "csm_id": "csm-7", "action": "request", "target": "GET /api/v1/audit",
            "outcome": "forbidden"}),
    ];
    let events = wait_for("the audit events in the store", Duration::from_secs(10), || async {
        let (status, body) = get(&format!("{base}/api/v1/audit"), Some(&alice)).await;
        assert_eq!(status, 200, "{body}");
        let mut events: Vec<Value> = body["events"].as_array().unwrap().clone();
        events.reverse();
        (events.len() >= wanted.len()).then_some(events)
    })
    .await;
    for (got, want) in events.iter().zip(&wanted) {
        let at = got["at"].as_str().unwrap();
        assert!(cspulse::time::parse_rfc3339(at).is_some(), "{got}");
        let mut got = got.clone();
        got.as_object_mut().unwrap().remove("at");
        assert_eq!(&got, want);
    }
    let (_, body) = get(&format!("{base}/api/v1/audit"), Some(&alice)).await;
    let schema: Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/audit.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&body).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "the answer fits schemas/audit.schema.json: {errors:#?}");
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&bob) && !text.contains(&alice), "no token is ever kept");
    // Filtered by subject, limited (and saying so).
    let (_, body) = get(&format!("{base}/api/v1/audit?subject=bob&limit=2"), Some(&alice)).await;
    assert_eq!(body["events"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(body["truncated"], true);
    assert!(body["events"].as_array().unwrap().iter().all(|e| e["subject"] == "bob"));
    let (status, body) = get(&format!("{base}/api/v1/audit?limit=0"), Some(&alice)).await;
    assert_eq!(status, 400, "{body}");
    app.shutdown().await;
}
