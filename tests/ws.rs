//! WebSocket push with real clients (tokio-tungstenite) against the running
//! server fed through the mock cluster.

mod common;

use std::collections::HashMap;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_while_readers_keep_up() {
    let (_cluster, mut config) = cluster_and_config();
    for c in [&mut config.cadence.health, &mut config.cadence.usage, &mut config.cadence.revenue] {
        *c = "100ms".parse().unwrap();
    }
    config.cadence.tickets = "0s".parse().unwrap();
    config.push.queue = 64;
    let app = App::start(&config).await.expect("engine starts");
    let exec = token(Role::Executive, None);
    let csms: Vec<String> = (0..6).map(|c| format!("csm-{c}")).collect();
    let mut channels = vec!["executive".to_owned(), "manager".to_owned(), "analyst".to_owned()];
    channels.extend(csms.iter().map(|c| format!("csm:{c}")));

    // The portfolio: 300 accounts in six books, 50 segments, 100 regions and 200 features
    // (so that executive and analyst updates are sizeable).
    let p = producer(&config.kafka.brokers);
    let base = cspulse::time::parse_rfc3339("2026-11-01T00:00:00Z").unwrap();
    let mut n = 0u64;
    let burst = |count: usize, n: &mut u64| -> Vec<(String, Value)> {
        (0..count)
            .map(|_| {
                *n += 1;
                let i = *n;
                let a = (i / 3) % 300;
                let account = format!("acct-{a}");
                let ts = cspulse::time::format_rfc3339(base + i as i64 * 1_000_000);
                let body = match i % 3 {
                    0 => json!({"event_id": format!("e{i}"), "ts": ts, "account_id": account,
                        "csm_id": csms[(a % 6) as usize], "seats": 10 + i % 50,
                        "segment": format!("seg-{}", a % 50), "region": format!("region-{}", a % 100)}),
                    1 => json!({"event_id": format!("e{i}"), "ts": ts, "account_id": account, "user_id": format!("u{i}"), "feature": format!("feature-{}", i % 200)}),
                    _ => json!({"event_id": format!("e{i}"), "ts": ts, "account_id": account, "ticket_id": format!("t{i}"),
                        "action": "opened", "priority": "p2"}),
                };
                let topic = ["cs.accounts", "cs.usage", "cs.tickets"][(i % 3) as usize];
                (topic.to_owned(), body)
            })
            .collect()
    };
    let send_all = |events: Vec<(String, Value)>| {
        let p = p.clone();
        async move {
            let sends = events.iter().map(|(topic, body)| {
                let key = body["account_id"].as_str().unwrap().to_owned();
                let payload = serde_json::to_vec(body).unwrap();
                let p = p.clone();
                let topic = topic.clone();
                async move { produce(&p, &topic, 0, &key, &payload).await }
            });
            futures_util::future::join_all(sends).await;
        }
    };
    send_all(burst(900, &mut n)).await;
    wait_for("the portfolio to be folded", Duration::from_secs(30), || {
        let (url, t) = (format!("http://{}/api/v1/channels/manager", app.addr), exec.clone());
        async move {
            let (_, v) = get(&url, Some(&t)).await;
            (v["csms"].as_object().map_or(0, |m| m.len()) == 6).then_some(())
        }
    })
    .await;

    // A reader on every channel, and a client with a tiny receive buffer
    // that subscribes to the same channels and then never reads.
    let mut reader = connect(app.addr, &exec).await;
    let mut copies: HashMap<String, Copy> = HashMap::new();
    // One channel at a time, as a dashboard does (a burst of nine snapshots
    // on top of live traffic would not fit the small test queue).
    for c in &channels {
        reader.op(json!({"op": "subscribe", "channel": c}));
        copies.insert(c.clone(), Copy { data: Value::Null, seq: 0 });
        while copies[c].data.is_null() {
            let m = reader.next().await;
            copies.get_mut(m["channel"].as_str().unwrap()).unwrap().apply(&m);
        }
    }
    // Two clients with tiny receive buffers that subscribe and never read:
    // `folding` to the analyst channel (no `alert` messages; its queue holds
    // all five topics, so its updates get folded), `stalled` to all nine
    // (more channel-topic pairs and alerts than its queue holds, so it is
    // closed as a slow consumer).
    let mut folding = stuck_client(app.addr, &exec, &["analyst"]).await;
    let all: Vec<&str> = channels.iter().map(String::as_str).collect();
    let mut stalled = stuck_client(app.addr, &exec, &all).await;

    // Traffic until the server gives up on the stalled client (bounded).
    let start = Instant::now();
    let mut gaps = Vec::new();
    let mut last_update = Instant::now();
    let mut dropped_after = None;
    let (mut slow_at, mut folded_at) = (None, None);
    while start.elapsed() < Duration::from_secs(90) {
        send_all(burst(30, &mut n)).await;
        while let Ok(m) = reader.frames.try_recv() {
            let copy = copies.get_mut(m["channel"].as_str().unwrap()).unwrap();
            copy.apply(&m);
            if m["type"] == json!("update") {
                gaps.push(last_update.elapsed());
                last_update = Instant::now();
            }
        }
        if slow_at.is_none() && metric(app.addr, "cspulse_ws_slow_consumer_disconnects_total").await >= 1.0 {
            slow_at = Some(start.elapsed());
        }
        if folded_at.is_none() && metric(app.addr, "cspulse_ws_updates_coalesced_total").await >= 1.0 {
            folded_at = Some(start.elapsed());
        }
        if dropped_after.is_none() && slow_at.is_some() && folded_at.is_some() {
            dropped_after = Some(start.elapsed());
        }
        if dropped_after.is_some_and(|d| start.elapsed() > d + Duration::from_secs(2)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if dropped_after.is_none() {
        panic!(
            "within 90 s, updates are folded ({}) and the stalled client is closed as a slow consumer ({}, stalled {})",
            metric(app.addr, "cspulse_ws_updates_coalesced_total").await,
            metric(app.addr, "cspulse_ws_slow_consumer_disconnects_total").await,
            metric(app.addr, "cspulse_ws_stalled_disconnects_total").await,
        )
    };
    let coalesced = metric(app.addr, "cspulse_ws_updates_coalesced_total").await;
    // The stalled client, and at most the folding one (if its queue ever
    // held nothing foldable); never the reader, whose copies are checked below.
    let slow = metric(app.addr, "cspulse_ws_slow_consumer_disconnects_total").await;
    assert!((1.0..=2.0).contains(&slow), "slow consumer disconnects: {slow}");
    wait_for("the slow connections to be gone", Duration::from_secs(15), || async {
        (metric(app.addr, "cspulse_ws_connections").await <= 2.0).then_some(())
    })
    .await;
    let worst = gaps.iter().max().copied().unwrap_or_default();
    assert!(gaps.len() > 20, "the reader kept getting updates ({})", gaps.len());
    assert!(worst < Duration::from_secs(2), "no stall for the reader: worst gap {worst:?}");
    eprintln!(
        "stalled client dropped after {slow_at:?}; first fold after {folded_at:?} ({coalesced} in all); reader: {} updates, worst gap {worst:?}",
        gaps.len()
    );

    // The stalled client, reading at last, finds its connection closed.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stalled.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("the stalled connection ends");
    assert!(ended.is_none() || ended == Some(1008), "closed with 1008 or cut: {ended:?}");

    // And the reader still converges on every channel.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(m) = reader.frames.try_recv() {
        copies.get_mut(m["channel"].as_str().unwrap()).unwrap().apply(&m);
    }
    for (c, copy) in &copies {
        let (_, rest) = get(&format!("http://{}/api/v1/channels/{c}", app.addr), Some(&exec)).await;
        assert!(same_modulo_nulls(&copy.data, &rest), "{c}: reader's copy equals REST");
    }
    folding.close(None).await.ok();
    app.shutdown().await;
}

/// A client with a tiny receive buffer that subscribes and then never reads.
async fn stuck_client(
    addr: std::net::SocketAddr,
    token: &str,
    channels: &[&str],
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/ws?token={token}"), stream).await.expect("upgrade");
    for c in channels {
        ws.send(Message::Text(json!({"op": "subscribe", "channel": c}).to_string().into())).await.unwrap();
    }
    ws
}
