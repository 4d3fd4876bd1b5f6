//! Delivery (SPEC §16) against real servers: an SMTP server (Python's
//! aiosmtpd, `tests/peers/smtp_sink.py`, which parses each message with
//! Python's email package) and an HTTP receiver (`tests/peers/
//! webhook_receiver.py`) that checks every Standard Webhooks signature and
//! the Slack payload's shape with its own code, fails or answers slowly on
//! purpose, and records what it got. The ledger is read back through
//! `GET /api/v1/deliveries`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::auth::Role;
use cspulse::time::{MICROS_PER_SEC, format_rfc3339, wall_now};
use serde_json::{Value, json};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn peer(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(script)
}

/// A peer process, stopped when dropped.
struct Peer {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Peer {
    fn start(script: &str, port: u16, args: &[&str], out: PathBuf) -> Peer {
        Peer::start_with(script, port, args, out, &[])
    }

    fn start_with(script: &str, port: u16, args: &[&str], out: PathBuf, env: &[(&str, String)]) -> Peer {
        let mut child = Command::new("python3")
            .arg(peer(script))
            .arg(port.to_string())
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 {script}: {e}"));
        // It prints "ready" once it listens.
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready", "{script} did not start (is aiosmtpd installed? scripts/test.sh installs it)");
        Peer { child, port, out }
    }

    fn smtp(dir: &Path, reject: &Path) -> Peer {
        let out = dir.join("mail.jsonl");
        Peer::start(
            "smtp_sink.py",
            free_port(),
            &[&out.display().to_string(), &reject.display().to_string()],
            out.clone(),
        )
    }

    fn receiver(dir: &Path, port: u16) -> Peer {
        let out = dir.join("hooks.jsonl");
        Peer::start("webhook_receiver.py", port, &[WHSEC, &out.display().to_string()], out.clone())
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn at(t: i64) -> String {
    format_rfc3339(t)
}

fn upsert(id: &str, name: &str, csm: &str, ts: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({"event_id": format!("up-{id}-{ts}"), "ts": at(ts), "account_id": id, "name": name,
        "csm_id": csm, "segment": "enterprise", "region": "emea", "seats": 10, "renewal_date": "2027-09-30"}))
    .unwrap()
}

fn ticket(id: &str, ticket: &str, action: &str, ts: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({"event_id": format!("t-{ticket}-{action}-{ts}"), "ts": at(ts), "account_id": id,
        "ticket_id": ticket, "action": action, "priority": "p1"}))
    .unwrap()
}

/// Errors of `v` against `schemas/<name>.schema.json`.
fn schema_errors(name: &str, v: &Value) -> Vec<String> {
    schema(name).iter_errors(v).map(|e| format!("{e} at {}", e.instance_path)).collect()
}

async fn deliveries(base: &str, token: &str) -> Vec<Value> {
    let (status, body) = get(&format!("{base}/api/v1/deliveries?limit=1000"), Some(token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(schema_errors("deliveries", &body), Vec::<String>::new(), "{body:#}");
    body["deliveries"].as_array().cloned().unwrap_or_default()
}

fn finished(d: &Value) -> bool {
    matches!(d["status"].as_str(), Some("sent" | "gave_up" | "cancelled"))
}

fn delivery_toml(smtp_port: u16, hooks: &Peer, extra: &str) -> String {
    format!(
        r#"
[delivery]
give_up_after = "8s"
[[delivery.destinations]]
name = "mail"
kind = "email"
smtp_url = "smtp://127.0.0.1:{smtp_port}"
from = "cspulse alerts <alerts@cspulse.test>"
[[delivery.destinations]]
name = "team-slack"
kind = "slack"
url = "{slack}"
[[delivery.destinations]]
name = "crm"
kind = "webhook"
url = "{hook}"
secret = "{WHSEC}"
[[delivery.destinations]]
name = "flaky"
kind = "webhook"
url = "{flaky}"
secret = "{WHSEC}"
[[delivery.destinations]]
name = "down"
kind = "webhook"
url = "{down}"
secret = "{WHSEC}"
timeout = "2s"
[[delivery.people]]
id = "ana"
email = "ana@cspulse.test"
slack = "team-slack"
role = "csm"
csm_id = "csm-1"
time_zone = "Europe/Berlin"
[[delivery.people]]
id = "ben"
email = "ben@cspulse.test"
role = "csm"
csm_id = "csm-2"
time_zone = "America/New_York"
[[delivery.people]]
id = "mia"
email = "mia@cspulse.test"
role = "manager"
{extra}
"#,
        slack = hooks.url("/slack/ana"),
        hook = hooks.url("/hook"),
        flaky = hooks.url("/flaky/2/hook"),
        down = hooks.url("/down/hook"),
    )
}

fn config_with(toml_text: &str, dir: &Path, brokers: String) -> cspulse::config::Config {
    config_in(toml_text, &format!("sqlite://{}", dir.join("history.db").display()), brokers)
}

fn config_in(toml_text: &str, store: &str, brokers: String) -> cspulse::config::Config {
    let mut c = cspulse::config::Config::from_toml(&format!(
        "[auth]\njwt_secret = \"{SECRET}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[state]\nstore = \"memory\"\n[history]\nstore = \"{store}\"\n{toml_text}"
    ))
    .expect("config");
    c.kafka.brokers = brokers;
    cspulse::demo::low_latency(&mut c);
    // Fold across topics in event time: the upserts come before the tickets.
    c.time.align_wait = "50ms".parse().unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_email_slack_and_signed_webhooks_with_retries_and_give_up() {
    test_logging();
    let dir = tempfile::tempdir().unwrap();
    let smtp = Peer::smtp(dir.path(), &dir.path().join("reject"));
    let hooks = Peer::receiver(dir.path(), free_port());
    let routes = r#"
[[delivery.alert_routes]]
name = "p1"
match = { rule = "p1_ticket_open" }
to = ["owner", "managers", "crm", "flaky", "down"]
"#;
    let (cluster, _) = cluster_and_config();
    let config = config_with(&delivery_toml(smtp.port, &hooks, routes), dir.path(), cluster.bootstrap_servers());
    let app = App::start(&config).await.expect("engine starts");
    let base = format!("http://{}", app.addr);
    let p = producer(&config.kafka.brokers);
    let t0 = wall_now();
    produce(&p, "cs.accounts", 0, "acme", &upsert("acme", "Acme Corp", "csm-1", t0)).await;
    produce(&p, "cs.accounts", 0, "globex", &upsert("globex", "Globex", "csm-2", t0 + 1)).await;
    produce(&p, "cs.tickets", 0, "acme", &ticket("acme", "T1", "opened", t0 + 1_000)).await;
    produce(&p, "cs.tickets", 0, "acme", &ticket("acme", "T1", "resolved", t0 + 2_000)).await;

    let manager = token(Role::Manager, None);
    // Firing and resolved, each to ana (email, slack), mia (email), crm,
    // flaky and down: 12 messages, all finished within give_up_after.
    let last = std::sync::Mutex::new(Vec::new());
    let rows = tokio::time::timeout(
        Duration::from_secs(40),
        wait_for("12 finished deliveries", Duration::from_secs(60), || async {
            let rows = deliveries(&base, &manager).await;
            *last.lock().unwrap() = rows.clone();
            (rows.len() == 12 && rows.iter().all(finished)).then_some(rows)
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("12 finished deliveries; the ledger holds {:#?}", last.lock().unwrap()));
    let by = |recipient: &str, destination: &str| -> Vec<&Value> {
        rows.iter().filter(|d| d["recipient"] == recipient && d["destination"] == destination).collect()
    };
    for (recipient, destination) in [("ana", "mail"), ("ana", "team-slack"), ("mia", "mail"), ("crm", "crm")] {
        let got = by(recipient, destination);
        assert_eq!(got.len(), 2, "{recipient} via {destination}: {rows:#?}");
        for d in got {
            assert_eq!(d["status"], "sent", "{d:#}");
            assert_eq!(d["attempts"], 1, "{d:#}");
            assert_eq!(d["kind"], "alert");
            assert_eq!(d["account_id"], "acme");
        }
    }
    for d in by("flaky", "flaky") {
        assert_eq!(
            (d["status"].as_str(), d["attempts"].as_i64()),
            (Some("sent"), Some(3)),
            "503 twice, then 200: {d:#}"
        );
    }
    for d in by("down", "down") {
        assert_eq!(d["status"], "gave_up", "{d:#}");
        assert!(d["attempts"].as_i64().unwrap() >= 2, "retried before giving up: {d:#}");
        assert!(d["last_error"].as_str().unwrap().contains("500"), "{d:#}");
    }
    assert!(rows.iter().all(|d| d["recipient"] != "ben"), "ben's book does not hold acme: {rows:#?}");

    // The mail as a mail client reads it.
    let mails = smtp.records();
    assert_eq!(mails.len(), 4, "{mails:#?}");
    let mut to: Vec<&str> = mails.iter().map(|m| m["to"][0].as_str().unwrap()).collect();
    to.sort();
    assert_eq!(to, ["ana@cspulse.test", "ana@cspulse.test", "mia@cspulse.test", "mia@cspulse.test"]);
    for m in &mails {
        let id = m["message_id"].as_str().unwrap().trim_matches(['<', '>']).trim_end_matches("@cspulse").to_owned();
        let row =
            rows.iter().find(|d| d["id"] == id.as_str()).unwrap_or_else(|| panic!("Message-ID {id} in the ledger"));
        let text = m["text"].as_str().unwrap();
        assert!(text.contains("Acme Corp (acme)"), "{text}");
        assert!(text.contains("rule p1_ticket_open"), "{text}");
        assert!(text.contains("tickets.open_p1 = "), "the values: {text}");
        assert!(m["html"].as_str().unwrap().contains("Acme Corp"));
        let subject = m["subject"].as_str().unwrap();
        assert!(subject.starts_with("[cspulse critical]"), "{subject}");
        let link = if row["recipient"] == "ana" { format!("{base}/#csm") } else { format!("{base}/#manager/csm-1") };
        assert!(text.contains(&format!("Open: {link}")), "{link} in {text}");
        let unsubscribe = m["list_unsubscribe"].as_str().unwrap();
        assert!(unsubscribe.starts_with(&format!("<{base}/api/v1/unsubscribe?link=")), "{unsubscribe}");
        assert_eq!(m["list_unsubscribe_post"], "List-Unsubscribe=One-Click");
    }
    assert_eq!(mails.iter().filter(|m| m["subject"].as_str().unwrap().contains("Resolved: ")).count(), 2, "{mails:#?}");

    // Webhooks: every signature checks out; the webhook-id is the ledger's id.
    let hits = hooks.records();
    assert!(hits.iter().all(|h| h["valid"] == true), "{hits:#?}");
    let at_path = |p: &str| hits.iter().filter(|h| h["path"] == p).collect::<Vec<_>>();
    let crm = at_path("/hook");
    assert_eq!(crm.len(), 2, "{hits:#?}");
    let mut kinds: Vec<String> = crm
        .iter()
        .map(|h| {
            let body: Value = serde_json::from_str(h["body"].as_str().unwrap()).unwrap();
            assert_eq!(schema_errors("webhook", &body), Vec::<String>::new(), "{body:#}");
            assert_eq!(body["data"]["id"], h["id"]);
            assert_eq!(body["data"]["alerts"][0]["account_name"], "Acme Corp");
            assert!(rows.iter().any(|d| d["id"] == h["id"] && d["destination"] == "crm"), "{h:#}");
            body["type"].as_str().unwrap().to_owned()
        })
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["alert.firing", "alert.resolved"]);
    assert_eq!(at_path("/slack/ana").len(), 2);
    assert_eq!(at_path("/flaky/2/hook").len(), 6, "three attempts per message");
    let slack: Value = serde_json::from_str(at_path("/slack/ana")[0]["body"].as_str().unwrap()).unwrap();
    assert!(slack["text"].as_str().unwrap().contains("Acme Corp"), "{slack:#}");

    // Only executives and managers see the ledger.
    let csm = token(Role::Csm, Some("csm-1"));
    let (status, body) = get(&format!("{base}/api/v1/deliveries"), Some(&csm)).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, body) = get(&format!("{base}/api/v1/deliveries?status=late"), Some(&manager)).await;
    assert_eq!(status, 400, "{body}");
    let (_, sent) = get(&format!("{base}/api/v1/deliveries?status=gave_up"), Some(&manager)).await;
    assert_eq!(sent["deliveries"].as_array().unwrap().len(), 2, "{sent:#}");

    // A resend is a new row with its own id; the original stays sent.
    let original = by("crm", "crm")[0]["id"].as_str().unwrap().to_owned();
    let res = reqwest::Client::new()
        .post(format!("{base}/api/v1/deliveries/{original}/resend"))
        .bearer_auth(&manager)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let copy: Value = res.json().await.unwrap();
    let copy_id = copy["delivery"]["id"].as_str().unwrap().to_owned();
    assert_eq!(copy_id, format!("{original}_r1"));
    wait_for("the resent webhook", Duration::from_secs(20), || async {
        hooks.records().iter().any(|h| h["id"] == copy_id.as_str()).then_some(())
    })
    .await;
    let after = deliveries(&base, &manager).await;
    assert_eq!(after.iter().find(|d| d["id"] == original.as_str()).unwrap()["status"], "sent");
    let exec = token(Role::Executive, None);
    let audit = wait_for("the resend's audit event", Duration::from_secs(10), || async {
        let (_, body) = get(&format!("{base}/api/v1/audit"), Some(&exec)).await;
        body["events"].as_array()?.iter().find(|e| e["action"] == "resend").cloned()
    })
    .await;
    assert_eq!(audit["target"], format!("delivery {original}"));
    assert_eq!(audit["role"], "manager");

    // ana follows the unsubscribe link (one click, no sign-in): the next
    // alert of that route reaches mia and the systems, not ana.
    let link = mails.iter().find(|m| m["to"][0] == "ana@cspulse.test").unwrap()["list_unsubscribe"]
        .as_str()
        .unwrap()
        .trim_matches(['<', '>'])
        .to_owned();
    let page = reqwest::get(&link).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\""), "GET only asks");
    let res = reqwest::Client::new().post(&link).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let forged = format!("{}x", &link[..link.len() - 1]);
    assert_eq!(reqwest::Client::new().post(&forged).send().await.unwrap().status().as_u16(), 400);
    produce(&p, "cs.tickets", 0, "acme", &ticket("acme", "T2", "opened", wall_now())).await;
    let rows = wait_for("the next alert's messages", Duration::from_secs(30), || async {
        let rows = deliveries(&base, &manager).await;
        (rows.len() >= 12 + 1 + 4).then_some(rows)
    })
    .await;
    let newer: Vec<&Value> = rows.iter().filter(|d| !after.iter().any(|a| a["id"] == d["id"])).collect();
    let mut recipients: Vec<&str> = newer.iter().map(|d| d["recipient"].as_str().unwrap()).collect();
    recipients.sort();
    assert_eq!(recipients, ["crm", "down", "flaky", "mia"], "{newer:#?}");
    app.shutdown().await;
}

/// The wall-clock time `minutes` from now as `HH:MM` in UTC.
fn utc_hhmm(minutes: i64) -> String {
    let t = wall_now() / MICROS_PER_SEC + minutes * 60;
    format!("{:02}:{:02}", (t / 3600).rem_euclid(24), (t / 60).rem_euclid(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reassignment_cancels_quiet_hours_hold_warnings_and_groups_merge() {
    let dir = tempfile::tempdir().unwrap();
    reassignment_quiet_hours_and_groups(&format!("sqlite://{}", dir.path().join("history.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reassignment_cancels_quiet_hours_hold_warnings_and_groups_merge() {
    let db = fresh_postgres_database().await;
    reassignment_quiet_hours_and_groups(&format!("postgres://postgres@127.0.0.1:5432/{db}")).await;
}

async fn reassignment_quiet_hours_and_groups(store: &str) {
    test_logging();
    let dir = tempfile::tempdir().unwrap();
    let reject = dir.path().join("reject");
    std::fs::write(&reject, "ben@cspulse.test\n").unwrap();
    let smtp = Peer::smtp(dir.path(), &reject);
    let hooks = Peer::receiver(dir.path(), free_port());
    // ana (Europe/Berlin) is in quiet hours now; warnings to her wait.
    let quiet = format!("{}-{}", utc_hhmm(-60), utc_hhmm(120));
    let routes = r#"
[[delivery.alert_routes]]
name = "p1"
match = { rule = "p1_ticket_open" }
to = ["owner"]
[[delivery.alert_routes]]
name = "escalations"
match = { rule = "escalation_open" }
to = ["owner"]
[[delivery.alert_routes]]
name = "escalations-grouped"
match = { rule = "escalation_open", severity = ["warning"] }
to = ["managers"]
states = ["firing"]
group_window = "3s"
"#;
    let mut text = delivery_toml(smtp.port, &hooks, routes);
    text = text.replace("time_zone = \"Europe/Berlin\"", "time_zone = \"UTC\"");
    text = text.replace("csm_id = \"csm-1\"\n", &format!("csm_id = \"csm-1\"\nquiet_hours = \"{quiet}\"\n"));
    text = text.replace("give_up_after = \"8s\"", "give_up_after = \"1h\"");
    let (cluster, _) = cluster_and_config();
    let config = config_in(&text, store, cluster.bootstrap_servers());
    let app = App::start(&config).await.expect("engine starts");
    let base = format!("http://{}", app.addr);
    let p = producer(&config.kafka.brokers);
    let t0 = wall_now();
    produce(&p, "cs.accounts", 0, "acme", &upsert("acme", "Acme Corp", "csm-1", t0)).await;
    produce(&p, "cs.accounts", 0, "globex", &upsert("globex", "Globex", "csm-2", t0 + 1)).await;
    // globex's P1 goes to ben, whose server refuses him for now (451).
    produce(&p, "cs.tickets", 0, "globex", &ticket("globex", "G1", "opened", t0 + 1_000)).await;
    // acme's P1 is critical: sent to ana through her quiet hours.
    produce(&p, "cs.tickets", 0, "acme", &ticket("acme", "A1", "opened", t0 + 2_000)).await;
    // Two escalations: ana's warning waits; mia gets both in one message.
    produce(&p, "cs.tickets", 0, "acme", &ticket("acme", "A1", "escalated", t0 + 3_000)).await;
    produce(&p, "cs.tickets", 0, "globex", &ticket("globex", "G1", "escalated", t0 + 4_000)).await;

    let manager = token(Role::Manager, None);
    let failing = wait_for("ben's message retried", Duration::from_secs(30), || async {
        let rows = deliveries(&base, &manager).await;
        rows.into_iter().find(|d| {
            d["recipient"] == "ben" && d["status"] == "failed" && d["refs"].as_array().map(Vec::len) == Some(1)
        })
    })
    .await;
    assert!(failing["last_error"].as_str().unwrap().contains("451"), "{failing:#}");
    // globex moves to csm-1 while ben's message waits for its next attempt.
    produce(&p, "cs.accounts", 0, "globex", &upsert("globex", "Globex", "csm-1", wall_now())).await;
    let rows = wait_for("ben's messages cancelled and the group sent", Duration::from_secs(30), || async {
        let rows = deliveries(&base, &manager).await;
        let ben: Vec<&Value> = rows.iter().filter(|d| d["recipient"] == "ben").collect();
        let cancelled = ben.len() >= 2 && ben.iter().all(|d| d["status"] == "cancelled");
        let grouped = rows.iter().any(|d| d["recipient"] == "mia" && d["status"] == "sent");
        (cancelled && grouped).then_some(rows)
    })
    .await;
    assert!(rows.iter().any(|d| d["id"] == failing["id"] && d["status"] == "cancelled"));
    assert!(smtp.records().iter().all(|m| m["to"][0] != "ben@cspulse.test"));

    let ana: Vec<&Value> = rows.iter().filter(|d| d["recipient"] == "ana").collect();
    let held: Vec<&&Value> = ana.iter().filter(|d| d["severity"] == "warning").collect();
    assert!(!held.is_empty(), "{ana:#?}");
    for h in &held {
        assert_eq!((h["status"].as_str(), h["attempts"].as_i64()), (Some("pending"), Some(0)), "{h:#}");
        let next = cspulse::time::parse_rfc3339(h["next_at"].as_str().unwrap()).unwrap();
        assert!(next > wall_now() + 100 * 60 * MICROS_PER_SEC, "held until the quiet hours end: {h:#}");
    }
    assert!(held.iter().any(|d| d["account_id"] == "acme"), "{held:#?}");
    assert!(ana.iter().any(|d| d["severity"] == "critical" && d["status"] == "sent"), "{ana:#?}");

    let mail = smtp.records();
    let to_ana: Vec<&Value> = mail.iter().filter(|m| m["to"][0] == "ana@cspulse.test").collect();
    assert!(to_ana.iter().all(|m| !m["text"].as_str().unwrap().contains("escalation_open")), "{to_ana:#?}");
    // The new owner hears of globex's firing P1 (its context was updated).
    wait_for("ana told of globex", Duration::from_secs(20), || async {
        smtp.records()
            .iter()
            .any(|m| m["to"][0] == "ana@cspulse.test" && m["subject"].as_str().unwrap().contains("Updated: "))
            .then_some(())
    })
    .await;

    let group: Vec<&Value> = mail.iter().filter(|m| m["to"][0] == "mia@cspulse.test").collect();
    assert_eq!(group.len(), 1, "{group:#?}");
    let text = group[0]["text"].as_str().unwrap();
    assert!(text.contains("Acme Corp (acme)") && text.contains("Globex (globex)"), "{text}");
    assert!(group[0]["subject"].as_str().unwrap().starts_with("[cspulse] 2 alerts:"), "{:#}", group[0]);
    let row = rows.iter().find(|d| d["recipient"] == "mia").unwrap();
    assert_eq!(row["refs"].as_array().unwrap().len(), 2, "{row:#}");
    app.shutdown().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_cspulse");

/// The ledger from a node that may be starting (`None` until it answers).
async fn ledger(base: &str, token: &str) -> Option<Value> {
    let res = reqwest::Client::new()
        .get(format!("{base}/api/v1/deliveries"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    res.json().await.ok()
}

struct Node {
    config: tempfile::NamedTempFile,
    brokers: String,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Node {
    /// A node serving `config` (its file), started.
    fn started(config: tempfile::NamedTempFile, brokers: String, dir: &Path) -> Node {
        let mut node = Node { config, brokers, dir: dir.to_owned(), port: free_port(), child: None };
        node.start();
        node
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join(format!("node-{}.log", wall_now()))).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(self.config.path())
            .env("CSPULSE__KAFKA__BROKERS", &self.brokers)
            .env("CSPULSE__KAFKA__GROUP_ID", format!("delivery-{}", self.port))
            .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
            .env("CSPULSE__HTTP__LISTEN", format!("127.0.0.1:{}", self.port))
            .env("CSPULSE__STATE__STORE", format!("file://{}", self.dir.join("state").display()))
            .env("CSPULSE__HISTORY__STORE", format!("sqlite://{}", self.dir.join("history.db").display()))
            .env("CSPULSE__TIME__ALIGN_WAIT", "50ms")
            .env("RUST_LOG", "cspulse=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_pending_messages_loses_none_and_resends_no_sent_one() {
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_port();
    let mut hooks = Some(Peer::receiver(dir.path(), hook_port));
    let (cluster, _) = cluster_and_config();
    let mut config = tempfile::NamedTempFile::new().unwrap();
    write!(
        config,
        r#"[kafka.properties]
"fetch.wait.max.ms" = "1"
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[checkpoint]
interval = "100ms"
[[delivery.destinations]]
name = "crm"
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
secret = "{WHSEC}"
[[delivery.alert_routes]]
match = {{ rule = "p1_ticket_open", scope = "account" }}
to = ["crm"]
states = ["firing"]
"#
    )
    .unwrap();
    let mut node = Node::started(config, cluster.bootstrap_servers(), dir.path());
    let base = format!("http://127.0.0.1:{}", node.port);
    let p = producer(&node.brokers);
    let t0 = wall_now();
    for (i, id) in ["a1", "a2", "a3"].iter().enumerate() {
        produce(&p, "cs.accounts", 0, id, &upsert(id, &id.to_uppercase(), "csm-1", t0 + i as i64)).await;
    }
    produce(&p, "cs.tickets", 0, "a1", &ticket("a1", "T1", "opened", t0 + 1_000)).await;
    let manager = token(Role::Manager, None);
    let first = wait_for("the first alert sent", Duration::from_secs(60), || async {
        let body = ledger(&base, &manager).await?;
        body["deliveries"].as_array()?.iter().find(|d| d["status"] == "sent").cloned()
    })
    .await;
    // The receiver goes away; two more alerts wait in the ledger, retried.
    drop(hooks.take());
    produce(&p, "cs.tickets", 0, "a2", &ticket("a2", "T2", "opened", wall_now())).await;
    produce(&p, "cs.tickets", 0, "a3", &ticket("a3", "T3", "opened", wall_now() + 1)).await;
    let waiting = wait_for("two messages failing", Duration::from_secs(30), || async {
        let body = ledger(&base, &manager).await?;
        let rows: Vec<Value> = body["deliveries"].as_array()?.clone();
        let failing: Vec<String> =
            rows.iter().filter(|d| d["status"] == "failed").map(|d| d["id"].as_str().unwrap().to_owned()).collect();
        (failing.len() == 2).then_some(failing)
    })
    .await;
    node.kill9();
    let hooks = Peer::receiver(dir.path(), hook_port);
    node.start();
    wait_for("both arrive after the restart", Duration::from_secs(60), || async {
        let got = hooks.records();
        waiting.iter().all(|id| got.iter().any(|h| h["id"] == id.as_str() && h["status"] == 200)).then_some(())
    })
    .await;
    let rows = wait_for("the ledger says sent", Duration::from_secs(30), || async {
        let body = ledger(&base, &manager).await?;
        let rows: Vec<Value> = body["deliveries"].as_array()?.clone();
        (rows.len() == 3 && rows.iter().all(|d| d["status"] == "sent")).then_some(rows)
    })
    .await;
    // Give a re-sender time to misbehave, then count: the message sent before
    // the kill arrived once (the receivers' logs are one file).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = hooks.records();
    assert!(got.iter().all(|h| h["valid"] == true), "{got:#?}");
    let count = |id: &str| got.iter().filter(|h| h["id"] == id && h["status"] == 200).count();
    assert_eq!(count(first["id"].as_str().unwrap()), 1, "sent before the kill, never again: {got:#?}");
    for d in &rows {
        assert_eq!(count(d["id"].as_str().unwrap()), 1, "{d:#}: {got:#?}");
    }
}

/// `cspulse check-config` on a config holding one webhook destination
/// with `secret`.
fn check_config_with_secret(secret: &str) -> std::process::Output {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(
        file,
        "[[delivery.destinations]]\nname = \"crm\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"{secret}\"\n"
    )
    .unwrap();
    Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(file.path())
        .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
        .output()
        .unwrap()
}

#[test]
fn check_config_refuses_a_bad_delivery_section_and_names_the_key() {
    let out = check_config_with_secret("not-a-whsec");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("delivery.destinations[0] (\"crm\")") && err.contains("whsec_"), "{err}");
    // A valid one is shown with its secret masked.
    let out = check_config_with_secret(WHSEC);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(shown.contains("[[delivery.destinations]]") && !shown.contains(WHSEC), "{shown}");
}

/// The file a reload test writes: `rules` and `rest` after the node's
/// Kafka settings and its one webhook destination.
fn reload_toml(hook_port: u16, rules: &str, rest: &str) -> String {
    format!(
        r#"[kafka.properties]
"fetch.wait.max.ms" = "1"
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
{rules}
[[delivery.destinations]]
name = "crm"
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
secret = "{WHSEC}"
{rest}
"#
    )
}

const HAS_P1: &str = r#"[[alerts.rules]]
name = "has_p1"
scope = "account"
severity = "warning"
when = [{ metric = "tickets.open_p1", op = ">=", value = 1 }]
"#;

fn hangup(node: &Node) {
    let pid = node.child.as_ref().expect("running").id().to_string();
    let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(status.success(), "kill -HUP {pid}");
}

/// The webhook messages about `rule` and `account` the receiver took.
fn hooks_about(hooks: &Peer, rule: &str, account: &str) -> Vec<Value> {
    hooks
        .records()
        .into_iter()
        .filter(|h| h["status"] == 200)
        .filter_map(|h| serde_json::from_str::<Value>(h["body"].as_str()?).ok())
        .filter(|b| {
            b["data"]["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["rule"] == rule && x["account_id"] == account))
        })
        .collect()
}

/// SIGHUP re-reads the file (SPEC §16 Reload): new rules are evaluated at
/// once (an alert fires without a new event, a removed rule's alert
/// resolves), targets and routes are replaced, an invalid file is refused
/// whole while the running configuration keeps working, and each reload is
/// an audit event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rules_targets_and_routes_and_refuses_an_invalid_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_port();
    let hooks = Peer::receiver(dir.path(), hook_port);
    let (cluster, _) = cluster_and_config();
    let mut config = tempfile::NamedTempFile::new().unwrap();
    // As started: the default rules, no targets, no routes.
    write!(config, "{}", reload_toml(hook_port, "", "")).unwrap();
    let node = Node::started(config, cluster.bootstrap_servers(), dir.path());
    let base = format!("http://127.0.0.1:{}", node.port);
    let p = producer(&node.brokers);
    let t0 = wall_now();
    produce(&p, "cs.accounts", 0, "a1", &upsert("a1", "Acme", "csm-1", t0)).await;
    produce(&p, "cs.accounts", 0, "a2", &upsert("a2", "Beta", "csm-1", t0 + 1)).await;
    produce(&p, "cs.tickets", 0, "a1", &ticket("a1", "T1", "opened", t0 + 1_000)).await;
    let manager = token(Role::Manager, None);
    let executive = token(Role::Executive, None);
    let firing = |base: String, token: String| async move {
        let res = reqwest::Client::new()
            .get(format!("{base}/api/v1/alerts"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let body: Value = res.json().await.ok()?;
        let mut rules: Vec<(String, String)> = body["alerts"]
            .as_array()?
            .iter()
            .map(|a| (a["rule"].as_str().unwrap_or("").to_owned(), a["scope_id"].as_str().unwrap_or("").to_owned()))
            .collect();
        rules.sort();
        Some(rules)
    };
    let p1 = ("p1_ticket_open".to_owned(), "a1".to_owned());
    wait_for("the default P1 rule fires for a1", Duration::from_secs(60), || async {
        firing(base.clone(), manager.clone()).await.filter(|f| f.contains(&p1))
    })
    .await;
    assert!(hooks.records().is_empty(), "no route, no message");

    // Reload: one rule in place of the defaults, a target, a route.
    let target = "[[targets]]\nname = \"nrr\"\nmetric = \"revenue.nrr_qtd\"\nscope = \"portfolio\"\nperiod = \"quarter\"\nop = \">=\"\nvalue = 1.05\n";
    let route = "[[delivery.alert_routes]]\nmatch = { rule = \"has_p1\" }\nto = [\"crm\"]\nstates = [\"firing\"]\n";
    std::fs::write(node.config.path(), reload_toml(hook_port, HAS_P1, &format!("{target}{route}"))).unwrap();
    hangup(&node);
    let has_p1 = ("has_p1".to_owned(), "a1".to_owned());
    wait_for("the new rule fires for a1 with no new event", Duration::from_secs(30), || async {
        firing(base.clone(), manager.clone()).await.filter(|f| f == &vec![has_p1.clone()])
    })
    .await;
    wait_for("its message reaches the new route's webhook", Duration::from_secs(30), || async {
        (!hooks_about(&hooks, "has_p1", "a1").is_empty()).then_some(())
    })
    .await;
    let (status, targets) = get(&format!("{base}/api/v1/targets"), Some(&executive)).await;
    assert_eq!(status, 200, "{targets}");
    assert_eq!(targets["targets"].as_array().map(|t| t.len()), Some(1), "{targets:#}");
    assert_eq!(targets["targets"][0]["name"], "nrr");
    let brokers = node.brokers.clone();
    let removed = tokio::task::spawn_blocking(move || consume_all(&brokers, "cs.alerts", 100, Duration::from_secs(8)))
        .await
        .unwrap()
        .into_iter()
        .map(|(_, a)| a)
        .find(|a| a["rule"] == "p1_ticket_open" && a["state"] == "resolved")
        .expect("the removed rule's alert resolved on the alert topic");
    assert!(removed["message"].as_str().unwrap().starts_with("Resolved (rule removed)"), "{removed:#}");

    // An invalid file is refused whole: neither its (valid) empty target
    // list nor anything else is taken.
    let bad_rule = HAS_P1.replace("tickets.open_p1", "tickets.open_p9");
    std::fs::write(node.config.path(), reload_toml(hook_port, &bad_rule, "")).unwrap();
    hangup(&node);
    let audit = wait_for("two reloads audited", Duration::from_secs(30), || async {
        let (status, body) = get(&format!("{base}/api/v1/audit?subject=SIGHUP"), Some(&executive)).await;
        (status == 200 && body["events"].as_array()?.len() == 2).then_some(body)
    })
    .await;
    assert_eq!(schema_errors("audit", &audit), Vec::<String>::new(), "{audit:#}");
    let events = audit["events"].as_array().unwrap();
    let outcomes: Vec<&str> = events.iter().rev().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["ok", "invalid"], "{audit:#}");
    for e in events {
        assert_eq!((e["action"].as_str(), e["role"].as_str()), (Some("reload"), Some("system")), "{e:#}");
        assert!(e["target"].as_str().unwrap().starts_with("config "), "{e:#}");
    }
    let (_, targets) = get(&format!("{base}/api/v1/targets"), Some(&executive)).await;
    assert_eq!(targets["targets"].as_array().map(|t| t.len()), Some(1), "the running targets stay: {targets:#}");
    // The running rules and routes keep working: a2's P1 goes out.
    produce(&p, "cs.tickets", 0, "a2", &ticket("a2", "T2", "opened", wall_now())).await;
    wait_for("a2's alert under the running rule reaches the webhook", Duration::from_secs(30), || async {
        (!hooks_about(&hooks, "has_p1", "a2").is_empty()).then_some(())
    })
    .await;
    let log = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("node-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("reload refused") && log.contains("tickets.open_p9"), "the refusal is logged, naming the key");
}

/// A private CA and a server certificate it signed for 127.0.0.1 (by the
/// `openssl` command): (CA PEM, server certificate, server key).
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let f = |name: &str| dir.join(name).display().to_string();
    std::fs::write(
        f("srv.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for args in [
        format!("req -x509 -days 2 -subj /CN=cspulse-test-ca {ec} -keyout {} -out {}", f("ca.key"), f("ca.pem")),
        format!("req -subj /CN=127.0.0.1 {ec} -keyout {} -out {}", f("srv.key"), f("srv.csr")),
        format!(
            "x509 -req -days 2 -in {} -CA {} -CAkey {} -CAcreateserial -extfile {} -out {}",
            f("srv.csr"),
            f("ca.pem"),
            f("ca.key"),
            f("srv.ext"),
            f("srv.pem")
        ),
    ] {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .output()
            .expect("openssl (scripts/test.sh installs it)");
        assert!(out.status.success(), "openssl {args}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

/// Email over STARTTLS and over implicit TLS (`smtps://`), each with AUTH,
/// to servers whose certificate a private CA signed: sent when the
/// destination trusts that CA (`ca_file`), refused (and retried) when it
/// does not, as the certificate is verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_and_implicit_tls_with_auth_verifies_the_server() {
    test_logging();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path());
    let sink = |name: &str, tls: &str| {
        let out = dir.path().join(format!("{name}.jsonl"));
        let env = [
            ("SMTP_SINK_TLS", tls.to_owned()),
            ("SMTP_SINK_CERT", cert.display().to_string()),
            ("SMTP_SINK_KEY", key.display().to_string()),
            ("SMTP_SINK_AUTH", "cspulse:s3cret".to_owned()),
        ];
        Peer::start_with("smtp_sink.py", free_port(), &[&out.display().to_string()], out.clone(), &env)
    };
    let (starttls, implicit) = (sink("starttls", "starttls"), sink("implicit", "implicit"));
    // SAFETY: set before the engine starts, read once when it parses the routes.
    unsafe { std::env::set_var("CSPULSE_TEST_SMTP_PASSWORD", "s3cret") };
    let dest = |name: &str, url: String, starttls: bool, ca_file: Option<&Path>| {
        let ca = ca_file.map(|p| format!("ca_file = \"{}\"\n", p.display())).unwrap_or_default();
        format!(
            "[[delivery.destinations]]\nname = \"{name}\"\nkind = \"email\"\nsmtp_url = \"{url}\"\nstarttls = {starttls}\n\
             from = \"cspulse <alerts@cspulse.test>\"\nto = [\"ops-{name}@cspulse.test\"]\nusername = \"cspulse\"\n\
             password_env = \"CSPULSE_TEST_SMTP_PASSWORD\"\n{ca}"
        )
    };
    let toml = [
        "[delivery]\ngive_up_after = \"1h\"\n".to_owned(),
        dest("relay", format!("smtp://127.0.0.1:{}", starttls.port), true, Some(&ca)),
        dest("smtps", format!("smtps://127.0.0.1:{}", implicit.port), false, Some(&ca)),
        dest("untrusted", format!("smtp://127.0.0.1:{}", starttls.port), true, None),
        "[[delivery.alert_routes]]\nmatch = { rule = \"p1_ticket_open\" }\nto = [\"relay\", \"smtps\", \"untrusted\"]\nstates = [\"firing\"]\n"
            .to_owned(),
    ]
    .concat();
    let (cluster, _) = cluster_and_config();
    let config = config_with(&toml, dir.path(), cluster.bootstrap_servers());
    let app = App::start(&config).await.expect("engine starts");
    let base = format!("http://{}", app.addr);
    let p = producer(&config.kafka.brokers);
    let t0 = wall_now();
    produce(&p, "cs.accounts", 0, "acme", &upsert("acme", "Acme Corp", "csm-1", t0)).await;
    produce(&p, "cs.tickets", 0, "acme", &ticket("acme", "T1", "opened", t0 + 1_000)).await;
    let manager = token(Role::Manager, None);
    let rows = wait_for("two sent, one failing", Duration::from_secs(40), || async {
        let rows = deliveries(&base, &manager).await;
        let status = |d: &str| rows.iter().find(|r| r["destination"] == d).map(|r| r["status"].clone());
        (status("relay") == Some(json!("sent"))
            && status("smtps") == Some(json!("sent"))
            && status("untrusted") == Some(json!("failed")))
        .then_some(rows)
    })
    .await;
    for (peer, name) in [(&starttls, "relay"), (&implicit, "smtps")] {
        let got = peer.records();
        let mine: Vec<&Value> = got.iter().filter(|m| m["to"] == json!([format!("ops-{name}@cspulse.test")])).collect();
        assert_eq!(mine.len(), 1, "{name}: {got:#?}");
        assert_eq!((mine[0]["tls"].as_bool(), mine[0]["auth_user"].as_str()), (Some(true), Some("cspulse")), "{name}");
        assert!(mine[0]["subject"].as_str().unwrap().contains("Acme Corp"), "{:#}", mine[0]);
    }
    let untrusted = rows.iter().find(|r| r["destination"] == "untrusted").unwrap();
    let error = untrusted["last_error"].as_str().unwrap_or("");
    assert!(error.to_lowercase().contains("certificate"), "the unknown CA is named: {untrusted:#}");
    assert!(starttls.records().iter().all(|m| m["to"] != json!(["ops-untrusted@cspulse.test"])), "nothing sent");
    app.shutdown().await;
}
