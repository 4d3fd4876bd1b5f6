//! `history`: the history store (SPEC §15) against SQLite and PostgreSQL.
//!
//! For each back end it writes what a year of steady state holds at the
//! retention defaults, scaled to the benchmark's spans: the scope rows of
//! `--scopes` scopes, hourly for `--hourly-days` and then every 5 minutes for
//! `--fine-days` (what `fine = 35d` and `hourly = 400d` keep of the last 90
//! days), and the daily rows of `--accounts` accounts for `--account-days`.
//! The rows' figures are those of real rows: a portfolio from the demo
//! generator is folded in-process with its history log on, and its scope
//! and account rows are cycled. Writes go through the store's own `write`
//! in batches of the writer's size, so rows per second is the writer's
//! rate. Storage is what the database reports after the writes (SQLite: the
//! file after a WAL checkpoint; PostgreSQL: `pg_total_relation_size`, tables
//! with their indexes), per row, extrapolated to one year by the retention
//! policy.
//!
//! Then `cspulse serve` runs against the store with a live portfolio whose
//! watermark is the end of the history, and the API is timed: a 90-day
//! daily and a 90-day hourly `history` of the executive channel and of one
//! CSM's channel, and `compare` (week) of the executive and one CSM's
//! channel, each `--queries` times, sequentially, each on a fresh connection.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cspulse::auth::Role;
use cspulse::history::store::HistoryStore;
use cspulse::state::log::{AccountRow, Row, ScopeKind, ScopeRow};
use cspulse::state::{Engine, StateConfig};
use cspulse::time::{MICROS_PER_DAY, MICROS_PER_MIN, Ts, format_rfc3339, parse_rfc3339};
use rdkafka::ClientConfig;
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use serde_json::json;
use sqlx::Connection;

use crate::broker::Broker;
use crate::push::{SECRET, base_config, free_port, http_get, server_bin_at, token};
use crate::restart::{Instance, Portfolio, stream};
use crate::swarm::{histogram, summary};

const FIVE_MIN: i64 = 5 * MICROS_PER_MIN;
const HOUR: i64 = 60 * MICROS_PER_MIN;
/// Rows per `write`, as the history writer takes them (`history::writer::BATCH`).
const BATCH: usize = cspulse::history::writer::BATCH;

#[derive(Clone, Debug, clap::Args)]
pub struct HistoryArgs {
    /// `sqlite`, `postgres` or `both`.
    #[arg(long, default_value = "both")]
    pub store: String,
    /// PostgreSQL server (a fresh database is created on it and dropped after).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pub postgres: String,
    #[arg(long, default_value_t = 2_000)]
    pub scopes: usize,
    /// Days of 5-minute scope rows (`history.retention.fine`).
    #[arg(long, default_value_t = 35)]
    pub fine_days: i64,
    /// Days of hourly scope rows before those (to 90 days in all).
    #[arg(long, default_value_t = 55)]
    pub hourly_days: i64,
    #[arg(long, default_value_t = 100_000)]
    pub accounts: usize,
    #[arg(long, default_value_t = 30)]
    pub account_days: i64,
    /// Requests per timed query.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Write and measure the rows only (no `cspulse serve`, no queries).
    #[arg(long)]
    pub skip_queries: bool,
    /// Only time the queries, against a store an earlier run filled with
    /// these arguments (`sqlite://PATH` or `postgres://…/DB`; kept as it is).
    #[arg(long, conflicts_with = "skip_queries")]
    pub existing: Option<String>,
    /// Keep the filled stores (their specs are printed) for later runs with
    /// `--existing`; by default they are removed at the end.
    #[arg(long)]
    pub keep: bool,
    /// Only the queries whose name contains this (e.g. `compare`).
    #[arg(long)]
    pub only: Option<String>,
    /// The cspulse binary (default: next to this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
}

/// The end of the history: its last boundary (a UTC midnight).
fn end() -> Ts {
    parse_rfc3339("2026-11-30T00:00:00Z").expect("fixed date")
}

/// A scope row's figures.
type Figures = Arc<[Option<f64>]>;

/// Real rows to cycle: the scope and account rows of a generator portfolio
/// folded with its history log on at 5-minute resolution.
fn templates() -> (Vec<Figures>, Vec<Arc<AccountRow>>) {
    let msgs = crate::corpus(400_000, 2_000, 30);
    let mut engine = Engine::new(StateConfig { resolution: FIVE_MIN, ..StateConfig::default() });
    engine.set_history(true);
    let wall = cspulse::time::wall_now();
    let (mut scopes, mut accounts) = (Vec::new(), Vec::new());
    for (n, batch) in msgs.chunks(cspulse::ingest::BATCH).enumerate() {
        crate::fold_only(&mut engine, batch, (n * cspulse::ingest::BATCH) as i64, wall);
        for (n, _) in engine.post_alerts() {
            engine.ack_alert(n);
        }
        let rows = engine.history_pending(usize::MAX);
        if let Some(&(last, _)) = rows.last() {
            engine.history_committed(last);
        }
        for (_, row) in rows {
            match row {
                Row::Scope(s) if s.kind == ScopeKind::Csm => scopes.push(s.values.clone()),
                Row::Account(a) => accounts.push(a),
                _ => {}
            }
        }
    }
    assert!(!scopes.is_empty() && !accounts.is_empty(), "the template portfolio made rows");
    (scopes, accounts)
}

/// Scope `i` of `n`: the portfolio, three segments, four regions,
/// unassigned, then CSMs.
fn scope(i: usize) -> (ScopeKind, Arc<str>) {
    const SEGMENTS: [&str; 3] = ["enterprise", "mid-market", "smb"];
    const REGIONS: [&str; 4] = ["na", "emea", "apac", "latam"];
    match i {
        0 => (ScopeKind::Portfolio, "portfolio".into()),
        1..=3 => (ScopeKind::Segment, SEGMENTS[i - 1].into()),
        4..=7 => (ScopeKind::Region, REGIONS[i - 4].into()),
        8 => (ScopeKind::Unassigned, "unassigned".into()),
        _ => (ScopeKind::Csm, format!("csm-{:03}", i - 9).into()),
    }
}

/// The boundaries of the history, oldest first: hourly, then every 5 minutes.
fn boundaries(args: &HistoryArgs) -> Vec<Ts> {
    let fine_from = end() - args.fine_days * MICROS_PER_DAY;
    let hourly_from = fine_from - args.hourly_days * MICROS_PER_DAY;
    let hourly = (0..).map(|k| hourly_from + k * HOUR).take_while(|&t| t < fine_from);
    let fine = (0..).map(|k| fine_from + k * FIVE_MIN).take_while(|&t| t <= end());
    hourly.chain(fine).collect()
}

struct Written {
    rows: u64,
    seconds: f64,
}

impl Written {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.seconds
    }
}

/// Writes `rows` in the writer's batches, with progress.
async fn write_all(
    store: &HistoryStore,
    label: &str,
    total: u64,
    mut next: impl FnMut() -> Option<Row>,
) -> anyhow::Result<Written> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut written = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        batch.clear();
        while batch.len() < BATCH {
            match next() {
                Some(row) => batch.push((written + batch.len() as u64, row)),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        store.write(&batch).await.with_context(|| format!("writing {label}"))?;
        written += batch.len() as u64;
        if last_report.elapsed() > Duration::from_secs(15) {
            let s = started.elapsed().as_secs_f64();
            eprintln!("  {label}: {written} of {total} rows in {s:.0} s ({:.0} rows/s)", written as f64 / s);
            last_report = Instant::now();
        }
    }
    Ok(Written { rows: written, seconds: started.elapsed().as_secs_f64() })
}

/// A back end under test: its spec for the engine and how to size it.
enum Backend {
    Sqlite { dir: PathBuf },
    Postgres { server: String, database: String },
}

impl Backend {
    fn spec(&self) -> String {
        match self {
            Backend::Sqlite { dir } => format!("sqlite://{}", dir.join("history.db").display()),
            Backend::Postgres { server, database } => format!("{server}/{database}"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// Bytes the store holds: (scope rows, account rows), each with indexes.
    async fn sizes(&self) -> anyhow::Result<(u64, u64)> {
        match self {
            Backend::Sqlite { dir } => {
                let path = dir.join("history.db");
                let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut c).await?;
                // Pages per table and index (the dbstat table is not in every
                // build): count them from the b-trees' own page numbers.
                let total = std::fs::metadata(&path)?.len();
                let account: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN ('account_rows', 'account_rows_at', \
                     'sqlite_autoindex_account_rows_1')",
                )
                .fetch_one(&mut c)
                .await
                .unwrap_or(-1);
                c.close().await?;
                if account < 0 {
                    bail!("SQLite without dbstat: cannot size the tables apart");
                }
                Ok((total - account as u64, account as u64))
            }
            Backend::Postgres { server, database } => {
                let mut c = sqlx::PgConnection::connect(&format!("{server}/{database}")).await?;
                sqlx::query("VACUUM ANALYZE").execute(&mut c).await?;
                let scope: i64 =
                    sqlx::query_scalar("SELECT pg_total_relation_size('scope_rows')").fetch_one(&mut c).await?;
                let account: i64 =
                    sqlx::query_scalar("SELECT pg_total_relation_size('account_rows')").fetch_one(&mut c).await?;
                c.close().await?;
                Ok((scope as u64, account as u64))
            }
        }
    }
}

async fn create_database(server: &str) -> anyhow::Result<String> {
    let name = format!("cspulse_load_history_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await.context("PostgreSQL")?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
    Ok(name)
}

async fn drop_database(server: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await?;
    Ok(())
}

pub async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    if let Some(spec) = &args.existing {
        let out = json!({"scenario": "history", "existing": spec, "queries": queries(&args, spec).await?});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    eprintln!("folding a 2,000-account portfolio for template rows…");
    let (scope_values, account_templates) = templates();
    eprintln!("  {} CSM rows, {} account rows to cycle", scope_values.len(), account_templates.len());
    let dir = std::env::temp_dir().join(format!("cspulse-load-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut backends = Vec::new();
    if matches!(args.store.as_str(), "sqlite" | "both") {
        backends.push(Backend::Sqlite { dir: dir.clone() });
    }
    if matches!(args.store.as_str(), "postgres" | "both") {
        let database = create_database(&args.postgres).await?;
        backends.push(Backend::Postgres { server: args.postgres.clone(), database });
    }
    if backends.is_empty() {
        bail!("--store {}: one of sqlite, postgres, both", args.store);
    }
    let at = boundaries(&args);
    let mut results = Vec::new();
    for backend in &backends {
        let result = run_backend(&args, backend, &at, &scope_values, &account_templates).await;
        if args.keep {
            eprintln!("kept: {}", backend.spec());
        } else if let Backend::Postgres { server, database } = backend {
            drop_database(server, database).await?;
        }
        results.push(result?);
    }
    if !args.keep {
        std::fs::remove_dir_all(&dir)?;
    }
    let out = json!({"scenario": "history", "scopes": args.scopes, "fine_days": args.fine_days,
        "hourly_days": args.hourly_days, "accounts": args.accounts, "account_days": args.account_days,
        "results": results});
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn run_backend(
    args: &HistoryArgs,
    backend: &Backend,
    at: &[Ts],
    scope_values: &[Figures],
    account_templates: &[Arc<AccountRow>],
) -> anyhow::Result<serde_json::Value> {
    let spec = backend.spec();
    eprintln!("{}: {spec}", backend.name());
    let store = HistoryStore::open(&spec).await?;

    let scope_total = (at.len() * args.scopes) as u64;
    let mut k = 0usize;
    let scopes = write_all(&store, "scope rows", scope_total, || {
        let (b, s) = (k / args.scopes, k % args.scopes);
        let &at = at.get(b)?;
        k += 1;
        let (kind, id) = scope(s);
        let values = scope_values[(b * 7 + s) % scope_values.len()].clone();
        Some(Row::Scope(Arc::new(ScopeRow { kind, id, at, values })))
    })
    .await?;
    let (scope_bytes_only, _) = backend.sizes().await?;

    let days: Vec<Ts> = (0..args.account_days).map(|d| end() - (args.account_days - 1 - d) * MICROS_PER_DAY).collect();
    let account_total = (days.len() * args.accounts) as u64;
    let mut k = 0usize;
    let accounts = write_all(&store, "account rows", account_total, || {
        let (d, a) = (k / args.accounts, k % args.accounts);
        let &at = days.get(d)?;
        k += 1;
        let t = &account_templates[(a * 13 + d) % account_templates.len()];
        Some(Row::Account(Arc::new(AccountRow {
            account_id: format!("acc-{a:06}").into(),
            at,
            csm_id: Some(format!("csm-{:03}", a % 400).into()),
            ..(**t).clone()
        })))
    })
    .await?;
    drop(store);
    let (scope_bytes, account_bytes) = backend.sizes().await?;
    let per_scope_row = scope_bytes as f64 / scopes.rows as f64;
    let per_account_row = account_bytes as f64 / accounts.rows as f64;
    // A year at the defaults: the last 35 days every 5 minutes, the rest of
    // the year hourly (`hourly = 400d` keeps it all), midnights forever.
    let scope_rows_year = args.scopes as f64 * (35.0 * 288.0 + 330.0 * 24.0);
    let account_rows_year = args.accounts as f64 * 365.0;
    let gib = |b: f64| b / (1u64 << 30) as f64;
    eprintln!(
        "  scope rows: {} in {:.1} s = {:.0} rows/s; {:.0} B/row ({:.0} B before the account rows), {:.2} GiB",
        scopes.rows,
        scopes.seconds,
        scopes.rate(),
        per_scope_row,
        scope_bytes_only as f64 / scopes.rows as f64,
        gib(scope_bytes as f64)
    );
    eprintln!(
        "  account rows: {} in {:.1} s = {:.0} rows/s; {:.0} B/row, {:.2} GiB",
        accounts.rows,
        accounts.seconds,
        accounts.rate(),
        per_account_row,
        gib(account_bytes as f64)
    );
    eprintln!(
        "  a year at the defaults: scope rows {:.2} GiB ({:.1}M rows), account rows {:.2} GiB ({:.1}M rows)",
        gib(scope_rows_year * per_scope_row),
        scope_rows_year / 1e6,
        gib(account_rows_year * per_account_row),
        account_rows_year / 1e6
    );
    let mut out = json!({
        "store": backend.name(),
        "scope_rows": scopes.rows, "scope_rows_per_s": scopes.rate(), "scope_bytes": scope_bytes,
        "bytes_per_scope_row": per_scope_row,
        "account_rows": accounts.rows, "account_rows_per_s": accounts.rate(), "account_bytes": account_bytes,
        "bytes_per_account_row": per_account_row,
        "year_scope_bytes": scope_rows_year * per_scope_row, "year_account_bytes": account_rows_year * per_account_row,
    });
    if !args.skip_queries {
        out["queries"] = queries(args, &spec).await?;
    }
    Ok(out)
}

/// `cspulse serve` on the store with a live portfolio at the history's end;
/// the API timed.
async fn queries(args: &HistoryArgs, spec: &str) -> anyhow::Result<serde_json::Value> {
    let config = base_config()?;
    let broker = Broker::start(None, &config, 8)?;
    let t = &config.kafka.topics;
    let topics = [t.accounts.clone(), t.usage.clone(), t.tickets.clone(), t.revenue.clone()];
    let port = free_port()?;
    let log_path = std::env::temp_dir().join(format!("cspulse-load-history-{}.log", std::process::id()));
    let child = tokio::process::Command::new(server_bin_at(args.server_bin.as_ref())?)
        .arg("serve")
        .env("CSPULSE__KAFKA__BROKERS", &broker.bootstrap)
        .env("CSPULSE__KAFKA__GROUP_ID", format!("load-history-{}", crate::swarm::now_us()))
        .env("CSPULSE__AUTH__JWT_SECRET", SECRET)
        .env("CSPULSE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("CSPULSE__STATE__STORE", "memory")
        .env("CSPULSE__HISTORY__STORE", spec)
        // The store's rows stay as written (the live portfolio is newer than
        // all of them, so nothing is pruned either way).
        .env("CSPULSE__HISTORY__RETENTION__FINE", "0s")
        .env("CSPULSE__HISTORY__RETENTION__HOURLY", "0s")
        .env("CSPULSE__LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .kill_on_drop(true)
        .spawn()
        .context("spawn cspulse serve")?;
    let mut engine = Instance { child, port };
    engine.ready(Instant::now(), Duration::from_secs(60)).await?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    // Accounts and their opening revenue at 00:01 after the history's end.
    let portfolio = Portfolio { accounts: args.accounts, users: 0, upserts: true, base: end() + MICROS_PER_MIN };
    stream(&engine, &producer, &topics, &portfolio, "live", 0).await?;

    let (from90, to) = (format_rfc3339(end() - 90 * MICROS_PER_DAY), format_rfc3339(end()));
    let exec = token(Role::Executive, None);
    let csm = token(Role::Csm, Some("csm-007"));
    let cases: [(&str, String, &String); 6] = [
        ("history executive 90 d daily", format!("/api/v1/history/executive?from={from90}&to={to}&step=1d"), &exec),
        ("history executive 90 d hourly", format!("/api/v1/history/executive?from={from90}&to={to}&step=1h"), &exec),
        ("history csm 90 d daily", format!("/api/v1/history/csm:csm-007?from={from90}&to={to}&step=1d"), &csm),
        ("history csm 90 d hourly", format!("/api/v1/history/csm:csm-007?from={from90}&to={to}&step=1h"), &csm),
        ("compare executive week", "/api/v1/compare/executive?period=week".to_owned(), &exec),
        ("compare csm week", "/api/v1/compare/csm:csm-007?period=week".to_owned(), &csm),
    ];
    let mut out = serde_json::Map::new();
    for (name, path, token) in cases {
        if args.only.as_deref().is_some_and(|only| !name.contains(only)) {
            continue;
        }
        let mut h = histogram();
        let mut bytes = 0;
        for _ in 0..args.queries {
            let started = Instant::now();
            let response = http_get(port, &path, token).await.with_context(|| format!("GET {path}: no answer"))?;
            h.record(started.elapsed().as_micros() as u64)?;
            if !response.starts_with("HTTP/1.1 200") {
                bail!("GET {path}: {}", response.lines().next().unwrap_or(""));
            }
            bytes = response.len();
        }
        let s = summary(&h);
        eprintln!(
            "  {name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({bytes} bytes)",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
        out.insert(name.to_owned(), json!({"latency": s, "bytes": bytes}));
    }
    drop(engine);
    Ok(serde_json::Value::Object(out))
}
