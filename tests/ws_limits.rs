//! SPEC §18 WebSocket limits with real clients against the running server:
//! connections per token subject, the 4401 close when a token expires,
//! binary frames, every frame counted toward the rate limit, and idle
//! channels dropped and recreated in a new epoch (§12).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::auth::{Auth, Role};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn start(snippet: impl FnOnce(&mut cspulse::config::Config)) -> (Cluster, App) {
    let (cluster, mut config) = cluster_and_config();
    snippet(&mut config);
    let app = App::start(&config).await.expect("engine starts");
    (cluster, app)
}

fn mint(sub: &str, role: Role, ttl: Duration) -> String {
    Auth::new(SECRET, false).mint(sub, role, None, ttl).unwrap()
}

async fn connect(addr: SocketAddr, token: &str) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await.map(|(ws, _)| ws)
}

async fn send(ws: &mut Socket, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text frame, as JSON (other frames are skipped).
async fn next(ws: &mut Socket) -> Value {
    let read = async {
        loop {
            match ws.next().await.expect("open").expect("a frame") {
                Message::Text(t) => return serde_json::from_str::<Value>(&t).unwrap(),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("a frame in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_subject_gets_at_most_its_connection_cap() {
    let (_cluster, app) = start(|c| c.push.max_connections_per_subject = 3).await;
    let alice = mint("alice", Role::Executive, Duration::from_secs(3600));
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(app.addr, &alice).await.expect("within the cap"));
    }
    match connect(app.addr, &alice).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 429);
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"], json!("rate_limited"), "{body}");
        }
        other => panic!("the fourth connection of one subject is refused: {:?}", other.map(|_| ())),
    }
    // Another subject is not affected, even with the same role.
    let bob = mint("bob", Role::Executive, Duration::from_secs(3600));
    let mut other = connect(app.addr, &bob).await.expect("another subject");
    send(&mut other, json!({"op": "ping"})).await;
    assert_eq!(next(&mut other).await, json!({"type": "pong"}));
    // A closed connection frees its place.
    open.pop().unwrap().close(None).await.unwrap();
    wait_for("a freed place", Duration::from_secs(5), || {
        let (addr, alice) = (app.addr, alice.clone());
        async move { connect(addr, &alice).await.ok() }
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_closed_with_4401_when_its_token_expires() {
    let (_cluster, app) = start(|_| {}).await;
    let short = mint("brief", Role::Executive, Duration::from_secs(2));
    let mut ws = connect(app.addr, &short).await.expect("valid for now");
    send(&mut ws, json!({"op": "subscribe", "channel": "executive"})).await;
    assert_eq!(next(&mut ws).await["type"], json!("subscribed"));
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                Some(Ok(_)) => {}
                other => panic!("cut without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed once the token expired");
    assert_eq!(closed, Some((4401, "token expired".to_owned())));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_are_bad_request_and_every_frame_counts_toward_the_rate_limit() {
    let (_cluster, app) = start(|_| {}).await;
    let mut ws = connect(app.addr, &token(Role::Executive, None)).await.unwrap();
    ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    let e = next(&mut ws).await;
    assert_eq!((e["type"].clone(), e["code"].clone()), (json!("error"), json!("bad_request")), "{e}");
    // Ping frames (not `{"op":"ping"}` messages) count as well: 1 + 30 > 20.
    for _ in 0..30 {
        ws.send(Message::Ping(Default::default())).await.unwrap();
    }
    let e = next(&mut ws).await;
    assert_eq!((e["type"].clone(), e["code"].clone()), (json!("error"), json!("rate_limited")), "{e}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_channel_is_dropped_and_recreated_in_a_new_epoch() {
    let (_cluster, app) = start(|c| c.push.idle_channel_ttl = "200ms".parse().unwrap()).await;
    let exec = token(Role::Executive, None);
    let mut ws = connect(app.addr, &exec).await.unwrap();
    send(&mut ws, json!({"op": "subscribe", "channel": "executive"})).await;
    let first = next(&mut ws).await;
    assert_eq!(first["type"], json!("subscribed"));
    let epoch = first["epoch"].as_u64().expect("subscribed carries the epoch");
    let seq = first["seq"].as_u64().unwrap();
    assert_eq!(next(&mut ws).await["type"], json!("snapshot"));

    // Within the epoch, `since` is honoured: nothing was missed, so no snapshot.
    let mut other = connect(app.addr, &exec).await.unwrap();
    send(&mut other, json!({"op": "subscribe", "channel": "executive", "since": seq, "epoch": epoch})).await;
    send(&mut other, json!({"op": "ping"})).await;
    let resumed = next(&mut other).await;
    assert_eq!((resumed["epoch"].as_u64(), resumed["seq"].as_u64()), (Some(epoch), Some(seq)), "{resumed}");
    assert_eq!(next(&mut other).await, json!({"type": "pong"}), "a resume, not a snapshot");

    // Nobody left on the channel: it is dropped after the TTL.
    for c in [&mut ws, &mut other] {
        send(c, json!({"op": "unsubscribe", "channel": "executive"})).await;
    }
    wait_for("the idle channel dropped", Duration::from_secs(10), || async {
        (metric(app.addr, "cspulse_ws_channels").await == 0.0).then_some(())
    })
    .await;

    // Recreated: a new epoch, numbered above the old one; the old `since`
    // is answered with a snapshot, with or without the old epoch named.
    for resume in [json!({"since": seq, "epoch": epoch}), json!({"since": seq})] {
        let mut op = json!({"op": "subscribe", "channel": "executive"});
        op.as_object_mut().unwrap().extend(resume.as_object().unwrap().clone());
        send(&mut ws, op).await;
        let again = next(&mut ws).await;
        assert_eq!(again["type"], json!("subscribed"));
        assert_ne!(again["epoch"].as_u64(), Some(epoch), "a new epoch: {again}");
        assert!(again["seq"].as_u64().unwrap() > seq, "numbered above the old epoch: {again}");
        let snapshot = next(&mut ws).await;
        assert_eq!((snapshot["type"].clone(), snapshot["seq"].clone()), (json!("snapshot"), again["seq"].clone()));
        send(&mut ws, json!({"op": "unsubscribe", "channel": "executive"})).await;
        wait_for("dropped again", Duration::from_secs(10), || async {
            (metric(app.addr, "cspulse_ws_channels").await == 0.0).then_some(())
        })
        .await;
    }
    app.shutdown().await;
}
