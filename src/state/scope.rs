//! Scope aggregates (SPEC §3.2): portfolio, segment, region, CSM and
//! unassigned totals, maintained by adding and subtracting each account's
//! contribution whenever the account changes. All sums are integers (cents,
//! counts, fixed-point scores), so they never drift.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::account::{CohortShare, Flows};

/// Summable figures of a set of accounts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub accounts: i64,
    /// Accounts and ARR per tier, indexed by `Tier::index` (red, yellow, green).
    pub tier_accounts: [i64; 3],
    pub tier_arr: [i64; 3],
    pub histogram: [i64; 10],
    /// Sum of unrounded scores in units of 10⁻⁹.
    pub score_fixed: i64,
    pub arr: i64,
    pub paying: i64,
    pub active_users_7d: i64,
    pub active_users_30d: i64,
    pub usage_events_7d: i64,
    /// Paying accounts, and those of them with core-feature usage in 7 days.
    pub adoption_base: i64,
    pub adoption_hit: i64,
    pub open: [i64; 4],
    pub open_total: i64,
    pub escalated_open: i64,
    pub sla_breached: i64,
    pub csat_count: i64,
    pub csat_sum: i64,
    pub qtd: Cohort,
    pub t12m: Cohort,
    pub expansion_qtd: i64,
    pub contraction_qtd: i64,
    pub churned_qtd: i64,
    /// Firing account-scope condition alerts: critical, warning.
    pub alerts: [i64; 2],
}

/// Sums of a retention cohort in cents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cohort {
    pub start: i64,
    pub current: i64,
    pub capped: i64,
}

impl Cohort {
    pub fn of(share: CohortShare) -> Self {
        Cohort { start: share.start, current: share.current, capped: share.capped }
    }

    fn add(&mut self, o: &Cohort, sign: i64) {
        self.start += sign * o.start;
        self.current += sign * o.current;
        self.capped += sign * o.capped;
    }

    pub fn nrr(&self) -> Option<f64> {
        (self.start > 0).then(|| self.current as f64 / self.start as f64)
    }

    pub fn grr(&self) -> Option<f64> {
        (self.start > 0).then(|| self.capped as f64 / self.start as f64)
    }
}

fn add_all<const N: usize>(a: &mut [i64; N], b: &[i64; N], sign: i64) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += sign * y;
    }
}

impl Totals {
    pub fn add(&mut self, o: &Totals, sign: i64) {
        self.accounts += sign * o.accounts;
        add_all(&mut self.tier_accounts, &o.tier_accounts, sign);
        add_all(&mut self.tier_arr, &o.tier_arr, sign);
        add_all(&mut self.histogram, &o.histogram, sign);
        self.score_fixed += sign * o.score_fixed;
        self.arr += sign * o.arr;
        self.paying += sign * o.paying;
        self.active_users_7d += sign * o.active_users_7d;
        self.active_users_30d += sign * o.active_users_30d;
        self.usage_events_7d += sign * o.usage_events_7d;
        self.adoption_base += sign * o.adoption_base;
        self.adoption_hit += sign * o.adoption_hit;
        add_all(&mut self.open, &o.open, sign);
        self.open_total += sign * o.open_total;
        self.escalated_open += sign * o.escalated_open;
        self.sla_breached += sign * o.sla_breached;
        self.csat_count += sign * o.csat_count;
        self.csat_sum += sign * o.csat_sum;
        self.qtd.add(&o.qtd, sign);
        self.t12m.add(&o.t12m, sign);
        self.expansion_qtd += sign * o.expansion_qtd;
        self.contraction_qtd += sign * o.contraction_qtd;
        self.churned_qtd += sign * o.churned_qtd;
        add_all(&mut self.alerts, &o.alerts, sign);
    }

    pub fn set_flows(&mut self, f: Flows) {
        self.expansion_qtd = f.expansion;
        self.contraction_qtd = f.contraction;
        self.churned_qtd = f.churned;
    }
}

/// What one account adds to each scope it belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contribution {
    pub totals: Totals,
    /// First-response times (µs) of its tickets answered within 30 days.
    pub first_responses: Vec<i64>,
}

/// The scopes an account's contribution was added to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeKeys {
    pub segment: Arc<str>,
    pub region: Arc<str>,
    pub csm: Option<Arc<str>>,
}

/// One scope's totals and first-response-time multiset.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub totals: Totals,
    /// Exact first-response times (µs) → how many tickets have it.
    pub first_responses: BTreeMap<i64, u64>,
    pub first_response_count: u64,
}

impl Scope {
    fn apply(&mut self, c: &Contribution, sign: i64) {
        self.totals.add(&c.totals, sign);
        for &v in &c.first_responses {
            if sign > 0 {
                *self.first_responses.entry(v).or_default() += 1;
                self.first_response_count += 1;
            } else if let Some(n) = self.first_responses.get_mut(&v) {
                *n -= 1;
                self.first_response_count -= 1;
                if *n == 0 {
                    self.first_responses.remove(&v);
                }
            }
        }
    }

    /// Nearest-rank percentile (`p` in 1..=100) of first-response times, µs.
    pub fn first_response_percentile(&self, p: u64) -> Option<i64> {
        let n = self.first_response_count;
        if n == 0 {
            return None;
        }
        let rank = (p * n).div_ceil(100).max(1);
        let mut seen = 0;
        for (&v, &c) in &self.first_responses {
            seen += c;
            if seen >= rank {
                return Some(v);
            }
        }
        self.first_responses.keys().next_back().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.totals.accounts == 0
    }
}

/// Every scope of the portfolio.
#[derive(Clone, Debug, Default)]
pub struct Scopes {
    pub portfolio: Scope,
    pub segments: HashMap<Arc<str>, Scope>,
    pub regions: HashMap<Arc<str>, Scope>,
    pub csms: HashMap<Arc<str>, Scope>,
    pub unassigned: Scope,
}

fn apply_keyed(map: &mut HashMap<Arc<str>, Scope>, key: &Arc<str>, c: &Contribution, sign: i64) {
    let scope = map.entry(key.clone()).or_default();
    scope.apply(c, sign);
    if scope.is_empty() {
        map.remove(key);
    }
}

impl Scopes {
    /// Adds (`sign` = 1) or withdraws (-1) a contribution under `keys`.
    pub fn apply(&mut self, keys: &ScopeKeys, c: &Contribution, sign: i64) {
        self.portfolio.apply(c, sign);
        apply_keyed(&mut self.segments, &keys.segment, c, sign);
        apply_keyed(&mut self.regions, &keys.region, c, sign);
        match &keys.csm {
            Some(csm) => apply_keyed(&mut self.csms, csm, c, sign),
            None => self.unassigned.apply(c, sign),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Scope::default();
        let c = Contribution { first_responses: (1..=10).map(|m| m * 60_000_000).collect(), ..Default::default() };
        s.apply(&c, 1);
        assert_eq!(s.first_response_percentile(50), Some(5 * 60_000_000));
        assert_eq!(s.first_response_percentile(90), Some(9 * 60_000_000));
        assert_eq!(s.first_response_percentile(99), Some(10 * 60_000_000));
        s.apply(&c, -1);
        assert_eq!(s.first_response_percentile(50), None);
        assert!(s.first_responses.is_empty());
    }
}
