//! HTTP API (SPEC §7): health, readiness, metrics, channel snapshots and
//! account objects behind token auth with the access rules of §6.2. Every
//! error is JSON `{"error", "message"}` (§7, §18): handlers return
//! [`ApiError`], extractor rejections convert into it, and a last layer
//! rewrites any other error response (405, a rejection of an extractor taken
//! without `Result`) by its status. Connections are served by [`serve`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics::gauge;
use serde::Deserialize;
use serde_json::json;

use crate::alert::{Alert, Severity};
use crate::auth::{Auth, AuthError, Principal, Role};
use crate::checkpoint::CheckpointStatus;
use crate::ingest::Shared;
use crate::state::view::Channel;
use crate::telemetry;

pub mod assets;
pub mod serve;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
    pub auth: Arc<Auth>,
    /// `/readyz` threshold on the summed consumer lag.
    pub max_lag: u64,
    /// The checkpoint store, as shown in `/readyz`.
    pub store: String,
    pub checkpoints: Arc<CheckpointStatus>,
    /// The history store (`None` with `history.store = "off"`).
    pub history: Option<crate::history::store::HistoryStore>,
    pub history_status: Arc<crate::history::writer::Status>,
}

/// An error answered as `{"error": code, "message": …}`; never carries internals.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    fn not_found(what: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    /// The error for a bare status, with its standard reason as the message.
    pub fn for_status(status: StatusCode) -> Self {
        let message = status.canonical_reason().unwrap_or("error").to_lowercase();
        ApiError::new(status, code_for(status), message)
    }

    /// An extractor's rejection: its text describes what was wrong with the
    /// request (a 5xx rejection is our fault and says nothing more).
    fn rejected(status: StatusCode, text: String) -> Self {
        if status.is_server_error() {
            ApiError::for_status(status)
        } else {
            ApiError::new(status, code_for(status), text)
        }
    }
}

/// The `error` code for a status.
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        426 => "upgrade_required",
        429 => "rate_limited",
        431 => "headers_too_large",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "bad_request",
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::rejected(r.status(), r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::rejected(r.status(), r.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::rejected(r.status(), r.body_text())
    }
}

impl From<axum::extract::ws::rejection::WebSocketUpgradeRejection> for ApiError {
    fn from(r: axum::extract::ws::rejection::WebSocketUpgradeRejection) -> Self {
        ApiError::rejected(r.status(), r.body_text())
    }
}

/// The last layer: an error response that is not JSON already (axum's 405,
/// a rejection not taken as `Result`, a body limit) becomes the JSON error
/// of its status; `Allow`, `WWW-Authenticate`, `Retry-After` and
/// `Connection` are kept.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json =
        res.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let mut out = ApiError::for_status(status).into_response();
    for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER, header::CONNECTION] {
        if let Some(v) = res.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(json!({"error": self.code, "message": self.message}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        res
    }
}

#[derive(Deserialize, Default)]
pub struct TokenQuery {
    token: Option<String>,
}

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
pub struct AlertsQuery {
    token: Option<String>,
    state: Option<String>,
}

/// The bearer token from the `Authorization` header, else the `token` query
/// parameter (for browsers).
pub fn bearer<'a>(headers: &'a HeaderMap, query: &'a TokenQuery) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .or(query.token.as_deref())
}

fn principal(state: &AppState, headers: &HeaderMap, query: &TokenQuery) -> Result<Principal, ApiError> {
    Ok(state.auth.verify(bearer(headers, query))?)
}

/// The HTTP API, with `more` routes (the WebSocket endpoint, which the push
/// layer serves) under the same error handling.
pub fn router(state: AppState, more: Router) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/index.html", get(assets::index))
        .route("/assets/{*file}", get(assets::asset))
        .route("/api/v1", get(index))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/channels/{channel}", get(channel))
        .route("/api/v1/accounts/{account_id}", get(account))
        .route("/api/v1/accounts/{account_id}/history", get(account_history))
        .route("/api/v1/history/{channel}", get(channel_history))
        .route("/api/v1/alerts", get(alerts))
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state)
        .merge(more)
        .layer(axum::middleware::map_response(json_errors))
}

async fn index() -> Json<serde_json::Value> {
    Json(json!({
        "service": "cspulse",
        "version": env!("CARGO_PKG_VERSION"),
        "endpoints": ["/healthz", "/readyz", "/metrics", "/api/v1/channels/{channel}", "/api/v1/accounts/{account_id}", "/api/v1/alerts?state=firing"],
    }))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: status for anyone (load balancers, probes); the store
/// and the checkpoint error text only for a caller with a valid token, as
/// they describe internals (§18).
async fn readyz(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let detailed = state.auth.verify(bearer(&headers, &query)).is_ok();
    let restored = state.shared.restored.load(Ordering::SeqCst);
    let lag = state.shared.lag();
    let total = lag.total();
    let paused = state.shared.paused();
    let ready = restored && lag.known && total <= state.max_lag as i64 && paused.is_none();
    let mut body = json!({
        "ready": ready,
        "restored": restored,
        "ingestion_paused": paused,
        "partitions_assigned": lag.assigned,
        "lag_known": lag.known,
        "lag": total,
        "max_lag": state.max_lag,
        "checkpoint": {
            "age_seconds": state.checkpoints.age_seconds(),
            "consecutive_failures": state.checkpoints.failures.load(Ordering::Relaxed),
        },
        "history": {
            "enabled": state.history.is_some(),
            "pending_rows": state.history_status.pending.load(Ordering::Relaxed),
            "failing": state.history_status.failing().is_some(),
        },
    });
    if detailed {
        body["checkpoint"]["store"] = json!(state.store);
        body["checkpoint"]["error"] = json!(state.checkpoints.error());
        body["history"]["store"] = json!(state.history.as_ref().map(|h| h.describe()));
        body["history"]["error"] = json!(state.history_status.failing());
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    telemetry::export_fold_stats(&state.shared.snapshot());
    for (topic, partition, lag) in state.shared.lag().partitions {
        gauge!("cspulse_consumer_lag", "topic" => topic.default_name(), "partition" => partition.to_string())
            .set(lag as f64);
    }
    if let Some(age) = state.checkpoints.age_seconds() {
        gauge!("cspulse_checkpoint_age_seconds").set(age);
    }
    let body = telemetry::prometheus().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn channel(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (Path(name), Query(query)) = (path?, query?);
    let who = principal(&state, &headers, &query)?;
    let channel = Channel::parse(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_channel", format!("no channel {name:?}")))?;
    if !who.may_read(&channel) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role {} may not read {channel}", who.role.as_str()),
        ));
    }
    let body = state.shared.snapshot().channel_json(&channel);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /api/v1/alerts?state=firing`: the firing alerts the caller may see
/// (§7): everything for executive, manager and analyst; critical ones for
/// wall; a csm's own accounts and own csm scope.
async fn alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AlertsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query?;
    let token = TokenQuery { token: query.token };
    let who = principal(&state, &headers, &token)?;
    match query.state.as_deref() {
        None | Some("firing") => {}
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("state={other}: only state=firing is kept"),
            ));
        }
    }
    let snapshot = state.shared.snapshot();
    let visible: Vec<serde_json::Value> = snapshot
        .firing_alerts()
        .iter()
        .filter(|a| match who.role {
            Role::Executive | Role::Manager | Role::Analyst => true,
            Role::Wall => a.severity == Severity::Critical,
            Role::Csm => a.owner().is_some() && a.owner() == who.csm_id.as_deref(),
        })
        .map(Alert::to_json)
        .collect();
    Ok(Json(json!({ "alerts": visible })))
}

async fn account(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (Path(account_id), Query(query)) = (path?, query?);
    let who = principal(&state, &headers, &query)?;
    let snapshot = state.shared.snapshot();
    // An account outside the caller's book answers exactly like a missing one.
    match snapshot.account_owner(&account_id) {
        Some(owner) if who.may_see_account(owner) => {}
        _ => return Err(ApiError::not_found("account")),
    }
    let view = snapshot.account_view(&account_id).ok_or_else(|| ApiError::not_found("account"))?;
    Ok(Json(view))
}

/// An RFC 3339 instant of a history request's `name` parameter.
fn instant(name: &'static str, v: &str) -> Result<crate::time::Ts, ApiError> {
    crate::time::parse_rfc3339(v).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("{name}: {v:?} is not an RFC 3339 instant"))
    })
}

/// `from`/`to` of a history request, `from` not after `to`: an absent
/// `to` is `default_to`, an absent `from` is `default_from(to)`.
fn range(
    from: Option<&str>,
    to: Option<&str>,
    default_to: crate::time::Ts,
    default_from: impl Fn(crate::time::Ts) -> crate::time::Ts,
) -> Result<(crate::time::Ts, crate::time::Ts), ApiError> {
    let to = to.map_or(Ok(default_to), |v| instant("to", v))?;
    let from = from.map_or(Ok(default_from(to)), |v| instant("from", v))?;
    if from > to {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "from is after to"));
    }
    Ok((from, to))
}

/// The history store, or the answer that history is off.
fn history_store(state: &AppState) -> Result<&crate::history::store::HistoryStore, ApiError> {
    state.history.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "history_off", "history is off (history.store = \"off\")")
    })
}

/// A history query that failed: logged, answered without internals.
fn history_unavailable(e: sqlx::Error) -> ApiError {
    tracing::warn!(error = %e, "history query failed");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "history_unavailable", "the history store cannot be read now")
}

/// `GET /api/v1/accounts/{id}/history` (SPEC §15): the account's daily
/// rows, tier changes and alert transitions in [from, to] (absent bounds:
/// all of them), for whoever may see the account now (a csm: only while it
/// is in the csm's book).
async fn account_history(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (Path(account_id), Query(query)) = (path?, query?);
    let who = principal(&state, &headers, &TokenQuery { token: query.token.clone() })?;
    match state.shared.snapshot().account_owner(&account_id) {
        Some(owner) if who.may_see_account(owner) => {}
        _ => return Err(ApiError::not_found("account")),
    }
    let (from, to) = range(query.from.as_deref(), query.to.as_deref(), i64::MAX, |_| i64::MIN)?;
    let store = history_store(&state)?;
    let tier_changes = store.tier_changes(&account_id, from, to).await.map_err(history_unavailable)?;
    let alerts = store.account_alerts(&account_id, from, to).await.map_err(history_unavailable)?;
    let days: Vec<serde_json::Value> = store
        .account_days(&account_id, from, to)
        .await
        .map_err(history_unavailable)?
        .into_iter()
        .map(|(at, account)| json!({"at": crate::time::format_rfc3339(at), "account": account}))
        .collect();
    Ok(Json(json!({
        "account_id": account_id,
        "days": days,
        "tier_changes": tier_changes,
        "alerts": alerts,
    })))
}

/// The most points one history answer holds (SPEC §15).
const MAX_POINTS: i64 = 10_000;

/// `GET /api/v1/history/{channel}?from=&to=&step=5m|1h|1d&fields=` (SPEC
/// §15): the channel's KPI objects at every multiple of `step` in [from,
/// to] (`to` defaults to the latest watermark, `from` to a day before it),
/// optionally only the `fields` (dotted paths inside a KPI object), with
/// the channel's access rules.
async fn channel_history(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::state::log::ScopeKind as K;
    let (Path(name), Query(query)) = (path?, query?);
    let who = principal(&state, &headers, &TokenQuery { token: query.token.clone() })?;
    let channel = Channel::parse(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_channel", format!("no channel {name:?}")))?;
    if !who.may_read(&channel) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role {} may not read {channel}", who.role.as_str()),
        ));
    }
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let (step_name, step) = match query.step.as_deref().unwrap_or("5m") {
        "5m" => ("5m", 5 * crate::time::MICROS_PER_MIN),
        "1h" => ("1h", 60 * crate::time::MICROS_PER_MIN),
        "1d" => ("1d", crate::time::MICROS_PER_DAY),
        other => return Err(bad(format!("step={other}: one of 5m, 1h, 1d"))),
    };
    let now = state.shared.snapshot().now.unwrap_or(0);
    let (from, to) =
        range(query.from.as_deref(), query.to.as_deref(), now, |to| to.saturating_sub(crate::time::MICROS_PER_DAY))?;
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
    let fields: Option<Vec<&str>> =
        query.fields.as_deref().map(|f| f.split(',').map(str::trim).filter(|f| !f.is_empty()).collect());
    if let Some(unknown) = fields.iter().flatten().find(|f| crate::metric::KPI.iter().all(|m| !m.path.starts_with(**f)))
    {
        return Err(bad(format!("fields: {unknown:?} is not a figure of the KPI object")));
    }
    let store = history_store(&state)?;
    // (key in the channel's data, scope kind, the one scope it shows, or
    // `None`: a map of every scope of the kind)
    let parts: Vec<(&str, K, Option<&str>)> = match &channel {
        Channel::Executive => vec![("portfolio", K::Portfolio, Some("portfolio")), ("segments", K::Segment, None)],
        Channel::Manager => vec![("csms", K::Csm, None), ("unassigned", K::Unassigned, Some("unassigned"))],
        Channel::Analyst => vec![
            ("portfolio", K::Portfolio, Some("portfolio")),
            ("segments", K::Segment, None),
            ("regions", K::Region, None),
        ],
        Channel::Csm(id) => vec![("kpis", K::Csm, Some(id.as_str()))],
    };
    let restrict = |kpi: serde_json::Value| match &fields {
        None => kpi,
        Some(fields) => {
            let mut out = serde_json::Map::new();
            for f in fields {
                let v = f.split('.').fold(&kpi, |v, k| v.get(k).unwrap_or(&serde_json::Value::Null));
                crate::metric::insert_at(&mut out, f, v.clone());
            }
            serde_json::Value::Object(out)
        }
    };
    let mut by_at: std::collections::BTreeMap<i64, serde_json::Map<String, serde_json::Value>> = Default::default();
    for (key, kind, one) in parts {
        for (scope_id, at, kpi) in store.scope_rows(kind, one, (from, to, step)).await.map_err(history_unavailable)? {
            let data = by_at.entry(at).or_default();
            if one.is_some() {
                data.insert(key.to_owned(), restrict(kpi));
            } else {
                let map = data.entry(key.to_owned()).or_insert_with(|| json!({}));
                map[scope_id] = restrict(kpi);
            }
        }
    }
    let points: Vec<serde_json::Value> =
        by_at.into_iter().map(|(at, data)| json!({"at": crate::time::format_rfc3339(at), "data": data})).collect();
    let gaps: Vec<serde_json::Value> = store
        .gaps(from, to)
        .await
        .map_err(history_unavailable)?
        .into_iter()
        .map(|(a, b)| json!({"from": crate::time::format_rfc3339(a), "to": crate::time::format_rfc3339(b)}))
        .collect();
    Ok(Json(json!({"channel": channel.to_string(), "step": step_name, "points": points, "gaps": gaps})))
}
