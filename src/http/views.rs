//! `GET|PUT|DELETE /api/v1/views[/{name}]` (SPEC §19): saved views, per
//! subject, in the history store.
//!
//! A view is `{name, page, filters, columns, sort, pinned, wall,
//! updated_at}`. It is configuration, never data: whoever loads it reads
//! the figures with their own token, so a view cannot widen what anyone
//! sees. Still, a role may only save a page it can read (a csm: its own
//! book and the accounts list; an analyst: no books), a csm's filters may
//! only name its own book, and only the executive and manager pages (what
//! a wall display shows) may be marked `wall`. A wall token lists and loads
//! the wall views (of any subject) and changes nothing. Filters, columns
//! are checked as the accounts list checks them, and so is the sort of the
//! accounts and book pages (the scope pages sort by a KPI path), so a
//! saved view always loads.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, TokenQuery, principal};
use crate::auth::{Principal, Role};
use crate::history::store::HistoryStore;
use crate::history::views::{NewView, PutError};
use crate::metric::ACCOUNT;

/// The pages a view may show.
const PAGES: &[&str] = &["executive", "manager", "analyst", "book", "accounts"];
/// The filters a view may keep besides the accounts list's.
const PERIODS: &[&str] = &["day", "week", "month", "quarter", "year"];
const LIST_FILTERS: &[&str] =
    &["segment", "region", "csm_id", "tier", "arr_min", "arr_max", "renewal_within", "alert", "q"];
const MAX_COLUMNS: usize = 64;
const MAX_NAME: usize = 64;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

fn store(state: &AppState) -> Result<&HistoryStore, ApiError> {
    state.history.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "saved views are kept in the history store, which is off",
        )
    })
}

fn unavailable(e: sqlx::Error) -> ApiError {
    super::history::history_unavailable(e)
}

/// A view as written in a `PUT` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewBody {
    name: Option<String>,
    page: String,
    #[serde(default)]
    filters: Map<String, Value>,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    pinned: bool,
    #[serde(default)]
    wall: bool,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME || name.trim() != name || name.chars().any(char::is_control) {
        return Err(bad(format!(
            "view name {name:?}: 1 to {MAX_NAME} characters, no control characters or surrounding spaces"
        )));
    }
    Ok(())
}

/// Whether `who` may see `page` with a book filter `csm_id`.
fn may_see_page(who: &Principal, page: &str, csm_id: Option<&str>) -> Result<(), ApiError> {
    let allowed = match who.role {
        Role::Executive | Role::Manager => true,
        Role::Analyst => page != "book",
        Role::Csm => matches!(page, "book" | "accounts") && csm_id.is_none_or(|c| Some(c) == who.csm_id.as_deref()),
        Role::Wall => matches!(page, "executive" | "manager"),
    };
    if allowed {
        Ok(())
    } else if who.role == Role::Csm && matches!(page, "book" | "accounts") {
        Err(forbidden("a csm's view may only show its own book (filters.csm_id)"))
    } else {
        Err(forbidden(format!("role {} may not see page {page}", who.role.as_str())))
    }
}

/// The filters of a view, checked and written the one way: `tier` and
/// `alert` as lists, numbers as given, `period` one of the periods.
fn filters_of(given: Map<String, Value>) -> Result<(Map<String, Value>, String), ApiError> {
    let mut out = Map::new();
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in given {
        if key == "period" {
            match value.as_str() {
                Some(p) if PERIODS.contains(&p) => out.insert(key, value),
                _ => return Err(bad(format!("filters.period={value}: one of {}", PERIODS.join(", ")))),
            };
            continue;
        }
        if !LIST_FILTERS.contains(&key.as_str()) {
            return Err(bad(format!("filters.{key}: not a filter (filters: {}, period)", LIST_FILTERS.join(", "))));
        }
        let repeats = matches!(key.as_str(), "tier" | "alert");
        let texts: Vec<String> = match (&value, repeats) {
            (Value::Array(items), true) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| bad(format!("filters.{key}: a list of strings"))))
                .collect::<Result<_, _>>()?,
            (Value::String(s), _) => vec![s.clone()],
            (Value::Number(n), false) if key.starts_with("arr_") || key.starts_with("score_") => vec![n.to_string()],
            _ => return Err(bad(format!("filters.{key}={value}: not a value of this filter"))),
        };
        for t in &texts {
            query.append_pair(&key, t);
        }
        out.insert(key, if repeats { json!(texts) } else { value });
    }
    Ok((out, query.finish()))
}

fn check_columns(columns: &[String]) -> Result<(), ApiError> {
    if columns.len() > MAX_COLUMNS {
        return Err(bad(format!("columns: at most {MAX_COLUMNS}")));
    }
    for c in columns {
        if c != "account_id" && c != "health.rank" && !ACCOUNT.iter().any(|m| m.path == c) {
            return Err(bad(format!("columns: {c:?} is not a field of the account object")));
        }
    }
    Ok(())
}

/// The sort of a page of scope tables: a KPI path (§3.2), the
/// improvement rate, or a table's key, `-` for descending.
fn check_scope_sort(sort: &str) -> Result<(), ApiError> {
    let path = sort.strip_prefix('-').unwrap_or(sort);
    let known = crate::metric::KPI.iter().any(|m| m.path == path)
        || matches!(path, "health.improvement_rate" | "csm_id" | "segment" | "region");
    if known {
        Ok(())
    } else {
        Err(bad(format!(
            "sort={sort}: a scope page sorts by a KPI path (e.g. -health.at_risk_arr), health.improvement_rate, \
             csm_id, segment or region"
        )))
    }
}

/// Whether `who` may still load `view` (a view saved under another role
/// of the same subject is not shown).
fn loadable(who: &Principal, view: &Value) -> bool {
    let page = view["page"].as_str().unwrap_or_default();
    may_see_page(who, page, view["filters"]["csm_id"].as_str()).is_ok()
}

/// `GET /api/v1/views`: the caller's views (a wall token: the wall views).
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query?;
    let who = principal(&state, &headers, &query)?;
    let store = store(&state)?;
    let views = if who.role == Role::Wall { store.wall_views().await } else { store.views(&who.sub).await };
    let views: Vec<Value> = views.map_err(unavailable)?.into_iter().filter(|v| loadable(&who, v)).collect();
    Ok(Json(json!({ "views": views })))
}

/// `GET /api/v1/views/{name}`.
pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (Path(name), Query(query)) = (path?, query?);
    let who = principal(&state, &headers, &query)?;
    let store = store(&state)?;
    let view = if who.role == Role::Wall { store.wall_view(&name).await } else { store.view(&who.sub, &name).await };
    match view.map_err(unavailable)? {
        Some(v) if loadable(&who, &v) => Ok(Json(v)),
        _ => Err(ApiError::not_found("view")),
    }
}

/// `PUT /api/v1/views/{name}`: keeps the view (201 when new, else 200).
pub async fn put(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
    body: Result<Json<ViewBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (Path(name), Query(query)) = (path?, query?);
    let who = principal(&state, &headers, &query)?;
    if who.role == Role::Wall {
        return Err(forbidden("role wall may load wall views, not change them"));
    }
    // A body that is JSON but not a view is a bad request like any other.
    let Json(body) = body.map_err(|e| match e {
        JsonRejection::JsonDataError(e) => bad(e.body_text()),
        other => ApiError::from(other),
    })?;
    check_name(&name)?;
    if body.name.as_deref().is_some_and(|n| n != name) {
        return Err(bad(format!("name {:?} differs from the view's name in the path {name:?}", body.name)));
    }
    if !PAGES.contains(&body.page.as_str()) {
        return Err(bad(format!("page={}: one of {}", body.page, PAGES.join(", "))));
    }
    let (mut filters, mut list_query) = filters_of(body.filters)?;
    if body.page == "book" && !filters.contains_key("csm_id") {
        match (&who.csm_id, who.role) {
            (Some(own), Role::Csm) => {
                filters.insert("csm_id".into(), json!(own));
            }
            _ => return Err(bad("filters.csm_id: a book view names the csm whose book it shows")),
        }
    }
    may_see_page(&who, &body.page, filters.get("csm_id").and_then(Value::as_str))?;
    if body.wall && !matches!(body.page.as_str(), "executive" | "manager") {
        return Err(bad(format!("wall: only executive and manager views may be shown on a wall, not {}", body.page)));
    }
    check_columns(&body.columns)?;
    match &body.sort {
        Some(sort) if matches!(body.page.as_str(), "executive" | "manager" | "analyst") => check_scope_sort(sort)?,
        Some(sort) => {
            if !list_query.is_empty() {
                list_query.push('&');
            }
            list_query.push_str(&form_urlencoded::Serializer::new(String::new()).append_pair("sort", sort).finish());
        }
        None => {}
    }
    super::accounts::check_query(&list_query).map_err(|e| bad(format!("filters and sort: {}", e.message)))?;
    let now = crate::time::wall_now();
    let view = json!({
        "name": name,
        "page": body.page,
        "filters": filters,
        "columns": body.columns,
        "sort": body.sort,
        "pinned": body.pinned,
        "wall": body.wall,
        "updated_at": crate::time::format_rfc3339(now),
    });
    let new = NewView {
        subject: &who.sub,
        name: &name,
        page: &body.page,
        wall: body.wall,
        pinned: body.pinned,
        view: &view,
        updated_at: now,
    };
    let created = match store(&state)?.put_view(&new).await {
        Ok(created) => created,
        Err(PutError::Store(e)) => return Err(unavailable(e)),
        Err(e @ PutError::WallNameTaken(_)) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()));
        }
        Err(e @ PutError::TooMany) => return Err(bad(e.to_string())),
    };
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view)).into_response())
}

/// `DELETE /api/v1/views/{name}`: 204, or 404.
pub async fn delete(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let (Path(name), Query(query)) = (path?, query?);
    let who = principal(&state, &headers, &query)?;
    if who.role == Role::Wall {
        return Err(forbidden("role wall may load wall views, not change them"));
    }
    if store(&state)?.delete_view(&who.sub, &name).await.map_err(unavailable)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("view"))
    }
}
