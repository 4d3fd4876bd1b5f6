//! `GET /api/v1/channels/{channel}/export.csv|export.xlsx[?table=]` (SPEC
//! §19): a channel's tables as files, with the channel's access rules.
//!
//! The tables of a channel, read from one snapshot (the channel's REST
//! answer, so an export agrees with it at its `as_of`):
//!
//! | channel | tables |
//! | --- | --- |
//! | `executive` | `segments` |
//! | `manager` | `csms` (a row per CSM, then the unassigned with an empty `csm_id`) |
//! | `analyst` | `segments`, `regions`, `features` |
//! | `csm:<id>` | `accounts` (the book in its priority order, §3.4) |
//!
//! CSV is one file for one table (a channel with one, or `?table=`) and a
//! zip of `<table>.csv` for several; XLSX is one workbook, a sheet per
//! table. Files are written off the async workers.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, AppState, TokenQuery, principal, readable_channel};
use crate::export::{Column, ExportError, Table, file_part};
use crate::metric::{ACCOUNT, KPI};
use crate::state::view::Channel;

/// Which file an export answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Xlsx,
}

impl Format {
    /// The format a file name `export.<ext>` asks for.
    pub fn of_file(file: &str) -> Option<Format> {
        match file {
            "export.csv" => Some(Format::Csv),
            "export.xlsx" => Some(Format::Xlsx),
            _ => None,
        }
    }
}

pub const XLSX_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Whether a response's content type is one of the export files (for the
/// audit's `download` action).
pub fn is_download(content_type: &[u8]) -> bool {
    [b"text/csv".as_slice(), b"application/zip", XLSX_TYPE.as_bytes()].iter().any(|t| content_type.starts_with(t))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "an export could not be written");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the export could not be written")
}

/// `tables` as the file `format` asks for, named `<base>.<extension>`, written
/// on a blocking thread (an export of 100,000 accounts takes a while).
pub async fn respond(base: String, tables: Vec<Table>, format: Format) -> Result<Response, ApiError> {
    let written = tokio::task::spawn_blocking(move || -> Result<(String, &'static str, Vec<u8>), ExportError> {
        Ok(match (format, tables.as_slice()) {
            (Format::Csv, [one]) => (format!("{base}.csv"), "text/csv; charset=utf-8", crate::export::csv(one)?),
            (Format::Csv, several) => (format!("{base}.zip"), "application/zip", crate::export::csv_zip(several)?),
            (Format::Xlsx, all) => (format!("{base}.xlsx"), XLSX_TYPE, crate::export::xlsx(all)?),
        })
    })
    .await
    .map_err(internal)?;
    let (file, content_type, body) = written.map_err(internal)?;
    let disposition = format!("attachment; filename=\"{}\"", file_part(&file));
    Ok(([(header::CONTENT_TYPE, content_type.to_owned()), (header::CONTENT_DISPOSITION, disposition)], body)
        .into_response())
}

/// The key column and KPI paths of a table of scopes.
fn kpi_columns(key: &str) -> Vec<Column> {
    std::iter::once(Column::text(key)).chain(KPI.iter().map(|m| Column::of_path(m.path))).collect()
}

/// The columns of an accounts table: the id, every §3.1 path, the rank.
pub fn account_columns() -> Vec<Column> {
    std::iter::once(Column::text("account_id"))
        .chain(ACCOUNT.iter().map(|m| Column::of_path(m.path)))
        .chain(std::iter::once(Column::of_path("health.rank")))
        .collect()
}

/// A table of the KPI objects in `data[field]` (`{name: KPI}`), one row per
/// name (in the order of the names), with the name under `key`.
fn scope_table(name: &str, key: &str, scopes: &Value, extra: Option<(&str, &Value)>) -> Table {
    let columns = kpi_columns(key);
    let mut rows: Vec<(&str, &Value)> =
        scopes.as_object().map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect()).unwrap_or_default();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    rows.extend(extra);
    let rows = rows
        .into_iter()
        .map(|(id, kpi)| {
            std::iter::once(Value::from(id))
                .chain(columns[1..].iter().map(|c| crate::export::at_path(kpi, &c.path).clone()))
                .collect()
        })
        .collect();
    Table { name: name.to_owned(), columns, rows }
}

/// The tables of a channel's data (see the module's table).
pub fn channel_tables(channel: &Channel, data: &Value) -> Vec<Table> {
    let features = || {
        let columns = vec![Column::text("feature"), Column::of_path("accounts_30d"), Column::of_path("users_30d")];
        let mut rows: Vec<(&String, &Value)> =
            data["features"].as_object().map(|m| m.iter().collect()).unwrap_or_default();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let rows = rows
            .into_iter()
            .map(|(name, f)| vec![Value::from(name.as_str()), f["accounts_30d"].clone(), f["users_30d"].clone()])
            .collect();
        Table { name: "features".into(), columns, rows }
    };
    match channel {
        Channel::Executive => vec![scope_table("segments", "segment", &data["segments"], None)],
        Channel::Manager => {
            vec![scope_table("csms", "csm_id", &data["csms"], Some(("", &data["unassigned"])))]
        }
        Channel::Analyst => vec![
            scope_table("segments", "segment", &data["segments"], None),
            scope_table("regions", "region", &data["regions"], None),
            features(),
        ],
        Channel::Csm(_) => {
            let mut accounts: Vec<&Value> =
                data["accounts"].as_object().map(|m| m.values().collect()).unwrap_or_default();
            accounts.sort_by_key(|a| a["health"]["rank"].as_u64().unwrap_or(u64::MAX));
            vec![Table::of_objects("accounts", account_columns(), accounts)]
        }
    }
}

#[derive(Deserialize)]
pub struct ExportQuery {
    token: Option<String>,
    table: Option<String>,
}

/// `GET /api/v1/channels/{channel}/export.csv|export.xlsx[?table=]`.
pub async fn channel_export(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (Path((name, file)), Query(query)) = (path?, query?);
    let format = Format::of_file(&file).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{file}: a channel exports export.csv or export.xlsx"),
        )
    })?;
    let who = principal(&state, &headers, &TokenQuery { token: query.token })?;
    let channel = readable_channel(&who, &name)?;
    let data: Value = serde_json::from_str(&state.shared.snapshot().channel_json(&channel)).map_err(internal)?;
    let mut tables = channel_tables(&channel, &data);
    if let Some(wanted) = &query.table {
        let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
        tables.retain(|t| &t.name == wanted);
        if tables.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("table={wanted}: channel {channel} has {}", names.join(", ")),
            ));
        }
    }
    let day = data["as_of"].as_str().map(|t| t.get(..10).unwrap_or(t).to_owned()).unwrap_or_default();
    let base = match (format, tables.as_slice()) {
        (Format::Csv, [one]) => format!("cspulse-{channel}-{}-{day}", one.name),
        _ => format!("cspulse-{channel}-{day}"),
    };
    respond(base, tables, format).await
}
