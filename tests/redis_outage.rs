//! A Redis outage mid-run stops neither ingestion nor serving; it shows in
//! `/readyz` and the metrics, and checkpoints resume when Redis is back.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::auth::Role;
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn redis_server(port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/test.sh installs it)")
}

/// `/readyz` as an operator sees it (the error text needs a token, §18).
async fn readyz(base: &str) -> Value {
    get(&format!("{base}/readyz"), Some(&token(Role::Executive, None))).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_does_not_stop_ingestion_and_checkpoints_resume() {
    test_logging();
    let port = free_port();
    let mut redis = redis_server(port);
    let url = format!("redis://127.0.0.1:{port}/0");
    wait_for("redis up", Duration::from_secs(10), || {
        let ok = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .is_ok();
        async move { ok.then_some(()) }
    })
    .await;
    let (_cluster, mut config) = cluster_and_config();
    config.state.store = url.clone();
    config.checkpoint.interval = "100ms".parse().unwrap();
    let app = App::start(&config).await.expect("engine starts");
    let base = format!("http://{}", app.addr);
    let p = producer(&config.kafka.brokers);
    let send = |id: &str, ts: &str| {
        serde_json::to_vec(&json!({"event_id": id, "ts": ts, "account_id": "acme", "user_id": id, "feature": "api"}))
            .unwrap()
    };
    produce(&p, "cs.usage", 0, "acme", &send("e1", "2026-11-01T00:00:00Z")).await;
    wait_for("a healthy checkpoint", Duration::from_secs(30), || {
        let base = base.clone();
        async move {
            let r = readyz(&base).await;
            (r["checkpoint"]["age_seconds"].is_number() && r["checkpoint"]["consecutive_failures"] == json!(0))
                .then_some(())
        }
    })
    .await;

    redis.kill().unwrap();
    redis.wait().unwrap();
    produce(&p, "cs.usage", 0, "acme", &send("e2", "2026-11-01T00:05:00Z")).await;
    let exec = token(Role::Executive, None);
    wait_for("ingestion goes on without Redis", Duration::from_secs(30), || {
        let (base, exec) = (base.clone(), exec.clone());
        async move {
            let (_, acme) = get(&format!("{base}/api/v1/accounts/acme"), Some(&exec)).await;
            (acme["usage"]["active_users_30d"] == json!(2)).then_some(())
        }
    })
    .await;
    let down = wait_for("the outage reported", Duration::from_secs(30), || {
        let base = base.clone();
        async move {
            let r = readyz(&base).await;
            (r["checkpoint"]["consecutive_failures"].as_u64().unwrap_or(0) > 0).then_some(r)
        }
    })
    .await;
    assert!(down["checkpoint"]["error"].as_str().unwrap_or_default().contains("redis"), "{down}");
    wait_for("ready while Redis is down (caught up)", Duration::from_secs(30), || {
        let base = base.clone();
        async move { (get(&format!("{base}/readyz"), None).await.0 == 200).then_some(()) }
    })
    .await;
    let (_, metrics) = get(&format!("{base}/metrics"), None).await;
    assert!(metrics.as_str().unwrap_or_default().contains("cspulse_checkpoint_errors_total"));

    let mut redis = redis_server(port);
    wait_for("checkpoints resumed", Duration::from_secs(60), || {
        let base = base.clone();
        async move { (readyz(&base).await["checkpoint"]["consecutive_failures"] == json!(0)).then_some(()) }
    })
    .await;
    let stored = cspulse::checkpoint::Store::open(&url, &config.kafka.group_id).unwrap().load().unwrap();
    let restored =
        cspulse::state::Engine::decode(config.state_config(), &stored.expect("a checkpoint in the new Redis")).unwrap();
    assert_eq!(restored.account_view("acme").unwrap()["usage"]["active_users_30d"], json!(2), "it reflects e2");
    app.shutdown().await;
    redis.kill().unwrap();
    let _ = redis.wait();
}
