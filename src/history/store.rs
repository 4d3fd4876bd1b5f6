//! The history store (SPEC §15): SQLite (embedded, the default) or
//! PostgreSQL, behind one query layer (`sqlx`'s `Any` driver), with
//! versioned migrations (`src/history/migrations/`, applied at start).
//!
//! SQL is kept to what both accept: `BIGINT`, `TEXT`, `DOUBLE PRECISION`,
//! `$n` placeholders, `INSERT … ON CONFLICT DO NOTHING`. Instants are
//! microseconds since the Unix epoch (event time); JSON documents are text.
//! Every row has a key derived from what it records, so writing a row again
//! (after a restart) changes nothing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::any::AnyRow;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Row as _, query};

use crate::state::health::Tier;
use crate::state::log::{AccountRow, Row, ScopeKind, ScopeRow, account_object, kpi_object};
use crate::time::Ts;

/// The schema, version by version (never edit one that has shipped: add
/// the next).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "alert and tier logs", include_str!("migrations/0001_alert_and_tier_logs.sql")),
    (2, "scope rows", include_str!("migrations/0002_scope_rows.sql")),
    (3, "account rows", include_str!("migrations/0003_account_rows.sql")),
    (4, "audit log", include_str!("migrations/0004_audit_log.sql")),
    (6, "delivery ledger", include_str!("migrations/0006_deliveries.sql")),
    (7, "saved views", include_str!("migrations/0007_saved_views.sql")),
];

/// Migrations whose statements differ by back end: (SQLite, PostgreSQL).
const MIGRATIONS_BY_BACKEND: &[(i64, &str, &str, &str)] = &[(
    5,
    "planner statistics",
    include_str!("migrations/0005_planner_statistics.sqlite.sql"),
    include_str!("migrations/0005_planner_statistics.postgres.sql"),
)];

/// The tables a rebuild restates (in the order `finish_rebuild` lists
/// their time columns).
const REBUILT: [&str; 5] = ["scope_rows", "account_rows", "tier_log", "alert_log", "history_gaps"];

/// Rows per multi-row `INSERT` statement (at most 7 parameters each: well
/// within both back ends' limits on parameters).
const ROWS_PER_INSERT: usize = 250;

/// How long `not_green_at` keeps a day's answer (a rebuild or import that
/// restates that day shows after at most this long), and for how many days.
const DAY_TIERS_TTL: Duration = Duration::from_secs(600);
const DAY_TIERS_KEPT: usize = 4;

/// `scope_values` lists at most this many boundaries in its query (the
/// history API asks for at most 10,000 points).
const MAX_LISTED_BOUNDARIES: i64 = 10_000;

/// A day `not_green_at` answered, when, and the answer.
type KeptDay = (Ts, Instant, Arc<DayStart>);

/// Set on every SQLite connection: in WAL mode `synchronous = NORMAL` syncs
/// at checkpoints, not at every commit (a committed transaction survives a
/// crash of the process, not of the machine's power), and a page cache
/// larger than SQLite's 2 MiB keeps the scope rows' key index, written at
/// one place per scope and boundary, from being read back from disk.
const SQLITE_PRAGMAS: &[&str] = &["PRAGMA synchronous = NORMAL", "PRAGMA cache_size = -16384"];

/// `INSERT INTO {head} VALUES ($1, …), … ON CONFLICT DO NOTHING` for `rows`
/// rows of `columns` parameters.
fn multi_insert(head: &str, rows: usize, columns: usize) -> String {
    let mut sql = multi_values(head, rows, columns);
    sql.push_str(" ON CONFLICT DO NOTHING");
    sql
}

/// `INSERT INTO {head} VALUES ($1, …), …` for `rows` rows of `columns`
/// parameters.
fn multi_values(head: &str, rows: usize, columns: usize) -> String {
    let mut sql = format!("INSERT INTO {head} VALUES ");
    for i in 0..rows {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        for c in 0..columns {
            let sep = if c == 0 { "" } else { ", " };
            sql.push_str(&format!("{sep}${}", i * columns + c + 1));
        }
        sql.push(')');
    }
    sql
}

/// The embedded migrations of a back end, as `sqlx` runs them.
#[derive(Debug)]
struct Embedded {
    postgres: bool,
}

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> futures_util::future::BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        let by_backend = MIGRATIONS_BY_BACKEND.iter().map(move |&(version, description, sqlite, postgres)| {
            (version, description, if self.postgres { postgres } else { sqlite })
        });
        let mut migrations: Vec<Migration> = MIGRATIONS
            .iter()
            .copied()
            .chain(by_backend)
            .map(|(version, description, sql)| {
                Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, Cow::Borrowed(sql), false)
            })
            .collect();
        migrations.sort_by_key(|m| m.version);
        Box::pin(async { Ok(migrations) })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history.store must be sqlite://PATH, postgres://USER@HOST:PORT/DB or off, not {0:?}")]
    Unsupported(String),
    #[error("history store {store}: {source}")]
    Open { store: String, source: sqlx::Error },
    #[error("history store {store}: migrating the schema: {source}")]
    Migrate { store: String, source: sqlx::migrate::MigrateError },
    #[error("cannot create the directory of the history store {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("history store: {0}")]
    Query(#[from] sqlx::Error),
}

/// How long rows are kept (SPEC §15 "Retention"), in microseconds of event
/// time; 0 keeps them forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Scope rows at boundaries that are not whole hours.
    pub fine: i64,
    /// Scope rows at whole hours that are not UTC midnights.
    pub hourly: i64,
    /// Everything else: scope rows at UTC midnights, account rows, the tier
    /// and alert logs, gaps.
    pub daily: i64,
}

impl Retention {
    pub fn of(c: &crate::config::RetentionConfig) -> Retention {
        Retention { fine: c.fine.micros(), hourly: c.hourly.micros(), daily: c.daily.micros() }
    }
}

/// The accounts not green at a day boundary, with their scopes and tier
/// then (a daily row's columns), the scopes' names interned.
#[derive(Debug, Default)]
pub struct DayStart {
    pub accounts: Vec<StartAccount>,
    /// Scope names by index, as `StartAccount` refers to them.
    pub segments: Vec<String>,
    pub regions: Vec<String>,
    pub csms: Vec<String>,
    /// Each account's slot in an engine's numbering (`resolve`), kept for
    /// the latest numbering asked for.
    slots: Mutex<Option<(u64, Slots)>>,
}

/// Each account's slot in an engine numbering (`None`: not in the engine).
pub type Slots = Arc<[Option<u32>]>;

/// An account of a [`DayStart`].
#[derive(Clone, Debug)]
pub struct StartAccount {
    pub account_id: String,
    /// `None`: a tier this version does not know (it counts, never improved).
    pub tier: Option<Tier>,
    pub segment: u32,
    pub region: u32,
    pub csm: Option<u32>,
}

impl DayStart {
    /// The accounts of `rows`, in their order, their scope names interned.
    pub fn from_rows(rows: impl IntoIterator<Item = DayTierRow>) -> DayStart {
        fn intern(names: &mut Vec<String>, index: &mut HashMap<String, u32>, name: String) -> u32 {
            *index.entry(name).or_insert_with_key(|name| {
                names.push(name.clone());
                names.len() as u32 - 1
            })
        }
        let mut start = DayStart::default();
        let mut index: [HashMap<String, u32>; 3] = Default::default();
        for (account_id, csm_id, segment, region, tier) in rows {
            let [segments, regions, csms] = &mut index;
            start.accounts.push(StartAccount {
                account_id,
                tier: Tier::ALL.into_iter().find(|t| t.as_str() == tier),
                segment: intern(&mut start.segments, segments, segment),
                region: intern(&mut start.regions, regions, region),
                csm: csm_id.map(|c| intern(&mut start.csms, csms, c)),
            });
        }
        start
    }

    /// Each account's slot in the engine numbering `numbering`, `resolve`d
    /// once per numbering (`None`: the account is not in that engine).
    pub fn slots(&self, numbering: u64, resolve: impl Fn(&str) -> Option<u32>) -> Slots {
        let mut kept = self.slots.lock().expect("start slots lock");
        match &*kept {
            Some((n, slots)) if *n == numbering => slots.clone(),
            _ => {
                let slots: Slots = self.accounts.iter().map(|a| resolve(&a.account_id)).collect();
                *kept = Some((numbering, slots.clone()));
                slots
            }
        }
    }
}

/// `account_id, csm_id, segment, region, tier` of a daily row.
pub type DayTierRow = (String, Option<String>, String, String, String);

/// An open, migrated history store.
#[derive(Clone, Debug)]
pub struct HistoryStore {
    pool: AnyPool,
    /// PostgreSQL (else SQLite): for the few statements that differ.
    postgres: bool,
    /// The accounts not green at recent day boundaries (`not_green_at`).
    day_tiers: Arc<Mutex<Vec<KeptDay>>>,
    /// The store as configured, with any password masked (logs, `/readyz`).
    describe: String,
}

impl HistoryStore {
    /// Opens `spec` (`sqlite://PATH` or `postgres://…`), creating a SQLite
    /// file and its directory if needed, and brings the schema up to date.
    pub async fn open(spec: &str) -> Result<HistoryStore, HistoryError> {
        sqlx::any::install_default_drivers();
        let describe = crate::config::secrets::mask_url(spec);
        let (url, max) = if let Some(path) = spec.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|source| HistoryError::Dir { path: dir.display().to_string(), source })?;
            }
            let sep = if spec.contains('?') { '&' } else { '?' };
            // One writer at a time anyway; readers share the file.
            (format!("{spec}{sep}mode=rwc"), 4)
        } else if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            (spec.to_owned(), 8)
        } else {
            return Err(HistoryError::Unsupported(describe));
        };
        let open = |source| HistoryError::Open { store: describe.clone(), source };
        let sqlite = spec.starts_with("sqlite://");
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        for pragma in SQLITE_PRAGMAS {
                            sqlx::Executor::execute(&mut *conn, *pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(open)?;
        if spec.starts_with("sqlite://") {
            // Readers do not block the writer, nor it them.
            query("PRAGMA journal_mode=WAL").execute(&pool).await.map_err(open)?;
        }
        let migrator = Migrator::new(Embedded { postgres: !spec.starts_with("sqlite://") })
            .await
            .map_err(|source| HistoryError::Migrate { store: describe.clone(), source })?;
        let applied: i64 = query("SELECT MAX(version) AS v FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .ok()
            .and_then(|r| r.try_get::<Option<i64>, _>("v").ok().flatten())
            .unwrap_or(0);
        let pending: Vec<i64> = migrator.iter().map(|m| m.version).filter(|&v| v > applied).collect();
        if applied > 0 && !pending.is_empty() {
            // Some rewrite a table: minutes on a store of many gigabytes.
            tracing::info!(store = %describe, from = applied, to = ?pending.last(), "migrating the history store's schema");
        }
        let started = Instant::now();
        migrator.run(&pool).await.map_err(|source| HistoryError::Migrate { store: describe.clone(), source })?;
        if applied > 0 && !pending.is_empty() {
            tracing::info!(store = %describe, seconds = started.elapsed().as_secs_f64(), "history store schema migrated");
        }
        Ok(HistoryStore { pool, postgres: !sqlite, day_tiers: Arc::default(), describe })
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    pub(super) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Writes `rows` in one transaction (all or none); rows already there
    /// are left as they are.
    pub async fn write(&self, rows: &[(u64, Row)]) -> Result<(), sqlx::Error> {
        self.write_into("", rows, None).await
    }

    /// As `write`, recording in the same transaction the messages
    /// `planner` makes of each alert (SPEC §16: an alert in the log always
    /// has its messages, and writing it again plans nothing twice).
    pub async fn write_planned(
        &self,
        rows: &[(u64, Row)],
        planner: &dyn super::ledger::Planner,
        now: Ts,
    ) -> Result<(), sqlx::Error> {
        self.write_into("", rows, Some((planner, now))).await
    }

    /// Starts a rebuild: empty staging tables (`rebuild_` and the name of
    /// each table of rows), a previous rebuild's left-overs dropped.
    pub async fn begin_rebuild(&self) -> Result<(), sqlx::Error> {
        for table in REBUILT {
            query(&format!("DROP TABLE IF EXISTS rebuild_{table}")).execute(&self.pool).await?;
            query(&format!("CREATE TABLE rebuild_{table} AS SELECT * FROM {table} WHERE 1 = 0"))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Writes rows of a rebuild to the staging tables.
    pub async fn write_staging(&self, rows: &[(u64, Row)]) -> Result<(), sqlx::Error> {
        self.write_into("rebuild_", rows, None).await
    }

    /// Ends a rebuild: in one transaction the rows from `from` through
    /// `through` are replaced by the staging tables' and those are dropped.
    pub async fn finish_rebuild(&self, from: Ts, through: Ts) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for (table, at) in REBUILT.iter().zip(["at", "at", "ts", "ts", "from_at"]) {
            query(&format!("DELETE FROM {table} WHERE {at} >= $1 AND {at} <= $2"))
                .bind(from)
                .bind(through)
                .execute(&mut *tx)
                .await?;
            // `WHERE true` lets SQLite parse the upsert clause after a SELECT.
            query(&format!("INSERT INTO {table} SELECT * FROM rebuild_{table} WHERE true ON CONFLICT DO NOTHING"))
                .execute(&mut *tx)
                .await?;
            query(&format!("DROP TABLE rebuild_{table}")).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    async fn write_into(
        &self,
        prefix: &str,
        rows: &[(u64, Row)],
        planner: Option<(&dyn super::ledger::Planner, Ts)>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Scope and account rows, the bulk, go many to a statement.
        let scopes: Vec<&ScopeRow> =
            rows.iter().filter_map(|(_, r)| if let Row::Scope(s) = r { Some(&**s) } else { None }).collect();
        for chunk in scopes.chunks(ROWS_PER_INSERT) {
            let sql = multi_insert(&format!("{prefix}scope_rows (kind, id, at, vals)"), chunk.len(), 4);
            let mut q = query(&sql);
            for r in chunk {
                q = q
                    .bind(r.kind.as_str())
                    .bind(r.id.to_string())
                    .bind(r.at)
                    .bind(serde_json::to_string(&*r.values).unwrap_or_default());
            }
            q.execute(&mut *tx).await?;
        }
        let accounts: Vec<&AccountRow> =
            rows.iter().filter_map(|(_, r)| if let Row::Account(a) = r { Some(&**a) } else { None }).collect();
        for chunk in accounts.chunks(ROWS_PER_INSERT) {
            let sql = multi_insert(
                &format!("{prefix}account_rows (account_id, at, csm_id, segment, region, tier, vals)"),
                chunk.len(),
                7,
            );
            let mut q = query(&sql);
            for r in chunk {
                q = q
                    .bind(r.account_id.to_string())
                    .bind(r.at)
                    .bind(r.csm_id.as_deref().map(str::to_owned))
                    .bind(r.segment.to_string())
                    .bind(r.region.to_string())
                    .bind(r.tier.as_str())
                    .bind(r.values.to_string());
            }
            q.execute(&mut *tx).await?;
        }
        for (_, row) in rows {
            match row {
                Row::Alert(a) => {
                    let body = serde_json::to_string(&a.to_json()).unwrap_or_default();
                    let account = a.account.as_ref();
                    query(&format!(
                        "INSERT INTO {prefix}alert_log (alert_id, state, version, ts, rule, severity, scope, \
                         scope_id, account_id, csm_id, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                         ON CONFLICT DO NOTHING"
                    ))
                    .bind(a.alert_id.as_str())
                    .bind(a.state.as_str())
                    .bind(i64::from(a.version))
                    .bind(a.ts)
                    .bind(a.rule.as_str())
                    .bind(a.severity.as_str())
                    .bind(a.scope.as_str())
                    .bind(a.scope_id.as_str())
                    .bind(account.map(|c| c.account_id.clone()))
                    .bind(account.and_then(|c| c.csm_id.clone()))
                    .bind(body)
                    .execute(&mut *tx)
                    .await?;
                    if let Some((planner, now)) = planner {
                        for p in planner.plan(a, now) {
                            super::ledger::record(&mut tx, &p).await?;
                        }
                    }
                }
                Row::Scope(_) | Row::Account(_) => {}
                Row::Gap { from, to } => {
                    query(&format!(
                        "INSERT INTO {prefix}history_gaps (from_at, to_at) VALUES ($1, $2) ON CONFLICT DO NOTHING"
                    ))
                    .bind(*from)
                    .bind(*to)
                    .execute(&mut *tx)
                    .await?;
                }
                Row::Tier(t) => {
                    query(&format!(
                        "INSERT INTO {prefix}tier_log (account_id, ts, seq, from_tier, to_tier, score, cause) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
                    ))
                    .bind(&*t.account_id)
                    .bind(t.ts)
                    .bind(t.seq as i64)
                    .bind(t.from.map(|f| f.as_str()))
                    .bind(t.to.as_str())
                    .bind(t.score)
                    .bind(t.cause.to_json().to_string())
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await
    }

    /// `sql` with $1 = an account id, $2..$3 = a range of instants.
    async fn of_account(&self, sql: &str, (account_id, from, to): (&str, Ts, Ts)) -> Result<Vec<AnyRow>, sqlx::Error> {
        query(sql).bind(account_id).bind(from).bind(to).fetch_all(&self.pool).await
    }

    /// An account's tier changes with `ts` in [from, to], oldest first, as
    /// the API shows them.
    pub async fn tier_changes(&self, account_id: &str, from: Ts, to: Ts) -> Result<Vec<Value>, sqlx::Error> {
        let rows = self
            .of_account(
                "SELECT ts, from_tier, to_tier, score, cause FROM tier_log \
                 WHERE account_id = $1 AND ts >= $2 AND ts <= $3 ORDER BY ts, seq",
                (account_id, from, to),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let cause: String = r.try_get("cause")?;
                Ok(serde_json::json!({
                    "ts": crate::time::format_rfc3339(r.try_get::<i64, _>("ts")?),
                    "from": r.try_get::<Option<String>, _>("from_tier")?,
                    "to": r.try_get::<String, _>("to_tier")?,
                    "score": r.try_get::<f64, _>("score")?,
                    "cause": serde_json::from_str::<Value>(&cause).unwrap_or(Value::Null),
                }))
            })
            .collect()
    }

    /// An account's daily rows with the boundary in [from, to], oldest
    /// first: (boundary, account object of §3.1 without rank, with the
    /// closed day's usage).
    pub async fn account_days(&self, account_id: &str, from: Ts, to: Ts) -> Result<Vec<(Ts, Value)>, sqlx::Error> {
        let rows = self
            .of_account(
                "SELECT at, vals FROM account_rows WHERE account_id = $1 AND at >= $2 AND at <= $3 ORDER BY at",
                (account_id, from, to),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let vals: String = r.try_get("vals")?;
                let values: Vec<Value> = serde_json::from_str(&vals).unwrap_or_default();
                Ok((r.try_get("at")?, account_object(account_id, &values)))
            })
            .collect()
    }

    /// The alert transitions about an account with `ts` in [from, to],
    /// oldest first: each its §5.3 message.
    pub async fn account_alerts(&self, account_id: &str, from: Ts, to: Ts) -> Result<Vec<Value>, sqlx::Error> {
        let rows = self
            .of_account(
                "SELECT body FROM alert_log WHERE account_id = $1 AND ts >= $2 AND ts <= $3 \
                 ORDER BY ts, alert_id, version, state",
                (account_id, from, to),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body")?;
                Ok(serde_json::from_str::<Value>(&body).unwrap_or(Value::Null))
            })
            .collect()
    }

    /// The scope rows of `kind` (and `id`, if given) at the multiples of
    /// `step` in [from, to], by boundary then id: (id, at, KPI object).
    pub async fn scope_rows(
        &self,
        kind: ScopeKind,
        id: Option<&str>,
        range: (Ts, Ts, i64),
    ) -> Result<Vec<(String, Ts, Value)>, sqlx::Error> {
        let rows = self.scope_values(kind, id, range).await?;
        Ok(rows.into_iter().map(|(id, at, values)| (id, at, kpi_object(&values))).collect())
    }

    /// `scope_rows` with each row's figures as stored (`kpi_object` or
    /// `write_kpi_json` makes the object).
    pub async fn scope_values(
        &self,
        kind: ScopeKind,
        id: Option<&str>,
        (from, to, step): (Ts, Ts, i64),
    ) -> Result<Vec<(String, Ts, Vec<Option<f64>>)>, sqlx::Error> {
        // One range of the key (kind, id, at) per scope: the rows of a scope
        // are a contiguous run of the key, while the rows of a kind are
        // interleaved with every other scope's (one row each per boundary).
        let ids = match id {
            Some(id) => vec![id.to_owned()],
            None => self.scope_ids(kind).await?,
        };
        // The boundaries asked for, listed: each is one seek of the key. (A
        // range with `at % step = 0` made PostgreSQL read every row of the
        // range to test it: 11,400 of a scope's rows for 91 daily ones.)
        let first = i128::from(from).div_euclid(i128::from(step)) * i128::from(step)
            + if from.rem_euclid(step) == 0 { 0 } else { i128::from(step) };
        let points = if i128::from(to) < first { 0 } else { (i128::from(to) - first) / i128::from(step) + 1 };
        let filter = if points <= i128::from(MAX_LISTED_BOUNDARIES) {
            let list: Vec<String> = (0..points).map(|k| (first + k * i128::from(step)).to_string()).collect();
            let list = if list.is_empty() { "NULL".to_owned() } else { list.join(",") };
            format!("at IN ({list})")
        } else {
            format!("at >= {from} AND at <= {to} AND at % {step} = 0")
        };
        let mut out = Vec::new();
        if self.postgres {
            // Row by row: PostgreSQL's driver streams rows cheaply (its
            // 90-day hourly answer was measured so, load-tests README).
            let sql = format!("SELECT at, vals FROM scope_rows WHERE kind = $1 AND id = $2 AND {filter} ORDER BY at");
            for id in ids {
                let q = query(&sql).persistent(false).bind(kind.as_str()).bind(id.clone());
                for r in q.fetch_all(&self.pool).await? {
                    let vals: String = r.try_get("vals")?;
                    let values: Vec<Option<f64>> = serde_json::from_str(&vals).unwrap_or_default();
                    out.push((id.clone(), r.try_get("at")?, values));
                }
            }
        } else {
            // SQLite: a scope's rows come back as one text, a line `at vals`
            // per row: one row through the driver instead of thousands (its
            // per-row cost, a hand-off between threads and a row object
            // each, was a quarter of a 90-day hourly answer's time). `vals`
            // is compact JSON: no newline.
            let sql = format!(
                "SELECT group_concat(at || ' ' || vals, char(10)) AS lines FROM scope_rows \
                 WHERE kind = $1 AND id = $2 AND {filter}"
            );
            for id in ids {
                let q = query(&sql).persistent(false).bind(kind.as_str()).bind(id.clone());
                let lines: Option<String> = q.fetch_one(&self.pool).await?.try_get("lines")?;
                for line in lines.as_deref().unwrap_or_default().lines() {
                    let Some((at, vals)) = line.split_once(' ') else { continue };
                    let Ok(at) = at.parse::<Ts>() else { continue };
                    let values: Vec<Option<f64>> = serde_json::from_str(vals).unwrap_or_default();
                    out.push((id.clone(), at, values));
                }
            }
        }
        out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        Ok(out)
    }

    /// The ids of a kind of scope with rows, by a loose scan of the key
    /// (one index seek per id, whatever the number of rows).
    async fn scope_ids(&self, kind: ScopeKind) -> Result<Vec<String>, sqlx::Error> {
        let rows = query(
            "WITH RECURSIVE ids(id) AS ( \
                 SELECT MIN(id) FROM scope_rows WHERE kind = $1 \
                 UNION ALL \
                 SELECT (SELECT MIN(s.id) FROM scope_rows s WHERE s.kind = $1 AND s.id > ids.id) \
                 FROM ids WHERE ids.id IS NOT NULL \
             ) SELECT id FROM ids WHERE id IS NOT NULL",
        )
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get("id")).collect()
    }

    /// The latest boundary at or before `at` with rows (the portfolio has
    /// one at every boundary recorded).
    pub async fn latest_boundary(&self, at: Ts) -> Result<Option<Ts>, sqlx::Error> {
        let row = query("SELECT MAX(at) AS at FROM scope_rows WHERE kind = 'portfolio' AND at <= $1")
            .bind(at)
            .fetch_one(&self.pool)
            .await?;
        row.try_get("at")
    }

    /// One scope's KPI object at the latest boundary at or before `at`.
    pub async fn scope_row_before(&self, kind: ScopeKind, id: &str, at: Ts) -> Result<Option<Value>, sqlx::Error> {
        let row =
            query("SELECT vals FROM scope_rows WHERE kind = $1 AND id = $2 AND at <= $3 ORDER BY at DESC LIMIT 1")
                .bind(kind.as_str())
                .bind(id)
                .bind(at)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            let vals: String = r.try_get("vals")?;
            Ok(kpi_object(&serde_json::from_str::<Vec<Option<f64>>>(&vals).unwrap_or_default()))
        })
        .transpose()
    }

    /// The latest UTC day boundary at or before `at` with account rows.
    pub async fn latest_day(&self, at: Ts) -> Result<Option<Ts>, sqlx::Error> {
        let row = query("SELECT MAX(at) AS at FROM account_rows WHERE at <= $1").bind(at).fetch_one(&self.pool).await?;
        row.try_get("at")
    }

    /// The accounts not green at the day boundary `at`, with their scopes
    /// and tier then. A past day's rows do not change, so the answer is
    /// kept for [`DAY_TIERS_TTL`] (the last [`DAY_TIERS_KEPT`] days asked
    /// for): `compare` reads one day per period, over 100,000 accounts.
    pub async fn not_green_at(&self, at: Ts) -> Result<Arc<DayStart>, sqlx::Error> {
        let now = Instant::now();
        {
            let mut kept = self.day_tiers.lock().expect("day tiers lock");
            kept.retain(|(_, read, _)| now.duration_since(*read) < DAY_TIERS_TTL);
            if let Some((_, _, tiers)) = kept.iter().find(|(day, _, _)| *day == at) {
                return Ok(tiers.clone());
            }
        }
        let rows = query(
            "SELECT account_id, csm_id, segment, region, tier FROM account_rows WHERE at = $1 AND tier <> 'green'",
        )
        .bind(at)
        .fetch_all(&self.pool)
        .await?;
        let rows: Vec<DayTierRow> = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("account_id")?,
                    r.try_get("csm_id")?,
                    r.try_get("segment")?,
                    r.try_get("region")?,
                    r.try_get("tier")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?;
        let tiers = Arc::new(DayStart::from_rows(rows));
        let mut kept = self.day_tiers.lock().expect("day tiers lock");
        if kept.len() >= DAY_TIERS_KEPT {
            kept.remove(0);
        }
        kept.push((at, now, tiers.clone()));
        Ok(tiers)
    }

    /// Deletes what `keep` no longer keeps as of the watermark `now`;
    /// returns how many rows went. (Instants are microseconds: an hour is
    /// 3,600,000,000 of them, a day 86,400,000,000.)
    pub async fn prune(&self, now: Ts, keep: Retention) -> Result<u64, sqlx::Error> {
        let mut deleted = 0;
        let mut statements: Vec<(&str, i64)> = Vec::new();
        if keep.fine > 0 {
            statements.push(("DELETE FROM scope_rows WHERE at < $1 AND at % 3600000000 <> 0", keep.fine));
        }
        if keep.hourly > 0 {
            statements.push((
                "DELETE FROM scope_rows WHERE at < $1 AND at % 3600000000 = 0 AND at % 86400000000 <> 0",
                keep.hourly,
            ));
        }
        if keep.daily > 0 {
            statements.extend(
                [
                    "DELETE FROM scope_rows WHERE at < $1 AND at % 86400000000 = 0",
                    "DELETE FROM account_rows WHERE at < $1",
                    "DELETE FROM tier_log WHERE ts < $1",
                    "DELETE FROM alert_log WHERE ts < $1",
                    "DELETE FROM history_gaps WHERE to_at < $1",
                ]
                .map(|sql| (sql, keep.daily)),
            );
        }
        for (sql, span) in statements {
            deleted += query(sql).bind(now.saturating_sub(span)).execute(&self.pool).await?.rows_affected();
        }
        Ok(deleted)
    }

    /// Appends audit events (SPEC §18) in one transaction.
    pub async fn write_audit(&self, events: &[crate::audit::Event]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let sql = multi_values("audit_log (at, subject, role, csm_id, action, target, outcome)", chunk.len(), 7);
            let mut q = query(&sql);
            for e in chunk {
                q = q
                    .bind(e.at)
                    .bind(e.subject.clone())
                    .bind(e.role)
                    .bind(e.csm_id.clone())
                    .bind(e.action)
                    .bind(e.target.clone())
                    .bind(e.outcome.clone());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Audit events with `at` in [from, to] (of `subject`, if given),
    /// newest first, at most `limit`.
    pub async fn audit_events(
        &self,
        (from, to): (Ts, Ts),
        subject: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Value>, sqlx::Error> {
        let mut sql = String::from(
            "SELECT at, subject, role, csm_id, action, target, outcome FROM audit_log WHERE at >= $1 AND at <= $2",
        );
        if subject.is_some() {
            sql.push_str(" AND subject = $4");
        }
        sql.push_str(" ORDER BY at DESC LIMIT $3");
        let mut q = query(&sql).bind(from).bind(to).bind(limit);
        if let Some(s) = subject {
            q = q.bind(s);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(serde_json::json!({
                    "at": crate::time::format_rfc3339(r.try_get::<i64, _>("at")?),
                    "subject": r.try_get::<String, _>("subject")?,
                    "role": r.try_get::<String, _>("role")?,
                    "csm_id": r.try_get::<Option<String>, _>("csm_id")?,
                    "action": r.try_get::<String, _>("action")?,
                    "target": r.try_get::<String, _>("target")?,
                    "outcome": r.try_get::<String, _>("outcome")?,
                }))
            })
            .collect()
    }

    /// Deletes the audit events before `before` (wall time).
    pub async fn prune_audit(&self, before: Ts) -> Result<u64, sqlx::Error> {
        Ok(query("DELETE FROM audit_log WHERE at < $1").bind(before).execute(&self.pool).await?.rows_affected())
    }

    /// The gaps (boundaries whose scope rows were dropped) overlapping
    /// [from, to], merged, oldest first.
    pub async fn gaps(&self, from: Ts, to: Ts) -> Result<Vec<(Ts, Ts)>, sqlx::Error> {
        let rows =
            query("SELECT from_at, to_at FROM history_gaps WHERE to_at >= $1 AND from_at <= $2 ORDER BY from_at")
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await?;
        let mut out: Vec<(Ts, Ts)> = Vec::new();
        for r in &rows {
            let (a, b): (i64, i64) = (r.try_get("from_at")?, r.try_get("to_at")?);
            match out.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Ok(out)
    }
}
