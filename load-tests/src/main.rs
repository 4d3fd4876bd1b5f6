//! cspulse benchmarks. Each scenario prints a table and the command that
//! reproduces it, and writes its figures as JSON under `load-tests/results/`.
//! Every loop is bounded; all traffic stays on 127.0.0.1.

use std::borrow::Cow;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use cspulse::config::Config;
use cspulse::demo::generator::{Generator, Message, PortfolioSpec};
use cspulse::event::Topic;
use cspulse::event::decode::decode;
use cspulse::ingest::{BATCH, Ingest, Shared, TopicNames};
use cspulse::state::{Engine, Input, StateConfig};
use cspulse::time::{MICROS_PER_MIN, days, parse_rfc3339};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use serde::Deserialize;
use serde_json::json;

mod accounts;
mod broker;
mod delivery;
mod exports;
mod history;
mod produce;
mod push;
mod reload;
mod rest;
mod restart;
mod swarm;
mod tick;

#[derive(Parser)]
#[command(name = "cspulse-load", about = "cspulse benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Repetitions; the median is reported with min–max.
    #[arg(long, default_value_t = 3, global = true)]
    runs: usize,
}

#[derive(Subcommand)]
enum Scenario {
    /// In-process: decode + validate + fold vs serde_json parse-only, one core.
    Fold {
        #[arg(long, default_value_t = 2_000_000)]
        events: usize,
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        #[arg(long, default_value_t = 30)]
        users_per_account: usize,
        /// Events folded untimed first, so the measured ones meet a built
        /// state (steady state) rather than an empty engine (cold start).
        #[arg(long, default_value_t = 0)]
        warmup: usize,
        /// Only fold the events once, with the default rules, and print the
        /// rate: the run to put under a profiler (callgrind, perf).
        #[arg(long)]
        fold_only: bool,
        /// Fold the same events cut short at each layer (whole fold; no
        /// refresh; no state applied), interleaved in each run. Needs a build
        /// with `--features layers`.
        #[arg(long, conflicts_with = "fold_only")]
        layers: bool,
        /// Fold this many usage events, each on a feature of its own, at the
        /// end of the warm-up (with `limits.max_features` raised so they all
        /// count as themselves): the timed events then meet a state holding
        /// that many features in the 30-day window (SPEC §18: no per-event
        /// or per-advance cost may grow with them).
        #[arg(long, default_value_t = 0)]
        distinct_features: usize,
    },
    /// Kafka → state vs a raw rdkafka consume of the same topics, same broker.
    Kafka {
        #[arg(long, default_value_t = 1_500_000)]
        events: usize,
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        /// Partitions per input topic (the mock cluster keeps 5 MiB each).
        #[arg(long, default_value_t = 64)]
        partitions: i32,
        /// Kafka bootstrap servers; default: an embedded mock cluster.
        #[arg(long)]
        brokers: Option<String>,
    },
    /// State size: RSS after folding `accounts` accounts and `users` distinct users.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        accounts: usize,
        #[arg(long, default_value_t = 3_000_000)]
        users: usize,
        /// Checkpoint store (`state.store` syntax, e.g. `redis://127.0.0.1:6390/0`);
        /// default: a temporary directory.
        #[arg(long)]
        store: Option<String>,
    },
    /// The history store: rows/s, storage per row and a year's worth, and the
    /// latency of the history and compare queries (SQLite and PostgreSQL).
    History(history::HistoryArgs),
    /// Restart-to-ready of the cspulse binary holding a large state (directory store).
    Restart(restart::RestartArgs),
    /// Fan-out: N subscribed WebSocket clients (separate process), cspulse vs Node `ws`.
    Fanout(push::FanoutArgs),
    /// Slow consumers: some clients stop reading; the others' lag, and 1008 closes.
    Slow(push::SlowArgs),
    /// Event → `alert` frame latency at a constant produce rate.
    Alerts(push::AlertsArgs),
    /// Event → email accepted by an SMTP server and webhook received (§16).
    Delivery(delivery::DeliveryArgs),
    /// In-process: push tick cost with every CSM channel subscribed while
    /// a share of the accounts changes, change-driven vs whole data.
    Tick(tick::TickArgs),
    /// In-process: how long a rule reload (SIGHUP) holds the engine.
    Reload(reload::ReloadArgs),
    /// In-process: one accounts-list page (§19) beside a raw loop over the snapshot.
    Accounts(accounts::AccountsArgs),
    /// In-process: the whole accounts list exported as CSV and XLSX (§19) beside a raw CSV loop.
    Exports(exports::ExportsArgs),
    /// REST snapshot latency while `cspulse demo` folds a live stream.
    Rest(rest::RestArgs),
    /// A mock cluster in a process of its own, for `--brokers`: prints its
    /// bootstrap address and serves for `--seconds` (or until killed).
    Broker {
        /// Partitions per input topic.
        #[arg(long, default_value_t = 16)]
        partitions: i32,
        /// Core to pin this process to (default: not pinned).
        #[arg(long)]
        core: Option<usize>,
        #[arg(long, default_value_t = 3600)]
        seconds: u64,
    },
    /// The generator's portfolio at size S/M/L produced to Kafka.
    Produce(produce::ProduceArgs),
    /// (internal) The WebSocket client swarm process used by fanout and slow.
    #[command(hide = true)]
    Swarm(swarm::SwarmArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runs = cli.runs.max(1);
    match cli.scenario {
        Scenario::Fold { events, accounts, users_per_account, warmup, fold_only, layers, distinct_features } => fold(
            events,
            accounts,
            users_per_account,
            warmup,
            distinct_features,
            runs,
            if layers {
                Mode::Layers
            } else if fold_only {
                Mode::FoldOnly
            } else {
                Mode::Compare
            },
        ),
        Scenario::Kafka { events, accounts, partitions, brokers } => kafka(events, accounts, partitions, brokers, runs),
        Scenario::Memory { accounts, users, store } => memory(accounts, users, store, runs),
        Scenario::History(a) => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(history::history(a))
        }
        Scenario::Restart(a) => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(restart::restart(a, runs))
        }
        Scenario::Fanout(a) => push::fanout(a, runs),
        Scenario::Slow(a) => push::slow(a, runs),
        Scenario::Alerts(a) => push::alerts(a, runs),
        Scenario::Delivery(a) => delivery::delivery(a),
        Scenario::Tick(a) => tick::tick(a),
        Scenario::Reload(a) => reload::reload(a, runs),
        Scenario::Accounts(a) => accounts::accounts(a, runs),
        Scenario::Exports(a) => exports::exports(a, runs),
        Scenario::Rest(a) => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(rest::rest(a))
        }
        Scenario::Broker { partitions, core, seconds } => broker::serve(partitions, core, seconds),
        Scenario::Produce(a) => produce::produce(a, runs),
        Scenario::Swarm(a) => swarm::run(a),
    }
}

/// A realistic stream: 14 days of history, then live traffic, from the demo generator.
fn corpus(events: usize, accounts: usize, users_per_account: usize) -> Vec<Message> {
    let spec = PortfolioSpec { accounts, csms: (accounts / 50).max(1), users_per_account, seed: 42 };
    let mut generator = Generator::new(spec);
    let start = parse_rfc3339("2026-11-01T00:00:00Z").expect("fixed date");
    let mut out = generator.backfill(start, 14);
    let mut t = start;
    while out.len() < events {
        let next = t + 10 * MICROS_PER_MIN;
        out.extend(generator.tick(t, next, 300.0));
        t = next;
    }
    out.truncate(events);
    out
}

/// The same fields parsed into a typed struct by serde_json, nothing else.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Typed<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    account_id: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    csm_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    segment: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    region: Option<Cow<'a, str>>,
    #[serde(default)]
    seats: Option<u64>,
    #[serde(default, borrow)]
    renewal_date: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    feature: Option<Cow<'a, str>>,
    #[serde(default)]
    duration_s: Option<f64>,
    #[serde(default, borrow)]
    ticket_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    action: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    priority: Option<Cow<'a, str>>,
    #[serde(default)]
    score: Option<u8>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    arr: Option<f64>,
}

#[derive(serde::Serialize)]
pub(crate) struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

pub(crate) fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(f64::total_cmp);
    Stat { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1] }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

pub(crate) fn fmt_rate(s: &Stat) -> String {
    format!("{:>10.0}/s  ({:.0}–{:.0})", s.median, s.min, s.max)
}

pub(crate) fn write_results(name: &str, value: serde_json::Value) -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&value)?)?;
    println!("results written to {}", path.display());
    Ok(())
}

pub(crate) fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    json!({"cpu": cpu, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)})
}

/// What the `fold` scenario measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Parse-only, decode, and the fold with and without rules.
    Compare,
    /// The fold once, for a profiler.
    FoldOnly,
    /// The fold cut short at each layer.
    Layers,
}

/// The fold's configuration: the defaults, with room for `distinct` features.
fn fold_config(distinct: usize) -> StateConfig {
    let mut cfg = StateConfig::default();
    cfg.limits.max_features = cfg.limits.max_features.max(distinct + 100);
    cfg
}

/// `count` usage events, each on a feature of its own (a URL, as a careless
/// producer would send), over the hour before `end`, by the corpus' accounts.
fn distinct_feature_events(count: usize, accounts: usize, end: i64) -> Vec<Message> {
    (0..count)
        .map(|i| {
            let ts = end - 3600 * 1_000_000 + (i as i64 * 3_600_000_000 / count.max(1) as i64);
            let account = format!("acc-{:06}", i % accounts.max(1));
            let payload = serde_json::to_vec(&json!({
                "event_id": format!("distinct-{i}"), "ts": cspulse::time::format_rfc3339(ts),
                "account_id": account, "user_id": format!("visitor-{i}"), "feature": format!("/docs/page/{i}"),
            }))
            .expect("serializable");
            Message { topic: Topic::Usage, key: account, payload, ts }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn fold(
    events: usize,
    accounts: usize,
    users_per_account: usize,
    warmup: usize,
    distinct_features: usize,
    runs: usize,
    mode: Mode,
) -> anyhow::Result<()> {
    if mode == Mode::Layers && !cfg!(feature = "layers") {
        bail!(
            "fold --layers needs a build with the fold's layer probe: cargo build --release -p cspulse-load --features layers"
        );
    }
    eprintln!("generating {warmup} + {events} events ({accounts} accounts × ~{users_per_account} users)…");
    let mut warm = corpus(warmup + events, accounts, users_per_account);
    let msgs = warm.split_off(warmup.min(warm.len()));
    if distinct_features > 0 {
        // Just before the last warm-up event (or the first timed one).
        let ts_of = |m: &Message| decode(m.topic, &m.payload, usize::MAX).ok().map(|e| e.ts);
        let end = warm.iter().rev().find_map(ts_of).or_else(|| msgs.iter().find_map(ts_of)).unwrap_or(0);
        warm.extend(distinct_feature_events(distinct_features, accounts, end));
    }
    let bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
    let wall = warm
        .iter()
        .chain(&msgs)
        .filter_map(|m| decode(m.topic, &m.payload, usize::MAX).ok().map(|e| e.ts))
        .max()
        .unwrap_or(0)
        + days(1);
    if mode == Mode::Layers {
        return fold_layers(&warm, &msgs, wall, runs, (events, warmup, accounts, users_per_account));
    }
    if mode == Mode::FoldOnly {
        let mut engine = Engine::new(fold_config(distinct_features));
        let t = Instant::now();
        for (n, batch) in warm.chunks(BATCH).chain(msgs.chunks(BATCH)).enumerate() {
            fold_batch(&mut engine, batch, (n * BATCH) as i64, wall);
        }
        println!("fold only: {:.0}/s ({} events)", rate(warm.len() + msgs.len(), t.elapsed()), warm.len() + msgs.len());
        return Ok(());
    }
    let (mut parse, mut dec, mut full, mut bare) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut with_history = Vec::new();
    let mut history_rows = 0;
    let mut accepted = 0;
    let mut transitions = 0;
    let mut features = 0;
    for run in 0..runs {
        parse.push(parse_only_rate(&msgs));

        let t = Instant::now();
        for m in &msgs {
            black_box(decode(m.topic, &m.payload, 1 << 20).is_ok());
        }
        dec.push(rate(msgs.len(), t.elapsed()));

        // The same fold without alert rules, to isolate their cost.
        let no_rules = StateConfig { rules: cspulse::alert::Rules::default(), ..fold_config(distinct_features) };
        for (cfg, out) in [(no_rules, &mut bare), (fold_config(distinct_features), &mut full)] {
            let mut engine = Engine::new(cfg);
            let (r, made) = warm_then_time(&mut engine, &warm, &msgs, wall);
            out.push(r);
            transitions += made;
            accepted = engine.stats().accepted.iter().sum::<u64>();
            features = engine.feature_count();
        }
        // The fold with its history log on (SPEC §15): alert and tier rows
        // recorded, taken and committed after every batch as the writer
        // would (the database's own cost is on the writer's thread).
        let mut engine = Engine::new(fold_config(distinct_features));
        engine.set_history(true);
        for (n, batch) in warm.chunks(BATCH).enumerate() {
            history_rows += fold_batch_recorded(&mut engine, batch, (n * BATCH) as i64, wall);
        }
        let t = Instant::now();
        for (n, batch) in msgs.chunks(BATCH).enumerate() {
            history_rows += fold_batch_recorded(&mut engine, batch, (warm.len() + n * BATCH) as i64, wall);
        }
        with_history.push(rate(msgs.len(), t.elapsed()));
        eprintln!("run {}/{runs} done", run + 1);
    }
    let (parse, dec, full, bare, with_history) = (stat(parse), stat(dec), stat(full), stat(bare), stat(with_history));
    let history_cost = 1.0 - with_history.median / full.median;
    let ratio = full.median / parse.median;
    let rules_cost = 1.0 - full.median / bare.median;
    println!(
        "\nfold: {} events after {} untimed, {:.0} bytes avg, {accepted} accepted in all, {features} features held at the end, one core",
        msgs.len(),
        warm.len(),
        bytes as f64 / msgs.len() as f64
    );
    println!("  serde_json parse-only (typed struct)  {}", fmt_rate(&parse));
    println!("  decode + validate                     {}", fmt_rate(&dec));
    println!("  decode + validate + fold, no rules    {}", fmt_rate(&bare));
    println!("  decode + validate + fold + alerts     {}", fmt_rate(&full));
    println!("  … + history log (alert and tier rows)  {}", fmt_rate(&with_history));
    println!("  fold / parse-only = {:.1}% (target >= 40%)", ratio * 100.0);
    println!(
        "  history log costs {:.1}% of fold events/s (target <= 5%); {} rows per run",
        history_cost * 100.0,
        history_rows / runs
    );
    println!(
        "  default alert rules cost {:.1}% of fold events/s (target <= 20%); {} transitions per run",
        rules_cost * 100.0,
        transitions / runs
    );
    println!(
        "reproduce: cargo run --release -p cspulse-load -- fold --events {events} --warmup {warmup} --accounts {accounts} --users-per-account {users_per_account} --distinct-features {distinct_features} --runs {runs}"
    );
    let name = if distinct_features > 0 {
        format!("fold-distinct-features-{distinct_features}")
    } else if warm.is_empty() {
        "fold".to_owned()
    } else {
        "fold-warm".to_owned()
    };
    write_results(
        &name,
        json!({
            "events": msgs.len(), "warmup": warm.len(), "accounts": accounts, "users_per_account": users_per_account, "runs": runs,
            "distinct_features": distinct_features, "features_held": features,
            "avg_bytes": bytes as f64 / msgs.len() as f64, "machine": machine(),
            "parse_only_per_s": parse,
            "decode_per_s": dec,
            "fold_per_s": full,
            "fold_without_rules_per_s": bare,
            "fold_with_history_per_s": with_history,
            "history_cost": history_cost,
            "fold_over_parse": ratio,
            "rules_cost": rules_cost,
        }),
    )
}

/// `fold --layers`: per run, parse-only and then the fold (default rules)
/// cut short at each layer, every one on a fresh engine warmed with `warm`.
#[cfg(feature = "layers")]
fn fold_layers(
    warm: &[Message],
    msgs: &[Message],
    wall: i64,
    runs: usize,
    (events, warmup, accounts, users_per_account): (usize, usize, usize, usize),
) -> anyhow::Result<()> {
    use cspulse::state::layers::{self, Cut};
    const CUTS: [(Cut, &str); 3] =
        [(Cut::Full, "whole fold"), (Cut::NoRefresh, "no refresh"), (Cut::NoState, "no state applied")];
    let mut parse = Vec::new();
    // Per cut: events/s and share of the same run's parse-only rate.
    let mut per_cut: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); CUTS.len()];
    for run in 0..runs {
        let parsed = parse_only_rate(msgs);
        parse.push(parsed);
        for ((cut, _), (rates, shares)) in CUTS.iter().zip(&mut per_cut) {
            layers::set(*cut);
            let (r, _) = warm_then_time(&mut Engine::new(StateConfig::default()), warm, msgs, wall);
            rates.push(r);
            shares.push(r / parsed);
        }
        layers::set(Cut::Full);
        eprintln!("run {}/{runs} done", run + 1);
    }
    let parse = stat(parse);
    println!("\nfold by layer: {} events after {} untimed, default rules, one core", msgs.len(), warm.len());
    println!("  serde_json parse-only (typed struct)  {}", fmt_rate(&parse));
    let mut results = json!({
        "events": msgs.len(), "warmup": warm.len(), "accounts": accounts, "runs": runs, "machine": machine(),
        "parse_only_per_s": parse,
    });
    for ((_, name), (rates, shares)) in CUTS.iter().zip(per_cut) {
        let each: Vec<String> = shares.iter().map(|s| format!("{:.1}%", s * 100.0)).collect();
        let (r, share) = (stat(rates), stat(shares));
        println!("  {name:<36}  {}  = {:.1}% of parse-only ({})", fmt_rate(&r), share.median * 100.0, each.join(", "));
        results[name.replace(' ', "_")] = json!({"per_s": r, "share_of_parse_only": share});
    }
    println!(
        "reproduce: cargo run --release -p cspulse-load --features layers -- fold --layers --events {events} --warmup {warmup} --accounts {accounts} --users-per-account {users_per_account} --runs {runs}"
    );
    write_results("fold-layers", results)
}

#[cfg(not(feature = "layers"))]
fn fold_layers(_: &[Message], _: &[Message], _: i64, _: usize, _: (usize, usize, usize, usize)) -> anyhow::Result<()> {
    unreachable!("refused in fold() without the layers feature")
}

/// serde_json parse-only of `msgs` into a typed struct: events/s (the baseline).
fn parse_only_rate(msgs: &[Message]) -> f64 {
    let t = Instant::now();
    for m in msgs {
        black_box(serde_json::from_slice::<Typed<'_>>(&m.payload).ok());
    }
    rate(msgs.len(), t.elapsed())
}

/// Folds `warm` untimed and then `msgs` timed, in batches as the ingest loop
/// folds what one poll round brings; returns the events/s of `msgs` and the
/// alert transitions they made.
fn warm_then_time(engine: &mut Engine, warm: &[Message], msgs: &[Message], wall: i64) -> (f64, usize) {
    for (n, batch) in warm.chunks(BATCH).enumerate() {
        fold_batch(engine, batch, (n * BATCH) as i64, wall);
    }
    let t = Instant::now();
    let mut transitions = 0;
    for (n, batch) in msgs.chunks(BATCH).enumerate() {
        transitions += fold_batch(engine, batch, (warm.len() + n * BATCH) as i64, wall);
    }
    (rate(msgs.len(), t.elapsed()), transitions)
}

/// `fold_batch` with the history log on, as the ingest loop and the history
/// writer handle it: alerts posted and acknowledged, the log's rows taken
/// and committed. Returns the history rows made.
fn fold_batch_recorded(engine: &mut Engine, batch: &[Message], first: i64, wall: i64) -> usize {
    fold_only(engine, batch, first, wall);
    for (n, _) in engine.post_alerts() {
        engine.ack_alert(n);
    }
    let rows = engine.history_pending(usize::MAX);
    if let Some(&(last, _)) = rows.last() {
        black_box(&rows);
        engine.history_committed(last);
    }
    rows.len()
}

/// Folds one batch as the ingest loop does (offsets from `first`); returns
/// the alert transitions it made.
fn fold_batch(engine: &mut Engine, batch: &[Message], first: i64, wall: i64) -> usize {
    fold_only(engine, batch, first, wall);
    engine.take_alerts().len()
}

/// Folds one batch as the ingest loop does (offsets from `first`).
fn fold_only(engine: &mut Engine, batch: &[Message], first: i64, wall: i64) {
    let inputs: Vec<Input<'_>> = batch
        .iter()
        .enumerate()
        .map(|(i, m)| Input { topic: m.topic, partition: 0, offset: first + i as i64, payload: &m.payload, wall })
        .collect();
    engine.fold_batch(&inputs, |_, outcome| {
        black_box(outcome);
    });
}

fn kafka(events: usize, accounts: usize, partitions: i32, brokers: Option<String>, runs: usize) -> anyhow::Result<()> {
    let mut config =
        Config::from_toml("[auth]\njwt_secret = \"benchmark-secret-0123456789\"\n[state]\nstore = \"memory\"\n")?;
    let broker = broker::Broker::start(brokers.as_deref(), &config, partitions)?;
    config.kafka.brokers = broker.bootstrap.clone();
    cspulse::demo::low_latency(&mut config);
    let names = TopicNames::new(&config.kafka.topics);

    eprintln!("generating {events} events…");
    let msgs = corpus(events, accounts, 30);
    // Partition by account (co-partitioned topics), and check the mock's
    // 5 MiB-per-partition cap (payload, key, ~70 bytes of record overhead).
    let partition_of = |key: &str| {
        (key.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3)) % partitions as u64)
            as i32
    };
    let mut fill = std::collections::HashMap::<(Topic, i32), usize>::new();
    for m in &msgs {
        *fill.entry((m.topic, partition_of(&m.key))).or_default() += m.payload.len() + m.key.len() + 70;
    }
    if let Some(((topic, p), bytes)) = fill.iter().max_by_key(|(_, b)| **b)
        && broker.cluster.is_some()
        && *bytes > (5 << 20) * 9 / 10
    {
        bail!(
            "{} partition {p} would hold {} KiB, near the mock cluster's 5 MiB cap; add --partitions",
            names.name(*topic),
            bytes >> 10
        );
    }
    eprintln!("producing to the embedded broker…");
    let producer: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let t0 = Instant::now();
    for m in &msgs {
        let mut record = BaseRecord::to(names.name(m.topic))
            .key(m.key.as_bytes())
            .payload(&m.payload)
            .partition(partition_of(&m.key));
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    eprintln!("produced {} in {:.1}s", msgs.len(), t0.elapsed().as_secs_f64());
    let total = msgs.len();

    let (mut raw, mut engine_rates) = (Vec::new(), Vec::new());
    for run in 0..runs {
        raw.push(raw_consume(&config, &names, total, run)?);
        engine_rates.push(engine_consume(&config, &names, total, run)?);
        eprintln!("run {}/{runs}: raw {:.0}/s, engine {:.0}/s", run + 1, raw[run], engine_rates[run]);
    }
    let (raw, eng) = (stat(raw), stat(engine_rates));
    let ratio = eng.median / raw.median;
    println!(
        "\nkafka: {total} events over 4 topics × {partitions} partitions, {}, fetch.wait.max.ms=1",
        broker.describe()
    );
    println!("  raw rdkafka consume (BaseConsumer::poll)   {}", fmt_rate(&raw));
    println!("  Kafka → decode → fold (cspulse ingest)     {}", fmt_rate(&eng));
    println!("  engine / raw = {:.1}% (target >= 70%)", ratio * 100.0);
    println!(
        "reproduce: cargo run --release -p cspulse-load -- kafka --events {events} --accounts {accounts} --partitions {partitions} --runs {runs}"
    );
    write_results(
        "kafka",
        json!({
            "events": total, "partitions_per_topic": partitions, "runs": runs, "machine": machine(),
            "raw_per_s": raw,
            "engine_per_s": eng,
            "engine_over_raw": ratio,
        }),
    )
}

/// Consumes every message of the input topics with a bare consumer; rate from
/// the first message to the last.
fn raw_consume(config: &Config, names: &TopicNames, total: usize, run: usize) -> anyhow::Result<f64> {
    // The engine's own consumer settings, in a group of its own.
    let mut c = cspulse::ingest::consumer_config(&config.kafka);
    c.set("group.id", format!("raw-{run}"));
    let consumer: BaseConsumer = c.create()?;
    consumer.subscribe(&names.inputs())?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = 0usize;
    let mut bytes = 0usize;
    let mut first = None;
    while seen < total {
        if Instant::now() > deadline {
            bail!("raw consumer saw only {seen} of {total}");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            first.get_or_insert_with(Instant::now);
            bytes += m.payload().map_or(0, <[u8]>::len);
            seen += 1;
        }
    }
    black_box(bytes);
    Ok(rate(total - 1, first.context("no message")?.elapsed()))
}

/// Runs the engine's own ingest path on a fresh state; rate from the first
/// folded message to the last.
fn engine_consume(config: &Config, names: &TopicNames, total: usize, run: usize) -> anyhow::Result<f64> {
    let mut config = config.clone();
    config.kafka.group_id = format!("engine-{run}");
    let shared = Arc::new(Shared::new(Engine::new(config.state_config()), names.clone()));
    let ingest = Ingest::start(&config.kafka, shared.clone())?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let folded = |s: &Shared| {
        let e = s.engine();
        let st = e.stats();
        (st.accepted.iter().sum::<u64>() + st.rejected.iter().sum::<u64>() + st.duplicates) as usize
    };
    let mut first = None;
    let mut at_first = 0;
    loop {
        let n = folded(&shared);
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
            at_first = n;
        }
        if n >= total {
            break;
        }
        if Instant::now() > deadline {
            bail!("engine folded only {n} of {total}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let elapsed = first.context("nothing folded")?.elapsed();
    ingest.stop();
    Ok(rate(total - at_first, elapsed))
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// The largest drop of the machine's `MemAvailable` while it runs, sampled
/// every 20 ms: what a checkpoint takes beyond the process's own RSS.
struct MemWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

impl MemWatch {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let base = mem_available_kib();
        let thread = std::thread::spawn(move || {
            let mut lowest = base;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                lowest = lowest.min(mem_available_kib());
                std::thread::sleep(Duration::from_millis(20));
            }
            base.saturating_sub(lowest) / 1024
        });
        MemWatch { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// `memory` with `--runs N > 1`: each run in a process of its own (RSS and
/// its peak are per process), then the median (min–max) of every figure.
fn memory(accounts: usize, users: usize, store: Option<String>, runs: usize) -> anyhow::Result<()> {
    if runs <= 1 {
        return memory_once(accounts, users, store);
    }
    let results =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results").join(format!("{}.json", results_name(&store)));
    let mut detail = Vec::new();
    for run in 0..runs {
        eprintln!("memory run {}/{runs} (a process of its own)", run + 1);
        let mut run_once = std::process::Command::new(std::env::current_exe()?);
        run_once.args(["memory", "--accounts", &accounts.to_string(), "--users", &users.to_string(), "--runs", "1"]);
        if let Some(s) = &store {
            run_once.args(["--store", s]);
        }
        let status = run_once.status()?;
        if !status.success() {
            bail!("memory run {} failed: {status}", run + 1);
        }
        detail.push(serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&results)?)?);
    }
    let r: Vec<&serde_json::Value> = detail.iter().collect();
    println!("\nmemory: {accounts} accounts, {users} distinct users, {runs} runs: median (min–max)");
    let mut summary = serde_json::Map::new();
    for (label, key, scale, digits) in [
        ("peak RSS MiB (target <= 2048)", "peak_rss_mib", 1.0, 0),
        ("checkpoint pause ms (target <= 1000)", "pause_seconds", 1e3, 1),
        ("checkpoint in the child s", "checkpoint_seconds", 1.0, 2),
        ("  of which encode s", "encode_seconds", 1.0, 2),
        ("fold of `accounts` events during it s", "fold_touch_all_during_checkpoint_seconds", 1.0, 2),
        ("  the same without a checkpoint s", "fold_touch_all_seconds", 1.0, 2),
        ("memory taken while it runs MiB", "checkpoint_extra_memory_mib", 1.0, 0),
        ("encode under the lock (fallback) s", "encode_under_lock_seconds", 1.0, 2),
        ("restore: read + decode s", "restore_seconds", 1.0, 2),
    ] {
        let values = r.iter().map(|d| d[key].as_f64().unwrap_or(f64::NAN) * scale).collect();
        println!("  {label:<42} {}", push::spread(values, digits).1);
        summary.insert(key.to_owned(), push::stat_json(&r, key));
    }
    let store_arg = store.as_ref().map(|s| format!(" --store {s}")).unwrap_or_default();
    println!(
        "reproduce: ./target/release/cspulse-load memory --accounts {accounts} --users {users} --runs {runs}{store_arg}"
    );
    write_results(
        results_name(&store),
        json!({"accounts": accounts, "users": users, "runs": runs, "store": store_name(&store), "summary": summary, "runs_detail": detail, "machine": machine()}),
    )
}

/// `memory`, or `memory-redis` for a run against Redis (both figures kept).
fn results_name(store: &Option<String>) -> &'static str {
    if store.as_deref().is_some_and(|s| s.starts_with("redis")) { "memory-redis" } else { "memory" }
}

/// The store a memory run checkpoints to, as results name it.
fn store_name(store: &Option<String>) -> String {
    store.as_deref().map_or_else(|| "directory".to_owned(), cspulse::config::secrets::mask_url)
}

fn memory_once(accounts: usize, users: usize, store_spec: Option<String>) -> anyhow::Result<()> {
    let before = rss_kib("VmRSS:");
    let start = parse_rfc3339("2026-11-01T00:00:00Z").expect("fixed date");
    let mut engine = Engine::new(StateConfig::default());
    let wall = start + days(60);
    let mut offset = 0i64;
    let mut fold_one = |engine: &mut Engine, topic: Topic, body: serde_json::Value| {
        let payload = serde_json::to_vec(&body).expect("json");
        let input = Input { topic, partition: 0, offset, payload: &payload, wall };
        offset += 1;
        engine.fold(&input)
    };
    let t = Instant::now();
    let segments = ["enterprise", "mid-market", "smb"];
    let regions = ["na", "emea", "apac", "latam"];
    for a in 0..accounts {
        let ts = cspulse::time::format_rfc3339(start);
        fold_one(
            &mut engine,
            Topic::Accounts,
            json!({"event_id": format!("a{a}"), "ts": ts, "account_id": format!("acc-{a:06}"),
            "name": format!("Account {a}"), "csm_id": format!("csm-{:03}", a % 400), "segment": segments[a % 3], "region": regions[a % 4],
            "seats": 50, "renewal_date": "2027-03-31"}),
        );
        fold_one(
            &mut engine,
            Topic::Revenue,
            json!({"event_id": format!("r{a}"), "ts": ts, "account_id": format!("acc-{a:06}"), "kind": "new", "arr": 25000}),
        );
    }
    let features = ["reports", "dashboards", "api", "integrations", "alerts", "exports", "workflows", "search"];
    // Each distinct user is active once in the last 7 days, on two features.
    let span = days(7) - 1;
    for u in 0..users {
        let a = u % accounts;
        let ts = start + days(53) + (u as i64 * 7919) % span;
        for f in [u % 8, (u + 3) % 8] {
            let body = json!({"event_id": format!("u{u}-{f}"), "ts": cspulse::time::format_rfc3339(ts),
                "account_id": format!("acc-{a:06}"), "user_id": format!("user-{u:08}"), "feature": features[f]});
            fold_one(&mut engine, Topic::Usage, body);
        }
        if u % 500_000 == 0 {
            eprintln!("{u} users folded, RSS {} MiB", rss_kib("VmRSS:") / 1024);
        }
    }
    // What readers see is held too: the published snapshot (every
    // account's record, the rendered KPI objects), as a running server has.
    let _published = engine.publish();
    let folded = t.elapsed();
    let rss = rss_kib("VmRSS:");
    let peak = rss_kib("VmHWM:");
    let view = engine.channel_view(&cspulse::state::view::Channel::Executive);
    let active = view["portfolio"]["usage"]["active_users_7d"].clone();
    let dedup_ids = engine.stats().accepted.iter().sum::<u64>();
    println!("\nmemory: {accounts} accounts, {users} distinct users (2 usage events each, all within 7 days)");
    println!("  active_users_7d reported       {active}");
    println!("  events folded                  {dedup_ids} in {:.1}s", folded.as_secs_f64());
    println!("  RSS after fold                 {} MiB (process; {} MiB before)", rss / 1024, before / 1024);
    println!("  peak RSS                       {} MiB (target <= 2048 MiB)", peak / 1024);
    println!("  note: includes the de-duplication memory of {dedup_ids} event ids (7-day horizon)");
    // Checkpoint of that state as production takes it: a writer forked
    // while the engine is held, the fold going on meanwhile. Each fold batch
    // touches every account once (one more usage event of a known user), so
    // the fold after the fork pays for the pages it copies, and the batch
    // before the fork is the same work without a checkpoint, to compare.
    let mut touch_all = |engine: &mut Engine, tag: &str, back: i64| {
        let t = Instant::now();
        for a in 0..accounts {
            let ts = start + days(60) - back + (a as i64 % 1000);
            let body = json!({"event_id": format!("{tag}{a}"), "ts": cspulse::time::format_rfc3339(ts),
                "account_id": format!("acc-{a:06}"), "user_id": format!("user-{a:08}"), "feature": features[a % 8]});
            fold_one(engine, Topic::Usage, body);
        }
        t.elapsed()
    };
    // For comparison, the fallback when fork fails: encoding under the lock.
    // It also leaves the size of a checkpoint behind, as the engine's
    // previous checkpoint does, so the writer's buffer is sized as in a
    // steady run (every checkpoint after the first).
    let t = Instant::now();
    let in_process = engine.encode();
    let locked = t.elapsed();
    drop(in_process);
    let quiet = touch_all(&mut engine, "b", 3000);
    let before_fork = engine.stats().accepted.iter().sum::<u64>();
    let dir = std::env::temp_dir().join(format!("cspulse-bench-{}", std::process::id()));
    let spec = store_spec.clone().unwrap_or_else(|| format!("file://{}", dir.display()));
    let group = format!("bench-memory-{}", std::process::id());
    let store = cspulse::checkpoint::Store::open(&spec, &group)?;
    let available = MemWatch::start();
    let t = Instant::now();
    let writer = cspulse::checkpoint::fork::spawn(&engine, &store)?;
    let pause = t.elapsed();
    let during = touch_all(&mut engine, "c", 1500);
    let written = writer.wait()?;
    let checkpoint = t.elapsed();
    let extra_mib = available.stop();
    drop(engine);
    let t = Instant::now();
    let loaded = store.load()?.context("checkpoint written above")?;
    let restored = Engine::decode(StateConfig::default(), &loaded)?;
    let restore = t.elapsed();
    let restored_events = restored.stats().accepted.iter().sum::<u64>();
    anyhow::ensure!(
        restored_events == before_fork,
        "the checkpoint holds {restored_events} events, {before_fork} were folded at the fork"
    );
    let restored_users =
        restored.channel_view(&cspulse::state::view::Channel::Executive)["portfolio"]["usage"]["active_users_7d"]
            .clone();
    let _ = std::fs::remove_dir_all(&dir);
    if let cspulse::checkpoint::Store::Redis(r) = &store {
        // Leave the benchmark Redis empty (the keys are the run's own group's).
        let mut con = r.connection()?;
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", r.key())).query(&mut con)?;
        for k in keys {
            redis::cmd("UNLINK").arg(k).query::<()>(&mut con)?;
        }
    }
    println!("  checkpoint store               {}", store.describe());
    println!("  checkpoint size                {:.1} MiB", written.bytes as f64 / (1 << 20) as f64);
    println!("  checkpoint pause (fork, lock)  {:.1} ms (target <= 1 s)", pause.as_secs_f64() * 1e3);
    println!(
        "  checkpoint in the child        {:.2} s (encode {:.2} s, write + fsync {:.2} s)",
        checkpoint.as_secs_f64(),
        written.encode.as_secs_f64(),
        (checkpoint - written.encode).as_secs_f64()
    );
    println!(
        "  fold of {accounts} events           {:.2} s while the child runs, {:.2} s without a checkpoint",
        during.as_secs_f64(),
        quiet.as_secs_f64()
    );
    println!("  memory taken while it runs     {extra_mib} MiB at most (copied pages + the child's blob)");
    println!("  (fallback, encode under lock   {:.2} s, if fork fails)", locked.as_secs_f64());
    println!(
        "  restore: read + decode         {:.2} s (events {restored_events} = folded at the fork; active_users_7d {restored_users})",
        restore.as_secs_f64()
    );
    let store_arg = store_spec.as_ref().map(|s| format!(" --store {s}")).unwrap_or_default();
    println!(
        "reproduce: cargo run --release -p cspulse-load -- memory --accounts {accounts} --users {users}{store_arg}"
    );
    write_results(
        results_name(&store_spec),
        json!({"accounts": accounts, "users": users, "store": store_name(&store_spec), "events": dedup_ids, "rss_mib": rss / 1024, "peak_rss_mib": peak / 1024,
               "fold_seconds": folded.as_secs_f64(), "checkpoint_bytes": written.bytes, "pause_seconds": pause.as_secs_f64(),
               "checkpoint_seconds": checkpoint.as_secs_f64(), "encode_seconds": written.encode.as_secs_f64(),
               "fold_touch_all_seconds": quiet.as_secs_f64(), "fold_touch_all_during_checkpoint_seconds": during.as_secs_f64(),
               "checkpoint_extra_memory_mib": extra_mib, "encode_under_lock_seconds": locked.as_secs_f64(), "restore_seconds": restore.as_secs_f64(), "machine": machine()}),
    )
}
