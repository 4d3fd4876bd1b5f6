//! `restart`: restart-to-ready of the real `cspulse serve` binary holding a
//! large state (default 100,000 accounts, 3,000,000 distinct users), with the
//! directory store. The harness hosts the broker, streams the portfolio into
//! it paced to the engine's consumption (the mock cluster keeps at most
//! 100,000 messages per partition), then restarts the engine repeatedly:
//! after a graceful stop (SIGTERM: final checkpoint) and after a `kill -9`
//! following newer events (restore, then replay since the checkpoint). Each
//! restart is timed from spawning the process to `/readyz` answering 200,
//! and the state read back over REST must hold every user.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cspulse::auth::Role;
use cspulse::time::{MICROS_PER_DAY, MICROS_PER_MIN, format_rfc3339};

const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MIN;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};
use tokio::process::Child;

use crate::broker::Broker;
use crate::push::{SECRET, base_config, free_port, http_get, http_status, server_bin_at, token};
use crate::swarm::now_us;

#[derive(Clone, Debug, clap::Args)]
pub struct RestartArgs {
    #[arg(long, default_value_t = 100_000)]
    pub accounts: usize,
    #[arg(long, default_value_t = 3_000_000)]
    pub users: usize,
    /// Partitions per input topic (the mock cluster keeps 100,000 messages each).
    #[arg(long, default_value_t = 32)]
    pub partitions: i32,
    /// Kafka bootstrap servers; default: an embedded mock cluster.
    #[arg(long)]
    pub brokers: Option<String>,
    /// The cspulse binary (default: next to this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
}

/// Produced but not yet folded, at most (well inside the mock's retention).
const AHEAD: u64 = 400_000;

pub(crate) struct Instance {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

struct Setup {
    bin: PathBuf,
    brokers: String,
    group: String,
    store: PathBuf,
    config: PathBuf,
    logs: PathBuf,
}

impl Setup {
    fn spawn(&self, incarnation: usize) -> anyhow::Result<Instance> {
        let port = free_port()?;
        let log = std::fs::File::create(self.logs.join(format!("restart-{incarnation}.log")))?;
        let child = tokio::process::Command::new(&self.bin)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("CSPULSE__KAFKA__BROKERS", &self.brokers)
            .env("CSPULSE__KAFKA__GROUP_ID", &self.group)
            .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
            .env("CSPULSE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("CSPULSE__STATE__STORE", format!("file://{}", self.store.display()))
            // History on, as `serve` runs by default: the checkpoint carries
            // the rows the store has not committed yet.
            // (`CSPULSE_LOAD_HISTORY=off` measures without it, for comparison.)
            .env("CSPULSE__HISTORY__STORE", crate::push::history_store(&self.logs.join("history.db")))
            .env("CSPULSE__LOG__LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawn cspulse serve")?;
        Ok(Instance { child, port })
    }
}

impl Instance {
    /// Time until `/readyz` answers 200.
    pub(crate) async fn ready(&mut self, started: Instant, limit: Duration) -> anyhow::Result<Duration> {
        let token = token(Role::Executive, None);
        while started.elapsed() < limit {
            if http_status(self.port, "/readyz", &token).await == Some(200) {
                return Ok(started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("cspulse exited before it was ready: {status}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("not ready within {limit:?}")
    }

    /// Sum of the series of one counter in `/metrics`.
    async fn counter(&self, name: &str) -> f64 {
        let text = http_get(self.port, "/metrics", &token(Role::Executive, None)).await.unwrap_or_default();
        let prefix = format!("{name}{{");
        text.lines()
            .filter(|l| l.starts_with(&prefix) || l.starts_with(&format!("{name} ")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Events the engine has taken (accepted, rejected or duplicate).
    async fn taken(&self) -> u64 {
        let accepted = self.counter("cspulse_events_accepted_total").await;
        let rejected = self.counter("cspulse_events_rejected_total").await;
        let duplicate = self.counter("cspulse_events_duplicate_total").await;
        (accepted + rejected + duplicate) as u64
    }

    async fn wait_taken(&self, total: u64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.taken().await;
            if n >= total {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the engine took {n} of {total} events within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn executive(&self) -> anyhow::Result<Value> {
        let raw = http_get(self.port, "/api/v1/channels/executive", &token(Role::Executive, None))
            .await
            .context("GET executive channel")?;
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).context("HTTP response")?;
        Ok(serde_json::from_str(body)?)
    }

    /// SIGTERM (final checkpoint); the time until the process is gone.
    async fn stop(mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let pid = self.child.id().context("pid")? as i32;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        match tokio::time::timeout(Duration::from_secs(120), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("cspulse exited with {status} after SIGTERM");
                }
                Ok(started.elapsed())
            }
            Err(_) => bail!("cspulse did not stop within 120 s of SIGTERM"),
        }
    }

    async fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Account upserts and opening revenue (unless `upserts` is false), then
/// two usage events per distinct user (two features each) spread over the
/// accounts, all within the last 7 days.
pub(crate) struct Portfolio {
    pub(crate) accounts: usize,
    pub(crate) users: usize,
    pub(crate) upserts: bool,
    pub(crate) base: i64,
}

impl Portfolio {
    fn opening(&self) -> usize {
        if self.upserts { 2 * self.accounts } else { 0 }
    }

    fn len(&self) -> usize {
        self.opening() + 2 * self.users
    }

    /// Message `i`: (topic index, key, payload).
    fn message(&self, i: usize, tag: &str) -> (usize, String, String) {
        const SEGMENTS: [&str; 3] = ["enterprise", "mid-market", "smb"];
        const REGIONS: [&str; 4] = ["na", "emea", "apac", "latam"];
        const FEATURES: [&str; 8] =
            ["reports", "dashboards", "api", "integrations", "alerts", "exports", "workflows", "search"];
        let ts = |t: i64| format_rfc3339(t);
        if i < self.opening() {
            let a = i / 2;
            let account = format!("acc-{a:06}");
            let at = ts(self.base);
            if i.is_multiple_of(2) {
                let body = json!({"event_id": format!("{tag}a{a}"), "ts": at, "account_id": account,
                    "name": format!("Account {a}"), "csm_id": format!("csm-{:03}", a % 400), "segment": SEGMENTS[a % 3],
                    "region": REGIONS[a % 4], "seats": 50, "renewal_date": "2027-12-31"});
                (0, account, body.to_string())
            } else {
                let body = json!({"event_id": format!("{tag}r{a}"), "ts": at, "account_id": account, "kind": "new", "arr": 25000});
                (3, account, body.to_string())
            }
        } else {
            let j = i - self.opening();
            let u = j / 2;
            let f = if j.is_multiple_of(2) { u % 8 } else { (u + 3) % 8 };
            let account = format!("acc-{:06}", u % self.accounts);
            let span = 6 * MICROS_PER_DAY;
            let at = self.base + MICROS_PER_HOUR + (u as i64 * 7919) % span;
            let body = json!({"event_id": format!("{tag}u{u}-{f}"), "ts": ts(at), "account_id": account,
                "user_id": format!("user-{u:08}"), "feature": FEATURES[f]});
            (1, account, body.to_string())
        }
    }
}

fn producer(brokers: &str) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

/// Produces `count` messages from `first`, never more than `AHEAD` beyond
/// what the engine has taken; returns when the engine has taken them all.
pub(crate) async fn stream(
    engine: &Instance,
    producer: &ThreadedProducer<DefaultProducerContext>,
    topics: &[String; 4],
    portfolio: &Portfolio,
    tag: &str,
    taken_before: u64,
) -> anyhow::Result<()> {
    let total = portfolio.len();
    let started = Instant::now();
    let mut taken = taken_before;
    let mut last_report = Instant::now();
    for i in 0..total {
        while i as u64 + taken_before >= taken + AHEAD {
            producer.flush(Duration::from_secs(10))?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            taken = engine.taken().await;
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!("  {tag}: produced {i} of {total}, folded {}", taken - taken_before);
                last_report = Instant::now();
            }
        }
        let (topic, key, payload) = portfolio.message(i, tag);
        let mut record = BaseRecord::to(&topics[topic]).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    engine.wait_taken(taken_before + total as u64, Duration::from_secs(600)).await?;
    eprintln!("  {tag}: {total} events produced and folded in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn users_of(view: &Value) -> u64 {
    view["portfolio"]["usage"]["active_users_7d"].as_u64().unwrap_or(0)
}

pub async fn restart(args: RestartArgs, runs: usize) -> anyhow::Result<()> {
    let config = base_config()?;
    let broker = Broker::start(args.brokers.as_deref(), &config, args.partitions)?;
    let t = &config.kafka.topics;
    let topics = [t.accounts.clone(), t.usage.clone(), t.tickets.clone(), t.revenue.clone()];
    let dir = std::env::temp_dir().join(format!("cspulse-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config_file = dir.join("restart.toml");
    std::fs::write(
        &config_file,
        "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
    )?;
    let setup = Setup {
        bin: server_bin_at(args.server_bin.as_ref())?,
        brokers: broker.bootstrap.clone(),
        group: format!("load-restart-{}", now_us()),
        store: dir.join("store"),
        config: config_file,
        logs: dir.clone(),
    };
    let producer = producer(&broker.bootstrap)?;
    let base = now_us() - 7 * MICROS_PER_DAY;
    let portfolio = Portfolio { accounts: args.accounts, users: args.users, upserts: true, base };

    println!(
        "restart: {} accounts, {} distinct users, directory store, logs in {}",
        args.accounts,
        args.users,
        dir.display()
    );
    let mut incarnation = 0;
    let mut engine = setup.spawn(incarnation)?;
    engine.ready(Instant::now(), Duration::from_secs(60)).await?;
    stream(&engine, &producer, &topics, &portfolio, "p", 0).await?;
    let users = users_of(&engine.executive().await?);
    if users != args.users as u64 {
        bail!("active_users_7d is {users} after the fold, expected {}", args.users);
    }
    let rss_mib = crate::push::rss_kib(engine.child.id().context("pid")?) / 1024;
    println!("  state folded: active_users_7d {users}, RSS {rss_mib} MiB");

    let mut graceful = Vec::new();
    let mut stops = Vec::new();
    let mut crashed = Vec::new();
    for run in 0..runs {
        // Graceful: SIGTERM writes a final checkpoint; the restart restores it.
        stops.push(engine.stop().await?);
        incarnation += 1;
        let started = Instant::now();
        engine = setup.spawn(incarnation)?;
        let ready = engine.ready(started, Duration::from_secs(120)).await?;
        let users = users_of(&engine.executive().await?);
        if users != args.users as u64 {
            bail!("active_users_7d is {users} after a graceful restart, expected {}", args.users);
        }
        println!(
            "  run {}: SIGTERM → exit {:.2} s; restart → ready {:.2} s (active_users_7d {users})",
            run + 1,
            stops.last().unwrap().as_secs_f64(),
            ready.as_secs_f64()
        );
        graceful.push(ready);

        // Crash: newer events (10,000 more usage events of known users),
        // `kill -9`; the restart restores the last periodic checkpoint and
        // replays what came after it.
        let more = Portfolio { accounts: args.accounts, users: 5_000.min(args.users), upserts: false, base };
        let tag = format!("k{run}-");
        let before = engine.taken().await;
        stream(&engine, &producer, &topics, &more, &tag, before).await?;
        engine.kill9().await?;
        incarnation += 1;
        let started = Instant::now();
        engine = setup.spawn(incarnation)?;
        let ready = engine.ready(started, Duration::from_secs(120)).await?;
        let users = users_of(&engine.executive().await?);
        println!("  run {}: kill -9, restart → ready {:.2} s (active_users_7d {users})", run + 1, ready.as_secs_f64());
        if users != args.users as u64 {
            bail!("active_users_7d is {users} after kill -9, expected {}", args.users);
        }
        crashed.push(ready);
    }
    let _ = engine.stop().await;
    let _ = std::fs::remove_dir_all(setup.store);

    let secs = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).collect::<Vec<_>>();
    let (g, c, s) = (secs(&graceful), secs(&crashed), secs(&stops));
    println!("\nrestart-to-ready, {} runs: median (min–max)", runs);
    let spread = |v: &[f64]| crate::push::spread(v.to_vec(), 2).1;
    println!("  after SIGTERM (final checkpoint)  {} s", spread(&g));
    println!("  after kill -9 (replay since last) {} s", spread(&c));
    println!("  SIGTERM → exit                    {} s", spread(&s));
    println!("  target: ready <= 5 s");
    println!(
        "reproduce: cargo run --release -p cspulse-load -- restart --accounts {} --users {} --runs {runs}",
        args.accounts, args.users
    );
    crate::write_results(
        "restart",
        json!({"accounts": args.accounts, "users": args.users, "rss_mib": rss_mib,
               "ready_after_sigterm_seconds": g, "ready_after_kill9_seconds": c, "stop_seconds": s,
               "machine": crate::machine()}),
    )
}
