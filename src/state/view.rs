//! Presentation of the state (SPEC §3, §6.2): account objects, KPI objects and
//! the data of each channel, as JSON. Reads only; never changes the state.

use std::fmt;

use serde_json::{Map, Value, json};

use super::Engine;
use super::account::{Account, Info, Metrics};
use super::health::Tier;
use super::scope::{Scope, Wide};
use crate::exact::{Number, Ratio};
use crate::metric::{ACCOUNT, AccountMetric, KPI, KpiMetric, MetricValue, insert_at};
use crate::time::{MICROS_PER_MIN, Ts, format_date, format_rfc3339};

/// A push channel (§6.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Executive,
    Manager,
    Analyst,
    Csm(String),
}

impl Channel {
    pub fn parse(s: &str) -> Option<Channel> {
        Some(match s {
            "executive" => Channel::Executive,
            "manager" => Channel::Manager,
            "analyst" => Channel::Analyst,
            _ => {
                let id = s.strip_prefix("csm:")?;
                if id.is_empty() || id.chars().count() > 128 {
                    return None;
                }
                Channel::Csm(id.to_owned())
            }
        })
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Executive => f.write_str("executive"),
            Channel::Manager => f.write_str("manager"),
            Channel::Analyst => f.write_str("analyst"),
            Channel::Csm(id) => write!(f, "csm:{id}"),
        }
    }
}

/// Money as a JSON number of currency units, exact to the cent.
pub fn money(cents: i64) -> Value {
    json!(cents as f64 / 100.0)
}

/// The KPI object of a scope (§3.2): every figure of the catalogue at its path.
pub fn kpi(scope: &Scope) -> Value {
    let mut object = Map::new();
    for m in KPI {
        insert_at(&mut object, m.path, kpi_value(m.id, scope).to_view(m.unit, false));
    }
    Value::Object(object)
}

impl Engine {
    /// A CSM's book in priority order (§3.4), as account ids.
    pub fn book_order(&self, csm_id: &str) -> Vec<std::sync::Arc<str>> {
        self.snapshot().book_order(csm_id).into_iter().map(|r| r.id.clone()).collect()
    }

    /// The account object of §3.1, or `None` for an unknown account.
    pub fn account_view(&self, account_id: &str) -> Option<Value> {
        self.snapshot().account_view(account_id)
    }

    /// The account's `csm_id`, if the account exists (for access checks).
    pub fn account_owner(&self, account_id: &str) -> Option<Option<&str>> {
        let &idx = self.index.get(account_id)?;
        Some(self.slots[idx as usize].account.info.csm_id.as_deref())
    }

    /// The data of a channel (§6.2), from a snapshot of the state now.
    pub fn channel_view(&self, channel: &Channel) -> Value {
        self.snapshot().channel_view(channel)
    }

    /// Every view at once (see `Snapshot::all_views`).
    pub fn all_views(&self) -> Value {
        self.snapshot().all_views()
    }
}

/// The mean score of a scope as a rule compares it: the mean of the scores
/// each rounded to 10⁻⁹ (the sum kept in `score_fixed`), compared exactly.
/// The one figure not decided on exact scores (see README, "readings").
fn avg_score(t: &super::scope::Totals) -> MetricValue {
    if t.accounts == 0 {
        return MetricValue::Null;
    }
    let approx = t.score_fixed as f64 / 1e9 / t.accounts as f64;
    MetricValue::Num(Number::new(approx, Ratio::new(t.score_fixed as i128, t.accounts as u128 * 1_000_000_000)))
}

/// What an account's figures are read from: its state in the fold, or its
/// record in a snapshot.
#[derive(Clone, Copy)]
pub struct Facts<'a> {
    pub info: &'a Info,
    pub metrics: &'a Metrics,
    pub last_activity: Option<Ts>,
    /// Firing condition alerts of account scope: critical, warning.
    pub alerts: [u64; 2],
    pub now: Ts,
}

impl<'a> Facts<'a> {
    pub fn of(a: &'a Account, metrics: &'a Metrics, now: Ts) -> Self {
        Facts { info: &a.info, metrics, last_activity: a.usage.last_activity, alerts: a.alerts, now }
    }
}

/// The value of `metric::ACCOUNT[i]` for an account, as the account object
/// shows it, except that scores and components are unrounded (§14).
pub fn account_metric(i: usize, a: &Account, m: &Metrics, now: Ts) -> MetricValue {
    account_value(ACCOUNT[i].id, &Facts::of(a, m, now))
}

/// The value of `metric::KPI[i]` for a scope, as the KPI object shows it.
pub fn kpi_metric(i: usize, scope: &Scope) -> MetricValue {
    kpi_value(KPI[i].id, scope)
}

fn count(v: u64) -> MetricValue {
    MetricValue::Num(Number::new(v as f64, Ratio::int(v as i128)))
}

fn text(v: &str) -> MetricValue {
    MetricValue::Str(v.to_owned().into())
}

/// Cents as currency units, exactly.
fn cents(c: i128) -> MetricValue {
    MetricValue::Num(Number::new(c as f64 / 100.0, Ratio::new(c, 100)))
}

/// `a / b`, null when `b` is 0.
fn quotient(a: i64, b: i64) -> MetricValue {
    if b > 0 { MetricValue::Num(Number::ratio(a, b)) } else { MetricValue::Null }
}

/// One figure of an account (§3.1), unrounded.
pub fn account_value(id: AccountMetric, f: &Facts<'_>) -> MetricValue {
    use AccountMetric as A;
    let (info, m) = (f.info, f.metrics);
    let component = |i: usize| MetricValue::Num(Number::new(m.health.components[i], m.health.exact_components[i]));
    match id {
        A::InfoName => info.name.as_deref().map_or(MetricValue::Null, text),
        A::InfoCsmId => info.csm_id.as_deref().map_or(MetricValue::Null, text),
        A::InfoSegment => text(&info.segment),
        A::InfoRegion => text(&info.region),
        A::InfoSeats => count(info.seats),
        A::InfoRenewalDate => info.renewal_date.map_or(MetricValue::Null, |d| MetricValue::Str(format_date(d).into())),
        A::ActiveUsers7d => count(m.active_users_7d),
        A::ActiveUsers30d => count(m.active_users_30d),
        A::UsageEvents7d => count(m.usage_events_7d),
        A::UsageEventsPrev7d => count(m.usage_events_prev_7d),
        A::DropRatio => {
            // 1 − cur/prev = (prev − cur)/prev exactly.
            let (prev, cur) = (m.usage_events_prev_7d as i128, m.usage_events_7d as i128);
            let exact = if prev > 0 { Ratio::new(prev - cur, prev as u128) } else { Ratio::ZERO };
            MetricValue::Num(Number::new(m.drop_ratio(), exact))
        }
        A::Features30d => count(m.features_30d),
        A::LastActivity => f.last_activity.map_or(MetricValue::Null, |t| MetricValue::Str(format_rfc3339(t).into())),
        A::OpenP1 => count(m.open[0]),
        A::OpenP2 => count(m.open[1]),
        A::OpenP3 => count(m.open[2]),
        A::OpenP4 => count(m.open[3]),
        A::Open => count(m.open_total),
        A::EscalatedOpen => count(m.escalated_open),
        A::SlaBreached => count(m.sla_breached),
        A::CsatAvg90d => match m.csat_avg() {
            Some(avg) => MetricValue::Num(Number::new(avg, Ratio::new(m.csat.sum as i128, m.csat.count as u128))),
            None => MetricValue::Null,
        },
        A::CsatCount90d => count(m.csat.count),
        A::Arr => cents(i128::from(m.arr)),
        A::DaysToRenewal => {
            info.days_to_renewal(f.now).map_or(MetricValue::Null, |d| MetricValue::Num(Number::count(d)))
        }
        A::Score => MetricValue::Num(Number { approx: m.health.score, exact: m.health.exact.clone() }),
        A::Tier => MetricValue::Str(m.health.tier.as_str().into()),
        A::Adoption => component(0),
        A::Engagement => component(1),
        A::Support => component(2),
        A::Sentiment => component(3),
        A::AlertsCritical => count(f.alerts[0]),
        A::AlertsWarning => count(f.alerts[1]),
    }
}

/// One figure of a scope's KPI object (§3.2).
pub fn kpi_value(id: KpiMetric, scope: &Scope) -> MetricValue {
    use KpiMetric as K;
    let t = &scope.totals;
    let n = |v: i64| MetricValue::Num(Number::count(v));
    let money = |c: i64| cents(i128::from(c));
    let wide = |c: Wide| cents(c.value());
    let minutes = |p: u64| {
        scope.first_response_percentile(p).map_or(MetricValue::Null, |us| {
            MetricValue::Num(Number::new(us as f64 / MICROS_PER_MIN as f64, Ratio::of(us, MICROS_PER_MIN)))
        })
    };
    let (green, yellow, red) = (Tier::Green.index(), Tier::Yellow.index(), Tier::Red.index());
    match id {
        K::Accounts => n(t.accounts),
        K::GreenAccounts => n(t.tier_accounts[green]),
        K::GreenArr => money(t.tier_arr[green]),
        K::YellowAccounts => n(t.tier_accounts[yellow]),
        K::YellowArr => money(t.tier_arr[yellow]),
        K::RedAccounts => n(t.tier_accounts[red]),
        K::RedArr | K::AtRiskArr => money(t.tier_arr[red]),
        // 0 when there is no ARR (§3.2), not null.
        K::AtRiskShare => {
            if t.arr > 0 {
                quotient(t.tier_arr[red], t.arr)
            } else {
                n(0)
            }
        }
        K::AvgScore => avg_score(t),
        K::ActiveUsers7d => n(t.active_users_7d),
        K::ActiveUsers30d => n(t.active_users_30d),
        K::UsageEvents7d => n(t.usage_events_7d),
        K::AdoptionRate => quotient(t.adoption_hit, t.adoption_base),
        K::OpenP1 => n(t.open[0]),
        K::OpenP2 => n(t.open[1]),
        K::OpenP3 => n(t.open[2]),
        K::OpenP4 => n(t.open[3]),
        K::OpenTotal => n(t.open_total),
        K::EscalatedOpen => n(t.escalated_open),
        K::SlaBreached => n(t.sla_breached),
        K::FirstResponseCount => n(scope.first_response_count as i64),
        K::FirstResponseP50 => minutes(50),
        K::FirstResponseP90 => minutes(90),
        K::FirstResponseP99 => minutes(99),
        K::CsatAvg90d => quotient(t.csat_sum, t.csat_count),
        K::CsatCount90d => n(t.csat_count),
        K::Arr => money(t.arr),
        K::PayingAccounts => n(t.paying),
        K::GrrQtd => quotient(t.qtd.capped, t.qtd.start),
        K::NrrQtd => quotient(t.qtd.current, t.qtd.start),
        K::GrrT12m => quotient(t.t12m.capped, t.t12m.start),
        K::NrrT12m => quotient(t.t12m.current, t.t12m.start),
        K::ExpansionArrQtd => wide(t.expansion_qtd),
        K::ContractionArrQtd => wide(t.contraction_qtd),
        K::ChurnedArrQtd => wide(t.churned_qtd),
        K::AlertsCritical => n(t.alerts[0]),
        K::AlertsWarning => n(t.alerts[1]),
    }
}
