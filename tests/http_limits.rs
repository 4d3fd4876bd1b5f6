//! SPEC §18 HTTP limits against the running server, over raw TCP where the
//! point is what a misbehaving client does: slow request heads are cut at the
//! header timeout, idle keep-alive connections at the idle timeout (and not
//! before), large bodies get 413, connections beyond the cap are refused, and
//! every error is JSON, extractor rejections included. Also `/readyz` shows no
//! internals without a token.

mod common;

use std::time::{Duration, Instant};

use common::*;
use cspulse::app::App;
use cspulse::auth::Role;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (EOF or reset) and returns what came, or
/// `None` if it is still open at `deadline`.
async fn closed_by(stream: &mut TcpStream, deadline: tokio::time::Instant) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends one request on `stream` and reads its response head and body
/// (`Content-Length` bodies only, which is all the server sends here).
async fn request(stream: &mut TcpStream, raw: &str) -> String {
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the response: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return text;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("a response in time")
}

async fn start(snippet: impl FnOnce(&mut cspulse::config::Config)) -> (Cluster, App) {
    let (cluster, mut config) = cluster_and_config();
    snippet(&mut config);
    let app = App::start(&config).await.expect("engine starts");
    (cluster, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_closed_at_the_header_timeout() {
    let (_cluster, app) = start(|c| c.http.header_timeout = "300ms".parse().unwrap()).await;
    // 200 clients that send part of a request head and then nothing.
    let started = Instant::now();
    let mut streams = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: cspulse\r\nX-Slow: ").await.unwrap();
        streams.push(s);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let closed = futures_util::future::join_all(streams.iter_mut().map(|s| closed_by(s, deadline))).await;
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} of 200 slow-header connections still open after {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(250), "closed for the timeout, not at once");
    assert!(closed.iter().all(|c| c.as_ref().is_some_and(Vec::is_empty)), "no response to a request never sent");
    assert!(metric(app.addr, "cspulse_http_timeouts_total{kind=\"header\"}").await >= 200.0);
    // A client that sends its head in time is served.
    assert_eq!(get(&format!("http://{}/healthz", app.addr), None).await.0, 200);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_after_the_idle_timeout_not_the_header_timeout() {
    let (_cluster, app) = start(|c| {
        c.http.header_timeout = "300ms".parse().unwrap();
        c.http.idle_timeout = "1500ms".parse().unwrap();
    })
    .await;
    let ask = "GET /healthz HTTP/1.1\r\nHost: cspulse\r\n\r\n";
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    assert!(request(&mut s, ask).await.starts_with("HTTP/1.1 200"));
    // Idle for longer than the header timeout: still open, and serves again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(request(&mut s, ask).await.starts_with("HTTP/1.1 200"), "kept alive past the header timeout");
    let answered = Instant::now();
    let closed = closed_by(&mut s, tokio::time::Instant::now() + Duration::from_secs(6)).await;
    let idle = answered.elapsed();
    assert!(closed.is_some(), "an idle keep-alive connection is closed");
    assert!(idle >= Duration::from_millis(1300), "closed at the idle timeout, not before: {idle:?}");
    assert!(metric(app.addr, "cspulse_http_timeouts_total{kind=\"idle\"}").await >= 1.0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_json() {
    let (_cluster, app) = start(|_| {}).await;
    let exec = token(Role::Executive, None);
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/v1/alerts", app.addr);
    let big = client.get(&url).bearer_auth(&exec).body(vec![b'x'; 65_537]).send().await.unwrap();
    assert_eq!(big.status().as_u16(), 413);
    assert!(big.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let body: Value = big.json().await.unwrap();
    assert_eq!(body["error"], json!("payload_too_large"), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    // At the limit is fine.
    let fits = client.get(&url).bearer_auth(&exec).body(vec![b'x'; 65_536]).send().await.unwrap();
    assert_eq!(fits.status().as_u16(), 200);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_extractor_rejections_included() {
    let (_cluster, app) = start(|_| {}).await;
    let base = format!("http://{}", app.addr);
    let exec = token(Role::Executive, None);
    let client = reqwest::Client::new();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        // A query string that does not deserialize (a repeated field).
        (client.get(format!("{base}/api/v1/alerts?state=firing&state=firing")).bearer_auth(&exec), 400, "bad_request"),
        (client.get(format!("{base}/api/v1/channels/executive?token=a&token=b")), 400, "bad_request"),
        // A path parameter that is not UTF-8.
        (client.get(format!("{base}/api/v1/accounts/%FF%FE")).bearer_auth(&exec), 400, "bad_request"),
        (client.post(format!("{base}/healthz")), 405, "method_not_allowed"),
        (client.delete(format!("{base}/api/v1/alerts")).bearer_auth(&exec), 405, "method_not_allowed"),
        (client.get(format!("{base}/no/such/route")), 404, "not_found"),
        // `/ws` without the upgrade headers, with a valid token.
        (client.get(format!("{base}/ws")).bearer_auth(&exec), 400, "bad_request"),
        (client.get(format!("{base}/ws")), 401, "unauthorized"),
    ];
    for (req, status, code) in cases {
        let res = req.send().await.unwrap();
        let what = format!("{} {}", res.status(), res.url());
        assert_eq!(res.status().as_u16(), status, "{what}");
        let kind = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        assert!(kind.starts_with("application/json"), "{what}: content-type {kind:?}");
        let text = res.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text:?}"));
        assert_eq!(body["error"], json!(code), "{what}: {body}");
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["error", "message"], "{what}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_at_once() {
    let (_cluster, app) = start(|c| c.http.max_connections = 5).await;
    // Five connections that send nothing hold the five slots.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // Accepted in order: by the time the sixth is accepted, the five hold their slots.
    let mut sixth = TcpStream::connect(app.addr).await.unwrap();
    let refused = closed_by(&mut sixth, tokio::time::Instant::now() + Duration::from_secs(3)).await;
    let refused = refused.expect("the connection beyond the cap is closed at once");
    let text = String::from_utf8_lossy(&refused);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.is_empty() || text.contains(r#""error":"unavailable""#), "{text}");
    // A slot freed is a slot for the next client.
    drop(held.pop());
    wait_for("a freed slot serves again", Duration::from_secs(5), || {
        let url = format!("http://{}/healthz", app.addr);
        async move {
            let res = reqwest::Client::new().get(&url).timeout(Duration::from_secs(1)).send().await.ok()?;
            (res.status() == 200).then_some(())
        }
    })
    .await;
    drop(held);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_without_a_token_shows_status_not_internals() {
    let (_cluster, app) = start(|_| {}).await;
    let url = format!("http://{}/readyz", app.addr);
    let (_, anonymous) = get(&url, None).await;
    assert!(anonymous["ready"].is_boolean(), "{anonymous}");
    assert!(anonymous["checkpoint"]["consecutive_failures"].is_number(), "{anonymous}");
    for hidden in ["store", "error"] {
        assert!(anonymous["checkpoint"].get(hidden).is_none(), "{hidden} shown without a token: {anonymous}");
    }
    let (_, forged) = get(&url, Some("not-a-token")).await;
    assert!(forged["checkpoint"].get("store").is_none(), "{forged}");
    let (_, operator) = get(&url, Some(&token(Role::Executive, None))).await;
    assert_eq!(operator["checkpoint"]["store"], json!("memory"), "{operator}");
    assert!(operator["checkpoint"].get("error").is_some(), "{operator}");
    app.shutdown().await;
}
