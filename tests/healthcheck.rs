//! `cspulse healthcheck`, the container HEALTHCHECK: the real binary against
//! tiny std servers that answer 200, 503, garbage or nothing, and against the
//! engine's own `/healthz`.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cspulse");

fn healthcheck(url: &str) -> Output {
    Command::new(BIN).args(["healthcheck", "--url", url]).output().expect("run cspulse healthcheck")
}

/// Serves one connection with `answer` (nothing when `None`, holding the
/// socket open for `hold`) and reports the request head it read.
fn one_shot_server(answer: Option<&'static str>, hold: Duration) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        match answer {
            Some(a) => {
                let _ = socket.write_all(a.as_bytes());
            }
            None => thread::sleep(hold),
        }
    });
    (port, rx)
}

#[test]
fn a_200_exits_0_after_a_plain_http_1_1_get() {
    let (port, request) =
        one_shot_server(Some("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"), Duration::ZERO);
    let out = healthcheck(&format!("http://127.0.0.1:{port}/healthz"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let request = request.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(request.starts_with("GET /healthz HTTP/1.1\r\n"), "{request}");
    assert!(request.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")), "{request}");
}

#[test]
fn a_503_exits_1_and_says_so() {
    let (port, _request) = one_shot_server(Some("HTTP/1.1 503 Service Unavailable\r\n\r\n"), Duration::ZERO);
    let out = healthcheck(&format!("http://127.0.0.1:{port}/readyz"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("503"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_non_http_answer_exits_1() {
    let (port, _request) = one_shot_server(Some("SSH-2.0-OpenSSH_9.2\r\n"), Duration::ZERO);
    assert_eq!(healthcheck(&format!("http://127.0.0.1:{port}/")).status.code(), Some(1));
}

#[test]
fn nothing_listening_exits_1() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert_eq!(healthcheck(&format!("http://127.0.0.1:{port}/healthz")).status.code(), Some(1));
}

#[test]
fn a_server_that_never_answers_exits_1_within_the_timeout() {
    let (port, _request) = one_shot_server(None, Duration::from_secs(10));
    let started = Instant::now();
    let out = healthcheck(&format!("http://127.0.0.1:{port}/healthz"));
    assert_eq!(out.status.code(), Some(1));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(6), "took {took:?}");
}

/// Docker reserves exit code 2 in HEALTHCHECKs: a bad URL is just unhealthy.
#[test]
fn an_unsupported_url_exits_1_not_2() {
    for url in ["https://127.0.0.1/healthz", "127.0.0.1:8080", "http:///healthz"] {
        assert_eq!(healthcheck(url).status.code(), Some(1), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_own_healthz_passes_and_an_unknown_path_fails() {
    let (_cluster, config) = common::cluster_and_config();
    let app = cspulse::app::App::start(&config).await.expect("engine starts");
    let base = format!("http://{}", app.addr);
    let (ok, missing) = tokio::task::spawn_blocking(move || {
        (healthcheck(&format!("{base}/healthz")), healthcheck(&format!("{base}/no-such-path")))
    })
    .await
    .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(missing.status.code(), Some(1));
    app.shutdown().await;
}
