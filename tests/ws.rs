//! WebSocket push with real clients (tokio-tungstenite) against the running
//! server fed through the mock cluster.

mod common;

use std::time::{Duration, Instant};

use common::*;
use cspulse::app::App;
use cspulse::auth::Role;
use cspulse::push::merge_apply;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A connected client: every text frame lands in `frames`.
struct Client {
    send: mpsc::UnboundedSender<String>,
    frames: mpsc::UnboundedReceiver<Value>,
    raw: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

async fn connect(addr: std::net::SocketAddr, token: &str) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await.expect("upgrade");
    let (mut sink, mut stream) = ws.split();
    let (send, mut outgoing) = mpsc::unbounded_channel::<String>();
    let (deliver, frames) = mpsc::unbounded_channel();
    let raw = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = raw.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                out = outgoing.recv() => match out {
                    Some(text) => if sink.send(Message::Text(text.into())).await.is_err() { break },
                    None => break,
                },
                inbound = stream.next() => match inbound {
                    Some(Ok(Message::Text(t))) => {
                        log.lock().unwrap().push(t.to_string());
                        if deliver.send(serde_json::from_str::<Value>(&t).unwrap()).is_err() { break }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
    });
    Client { send, frames, raw }
}

impl Client {
    fn op(&self, v: Value) {
        self.send.send(v.to_string()).unwrap();
    }

    async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(10), self.frames.recv()).await.expect("a frame in time").expect("open")
    }
}

/// A channel copy maintained like a dashboard does.
struct Copy {
    data: Value,
    seq: u64,
}

impl Copy {
    fn apply(&mut self, m: &Value) {
        let seq = m["seq"].as_u64().unwrap_or(0);
        match m["type"].as_str().unwrap() {
            "snapshot" => {
                self.data = m["data"].clone();
                self.seq = seq;
            }
            "update" | "alert" => {
                assert_eq!(seq, self.seq + 1, "seq has no gaps: {m}");
                self.seq = seq;
                if m["type"] == "update" {
                    merge_apply(&mut self.data, &m["patch"]);
                }
            }
            _ => {}
        }
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_follow_their_channels_and_csms_see_only_their_book() {
    let (_cluster, mut config) = cluster_and_config();
    for c in [&mut config.cadence.health, &mut config.cadence.usage, &mut config.cadence.revenue] {
        *c = "300ms".parse().unwrap();
    }
    config.cadence.tickets = "0s".parse().unwrap();
    let app = App::start(&config).await.expect("engine starts");

    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await;
    assert!(
        matches!(refused, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 401),
        "no token, no upgrade"
    );
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws?token=forged", app.addr)).await;
    assert!(refused.is_err());

    let mut csm = connect(app.addr, &token(Role::Csm, Some("csm-7"))).await;
    csm.op(json!({"op": "ping"}));
    assert_eq!(csm.next().await, json!({"type": "pong"}));
    for other in ["executive", "manager", "analyst", "csm:csm-8"] {
        csm.op(json!({"op": "subscribe", "channel": other}));
        let e = csm.next().await;
        assert_eq!((e["type"].clone(), e["code"].clone()), (json!("error"), json!("forbidden")), "{other}");
    }
    csm.op(json!({"op": "subscribe", "channel": "nonsense"}));
    assert_eq!(csm.next().await["code"], json!("unknown_channel"));
    csm.op(json!({"op": "subscribe", "channel": "csm:csm-7"}));
    let subscribed = csm.next().await;
    assert_eq!(subscribed["type"], json!("subscribed"));
    let snapshot = csm.next().await;
    assert_eq!((snapshot["type"].clone(), snapshot["seq"].clone()), (json!("snapshot"), subscribed["seq"].clone()));
    let mut csm_copy = Copy { data: Value::Null, seq: 0 };
    csm_copy.apply(&snapshot);

    let mut exec = connect(app.addr, &token(Role::Executive, None)).await;
    exec.op(json!({"op": "subscribe", "channel": "executive"}));
    let mut exec_copy = Copy { data: Value::Null, seq: 0 };
    exec.next().await;
    exec_copy.apply(&exec.next().await);

    let p = producer(&config.kafka.brokers);
    let events = [
        (
            "cs.accounts",
            "acme",
            json!({"event_id":"a1","ts":"2026-11-01T00:00:00Z","account_id":"acme","name":"Acme","csm_id":"csm-7","segment":"smb","seats":2}),
        ),
        (
            "cs.accounts",
            "zeta-secret",
            json!({"event_id":"a2","ts":"2026-11-01T00:00:00Z","account_id":"zeta-secret","csm_id":"csm-8","segment":"smb"}),
        ),
        (
            "cs.usage",
            "acme",
            json!({"event_id":"u1","ts":"2026-11-01T00:01:00Z","account_id":"acme","user_id":"u","feature":"api"}),
        ),
        (
            "cs.revenue",
            "acme",
            json!({"event_id":"r1","ts":"2026-11-01T00:02:00Z","account_id":"acme","kind":"new","arr":500}),
        ),
        (
            "cs.usage",
            "zeta-secret",
            json!({"event_id":"u2","ts":"2026-11-01T00:03:00Z","account_id":"zeta-secret","user_id":"z","feature":"api"}),
        ),
    ];
    for (topic, key, body) in &events {
        produce(&p, topic, 0, key, &serde_json::to_vec(body).unwrap()).await;
    }
    let base = format!("http://{}", app.addr);
    let exec_token = token(Role::Executive, None);
    // Copies converge on what REST reports.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        while let Ok(m) = csm.frames.try_recv() {
            csm_copy.apply(&m);
        }
        while let Ok(m) = exec.frames.try_recv() {
            exec_copy.apply(&m);
        }
        let (_, rest_book) = get(&format!("{base}/api/v1/channels/csm:csm-7"), Some(&exec_token)).await;
        let (_, rest_exec) = get(&format!("{base}/api/v1/channels/executive"), Some(&exec_token)).await;
        if rest_exec["as_of"] == json!("2026-11-01T00:03:00Z")
            && same_modulo_nulls(&csm_copy.data, &rest_book)
            && same_modulo_nulls(&exec_copy.data, &rest_exec)
        {
            break;
        }
        assert!(Instant::now() < deadline, "copies did not converge:\n{}\n{}", csm_copy.data, rest_book);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A p1 on the CSM's account reaches its client as an alert, fast.
    let sent = Instant::now();
    let p1 = json!({"event_id":"t1","ts":"2026-11-01T00:04:00Z","account_id":"acme","ticket_id":"T1","action":"opened","priority":"p1"});
    produce(&p, "cs.tickets", 0, "acme", &serde_json::to_vec(&p1).unwrap()).await;
    loop {
        let m = csm.next().await;
        csm_copy.apply(&m);
        if m["type"] == json!("alert") && m["alert"]["rule"] == json!("p1_ticket_open") {
            assert_eq!(m["alert"]["account_id"], json!("acme"));
            break;
        }
    }
    assert!(sent.elapsed() < Duration::from_secs(1), "alert took {:?}", sent.elapsed());
    // Not a byte about the other book, on any frame.
    for frame in csm.raw.lock().unwrap().iter() {
        assert!(!frame.contains("zeta-secret") && !frame.contains("csm-8"), "leaked: {frame}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cadences_hold_and_resume_replays_exactly_what_was_missed() {
    let (_cluster, mut config) = cluster_and_config();
    config.cadence.health = "1s".parse().unwrap();
    for c in [&mut config.cadence.usage, &mut config.cadence.revenue, &mut config.cadence.tickets] {
        *c = "100ms".parse().unwrap();
    }
    let app = App::start(&config).await.expect("engine starts");
    let manager = token(Role::Manager, None);
    let mut client = connect(app.addr, &manager).await;
    client.op(json!({"op": "subscribe", "channel": "manager"}));
    client.next().await;
    let mut copy = Copy { data: Value::Null, seq: 0 };
    copy.apply(&client.next().await);

    // Once the consumer is folding, health-changing events every 100 ms for 3.5 s.
    let p = producer(&config.kafka.brokers);
    let warm = json!({"event_id": "warm", "ts": "2026-10-31T00:00:00Z", "account_id": "acme", "csm_id": "csm-1"});
    produce(&p, "cs.accounts", 0, "acme", &serde_json::to_vec(&warm).unwrap()).await;
    wait_for("consuming", Duration::from_secs(30), || {
        let (url, t) = (format!("http://{}/api/v1/accounts/acme", app.addr), manager.clone());
        async move { (get(&url, Some(&t)).await.0 == 200).then_some(()) }
    })
    .await;
    let start = Instant::now();
    let mut health_at: Vec<Instant> = Vec::new();
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(3500) {
        i += 1;
        let body = json!({"event_id": format!("t{i}"), "ts": format!("2026-11-01T00:{:02}:{:02}Z", i / 60, i % 60), "account_id": "acme",
            "csm_id": "csm-1", "seats": i});
        produce(&p, "cs.accounts", 0, "acme", &serde_json::to_vec(&body).unwrap()).await;
        while let Ok(m) = client.frames.try_recv() {
            copy.apply(&m);
            if m["topic"] == json!("health") {
                health_at.push(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(health_at.len() >= 2, "health updates arrive at their cadence: {}", health_at.len());
    for w in health_at.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(800),
            "health pushed sooner than its 1 s cadence: {:?}",
            w[1] - w[0]
        );
    }

    // Disconnect, miss some updates, resume with `since`.
    let since = copy.seq;
    drop(client);
    for j in 0..3 {
        let body = json!({"event_id": format!("late-{j}"), "ts": format!("2026-11-01T01:00:{j:02}Z"), "account_id": "acme", "seats": 100 + j});
        produce(&p, "cs.accounts", 0, "acme", &serde_json::to_vec(&body).unwrap()).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let mut back = connect(app.addr, &manager).await;
    back.op(json!({"op": "subscribe", "channel": "manager", "since": since}));
    let subscribed = back.next().await;
    assert_eq!(subscribed["type"], json!("subscribed"));
    let now_seq = subscribed["seq"].as_u64().unwrap();
    assert!(now_seq > since, "updates were missed");
    for expected in since + 1..=now_seq {
        let m = back.next().await;
        assert_eq!(m["seq"], json!(expected), "exactly the missed messages, in order, no snapshot: {m}");
        copy.apply(&m);
    }
    let (_, rest) = get(&format!("http://{}/api/v1/channels/manager", app.addr), Some(&manager)).await;
    assert!(same_modulo_nulls(&copy.data, &rest), "resumed copy equals REST\n{}\n{}", copy.data, rest);
    app.shutdown().await;
}
