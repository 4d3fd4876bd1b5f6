//! The dashboard client in a real browser: the `cspulse` binary runs against
//! librdkafka's mock cluster with a scripted portfolio, and
//! `dashboards-client/e2e/dashboard.mjs` drives headless Chromium (the Debian
//! `chromium` package through `playwright-core`) over it. This test owns the
//! cluster and the engine; the script asks it, on stdout, to produce an alert
//! trigger and to restart the engine, and gets `ok` on stdin.
//!
//! The engine runs with history (SPEC §15): an SQLite store in a fresh
//! temporary directory, hourly scope rows, event-time alignment, and a few
//! `[[targets]]` from a configuration file, so the trend charts, KPI changes,
//! goal lines, account histories and improvement rates have rows to show.
//!
//! The script also checks SPEC §19 (drill-downs add up to their figure,
//! the explorer, exports read back by Python, saved views across the
//! restart): see `dashboards-client/e2e/explore.mjs`.
//!
//! Needs Node.js, `npm ci` in `dashboards-client/`, `/usr/bin/chromium` and
//! Python with openpyxl; `scripts/test.sh` installs them. A missing piece
//! fails the test loudly.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use cspulse::auth::Role;
use cspulse::time::{MICROS_PER_DAY, MICROS_PER_MIN, format_date, format_rfc3339, utc_day, wall_now};
use rdkafka::producer::FutureProducer;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cspulse");

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards-client")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The alert rules: the defaults (SPEC §5.1) and two scope rules, so the
/// segment and CSM scopes have alerts of their own (on no account), which a
/// drill-down of their alert counts shows apart (SPEC §19).
const RULES_TOML: &str = r#"
[[alerts.rules]]
name = "account_red"
scope = "account"
when = [{metric = "health.tier", op = "==", value = "red"}]
severity = "critical"

[[alerts.rules]]
name = "red_renewal_90d"
scope = "account"
when = [{metric = "health.tier", op = "==", value = "red"}, {metric = "revenue.days_to_renewal", op = ">=", value = 0}, {metric = "revenue.days_to_renewal", op = "<=", value = 90}]
severity = "critical"

[[alerts.rules]]
name = "p1_ticket_open"
scope = "account"
when = [{metric = "tickets.open_p1", op = ">=", value = 1}]
severity = "critical"

[[alerts.rules]]
name = "escalation_open"
scope = "account"
when = [{metric = "tickets.escalated_open", op = ">=", value = 1}]
severity = "warning"

[[alerts.rules]]
name = "first_response_sla_breach"
scope = "account"
when = [{metric = "tickets.sla_breached", op = ">=", value = 1}]
severity = "warning"

[[alerts.rules]]
name = "usage_drop"
scope = "account"
when = [{metric = "usage.usage_events_prev_7d", op = ">=", value = 20}, {metric = "usage.drop_ratio", op = ">=", value = 0.5}]
severity = "warning"

[[alerts.rules]]
name = "portfolio_at_risk"
scope = "portfolio"
when = [{metric = "health.at_risk_share", op = ">", value = 0.15}]
severity = "critical"

[[alerts.rules]]
name = "churned"
on = "cs.revenue"
match = {kind = ["churn"]}
severity = "critical"

[[alerts.rules]]
name = "contraction"
on = "cs.revenue"
match = {kind = ["contraction"]}
severity = "warning"

[[alerts.rules]]
name = "segment_tickets_open"
scope = "segment"
when = [{metric = "tickets.open.total", op = ">=", value = 1}]
severity = "warning"

[[alerts.rules]]
name = "book_has_red"
scope = "csm"
when = [{metric = "health.tiers.red.accounts", op = ">=", value = 1}]
severity = "critical"
"#;

/// The targets the engine is configured with (file only, SPEC §15): the
/// executive's portfolio goals, one for csm-1's book and one for csm-2's
/// (which a csm-1 page must never see).
const TARGETS_TOML: &str = r#"
[[targets]]
name = "NRR this quarter"
metric = "revenue.nrr_qtd"
scope = "portfolio"
period = "quarter"
op = ">="
value = 1.05

[[targets]]
name = "At-risk share this month"
metric = "health.at_risk_share"
scope = "portfolio"
period = "month"
op = "<="
value = 0.2

[[targets]]
name = "ARR this year"
metric = "revenue.arr"
scope = "portfolio"
period = "year"
op = ">="
value = 1500000.0

[[targets]]
name = "Book at risk csm-1"
metric = "health.at_risk_arr"
scope = "csm:csm-1"
period = "month"
op = "<="
value = 20000.0

[[targets]]
name = "Book ARR csm-2"
metric = "revenue.arr"
scope = "csm:csm-2"
period = "quarter"
op = ">="
value = 400000.0
"#;

/// The engine as a child process (memory state: a restart replays the
/// topics; the history store in `data` outlives it, rows rewritten alike).
fn spawn_engine(brokers: &str, port: u16, data: &std::path::Path) -> Child {
    Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(data.join("cspulse.toml"))
        .env("CSPULSE__KAFKA__BROKERS", brokers)
        .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
        .env("CSPULSE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("CSPULSE__STATE__STORE", "memory")
        .env("CSPULSE__HISTORY__STORE", format!("sqlite://{}", data.join("history.db").display()))
        .env("CSPULSE__HISTORY__SPILL", data.join("history-spill.jsonl"))
        .env("CSPULSE__HISTORY__RESOLUTION", "1h")
        .env("CSPULSE__TIME__ALIGN_WAIT", "50ms")
        .env("CSPULSE__KAFKA__GROUP_ID", "dashboard-test")
        .env("CSPULSE__CADENCE__HEALTH", "300ms")
        .env("CSPULSE__CADENCE__USAGE", "300ms")
        .env("CSPULSE__CADENCE__REVENUE", "300ms")
        .env("CSPULSE__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cspulse")
}

/// An account of the script: (id, name, csm, segment, region, seats, renewal in days, ARR).
type ScriptAccount = (&'static str, &'static str, Option<&'static str>, &'static str, &'static str, u32, i64, f64);

const ACCOUNTS: &[ScriptAccount] = &[
    ("acme", "Acme Corp", Some("csm-1"), "enterprise", "emea", 40, 60, 250_000.0),
    ("globex", "Globex Corporation", Some("csm-1"), "mid-market", "amer", 20, 200, 90_000.0),
    ("soylent", "Soylent Foods", Some("csm-1"), "smb", "apac", 8, 30, 12_000.0),
    ("initech", "Initech", Some("csm-2"), "enterprise", "amer", 60, 120, 310_000.0),
    ("hooli", "Hooli", Some("csm-2"), "mid-market", "emea", 25, 45, 75_500.5),
    ("vandelay", "Vandelay Industries", Some("csm-2"), "smb", "amer", 5, 300, 8_000.0),
    ("wayne", "Wayne Holdings", None, "enterprise", "amer", 100, 90, 480_000.0),
];

struct Script {
    /// (topic, key, body) in production order.
    events: Vec<(&'static str, String, Value)>,
    next_id: u32,
}

impl Script {
    fn push(&mut self, topic: &'static str, account: &str, ts: i64, mut body: Value) {
        self.next_id += 1;
        body["event_id"] = json!(format!("e2e-{}", self.next_id));
        body["ts"] = json!(format_rfc3339(ts));
        body["account_id"] = json!(account);
        self.events.push((topic, account.to_owned(), body));
    }
}

/// A small portfolio with usage, tickets (open P1 with a breached SLA, an
/// escalation, CSAT) and revenue movements, all in the last 200 days.
fn portfolio(now: i64) -> Script {
    let mut s = Script { events: Vec::new(), next_id: 0 };
    let today = utc_day(now) as i64;
    for &(id, name, csm, segment, region, seats, renewal, _) in ACCOUNTS {
        let renewal_date = format_date((today + renewal) as i32);
        let body = json!({"name": name, "csm_id": csm, "segment": segment, "region": region,
            "seats": seats, "renewal_date": renewal_date});
        s.push("cs.accounts", id, now - 40 * MICROS_PER_DAY, body);
    }
    for &(id, _, _, _, _, _, _, arr) in ACCOUNTS {
        s.push("cs.revenue", id, now - 200 * MICROS_PER_DAY, json!({"kind": "new", "arr": arr}));
    }
    // 120 days ago, then nothing until the upserts 40 days ago: a jump of more
    // than 35 days, so history holds a gap (listed by the API) between them.
    s.push("cs.revenue", "globex", now - 120 * MICROS_PER_DAY, json!({"kind": "expansion", "arr": 95_000.0}));
    s.push("cs.revenue", "acme", now - 10 * MICROS_PER_DAY, json!({"kind": "expansion", "arr": 275_000.0}));
    s.push("cs.revenue", "hooli", now - 5 * MICROS_PER_DAY, json!({"kind": "contraction", "arr": 60_000.25}));
    s.push("cs.revenue", "vandelay", now - 3 * MICROS_PER_DAY, json!({"kind": "churn"}));
    // Usage over the last 14 days (time-ordered per topic).
    let users: &[(&str, u32, u32)] =
        &[("acme", 30, 6), ("globex", 6, 2), ("initech", 40, 9), ("hooli", 12, 3), ("wayne", 50, 20)];
    let features = ["reports", "api", "dashboards", "exports"];
    let mut usage = Vec::new();
    for &(id, events, distinct) in users {
        for i in 0..events {
            let ts = now - 13 * MICROS_PER_DAY + i64::from(i) * (13 * MICROS_PER_DAY / i64::from(events));
            let body = json!({"user_id": format!("{id}-u{}", i % distinct), "feature": features[(i as usize) % features.len()], "duration_s": 60});
            usage.push((ts, id, body));
        }
    }
    usage.sort_by_key(|(ts, id, _)| (*ts, *id));
    for (ts, id, body) in usage {
        s.push("cs.usage", id, ts, body);
    }
    let t = |id: &str, tid: &str, action: &str, extra: Value| {
        let mut b = json!({"ticket_id": tid, "action": action});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        (id.to_owned(), b)
    };
    let tickets = [
        (now - 6 * MICROS_PER_DAY, t("acme", "T-1", "opened", json!({"priority": "p2"}))),
        (now - 6 * MICROS_PER_DAY + 30 * MICROS_PER_MIN, t("acme", "T-1", "first_response", json!({}))),
        (now - 5 * MICROS_PER_DAY, t("acme", "T-1", "resolved", json!({}))),
        (now - 5 * MICROS_PER_DAY, t("acme", "T-1", "csat", json!({"score": 4}))),
        (now - 4 * MICROS_PER_DAY, t("initech", "T-2", "opened", json!({"priority": "p3"}))),
        (now - 4 * MICROS_PER_DAY + 95 * MICROS_PER_MIN, t("initech", "T-2", "first_response", json!({}))),
        (now - 3 * MICROS_PER_DAY, t("initech", "T-2", "escalated", json!({}))),
        (now - 2 * MICROS_PER_DAY, t("hooli", "T-3", "opened", json!({"priority": "p4"}))),
        (now - 2 * MICROS_PER_DAY, t("hooli", "T-3", "csat", json!({"score": 2}))),
        (now - 3 * 60 * MICROS_PER_MIN, t("soylent", "T-4", "opened", json!({"priority": "p1"}))),
        (now - 60 * MICROS_PER_MIN, t("wayne", "T-5", "opened", json!({"priority": "p2"}))),
        (now - 50 * MICROS_PER_MIN, t("wayne", "T-5", "first_response", json!({}))),
    ];
    for (ts, (id, body)) in tickets {
        s.push("cs.tickets", &id, ts, body);
    }
    s
}

async fn produce_all(p: &FutureProducer, events: &[(&'static str, String, Value)]) {
    for (topic, key, body) in events {
        produce(p, topic, 0, key, &serde_json::to_vec(body).unwrap()).await;
    }
}

fn reply(stdin: &mut ChildStdin, line: &str) {
    writeln!(stdin, "{line}").and_then(|_| stdin.flush()).expect("write to the browser script");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_in_headless_chromium() {
    let client = client_dir();
    assert!(
        client.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in dashboards-client/ first (scripts/test.sh does)"
    );
    let (_cluster, config) = cluster_and_config();
    let brokers = config.kafka.brokers.clone();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let data = tempfile::tempdir().expect("a temporary directory for the history store");
    std::fs::write(data.path().join("cspulse.toml"), format!("{TARGETS_TOML}{RULES_TOML}"))
        .expect("write the configuration");
    let mut engine = spawn_engine(&brokers, port, data.path());

    // Event times sit an hour behind the wall clock so later events stay in the past.
    let now = wall_now() - 60 * MICROS_PER_MIN;
    let script = portfolio(now);
    let p = producer(&brokers);
    produce_all(&p, &script.events).await;
    let exec = token(Role::Executive, None);
    let last_ts = format_rfc3339(now - 50 * MICROS_PER_MIN);
    wait_for("the engine to fold the script", Duration::from_secs(60), || {
        let (url, exec, last_ts) = (format!("{base}/api/v1/channels/executive"), exec.clone(), last_ts.clone());
        async move {
            let (status, v) = reqwest_get(&url, &exec).await?;
            (status == 200
                && v["portfolio"]["health"]["accounts"] == json!(ACCOUNTS.len())
                && v["as_of"] == json!(last_ts))
            .then_some(())
        }
    })
    .await;
    wait_for("the history writer to commit every row", Duration::from_secs(60), || {
        let (url, exec) = (format!("{base}/readyz"), exec.clone());
        async move {
            let (_, v) = reqwest_get(&url, &exec).await?;
            (v["history"]["pending_rows"] == json!(0)).then_some(())
        }
    })
    .await;

    let tokens = json!({
        "executive": exec,
        "manager": token(Role::Manager, None),
        "analyst": token(Role::Analyst, None),
        "csm": token(Role::Csm, Some("csm-1")),
        "wall": token(Role::Wall, None),
    });
    // What a csm-1 page must never see: ids and names of every other account.
    let foreign: Vec<String> = ACCOUNTS
        .iter()
        .filter(|a| a.2 != Some("csm-1"))
        .flat_map(|a| [format!("\"{}\"", a.0), a.1.to_owned()])
        .collect();
    let mut node = Command::new("node")
        .arg("e2e/dashboard.mjs")
        .current_dir(&client)
        .env("CSPULSE_URL", &base)
        .env("CSPULSE_TOKENS", tokens.to_string())
        .env("CSPULSE_CSM", "csm-1")
        .env("CSPULSE_OTHER_CSM", "csm-2")
        .env("CSPULSE_FOREIGN_TARGETS", json!(["Book ARR csm-2"]).to_string())
        .env("CSPULSE_FOREIGN", serde_json::to_string(&foreign).unwrap())
        .env("CSPULSE_ALERT_ACCOUNT", json!({"id": "globex", "name": "Globex Corporation"}).to_string())
        .env("CSPULSE_E2E_REPORT", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-e2e.json"))
        .env("CSPULSE_PYTHON", python())
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is required for the dashboard test (Node.js >= 20.19)");
    let mut stdin = node.stdin.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(240);
    let mut output = Vec::new();
    let mut step = 0u32;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => break, // the script ended
            Err(_) => {
                let _ = node.kill();
                panic!("the browser test timed out; its output:\n{}", output.join("\n"));
            }
        };
        println!("{line}");
        output.push(line.clone());
        match line.strip_prefix("@@cmd ") {
            Some("produce-alert") => {
                let ts = now + MICROS_PER_MIN;
                let body = json!({"event_id": "e2e-alert", "ts": format_rfc3339(ts), "account_id": "globex",
                    "ticket_id": "T-9", "action": "opened", "priority": "p1"});
                produce(&p, "cs.tickets", 0, "globex", &serde_json::to_vec(&body).unwrap()).await;
                reply(&mut stdin, "ok");
            }
            Some("restart") => {
                engine.kill().expect("kill the engine");
                engine.wait().expect("reap the engine");
                // Long enough for the pages to notice the outage.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                engine = spawn_engine(&brokers, port, data.path());
                step += 1;
                let body = json!({"event_id": format!("e2e-restart-{step}"), "ts": format_rfc3339(now + 2 * MICROS_PER_MIN),
                    "account_id": "acme", "kind": "expansion", "arr": 300_000.0});
                produce(&p, "cs.revenue", 0, "acme", &serde_json::to_vec(&body).unwrap()).await;
                reply(&mut stdin, "ok");
            }
            Some(other) => panic!("unknown command {other:?} from the browser test"),
            None => {}
        }
    }
    let status = node.wait().expect("node exit");
    let _ = engine.kill();
    let _ = engine.wait();
    assert!(status.success(), "the browser test failed ({status}):\n{}", output.join("\n"));
}

async fn reqwest_get(url: &str, token: &str) -> Option<(u16, Value)> {
    let res = reqwest::Client::new().get(url).bearer_auth(token).timeout(Duration::from_secs(2)).send().await.ok()?;
    Some((res.status().as_u16(), res.json().await.ok()?))
}
