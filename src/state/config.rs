//! The parameters of the fold (SPEC §2–§4), derived from the configuration.

use super::health::Weights;
use crate::alert::rules::{Rules, default_rules};
use crate::event::Topic;
use crate::exact::Decimal;
use crate::time::{MICROS_PER_MIN, days};

/// Everything the fold needs to know beyond the events themselves.
#[derive(Clone, Debug, PartialEq)]
pub struct StateConfig {
    /// Largest accepted message, in bytes (`kafka.max_message_bytes`).
    pub max_message_bytes: usize,
    /// Events older than their partition's largest ts minus this are `late` (µs).
    pub allowed_lateness: i64,
    /// Events further than this ahead of the wall clock are `future_ts` (µs).
    pub max_future_skew: i64,
    /// How long an accepted `event_id` is remembered, in event time (µs).
    pub dedup_horizon: i64,
    /// Health component weights: adoption, engagement, support, sentiment.
    pub weights: Weights,
    /// Tier thresholds on the exact score: green >= `green`, yellow >= `yellow`.
    pub green: Decimal,
    pub yellow: Decimal,
    /// First-response SLA per priority p1..p4 (µs).
    pub sla: [i64; 4],
    /// Features that count for adoption; empty means every feature.
    pub core_features: Vec<String>,
    /// Alert rules (§5).
    pub rules: Rules,
    /// The configured names of the input topics, by role: the checkpoint
    /// stores the positions with them, and a restore drops the positions of
    /// a role whose topic was renamed since (SPEC §18 "Instances").
    pub topics: [String; 4],
    /// Cardinality limits (§18).
    pub limits: Limits,
    /// `history.resolution` (µs): the scope snapshots' boundaries are its
    /// multiples since the Unix epoch (SPEC §15).
    pub resolution: i64,
}

/// Cardinality limits (§18 "Cardinality"): what one producer can make the
/// engine hold, so that no input can make it grow without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Distinct accounts per input topic-partition; events of further new
    /// accounts in that partition are rejected as `limit`.
    pub max_accounts_per_partition: u64,
    /// Distinct real features live in the 30-day window; further ones count
    /// under the feature [`OTHER_FEATURE`].
    pub max_features: usize,
    /// Open tickets per account; an event that would open one more is `limit`.
    pub max_open_tickets_per_account: u64,
    /// Lifecycle events kept per ticket; further ones are `limit`.
    pub max_events_per_ticket: usize,
}

/// The feature that features beyond `limits.max_features` count under.
pub const OTHER_FEATURE: &str = "(other)";

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_accounts_per_partition: 100_000,
            max_features: 1_000,
            max_open_tickets_per_account: 10_000,
            max_events_per_ticket: 1_000,
        }
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            max_message_bytes: 1 << 20,
            allowed_lateness: days(35),
            max_future_skew: 60 * MICROS_PER_MIN,
            dedup_horizon: days(7),
            weights: Weights::default_weights(),
            green: Decimal::int(70),
            yellow: Decimal::int(40),
            sla: [60 * MICROS_PER_MIN, 240 * MICROS_PER_MIN, 1440 * MICROS_PER_MIN, 4320 * MICROS_PER_MIN],
            core_features: Vec::new(),
            rules: Rules::parse(&default_rules(), &Topic::ALL.map(|t| t.default_name().to_owned()))
                .expect("the default rules are valid"),
            topics: Topic::ALL.map(|t| t.default_name().to_owned()),
            limits: Limits::default(),
            resolution: 5 * MICROS_PER_MIN,
        }
    }
}
