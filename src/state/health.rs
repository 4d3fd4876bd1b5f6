//! The health score (SPEC §4): four components, weighted, and the tier.

use super::account::Metrics;
use super::config::StateConfig;
use crate::exact::{Decimal, Exact, Ratio};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Tier {
    /// Ordered worst first, which is the CSM priority order (§3.4).
    #[default]
    Red,
    Yellow,
    Green,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Green, Tier::Yellow, Tier::Red];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Red => "red",
            Tier::Yellow => "yellow",
            Tier::Green => "green",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Health weights (§4) as configured decimals, and as integers of one
/// common decimal scale, so the weighted sum is a ratio of integers.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub decimals: [Decimal; 4],
    units: [u128; 4],
    total: u128,
}

impl Weights {
    /// Fails unless every weight is >= 0 and one is > 0.
    pub fn new(decimals: [Decimal; 4]) -> Result<Weights, String> {
        if decimals.iter().any(|d| d.units < 0) {
            return Err("every weight must be a number >= 0".into());
        }
        let scale = decimals.iter().map(|d| d.scale).max().unwrap_or(0);
        let units = decimals.map(|d| d.units as u128 * 10u128.pow(scale - d.scale));
        let total = units.iter().sum::<u128>();
        if total == 0 {
            return Err("at least one weight must be > 0".into());
        }
        Ok(Weights { decimals, units, total })
    }

    /// Weights written as these floats (their shortest decimals).
    pub fn from_f64(w: [f64; 4]) -> Result<Weights, String> {
        let [a, e, s, t] = w.map(Decimal::from_f64);
        Weights::new([a?, e?, s?, t?])
    }

    /// The defaults of §4: 0.35, 0.20, 0.25, 0.20.
    pub fn default_weights() -> Weights {
        Weights::from_f64([0.35, 0.20, 0.25, 0.20]).expect("valid")
    }

    pub fn f64(&self) -> [f64; 4] {
        self.decimals.map(|d| d.value)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    /// As reported (floating point, rounded for display).
    pub components: [f64; 4],
    /// Unrounded, as reported (floating point).
    pub score: f64,
    /// Decided on `exact`.
    pub tier: Tier,
    /// The score exactly: tiers, ranks, histograms and alert rules use this.
    pub exact: Exact,
    /// The components exactly (for rules on them).
    pub exact_components: [Ratio; 4],
}

impl Health {
    pub fn score(m: &Metrics, seats: u64, cfg: &StateConfig) -> Health {
        let adoption = if seats > 0 {
            (100.0 * m.active_users_30d as f64 / seats as f64).min(100.0)
        } else if m.active_users_30d > 0 {
            100.0
        } else {
            0.0
        };
        let (prev, cur) = (m.usage_events_prev_7d as f64, m.usage_events_7d as f64);
        let engagement = if prev == 0.0 {
            if cur > 0.0 { 100.0 } else { 0.0 }
        } else {
            (50.0 + 50.0 * (cur - prev) / prev).clamp(0.0, 100.0)
        };
        let penalty = 30 * m.open[0] + 15 * m.open[1] + 5 * (m.open[2] + m.open[3]) + 20 * m.escalated_open;
        let support_points = 100 - penalty.min(100);
        let support = support_points as f64;
        let sentiment = match m.csat_avg() {
            None => 60.0,
            Some(avg) => 100.0 * (avg - 1.0) / 4.0,
        };
        let c = [adoption, engagement, support, sentiment];
        let w = cfg.weights.f64();
        let num = w[0] * c[0] + w[1] * c[1] + w[2] * c[2] + w[3] * c[3];
        let den = w[0] + w[1] + w[2] + w[3];
        let score = num / den;
        let exact_components = exact_components(m, seats, support_points);
        let exact = weighted(&exact_components, &cfg.weights);
        let tier = if exact.cmp_ratio(&cfg.green.ratio()).is_ge() {
            Tier::Green
        } else if exact.cmp_ratio(&cfg.yellow.ratio()).is_ge() {
            Tier::Yellow
        } else {
            Tier::Red
        };
        Health { components: c, score, tier, exact, exact_components }
    }

    /// The exact score rounded (half away from zero) to a fixed-point integer
    /// of 10⁻⁹, so that sums of scores over a scope can be maintained by
    /// addition and subtraction without drift (`avg_score`).
    pub fn score_fixed(&self) -> i64 {
        self.exact.round_scaled(1_000_000_000)
    }

    /// Histogram bucket 0..=9 of [0,10), …, [90,100], of the exact score.
    pub fn bucket(&self) -> usize {
        (self.exact.floor_i64().max(0) / 10).min(9) as usize
    }
}

/// The four components of §4 as exact ratios (adoption, engagement,
/// support, sentiment); each denominator is a count (seats, events, csat
/// scores) or 1.
fn exact_components(m: &Metrics, seats: u64, support_points: u64) -> [Ratio; 4] {
    let hundred = Ratio::int(100);
    let users = m.active_users_30d as u128;
    let adoption = match seats as u128 {
        0 if users > 0 => hundred,
        0 => Ratio::ZERO,
        s if users >= s => hundred,
        s => Ratio::new((100 * users) as i128, s),
    };
    let (prev, cur) = (m.usage_events_prev_7d as u128, m.usage_events_7d as u128);
    // 50 + 50·(cur − prev)/prev = 50·cur/prev, clamped to 100 (never below 0).
    let engagement = match prev {
        0 if cur > 0 => hundred,
        0 => Ratio::ZERO,
        p if cur >= 2 * p => hundred,
        p => Ratio::new((50 * cur) as i128, p),
    };
    // 100·(sum/count − 1)/4 = 25·(sum − count)/count.
    let sentiment = match m.csat.count as u128 {
        0 => Ratio::int(60),
        n => Ratio::new(25 * (m.csat.sum as i128 - n as i128), n),
    };
    [adoption, engagement, Ratio::int(support_points as i128), sentiment]
}

/// Σ wᵢ·cᵢ / Σ wᵢ exactly: in 128-bit integers when the products fit
/// (always for counts below 2³⁰ or so), else in big integers.
fn weighted(c: &[Ratio; 4], w: &Weights) -> Exact {
    weighted_small(c, w).map_or_else(|| weighted_big(c, w), Exact::Small)
}

fn weighted_small(c: &[Ratio; 4], w: &Weights) -> Option<Ratio> {
    let [a, e, s, t] = c.map(|r| r.den());
    // Products of the other denominators, so Σ wᵢ·nᵢ·Πⱼ≠ᵢ dⱼ / (Σw·Πd).
    let (ae, at, et) = (a.checked_mul(e)?, a.checked_mul(t)?, e.checked_mul(t)?);
    let aet = ae.checked_mul(t)?;
    let rest = [et.checked_mul(s)?, at.checked_mul(s)?, aet, ae.checked_mul(s)?];
    let den = w.total.checked_mul(aet.checked_mul(s)?)?;
    let mut num: i128 = 0;
    for i in 0..4 {
        let factor = i128::try_from(w.units[i].checked_mul(rest[i])?).ok()?;
        num = num.checked_add(factor.checked_mul(c[i].num())?)?;
    }
    Some(Ratio::new(num, den))
}

fn weighted_big(c: &[Ratio; 4], w: &Weights) -> Exact {
    use num_bigint::{BigInt, BigUint};
    let dens: Vec<BigUint> = c.iter().map(|r| BigUint::from(r.den())).collect();
    let all: BigUint = dens.iter().product();
    let mut num = BigInt::from(0);
    for i in 0..4 {
        let rest = &all / &dens[i];
        num += BigInt::from(c[i].num()) * BigInt::from(rest * w.units[i]);
    }
    Exact::of_big(num, all * w.total)
}

pub use crate::metric::round1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::window::Scores;

    /// An account's figures: active users and seats, usage events this and
    /// last week, open P1s, escalated open tickets, open P3s, csat (sum, count).
    fn metrics(users: u64, events: (u64, u64), p1: u64, escalated: u64, p3: u64, csat: (u64, u64)) -> Metrics {
        Metrics {
            active_users_7d: users,
            active_users_30d: users,
            usage_events_7d: events.0,
            usage_events_prev_7d: events.1,
            features_30d: 1,
            open: [p1, 0, p3, 0],
            open_total: p1 + p3,
            escalated_open: escalated,
            sla_breached: 0,
            csat: Scores { sum: csat.0, count: csat.1 },
            arr: 0,
            health: Health::default(),
        }
    }

    /// The account of the report: adoption 1/6 of 100, engagement 100,
    /// support 50, sentiment 1/12 of 100; exactly 40 with the default
    /// weights, 39.99999999999999 in floating point.
    #[test]
    fn an_exact_score_of_40_is_yellow() {
        let cfg = StateConfig::default();
        let h = Health::score(&metrics(1, (1, 0), 1, 1, 0, (4, 3)), 6, &cfg);
        assert!(h.score < 40.0, "the floating-point score is {} (the case this guards)", h.score);
        assert_eq!(round1(h.score), 40.0);
        assert_eq!(h.exact, Exact::Small(Ratio::int(40)));
        assert_eq!(h.tier, Tier::Yellow);
        assert_eq!(h.bucket(), 4, "[40, 50)");
        assert_eq!(h.exact_components[0], Ratio::new(50, 3));
        assert_eq!(h.exact_components[3], Ratio::new(25, 3));
    }

    /// Exactly on the other boundaries: 70 is green, 50 falls in [50, 60),
    /// just below 40 is red.
    #[test]
    fn exact_boundaries_decide_tiers_and_buckets() {
        let cfg = StateConfig::default();
        // adoption 100, engagement 100/3, support 100, sentiment 50/3.
        let seventy = Health::score(&metrics(1, (2, 3), 0, 0, 0, (5, 3)), 1, &cfg);
        assert!(seventy.score < 70.0, "{}", seventy.score);
        assert_eq!((seventy.exact.clone(), seventy.tier), (Exact::Small(Ratio::int(70)), Tier::Green));
        assert_eq!(seventy.bucket(), 7);
        // adoption 200/3, engagement 100, support 20, sentiment 25/3.
        let fifty = Health::score(&metrics(2, (1, 0), 2, 1, 0, (4, 3)), 3, &cfg);
        assert!(fifty.score < 50.0, "{}", fifty.score);
        assert_eq!((fifty.exact.clone(), fifty.bucket()), (Exact::Small(Ratio::int(50)), 5));
        // One csat point less than the exact-40 account: 40 − 0.2·25/3.
        let below = Health::score(&metrics(1, (1, 0), 1, 1, 0, (3, 3)), 6, &cfg);
        assert_eq!((below.exact.clone(), below.tier), (Exact::Small(Ratio::new(115, 3)), Tier::Red));
        // The top bucket holds 100.
        let top = Health::score(&metrics(5, (9, 3), 0, 0, 0, (10, 2)), 5, &cfg);
        assert_eq!((top.exact.clone(), top.bucket(), top.tier), (Exact::Small(Ratio::int(100)), 9, Tier::Green));
    }

    /// Configured thresholds and weights are decimals: a threshold of 40.1
    /// is not the binary 40.1000000000000014…, weights need not sum to 1.
    #[test]
    fn configured_thresholds_and_weights_are_decimals() {
        let cfg = StateConfig {
            weights: Weights::from_f64([0.1, 0.1, 0.1, 0.7]).unwrap(),
            green: Decimal::from_f64(90.1).unwrap(),
            yellow: Decimal::from_f64(40.1).unwrap(),
            ..StateConfig::default()
        };
        // adoption 0, engagement 0, support 100, sentiment 43 (csat 476 over
        // 175 scores): (0.1·100 + 0.7·43) / 1.0 = 40.1 exactly.
        let h = Health::score(&metrics(0, (0, 0), 0, 0, 0, (476, 175)), 0, &cfg);
        assert_eq!(h.exact, Exact::Small(Ratio::new(401, 10)));
        assert_eq!(h.tier, Tier::Yellow);
        let scaled = StateConfig { weights: Weights::from_f64([1.0, 1.0, 1.0, 7.0]).unwrap(), ..cfg.clone() };
        assert_eq!(Health::score(&metrics(0, (0, 0), 0, 0, 0, (476, 175)), 0, &scaled).tier, Tier::Yellow);
        assert!(Weights::from_f64([0.0, 0.0, 0.0, 0.0]).is_err());
        assert!(Weights::from_f64([-0.1, 0.5, 0.3, 0.3]).is_err());
    }

    /// Counts whose common denominator exceeds 128 bits take the big path and
    /// still decide exactly.
    #[test]
    fn scores_wider_than_128_bits_are_exact() {
        let cfg = StateConfig::default();
        let (seats, prev, count) = (u64::MAX, u64::MAX - 1, u64::MAX / 5);
        let h = Health::score(&metrics(seats - 1, (prev, prev), 0, 0, 0, (count * 3, count)), seats, &cfg);
        assert!(matches!(h.exact, Exact::Big(_)), "{:?}", h.exact);
        // 0.35·100·(1 − 1/seats) + 0.2·50 + 0.25·100 + 0.2·50 = 80 − 35/seats.
        assert!(h.exact < Exact::Small(Ratio::int(80)));
        assert!(h.exact > Exact::Small(Ratio::new(79_999_999, 1_000_000)));
        assert_eq!((h.tier, h.bucket()), (Tier::Green, 7));
        // The same score exactly 80 when every user is active.
        let full = Health::score(&metrics(seats, (prev, prev), 0, 0, 0, (count * 3, count)), seats, &cfg);
        assert_eq!(full.exact, Exact::Small(Ratio::int(80)));
        assert_eq!(full.bucket(), 8);
    }
}
