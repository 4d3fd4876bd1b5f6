//! Durability with the real binary (SPEC §10): `kill -9` at several points,
//! restart, finish the stream; the final views equal those of an
//! uninterrupted run exactly. With the directory store and with Redis.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use cspulse::auth::Role;
use cspulse::event::Topic;
use cspulse::state::log::{Row, ScopeKind, account_object};
use cspulse::state::view::Channel;
use cspulse::state::{Engine, Input};
use cspulse::time::{MICROS_PER_MIN, Ts, format_rfc3339, parse_rfc3339};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cspulse");

/// A deterministic stream: (topic, partition, key, payload); partitions follow accounts.
fn stream(n: usize) -> Vec<(Topic, i32, String, Vec<u8>)> {
    let t0 = parse_rfc3339("2026-10-20T00:00:00Z").unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let a = i % 6;
        let account = format!("acct-{a}");
        let ts = format_rfc3339(t0 + i as i64 * 7 * MICROS_PER_MIN);
        let id = format!("ev-{i}");
        let (topic, body) = match i % 11 {
            0 => (
                Topic::Accounts,
                json!({"csm_id": format!("csm-{}", a % 3), "segment": (["smb","mid"][a % 2]), "seats": 3 + a, "name": format!("Account {a}")}),
            ),
            1..=5 => (Topic::Usage, json!({"user_id": format!("u{}", i % 5), "feature": (["api","reports"][i % 2])})),
            6 => (
                Topic::Tickets,
                json!({"ticket_id": format!("T{}", i % 4), "action": "opened", "priority": format!("p{}", 1 + i % 4)}),
            ),
            7 => (
                Topic::Tickets,
                json!({"ticket_id": format!("T{}", (i + 3) % 4), "action": (["first_response","resolved","escalated"][i % 3])}),
            ),
            8 => (Topic::Tickets, json!({"ticket_id": "C", "action": "csat", "score": 1 + i % 5})),
            9 => (
                Topic::Revenue,
                json!({"kind": (["new","expansion","contraction"][i % 3]), "arr": (1000 + (i * 37) % 900)}),
            ),
            _ => (Topic::Usage, json!({"user_id": "u9", "feature": "alerts"})),
        };
        let mut obj = json!({"event_id": id, "ts": ts, "account_id": account});
        obj.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        out.push((topic, a as i32 % 4, account, serde_json::to_vec(&obj).unwrap()));
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Node {
    config_file: tempfile::NamedTempFile,
    brokers: String,
    store: String,
    /// `history.store` (`off`, or a store the test reads back).
    history: String,
    port: u16,
    child: Option<Child>,
    /// The log of the current incarnation.
    log: tempfile::NamedTempFile,
}

impl Node {
    fn new(brokers: &str, store: String, history: String) -> Node {
        let mut config_file = tempfile::NamedTempFile::new().unwrap();
        // Fast group rejoin after a kill (KAFKA-NOTES), fast checkpoints.
        writeln!(
            config_file,
            "[kafka.properties]\n\"fetch.wait.max.ms\" = \"1\"\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n[checkpoint]\ninterval = \"100ms\"\n"
        )
        .unwrap();
        Node {
            config_file,
            brokers: brokers.to_owned(),
            store,
            history,
            port: free_port(),
            child: None,
            log: tempfile::NamedTempFile::new().unwrap(),
        }
    }

    fn start(&mut self) {
        self.log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(self.config_file.path())
            .env("CSPULSE__KAFKA__BROKERS", &self.brokers)
            .env("CSPULSE__KAFKA__GROUP_ID", format!("durable-{}", self.port))
            .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
            .env("CSPULSE__HTTP__LISTEN", format!("127.0.0.1:{}", self.port))
            .env("CSPULSE__STATE__STORE", &self.store)
            .env("CSPULSE__HISTORY__STORE", &self.history)
            // History rows depend on the fold order: fold in event time.
            .env("CSPULSE__TIME__ALIGN_WAIT", "50ms")
            .env("RUST_LOG", "cspulse=info")
            .stdout(Stdio::null())
            .stderr(self.log.reopen().unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until the node serves a watermark at or past `as_of` (same
    /// RFC 3339 form, so the strings order like the instants).
    async fn wait_as_of(&self, as_of: &str) {
        let url = self.url("/api/v1/channels/executive");
        let token = token(Role::Executive, None);
        let want = as_of.to_owned();
        wait_for(&format!("as_of {as_of}"), Duration::from_secs(60), || {
            let (url, token, want) = (url.clone(), token.clone(), want.clone());
            async move {
                let res = reqwest::Client::new()
                    .get(&url)
                    .bearer_auth(&token)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .ok()?;
                let v: Value = res.json().await.ok()?;
                (v["as_of"].as_str()? >= want.as_str()).then_some(())
            }
        })
        .await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn as_of_after(events: &[(Topic, i32, String, Vec<u8>)]) -> String {
    let v: Value = serde_json::from_slice(&events.last().unwrap().3).unwrap();
    v["ts"].as_str().unwrap().to_owned()
}

async fn produce_all(p: &rdkafka::producer::FutureProducer, events: &[(Topic, i32, String, Vec<u8>)]) {
    for (topic, partition, key, payload) in events {
        produce(p, topic.default_name(), *partition, key, payload).await;
    }
}

async fn crash_and_recover(store: String, history: String) {
    let (_cluster, config) = cluster_and_config();
    let events = stream(660);
    let (a, rest) = events.split_at(150);
    let (b, rest) = rest.split_at(200);
    let (c, d) = rest.split_at(160);
    let p = producer(&config.kafka.brokers);
    let mut node = Node::new(&config.kafka.brokers, store, history);

    // 1. Killed before its first checkpoint could matter.
    node.start();
    produce_all(&p, a).await;
    node.kill9();
    // 2. Restart, catch up, let checkpoints happen, kill between them.
    node.start();
    produce_all(&p, b).await;
    node.wait_as_of(&as_of_after(b)).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    node.kill9();
    // 3. Kills at arbitrary moments while consuming and checkpointing every 100 ms.
    node.start();
    let started = Instant::now();
    produce_all(&p, c).await;
    for pause in [137u64, 71, 263] {
        node.wait_as_of(&as_of_after(b)).await;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        node.kill9();
        node.start();
    }
    assert!(started.elapsed() < Duration::from_secs(120));
    // 4. Finish the stream on the last incarnation.
    produce_all(&p, d).await;
    node.wait_as_of(&as_of_after(&events)).await;

    let log = std::fs::read_to_string(node.log.path()).unwrap();
    assert!(log.contains("checkpoint restored"), "the last incarnation resumed from a checkpoint:\n{log}");

    // The uninterrupted run, folded in process.
    let mut reference = Engine::new(config.state_config());
    reference.set_history(true);
    let mut rows = Vec::new();
    for (i, (topic, partition, _, payload)) in events.iter().enumerate() {
        let input =
            Input { topic: *topic, partition: *partition, offset: i as i64, payload, wall: cspulse::time::wall_now() };
        reference.fold(&input);
        reference.post_alerts();
        let made = reference.history_pending(usize::MAX);
        if let Some(&(last, _)) = made.last() {
            reference.history_committed(last);
        }
        rows.extend(made.into_iter().map(|(_, r)| r));
    }
    history_equals(&node, &rows).await;
    let exec = token(Role::Executive, None);
    for channel in ["executive", "manager", "analyst", "csm:csm-0", "csm:csm-1", "csm:csm-2"] {
        let (status, got) = get(&node.url(&format!("/api/v1/channels/{channel}")), Some(&exec)).await;
        assert_eq!(status, 200);
        let want = reference.channel_view(&Channel::parse(channel).unwrap());
        assert_eq!(got, want, "channel {channel} differs from an uninterrupted run");
    }
    for a in 0..6 {
        let id = format!("acct-{a}");
        let (_, got) = get(&node.url(&format!("/api/v1/accounts/{id}")), Some(&exec)).await;
        assert_eq!(got, reference.account_view(&id).unwrap(), "account {id}");
    }
}

/// The node's history store holds exactly the rows of the uninterrupted run
/// (none lost, none different, none twice): every portfolio row, and every
/// account's daily rows, tier log and alert log.
async fn history_equals(node: &Node, rows: &[Row]) {
    let exec = token(Role::Executive, None);
    if node.history == "off" {
        return;
    }
    let portfolio: Vec<(Ts, Value)> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Scope(s) if s.kind == ScopeKind::Portfolio => Some((s.at, s.kpi())),
            _ => None,
        })
        .collect();
    assert!(portfolio.len() > 500, "the stream crosses many boundaries: {}", portfolio.len());
    let (from, to) = (format_rfc3339(portfolio[0].0), format_rfc3339(portfolio.last().unwrap().0));
    // The writer catches up after the last restart: wait until the last
    // boundary's portfolio row is in, then every row must be there. (The
    // answer reads the portfolio first and the segments after, each in a
    // statement of its own: while the writer commits, the last points may
    // hold segments whose portfolio row the first statement did not see.)
    let url = node.url(&format!("/api/v1/history/executive?from={from}&to={to}&step=5m"));
    let body = wait_for("the last boundary's row", Duration::from_secs(30), || async {
        let (status, body) = get(&url, Some(&exec)).await;
        assert_eq!(status, 200, "{body}");
        let last = body["points"].as_array().unwrap().last().cloned().unwrap_or_default();
        (last["at"] == to.as_str() && last["data"]["portfolio"].is_object()).then_some(body)
    })
    .await;
    let points = body["points"].as_array().unwrap();
    if points.len() != portfolio.len() {
        let got: std::collections::BTreeSet<&str> = points.iter().map(|p| p["at"].as_str().unwrap()).collect();
        let missing: Vec<String> =
            portfolio.iter().map(|(t, _)| format_rfc3339(*t)).filter(|t| !got.contains(t.as_str())).collect();
        panic!("{} rows missing, from {:?} to {:?}", missing.len(), missing.first(), missing.last());
    }
    for (point, (at, kpi)) in points.iter().zip(&portfolio) {
        assert_eq!(point["at"], format_rfc3339(*at));
        assert_eq!(
            &point["data"]["portfolio"],
            kpi,
            "portfolio at {} (the point holds {:?}; gaps {})",
            format_rfc3339(*at),
            point["data"].as_object().map(|d| d.keys().collect::<Vec<_>>()),
            body["gaps"]
        );
    }
    for a in 0..6 {
        let id = format!("acct-{a}");
        let days: Vec<Value> = rows
            .iter()
            .filter_map(|r| match r {
                Row::Account(d) if *d.account_id == *id => {
                    let values: Vec<Value> = serde_json::from_str(&d.values).unwrap();
                    Some(json!({"at": format_rfc3339(d.at), "account": account_object(&id, &values)}))
                }
                _ => None,
            })
            .collect();
        let tiers: Vec<Value> = rows
            .iter()
            .filter_map(|r| match r {
                Row::Tier(t) if *t.account_id == *id => {
                    let mut v = t.to_json();
                    v.as_object_mut().unwrap().remove("account_id");
                    Some(v)
                }
                _ => None,
            })
            .collect();
        let (_, got) = get(&node.url(&format!("/api/v1/accounts/{id}/history")), Some(&exec)).await;
        assert!(!days.is_empty() && !tiers.is_empty(), "{id} has daily rows and tier changes");
        assert_eq!(got["days"], json!(days), "{id}'s daily rows");
        assert_eq!(got["tier_changes"], json!(tiers), "{id}'s tier log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_with_the_directory_store() {
    let dir = tempfile::tempdir().unwrap();
    let history = format!("sqlite://{}", dir.path().join("history.db").display());
    crash_and_recover(format!("file://{}", dir.path().join("state").display()), history).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_with_redis() {
    // The machine's Redis at 127.0.0.1:6379; a database of its own per run.
    let store = "redis://127.0.0.1:6379/0".to_owned();
    if redis::Client::open(store.as_str()).and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2))).is_err()
    {
        panic!("Redis must run at 127.0.0.1:6379 (scripts/test.sh starts one)");
    }
    let history = format!("postgres://postgres@127.0.0.1:5432/{}", fresh_postgres_database().await);
    crash_and_recover(store.clone(), history).await;
}
