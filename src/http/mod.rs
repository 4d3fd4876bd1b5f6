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

pub mod accounts;
pub mod assets;
mod deliveries;
pub mod exports;
mod history;
pub mod serve;
mod views;

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
    /// Authenticated requests are audit events (§18).
    pub audit: Arc<crate::audit::Audit>,
    /// The configured targets (§15), replaced whole by a reload.
    pub targets: Arc<arc_swap::ArcSwap<Vec<crate::history::targets::Target>>>,
    pub history_status: Arc<crate::history::writer::Status>,
    /// Delivery (§16; `None` with history off).
    pub delivery: Option<Arc<crate::delivery::DeliveryService>>,
    /// The sorted lists the accounts list's cursors page over (§19).
    pub cursors: Arc<accounts::Cursors>,
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
        409 => "conflict",
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
        .route("/api/v1/channels/{channel}/{file}", get(exports::channel_export))
        .route("/api/v1/accounts", get(accounts::list))
        .route("/api/v1/accounts/export.csv", get(accounts::export_csv))
        .route("/api/v1/accounts/export.xlsx", get(accounts::export_xlsx))
        .route("/api/v1/accounts/distribution", get(accounts::distribution))
        .route("/api/v1/accounts/{account_id}", get(account))
        .route("/api/v1/accounts/{account_id}/history", get(history::account_history))
        .route("/api/v1/history/{channel}", get(history::channel_history))
        .route("/api/v1/compare/{channel}", get(history::compare))
        .route("/api/v1/targets", get(history::targets))
        .route("/api/v1/audit", get(history::audit))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/views", get(views::list))
        .route("/api/v1/views/{name}", get(views::get).put(views::put).delete(views::delete))
        .route("/api/v1/deliveries", get(deliveries::list))
        .route("/api/v1/deliveries/{id}/resend", axum::routing::post(deliveries::resend))
        .route("/api/v1/unsubscribe", get(deliveries::unsubscribe_page).post(deliveries::unsubscribe))
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state.clone())
        .merge(more)
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(state, audit_requests))
}

/// Records every request made with a valid token as an audit event (§18):
/// `download` for a file answer (CSV, zip, XLSX), else `request`; the target is the method
/// and path (never the query, which may carry the token); the outcome `ok`
/// or the error code answered.
async fn audit_requests(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let token = Query::<TokenQuery>::try_from_uri(req.uri()).map(|Query(q)| q).unwrap_or_default();
    let presented = bearer(req.headers(), &token).filter(|t| !t.is_empty()).map(str::to_owned);
    let target = format!("{} {}", req.method(), req.uri().path());
    let res = next.run(req).await;
    if let Some(who) = presented.and_then(|t| state.auth.verify(Some(&t)).ok()) {
        let csv = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| exports::is_download(v.as_bytes()));
        let status = res.status();
        let outcome = if status.as_u16() < 400 { "ok" } else { code_for(status) };
        state.audit.record(&who, if csv { "download" } else { "request" }, target, outcome);
    }
    res
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
    let channel = readable_channel(&who, &name)?;
    let body = state.shared.snapshot().channel_json(&channel);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The channel `name`, if it exists and `who` may read it.
fn readable_channel(who: &Principal, name: &str) -> Result<Channel, ApiError> {
    let channel = Channel::parse(name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_channel", format!("no channel {name:?}")))?;
    if !who.may_read(&channel) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role {} may not read {channel}", who.role.as_str()),
        ));
    }
    Ok(channel)
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
