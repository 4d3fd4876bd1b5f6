//! Instances (SPEC §18): two processes never write the same checkpoint (a
//! directory store is locked by the process using it), and positions are
//! stored per topic name, so a renamed topic is consumed from its beginning.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use cspulse::app::App;
use cspulse::auth::Role;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_cspulse");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_the_same_directory_store_is_refused_at_start() {
    let (_cluster, mut config) = cluster_and_config();
    let dir = tempfile::tempdir().unwrap();
    config.state.store = format!("file://{}", dir.path().display());
    let app = App::start(&config).await.expect("the first instance starts");

    let mut second = Command::new(BIN)
        .arg("serve")
        .env("CSPULSE__KAFKA__BROKERS", &config.kafka.brokers)
        .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
        .env("CSPULSE__HTTP__LISTEN", "127.0.0.1:0")
        .env("CSPULSE__STATE__STORE", &config.state.store)
        .env("CSPULSE__HISTORY__STORE", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cspulse serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second instance on the same directory store kept running");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    second.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!status.success(), "the second instance must not run:\n{stderr}");
    assert!(
        stderr.contains(&format!("{} is in use by another cspulse process", dir.path().display())),
        "the error names the directory:\n{stderr}"
    );
    app.shutdown().await;
    // The lock goes with the process that held it: the directory is usable again.
    let again = App::start(&config).await.expect("a new instance starts once the first has stopped");
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_topic_is_consumed_from_its_beginning() {
    test_logging();
    let (cluster, mut config) = cluster_and_config();
    let dir = tempfile::tempdir().unwrap();
    config.state.store = format!("file://{}", dir.path().display());
    let renamed = format!("cs.usage.renamed-{}", std::process::id());
    cluster.create_topic(&renamed, 4, 1).unwrap();
    let p = producer(&config.kafka.brokers);
    let usage = |id: &str, user: &str| {
        serde_json::to_vec(&json!({"event_id": id, "ts": "2026-11-01T00:00:00Z", "account_id": "acme", "user_id": user, "feature": "api"}))
            .unwrap()
    };
    for i in 0..3 {
        produce(&p, "cs.usage", 0, "acme", &usage(&format!("old-{i}"), &format!("old-user-{i}"))).await;
    }
    // The new topic's first messages: offsets 0–2, behind the old topic's position 3.
    for i in 0..3 {
        produce(&p, &renamed, 0, "acme", &usage(&format!("new-{i}"), &format!("new-user-{i}"))).await;
    }
    let exec = token(Role::Executive, None);
    let active_users = |base: String| {
        let exec = exec.clone();
        async move {
            let (_, acme) = get(&format!("{base}/api/v1/accounts/acme"), Some(&exec)).await;
            acme["usage"]["active_users_30d"].as_u64()
        }
    };

    let app = App::start(&config).await.expect("engine starts");
    let base = format!("http://{}", app.addr);
    wait_for("the old topic's 3 users", Duration::from_secs(30), || {
        let f = active_users(base.clone());
        async move { (f.await == Some(3)).then_some(()) }
    })
    .await;
    app.shutdown().await; // final checkpoint, with the old topic's positions

    config.kafka.topics.usage = renamed.clone();
    let app = App::start(&config).await.expect("engine restarts");
    let base = format!("http://{}", app.addr);
    wait_for("the renamed topic's 3 users as well", Duration::from_secs(30), || {
        let f = active_users(base.clone());
        async move { (f.await == Some(6)).then_some(()) }
    })
    .await;
    app.shutdown().await;
}
