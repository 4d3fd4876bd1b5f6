//! Shared helpers of the integration tests: a private mock Kafka cluster per
//! test, a producer, an HTTP client, and waiting on conditions with deadlines.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use cspulse::auth::{Auth, Role};
use cspulse::config::Config;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};

pub const SECRET: &str = "integration-test-secret-0123456789";

pub type Cluster = MockCluster<'static, DefaultProducerContext>;

/// A fresh embedded cluster with the default topics, and a config pointing at it.
pub fn cluster_and_config() -> (Cluster, Config) {
    let mut config = Config::from_toml(&format!(
        "[auth]\njwt_secret = \"{SECRET}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[state]\nstore = \"memory\"\n[history]\nstore = \"off\"\n"
    ))
    .expect("test config");
    let cluster = cspulse::demo::embedded_broker(&config).expect("mock cluster");
    config.kafka.brokers = cluster.bootstrap_servers();
    cspulse::demo::low_latency(&mut config);
    (cluster, config)
}

pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "0").create().expect("producer")
}

/// Produces one message to a partition and waits for the acknowledgement.
pub async fn produce(p: &FutureProducer, topic: &str, partition: i32, key: &str, payload: &[u8]) {
    let record = FutureRecord::to(topic).partition(partition).key(key).payload(payload);
    p.send(record, Duration::from_secs(10)).await.expect("delivered");
}

pub fn token(role: Role, csm: Option<&str>) -> String {
    Auth::new(SECRET, false).mint("test", role, csm, Duration::from_secs(3600)).unwrap()
}

pub async fn get(url: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let mut req = client.get(url).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("http request");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// Polls `f` until it returns `Some`, or panics after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads every message of `topic` (all partitions) until `n` are read or the deadline.
pub fn consume_all(brokers: &str, topic: &str, n: usize, limit: Duration) -> Vec<(Option<String>, serde_json::Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            let value = serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON record");
            out.push((key, value));
        }
    }
    out
}

/// The value of a series in `/metrics` at `addr` (host:port): a bare name
/// sums all its label sets, a name with labels is that one series; 0 if absent.
pub async fn metric(addr: impl std::fmt::Display, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Logs to the test's output when `TEST_LOG` is set (for debugging).
pub fn test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ =
            tracing_subscriber::fmt().with_env_filter(std::env::var("TEST_LOG").unwrap()).with_test_writer().try_init();
    }
}

/// A new, empty database on the machine's PostgreSQL (127.0.0.1:5432,
/// trust auth; `scripts/test.sh` starts it), by name.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let name = format!("cspulse_history_{}_{}", std::process::id(), cspulse::time::wall_now());
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (scripts/test.sh starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
    name
}

/// The schema `schemas/<name>.schema.json`, formats asserted, with the alert
/// and WebSocket schemas it may refer to registered.
pub fn schema(name: &str) -> jsonschema::Validator {
    let read = |name: &str| -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas").join(name);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let resource = |name: &str| {
        let s = read(name);
        (s["$id"].as_str().unwrap().to_owned(), jsonschema::Resource::from_contents(s).unwrap())
    };
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .with_resources([resource("alert.schema.json"), resource("ws-server.schema.json")].into_iter())
        .build(&read(&format!("{name}.schema.json")))
        .unwrap()
}

/// What `python3 -c script` prints as JSON, given `input` on stdin (the
/// tests' independent readers of what we render: csv, zipfile, openpyxl).
pub fn python_json(script: &str, input: &[u8]) -> serde_json::Value {
    let mut child = std::process::Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 failed on {script}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A Python with openpyxl: `python3`, else the system's (where
/// `scripts/test.sh` may have installed Debian's python3-openpyxl).
pub fn python() -> &'static str {
    static FOUND: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        ["python3", "/usr/bin/python3"]
            .into_iter()
            .find(|p| {
                std::process::Command::new(p)
                    .args(["-c", "import openpyxl"])
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .unwrap_or("python3")
    })
}

/// Reads an XLSX workbook with openpyxl: `{sheet: [[cell…]…]}`.
pub const READ_XLSX: &str = "import io, json, sys, openpyxl
wb = openpyxl.load_workbook(io.BytesIO(sys.stdin.buffer.read()), read_only=True)
print(json.dumps({ws.title: [list(r) for r in ws.iter_rows(values_only=True)] for ws in wb.worksheets}))";
