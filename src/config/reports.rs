//! `[[reports]]` and `[reporting]` (SPEC §17) as written in the file;
//! `crate::report::ReportSpec::parse_all` checks them against the schedule
//! grammar, the templates' audiences and the delivery config.

use serde::{Deserialize, Serialize};

use crate::time::Span;

/// `[[reports]]`: one scheduled report.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    pub name: String,
    /// `daily_ops`, `weekly_performance`, `monthly_business` or
    /// `quarterly_executive`.
    pub template: String,
    /// `executive`, `manager`, `csm:<id>` or `csm:*` (one run per CSM).
    pub audience: String,
    /// `daily 08:00`, `weekly mon 09:00`, `monthly first-business-day
    /// 09:00`, `quarterly first-monday 09:00` or a 5-field cron expression.
    pub schedule: String,
    /// IANA zone of the schedule and the periods.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Any of `html`, `pdf`, `xlsx`, `csv`.
    #[serde(default = "default_formats")]
    pub formats: Vec<String>,
    /// People ids, destination names, or `owner` (a csm audience: the CSM's
    /// person). Empty: kept in the portal only.
    #[serde(default)]
    pub to: Vec<String>,
    /// Send nothing for a run with nothing to report (the portal keeps it).
    #[serde(default)]
    pub skip_if_empty: bool,
}

fn utc() -> String {
    "UTC".to_owned()
}

fn default_formats() -> Vec<String> {
    vec!["html".to_owned(), "pdf".to_owned()]
}

/// `[reporting]`: how runs wait for data and catch up. (SPEC §17 calls these
/// `reports.max_wait` and `reports.catch_up`; in TOML `reports` is the
/// array of `[[reports]]`, so they live in their own table.)
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReportingConfig {
    /// A run whose instant the watermark has not reached waits this long.
    pub max_wait: Span,
    /// A run missed while the engine was down runs at start when it is at
    /// most this old; older ones are skipped (and logged).
    pub catch_up: Span,
}

impl Default for ReportingConfig {
    fn default() -> Self {
        ReportingConfig {
            max_wait: Span(std::time::Duration::from_secs(3600)),
            catch_up: Span(std::time::Duration::from_secs(24 * 3600)),
        }
    }
}
