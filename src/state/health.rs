//! The health score (SPEC §4): four components, weighted, and the tier.

use super::account::Metrics;
use super::config::StateConfig;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// Components in the order adoption, engagement, support, sentiment.
pub const COMPONENTS: [&str; 4] = ["adoption", "engagement", "support", "sentiment"];

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Health {
    pub components: [f64; 4],
    /// Unrounded; tiers, ranks, histograms and alert rules use this.
    pub score: f64,
    pub tier: Tier,
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
        let support = 100.0 - (penalty.min(100)) as f64;
        let sentiment = match m.csat_avg() {
            None => 60.0,
            Some(avg) => 100.0 * (avg - 1.0) / 4.0,
        };
        let c = [adoption, engagement, support, sentiment];
        let w = cfg.weights;
        let num = w[0] * c[0] + w[1] * c[1] + w[2] * c[2] + w[3] * c[3];
        let den = w[0] + w[1] + w[2] + w[3];
        let score = num / den;
        let tier = if score >= cfg.green {
            Tier::Green
        } else if score >= cfg.yellow {
            Tier::Yellow
        } else {
            Tier::Red
        };
        Health { components: c, score, tier }
    }

    /// The score as a fixed-point integer (10⁻⁹), so that sums of scores over a
    /// scope can be maintained by addition and subtraction without drift.
    pub fn score_fixed(&self) -> i64 {
        (self.score * 1e9).round() as i64
    }

    /// Histogram bucket 0..=9 of [0,10), …, [90,100].
    pub fn bucket(&self) -> usize {
        ((self.score / 10.0).floor().max(0.0) as usize).min(9)
    }
}

/// Rounds half away from zero to one decimal, as scores are reported.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
