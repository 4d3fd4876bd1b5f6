//! `cspulse demo`: librdkafka's in-process mock cluster as the broker, a
//! synthetic portfolio streaming into it, the engine and the HTTP server, all
//! in one process with nothing installed.

pub mod generator;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use tracing::{info, warn};

use crate::app::App;
use crate::auth::{Auth, Role};
use crate::config::Config;
use crate::ingest::TopicNames;
use crate::time::{Ts, wall_now};
use generator::{Generator, Message, PortfolioSpec};

/// Partitions of each input topic in the embedded broker (the mock cluster
/// keeps at most 100,000 messages per partition, see KAFKA-NOTES).
pub const INPUT_PARTITIONS: i32 = 16;

/// Demo settings from the command line.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    pub accounts: usize,
    pub csms: usize,
    pub rate: f64,
    pub history_days: i64,
    pub seed: u64,
}

/// Creates the embedded broker with every configured topic.
pub fn embedded_broker(config: &Config) -> anyhow::Result<MockCluster<'static, DefaultProducerContext>> {
    let cluster = MockCluster::new(1).context("cannot start the embedded Kafka broker")?;
    let t = &config.kafka.topics;
    for name in [&t.accounts, &t.usage, &t.tickets, &t.revenue] {
        cluster.create_topic(name, INPUT_PARTITIONS, 1).with_context(|| format!("cannot create topic {name}"))?;
    }
    cluster.create_topic(&t.alerts, 4, 1)?;
    cluster.create_topic(&t.deadletter, 1, 1)?;
    Ok(cluster)
}

/// Settings that make the mock cluster answer fetches quickly (KAFKA-NOTES).
pub fn low_latency(config: &mut Config) {
    for (k, v) in [
        ("fetch.wait.max.ms", "1"),
        ("socket.nagle.disable", "true"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        config.kafka.properties.insert(k.into(), v.into());
    }
}

/// Targets for the demo's dashboards to draw as goal lines (unless some
/// are configured).
fn demo_targets() -> Vec<crate::config::TargetConfig> {
    use crate::time::CalendarPeriod::{Month, Quarter};
    let target = |name: &str, metric: &str, scope: &str, period, op: &str, value| crate::config::TargetConfig {
        name: name.into(),
        metric: metric.into(),
        scope: scope.into(),
        period,
        op: op.into(),
        value,
    };
    vec![
        target("NRR this quarter", "revenue.nrr_qtd", "portfolio", Quarter, ">=", 1.0),
        target("GRR this quarter", "revenue.grr_qtd", "portfolio", Quarter, ">=", 0.95),
        target("At-risk share this month", "health.at_risk_share", "portfolio", Month, "<=", 0.1),
        target("Enterprise adoption this month", "usage.adoption_rate", "segment:enterprise", Month, ">=", 0.8),
    ]
}

/// `history.store` of `serve` unless configured (`default.toml`).
const SERVE_HISTORY: &str = "sqlite://./cspulse-data/history.db";

pub async fn run(mut config: Config, opts: DemoOptions) -> anyhow::Result<()> {
    let cluster = embedded_broker(&config)?;
    let bootstrap = cluster.bootstrap_servers();
    config.kafka.brokers = bootstrap.clone();
    config.state.store = "memory".into();
    if config.history.store == SERVE_HISTORY {
        // The demo's broker and portfolio are new each run: so is its history.
        let dir = std::env::temp_dir().join(format!("cspulse-demo-{}", std::process::id()));
        config.history.store = format!("sqlite://{}/history.db", dir.display());
        config.history.spill = format!("{}/history-spill.jsonl", dir.display());
        tracing::info!(store = %config.history.store, "the demo keeps its history in its own data folder");
    }
    if config.targets.is_empty() {
        config.targets = demo_targets();
    }
    if config.time.align_wait.0.is_zero() {
        // The generator backfills 30 days into every topic at once; folding
        // them in event-time order keeps the history it writes exact.
        config.time.align_wait = crate::time::Span(std::time::Duration::from_millis(50));
    }
    config.http.listen = opts.listen;
    low_latency(&mut config);
    if config.auth.jwt_secret.len() < 16 && !config.auth.insecure {
        config.auth.jwt_secret = random_secret();
    }
    config.validate()?;

    let app = App::start(&config).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = crate::ingest::producer(&config.kafka).context("cannot create the demo producer")?;
    let topics = TopicNames::new(&config.kafka.topics);
    let generator_thread = {
        let stop = stop.clone();
        let opts = opts.clone();
        std::thread::Builder::new()
            .name("cspulse-demo-generator".into())
            .spawn(move || stream_portfolio(&producer, &topics, &opts, &stop))?
    };

    print_banner(&config, &bootstrap, app.addr, &opts)?;
    crate::app::shutdown_signal().await;
    stop.store(true, Ordering::SeqCst);
    let _ = tokio::task::spawn_blocking(move || generator_thread.join()).await;
    app.shutdown().await;
    drop(cluster);
    Ok(())
}

fn random_secret() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32).map(|_| format!("{:x}", rng.random_range(0..16u8))).collect()
}

fn print_banner(config: &Config, bootstrap: &str, addr: SocketAddr, opts: &DemoOptions) -> anyhow::Result<()> {
    let auth = Auth::new(&config.auth.jwt_secret, config.auth.insecure);
    let ttl = Duration::from_secs(12 * 3600);
    let base = format!("http://{addr}");
    let token = |role, csm: Option<&str>| auth.mint(&format!("demo-{}", role_name(role)), role, csm, ttl);
    let mut out = String::new();
    out.push_str("\ncspulse demo is running\n");
    out.push_str(&format!("  embedded Kafka broker (bootstrap.servers): {bootstrap}\n"));
    out.push_str(&format!(
        "  portfolio: {} accounts, {} CSMs, ~{} events/s (with bursts), {} days of history\n",
        opts.accounts, opts.csms, opts.rate, opts.history_days
    ));
    out.push_str("\nOpen the dashboard, one URL per role (tokens valid 12 h):\n");
    for (role, csm) in
        [(Role::Executive, None), (Role::Manager, None), (Role::Analyst, None), (Role::Csm, Some("csm-01"))]
    {
        let t = token(role, csm).map_err(anyhow::Error::msg)?;
        out.push_str(&format!("  {:<9} {base}/?token={t}\n", role_name(role)));
    }
    let t = token(Role::Wall, None).map_err(anyhow::Error::msg)?;
    out.push_str(&format!("  {:<9} {base}/?token={t}&wall=1\n", role_name(Role::Wall)));
    out.push_str(&format!(
        "\nLive updates: ws://{addr}/ws?token=<token>, then send {{\"op\":\"subscribe\",\"channel\":\"executive\"}}\n"
    ));
    out.push_str(&format!(
        "Also: {base}/api/v1/channels/executive  {base}/api/v1/alerts?state=firing  {base}/metrics  {base}/readyz  ·  mint more: cspulse token --role csm --csm-id csm-02\nPress Ctrl-C to stop.\n"
    ));
    println!("{out}");
    Ok(())
}

fn role_name(role: Role) -> &'static str {
    role.as_str()
}

fn send(producer: &ThreadedProducer<DefaultProducerContext>, topics: &TopicNames, m: &Message, stop: &AtomicBool) {
    crate::ingest::send_with_retry(producer, topics.name(m.topic), Some(m.key.as_bytes()), &m.payload, stop, || ());
}

/// Backfills history, then streams live events stamped with the wall clock.
fn stream_portfolio(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topics: &TopicNames,
    opts: &DemoOptions,
    stop: &AtomicBool,
) {
    let spec = PortfolioSpec { accounts: opts.accounts, csms: opts.csms, seed: opts.seed, ..PortfolioSpec::demo() };
    let mut generator = Generator::new(spec);
    let started = Instant::now();
    let history = generator.backfill(wall_now(), opts.history_days);
    let count = history.len();
    for m in &history {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        send(producer, topics, m, stop);
    }
    info!(events = count, secs = started.elapsed().as_secs_f64(), "history produced");
    let mut last: Ts = wall_now();
    let mut produced: u64 = 0;
    let mut reported = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let now = wall_now();
        if now <= last {
            continue;
        }
        let batch = generator.tick(last, now, opts.rate);
        last = now;
        for m in &batch {
            send(producer, topics, m, stop);
        }
        produced += batch.len() as u64;
        if reported.elapsed() >= Duration::from_secs(60) {
            info!(events = produced, per_sec = produced as f64 / reported.elapsed().as_secs_f64(), "demo stream");
            produced = 0;
            reported = Instant::now();
        }
    }
    if producer.flush(Duration::from_secs(5)).is_err() {
        warn!("demo producer did not flush in time");
    }
}
