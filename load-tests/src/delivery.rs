//! `delivery`: event produced to Kafka → email accepted by an SMTP server and
//! webhook received (SPEC §16), at a constant rate of alerts.
//!
//! The peers are the delivery tests' real servers (`tests/peers/`): an SMTP
//! server (Python's aiosmtpd) and an HTTP receiver that checks every
//! Standard Webhooks signature; each records the wall-clock instant it took
//! a message. `cspulse serve` runs with one csm person (email) and a route
//! that sends `p1_ticket_open` firings to the owner and to the webhook. After
//! the accounts are in, P1 tickets are opened at `--alert-rate` per second
//! for `--seconds`, each on an account of its own; the latency of each
//! message is the peer's instant minus the ticket event's scheduled send
//! time (the same clock).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cspulse::auth::Role;
use cspulse::time::format_rfc3339;
use rdkafka::producer::Producer as _;
use serde_json::{Value, json};

use crate::broker::BrokerProcess;
use crate::push::{
    Common, machine, pin_self, runtime, send, spawn_cspulse_with, ticket_producer, token, wait_http, write,
};
use crate::swarm::{histogram, now_us, summary};

#[derive(Clone, Debug, clap::Args)]
pub struct DeliveryArgs {
    /// Alerts per second (each makes an email and a webhook).
    #[arg(long, default_value_t = 100.0)]
    pub alert_rate: f64,
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    #[command(flatten)]
    pub common: Common,
}

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A peer process of `tests/peers/`, stopped when dropped.
struct Peer {
    child: std::process::Child,
    out: PathBuf,
}

impl Peer {
    fn start(script: &str, port: u16, args: &[String], out: PathBuf) -> anyhow::Result<Peer> {
        use std::io::BufRead;
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers").join(script);
        let mut child = std::process::Command::new("python3")
            .arg(&path)
            .arg(port.to_string())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("python3 {}", path.display()))?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("peer stdout")?).read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("{script} did not start (aiosmtpd installed? scripts/test.sh installs it)");
        }
        Ok(Peer { child, out })
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The account a message is about: `(account_id, peer instant in µs)`.
fn email_of(r: &Value) -> Option<(String, i64)> {
    let text = r["text"].as_str()?;
    let start = text.find("(dl-")? + 1;
    let id = &text[start..start + text[start..].find(')')?];
    Some((id.to_owned(), (r["at"].as_f64()? * 1e6) as i64))
}

fn webhook_of(r: &Value) -> Option<(String, i64)> {
    if r["valid"] != true || r["status"] != 200 {
        return None;
    }
    let body: Value = serde_json::from_str(r["body"].as_str()?).ok()?;
    let id = body["data"]["alerts"][0]["account_id"].as_str()?.to_owned();
    Some((id, (r["at"].as_f64()? * 1e6) as i64))
}

pub fn delivery(args: DeliveryArgs) -> anyhow::Result<()> {
    pin_self(args.common.client_core);
    let rt = runtime()?;
    let dir = std::env::temp_dir().join(format!("cspulse-load-delivery-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (smtp_port, hook_port) = (free_port()?, free_port()?);
    let smtp = Peer::start(
        "smtp_sink.py",
        smtp_port,
        &[dir.as_path().join("mail.jsonl").display().to_string()],
        dir.as_path().join("mail.jsonl"),
    )?;
    let hooks = Peer::start(
        "webhook_receiver.py",
        hook_port,
        &[WHSEC.to_owned(), dir.as_path().join("hooks.jsonl").display().to_string()],
        dir.as_path().join("hooks.jsonl"),
    )?;
    let broker = BrokerProcess::start(args.common.client_core)?;
    let toml = format!(
        r#"
[[delivery.destinations]]
name = "mail"
kind = "email"
smtp_url = "smtp://127.0.0.1:{smtp_port}"
from = "cspulse <alerts@cspulse.test>"
[[delivery.destinations]]
name = "crm"
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
secret = "{WHSEC}"
[[delivery.people]]
id = "probe"
email = "probe@cspulse.test"
role = "csm"
csm_id = "csm-dl"
[[delivery.alert_routes]]
match = {{ rule = "p1_ticket_open" }}
states = ["firing"]
to = ["owner", "crm"]
"#
    );
    let k = (args.alert_rate * args.seconds).round() as usize;
    let result = rt.block_on(async {
        let server = spawn_cspulse_with(&args.common, &broker.bootstrap, "delivery", &[], &toml).await?;
        let producer = ticket_producer(&broker.bootstrap, 0)?;
        let account = |i: usize| format!("dl-{i:06}");
        let now = now_us();
        for i in 0..k {
            let id = account(i);
            let a = json!({"event_id": format!("a-{id}"), "ts": format_rfc3339(now), "account_id": id, "name": id,
                "csm_id": "csm-dl", "segment": "enterprise", "region": "emea", "seats": 40, "renewal_date": "2027-09-30"});
            send(&producer, "cs.accounts", &id, &serde_json::to_vec(&a)?);
        }
        producer.flush(Duration::from_secs(30))?;
        wait_http(
            server.port,
            &format!("/api/v1/accounts/{}", account(k - 1)),
            &token(Role::Executive, None),
            Duration::from_secs(60),
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // P1 ticket i at t0 + i·period, produced at its own ts.
        let period = 1e6 / args.alert_rate;
        let t0 = now_us() + 500_000;
        let intended: Vec<i64> = (0..k).map(|i| t0 + (period * i as f64) as i64).collect();
        let mut behind = 0i64;
        for (i, &at) in intended.iter().enumerate() {
            let wait = at - now_us();
            if wait > 0 {
                tokio::time::sleep(Duration::from_micros(wait as u64)).await;
            }
            behind = behind.max(now_us() - at);
            let id = account(i);
            let t = json!({"event_id": format!("t-{id}"), "ts": format_rfc3339(at), "account_id": id,
                "ticket_id": format!("T-{id}"), "action": "opened", "priority": "p1"});
            send(&producer, "cs.tickets", &id, &serde_json::to_vec(&t)?);
        }
        producer.flush(Duration::from_secs(30))?;
        // Every message in, or 60 s after the last event.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (m, h) = (smtp.records().len(), hooks.records().iter().filter(|r| r["status"] == 200).count());
            if (m >= k && h >= k) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        server.stop().await;
        anyhow::Ok((intended, behind))
    });
    let (intended, behind) = result?;
    let scheduled: HashMap<String, i64> = (0..k).map(|i| (format!("dl-{i:06}"), intended[i])).collect();
    let mut out = serde_json::Map::new();
    let mut lines = Vec::new();
    for (name, got) in [
        ("email", smtp.records().iter().filter_map(email_of).collect::<Vec<_>>()),
        ("webhook", hooks.records().iter().filter_map(webhook_of).collect::<Vec<_>>()),
    ] {
        let mut h = histogram();
        let mut first: HashMap<&str, i64> = HashMap::new();
        for (id, at) in &got {
            let e = first.entry(id.as_str()).or_insert(*at);
            *e = (*e).min(*at);
        }
        for (id, at) in &first {
            if let Some(t) = scheduled.get(*id) {
                h.record((at - t).max(1) as u64)?;
            }
        }
        let missing = k.saturating_sub(first.len());
        lines.push(format!(
            "  {name}: {} of {k} received ({missing} missing, {} duplicates); event → accepted p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            first.len(),
            got.len() - first.len(),
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.max() as f64 / 1e3
        ));
        out.insert(
            name.to_owned(),
            json!({"received": first.len(), "missing": missing,
            "duplicates": got.len() - first.len(), "latency": summary(&h)}),
        );
    }
    println!(
        "\ndelivery: {} alerts/s for {} s ({k} P1 tickets, each an email to its owner and a signed webhook); producer max behind schedule {:.1} ms",
        args.alert_rate,
        args.seconds,
        behind as f64 / 1e3
    );
    for l in &lines {
        println!("{l}");
    }
    println!("  target: p99 <= 1 s at 100 alerts/s");
    println!(
        "reproduce: ./target/release/cspulse-load delivery --alert-rate {} --seconds {}",
        args.alert_rate, args.seconds
    );
    let _ = std::fs::remove_dir_all(&dir);
    write(
        "delivery",
        &json!({"alert_rate": args.alert_rate, "seconds": args.seconds, "alerts": k, "machine": machine(),
            "producer_max_behind_ms": behind as f64 / 1e3, "results": out}),
    )
}
