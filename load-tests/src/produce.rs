//! `produce`: the demo generator's realistic portfolio at size S, M or L,
//! produced to Kafka keyed by account id, at a constant target rate or as
//! fast as possible; every delivery is awaited and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cspulse::demo::generator::{Generator, Message, PortfolioSpec};
use cspulse::ingest::TopicNames;
use cspulse::time::{MICROS_PER_SEC, parse_rfc3339};
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use serde_json::json;

use crate::broker::Broker;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Size {
    /// 1,000 accounts × 30 users.
    S,
    /// 10,000 accounts × 30 users.
    M,
    /// 150,000 accounts × 30 users.
    L,
}

impl Size {
    pub fn spec(self) -> PortfolioSpec {
        let accounts = match self {
            Size::S => 1_000,
            Size::M => 10_000,
            Size::L => 150_000,
        };
        PortfolioSpec { accounts, csms: (accounts / 50).max(1), users_per_account: 30, seed: 42 }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct ProduceArgs {
    #[arg(long, value_enum, default_value = "m")]
    pub size: Size,
    /// Events per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Live events after the portfolio's account upserts and opening revenue.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Partitions per input topic (mock cluster only; it keeps 5 MiB each).
    #[arg(long, default_value_t = 64)]
    pub partitions: i32,
    /// Kafka bootstrap servers; default: an embedded mock cluster.
    #[arg(long)]
    pub brokers: Option<String>,
}

#[derive(Default)]
struct Acks {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Counting(Arc<Acks>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The portfolio's opening messages (account upserts, `new` revenue), then
/// `events` live events.
fn generate(size: Size, events: usize) -> Vec<Message> {
    let spec = size.spec();
    let mut generator = Generator::new(spec);
    let start = parse_rfc3339("2026-11-01T00:00:00Z").expect("fixed date");
    let mut out = Vec::new();
    let mut t = start;
    let opening = 2 * generator.account_ids().count();
    while out.len() < events + opening {
        out.extend(generator.tick(t, t + 60 * MICROS_PER_SEC, 500.0));
        t += 60 * MICROS_PER_SEC;
    }
    out.truncate(events + opening);
    out
}

pub fn produce(args: ProduceArgs, runs: usize) -> anyhow::Result<()> {
    let config = cspulse::config::Config::from_toml("[auth]\njwt_secret = \"load-test-secret-0123456789abcdef\"\n")?;
    let names = TopicNames::new(&config.kafka.topics);
    let broker = Broker::start(args.brokers.as_deref(), &config, args.partitions)?;
    let spec = args.size.spec();
    let (mut gen_rates, mut rates, mut behind) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = json!({});
    for run in 0..runs {
        let t = Instant::now();
        let msgs = generate(args.size, args.events);
        let gen_secs = t.elapsed().as_secs_f64();
        let bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
        gen_rates.push(msgs.len() as f64 / gen_secs);
        let acks = Arc::new(Acks::default());
        let producer: ThreadedProducer<Counting> = ClientConfig::new()
            .set("bootstrap.servers", &broker.bootstrap)
            .set("linger.ms", if args.rate > 0.0 { "1" } else { "5" })
            .set("queue.buffering.max.messages", "1000000")
            .create_with_context(Counting(acks.clone()))?;
        let t0 = Instant::now();
        let mut max_behind = Duration::ZERO;
        let mut sent = 0usize;
        for (k, m) in msgs.iter().enumerate() {
            if args.rate > 0.0 {
                let at = Duration::from_secs_f64(k as f64 / args.rate);
                let now = t0.elapsed();
                if at > now + Duration::from_micros(200) {
                    std::thread::sleep(at - now);
                } else if now > at {
                    max_behind = max_behind.max(now - at);
                }
            }
            let mut record = BaseRecord::to(names.name(m.topic)).key(m.key.as_bytes()).payload(&m.payload);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        if Instant::now() > deadline {
                            anyhow::bail!("producer stuck: {e}");
                        }
                        record = r;
                        std::thread::sleep(Duration::from_micros(500));
                    }
                }
            }
            sent += 1;
        }
        producer.flush(Duration::from_secs(120))?;
        let secs = t0.elapsed().as_secs_f64();
        let ok = acks.ok.load(Ordering::Relaxed);
        let failed = acks.failed.load(Ordering::Relaxed);
        rates.push(ok as f64 / secs);
        behind.push(max_behind.as_secs_f64() * 1000.0);
        eprintln!(
            "run {}/{runs}: generated {} in {gen_secs:.1}s, produced {ok} acked ({failed} failed) in {secs:.2}s = {:.0}/s",
            run + 1,
            msgs.len(),
            ok as f64 / secs
        );
        last = json!({"messages": sent, "acked": ok, "failed": failed, "bytes": bytes,
            "avg_bytes": bytes as f64 / msgs.len().max(1) as f64, "seconds": secs});
    }
    let s = |v: Vec<f64>| crate::stat(v);
    let (g, r, b) = (s(gen_rates), s(rates), s(behind));
    println!(
        "\nproduce: size {:?} ({} accounts × {} users, {} CSMs), {} live events after the opening upserts, keyed by account id, to {}",
        args.size,
        spec.accounts,
        spec.users_per_account,
        spec.csms,
        args.events,
        broker.describe()
    );
    println!("  generator alone                      {}", crate::fmt_rate(&g));
    println!(
        "  produced and acknowledged            {}  (target: {})",
        crate::fmt_rate(&r),
        if args.rate > 0.0 { format!("{:.0}/s constant", args.rate) } else { "as fast as possible".into() }
    );
    if args.rate > 0.0 {
        println!("  max behind the constant schedule    {:.1} ms ({:.1}–{:.1})", b.median, b.min, b.max);
    }
    println!(
        "reproduce: ./target/release/cspulse-load produce --size {} --events {} --rate {} --runs {runs}",
        format!("{:?}", args.size).to_lowercase(),
        args.events,
        args.rate
    );
    crate::write_results(
        &format!(
            "produce-{}-{}",
            format!("{:?}", args.size).to_lowercase(),
            if args.rate > 0.0 { format!("{}per-s", args.rate) } else { "max".into() }
        ),
        json!({"size": format!("{:?}", args.size), "accounts": spec.accounts, "users_per_account": spec.users_per_account,
            "events": args.events, "target_rate": args.rate, "runs": runs, "broker": broker.describe(),
            "machine": crate::machine(), "last_run": last,
            "generate_per_s": g,
            "produce_per_s": r,
            "max_behind_ms": b}),
    )
}
