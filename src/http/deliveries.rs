//! The delivery ledger over HTTP (SPEC §16): `GET /api/v1/deliveries` and
//! `POST /api/v1/deliveries/{id}/resend` for executives and managers, and
//! the unsubscribe links emails carry (no sign-in: the link is signed).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::history::{bad_request, history_store, history_unavailable, range};
use super::{ApiError, AppState, TokenQuery, principal};
use crate::auth::{Principal, Role};
use crate::delivery::message::escape;
use crate::time::{MICROS_PER_DAY, wall_now};

/// Rows one answer holds at most.
const MAX_ROWS: i64 = 10_000;
/// Resends of one message at most.
const MAX_RESENDS: u32 = 100;

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    token: Option<String>,
    status: Option<String>,
    kind: Option<String>,
    from: Option<String>,
    limit: Option<i64>,
}

fn may_manage(who: &Principal) -> Result<(), ApiError> {
    match who.role {
        Role::Executive | Role::Manager => Ok(()),
        other => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role {} may not see deliveries (executives and managers)", other.as_str()),
        )),
    }
}

fn delivery_service(state: &AppState) -> Result<&std::sync::Arc<crate::delivery::DeliveryService>, ApiError> {
    state.delivery.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "history_off",
            "delivery needs the history store (history.store = \"off\")",
        )
    })
}

/// `GET /api/v1/deliveries?status=&kind=&from=&limit=`: the ledger, newest
/// first, created at or after `from` (default: a day ago), at most `limit`
/// rows (default 1,000); `truncated` says more matched.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let who = principal(&state, &headers, &TokenQuery { token: q.token.clone() })?;
    may_manage(&who)?;
    const STATUSES: [&str; 5] = ["pending", "sent", "failed", "gave_up", "cancelled"];
    const KINDS: [&str; 3] = ["alert", "report", "digest"];
    if let Some(s) = q.status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(bad_request(format!("status={s}: one of {}", STATUSES.join(", "))));
    }
    if let Some(k) = q.kind.as_deref().filter(|k| !KINDS.contains(k)) {
        return Err(bad_request(format!("kind={k}: one of {}", KINDS.join(", "))));
    }
    let limit = q.limit.unwrap_or(1_000);
    if !(1..=MAX_ROWS).contains(&limit) {
        return Err(bad_request(format!("limit={limit}: between 1 and {MAX_ROWS}")));
    }
    let now = wall_now();
    let (from, _) = range(q.from.as_deref(), None, now, |to| to.saturating_sub(MICROS_PER_DAY))?;
    let store = history_store(&state)?;
    let mut rows =
        store.deliveries(q.status.as_deref(), q.kind.as_deref(), from, limit + 1).await.map_err(history_unavailable)?;
    let truncated = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let rows: Vec<_> = rows.iter().map(crate::delivery::to_json).collect();
    Ok(axum::Json(json!({"deliveries": rows, "truncated": truncated})).into_response())
}

/// `POST /api/v1/deliveries/{id}/resend`: the message again, as a new row
/// (`{id}_r{n}`) sent at once; the original keeps its status. Audited.
pub async fn resend(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (Path(id), Query(q)) = (path?, query?);
    let who = principal(&state, &headers, &q)?;
    may_manage(&who)?;
    let store = history_store(&state)?;
    let service = delivery_service(&state)?;
    let Some(original) = store.delivery(&id).await.map_err(history_unavailable)? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("delivery {id:?} not found")));
    };
    let base = original.id.split("_r").next().unwrap_or(&original.id).to_owned();
    let mut n = 1;
    while store.delivery(&format!("{base}_r{n}")).await.map_err(history_unavailable)?.is_some() {
        n += 1;
        if n > MAX_RESENDS {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "too_many_resends",
                format!("delivery {base} was resent {MAX_RESENDS} times already"),
            ));
        }
    }
    let source = crate::history::ledger::Delivery { id: base, ..original };
    let copy = crate::delivery::resend_of(&source, n, wall_now());
    store.add_delivery(&copy).await.map_err(history_unavailable)?;
    state.audit.record(&who, "resend", format!("delivery {}", source.id), "ok");
    service.wake.notify_one();
    let row = store.delivery(&copy.id).await.map_err(history_unavailable)?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"delivery": row.as_ref().map(crate::delivery::to_json)})))
        .into_response())
}

#[derive(Deserialize)]
pub struct UnsubscribeQuery {
    link: Option<String>,
}

fn page(status: StatusCode, title: &str, text: &str, form: Option<&str>) -> Response {
    let form = form
        .map(|link| {
            format!(
                "<form method=\"post\" action=\"/api/v1/unsubscribe?link={}\"><button type=\"submit\">Unsubscribe</button></form>",
                escape(link)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1><p>{}</p>{form}</body></html>",
        escape(text),
        t = escape(title)
    );
    (status, Html(body)).into_response()
}

/// The (person, route) of a request's link, or the page saying why not.
fn link_of(state: &AppState, q: &UnsubscribeQuery) -> Result<(String, String), Box<Response>> {
    let Some(service) = state.delivery.as_ref() else {
        return Err(Box::new(page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Delivery is off on this server.",
            None,
        )));
    };
    q.link.as_deref().and_then(|l| service.check_unsubscribe_token(l)).ok_or_else(|| {
        Box::new(page(
            StatusCode::BAD_REQUEST,
            "Invalid link",
            "This unsubscribe link is not valid (it may be cut short).",
            None,
        ))
    })
}

/// `GET /api/v1/unsubscribe?link=`: asks to confirm (mail scanners open
/// links; only the button, or a one-click POST, unsubscribes).
pub async fn unsubscribe_page(
    State(state): State<AppState>,
    query: Result<Query<UnsubscribeQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return page(StatusCode::BAD_REQUEST, "Invalid link", "This unsubscribe link is not valid.", None);
    };
    match link_of(&state, &q) {
        Ok((person, route)) => page(
            StatusCode::OK,
            "Unsubscribe",
            &format!("Stop the messages of route {route} to {person}?"),
            q.link.as_deref(),
        ),
        Err(r) => *r,
    }
}

/// `POST /api/v1/unsubscribe?link=` (the page's button, or RFC 8058's
/// one-click `List-Unsubscribe-Post`): recorded; no more messages of that
/// route are planned for that person.
pub async fn unsubscribe(
    State(state): State<AppState>,
    query: Result<Query<UnsubscribeQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return page(StatusCode::BAD_REQUEST, "Invalid link", "This unsubscribe link is not valid.", None);
    };
    let (person, route) = match link_of(&state, &q) {
        Ok(pair) => pair,
        Err(r) => return *r,
    };
    let (Some(store), Some(service)) = (state.history.as_ref(), state.delivery.as_ref()) else {
        return page(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", "Delivery is off on this server.", None);
    };
    match service.unsubscribe(store, &person, &route).await {
        Ok(()) => {
            let known = service.routing().person(&person).map(|p| (p.role, p.csm_id.clone()));
            let (role, csm_id) = known.unwrap_or((Role::Analyst, None));
            let who = Principal { sub: format!("person:{person}"), role, csm_id };
            state.audit.record(&who, "unsubscribe", format!("route {route}"), "ok");
            page(
                StatusCode::OK,
                "Unsubscribed",
                &format!("{person} no longer receives the messages of route {route}."),
                None,
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "recording an unsubscribe failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "The unsubscribe could not be recorded now; try again.",
                None,
            )
        }
    }
}
