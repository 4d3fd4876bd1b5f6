//! The real `cspulse` binary: `serve` configured by environment variables,
//! graceful exit on SIGTERM, `check-config` errors naming the key, `token`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use cspulse::auth::{Auth, Role};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_cspulse");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_from_env_folds_and_stops_on_sigterm() {
    let (_cluster, config) = cluster_and_config();
    let port = free_port();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("CSPULSE__KAFKA__BROKERS", &config.kafka.brokers)
        .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
        .env("CSPULSE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("CSPULSE__STATE__STORE", "memory")
        .env("CSPULSE__HISTORY__STORE", "off")
        .env("CSPULSE__KAFKA__GROUP_ID", "binary-test")
        .env("CSPULSE__LOG__FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cspulse");
    let p = producer(&config.kafka.brokers);
    let body = json!({"event_id":"b-1","ts":"2026-11-01T00:00:00Z","account_id":"acme","user_id":"u","feature":"api"});
    produce(&p, "cs.usage", 2, "acme", &serde_json::to_vec(&body).unwrap()).await;
    let url = format!("http://127.0.0.1:{port}/api/v1/accounts/acme");
    let exec = token(Role::Executive, None);
    let acme = wait_for("the binary to fold the event", Duration::from_secs(30), || {
        let (url, exec) = (url.clone(), exec.clone());
        async move {
            let (status, v) = reqwest_get(&url, &exec).await?;
            (status == 200).then_some(v)
        }
    })
    .await;
    assert_eq!(acme["usage"]["last_activity"], json!("2026-11-01T00:00:00Z"));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = wait_for("exit after SIGTERM", Duration::from_secs(20), || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "exit status {status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.lines().any(|l| l.contains("SIGTERM received")), "{log}");
    assert!(log.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "JSON logs: {log}");
    assert!(!log.contains(SECRET), "secrets are never logged");
}

async fn reqwest_get(url: &str, token: &str) -> Option<(u16, serde_json::Value)> {
    let res = reqwest::Client::new().get(url).bearer_auth(token).timeout(Duration::from_secs(2)).send().await.ok()?;
    Some((res.status().as_u16(), res.json().await.ok()?))
}

#[test]
fn check_config_names_the_bad_key_and_exits_2() {
    let out = Command::new(BIN)
        .arg("check-config")
        .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
        .env("CSPULSE__KAFKA__MAX_MESSAGE_BYTES", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("kafka.max_message_bytes"), "{err}");

    let out = Command::new(BIN).arg("check-config").env("CSPULSE__AUTH__JWT_SECRET", SECRET).output().unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("usage = \"cs.usage\"") && !shown.contains(SECRET), "{shown}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[cadence]\nhealth = \"sometimes\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&file)
        .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cadence.health"));
}

#[test]
fn token_mints_a_verifiable_jwt() {
    let out = Command::new(BIN)
        .args(["token", "--role", "csm", "--csm-id", "csm-7", "--ttl", "1h"])
        .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let who = Auth::new(SECRET, false).verify(Some(token.trim())).unwrap();
    assert_eq!((who.role, who.csm_id.as_deref()), (Role::Csm, Some("csm-7")));

    let out =
        Command::new(BIN).args(["token", "--role", "csm"]).env("CSPULSE__AUTH__JWT_SECRET", SECRET).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "csm needs --csm-id");
}
