//! An account moving between books (SPEC §5, §6.2 additions): its firing
//! alerts follow the current owner on `cs.alerts` (`updated`, with a
//! `version`), over REST and on WebSocket; the old owner's channel loses the
//! account at once and then never hears of it again; the new owner's channel
//! gets it at once, with its alerts. Also the ownerless alert: a ticket
//! folded before its account's first upsert fires with no owner, and the
//! upsert hands it to its CSM.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::auth::Role;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A subscribed client whose every text frame is logged, raw.
struct Listener {
    frames: Arc<Mutex<Vec<String>>>,
}

async fn listen(addr: std::net::SocketAddr, token: &str, channel: &str) -> Listener {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await.expect("upgrade");
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::Text(json!({"op": "subscribe", "channel": channel}).to_string().into())).await.unwrap();
    let frames = Arc::new(Mutex::new(Vec::new()));
    let log = frames.clone();
    tokio::spawn(async move {
        let _sink = sink;
        while let Some(Ok(m)) = stream.next().await {
            if let Message::Text(t) = m {
                log.lock().unwrap().push(t.to_string());
            }
        }
    });
    Listener { frames }
}

impl Listener {
    fn parsed(&self) -> Vec<Value> {
        self.frames.lock().unwrap().iter().map(|t| serde_json::from_str(t).unwrap()).collect()
    }

    /// Waits for a frame that `want` accepts; returns its index.
    async fn wait(&self, what: &str, want: impl Fn(&Value) -> bool) -> usize {
        wait_for(what, Duration::from_secs(20), || {
            let found = self.parsed().iter().position(&want);
            async move { found }
        })
        .await
    }
}

fn upsert(id: &str, ts: &str, csm: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"event_id": id, "ts": ts, "account_id": "acme", "name": "Acme Corp",
        "csm_id": csm, "segment": "smb", "seats": 10}))
    .unwrap()
}

async fn firing_for(base: &str, token: &str) -> Vec<Value> {
    let (status, body) = get(&format!("{base}/api/v1/alerts?state=firing"), Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body["alerts"].as_array().unwrap().iter().filter(|a| a["account_id"] == json!("acme")).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassigned_account_and_its_alerts_follow_the_current_owner_everywhere() {
    let (_cluster, mut config) = cluster_and_config();
    // Far longer than the test: anything pushed comes from the change itself.
    for c in [&mut config.cadence.health, &mut config.cadence.usage, &mut config.cadence.revenue] {
        *c = "1h".parse().unwrap();
    }
    config.cadence.tickets = "0s".parse().unwrap();
    let app = App::start(&config).await.expect("engine starts");
    let base = format!("http://{}", app.addr);
    let p = producer(&config.kafka.brokers);
    let exec = token(Role::Executive, None);
    let (one, two) = (token(Role::Csm, Some("csm-01")), token(Role::Csm, Some("csm-02")));

    // A P1 ticket before the account's first upsert: its alerts have no owner.
    let ticket = json!({"event_id": "t1", "ts": "2026-11-02T09:00:00Z", "account_id": "acme", "ticket_id": "T1",
        "action": "opened", "priority": "p1"});
    produce(&p, "cs.tickets", 0, "acme", &serde_json::to_vec(&ticket).unwrap()).await;
    wait_for("the ownerless p1 alert", Duration::from_secs(30), || {
        let (base, exec) = (base.clone(), exec.clone());
        async move {
            let firing = firing_for(&base, &exec).await;
            firing.iter().any(|a| a["rule"] == json!("p1_ticket_open") && a["csm_id"].is_null()).then_some(())
        }
    })
    .await;

    // The upsert hands the account, and its firing alerts, to csm-01.
    let old_book = listen(app.addr, &one, "csm:csm-01").await;
    old_book.wait("csm-01's snapshot", |m| m["type"] == json!("snapshot")).await;
    produce(&p, "cs.accounts", 0, "acme", &upsert("a1", "2026-11-02T09:01:00Z", "csm-01")).await;
    wait_for("csm-01 to see acme's alerts over REST", Duration::from_secs(30), || {
        let (base, one) = (base.clone(), one.clone());
        async move {
            let firing = firing_for(&base, &one).await;
            (firing.len() >= 2 && firing.iter().all(|a| a["csm_id"] == json!("csm-01") && a["version"] == json!(1)))
                .then_some(())
        }
    })
    .await;
    old_book
        .wait("acme arriving in csm-01's book at once", |m| {
            m["type"] == json!("update") && m["patch"]["accounts"]["acme"]["info"]["csm_id"] == json!("csm-01")
        })
        .await;
    old_book
        .wait("the p1 alert reaching csm-01 as updated", |m| {
            m["type"] == json!("alert")
                && m["alert"]["rule"] == json!("p1_ticket_open")
                && m["alert"]["state"] == json!("updated")
                && m["alert"]["version"] == json!(1)
        })
        .await;

    // Moved to csm-02 while its alerts fire.
    let new_book = listen(app.addr, &two, "csm:csm-02").await;
    new_book.wait("csm-02's snapshot", |m| m["type"] == json!("snapshot")).await;
    produce(&p, "cs.accounts", 0, "acme", &upsert("a2", "2026-11-02T09:02:00Z", "csm-02")).await;
    let removed = old_book
        .wait("acme removed from csm-01's book at once", |m| {
            m["type"] == json!("update")
                && m["patch"]["accounts"].as_object().is_some_and(|a| a.get("acme") == Some(&Value::Null))
        })
        .await;
    new_book
        .wait("acme arriving in csm-02's book at once", |m| {
            m["type"] == json!("update") && m["patch"]["accounts"]["acme"]["info"]["csm_id"] == json!("csm-02")
        })
        .await;
    new_book
        .wait("the p1 alert reaching csm-02 as updated, version 2", |m| {
            m["type"] == json!("alert")
                && m["alert"]["rule"] == json!("p1_ticket_open")
                && m["alert"]["state"] == json!("updated")
                && m["alert"]["csm_id"] == json!("csm-02")
                && m["alert"]["version"] == json!(2)
        })
        .await;
    assert!(firing_for(&base, &one).await.is_empty(), "the old owner sees none of acme's alerts");
    let theirs = firing_for(&base, &two).await;
    assert!(theirs.len() >= 2 && theirs.iter().all(|a| a["csm_id"] == json!("csm-02")), "{theirs:?}");
    let (status, _) = get(&format!("{base}/api/v1/accounts/acme"), Some(&one)).await;
    assert!(status == 403 || status == 404, "the old owner cannot read the account: {status}");

    // More about acme: the new book hears of it, the old one never again.
    let resolve = json!({"event_id": "t2", "ts": "2026-11-02T09:03:00Z", "account_id": "acme", "ticket_id": "T1",
        "action": "resolved"});
    produce(&p, "cs.tickets", 0, "acme", &serde_json::to_vec(&resolve).unwrap()).await;
    let usage = json!({"event_id": "u1", "ts": "2026-11-02T09:04:00Z", "account_id": "acme", "user_id": "u1",
        "feature": "reports"});
    produce(&p, "cs.usage", 0, "acme", &serde_json::to_vec(&usage).unwrap()).await;
    new_book
        .wait("the resolution on csm-02's channel", |m| {
            m["type"] == json!("alert")
                && m["alert"]["rule"] == json!("p1_ticket_open")
                && m["alert"]["state"] == json!("resolved")
        })
        .await;
    new_book
        .wait("acme's tickets update on csm-02's channel", |m| {
            m["type"] == json!("update") && m["patch"]["accounts"]["acme"]["tickets"].is_object()
        })
        .await;
    // The real-time topics (tickets, alerts) have ticked on every channel by
    // now; give the old book's connection the same time again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<String> = old_book.frames.lock().unwrap()[removed + 1..].to_vec();
    assert!(after.iter().all(|t| !t.contains("acme") && !t.contains("Acme")), "csm-01 heard of acme again: {after:?}");

    // On the alert topic: firing (no owner), updated v1 (csm-01), updated
    // v2 (csm-02), resolved carrying the latest version.
    let records = tokio::task::spawn_blocking({
        let brokers = config.kafka.brokers.clone();
        move || consume_all(&brokers, "cs.alerts", 8, Duration::from_secs(20))
    })
    .await
    .unwrap();
    let p1: Vec<(Value, Value, Value)> = records
        .iter()
        .filter(|(_, v)| v["rule"] == json!("p1_ticket_open"))
        .map(|(_, v)| (v["state"].clone(), v["version"].clone(), v["csm_id"].clone()))
        .collect();
    assert_eq!(
        p1,
        [
            (json!("firing"), json!(0), Value::Null),
            (json!("updated"), json!(1), json!("csm-01")),
            (json!("updated"), json!(2), json!("csm-02")),
            (json!("resolved"), json!(2), json!("csm-02")),
        ],
        "{records:#?}"
    );
    app.shutdown().await;
}
