//! Scope aggregates (SPEC §3.2): portfolio, segment, region, CSM and
//! unassigned totals, maintained by adding and subtracting each account's
//! contribution whenever the account changes. All sums are integers (cents,
//! counts, fixed-point scores), so they never drift.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::account::{CohortShare, Flows};
use super::window::FastMap;

/// Summable figures of a set of accounts.
///
/// Every field is an `i64` and the layout is C's, so the struct can be
/// viewed as one `[i64]` (`bytemuck`): adding one account's figures to a
/// scope is a loop the compiler turns into a few vector additions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, Pod, Zeroable)]
#[repr(C)]
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
    /// Quarter-to-date ARR movements (cents). One account's can exceed
    /// `i64` (each revenue event may move up to `MAX_ARR_CENTS`), so they
    /// are kept split (see `Wide`).
    pub expansion_qtd: Wide,
    pub contraction_qtd: Wide,
    pub churned_qtd: Wide,
    /// Firing account-scope condition alerts: critical, warning.
    pub alerts: [i64; 2],
}

/// A non-negative 128-bit sum kept in two `i64` words that add field by
/// field: `high·2³² + low` with each account's `low` in [0, 2³²). So a scope
/// sums `high`s and `low`s separately and neither overflows: the `low`s stay
/// below 2⁶³ for fewer than 2³¹ accounts, and the `high`s are the sum over
/// 2³², far from 2⁶³ whatever the number of revenue events (up to 2⁵⁵ at
/// `MAX_ARR_CENTS` each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, Pod, Zeroable)]
#[repr(C)]
pub struct Wide {
    high: i64,
    low: i64,
}

impl Wide {
    pub fn of(v: i128) -> Wide {
        Wide { high: i64::try_from(v >> 32).expect("below 2⁹⁵"), low: (v & 0xffff_ffff) as i64 }
    }

    pub fn value(&self) -> i128 {
        ((self.high as i128) << 32) + self.low as i128
    }
}

/// Sums of a retention cohort in cents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, Pod, Zeroable)]
#[repr(C)]
pub struct Cohort {
    pub start: i64,
    pub current: i64,
    pub capped: i64,
}

impl Cohort {
    pub fn of(share: CohortShare) -> Self {
        Cohort { start: share.start, current: share.current, capped: share.capped }
    }

    pub fn nrr(&self) -> Option<f64> {
        (self.start > 0).then(|| self.current as f64 / self.start as f64)
    }

    pub fn grr(&self) -> Option<f64> {
        (self.start > 0).then(|| self.capped as f64 / self.start as f64)
    }
}

impl Totals {
    /// Adds (`sign` = 1) or subtracts (-1) `o`, field by field.
    pub fn add(&mut self, o: &Totals, sign: i64) {
        let theirs: &[i64] = bytemuck::cast_slice(std::slice::from_ref(o));
        let ours: &mut [i64] = bytemuck::cast_slice_mut(std::slice::from_mut(self));
        if sign >= 0 {
            ours.iter_mut().zip(theirs).for_each(|(a, b)| *a += b);
        } else {
            ours.iter_mut().zip(theirs).for_each(|(a, b)| *a -= b);
        }
    }

    /// `self − o`, field by field.
    pub fn minus(&self, o: &Totals) -> Totals {
        let mut d = *self;
        d.add(o, -1);
        d
    }

    pub fn set_flows(&mut self, f: Flows) {
        self.expansion_qtd = Wide::of(f.expansion);
        self.contraction_qtd = Wide::of(f.contraction);
        self.churned_qtd = Wide::of(f.churned);
    }
}

/// The scopes an account's contribution was added to, as indices into the
/// scope tables (interned once per name, so the hot path hashes no strings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScopeKeys {
    pub segment: u32,
    pub region: u32,
    pub csm: Option<u32>,
}

/// One scope's totals and first-response-time multiset.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    pub totals: Totals,
    /// Exact first-response times (µs) → how many tickets have it.
    pub first_responses: BTreeMap<i64, u64>,
    pub first_response_count: u64,
}

impl Scope {
    fn add_first_responses(&mut self, values: &[i64], sign: i64) {
        for &v in values {
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

/// The scopes of one kind (segments, regions or CSMs), by interned name.
/// A scope with no accounts stays in the table but is not listed.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ScopeTable {
    ids: FastMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
    scopes: Vec<Scope>,
}

impl ScopeTable {
    pub fn intern(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.ids.insert(name.clone(), i);
        self.names.push(name.clone());
        self.scopes.push(Scope::default());
        i
    }

    /// The scope of a name, if it holds accounts.
    pub fn get(&self, name: &str) -> Option<&Scope> {
        self.ids.get(name).map(|&i| &self.scopes[i as usize]).filter(|s| !s.is_empty())
    }

    pub fn name(&self, i: u32) -> &Arc<str> {
        &self.names[i as usize]
    }

    pub fn find(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    pub fn scope(&self, i: u32) -> &Scope {
        &self.scopes[i as usize]
    }

    /// Scopes ever interned (empty ones included): indices `0..interned`.
    pub fn interned(&self) -> u32 {
        self.names.len() as u32
    }

    /// Scopes holding at least one account.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Scope)> {
        self.names.iter().zip(&self.scopes).filter(|(_, s)| !s.is_empty())
    }

    fn at(&mut self, i: u32) -> &mut Scope {
        &mut self.scopes[i as usize]
    }
}

/// Every scope of the portfolio.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Scopes {
    pub portfolio: Scope,
    pub segments: ScopeTable,
    pub regions: ScopeTable,
    pub csms: ScopeTable,
    pub unassigned: Scope,
}

impl Scopes {
    /// Applies `f` to every scope of `keys`.
    fn each(&mut self, keys: ScopeKeys, mut f: impl FnMut(&mut Scope)) {
        f(&mut self.portfolio);
        f(self.segments.at(keys.segment));
        f(self.regions.at(keys.region));
        match keys.csm {
            Some(c) => f(self.csms.at(c)),
            None => f(&mut self.unassigned),
        }
    }

    /// Adds `sign` × `totals` to every scope of `keys`.
    pub fn add_totals(&mut self, keys: ScopeKeys, totals: &Totals, sign: i64) {
        self.each(keys, |s| s.totals.add(totals, sign));
    }

    /// Adds (`sign` = 1) or withdraws (-1) first-response times under `keys`.
    pub fn add_first_responses(&mut self, keys: ScopeKeys, values: &[i64], sign: i64) {
        if !values.is_empty() {
            self.each(keys, |s| s.add_first_responses(values, sign));
        }
    }
}

/// The multiset difference of two sorted lists: (only in `old`, only in `new`).
pub fn sorted_diff(old: &[i64], new: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let (mut gone, mut came) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                gone.push(*a);
                i += 1;
            }
            (Some(a), None) => {
                gone.push(*a);
                i += 1;
            }
            (_, Some(b)) => {
                came.push(*b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (gone, came)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_multiset_difference() {
        assert_eq!(sorted_diff(&[1, 2, 2, 5], &[2, 3, 5, 5]), (vec![1, 2], vec![3, 5]));
        assert_eq!(sorted_diff(&[], &[1]), (vec![], vec![1]));
        assert_eq!(sorted_diff(&[4], &[]), (vec![4], vec![]));
    }

    /// QTD flows of many accounts, each near the most one account can
    /// reach in a quarter of hostile revenue events, sum without overflow,
    /// and withdrawing one gives the others' sum exactly.
    #[test]
    fn qtd_flow_sums_do_not_overflow() {
        let mut scope = Totals::default();
        let each: i128 = (1 << 70) + 12_345;
        let one = |v: i128| {
            let mut t = Totals::default();
            t.set_flows(Flows { expansion: v, contraction: v / 2, churned: 1 });
            t
        };
        for _ in 0..1000 {
            scope.add(&one(each), 1);
        }
        assert_eq!(scope.expansion_qtd.value(), 1000 * each);
        assert_eq!(scope.contraction_qtd.value(), 1000 * (each / 2));
        scope.add(&one(each), -1);
        assert_eq!(scope.expansion_qtd.value(), 999 * each);
        let moved = one(each + 7).minus(&one(each));
        scope.add(&moved, 1);
        assert_eq!(scope.expansion_qtd.value(), 999 * each + 7);
        assert_eq!(scope.churned_qtd.value(), 999);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Scope::default();
        let values: Vec<i64> = (1..=10).map(|m| m * 60_000_000).collect();
        s.add_first_responses(&values, 1);
        assert_eq!(s.first_response_percentile(50), Some(5 * 60_000_000));
        assert_eq!(s.first_response_percentile(90), Some(9 * 60_000_000));
        assert_eq!(s.first_response_percentile(99), Some(10 * 60_000_000));
        s.add_first_responses(&values, -1);
        assert_eq!(s.first_response_percentile(50), None);
        assert!(s.first_responses.is_empty());
    }
}
