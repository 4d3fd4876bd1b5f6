//! Alerts are never lost (SPEC §5.3 additions): a transition stays in the
//! checkpointed outbox until the broker acknowledges it. With the alert
//! topic unavailable, failed deliveries are counted and retried; a kill -9
//! after a checkpoint and a restart once the topic is back deliver every
//! transition; a full outbox pauses ingestion (and `/readyz` says why)
//! until it drains, dropping nothing.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::auth::Role;
use rdkafka::types::RDKafkaRespErr;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cspulse");

/// A P1 ticket on a new account: `p1_ticket_open` and `account_red` fire.
fn p1_ticket(account: &str, minute: u32) -> Vec<u8> {
    serde_json::to_vec(&json!({"event_id": format!("t-{account}"), "ts": format!("2026-11-02T09:{minute:02}:00Z"),
        "account_id": account, "ticket_id": "T1", "action": "opened", "priority": "p1"}))
    .unwrap()
}

fn alert_ids(records: &[(Option<String>, Value)]) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = records
        .iter()
        .map(|(_, v)| (v["alert_id"].as_str().unwrap().to_owned(), v["state"].as_str().unwrap().to_owned()))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

struct Engine {
    child: Child,
}

impl Engine {
    fn start(config: &std::path::Path, brokers: &str, store: &str, port: u16, log: &std::fs::File) -> Engine {
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env("CSPULSE__KAFKA__BROKERS", brokers)
            .env("CSPULSE__KAFKA__GROUP_ID", format!("outbox-{port}"))
            .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
            .env("CSPULSE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("CSPULSE__STATE__STORE", store)
            .env("CSPULSE__HISTORY__STORE", "off")
            .env("RUST_LOG", "cspulse=info")
            .stdout(Stdio::null())
            .stderr(log.try_clone().unwrap())
            .spawn()
            .unwrap();
        Engine { child }
    }

    /// Waits until the engine answers HTTP at `base`.
    async fn serving(&self, base: &str) {
        wait_for("the engine to listen", Duration::from_secs(30), || {
            let url = format!("{base}/healthz");
            async move { reqwest::get(&url).await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_survive_an_unavailable_alert_topic_and_a_kill_9() {
    let (cluster, config) = cluster_and_config();
    cluster.topic_error("cs.alerts", RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "[kafka.properties]\n\"fetch.wait.max.ms\" = \"1\"\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n[checkpoint]\ninterval = \"100ms\"\n"
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let base = format!("http://{addr}");
    let log = tempfile::NamedTempFile::new().unwrap();
    let engine = Engine::start(file.path(), &config.kafka.brokers, &store, port, log.as_file());
    engine.serving(&base).await;

    let p = producer(&config.kafka.brokers);
    for (i, account) in ["acme", "globex"].into_iter().enumerate() {
        produce(&p, "cs.tickets", i as i32, account, &p1_ticket(account, i as u32)).await;
    }
    let exec = token(Role::Executive, None);
    wait_for("four alerts firing", Duration::from_secs(60), || {
        let (url, exec) = (format!("{base}/api/v1/alerts?state=firing"), exec.clone());
        async move { (get(&url, Some(&exec)).await.1["alerts"].as_array()?.len() == 4).then_some(()) }
    })
    .await;
    wait_for("failed deliveries counted", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move { (metric(&addr, "cspulse_alert_delivery_errors_total").await >= 1.0).then_some(()) }
    })
    .await;
    assert_eq!(metric(&addr, "cspulse_alert_outbox").await, 4.0, "all four wait for the broker");
    // Two more checkpoints, so one was cut after the four were folded.
    let taken = metric(&addr, "cspulse_checkpoint_duration_seconds_count").await;
    wait_for("two more checkpoints", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move { (metric(&addr, "cspulse_checkpoint_duration_seconds_count").await >= taken + 2.0).then_some(()) }
    })
    .await;
    engine.kill9();

    // The topic comes back; the restarted engine produces what the
    // checkpoint held unacknowledged.
    cluster.topic_error("cs.alerts", RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR).unwrap();
    let engine = Engine::start(file.path(), &config.kafka.brokers, &store, port, log.as_file());
    engine.serving(&base).await;
    let records = tokio::task::spawn_blocking({
        let brokers = config.kafka.brokers.clone();
        move || consume_all(&brokers, "cs.alerts", 4, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let ids = alert_ids(&records);
    let rules: std::collections::BTreeSet<(String, String)> = records
        .iter()
        .map(|(_, v)| (v["rule"].as_str().unwrap().to_owned(), v["scope_id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(ids.len(), 4, "every transition arrives: {records:#?}");
    assert!(ids.iter().all(|(_, state)| state == "firing"));
    for account in ["acme", "globex"] {
        for rule in ["p1_ticket_open", "account_red"] {
            assert!(rules.contains(&(rule.to_owned(), account.to_owned())), "{rule} {account}: {records:#?}");
        }
    }
    wait_for("the outbox drained", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move { (metric(&addr, "cspulse_alert_outbox").await == 0.0).then_some(()) }
    })
    .await;
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(text.contains("checkpoint holds unacknowledged"), "{text}");
    drop(file);
    engine.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_pauses_ingestion_until_the_broker_takes_it() {
    let (cluster, mut config) = cluster_and_config();
    cluster.topic_error("cs.alerts", RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED).unwrap();
    config.alerts.outbox_max = 2;
    // Learn quickly that the topic is back.
    config.kafka.properties.insert("topic.metadata.refresh.interval.ms".into(), "500".into());
    let app = App::start(&config).await.expect("engine starts");
    let (addr, base) = (app.addr.to_string(), format!("http://{}", app.addr));
    let exec = token(Role::Executive, None);
    let p = producer(&config.kafka.brokers);
    produce(&p, "cs.tickets", 0, "acme", &p1_ticket("acme", 0)).await;
    wait_for("ingestion paused", Duration::from_secs(30), || {
        let base = base.clone();
        async move {
            let (status, body) = get(&format!("{base}/readyz"), None).await;
            (status == 503 && body["ingestion_paused"].as_str()?.contains("outbox")).then_some(())
        }
    })
    .await;
    // Produced while paused: not folded until the outbox drains.
    produce(&p, "cs.tickets", 1, "globex", &p1_ticket("globex", 1)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, globex) = get(&format!("{base}/api/v1/accounts/globex"), Some(&exec)).await;
    assert_eq!(globex["error"], json!("not_found"), "paused: {globex}");
    assert!(metric(&addr, "cspulse_alert_delivery_errors_total").await >= 1.0);

    cluster.topic_error("cs.alerts", RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR).unwrap();
    let records = tokio::task::spawn_blocking({
        let brokers = config.kafka.brokers.clone();
        move || consume_all(&brokers, "cs.alerts", 4, Duration::from_secs(60))
    })
    .await
    .unwrap();
    assert_eq!(alert_ids(&records).len(), 4, "both accounts' alerts arrive: {records:#?}");
    let (status, body) = get(&format!("{base}/readyz"), None).await;
    assert!(body["ingestion_paused"].is_null(), "{status} {body}");
    let (status, _) = get(&format!("{base}/api/v1/accounts/globex"), Some(&exec)).await;
    assert_eq!(status, 200, "folded once ingestion resumed");
    app.shutdown().await;
}
