//! The metric catalogue (SPEC §3): every figure of the account object
//! (§3.1) and of the KPI object (§3.2), each defined once with its path,
//! its unit and whether rules may read it.
//!
//! Everything that names a figure goes through here: alert rules resolve
//! their `metric` paths against it (§5.1), the views build the account and
//! KPI objects from it (the JSON shape is the paths), and exports, history
//! and reports take their columns, units and formats from it. How a figure
//! is read from the state is the one exhaustive `match` per table in
//! `state/view.rs`, so a figure added here cannot lack an accessor.

use serde_json::{Map, Value, json};

use crate::exact::Number;

/// Whether a metric is a number or a string (for validating rule operands).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Num,
    Str,
}

/// What a figure measures, which decides how it is shown and exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A whole number (accounts, events, tickets, seats).
    Count,
    /// Currency units, exact to the cent.
    Money,
    /// A ratio or share, unrounded (1.0 = 100%).
    Ratio,
    /// A health score or component, 0–100; the account object shows it to
    /// one decimal, rules read it unrounded (§14).
    Score,
    /// Minutes (first-response times).
    Minutes,
    /// Whole days (days to renewal).
    Days,
    /// A name or an enumeration (tier).
    Text,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An instant, RFC 3339 UTC.
    Instant,
}

impl Unit {
    pub fn kind(self) -> Kind {
        match self {
            Unit::Text | Unit::Date | Unit::Instant => Kind::Str,
            _ => Kind::Num,
        }
    }
}

/// Rounds half away from zero to one decimal, as scores are shown.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// A metric's value at evaluation time.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum MetricValue {
    /// As reported, and exactly (rules decide on the exact value, §4).
    Num(Number),
    /// Static for enumerations like the tier, owned for names and dates.
    Str(std::borrow::Cow<'static, str>),
    Null,
}

impl MetricValue {
    /// As alert `values` carry it: numbers as reported, unrounded.
    pub fn to_json(&self) -> Value {
        match self {
            MetricValue::Num(n) => json!(n.approx),
            MetricValue::Str(s) => json!(s),
            MetricValue::Null => Value::Null,
        }
    }

    /// As the account and KPI objects show it: counts and days as integers,
    /// scores to one decimal where `round_scores`, the rest as reported.
    pub fn to_view(&self, unit: Unit, round_scores: bool) -> Value {
        match self {
            MetricValue::Num(n) => shown(n.approx, unit, round_scores),
            _ => self.to_json(),
        }
    }
}

/// A reported number as the account and KPI objects show it (see
/// [`MetricValue::to_view`]).
pub fn shown(approx: f64, unit: Unit, round_scores: bool) -> Value {
    match unit {
        Unit::Count | Unit::Days => json!(approx as i64),
        Unit::Score if round_scores => json!(round1(approx)),
        _ => json!(approx),
    }
}

/// One figure of a catalogue.
#[derive(Clone, Copy, Debug)]
pub struct Metric<Id: 'static> {
    pub id: Id,
    /// The dotted path: where the object shows it, and what rules name.
    pub path: &'static str,
    pub unit: Unit,
    /// Whether condition rules may read it (the account's own alert counts
    /// may not: a rule on them would decide on its own outcome).
    pub rules: bool,
}

impl<Id> Metric<Id> {
    pub fn kind(&self) -> Kind {
        self.unit.kind()
    }

    /// The section (first path segment) and the rest of the path.
    pub fn section(&self) -> (&'static str, &'static str) {
        self.path.split_once('.').expect("catalogue paths have a section")
    }
}

/// Defines a catalogue: an id enum and the table of its figures, in the
/// order the object lists them.
macro_rules! catalogue {
    ($(#[$doc:meta])* $id:ident, $table:ident { $($variant:ident $path:literal $unit:ident $rules:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $id { $($variant),* }

        pub const $table: &[Metric<$id>] =
            &[$(Metric { id: $id::$variant, path: $path, unit: Unit::$unit, rules: $rules }),*];
    };
}

catalogue! {
    /// A figure of the account object (§3.1); `health.rank`, a position in
    /// the CSM's book, is added by the views.
    AccountMetric, ACCOUNT {
        InfoName "info.name" Text true,
        InfoCsmId "info.csm_id" Text true,
        InfoSegment "info.segment" Text true,
        InfoRegion "info.region" Text true,
        InfoSeats "info.seats" Count true,
        InfoRenewalDate "info.renewal_date" Date true,
        ActiveUsers7d "usage.active_users_7d" Count true,
        ActiveUsers30d "usage.active_users_30d" Count true,
        UsageEvents7d "usage.usage_events_7d" Count true,
        UsageEventsPrev7d "usage.usage_events_prev_7d" Count true,
        DropRatio "usage.drop_ratio" Ratio true,
        Features30d "usage.features_30d" Count true,
        LastActivity "usage.last_activity" Instant true,
        OpenP1 "tickets.open_p1" Count true,
        OpenP2 "tickets.open_p2" Count true,
        OpenP3 "tickets.open_p3" Count true,
        OpenP4 "tickets.open_p4" Count true,
        Open "tickets.open" Count true,
        EscalatedOpen "tickets.escalated_open" Count true,
        SlaBreached "tickets.sla_breached" Count true,
        CsatAvg90d "tickets.csat_avg_90d" Ratio true,
        CsatCount90d "tickets.csat_count_90d" Count true,
        Arr "revenue.arr" Money true,
        DaysToRenewal "revenue.days_to_renewal" Days true,
        Score "health.score" Score true,
        Tier "health.tier" Text true,
        Adoption "health.components.adoption" Score true,
        Engagement "health.components.engagement" Score true,
        Support "health.components.support" Score true,
        Sentiment "health.components.sentiment" Score true,
        AlertsCritical "alerts.critical" Count false,
        AlertsWarning "alerts.warning" Count false,
    }
}

catalogue! {
    /// A figure of the KPI object of a scope (§3.2).
    KpiMetric, KPI {
        Accounts "health.accounts" Count true,
        GreenAccounts "health.tiers.green.accounts" Count true,
        GreenArr "health.tiers.green.arr" Money true,
        YellowAccounts "health.tiers.yellow.accounts" Count true,
        YellowArr "health.tiers.yellow.arr" Money true,
        RedAccounts "health.tiers.red.accounts" Count true,
        RedArr "health.tiers.red.arr" Money true,
        AtRiskArr "health.at_risk_arr" Money true,
        AtRiskShare "health.at_risk_share" Ratio true,
        AvgScore "health.avg_score" Score true,
        ActiveUsers7d "usage.active_users_7d" Count true,
        ActiveUsers30d "usage.active_users_30d" Count true,
        UsageEvents7d "usage.usage_events_7d" Count true,
        AdoptionRate "usage.adoption_rate" Ratio true,
        OpenP1 "tickets.open.p1" Count true,
        OpenP2 "tickets.open.p2" Count true,
        OpenP3 "tickets.open.p3" Count true,
        OpenP4 "tickets.open.p4" Count true,
        OpenTotal "tickets.open.total" Count true,
        EscalatedOpen "tickets.escalated_open" Count true,
        SlaBreached "tickets.sla_breached" Count true,
        FirstResponseCount "tickets.first_response_minutes.count" Count true,
        FirstResponseP50 "tickets.first_response_minutes.p50" Minutes true,
        FirstResponseP90 "tickets.first_response_minutes.p90" Minutes true,
        FirstResponseP99 "tickets.first_response_minutes.p99" Minutes true,
        CsatAvg90d "tickets.csat_avg_90d" Ratio true,
        CsatCount90d "tickets.csat_count_90d" Count true,
        Arr "revenue.arr" Money true,
        PayingAccounts "revenue.paying_accounts" Count true,
        GrrQtd "revenue.grr_qtd" Ratio true,
        NrrQtd "revenue.nrr_qtd" Ratio true,
        GrrT12m "revenue.grr_t12m" Ratio true,
        NrrT12m "revenue.nrr_t12m" Ratio true,
        ExpansionArrQtd "revenue.expansion_arr_qtd" Money true,
        ContractionArrQtd "revenue.contraction_arr_qtd" Money true,
        ChurnedArrQtd "revenue.churned_arr_qtd" Money true,
        AlertsCritical "alerts.critical" Count true,
        AlertsWarning "alerts.warning" Count true,
    }
}

/// The place of the metric `rules` may read at `path` in `table`.
pub fn position<Id>(table: &[Metric<Id>], path: &str) -> Option<usize> {
    table.iter().position(|m| m.rules && m.path == path)
}

/// Puts `value` at the dotted `path` under `object`, making the objects on
/// the way.
pub fn insert_at(object: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            object.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let inner = object.entry(head.to_owned()).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = inner {
                insert_at(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of<Id: PartialEq>(table: &[Metric<Id>], id: Id) -> usize {
        table.iter().position(|m| m.id == id).expect("every id is in its table")
    }

    #[test]
    fn paths_are_distinct_and_sectioned() {
        for paths in [ACCOUNT.iter().map(|m| m.path).collect::<Vec<_>>(), KPI.iter().map(|m| m.path).collect()] {
            let mut sorted = paths.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), paths.len(), "a path is listed twice");
            for p in paths {
                assert!(p.split('.').all(|s| !s.is_empty()) && p.contains('.'), "{p}");
            }
        }
        assert_eq!(position(ACCOUNT, "health.tier"), Some(index_of(ACCOUNT, AccountMetric::Tier)));
        assert_eq!(position(ACCOUNT, "alerts.critical"), None, "not readable by rules");
        assert_eq!(position(KPI, "alerts.critical"), Some(index_of(KPI, KpiMetric::AlertsCritical)));
    }

    #[test]
    fn insert_at_builds_nested_objects() {
        let mut o = Map::new();
        insert_at(&mut o, "tickets.open.p1", json!(1));
        insert_at(&mut o, "tickets.open.total", json!(2));
        insert_at(&mut o, "tickets.sla_breached", json!(0));
        assert_eq!(Value::Object(o), json!({"tickets": {"open": {"p1": 1, "total": 2}, "sla_breached": 0}}));
    }
}
