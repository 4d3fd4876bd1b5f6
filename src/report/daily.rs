//! `daily_ops` (SPEC §17) rendered from the history store: for a CSM's
//! book or the manager (every account), over the day ending at the run.
//!
//! The accounts are those of the latest account rows at or before the
//! period's end (a UTC day boundary: the data's `as_of`); a book's report
//! lists only the accounts in the book then, in every section, whatever
//! the logs hold about accounts that left it. Sections:
//!
//! - Tier changes in the period, with their causes (the tier log).
//! - Accounts needing attention: those not green, in the §3.4 order (red
//!   renewing within 90 days first, then tier, score, ARR descending, id).
//! - Alerts fired and resolved in the period (the alert log): the
//!   accounts' alerts, and for a book its own `csm` scope alerts.
//! - Open escalations and SLA breaches.
//! - Usage drops: accounts whose usage events fell by at least
//!   [`USAGE_DROP`] week over week, largest drop first.

use std::cmp::Ordering;
use std::collections::HashSet;

use jiff::tz::TimeZone;
use serde_json::{Value, json};

use super::Audience;
use super::document::{Document, Header, Section};
use super::schedule::{PeriodKind, period};
use crate::export::{Column, Table, at_path};
use crate::history::store::HistoryStore;
use crate::time::{Ts, format_rfc3339};

/// A drop of usage events week over week listed as a usage drop.
pub const USAGE_DROP: f64 = 0.25;

fn num(v: &Value, path: &str) -> f64 {
    at_path(v, path).as_f64().unwrap_or(0.0)
}

fn columns(paths: &[&str]) -> Vec<Column> {
    paths.iter().map(|p| if *p == "account_id" { Column::text(p) } else { Column::of_path(p) }).collect()
}

fn table_of(name: &str, paths: &[&str], accounts: &[&Value]) -> Table {
    Table::of_objects(name, columns(paths), accounts.iter().copied())
}

/// §3.4's order over account objects.
fn priority(a: &Value, b: &Value) -> Ordering {
    let tier = |v: &Value| match at_path(v, "health.tier").as_str() {
        Some("red") => 0,
        Some("yellow") => 1,
        _ => 2,
    };
    let renewing = |v: &Value| {
        tier(v) == 0 && at_path(v, "revenue.days_to_renewal").as_i64().is_some_and(|d| (0..=90).contains(&d))
    };
    (!renewing(a), tier(a))
        .cmp(&(!renewing(b), tier(b)))
        .then(num(a, "health.score").total_cmp(&num(b, "health.score")))
        .then(num(b, "revenue.arr").total_cmp(&num(a, "revenue.arr")))
        .then(a["account_id"].as_str().cmp(&b["account_id"].as_str()))
}

/// The daily operations report of `audience` (a book or the manager) for
/// the run at `run` in `zone_name`.
pub async fn daily_ops(
    store: &HistoryStore,
    name: &str,
    audience: &Audience,
    run: Ts,
    zone_name: &str,
) -> Result<Document, String> {
    let zone = TimeZone::get(zone_name).map_err(|e| format!("time_zone {zone_name:?}: {e}"))?;
    let book = match audience {
        Audience::Csm(id) => Some(id.as_str()),
        Audience::Manager => None,
        other => return Err(format!("daily_ops is written for a book or the manager, not {other:?}")),
    };
    let (start, end) = period(PeriodKind::Day, run, &zone);
    let read = |e: sqlx::Error| format!("history store: {e}");
    let day = store.latest_day(end).await.map_err(read)?;
    let accounts = match day {
        Some(day) => store.account_rows_at(day, book).await.map_err(read)?,
        None => Vec::new(),
    };
    let ids: HashSet<&str> = accounts.iter().filter_map(|a| a["account_id"].as_str()).collect();
    let names: std::collections::HashMap<&str, &Value> =
        accounts.iter().filter_map(|a| Some((a["account_id"].as_str()?, &a["info"]["name"]))).collect();

    let changes: Vec<Vec<Value>> = store
        .tier_log_between(start, end)
        .await
        .map_err(read)?
        .into_iter()
        .filter(|c| ids.contains(c.account_id.as_str()))
        .map(|c| {
            let cause = match (c.cause["topic"].as_str(), c.cause["event_id"].as_str()) {
                (Some(topic), Some(event)) => format!("{topic} {event}"),
                _ => "time passing".to_owned(),
            };
            let name = names.get(c.account_id.as_str()).copied().cloned().unwrap_or(Value::Null);
            vec![
                json!(format_rfc3339(c.ts)),
                json!(c.account_id),
                name,
                json!(c.from),
                json!(c.to),
                json!(c.score),
                json!(cause),
            ]
        })
        .collect();
    let tier_changes = Table {
        name: "tier_changes".into(),
        columns: vec![
            Column::text("ts"),
            Column::text("account_id"),
            Column::text("info.name"),
            Column::text("from"),
            Column::text("to"),
            Column::of_path("health.score"),
            Column::text("cause"),
        ],
        rows: changes,
    };

    let mut attention: Vec<&Value> =
        accounts.iter().filter(|a| at_path(a, "health.tier").as_str() != Some("green")).collect();
    attention.sort_by(|a, b| priority(a, b));
    let attention_paths: &[&str] = &[
        "account_id",
        "info.name",
        "info.csm_id",
        "health.tier",
        "health.score",
        "revenue.arr",
        "revenue.days_to_renewal",
        "tickets.open_p1",
        "alerts.critical",
        "alerts.warning",
    ];

    let alerts: Vec<Value> = store
        .alert_log_between(start, end)
        .await
        .map_err(read)?
        .into_iter()
        .filter(|a| match a["account_id"].as_str() {
            Some(id) => ids.contains(id),
            // A scope alert: a book sees its own csm scope only.
            None => book.is_none_or(|own| a["scope"] == "csm" && a["scope_id"] == own),
        })
        .collect();
    let alert_paths: &[&str] = &["ts", "state", "severity", "rule", "scope", "scope_id", "account_id", "message"];
    let alerts_table = Table {
        name: "alerts".into(),
        columns: alert_paths.iter().map(|p| Column::text(p)).collect(),
        rows: alerts.iter().map(|a| alert_paths.iter().map(|p| a[*p].clone()).collect()).collect(),
    };

    let mut tickets: Vec<&Value> = accounts
        .iter()
        .filter(|a| num(a, "tickets.escalated_open") > 0.0 || num(a, "tickets.sla_breached") > 0.0)
        .collect();
    tickets.sort_by(|a, b| {
        let key = |v: &Value| num(v, "tickets.escalated_open") + num(v, "tickets.sla_breached");
        key(b).total_cmp(&key(a)).then(a["account_id"].as_str().cmp(&b["account_id"].as_str()))
    });
    let mut drops: Vec<&Value> = accounts.iter().filter(|a| num(a, "usage.drop_ratio") >= USAGE_DROP).collect();
    drops.sort_by(|a, b| {
        num(b, "usage.drop_ratio")
            .total_cmp(&num(a, "usage.drop_ratio"))
            .then(a["account_id"].as_str().cmp(&b["account_id"].as_str()))
    });

    let whose = match book {
        Some(id) => format!("csm:{id}"),
        None => "manager".to_owned(),
    };
    let sections = vec![
        Section {
            title: "Tier changes".into(),
            note: "Every change of an account's tier in the period, with the event (topic and id) or the time passing that caused it.".into(),
            table: tier_changes,
        },
        Section {
            title: "Accounts needing attention".into(),
            note: "The accounts not green at the data's as_of, in the working order: red renewing within 90 days first, then tier, health score, ARR.".into(),
            table: table_of("attention", attention_paths, &attention),
        },
        Section {
            title: "Alerts fired and resolved".into(),
            note: "Every alert transition in the period.".into(),
            table: alerts_table,
        },
        Section {
            title: "Open escalations and SLA breaches".into(),
            note: "Accounts with escalated open tickets or first responses past their SLA.".into(),
            table: table_of(
                "tickets",
                &["account_id", "info.name", "tickets.escalated_open", "tickets.sla_breached", "tickets.open_p1", "tickets.open"],
                &tickets,
            ),
        },
        Section {
            title: "Usage drops".into(),
            note: format!("Accounts whose usage events fell by {:.0} % or more week over week.", USAGE_DROP * 100.0),
            table: table_of(
                "usage_drops",
                &["account_id", "info.name", "usage.usage_events_7d", "usage.usage_events_prev_7d", "usage.drop_ratio", "usage.active_users_7d"],
                &drops,
            ),
        },
    ];
    Ok(Document {
        title: format!("Daily operations — {whose}"),
        header: Header {
            name: name.to_owned(),
            template: super::Template::DailyOps.name(),
            audience: whose,
            period_start: start,
            period_end: end,
            time_zone: zone_name.to_owned(),
            as_of: day,
            positions: Vec::new(),
        },
        sections,
    })
}
