//! `GET /api/v1/accounts` (SPEC §19): the accounts of the published state,
//! filtered, sorted and paged.
//!
//! A request reads one snapshot (the channels' barrier, so at one `as_of`
//! the listed figures agree with the channels'), in one pass that filters
//! and takes each match's sort key, and sorts only as far as its page
//! reaches. When more rows match than the page holds, the snapshot is kept
//! for 60 s under a cursor bound to the caller and the query: the next
//! pages order the same snapshot again (the order is total, so the pages
//! are the same as one sorted list's), unmoved by later changes. A csm
//! token lists its own book only, whatever the filters say; a wall token
//! lists nothing (403).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::exports::Format;
use super::{ApiError, AppState, TokenQuery, principal};
use crate::auth::{Principal, Role};
use crate::exact::Exact;
use crate::fast::FastMap;
use crate::metric::{ACCOUNT, AccountMetric, MetricValue};
use crate::state::health::Tier;
use crate::state::snapshot::{Record, Snapshot};
use crate::time::{MICROS_PER_DAY, Ts, format_rfc3339};

/// Rows per page at most, and by default.
pub const MAX_LIMIT: usize = 1_000;
const DEFAULT_LIMIT: usize = 100;
/// How long a cursor pages over its first page's state.
const CURSOR_TTL: Duration = Duration::from_secs(60);
/// Listings kept for cursors at most, and per subject (each holds a
/// snapshot: what changed since it stays in memory while it is kept).
const MAX_LISTINGS: usize = 64;
const MAX_LISTINGS_PER_SUBJECT: usize = 8;

/// The query parameters, as given.
const PARAMS: &[&str] = &[
    "segment",
    "region",
    "csm_id",
    "tier",
    "arr_min",
    "arr_max",
    "renewal_within",
    "alert",
    "q",
    "feature",
    "score_min",
    "score_below",
    "sort",
    "sums",
    "limit",
    "cursor",
    "token",
];

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// Which alerts an `alert=` value asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AlertFilter {
    Critical,
    Warning,
    Any,
}

/// A bound on ARR: `cents · 10^scale` against the account's cents · 10^scale
/// (exact for any number of decimals given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Money {
    scaled: i128,
    scale: u32,
}

impl Money {
    fn parse(key: &str, text: &str) -> Result<Money, ApiError> {
        let err = || bad(format!("{key}={text}: a number of dollars (e.g. 25000 or 1234.50)"));
        let (neg, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || int.len() + frac.len() > 30
        {
            return Err(err());
        }
        let whole: i128 = format!("0{int}{frac}").parse().map_err(|_| err())?;
        // dollars · 10^frac → cents · 10^frac: × 100.
        let scaled = whole.checked_mul(100).ok_or_else(err)?;
        Ok(Money { scaled: if neg { -scaled } else { scaled }, scale: frac.len() as u32 })
    }

    /// `arr_cents` compared with this bound.
    fn cmp_cents(self, arr_cents: i64) -> std::cmp::Ordering {
        let arr = i128::from(arr_cents).saturating_mul(10i128.saturating_pow(self.scale));
        arr.cmp(&self.scaled)
    }
}

/// The sort: a catalogue figure (or the id), and the direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SortBy {
    /// §3.4's order (red renewing within 90 days, tier, score, ARR desc, id).
    Priority,
    Id {
        descending: bool,
    },
    Field {
        metric: AccountMetric,
        descending: bool,
    },
}

/// A parsed `GET /api/v1/accounts` query.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Filters {
    segment: Option<String>,
    region: Option<String>,
    csm_id: Option<String>,
    tiers: Vec<Tier>,
    arr_min: Option<Money>,
    arr_max: Option<Money>,
    renewal_within: Option<i64>,
    alerts: Vec<AlertFilter>,
    q: Option<String>,
    /// Accounts with a usage event on this feature in the last 30 days.
    feature: Option<String>,
    /// `score_min <= health.score < score_below`, compared exactly.
    score_min: Option<crate::exact::Ratio>,
    score_below: Option<crate::exact::Ratio>,
    sort: SortBy,
}

struct Query {
    filters: Filters,
    /// Figures to add up over every match (`sums=`), in the order asked.
    sums: Vec<&'static crate::metric::Metric<AccountMetric>>,
    /// The filters and sort as written, in a fixed order (a cursor belongs to one).
    key: String,
    limit: usize,
    cursor: Option<String>,
}

/// The option named `value` of a parameter `key` (else 400 listing them).
fn one_of<T: Copy>(key: &str, value: &str, options: &[(&str, T)]) -> Result<T, ApiError> {
    options.iter().find(|(name, _)| *name == value).map(|(_, t)| *t).ok_or_else(|| {
        let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
        bad(format!("{key}={value}: {}", names.join(", ")))
    })
}

fn parse_query(raw: Option<&str>) -> Result<Query, ApiError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !PARAMS.contains(&k.as_ref()) {
            return Err(bad(format!("unknown parameter {k:?} (known: {})", PARAMS[..PARAMS.len() - 1].join(", "))));
        }
        pairs.push((k.into_owned(), v.into_owned()));
    }
    let single = |key: &str| -> Result<Option<String>, ApiError> {
        let mut values = pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone());
        let first = values.next();
        if values.next().is_some() {
            return Err(bad(format!("{key} is given more than once (only tier and alert may repeat)")));
        }
        Ok(first)
    };
    let many = |key: &str| pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
    let tiers = many("tier")
        .into_iter()
        .map(|v| one_of("tier", v, &[("red", Tier::Red), ("yellow", Tier::Yellow), ("green", Tier::Green)]))
        .collect::<Result<Vec<_>, _>>()?;
    let alerts = many("alert")
        .into_iter()
        .map(|v| {
            let options =
                [("critical", AlertFilter::Critical), ("warning", AlertFilter::Warning), ("any", AlertFilter::Any)];
            one_of("alert", v, &options)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let renewal_within = match single("renewal_within")? {
        None => None,
        Some(text) => {
            let span: crate::time::Span =
                text.parse().map_err(|e| bad(format!("renewal_within={text}: a duration in days, e.g. 90d ({e})")))?;
            let micros = span.micros();
            if micros % MICROS_PER_DAY != 0 {
                return Err(bad(format!("renewal_within={text}: a whole number of days, e.g. 90d")));
            }
            Some(micros / MICROS_PER_DAY)
        }
    };
    let sort = match single("sort")?.as_deref() {
        None | Some("") => SortBy::Priority,
        Some(text) => {
            let (descending, path) = match text.strip_prefix('-') {
                Some(p) => (true, p),
                None => (false, text),
            };
            if path == "account_id" {
                SortBy::Id { descending }
            } else {
                let metric = ACCOUNT.iter().find(|m| m.path == path).ok_or_else(|| {
                    bad(format!(
                        "sort={text}: a field path of the account object with - for descending (account_id, {})",
                        ACCOUNT.iter().map(|m| m.path).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                SortBy::Field { metric: metric.id, descending }
            }
        }
    };
    let limit = match single("limit")? {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(bad(format!("limit={text}: between 1 and {MAX_LIMIT}"))),
        },
    };
    let money = |key: &str| single(key)?.map(|t| Money::parse(key, &t)).transpose();
    let score = |key: &str| -> Result<Option<crate::exact::Ratio>, ApiError> {
        single(key)?
            .map(|t| {
                crate::exact::Decimal::parse(&t)
                    .map(|d| d.ratio())
                    .map_err(|e| bad(format!("{key}={t}: a health score, e.g. 40 or 72.5 ({e})")))
            })
            .transpose()
    };
    let filters = Filters {
        segment: single("segment")?,
        region: single("region")?,
        csm_id: single("csm_id")?,
        tiers,
        arr_min: money("arr_min")?,
        arr_max: money("arr_max")?,
        renewal_within,
        alerts,
        q: single("q")?.map(|q| q.to_lowercase()),
        feature: single("feature")?,
        score_min: score("score_min")?,
        score_below: score("score_below")?,
        sort,
    };
    let mut sums = Vec::new();
    for path in many("sums") {
        let additive = |m: &&crate::metric::Metric<AccountMetric>| {
            m.path == path && matches!(m.unit, crate::metric::Unit::Money | crate::metric::Unit::Count)
        };
        let metric = ACCOUNT.iter().find(additive).ok_or_else(|| {
            let paths: Vec<&str> = ACCOUNT
                .iter()
                .filter(|m| matches!(m.unit, crate::metric::Unit::Money | crate::metric::Unit::Count))
                .map(|m| m.path)
                .collect();
            bad(format!("sums={path}: an additive account figure ({})", paths.join(", ")))
        })?;
        if !sums.iter().any(|m: &&crate::metric::Metric<AccountMetric>| m.path == path) {
            sums.push(metric);
        }
    }
    let mut written: Vec<&(String, String)> =
        pairs.iter().filter(|(k, _)| !matches!(k.as_str(), "limit" | "cursor" | "token" | "sums")).collect();
    written.sort();
    let key = written.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    Ok(Query { filters, sums, key, limit, cursor: single("cursor")? })
}

impl Filters {
    fn matches(&self, r: &Record, now: Ts) -> bool {
        let info = &r.info;
        if self.segment.as_deref().is_some_and(|s| s != &*info.segment)
            || self.region.as_deref().is_some_and(|s| s != &*info.region)
            || self.csm_id.as_deref().is_some_and(|c| info.csm_id.as_deref() != Some(c).filter(|c| !c.is_empty()))
        {
            return false;
        }
        if !self.tiers.is_empty() && !self.tiers.contains(&r.metrics.tier()) {
            return false;
        }
        let arr = r.metrics.arr;
        if self.arr_min.is_some_and(|m| m.cmp_cents(arr).is_lt())
            || self.arr_max.is_some_and(|m| m.cmp_cents(arr).is_gt())
        {
            return false;
        }
        if let Some(days) = self.renewal_within
            && !r.days_to_renewal(now).is_some_and(|d| (0..=days).contains(&d))
        {
            return false;
        }
        if !self.alerts.is_empty()
            && !self.alerts.iter().any(|a| match a {
                AlertFilter::Critical => r.alerts[0] > 0,
                AlertFilter::Warning => r.alerts[1] > 0,
                AlertFilter::Any => r.alerts[0] + r.alerts[1] > 0,
            })
        {
            return false;
        }
        if self.feature.as_deref().is_some_and(|f| !r.used(f)) {
            return false;
        }
        if self.score_min.is_some() || self.score_below.is_some() {
            let MetricValue::Num(score) = r.value(AccountMetric::Score, now) else { return false };
            if self.score_min.is_some_and(|m| score.exact.cmp_ratio(&m).is_lt())
                || self.score_below.is_some_and(|b| score.exact.cmp_ratio(&b).is_ge())
            {
                return false;
            }
        }
        if let Some(q) = &self.q
            && !r.id.to_lowercase().contains(q.as_str())
            && !info.name.as_deref().is_some_and(|n| n.to_lowercase().contains(q.as_str()))
        {
            return false;
        }
        true
    }
}

/// A sort key: numbers exactly, text as written, the tier worst first;
/// nulls after everything in either direction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Num(Exact),
    Text(String),
}

fn key_of(metric: AccountMetric, r: &Record, now: Ts) -> Option<Key> {
    if metric == AccountMetric::Tier {
        return Some(Key::Num(Exact::from(crate::exact::Ratio::int(r.metrics.tier() as i128))));
    }
    match r.value(metric, now) {
        MetricValue::Num(n) => Some(Key::Num(n.exact)),
        MetricValue::Str(s) => Some(Key::Text(s.into_owned())),
        MetricValue::Null => None,
    }
}

/// The records of `snapshot` that `who` may see and that match.
fn matches<'s>(
    snapshot: &'s Snapshot,
    who: &'s Principal,
    filters: &'s Filters,
) -> Box<dyn Iterator<Item = &'s Arc<Record>> + 's> {
    let now = snapshot.now_or_zero();
    // Only a csm's view depends on the owner (read off the record lazily).
    let csm = who.role == Role::Csm;
    let visible =
        move |r: &&'s Arc<Record>| filters.matches(r, now) && (!csm || who.may_see_account(r.info.csm_id.as_deref()));
    match who.role {
        // A csm's own book: no walk of every account.
        Role::Csm => {
            let own = who.csm_id.as_deref().unwrap_or_default();
            Box::new(snapshot.book(own).into_iter().flat_map(|b| b.members.iter()).filter(visible))
        }
        _ => {
            // The map's walk first (its nodes only), then the records with
            // the ones a few ahead asked for: each record is a cache miss
            // (measured: the first read of one, its tier, was 87 % of the
            // filter's time), and misses overlap when requested early.
            let all: Vec<&'s Arc<Record>> = snapshot.records().map(|(_, r)| r).collect();
            Box::new((0..all.len()).filter_map(move |i| {
                if let Some(ahead) = all.get(i + PREFETCH_AHEAD) {
                    crate::state::prefetch(&ahead.metrics.health.tier);
                    crate::state::prefetch(&ahead.metrics.arr);
                }
                let r = all[i];
                visible(&r).then_some(r)
            }))
        }
    }
}

/// How many records ahead the walk asks for.
const PREFETCH_AHEAD: usize = 8;

/// A field's key as ordered: ascending or descending, nulls after either.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Ranked {
    Asc(Key),
    Desc(std::cmp::Reverse<Key>),
    Null,
}

/// A row kept for a page, ordered by its key alone (keys are unique).
struct Kept<'s, K>(K, &'s Arc<Record>);

impl<K: Ord> PartialEq for Kept<'_, K> {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}

impl<K: Ord> Eq for Kept<'_, K> {}

impl<K: Ord> PartialOrd for Kept<'_, K> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl<K: Ord> Ord for Kept<'_, K> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.cmp(&o.0)
    }
}

/// Rows `offset..offset + limit` of `rows` ordered by `key`, and how many
/// rows there are: one pass that reads each record once for its key and
/// keeps the `offset + limit` smallest in a heap (most rows are turned away
/// by one comparison with its largest). Keys are unique (they end with the
/// account id), so the order, and so every page, is the same each time.
fn page_by<'s, K: Ord>(
    rows: impl Iterator<Item = &'s Arc<Record>>,
    key: impl Fn(&'s Record) -> K,
    offset: usize,
    limit: usize,
) -> (usize, Vec<&'s Arc<Record>>) {
    let end = offset.saturating_add(limit);
    let mut kept: std::collections::BinaryHeap<Kept<'s, K>> = std::collections::BinaryHeap::new();
    let mut total = 0;
    for r in rows {
        total += 1;
        let k = key(r);
        if kept.len() < end {
            kept.push(Kept(k, r));
        } else if let Some(mut largest) = kept.peek_mut()
            && k < largest.0
        {
            *largest = Kept(k, r);
        }
    }
    let sorted = kept.into_sorted_vec();
    (total, sorted.into_iter().skip(offset).map(|Kept(_, r)| r).collect())
}

/// One page of the matches in `sort` order at the snapshot's `now`.
fn page<'s>(
    snapshot: &'s Snapshot,
    who: &'s Principal,
    filters: &'s Filters,
    sort: SortBy,
    offset: usize,
    limit: usize,
) -> (usize, Vec<&'s Arc<Record>>) {
    page_visiting(snapshot, who, filters, sort, offset, limit, |_| {})
}

/// As [`page`], showing every match to `visit` on the way (the one pass
/// that filters also adds up `sums=`).
fn page_visiting<'s>(
    snapshot: &'s Snapshot,
    who: &'s Principal,
    filters: &'s Filters,
    sort: SortBy,
    offset: usize,
    limit: usize,
    mut visit: impl FnMut(&Record),
) -> (usize, Vec<&'s Arc<Record>>) {
    let now = snapshot.now_or_zero();
    let rows = matches(snapshot, who, filters).inspect(move |r| visit(r));
    match sort {
        SortBy::Priority => page_by(rows, |r| r.priority_key(now), offset, limit),
        SortBy::Id { descending: false } => page_by(rows, |r| &*r.id, offset, limit),
        SortBy::Id { descending: true } => page_by(rows, |r| std::cmp::Reverse(&*r.id), offset, limit),
        SortBy::Field { metric, descending } => {
            let rank = move |r: &'s Record| {
                let ranked = match key_of(metric, r, now) {
                    None => Ranked::Null,
                    Some(key) if descending => Ranked::Desc(std::cmp::Reverse(key)),
                    Some(key) => Ranked::Asc(key),
                };
                (ranked, &*r.id)
            };
            page_by(rows, rank, offset, limit)
        }
    }
}

/// Who listed (subject, role, book): a cursor pages only for them.
type Owner = (String, Role, Option<String>);

/// What a cursor pages over: its first page's snapshot (each page filters
/// and orders it again: the same snapshot gives the same order), for its
/// caller and query.
#[derive(Clone)]
struct Listing {
    made: Instant,
    owner: Owner,
    key: String,
    snapshot: Arc<Snapshot>,
}

/// The lists cursors page over.
#[derive(Default)]
pub struct Cursors {
    listings: Mutex<HashMap<u64, Listing>>,
    next: AtomicU64,
}

impl Cursors {
    fn keep(&self, listing: Listing) -> u64 {
        let id = self.next.fetch_add(1, AtomicOrdering::Relaxed) + 1;
        let mut gone = Vec::new();
        {
            let mut all = self.listings.lock().unwrap_or_else(|p| p.into_inner());
            let expired: Vec<u64> =
                all.iter().filter(|(_, l)| l.made.elapsed() >= CURSOR_TTL).map(|(k, _)| *k).collect();
            gone.extend(expired.into_iter().filter_map(|k| all.remove(&k)));
            let oldest = |all: &HashMap<u64, Listing>, of: Option<&Owner>| {
                all.iter()
                    .filter(|(_, l)| of.is_none_or(|o| &l.owner == o))
                    .min_by_key(|(_, l)| l.made)
                    .map(|(k, _)| *k)
            };
            while all.values().filter(|l| l.owner == listing.owner).count() >= MAX_LISTINGS_PER_SUBJECT {
                let Some(k) = oldest(&all, Some(&listing.owner)) else { break };
                gone.extend(all.remove(&k));
            }
            while all.len() >= MAX_LISTINGS {
                let Some(k) = oldest(&all, None) else { break };
                gone.extend(all.remove(&k));
            }
            all.insert(id, listing);
        }
        Self::release(gone);
        id
    }

    /// Drops listings off the request path: the last reference to an old
    /// snapshot frees what changed since (measured: up to 200 ms at
    /// 100,000 accounts under ingest).
    fn release(gone: Vec<Listing>) {
        if !gone.is_empty() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || drop(gone))),
                Err(_) => drop(gone),
            }
        }
    }

    fn get(&self, id: u64) -> Option<Listing> {
        let all = self.listings.lock().unwrap_or_else(|p| p.into_inner());
        all.get(&id).filter(|l| l.made.elapsed() < CURSOR_TTL).cloned()
    }
}

fn owner_of(who: &Principal) -> Owner {
    (who.sub.clone(), who.role, who.csm_id.clone())
}

/// Each row's rank in its book (books ordered once each).
fn ranks(snapshot: &Snapshot, rows: &[&Arc<Record>]) -> Vec<Option<usize>> {
    let mut books: FastMap<&str, FastMap<&str, usize>> = FastMap::default();
    rows.iter()
        .map(|r| {
            r.info.csm_id.as_deref().and_then(|csm| {
                let book = books.entry(csm).or_insert_with(|| {
                    snapshot.book_order(csm).iter().enumerate().map(|(i, m)| (&*m.id, i + 1)).collect()
                });
                book.get(&*r.id).copied()
            })
        })
        .collect()
}

/// The account objects of `rows`, each with its rank in its book.
fn objects(snapshot: &Snapshot, rows: &[&Arc<Record>]) -> Vec<Value> {
    let now = snapshot.now_or_zero();
    rows.iter().zip(ranks(snapshot, rows)).map(|(r, rank)| r.object(rank, now)).collect()
}

/// `GET /api/v1/accounts/export.csv|export.xlsx?<the list's filters and
/// sort>`: every match, in order, one row per account and one column per
/// field of the account object (`account_id`, every §3.1 path,
/// `health.rank`); the list's access rules. `limit` caps the rows
/// (default: all); a cursor does not apply.
pub async fn export_csv(
    state: State<AppState>,
    headers: HeaderMap,
    raw: RawQuery,
) -> Result<axum::response::Response, ApiError> {
    export(state, headers, raw, Format::Csv).await
}

pub async fn export_xlsx(
    state: State<AppState>,
    headers: HeaderMap,
    raw: RawQuery,
) -> Result<axum::response::Response, ApiError> {
    export(state, headers, raw, Format::Xlsx).await
}

async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    format: Format,
) -> Result<axum::response::Response, ApiError> {
    let who = caller(&state, &headers, raw.as_deref())?;
    let query = parse_query(raw.as_deref())?;
    if query.cursor.is_some() {
        return Err(bad("cursor: an export lists every match from the start (no cursor)"));
    }
    let limit = if raw.as_deref().is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "limit")) {
        query.limit
    } else {
        usize::MAX
    };
    let snapshot = state.shared.snapshot();
    let table = table_of(&snapshot, &who, &query, limit);
    let day = snapshot.now.map(|t| format_rfc3339(t).chars().take(10).collect::<String>()).unwrap_or_default();
    super::exports::respond(format!("cspulse-accounts-{day}"), vec![table], format).await
}

/// The asked figures (`sums=`) added up over the matches shown to
/// [`Sums::add`], exactly: money in cents, counts as integers.
struct Sums<'q> {
    figures: &'q [&'static crate::metric::Metric<AccountMetric>],
    totals: Vec<i128>,
    now: Ts,
}

impl<'q> Sums<'q> {
    fn new(figures: &'q [&'static crate::metric::Metric<AccountMetric>], now: Ts) -> Self {
        Sums { figures, totals: vec![0; figures.len()], now }
    }

    fn add(&mut self, r: &Record) {
        for (total, m) in self.totals.iter_mut().zip(self.figures) {
            if let MetricValue::Num(n) = r.value(m.id, self.now) {
                *total += i128::from(match m.unit {
                    crate::metric::Unit::Money => n.exact.round_scaled(100),
                    _ => n.exact.floor_i64(),
                });
            }
        }
    }

    /// `{path: total}`.
    fn to_json(&self) -> Value {
        let shown = self.figures.iter().zip(&self.totals).map(|(m, &total)| {
            let v = match m.unit {
                crate::metric::Unit::Money => json!(total as f64 / 100.0),
                _ => json!(total as i64),
            };
            (m.path.to_owned(), v)
        });
        Value::Object(shown.collect())
    }
}

/// Buckets of a distribution at most, and by default.
const MAX_BUCKETS: usize = 100;
const DEFAULT_BUCKETS: usize = 20;

/// `[from, to)` and how many values fall in it.
#[derive(Debug, PartialEq)]
struct Bucket {
    from: f64,
    to: f64,
    count: u64,
}

/// The histogram of `values` in `n` buckets. Whole-number figures (counts,
/// days) get whole-number buckets `[from, to)` of equal width covering
/// `min..=max`; the others `n` equal-width buckets over `[min, max]`, each
/// `[from, to)` but the last, which holds `max`. A value's bucket is decided
/// exactly (on the rationals, not on rounded edges).
fn histogram(values: &[Exact], n: usize, whole: bool) -> Vec<Bucket> {
    use num_bigint::BigInt;
    let (Some(min), Some(max)) = (values.iter().min(), values.iter().max()) else { return Vec::new() };
    if whole {
        let (lo, hi) = (min.floor_i64(), max.floor_i64());
        let span = (i128::from(hi) - i128::from(lo) + 1) as u128;
        let width = span.div_ceil(n as u128).max(1);
        let count = span.div_ceil(width) as usize;
        let mut buckets: Vec<Bucket> = (0..count)
            .map(|i| {
                let from = i128::from(lo) + (i as i128) * width as i128;
                Bucket { from: from as f64, to: (from + width as i128) as f64, count: 0 }
            })
            .collect();
        for v in values {
            let i = ((i128::from(v.floor_i64()) - i128::from(lo)) as u128 / width) as usize;
            buckets[i.min(count - 1)].count += 1;
        }
        return buckets;
    }
    if min == max {
        return vec![Bucket { from: min.to_f64(), to: max.to_f64(), count: values.len() as u64 }];
    }
    // v = a/b, min = c/d, max = e/f: v's bucket is
    // floor(n·(v − min)/(max − min)) = floor(n·f·(a·d − c·b) / (b·(e·d − c·f))).
    let (lo, hi) = (min.to_big(), max.to_big());
    let (c, d) = (lo.num.clone(), BigInt::from(lo.den.clone()));
    let (e, f) = (hi.num.clone(), BigInt::from(hi.den.clone()));
    let span = &e * &d - &c * &f;
    let nf = BigInt::from(n) * &f;
    let edge = |i: usize| {
        // min + i·(max − min)/n = (c·f·n + i·span) / (d·f·n)
        let num = &c * &f * BigInt::from(n) + BigInt::from(i) * &span;
        let den = &d * &f * BigInt::from(n);
        Exact::of_big(num, den.magnitude().clone()).to_f64()
    };
    let mut buckets: Vec<Bucket> = (0..n).map(|i| Bucket { from: edge(i), to: edge(i + 1), count: 0 }).collect();
    for v in values {
        let x = v.to_big();
        let b = BigInt::from(x.den);
        let i = (&nf * (&x.num * &d - &c * &b)) / (&b * &span);
        let i = usize::try_from(i).unwrap_or(usize::MAX).min(n - 1);
        buckets[i].count += 1;
    }
    buckets
}

/// `GET /api/v1/accounts/distribution?field=&buckets=&<the list's
/// filters>`: the distribution of a numeric account figure over the
/// matches (the list's access rules): `{as_of, field, total, nulls, min,
/// max, buckets: [{from, to, count}]}`.
pub async fn distribution(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Value>, ApiError> {
    let who = caller(&state, &headers, raw.as_deref())?;
    let (mut field, mut buckets, mut rest) = (None, None, form_urlencoded::Serializer::new(String::new()));
    for (k, v) in form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "field" if field.is_none() => field = Some(v.into_owned()),
            "buckets" if buckets.is_none() => buckets = Some(v.into_owned()),
            "field" | "buckets" => return Err(bad(format!("{k} is given more than once"))),
            "sort" | "limit" | "cursor" => return Err(bad(format!("{k}: a distribution covers every match"))),
            _ => {
                rest.append_pair(&k, &v);
            }
        }
    }
    let numeric = || ACCOUNT.iter().filter(|m| m.kind() == crate::metric::Kind::Num).map(|m| m.path);
    let field = field.ok_or_else(|| {
        bad(format!("field: the numeric account figure to distribute ({})", numeric().collect::<Vec<_>>().join(", ")))
    })?;
    let metric = ACCOUNT.iter().find(|m| m.path == field && m.kind() == crate::metric::Kind::Num).ok_or_else(|| {
        bad(format!("field={field}: a numeric account figure ({})", numeric().collect::<Vec<_>>().join(", ")))
    })?;
    let n = match buckets {
        None => DEFAULT_BUCKETS,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_BUCKETS).contains(&n) => n,
            _ => return Err(bad(format!("buckets={text}: between 1 and {MAX_BUCKETS}"))),
        },
    };
    let query = parse_query(Some(&rest.finish()))?;
    let snapshot = state.shared.snapshot();
    let now = snapshot.now_or_zero();
    let (mut values, mut nulls) = (Vec::new(), 0u64);
    for r in matches(&snapshot, &who, &query.filters) {
        match r.value(metric.id, now) {
            MetricValue::Num(v) => values.push(v.exact),
            _ => nulls += 1,
        }
    }
    let whole = matches!(metric.unit, crate::metric::Unit::Count | crate::metric::Unit::Days);
    let shown = |v: Option<&Exact>| v.map(|v| crate::metric::shown(v.to_f64(), metric.unit, false));
    let buckets: Vec<Value> = histogram(&values, n, whole)
        .into_iter()
        .map(|b| json!({"from": b.from, "to": b.to, "count": b.count}))
        .collect();
    Ok(axum::Json(json!({
        "as_of": snapshot.now.map(format_rfc3339),
        "field": field,
        "total": values.len() as u64 + nulls,
        "nulls": nulls,
        "min": shown(values.iter().min()),
        "max": shown(values.iter().max()),
        "buckets": buckets,
    })))
}

/// The accounts table of an export: the first `limit` matches in order.
/// The cells are read off the records as the account objects show them
/// (the catalogue's figures in its order), without building the objects.
fn table_of(snapshot: &Snapshot, who: &Principal, query: &Query, limit: usize) -> crate::export::Table {
    let now = snapshot.now_or_zero();
    let (_, rows) = page(snapshot, who, &query.filters, query.filters.sort, 0, limit);
    let cells = rows
        .iter()
        .zip(ranks(snapshot, &rows))
        .map(|(r, rank)| {
            std::iter::once(Value::from(&*r.id))
                .chain(ACCOUNT.iter().map(|m| r.value(m.id, now).to_view(m.unit, true)))
                .chain(std::iter::once(json!(rank)))
                .collect()
        })
        .collect();
    crate::export::Table { name: "accounts".into(), columns: super::exports::account_columns(), rows: cells }
}

/// The table the accounts export of `raw_query` writes (every match). For
/// benchmarks, in-process.
pub fn export_table(snapshot: &Snapshot, who: &Principal, raw_query: &str) -> Result<crate::export::Table, String> {
    let query = parse_query(Some(raw_query)).map_err(|e| e.message)?;
    Ok(table_of(snapshot, who, &query, usize::MAX))
}

/// The caller of an accounts request (the token may be in the query); a
/// wall token may not list accounts.
fn caller(state: &AppState, headers: &HeaderMap, raw: Option<&str>) -> Result<Principal, ApiError> {
    let token =
        raw.and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned()));
    let who = principal(state, headers, &TokenQuery { token })?;
    if who.role == Role::Wall {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "role wall may not list accounts"));
    }
    Ok(who)
}

/// Whether `raw_query` is a valid accounts list query (saved views keep
/// only queries that load).
pub(super) fn check_query(raw_query: &str) -> Result<(), ApiError> {
    parse_query(Some(raw_query)).map(drop)
}

/// The first page of the accounts list for `raw_query` (no cursor kept):
/// `(total, accounts on the page)`. For benchmarks, in-process.
pub fn first_page(snapshot: &Snapshot, who: &Principal, raw_query: &str) -> Result<(usize, usize), String> {
    let query = parse_query(Some(raw_query)).map_err(|e| e.message)?;
    let (total, rows) = page(snapshot, who, &query.filters, query.filters.sort, 0, query.limit);
    Ok((total, objects(snapshot, &rows).len()))
}

/// `GET /api/v1/accounts?segment=&region=&csm_id=&tier=&arr_min=&arr_max=&renewal_within=&alert=&q=&sort=&limit=&cursor=`
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Value>, ApiError> {
    let who = caller(&state, &headers, raw.as_deref())?;
    let query = parse_query(raw.as_deref())?;
    let (snapshot, offset, listing) = match &query.cursor {
        None => (state.shared.snapshot(), 0, None),
        Some(cursor) => {
            let invalid = || {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_cursor",
                    format!(
                        "cursor={cursor}: unknown or expired (a cursor pages for 60 s); list again from the first page"
                    ),
                )
            };
            let (id, offset) = cursor.split_once('.').ok_or_else(invalid)?;
            let (id, offset): (u64, usize) =
                (id.parse().map_err(|_| invalid())?, offset.parse().map_err(|_| invalid())?);
            let listing = state.cursors.get(id).ok_or_else(invalid)?;
            if listing.owner != owner_of(&who) {
                return Err(invalid());
            }
            if listing.key != query.key {
                return Err(bad(format!(
                    "cursor={cursor} pages over another query: give the filters and sort of its first page ({})",
                    listing.key
                )));
            }
            (listing.snapshot, offset, Some(id))
        }
    };
    let mut sums = Sums::new(&query.sums, snapshot.now_or_zero());
    let (total, rows) =
        page_visiting(&snapshot, &who, &query.filters, query.filters.sort, offset, query.limit, |r| sums.add(r));
    let end = offset.min(total) + rows.len();
    let next_cursor = if end < total {
        let id = match listing {
            Some(id) => id,
            None => state.cursors.keep(Listing {
                made: Instant::now(),
                owner: owner_of(&who),
                key: query.key.clone(),
                snapshot: snapshot.clone(),
            }),
        };
        Some(format!("{id}.{end}"))
    } else {
        None
    };
    let accounts = objects(&snapshot, &rows);
    let mut body = json!({
        "as_of": snapshot.now.map(format_rfc3339),
        "accounts": accounts,
        "total": total,
        "next_cursor": next_cursor,
    });
    if !query.sums.is_empty() {
        body["sums"] = sums.to_json();
    }
    Ok(axum::Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_bounds_compare_exactly_at_any_precision() {
        let m = Money::parse("arr_min", "1234.5").unwrap();
        assert!(m.cmp_cents(123_450).is_eq());
        assert!(m.cmp_cents(123_449).is_lt());
        let m = Money::parse("arr_min", "0.001").unwrap();
        assert!(m.cmp_cents(0).is_lt() && m.cmp_cents(1).is_gt());
        assert!(Money::parse("arr_min", "25000").unwrap().cmp_cents(2_500_000).is_eq());
        for bad in ["", ".", "1e5", "12,5", "abc", "--1"] {
            assert!(Money::parse("arr_min", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn histograms_place_values_exactly() {
        use crate::exact::Ratio;
        let cents = |c: &[i64]| c.iter().map(|&c| Exact::from(Ratio::of(c, 100))).collect::<Vec<_>>();
        // 0.00 .. 3.00 in 3 buckets: 1.00 is the second's first value, 3.00 the last's.
        let b = histogram(&cents(&[0, 99, 100, 199, 200, 300]), 3, false);
        assert_eq!(b.iter().map(|b| b.count).collect::<Vec<_>>(), [2, 2, 2]);
        assert_eq!((b[1].from, b[1].to), (1.0, 2.0));
        // Thirds are not exact in binary: 1/3 falls in the second of 3 over [0, 1].
        let thirds = vec![Exact::from(Ratio::new(0, 1)), Exact::from(Ratio::new(1, 3)), Exact::from(Ratio::new(1, 1))];
        assert_eq!(histogram(&thirds, 3, false).iter().map(|b| b.count).collect::<Vec<_>>(), [1, 1, 1]);
        // Whole numbers 0..=10 in 4 buckets: width 3, [0,3) [3,6) [6,9) [9,12).
        let whole: Vec<Exact> = (0..=10).map(|i| Exact::from(Ratio::int(i))).collect();
        let b = histogram(&whole, 4, true);
        assert_eq!(
            b.iter().map(|b| (b.from, b.to, b.count)).collect::<Vec<_>>(),
            [(0.0, 3.0, 3), (3.0, 6.0, 3), (6.0, 9.0, 3), (9.0, 12.0, 2)]
        );
        assert_eq!(histogram(&cents(&[5, 5]), 10, false), [Bucket { from: 0.05, to: 0.05, count: 2 }]);
        assert!(histogram(&[], 10, false).is_empty());
    }

    #[test]
    fn a_bad_parameter_is_named() {
        let msg = |q: &str| match parse_query(Some(q)) {
            Ok(_) => panic!("accepted {q}"),
            Err(e) => e.message,
        };
        assert!(msg("colour=red").contains("\"colour\""));
        assert!(msg("tier=purple").contains("tier=purple"));
        assert!(msg("alert=loud").contains("alert=loud"));
        assert!(msg("segment=a&segment=b").contains("more than once"));
        assert!(msg("renewal_within=12h").contains("whole number of days"));
        assert!(msg("sort=-health.nope").contains("sort=-health.nope"));
        assert!(msg("limit=0").contains("between 1 and 1000"));
        assert!(msg("limit=1001").contains("between 1 and 1000"));
        let q =
            parse_query(Some("tier=red&tier=yellow&alert=any&renewal_within=90d&sort=-revenue.arr&limit=5")).unwrap();
        assert_eq!(q.filters.tiers, [Tier::Red, Tier::Yellow]);
        assert_eq!(q.filters.renewal_within, Some(90));
        assert_eq!(q.limit, 5);
        assert_eq!(q.key, "alert=any&renewal_within=90d&sort=-revenue.arr&tier=red&tier=yellow");
    }
}
