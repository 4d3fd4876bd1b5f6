//! Presentation of the state (SPEC §3, §6.2): account objects, KPI objects and
//! the data of each channel, as JSON. Reads only; never changes the state.

use std::fmt;

use serde_json::{Map, Value, json};

use super::Engine;
use super::account::{Account, Metrics};
use super::health::Tier;
use super::scope::{Scope, Wide};
use crate::alert::MetricValue;
use crate::alert::rules::{ACCOUNT_METRICS, KPI_METRICS};
use crate::exact::{Number, Ratio};
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

/// A 128-bit sum of cents as a JSON number of currency units.
fn wide_money(cents: Wide) -> Value {
    json!(cents.value() as f64 / 100.0)
}

fn ratio(num: i64, den: i64) -> Value {
    if den > 0 { json!(num as f64 / den as f64) } else { Value::Null }
}

/// The KPI object of a scope (§3.2).
pub fn kpi(scope: &Scope) -> Value {
    let t = &scope.totals;
    let tiers: Map<String, Value> = Tier::ALL
        .iter()
        .map(|tier| {
            let i = tier.index();
            (tier.as_str().to_owned(), json!({"accounts": t.tier_accounts[i], "arr": money(t.tier_arr[i])}))
        })
        .collect();
    let red = Tier::Red.index();
    let at_risk_share = if t.arr > 0 { t.tier_arr[red] as f64 / t.arr as f64 } else { 0.0 };
    let avg_score = if t.accounts > 0 { json!(t.score_fixed as f64 / 1e9 / t.accounts as f64) } else { Value::Null };
    let minutes =
        |p| scope.first_response_percentile(p).map_or(Value::Null, |us| json!(us as f64 / MICROS_PER_MIN as f64));
    json!({
        "health": {
            "accounts": t.accounts,
            "tiers": tiers,
            "at_risk_arr": money(t.tier_arr[red]),
            "at_risk_share": at_risk_share,
            "avg_score": avg_score,
        },
        "usage": {
            "active_users_7d": t.active_users_7d,
            "active_users_30d": t.active_users_30d,
            "usage_events_7d": t.usage_events_7d,
            "adoption_rate": ratio(t.adoption_hit, t.adoption_base),
        },
        "tickets": {
            "open": {"p1": t.open[0], "p2": t.open[1], "p3": t.open[2], "p4": t.open[3], "total": t.open_total},
            "escalated_open": t.escalated_open,
            "sla_breached": t.sla_breached,
            "first_response_minutes": {
                "count": scope.first_response_count,
                "p50": minutes(50),
                "p90": minutes(90),
                "p99": minutes(99),
            },
            "csat_avg_90d": ratio(t.csat_sum, t.csat_count),
            "csat_count_90d": t.csat_count,
        },
        "revenue": {
            "arr": money(t.arr),
            "paying_accounts": t.paying,
            "grr_qtd": t.qtd.grr(),
            "nrr_qtd": t.qtd.nrr(),
            "grr_t12m": t.t12m.grr(),
            "nrr_t12m": t.t12m.nrr(),
            "expansion_arr_qtd": wide_money(t.expansion_qtd),
            "contraction_arr_qtd": wide_money(t.contraction_qtd),
            "churned_arr_qtd": wide_money(t.churned_qtd),
        },
        "alerts": {"critical": t.alerts[0], "warning": t.alerts[1]},
    })
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

/// Reads one catalogue metric of an account.
type AccountAccessor = fn(&Account, &Metrics, Ts) -> MetricValue;
/// Reads one catalogue metric of a scope.
type KpiAccessor = fn(&Scope) -> MetricValue;

/// Accessors aligned with `ACCOUNT_METRICS`, resolved by name once.
static ACCOUNT_ACCESSORS: std::sync::LazyLock<Vec<AccountAccessor>> =
    std::sync::LazyLock::new(|| ACCOUNT_METRICS.iter().map(|(path, _)| account_accessor(path)).collect());
static KPI_ACCESSORS: std::sync::LazyLock<Vec<KpiAccessor>> =
    std::sync::LazyLock::new(|| KPI_METRICS.iter().map(|(path, _)| kpi_accessor(path)).collect());

/// The value of `ACCOUNT_METRICS[i]` for an account, as the account object
/// shows it, except that scores and components are unrounded (§14).
pub fn account_metric(i: usize, a: &Account, m: &Metrics, now: Ts) -> MetricValue {
    ACCOUNT_ACCESSORS[i](a, m, now)
}

/// The value of `KPI_METRICS[i]` for a scope, as the KPI object shows it.
pub fn kpi_metric(i: usize, scope: &Scope) -> MetricValue {
    KPI_ACCESSORS[i](scope)
}

fn account_accessor(path: &str) -> AccountAccessor {
    fn n(v: u64) -> MetricValue {
        MetricValue::Num(Number::new(v as f64, Ratio::int(v as i128)))
    }
    fn int(v: i64) -> MetricValue {
        MetricValue::Num(Number::count(v))
    }
    fn component(m: &Metrics, i: usize) -> MetricValue {
        MetricValue::Num(Number::new(m.health.components[i], m.health.exact_components[i]))
    }
    fn s(v: &str) -> MetricValue {
        MetricValue::Str(v.to_owned().into())
    }
    match path {
        "info.name" => |a, _, _| a.info.name.as_deref().map_or(MetricValue::Null, s),
        "info.csm_id" => |a, _, _| a.info.csm_id.as_deref().map_or(MetricValue::Null, s),
        "info.segment" => |a, _, _| s(&a.info.segment),
        "info.region" => |a, _, _| s(&a.info.region),
        "info.seats" => |a, _, _| n(a.info.seats),
        "info.renewal_date" => {
            |a, _, _| a.info.renewal_date.map_or(MetricValue::Null, |d| MetricValue::Str(format_date(d).into()))
        }
        "usage.active_users_7d" => |_, m, _| n(m.active_users_7d),
        "usage.active_users_30d" => |_, m, _| n(m.active_users_30d),
        "usage.usage_events_7d" => |_, m, _| n(m.usage_events_7d),
        "usage.usage_events_prev_7d" => |_, m, _| n(m.usage_events_prev_7d),
        "usage.drop_ratio" => |_, m, _| {
            // 1 − cur/prev = (prev − cur)/prev exactly.
            let (prev, cur) = (m.usage_events_prev_7d as i128, m.usage_events_7d as i128);
            let exact = if prev > 0 { Ratio::new(prev - cur, prev as u128) } else { Ratio::ZERO };
            MetricValue::Num(Number::new(m.drop_ratio(), exact))
        },
        "usage.features_30d" => |_, m, _| n(m.features_30d),
        "usage.last_activity" => {
            |a, _, _| a.usage.last_activity.map_or(MetricValue::Null, |t| MetricValue::Str(format_rfc3339(t).into()))
        }
        "tickets.open_p1" => |_, m, _| n(m.open[0]),
        "tickets.open_p2" => |_, m, _| n(m.open[1]),
        "tickets.open_p3" => |_, m, _| n(m.open[2]),
        "tickets.open_p4" => |_, m, _| n(m.open[3]),
        "tickets.open" => |_, m, _| n(m.open_total),
        "tickets.escalated_open" => |_, m, _| n(m.escalated_open),
        "tickets.sla_breached" => |_, m, _| n(m.sla_breached),
        "tickets.csat_avg_90d" => |_, m, _| match m.csat_avg() {
            Some(avg) => MetricValue::Num(Number::new(avg, Ratio::new(m.csat.sum as i128, m.csat.count as u128))),
            None => MetricValue::Null,
        },
        "tickets.csat_count_90d" => |_, m, _| n(m.csat.count),
        "revenue.arr" => |_, m, _| MetricValue::Num(Number::new(m.arr as f64 / 100.0, Ratio::of(m.arr, 100))),
        "revenue.days_to_renewal" => |a, _, now| a.days_to_renewal(now).map_or(MetricValue::Null, int),
        "health.score" => |_, m, _| MetricValue::Num(Number { approx: m.health.score, exact: m.health.exact.clone() }),
        "health.tier" => |_, m, _| MetricValue::Str(m.health.tier.as_str().into()),
        "health.components.adoption" => |_, m, _| component(m, 0),
        "health.components.engagement" => |_, m, _| component(m, 1),
        "health.components.support" => |_, m, _| component(m, 2),
        "health.components.sentiment" => |_, m, _| component(m, 3),
        other => unreachable!("account metric {other} has no accessor"),
    }
}

fn kpi_accessor(path: &str) -> KpiAccessor {
    fn n(v: i64) -> MetricValue {
        MetricValue::Num(Number::count(v))
    }
    fn money(c: i64) -> MetricValue {
        MetricValue::Num(Number::new(c as f64 / 100.0, Ratio::of(c, 100)))
    }
    fn wide(c: Wide) -> MetricValue {
        let c = c.value();
        MetricValue::Num(Number::new(c as f64 / 100.0, Ratio::new(c, 100)))
    }
    /// `a / b`, null when `b` is 0.
    fn ratio(a: i64, b: i64) -> MetricValue {
        if b > 0 { MetricValue::Num(Number::ratio(a, b)) } else { MetricValue::Null }
    }
    fn minutes(scope: &Scope, p: u64) -> MetricValue {
        scope.first_response_percentile(p).map_or(MetricValue::Null, |us| {
            MetricValue::Num(Number::new(us as f64 / MICROS_PER_MIN as f64, Ratio::of(us, MICROS_PER_MIN)))
        })
    }
    const GREEN: usize = Tier::Green as usize;
    const YELLOW: usize = Tier::Yellow as usize;
    const RED: usize = Tier::Red as usize;
    match path {
        "health.accounts" => |sc| {
            let t = &sc.totals;
            n(t.accounts)
        },
        "health.tiers.green.accounts" => |sc| {
            let t = &sc.totals;
            n(t.tier_accounts[GREEN])
        },
        "health.tiers.green.arr" => |sc| {
            let t = &sc.totals;
            money(t.tier_arr[GREEN])
        },
        "health.tiers.yellow.accounts" => |sc| {
            let t = &sc.totals;
            n(t.tier_accounts[YELLOW])
        },
        "health.tiers.yellow.arr" => |sc| {
            let t = &sc.totals;
            money(t.tier_arr[YELLOW])
        },
        "health.tiers.red.accounts" => |sc| {
            let t = &sc.totals;
            n(t.tier_accounts[RED])
        },
        "health.tiers.red.arr" => |sc| {
            let t = &sc.totals;
            money(t.tier_arr[RED])
        },
        "health.at_risk_arr" => |sc| {
            let t = &sc.totals;
            money(t.tier_arr[RED])
        },
        "health.at_risk_share" => |sc| {
            let t = &sc.totals;
            if t.arr > 0 { ratio(t.tier_arr[RED], t.arr) } else { n(0) }
        },
        "health.avg_score" => |sc| {
            let t = &sc.totals;
            avg_score(t)
        },
        "usage.active_users_7d" => |sc| {
            let t = &sc.totals;
            n(t.active_users_7d)
        },
        "usage.active_users_30d" => |sc| {
            let t = &sc.totals;
            n(t.active_users_30d)
        },
        "usage.usage_events_7d" => |sc| {
            let t = &sc.totals;
            n(t.usage_events_7d)
        },
        "usage.adoption_rate" => |sc| {
            let t = &sc.totals;
            ratio(t.adoption_hit, t.adoption_base)
        },
        "tickets.open.p1" => |sc| {
            let t = &sc.totals;
            n(t.open[0])
        },
        "tickets.open.p2" => |sc| {
            let t = &sc.totals;
            n(t.open[1])
        },
        "tickets.open.p3" => |sc| {
            let t = &sc.totals;
            n(t.open[2])
        },
        "tickets.open.p4" => |sc| {
            let t = &sc.totals;
            n(t.open[3])
        },
        "tickets.open.total" => |sc| {
            let t = &sc.totals;
            n(t.open_total)
        },
        "tickets.escalated_open" => |sc| {
            let t = &sc.totals;
            n(t.escalated_open)
        },
        "tickets.sla_breached" => |sc| {
            let t = &sc.totals;
            n(t.sla_breached)
        },
        "tickets.first_response_minutes.count" => |sc| n(sc.first_response_count as i64),
        "tickets.first_response_minutes.p50" => |sc| minutes(sc, 50),
        "tickets.first_response_minutes.p90" => |sc| minutes(sc, 90),
        "tickets.first_response_minutes.p99" => |sc| minutes(sc, 99),
        "tickets.csat_avg_90d" => |sc| {
            let t = &sc.totals;
            ratio(t.csat_sum, t.csat_count)
        },
        "tickets.csat_count_90d" => |sc| {
            let t = &sc.totals;
            n(t.csat_count)
        },
        "revenue.arr" => |sc| {
            let t = &sc.totals;
            money(t.arr)
        },
        "revenue.paying_accounts" => |sc| {
            let t = &sc.totals;
            n(t.paying)
        },
        "revenue.grr_qtd" => |sc| {
            let t = &sc.totals;
            ratio(t.qtd.capped, t.qtd.start)
        },
        "revenue.nrr_qtd" => |sc| {
            let t = &sc.totals;
            ratio(t.qtd.current, t.qtd.start)
        },
        "revenue.grr_t12m" => |sc| {
            let t = &sc.totals;
            ratio(t.t12m.capped, t.t12m.start)
        },
        "revenue.nrr_t12m" => |sc| {
            let t = &sc.totals;
            ratio(t.t12m.current, t.t12m.start)
        },
        "revenue.expansion_arr_qtd" => |sc| {
            let t = &sc.totals;
            wide(t.expansion_qtd)
        },
        "revenue.contraction_arr_qtd" => |sc| {
            let t = &sc.totals;
            wide(t.contraction_qtd)
        },
        "revenue.churned_arr_qtd" => |sc| {
            let t = &sc.totals;
            wide(t.churned_qtd)
        },
        "alerts.critical" => |sc| {
            let t = &sc.totals;
            n(t.alerts[0])
        },
        "alerts.warning" => |sc| {
            let t = &sc.totals;
            n(t.alerts[1])
        },
        other => unreachable!("KPI metric {other} has no accessor"),
    }
}
