//! The history endpoints (SPEC §15): a channel's KPI objects over time, an
//! account's daily rows and logs, period comparisons with the improvement
//! rate, and targets against actuals. Access is the channels' (§6.2): a
//! csm reads only its own book, now. `Accept: text/csv` on the two history
//! endpoints answers one row per point and scope (or per day).

use std::collections::{BTreeMap, HashMap};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, TokenQuery, principal, readable_channel};
use crate::history::store::{DayStart, HistoryStore, StartAccount};
use crate::metric::{KPI, Unit, insert_at};
use crate::state::log::{DAY_FIELDS, ScopeKind as K, write_kpi_json};
use crate::state::snapshot::Snapshot;
use crate::state::view::Channel;
use crate::time::{MICROS_PER_DAY, MICROS_PER_MIN, Ts, format_rfc3339, months_back, parse_rfc3339};

/// The query of the history endpoints (`step` and `fields`: the channel
/// history only).
#[derive(Deserialize)]
pub struct HistoryQuery {
    token: Option<String>,
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
    fields: Option<String>,
}

#[derive(Deserialize)]
pub struct AuditQuery {
    token: Option<String>,
    from: Option<String>,
    to: Option<String>,
    subject: Option<String>,
    limit: Option<i64>,
}

#[derive(Deserialize)]
pub struct CompareQuery {
    token: Option<String>,
    period: Option<String>,
    fields: Option<String>,
}

/// The most points one history answer holds (SPEC §15).
const MAX_POINTS: i64 = 10_000;

/// The compare field that is not a KPI figure.
const IMPROVEMENT_RATE: &str = "health.improvement_rate";

pub(super) fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// An RFC 3339 instant of a history request's `name` parameter.
fn instant(name: &'static str, v: &str) -> Result<Ts, ApiError> {
    parse_rfc3339(v).ok_or_else(|| bad_request(format!("{name}: {v:?} is not an RFC 3339 instant")))
}

/// `from`/`to` of a history request, `from` not after `to`: an absent
/// `to` is `default_to`, an absent `from` is `default_from(to)`.
pub(super) fn range(
    from: Option<&str>,
    to: Option<&str>,
    default_to: Ts,
    default_from: impl Fn(Ts) -> Ts,
) -> Result<(Ts, Ts), ApiError> {
    let to = to.map_or(Ok(default_to), |v| instant("to", v))?;
    let from = from.map_or(Ok(default_from(to)), |v| instant("from", v))?;
    if from > to {
        return Err(bad_request("from is after to".into()));
    }
    Ok((from, to))
}

/// The history store, or the answer that history is off.
pub(super) fn history_store(state: &AppState) -> Result<&HistoryStore, ApiError> {
    state.history.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "history_off", "history is off (history.store = \"off\")")
    })
}

/// A history query that failed: logged, answered without internals.
pub(super) fn history_unavailable(e: sqlx::Error) -> ApiError {
    tracing::warn!(error = %e, "history query failed");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "history_unavailable", "the history store cannot be read now")
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/csv"))
}

/// `rows` as a CSV answer (RFC 4180) named `name`.
pub(super) fn csv_response(name: &str, header_row: &[&str], rows: &[Vec<Value>]) -> Result<Response, ApiError> {
    let table = crate::export::Table {
        name: name.to_owned(),
        columns: header_row.iter().map(|h| crate::export::Column::text(h)).collect(),
        rows: rows.to_vec(),
    };
    let body = crate::export::csv(&table)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the CSV could not be written"))?;
    let disposition = format!("attachment; filename=\"{}.csv\"", crate::export::file_part(name));
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        body,
    )
        .into_response())
}

pub(super) use crate::export::at_path;

/// `GET /api/v1/accounts/{id}/history` (SPEC §15): the account's daily
/// rows, tier changes and alert transitions in [from, to] (absent bounds:
/// all of them), for whoever may see the account now (a csm: only while it
/// is in the csm's book).
pub async fn account_history(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (Path(account_id), Query(query)) = (path?, query?);
    let who = principal(&state, &headers, &TokenQuery { token: query.token.clone() })?;
    match state.shared.snapshot().account_owner(&account_id) {
        Some(owner) if who.may_see_account(owner) => {}
        _ => return Err(ApiError::not_found("account")),
    }
    let (from, to) = range(query.from.as_deref(), query.to.as_deref(), i64::MAX, |_| i64::MIN)?;
    let store = history_store(&state)?;
    let days = store.account_days(&account_id, from, to).await.map_err(history_unavailable)?;
    if wants_csv(&headers) {
        let paths: Vec<&str> = DAY_FIELDS.into_iter().chain(crate::metric::ACCOUNT.iter().map(|m| m.path)).collect();
        let rows: Vec<Vec<Value>> = days
            .iter()
            .map(|(at, account)| {
                [json!(format_rfc3339(*at)), json!(account_id)]
                    .into_iter()
                    .chain(paths.iter().map(|p| at_path(account, p).clone()))
                    .collect()
            })
            .collect();
        let header_row: Vec<&str> = ["at", "account_id"].into_iter().chain(paths.iter().copied()).collect();
        return csv_response(&format!("{account_id}-history"), &header_row, &rows);
    }
    let tier_changes = store.tier_changes(&account_id, from, to).await.map_err(history_unavailable)?;
    let alerts = store.account_alerts(&account_id, from, to).await.map_err(history_unavailable)?;
    let days: Vec<Value> =
        days.into_iter().map(|(at, account)| json!({"at": format_rfc3339(at), "account": account})).collect();
    Ok(axum::Json(json!({
        "account_id": account_id,
        "days": days,
        "tier_changes": tier_changes,
        "alerts": alerts,
    }))
    .into_response())
}

/// The scopes a channel's history shows: (key in the channel's data, scope
/// kind, the one scope it shows, or `None`: a map of every scope of the kind).
fn parts(channel: &Channel) -> Vec<(&'static str, K, Option<&str>)> {
    match channel {
        Channel::Executive => vec![("portfolio", K::Portfolio, Some("portfolio")), ("segments", K::Segment, None)],
        Channel::Manager => vec![("csms", K::Csm, None), ("unassigned", K::Unassigned, Some("unassigned"))],
        Channel::Analyst => vec![
            ("portfolio", K::Portfolio, Some("portfolio")),
            ("segments", K::Segment, None),
            ("regions", K::Region, None),
        ],
        Channel::Csm(id) => vec![("kpis", K::Csm, Some(id.as_str()))],
    }
}

/// The `fields` of a request (dotted paths inside a KPI object, or a
/// section of them), checked against the catalogue; `extra` names more
/// fields the endpoint knows. `None`: every figure.
fn fields<'a>(fields: Option<&'a str>, extra: &[&str]) -> Result<Option<Vec<&'a str>>, ApiError> {
    let Some(list) = fields else { return Ok(None) };
    let list: Vec<&str> = list.split(',').map(str::trim).filter(|f| !f.is_empty()).collect();
    let known = |f: &str| {
        let under = |path: &str| path == f || path.strip_prefix(f).is_some_and(|rest| rest.starts_with('.'));
        KPI.iter().any(|m| under(m.path)) || extra.iter().any(|p| under(p))
    };
    if let Some(unknown) = list.iter().find(|f| !known(f)) {
        return Err(bad_request(format!("fields: {unknown:?} is not a figure of the KPI object")));
    }
    Ok(Some(list))
}

/// The KPI figures (paths and units) that `fields` selects.
fn selected(fields: Option<&[&str]>) -> Vec<(&'static str, Unit)> {
    KPI.iter()
        .filter(|m| {
            fields.is_none_or(|f| {
                f.iter().any(|f| m.path == *f || m.path.strip_prefix(f).is_some_and(|r| r.starts_with('.')))
            })
        })
        .map(|m| (m.path, m.unit))
        .collect()
}

/// A KPI object restricted to `paths`.
fn restrict(kpi: &Value, paths: &[(&str, Unit)]) -> Value {
    let mut out = Map::new();
    for (path, _) in paths {
        insert_at(&mut out, path, at_path(kpi, path).clone());
    }
    Value::Object(out)
}

/// The step of a channel history request.
fn step(step: Option<&str>) -> Result<(&'static str, i64), ApiError> {
    match step.unwrap_or("5m") {
        "5m" => Ok(("5m", 5 * MICROS_PER_MIN)),
        "1h" => Ok(("1h", 60 * MICROS_PER_MIN)),
        "1d" => Ok(("1d", MICROS_PER_DAY)),
        other => Err(bad_request(format!("step={other}: one of 5m, 1h, 1d"))),
    }
}

/// `GET /api/v1/history/{channel}?from=&to=&step=5m|1h|1d&fields=` (SPEC
/// §15): the channel's KPI objects at every multiple of `step` in [from,
/// to] (`to` defaults to the latest watermark, `from` to a day before it),
/// optionally only the `fields` (dotted paths inside a KPI object), with
/// the channel's access rules.
pub async fn channel_history(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (Path(name), Query(query)) = (path?, query?);
    let who = principal(&state, &headers, &TokenQuery { token: query.token.clone() })?;
    let channel = readable_channel(&who, &name)?;
    let (step_name, step) = step(query.step.as_deref())?;
    let now = state.shared.snapshot().now.unwrap_or(0);
    let (from, to) = range(query.from.as_deref(), query.to.as_deref(), now, |to| to.saturating_sub(MICROS_PER_DAY))?;
    let points = (to.div_euclid(step) - (from + step - 1).div_euclid(step)) + 1;
    if points > MAX_POINTS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_many_points",
            format!(
                "{points} points of {step_name} in that range (at most {MAX_POINTS}): narrow the range or coarsen the step"
            ),
        ));
    }
    let fields = fields(query.fields.as_deref(), &[])?;
    let paths = selected(fields.as_deref());
    let store = history_store(&state)?;
    let csv = wants_csv(&headers);
    let gaps: Vec<Value> = store
        .gaps(from, to)
        .await
        .map_err(history_unavailable)?
        .into_iter()
        .map(|(a, b)| json!({"from": format_rfc3339(a), "to": format_rfc3339(b)}))
        .collect();
    if !csv && fields.is_none() {
        // Whole KPI objects: written as text from the stored figures (a
        // 90-day hourly answer of the executive channel holds 8,640).
        let mut by_at: BTreeMap<Ts, Vec<PartRow<'_>>> = BTreeMap::new();
        for (key, kind, one) in parts(&channel) {
            for (scope_id, at, values) in
                store.scope_values(kind, one, (from, to, step)).await.map_err(history_unavailable)?
            {
                by_at.entry(at).or_default().push((key, one.is_none().then_some(scope_id), values));
            }
        }
        let text = history_text(&channel.to_string(), step_name, by_at, &Value::Array(gaps));
        return Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], text).into_response());
    }
    let mut by_at: BTreeMap<Ts, Map<String, Value>> = BTreeMap::new();
    let mut csv_rows: Vec<Vec<Value>> = Vec::new();
    for (key, kind, one) in parts(&channel) {
        for (scope_id, at, kpi) in store.scope_rows(kind, one, (from, to, step)).await.map_err(history_unavailable)? {
            if csv {
                let head = [json!(format_rfc3339(at)), json!(kind.as_str()), json!(scope_id)];
                csv_rows.push(head.into_iter().chain(paths.iter().map(|(p, _)| at_path(&kpi, p).clone())).collect());
                continue;
            }
            let data = by_at.entry(at).or_default();
            let kpi = if fields.is_some() { restrict(&kpi, &paths) } else { kpi };
            if one.is_some() {
                data.insert(key.to_owned(), kpi);
            } else {
                let map = data.entry(key.to_owned()).or_insert_with(|| json!({}));
                map[scope_id] = kpi;
            }
        }
    }
    if csv {
        // By boundary, then scope, as the JSON lists them.
        csv_rows.sort_by(|a, b| {
            (a[0].as_str(), a[1].as_str(), a[2].as_str()).cmp(&(b[0].as_str(), b[1].as_str(), b[2].as_str()))
        });
        let header_row: Vec<&str> = ["at", "scope", "id"].into_iter().chain(paths.iter().map(|(p, _)| *p)).collect();
        return csv_response(&format!("{}-history", channel.to_string().replace(':', "-")), &header_row, &csv_rows);
    }
    let points: Vec<Value> =
        by_at.into_iter().map(|(at, data)| json!({"at": format_rfc3339(at), "data": data})).collect();
    Ok(axum::Json(json!({"channel": channel.to_string(), "step": step_name, "points": points, "gaps": gaps}))
        .into_response())
}

/// A scope row of a channel's part: the part's key, the scope id (for the
/// parts that list scopes by id) and the figures.
type PartRow<'a> = (&'a str, Option<String>, Vec<Option<f64>>);

/// The text of a history answer (the shape `channel_history` builds as
/// JSON with `fields`): per boundary, each part's KPI object, or its
/// objects by scope id.
fn history_text(channel: &str, step: &str, by_at: BTreeMap<Ts, Vec<PartRow<'_>>>, gaps: &Value) -> String {
    let quoted = |s: &str| Value::from(s).to_string();
    let mut out = String::with_capacity(by_at.len() * 1024);
    out.push_str(&format!("{{\"channel\":{},\"step\":{},\"points\":[", quoted(channel), quoted(step)));
    for (n, (at, mut scopes)) in by_at.into_iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&format!("{{\"at\":\"{}\",\"data\":{{", format_rfc3339(at)));
        scopes.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        // The part whose object of scopes by id is open.
        let mut open: Option<&str> = None;
        for (i, (key, scope_id, values)) in scopes.iter().enumerate() {
            if scope_id.is_some() && open == Some(*key) {
                out.push(',');
            } else {
                if open.take().is_some() {
                    out.push('}');
                }
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&quoted(key));
                out.push(':');
                if scope_id.is_some() {
                    out.push('{');
                    open = Some(key);
                }
            }
            if let Some(id) = scope_id {
                out.push_str(&quoted(id));
                out.push(':');
            }
            write_kpi_json(values, &mut out);
        }
        if open.is_some() {
            out.push('}');
        }
        out.push_str("}}");
    }
    out.push_str(&format!("],\"gaps\":{gaps}}}"));
    out
}

/// The live KPI objects of a kind of scope (or of the one scope `one`), by id.
fn live_scopes(snapshot: &Snapshot, kind: K, one: Option<&str>) -> Vec<(String, Value)> {
    let of = |kpis: &crate::state::snapshot::Kpis| -> Vec<(String, Value)> {
        match one {
            Some(id) => kpis.get(id).map(|r| vec![(id.to_owned(), Value::clone(r))]).unwrap_or_default(),
            None => kpis.iter().map(|(id, r)| (id.to_string(), Value::clone(r))).collect(),
        }
    };
    match kind {
        K::Portfolio => vec![("portfolio".into(), Value::clone(snapshot.portfolio()))],
        K::Unassigned => vec![("unassigned".into(), Value::clone(snapshot.unassigned()))],
        K::Segment => of(snapshot.segments()),
        K::Region => of(snapshot.regions()),
        K::Csm => of(snapshot.csms()),
    }
}

/// `now − then`, and its ratio to `then` (null when `then` is 0 or null);
/// money to the cent, counts whole.
fn change(now: &Value, then: &Value, unit: Unit) -> Value {
    let (n, t) = (now.as_f64(), then.as_f64());
    let diff = match (n, t) {
        (Some(n), Some(t)) => Some(match unit {
            Unit::Money => ((n - t) * 100.0).round() / 100.0,
            Unit::Count | Unit::Days => (n - t).round(),
            _ => n - t,
        }),
        _ => None,
    };
    let ratio = match (diff, t) {
        (Some(d), Some(t)) if t != 0.0 => Some(d / t),
        _ => None,
    };
    let shown = |v: Option<f64>| match (v, unit) {
        (Some(v), Unit::Count | Unit::Days) => json!(v as i64),
        (v, _) => json!(v),
    };
    json!({"now": now, "then": then, "change": shown(diff), "change_ratio": ratio})
}

/// The instant one `period` before `now` (SPEC §15 compare).
fn period_before(period: &str, now: Ts) -> Result<Ts, ApiError> {
    Ok(match period {
        "day" => now - MICROS_PER_DAY,
        "week" => now - 7 * MICROS_PER_DAY,
        "month" => months_back(now, 1),
        "quarter" => months_back(now, 3),
        "year" => months_back(now, 12),
        other => return Err(bad_request(format!("period={other}: one of day, week, month, quarter, year"))),
    })
}

/// The tiers ordered worst to best (`red` < `yellow` < `green`).
/// SPEC §15 `health.improvement_rate` of the scopes of a kind (of the one
/// scope `one`): among `start` (the accounts yellow or red at the period's
/// start, with their scopes then) those in the scope, the share whose tier
/// now is higher. `ups` holds, once computed, whether each of `start` is
/// higher now, for every part of a channel; each account's tier now is read
/// by its slot in the snapshot's numbering (resolved once per day and
/// numbering), not looked up by id.
fn improvements(
    snapshot: &Snapshot,
    start: &DayStart,
    (kind, one): (K, Option<&str>),
    ups: &mut Option<Vec<bool>>,
) -> HashMap<String, (u64, u64)> {
    let ups = ups.get_or_insert_with(|| {
        let slots = start.slots(snapshot.numbering(), |id| snapshot.record(id).map(|r| r.slot));
        start
            .accounts
            .iter()
            .zip(slots.iter())
            .map(|(a, slot)| {
                let now = match slot {
                    Some(slot) => snapshot.slot_tier(*slot),
                    // Not in the engine when resolved: perhaps since.
                    None => snapshot.record(&a.account_id).map(|r| r.metrics.tier()),
                };
                now.zip(a.tier).is_some_and(|(now, then)| now > then)
            })
            .collect()
    });
    let names: &[String] = match kind {
        K::Segment => &start.segments,
        K::Region => &start.regions,
        K::Csm => &start.csms,
        K::Portfolio | K::Unassigned => &[],
    };
    // The scope index of each account (`None`: not in a scope of the kind).
    let scope_of = |a: &StartAccount| match kind {
        K::Portfolio => Some(0),
        K::Unassigned => a.csm.is_none().then_some(0),
        K::Segment => Some(a.segment as usize),
        K::Region => Some(a.region as usize),
        K::Csm => a.csm.map(|c| c as usize),
    };
    let wanted = match (kind, one) {
        (K::Portfolio | K::Unassigned, _) | (_, None) => None,
        (_, Some(id)) => match names.iter().position(|n| n == id) {
            Some(i) => Some(i),
            None => return HashMap::new(),
        },
    };
    let mut tally = vec![(0u64, 0u64); names.len().max(1)];
    for (a, &up) in start.accounts.iter().zip(ups.iter()) {
        if let Some(i) = scope_of(a).filter(|&i| wanted.is_none_or(|w| w == i)) {
            tally[i].0 += 1;
            tally[i].1 += u64::from(up);
        }
    }
    let name = |i: usize| match kind {
        K::Portfolio => "portfolio",
        K::Unassigned => "unassigned",
        _ => names[i].as_str(),
    };
    tally.into_iter().enumerate().filter(|(_, t)| t.0 > 0).map(|(i, t)| (name(i).to_owned(), t)).collect()
}

fn improvement_json((accounts, improved): (u64, u64)) -> Value {
    let rate = (accounts > 0).then(|| improved as f64 / accounts as f64);
    json!({"rate": rate, "accounts": accounts, "improved": improved})
}

/// `GET /api/v1/compare/{channel}?period=day|week|month|quarter|year&fields=`
/// (SPEC §15): every figure of every scope of the channel now against the
/// latest boundary at or before the same instant one period earlier, and
/// each scope's improvement rate over that period.
pub async fn compare(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<CompareQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (Path(name), Query(query)) = (path?, query?);
    let who = principal(&state, &headers, &TokenQuery { token: query.token.clone() })?;
    let channel = readable_channel(&who, &name)?;
    let period = query.period.as_deref().unwrap_or("week");
    let fields = fields(query.fields.as_deref(), &[IMPROVEMENT_RATE])?;
    let paths = selected(fields.as_deref());
    let with_rate = fields.as_ref().is_none_or(|f| f.iter().any(|f| IMPROVEMENT_RATE.starts_with(f)));
    let store = history_store(&state)?;
    let snapshot = state.shared.snapshot();
    let now = snapshot.now;
    let earlier = now.map(|n| period_before(period, n)).transpose()?;
    let then_at = match earlier {
        Some(t) => store.latest_boundary(t).await.map_err(history_unavailable)?,
        None => None,
    };
    let start = match (earlier, with_rate) {
        (Some(t), true) => match store.latest_day(t).await.map_err(history_unavailable)? {
            Some(day) => store.not_green_at(day).await.map_err(history_unavailable)?,
            None => Default::default(),
        },
        _ => Default::default(),
    };
    let mut data = Map::new();
    let mut ups = None;
    for (key, kind, one) in parts(&channel) {
        let mut scopes: BTreeMap<String, (Value, Value)> = BTreeMap::new();
        for (id, kpi) in live_scopes(&snapshot, kind, one) {
            scopes.entry(id).or_insert((Value::Null, Value::Null)).0 = kpi;
        }
        if let Some(b) = then_at {
            for (id, _, kpi) in store.scope_rows(kind, one, (b, b, 1)).await.map_err(history_unavailable)? {
                scopes.entry(id).or_insert((Value::Null, Value::Null)).1 = kpi;
            }
        }
        let rates = if with_rate { improvements(&snapshot, &start, (kind, one), &mut ups) } else { HashMap::new() };
        let mut objects = Map::new();
        for (id, (now_kpi, then_kpi)) in scopes {
            let mut object = Map::new();
            for (path, unit) in &paths {
                insert_at(&mut object, path, change(at_path(&now_kpi, path), at_path(&then_kpi, path), *unit));
            }
            if with_rate {
                let tally = rates.get(&id).copied().unwrap_or_default();
                insert_at(&mut object, IMPROVEMENT_RATE, improvement_json(tally));
            }
            objects.insert(id, Value::Object(object));
        }
        match one {
            Some(id) => {
                data.insert(key.to_owned(), objects.remove(id).unwrap_or(Value::Null));
            }
            None => {
                data.insert(key.to_owned(), Value::Object(objects));
            }
        }
    }
    Ok(axum::Json(json!({
        "channel": channel.to_string(),
        "period": period,
        "now": now.map(format_rfc3339),
        "then": then_at.map(format_rfc3339),
        "data": data,
    }))
    .into_response())
}

/// The channel that shows a target's scope (who may read it may see the
/// target).
fn channel_of(kind: K, id: &str) -> Channel {
    match kind {
        K::Portfolio | K::Segment => Channel::Executive,
        K::Region => Channel::Analyst,
        K::Csm => Channel::Csm(id.to_owned()),
        K::Unassigned => Channel::Manager,
    }
}

/// `GET /api/v1/targets` (SPEC §15): each configured target the caller may
/// see, with its actual, projection and status in the current period, and
/// the previous period's outcome.
pub async fn targets(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let who = principal(&state, &headers, &query)?;
    let store = history_store(&state)?;
    let snapshot = state.shared.snapshot();
    let mut out = Vec::new();
    let targets = state.targets.load_full();
    for t in targets.iter().filter(|t| who.may_read(&channel_of(t.kind, &t.id))) {
        let Some(now) = snapshot.now else {
            out.push(json!({"name": t.name, "metric": t.path(), "scope": t.scope(), "period": t.period.as_str(),
                "op": t.op.as_str(), "value": t.value, "actual": null, "projected": null, "status": null}));
            continue;
        };
        let live = live_scopes(&snapshot, t.kind, Some(&t.id)).pop();
        let actual = live.and_then(|(_, kpi)| at_path(&kpi, t.path()).as_f64());
        let (from, _) = t.period.around(now);
        let start = store.scope_row_before(t.kind, &t.id, from).await.map_err(history_unavailable)?;
        let start = start.and_then(|kpi| at_path(&kpi, t.path()).as_f64());
        out.push(t.report(now, actual, start, start));
    }
    Ok(axum::Json(json!({"as_of": snapshot.now.map(format_rfc3339), "targets": out})).into_response())
}

/// Audit events one answer holds at most.
const MAX_AUDIT: i64 = 10_000;

/// `GET /api/v1/audit?from=&to=&subject=&limit=` (SPEC §18, executives):
/// the audit events in [from, to] (wall time; `to` defaults to now, `from`
/// to a day before `to`), of one `subject` if given, newest first, at most
/// `limit` (default 1,000, at most 10,000); `truncated` says more matched.
pub async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let who = principal(&state, &headers, &TokenQuery { token: query.token.clone() })?;
    if who.role != crate::auth::Role::Executive {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role {} may not read the audit trail (executives only)", who.role.as_str()),
        ));
    }
    let limit = query.limit.unwrap_or(1_000);
    if !(1..=MAX_AUDIT).contains(&limit) {
        return Err(bad_request(format!("limit={limit}: between 1 and {MAX_AUDIT}")));
    }
    let now = crate::time::wall_now();
    let (from, to) = range(query.from.as_deref(), query.to.as_deref(), now, |to| to.saturating_sub(MICROS_PER_DAY))?;
    let store = history_store(&state)?;
    let mut events =
        store.audit_events((from, to), query.subject.as_deref(), limit + 1).await.map_err(history_unavailable)?;
    let truncated = events.len() as i64 > limit;
    events.truncate(limit as usize);
    Ok(axum::Json(json!({"events": events, "truncated": truncated})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::generator::{Generator, Message, PortfolioSpec};
    use crate::history::store::DayTierRow;
    use crate::state::{Engine, Input, StateConfig};
    use crate::time::days;

    fn fold(engine: &mut Engine, msgs: &[Message], offset: &mut i64) {
        for m in msgs {
            engine.fold(&Input { topic: m.topic, partition: 0, offset: *offset, payload: &m.payload, wall: m.ts });
            *offset += 1;
        }
    }

    /// SPEC §15's definition, account by account, each looked up by id.
    fn by_definition(
        snapshot: &Snapshot,
        rows: &[DayTierRow],
        kind: K,
        one: Option<&str>,
    ) -> HashMap<String, (u64, u64)> {
        let mut tally: HashMap<String, (u64, u64)> = HashMap::new();
        for (id, csm, segment, region, tier) in rows {
            let scope = match kind {
                K::Portfolio => Some("portfolio"),
                K::Segment => Some(segment.as_str()),
                K::Region => Some(region.as_str()),
                K::Csm => csm.as_deref(),
                K::Unassigned => csm.is_none().then_some("unassigned"),
            };
            let Some(scope) = scope else { continue };
            if matches!(kind, K::Segment | K::Region | K::Csm) && one.is_some_and(|one| one != scope) {
                continue;
            }
            let then = ["red", "yellow", "green"].iter().position(|t| t == tier);
            let now = snapshot.record(id).map(|r| r.metrics.tier() as usize);
            let entry = tally.entry(scope.to_owned()).or_default();
            entry.0 += 1;
            entry.1 += u64::from(now.zip(then).is_some_and(|(now, then)| now > then));
        }
        tally
    }

    fn check(snapshot: &Snapshot, start: &DayStart, rows: &[DayTierRow]) {
        let mut ups = None;
        let cases = [
            (K::Portfolio, Some("portfolio")),
            (K::Segment, None),
            (K::Segment, Some("smb")),
            (K::Region, None),
            (K::Csm, None),
            (K::Csm, Some("csm-2")),
            (K::Csm, Some("csm-none")),
            (K::Unassigned, Some("unassigned")),
        ];
        for (kind, one) in cases {
            let got = improvements(snapshot, start, (kind, one), &mut ups);
            assert_eq!(got, by_definition(snapshot, rows, kind, one), "{kind:?} {one:?}");
        }
    }

    /// The rate read through slots and interned scopes equals the definition,
    /// on a full snapshot, on an incremental one after more events (the
    /// slots resolved once), and on another engine's numbering.
    #[test]
    fn improvement_by_slot_equals_the_definition() {
        let start_ts = crate::time::parse_rfc3339("2026-11-02T00:00:00Z").unwrap();
        let mut generator = Generator::new(PortfolioSpec { accounts: 120, csms: 6, users_per_account: 5, seed: 11 });
        let mut engine = Engine::new(StateConfig::default());
        let mut offset = 0;
        fold(&mut engine, &generator.backfill(start_ts, 2), &mut offset);
        let first = engine.publish();
        let tiers = ["red", "yellow", "blue"];
        let mut rows: Vec<DayTierRow> = first
            .records()
            .enumerate()
            .map(|(i, (id, _))| {
                let csm = (i % 5 != 0).then(|| format!("csm-{}", i % 4));
                let segment = ["enterprise", "smb"][i % 2].to_owned();
                (id.to_owned(), csm, segment, ["na", "emea", "apac"][i % 3].to_owned(), tiers[i % 3].to_owned())
            })
            .collect();
        rows.push(("not-in-the-engine".to_owned(), None, "smb".to_owned(), "na".to_owned(), "red".to_owned()));
        let start = DayStart::from_rows(rows.clone());
        check(&first, &start, &rows);

        fold(&mut engine, &generator.tick(start_ts, start_ts + days(3), 0.05), &mut offset);
        let later = engine.publish();
        for (_, r) in later.records() {
            assert_eq!(later.slot_tier(r.slot), Some(r.metrics.tier()), "{}", r.id);
        }
        let changed = first.records().filter(|(id, r)| later.record(id).unwrap().metrics.tier() != r.metrics.tier());
        assert!(changed.count() > 0, "three days move some tiers");
        check(&later, &start, &rows);

        let mut other = engine.clone();
        let theirs = other.publish();
        assert_ne!(theirs.numbering(), later.numbering());
        check(&theirs, &start, &rows);
    }
}
