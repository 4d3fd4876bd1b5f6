//! The synthetic portfolio behind `cspulse demo` and the load tests: accounts,
//! usage, ticket lifecycles and revenue, as the JSON messages of SPEC §1.
//!
//! A small discrete-event simulation, pure and synchronous: time comes in as
//! arguments, nothing is read from a clock or written anywhere, and the same seed
//! with the same calls gives the same messages byte for byte.
//!
//! - Business events (ticket openings, expansions, contractions, CSM
//!   reassignments) are Poisson processes in event time, so their volume does not
//!   depend on the usage rate. Every later step (a ticket's first response, a
//!   renewal, a win-back) waits in one schedule, so lifecycles stay coherent
//!   across `tick` calls.
//! - Usage fills the rest of the event budget of `tick` (`events_per_sec`, with
//!   short ×5 bursts), spread over accounts by active users, health and the
//!   region's business hours.
//! - Every ~20 s of event time `tick` starts a decline arc on one account: its
//!   usage collapses, a p1 opens and is escalated, a second ticket follows with a
//!   poor CSAT; the account then recovers within minutes, lingers for an hour, or
//!   churns (and is won back hours later), so a demo shows tiers and alerts move.
//!
//! State is bounded: a fixed set of accounts, at most [`MAX_TICKETS`] live tickets
//! per account, and at most one scheduled step per live ticket or account process.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::event::Topic;
use crate::time::{MICROS_PER_DAY, MICROS_PER_MIN, MICROS_PER_SEC, Ts, days, format_date, format_rfc3339, utc_day};

const HOUR: i64 = 60 * MICROS_PER_MIN;

/// Product features used in usage events.
pub const FEATURES: [&str; 8] =
    ["reports", "dashboards", "api", "integrations", "alerts", "exports", "workflows", "search"];
/// Segment names, largest customers first.
pub const SEGMENTS: [&str; 3] = ["enterprise", "mid-market", "smb"];
/// Region names.
pub const REGIONS: [&str; 4] = ["na", "emea", "apac", "latam"];

const SEGMENT_SHARE: [f64; 3] = [0.15, 0.35, 0.50];
const REGION_SHARE: [f64; 4] = [0.45, 0.30, 0.15, 0.10];
/// Hours from UTC to the region's typical business clock, for daily usage cycles.
const REGION_UTC_OFFSET_H: [i64; 4] = [-6, 1, 8, -3];
/// Relative CSM workload per account of a segment: enterprise books are small.
const SEGMENT_WORKLOAD: [f64; 3] = [4.0, 1.5, 0.6];
/// Ticket openings per account per day, by segment (before the health factor).
const TICKETS_PER_DAY: [f64; 3] = [1.0, 0.35, 0.1];
/// Price per seat and year in cents, by segment.
const SEAT_PRICE_CENTS: [(i64, i64); 3] = [(45_000, 140_000), (30_000, 80_000), (18_000, 60_000)];

/// Live tickets kept per account; openings beyond it are skipped.
pub const MAX_TICKETS: usize = 20;
/// Arc tickets may exceed [`MAX_TICKETS`] by this much, so an arc always shows.
const ARC_TICKET_SLACK: usize = 4;
/// At most this share of accounts is churned at once (renewals and arcs then
/// keep the customer).
const MAX_CHURNED_SHARE: f64 = 0.025;

const BURST_FACTOR: f64 = 5.0;
/// Seconds between burst starts: at least 75 s apart, so a 60 s window holds at
/// most one burst.
const BURST_GAP_S: (f64, f64) = (75.0, 120.0);
const BURST_LEN_S: (f64, f64) = (2.0, 5.0);
/// Base-rate divisor that makes the long-run mean, bursts included, `events_per_sec`.
const BURST_NORM: f64 =
    1.0 + (BURST_FACTOR - 1.0) * ((BURST_LEN_S.0 + BURST_LEN_S.1) / 2.0) / ((BURST_GAP_S.0 + BURST_GAP_S.1) / 2.0);
/// Seconds between decline arcs.
const ARC_GAP_S: (f64, f64) = (15.0, 25.0);

/// The shape of the portfolio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortfolioSpec {
    pub accounts: usize,
    pub csms: usize,
    /// Mean users (licensed seats × adoption) per account. Seat counts scale with
    /// it; at [`PortfolioSpec::DEMO_USERS_PER_ACCOUNT`] enterprise accounts have
    /// 200–2000 seats, mid-market 50–200, smb 5–50.
    pub users_per_account: usize,
    pub seed: u64,
}

impl PortfolioSpec {
    /// The users per account that the segment seat ranges give on their own
    /// (enterprise seats dominate the mean).
    pub const DEMO_USERS_PER_ACCOUNT: usize = 75;

    /// The `cspulse demo` portfolio: 2000 accounts, 40 CSMs.
    pub fn demo() -> Self {
        PortfolioSpec { accounts: 2000, csms: 40, users_per_account: Self::DEMO_USERS_PER_ACCOUNT, seed: 7 }
    }
}

impl Default for PortfolioSpec {
    fn default() -> Self {
        Self::demo()
    }
}

/// One message to produce: topic, key (the account id), JSON payload, and
/// the event time the payload carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: Topic,
    pub key: String,
    pub payload: Vec<u8>,
    pub ts: Ts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Healthy,
    Fragile,
    AtRisk,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Recover,
    Linger,
    Churn,
}

/// The next step of a ticket; ticket steps run in order, each a delay after the
/// previous one.
#[derive(Clone, Copy, Debug)]
enum Step {
    FirstResponse,
    /// `bump`: the escalation raises the priority by one.
    Escalate {
        bump: bool,
    },
    Resolve,
    /// `score` 0: drawn from the account's health when sent.
    Csat {
        score: u8,
    },
    Reopen,
}

#[derive(Debug)]
struct Ticket {
    no: u32,
    /// 1 (p1) ..= 4 (p4).
    priority: u8,
    /// Steps still to come, last = next, each with its delay after the previous.
    steps: Vec<(Step, i64)>,
}

#[derive(Debug)]
struct Account {
    id: String,
    name: String,
    segment: usize,
    region: usize,
    csm: Option<u32>,
    seats: u32,
    /// Expansions stop here, so long runs stay bounded.
    max_seats: u32,
    /// Share of seats with active users.
    adoption: f64,
    price_cents: i64,
    arr_cents: i64,
    /// Renewal date relative to the anchor day, until anchored.
    renewal_offset: i32,
    renewal_day: i32,
    class: Class,
    /// 0..1: drives engagement, CSAT, ticket volume and revenue moves.
    health: f64,
    /// Feature indexes in order of preference; the first `feature_count` are used.
    features: [u8; 8],
    feature_count: u8,
    churned: bool,
    arc: Option<Outcome>,
    last_arc_end: Ts,
    /// Bumped on churn and win-back; scheduled account steps of an older epoch
    /// are void.
    epoch: u32,
    next_ticket: u32,
    tickets: Vec<Ticket>,
}

impl Account {
    fn active_users(&self) -> u32 {
        ((self.seats as f64 * self.adoption).round() as u32).max(1)
    }

    /// Relative tick usage: disengaged accounts barely show up, which keeps their
    /// week-over-week usage low for hours after the backfill.
    fn usage_weight(&self) -> f64 {
        let level = match self.class {
            Class::Healthy => 1.0,
            Class::Fragile => 0.03,
            Class::AtRisk => 0.008,
        };
        self.active_users() as f64 * (0.5 + self.health) * level
    }

    /// Right now, the share of normal usage (arcs collapse it, churn ends it).
    fn activity(&self) -> f64 {
        if self.churned {
            0.0
        } else if self.arc.is_some() {
            0.02
        } else {
            1.0
        }
    }

    fn effective_health(&self) -> f64 {
        if self.arc.is_some() { 0.1 } else { self.health }
    }
}

/// Scheduled steps. Ordered only so the schedule can hold them; ties are broken
/// by a sequence number first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Ticket { account: u32, ticket: u32 },
    Renewal { account: u32, epoch: u32 },
    Incident { account: u32 },
    ArcSecond { account: u32, epoch: u32 },
    ArcChurn { account: u32, epoch: u32 },
    ArcEnd { account: u32, epoch: u32 },
    Winback { account: u32, epoch: u32 },
}

#[derive(Clone, Copy, Debug)]
enum Proc {
    TicketOpen,
    Expansion,
    Contraction,
    Reassign,
}

const PROCS: [Proc; 4] = [Proc::TicketOpen, Proc::Expansion, Proc::Contraction, Proc::Reassign];

/// Rate per account and day of a business process.
fn proc_rate(p: Proc, a: &Account) -> f64 {
    if a.churned {
        return if matches!(p, Proc::Reassign) { 1.0 / 500.0 } else { 0.0 };
    }
    match p {
        Proc::TicketOpen => {
            TICKETS_PER_DAY[a.segment]
                * match a.class {
                    Class::Healthy => 1.0,
                    Class::Fragile => 1.6,
                    Class::AtRisk => 2.5,
                }
        }
        Proc::Expansion if a.seats < a.max_seats => match a.class {
            Class::Healthy => 1.0 / 240.0,
            Class::Fragile => 1.0 / 600.0,
            Class::AtRisk => 0.0,
        },
        Proc::Contraction if a.seats > 1 => match a.class {
            Class::Healthy => 1.0 / 900.0,
            Class::Fragile => 1.0 / 200.0,
            Class::AtRisk => 1.0 / 90.0,
        },
        Proc::Expansion | Proc::Contraction => 0.0,
        Proc::Reassign => 1.0 / 500.0,
    }
}

/// Cumulative weights for picking an index in proportion to its weight.
#[derive(Default)]
struct Weighted {
    cum: Vec<f64>,
}

impl Weighted {
    fn build(weights: impl Iterator<Item = f64>) -> Self {
        let mut total = 0.0;
        let cum = weights
            .map(|w| {
                total += w.max(0.0);
                total
            })
            .collect();
        Weighted { cum }
    }

    fn total(&self) -> f64 {
        self.cum.last().copied().unwrap_or(0.0)
    }

    fn pick(&self, rng: &mut SmallRng) -> Option<usize> {
        let total = self.total();
        if total <= 0.0 {
            return None;
        }
        let x = rng.random::<f64>() * total;
        let i = self.cum.partition_point(|&c| c <= x);
        Some(i.min(self.cum.len() - 1))
    }
}

/// The optional fields of a payload; the common ones are written by [`Emitter`].
#[derive(Default, Serialize)]
struct Fields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    /// `Some(None)` is written as `null`: unassigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    csm_id: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    segment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seats: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    renewal_date: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    feature: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    /// Exact cents as a literal with two decimals, never through a float.
    #[serde(skip_serializing_if = "Option::is_none")]
    arr: Option<&'a RawValue>,
}

/// `12345` cents → `123.45`.
fn cents_literal(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn priority_str(p: u8) -> &'static str {
    ["p1", "p2", "p3", "p4"][usize::from(p.clamp(1, 4)) - 1]
}

/// Writes payloads and hands out event ids.
struct Emitter {
    /// Part of every event id, so generators with other seeds never collide.
    tag: String,
    next_id: u64,
    out: Vec<Message>,
}

impl Emitter {
    fn push(&mut self, ts: Ts, topic: Topic, account_id: &str, fields: &Fields<'_>) {
        self.next_id += 1;
        let letter = match topic {
            Topic::Accounts => 'a',
            Topic::Usage => 'u',
            Topic::Tickets => 't',
            Topic::Revenue => 'r',
        };
        let event_id = format!("{letter}-{}-{}", self.tag, self.next_id);
        let mut payload = Vec::with_capacity(192);
        payload.extend_from_slice(b"{\"event_id\":");
        write_json(&mut payload, &event_id);
        payload.extend_from_slice(b",\"ts\":");
        write_json(&mut payload, &format_rfc3339(ts));
        payload.extend_from_slice(b",\"account_id\":");
        write_json(&mut payload, account_id);
        let rest = serde_json::to_vec(fields).expect("payload fields always serialize");
        if rest.len() > 2 {
            payload.push(b',');
            payload.extend_from_slice(&rest[1..]);
        } else {
            payload.push(b'}');
        }
        self.out.push(Message { topic, key: account_id.to_owned(), payload, ts });
    }
}

fn write_json<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(buf, value).expect("writing JSON to memory cannot fail");
}

/// Uniform in [lo, hi).
fn unif(rng: &mut SmallRng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Uniform duration in seconds, as microseconds.
fn secs(rng: &mut SmallRng, (lo, hi): (f64, f64)) -> i64 {
    (unif(rng, lo, hi) * MICROS_PER_SEC as f64) as i64
}

fn mins(rng: &mut SmallRng, lo: f64, hi: f64) -> i64 {
    (unif(rng, lo, hi) * MICROS_PER_MIN as f64) as i64
}

/// Log-normal with the given median (any unit) and spread.
fn lognormal(rng: &mut SmallRng, median: f64, sigma: f64) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    median * (sigma * z).exp()
}

/// Exponential gap for a rate per day, in microseconds (`Ts::MAX` for rate 0).
fn exp_gap(rng: &mut SmallRng, per_day: f64) -> i64 {
    if per_day <= 0.0 {
        return Ts::MAX;
    }
    let u = 1.0 - rng.random::<f64>();
    let gap = -u.ln() / per_day * MICROS_PER_DAY as f64;
    (gap as i64).max(1)
}

/// Share of a region's usage at instant `t`: office hours, evenings, nights,
/// weekends.
fn diurnal(region: usize, t: Ts) -> f64 {
    let local = t + REGION_UTC_OFFSET_H[region] * HOUR;
    let weekday = (local.div_euclid(MICROS_PER_DAY) + 3).rem_euclid(7); // 0 = Monday
    let hour = local.rem_euclid(MICROS_PER_DAY) / HOUR;
    let f = match hour {
        8..=17 => 1.0,
        6 | 7 | 18..=20 => 0.45,
        _ => 0.12,
    };
    if weekday >= 5 { f * 0.3 } else { f }
}

fn pick_share(rng: &mut SmallRng, shares: &[f64]) -> usize {
    let mut x = rng.random::<f64>() * shares.iter().sum::<f64>();
    for (i, s) in shares.iter().enumerate() {
        if x < *s {
            return i;
        }
        x -= s;
    }
    shares.len() - 1
}

fn csat_score(rng: &mut SmallRng, health: f64) -> u8 {
    let mean = 1.6 + 3.2 * health;
    (mean + unif(rng, -1.3, 1.3)).round().clamp(1.0, 5.0) as u8
}

const NAME_HEADS: [&str; 48] = [
    "Acme",
    "Globex",
    "Initech",
    "Vandelay",
    "Hooli",
    "Blue",
    "Silver",
    "Golden",
    "Iron",
    "Granite",
    "Cedar",
    "Maple",
    "Oak",
    "Pine",
    "River",
    "Harbor",
    "Summit",
    "Apex",
    "Pinnacle",
    "Vertex",
    "Horizon",
    "Atlas",
    "Orion",
    "Nova",
    "Polar",
    "Coastal",
    "Prairie",
    "Evergreen",
    "Northern",
    "Southern",
    "Bright",
    "Swift",
    "Clear",
    "True",
    "Bold",
    "Quantum",
    "Stellar",
    "Lunar",
    "Solar",
    "Crimson",
    "Emerald",
    "Sapphire",
    "Cobalt",
    "Copper",
    "Falcon",
    "Redwood",
    "Meridian",
    "Keystone",
];
const NAME_MIDS: [&str; 24] = [
    "stone", "field", "ridge", "wave", "point", "bridge", "forge", "light", "path", "leaf", "crest", "brook", "gate",
    "line", "peak", "bay", "works", "view", "wind", "star", "rock", "vale", "port", "mark",
];
const NAME_TAILS: [&str; 32] = [
    "Corp",
    "Inc",
    "Labs",
    "Systems",
    "Analytics",
    "Logistics",
    "Health",
    "Foods",
    "Energy",
    "Dynamics",
    "Partners",
    "Group",
    "Industries",
    "Software",
    "Robotics",
    "Media",
    "Financial",
    "Insurance",
    "Retail",
    "Motors",
    "Networks",
    "Biotech",
    "Consulting",
    "Manufacturing",
    "Holdings",
    "Technologies",
    "Solutions",
    "Studios",
    "Pharma",
    "Outfitters",
    "Capital",
    "Freight",
];

fn company_name(rng: &mut SmallRng) -> String {
    let head = NAME_HEADS[rng.random_range(0..NAME_HEADS.len())];
    let mid = NAME_MIDS[rng.random_range(0..NAME_MIDS.len())];
    let tail = NAME_TAILS[rng.random_range(0..NAME_TAILS.len())];
    match rng.random_range(0..3) {
        0 => format!("{head} {tail}"),
        1 => format!("{head}{mid} {tail}"),
        _ => {
            let mut m = mid.to_owned();
            m[..1].make_ascii_uppercase();
            format!("{head} {m} {tail}")
        }
    }
}

/// How many CSMs each segment gets: one per non-empty segment, the rest in
/// proportion to workload. With fewer CSMs than segments, all share all.
fn csm_pools(csms: usize, seg_counts: [usize; 3]) -> [Vec<u32>; 3] {
    let all: Vec<u32> = (0..csms as u32).collect();
    let nonempty = seg_counts.iter().filter(|&&c| c > 0).count();
    if csms == 0 || csms < nonempty {
        return [all.clone(), all.clone(), all];
    }
    let load: Vec<f64> = (0..3).map(|s| seg_counts[s] as f64 * SEGMENT_WORKLOAD[s]).collect();
    let load_total: f64 = load.iter().sum();
    let spare = csms - nonempty;
    let mut counts = [0usize; 3];
    let mut rema = [0f64; 3];
    for s in 0..3 {
        if seg_counts[s] > 0 {
            let exact = spare as f64 * load[s] / load_total;
            counts[s] = 1 + exact.floor() as usize;
            rema[s] = exact.fract();
        }
    }
    let mut left = csms - counts.iter().sum::<usize>();
    while left > 0 {
        let s = (0..3).filter(|&s| seg_counts[s] > 0).max_by(|&a, &b| rema[a].total_cmp(&rema[b]).then(b.cmp(&a)));
        let Some(s) = s else { break };
        counts[s] += 1;
        rema[s] = -1.0;
        left -= 1;
    }
    let mut next = 0u32;
    counts.map(|c| {
        let pool = (next..next + c as u32).collect();
        next += c as u32;
        pool
    })
}

/// Usage level over the backfill window, relative to the account's normal.
#[derive(Clone, Copy)]
enum Trend {
    Growth { from: Ts, span: i64, gain: f64 },
    Decline { from: Ts, ramp: i64, floor: f64 },
}

impl Trend {
    fn level(self, t: Ts) -> f64 {
        match self {
            Trend::Growth { from, span, gain } => 1.0 + gain * ((t - from) as f64 / span.max(1) as f64).clamp(0.0, 1.0),
            Trend::Decline { from, ramp, floor } => {
                if t <= from {
                    1.0
                } else {
                    let x = ((t - from) as f64 / ramp.max(1) as f64).min(1.0);
                    1.0 - (1.0 - floor) * x
                }
            }
        }
    }

    fn max_level(self) -> f64 {
        match self {
            Trend::Growth { gain, .. } => 1.0 + gain.max(0.0),
            Trend::Decline { .. } => 1.0,
        }
    }
}

/// The synthetic portfolio and its clock.
pub struct Generator {
    rng: SmallRng,
    accounts: Vec<Account>,
    csm_ids: Vec<String>,
    csm_pools: [Vec<u32>; 3],
    emit: Emitter,
    /// Scheduled steps: (due, sequence, step).
    due: BinaryHeap<Reverse<(Ts, u64, Due)>>,
    due_seq: u64,
    /// Next arrival of each business process, in [`PROCS`] order.
    next_at: [Ts; 4],
    proc_weights: [Weighted; 4],
    usage_weights: Weighted,
    /// Account weights changed; rebuild before the next pick.
    weights_dirty: bool,
    anchored: bool,
    /// Nothing is stamped before this (the start of the interval being produced).
    floor: Ts,
    /// Decline arcs run only in `tick`.
    next_arc_at: Option<Ts>,
    /// Burst windows [start, end), oldest first, reaching past the last tick.
    bursts: VecDeque<(Ts, Ts)>,
    /// Fractional usage events owed to the rate.
    usage_carry: f64,
    churned_count: usize,
}

impl Generator {
    pub fn new(spec: PortfolioSpec) -> Self {
        let mut rng = SmallRng::seed_from_u64(spec.seed);
        let n = spec.accounts;
        let seat_scale = spec.users_per_account as f64 / PortfolioSpec::DEMO_USERS_PER_ACCOUNT as f64;

        let n_ent = (n as f64 * SEGMENT_SHARE[0]).round() as usize;
        let n_mid = ((n as f64 * SEGMENT_SHARE[1]).round() as usize).min(n - n_ent);
        let seg_counts = [n_ent, n_mid, n - n_ent - n_mid];
        let mut segments: Vec<usize> = (0..3).flat_map(|s| std::iter::repeat_n(s, seg_counts[s])).collect();
        segments.shuffle(&mut rng);

        let width = spec.csms.to_string().len().max(2);
        let csm_ids: Vec<String> = (1..=spec.csms).map(|i| format!("csm-{i:0width$}")).collect();
        let csm_pools = csm_pools(spec.csms, seg_counts);

        let mut names = HashSet::with_capacity(n);
        let mut accounts = Vec::with_capacity(n);
        for (i, &segment) in segments.iter().enumerate() {
            let mut name = company_name(&mut rng);
            let mut tries = 0;
            while names.contains(&name) {
                tries += 1;
                name = if tries < 20 { company_name(&mut rng) } else { format!("{name} {}", i + 1) };
            }
            names.insert(name.clone());

            let u: f64 = rng.random();
            let raw_seats = match segment {
                0 => 200.0 * 10f64.powf(u.powi(3)),
                1 => 50.0 * 4f64.powf(u.powi(2)),
                _ => 5.0 * 10f64.powf(u.powf(1.5)),
            };
            let seats = ((raw_seats * seat_scale).round() as u32).max(1);
            let class = match rng.random::<f64>() {
                x if x < 0.65 => Class::Healthy,
                x if x < 0.90 => Class::Fragile,
                _ => Class::AtRisk,
            };
            let (health, adoption, feature_range) = match class {
                Class::Healthy => (unif(&mut rng, 0.7, 1.0), unif(&mut rng, 0.65, 0.95), 4..9),
                Class::Fragile => (unif(&mut rng, 0.4, 0.7), unif(&mut rng, 0.4, 0.7), 3..7),
                Class::AtRisk => (unif(&mut rng, 0.1, 0.35), unif(&mut rng, 0.12, 0.35), 2..5),
            };
            let (lo, hi) = SEAT_PRICE_CENTS[segment];
            let price_cents = rng.random_range(lo..hi);
            let csm = if rng.random_bool(0.03) || csm_pools[segment].is_empty() {
                None
            } else {
                let pool = &csm_pools[segment];
                Some(pool[rng.random_range(0..pool.len())])
            };
            let renewal_offset =
                if rng.random_bool(0.07) { rng.random_range(-28..0) } else { rng.random_range(0..366) };
            let mut features = [0, 1, 2, 3, 4, 5, 6, 7];
            features.shuffle(&mut rng);
            accounts.push(Account {
                id: format!("acc-{:05}", i + 1),
                name,
                segment,
                region: pick_share(&mut rng, &REGION_SHARE),
                csm,
                seats,
                max_seats: seats.saturating_mul(3),
                adoption,
                price_cents,
                arr_cents: i64::from(seats) * price_cents,
                renewal_offset,
                renewal_day: 0,
                class,
                health,
                features,
                feature_count: rng.random_range(feature_range),
                churned: false,
                arc: None,
                last_arc_end: Ts::MIN / 4,
                epoch: 0,
                next_ticket: 0,
                tickets: Vec::new(),
            });
        }

        Generator {
            rng,
            accounts,
            csm_ids,
            csm_pools,
            emit: Emitter { tag: format!("{:x}", spec.seed), next_id: 0, out: Vec::new() },
            due: BinaryHeap::new(),
            due_seq: 0,
            next_at: [Ts::MAX; 4],
            proc_weights: Default::default(),
            usage_weights: Weighted::default(),
            weights_dirty: true,
            anchored: false,
            floor: Ts::MIN,
            next_arc_at: None,
            bursts: VecDeque::new(),
            usage_carry: 0.0,
            churned_count: 0,
        }
    }

    /// The CSM ids of the portfolio (`csm-01`, …).
    pub fn csm_ids(&self) -> &[String] {
        &self.csm_ids
    }

    /// The account ids of the portfolio.
    pub fn account_ids(&self) -> impl Iterator<Item = &str> {
        self.accounts.iter().map(|a| a.id.as_str())
    }

    /// Account upserts for every account at the start of the window, their
    /// initial `new` revenue events at contract starts spread over the two years
    /// before the window (so quarter-to-date and trailing-twelve-month cohorts
    /// exist), then `history_days` of usage, tickets, revenue moves and
    /// renewals, stamped in (start − history_days, start] (everything at
    /// `start` when `history_days` is 0), sorted by ts. Meant to be
    /// called once, before [`Generator::tick`]; a later call only re-sends the
    /// account upserts at `start` and the business events up to it.
    pub fn backfill(&mut self, start: Ts, history_days: i64) -> Vec<Message> {
        if self.anchored {
            self.floor = self.floor.max(start);
            for i in 0..self.accounts.len() {
                self.emit_upsert(start, i);
            }
            self.run_until(start);
            return self.take_sorted();
        }
        let span = days(history_days.max(0));
        let window_start = start - span;
        let boot = (span / 4).min(MICROS_PER_MIN);
        self.anchor(start, window_start);
        let n = self.accounts.len().max(1) as i64;
        for i in 0..self.accounts.len() {
            let ts = if span == 0 { start } else { window_start + 1 + boot * i as i64 / n };
            self.emit_upsert(ts, i);
            let contract_start = if span == 0 { start } else { window_start - days(self.rng.random_range(1..=730)) };
            self.emit_revenue(contract_start, i, "new");
        }
        let activity_start = if span == 0 { start } else { window_start + boot + MICROS_PER_SEC };
        self.floor = activity_start;
        if activity_start < start {
            for i in 0..self.accounts.len() {
                self.history_usage(i, activity_start, start);
                if self.accounts[i].class == Class::AtRisk && self.rng.random_bool(0.5) {
                    let at = start - secs(&mut self.rng, (2.0 * 3600.0, 3.0 * 86_400.0));
                    if at > activity_start {
                        self.schedule(at, Due::Incident { account: i as u32 });
                    }
                }
            }
        }
        self.restart_procs(activity_start);
        self.run_until(start);
        self.take_sorted()
    }

    /// Events for the interval (from, to]: usage at `events_per_sec` on average
    /// (base rate with occasional ×5 bursts of a few seconds), ticket lifecycles,
    /// revenue and account changes, and a new decline arc every ~20 s. Every ts
    /// lies in (from, to]; the messages are sorted by ts.
    pub fn tick(&mut self, from: Ts, to: Ts, events_per_sec: f64) -> Vec<Message> {
        if to <= from {
            return Vec::new();
        }
        self.floor = from + 1;
        if !self.anchored {
            self.anchor(from, from);
            for i in 0..self.accounts.len() {
                self.emit_upsert(from + 1, i);
                self.emit_revenue(from + 1, i, "new");
            }
        }
        // After a pause, resume the processes instead of replaying what was missed.
        for k in 0..PROCS.len() {
            if self.next_at[k] <= from {
                self.ensure_weights();
                self.next_at[k] = from.saturating_add(exp_gap(&mut self.rng, self.proc_weights[k].total()));
            }
        }
        match self.next_arc_at {
            Some(t) if t > from => {}
            Some(_) => self.next_arc_at = Some(from + secs(&mut self.rng, (1.0, 5.0))),
            None => self.next_arc_at = Some(from + secs(&mut self.rng, (2.0, 6.0))),
        }
        let before = self.emit.out.len();
        self.run_until(to);
        let business = self.emit.out.len() - before;

        let windows = self.burst_windows(from, to);
        let burst_us: i64 = windows.iter().map(|&(s, e)| (e.min(to) - s.max(from)).max(0)).sum();
        let weighted_us = (to - from) as f64 + (BURST_FACTOR - 1.0) * burst_us as f64;
        let expected = events_per_sec.max(0.0) / BURST_NORM * weighted_us / MICROS_PER_SEC as f64;
        if expected.is_finite() {
            self.usage_carry += expected - business as f64;
        }
        let n = self.usage_carry.max(0.0).floor();
        self.usage_carry = (self.usage_carry - n).max(-50.0);
        for _ in 0..n as u64 {
            let t = self.usage_ts(from, to, &windows);
            if let Some(i) = self.pick_usage_account(t) {
                self.emit_usage(t, i);
            }
        }
        self.take_sorted()
    }

    fn take_sorted(&mut self) -> Vec<Message> {
        let mut out = std::mem::take(&mut self.emit.out);
        out.sort_by_key(|m| m.ts);
        out
    }

    /// Fixes renewal dates relative to `start` and schedules the renewals; the
    /// simulation clock starts at `clock`.
    fn anchor(&mut self, start: Ts, clock: Ts) {
        self.anchored = true;
        let day = utc_day(start);
        for i in 0..self.accounts.len() {
            let a = &mut self.accounts[i];
            a.renewal_day = day + a.renewal_offset;
            let at = self.renewal_sign_time(i).max(clock + secs(&mut self.rng, (3600.0, 3.0 * 86_400.0)));
            let epoch = self.accounts[i].epoch;
            self.schedule(at, Due::Renewal { account: i as u32, epoch });
        }
        self.restart_procs(clock);
    }

    /// When the account's next renewal is signed: healthy accounts early, weak
    /// ones late (so some renewal dates lie weeks in the past).
    fn renewal_sign_time(&mut self, i: usize) -> Ts {
        let a = &self.accounts[i];
        let offset_days = match a.class {
            Class::Healthy => unif(&mut self.rng, -20.0, 3.0),
            Class::Fragile => unif(&mut self.rng, -5.0, 20.0),
            Class::AtRisk => unif(&mut self.rng, 0.0, 40.0),
        };
        let local_hour = unif(&mut self.rng, 9.0, 17.0);
        i64::from(a.renewal_day) * MICROS_PER_DAY
            + (offset_days * MICROS_PER_DAY as f64) as i64
            + ((local_hour - REGION_UTC_OFFSET_H[a.region] as f64) * HOUR as f64) as i64
    }

    fn restart_procs(&mut self, at: Ts) {
        self.ensure_weights();
        for k in 0..PROCS.len() {
            self.next_at[k] = at.saturating_add(exp_gap(&mut self.rng, self.proc_weights[k].total()));
        }
    }

    fn ensure_weights(&mut self) {
        if !self.weights_dirty {
            return;
        }
        for (k, &p) in PROCS.iter().enumerate() {
            self.proc_weights[k] = Weighted::build(self.accounts.iter().map(|a| proc_rate(p, a)));
        }
        self.usage_weights = Weighted::build(self.accounts.iter().map(Account::usage_weight));
        self.weights_dirty = false;
    }

    fn schedule(&mut self, at: Ts, due: Due) {
        self.due_seq += 1;
        self.due.push(Reverse((at, self.due_seq, due)));
    }

    /// Runs scheduled steps, business processes and arcs due up to `end`.
    fn run_until(&mut self, end: Ts) {
        loop {
            let due_at = self.due.peek().map_or(Ts::MAX, |Reverse((t, _, _))| *t);
            let (k, proc_at) =
                self.next_at.iter().copied().enumerate().min_by_key(|&(_, t)| t).expect("there are processes");
            let arc_at = self.next_arc_at.unwrap_or(Ts::MAX);
            let next = due_at.min(proc_at).min(arc_at);
            if next == Ts::MAX || next > end {
                break;
            }
            let ts = next.max(self.floor);
            if due_at == next {
                let Some(Reverse((_, _, due))) = self.due.pop() else { break };
                self.handle_due(ts, due);
            } else if proc_at == next {
                self.fire(k, ts);
                self.ensure_weights();
                self.next_at[k] = next.saturating_add(exp_gap(&mut self.rng, self.proc_weights[k].total()));
            } else {
                self.start_arc(ts);
                self.next_arc_at = Some(next + secs(&mut self.rng, ARC_GAP_S));
            }
        }
    }

    fn handle_due(&mut self, ts: Ts, due: Due) {
        let live = |g: &Self, account: u32, epoch: u32| g.accounts[account as usize].epoch == epoch;
        match due {
            Due::Ticket { account, ticket } => self.ticket_step(ts, account as usize, ticket),
            Due::Renewal { account, epoch } if live(self, account, epoch) => self.renew(ts, account as usize),
            Due::Incident { account } => self.open_incident(ts, account as usize),
            Due::ArcSecond { account, epoch }
                if live(self, account, epoch) && self.accounts[account as usize].arc.is_some() =>
            {
                self.open_arc_second(ts, account as usize);
            }
            Due::ArcChurn { account, epoch } if live(self, account, epoch) => {
                let i = account as usize;
                if self.churned_count >= self.churn_cap() {
                    // Others churned meanwhile: this one stays, for now.
                    let end = ts + mins(&mut self.rng, 20.0, 40.0);
                    self.schedule(end, Due::ArcEnd { account, epoch });
                    return;
                }
                self.churn(ts, i);
                let epoch = self.accounts[i].epoch;
                let back = ts + secs(&mut self.rng, (6.0 * 3600.0, 48.0 * 3600.0));
                self.schedule(back, Due::Winback { account, epoch });
            }
            Due::ArcEnd { account, epoch } if live(self, account, epoch) => {
                let a = &mut self.accounts[account as usize];
                if a.arc.take() == Some(Outcome::Recover) {
                    a.health = (a.health + 0.03).min(1.0);
                }
                a.last_arc_end = ts;
            }
            Due::Winback { account, epoch } if live(self, account, epoch) => self.win_back(ts, account as usize),
            _ => {} // void: the account churned or came back since
        }
    }

    /// Fires business process `k` (of [`PROCS`]) on an account picked by its rate.
    fn fire(&mut self, k: usize, ts: Ts) {
        self.ensure_weights();
        let Some(i) = self.proc_weights[k].pick(&mut self.rng) else { return };
        match PROCS[k] {
            Proc::TicketOpen => self.open_normal(ts, i),
            Proc::Expansion => self.resize(ts, i, true),
            Proc::Contraction => self.resize(ts, i, false),
            Proc::Reassign => self.reassign(ts, i),
        }
    }

    // ----- tickets -----

    fn open_ticket(&mut self, ts: Ts, i: usize, priority: u8, mut steps: Vec<(Step, i64)>, cap: usize) {
        let a = &mut self.accounts[i];
        if a.tickets.len() >= cap {
            return;
        }
        a.next_ticket += 1;
        let no = a.next_ticket;
        steps.reverse();
        let first = steps.last().map(|s| s.1);
        a.tickets.push(Ticket { no, priority, steps });
        self.emit_ticket(ts, i, no, "opened", Some(priority), None);
        match first {
            Some(delay) => self.schedule(ts + delay.max(MICROS_PER_SEC), Due::Ticket { account: i as u32, ticket: no }),
            None => self.accounts[i].tickets.retain(|t| t.no != no),
        }
    }

    fn ticket_step(&mut self, ts: Ts, i: usize, no: u32) {
        let Some(k) = self.accounts[i].tickets.iter().position(|t| t.no == no) else { return };
        let Some((step, _)) = self.accounts[i].tickets[k].steps.pop() else {
            self.accounts[i].tickets.swap_remove(k);
            return;
        };
        let priority = self.accounts[i].tickets[k].priority;
        match step {
            Step::FirstResponse => self.emit_ticket(ts, i, no, "first_response", None, None),
            Step::Escalate { bump } if bump && priority > 1 => {
                self.accounts[i].tickets[k].priority = priority - 1;
                self.emit_ticket(ts, i, no, "escalated", Some(priority - 1), None);
            }
            Step::Escalate { .. } => self.emit_ticket(ts, i, no, "escalated", None, None),
            Step::Resolve => self.emit_ticket(ts, i, no, "resolved", None, None),
            Step::Csat { score } => {
                let score =
                    if score == 0 { csat_score(&mut self.rng, self.accounts[i].effective_health()) } else { score };
                self.emit_ticket(ts, i, no, "csat", None, Some(score));
            }
            Step::Reopen => self.emit_ticket(ts, i, no, "reopened", Some(priority), None),
        }
        match self.accounts[i].tickets[k].steps.last() {
            Some(&(_, delay)) => {
                self.schedule(ts + delay.max(MICROS_PER_SEC), Due::Ticket { account: i as u32, ticket: no });
            }
            None => {
                self.accounts[i].tickets.swap_remove(k);
            }
        }
    }

    /// An everyday ticket: p1 rare, response and resolution times by priority
    /// (with tails past the SLA), some escalations, CSAT, the odd reopen.
    fn open_normal(&mut self, ts: Ts, i: usize) {
        let class = self.accounts[i].class;
        let rng = &mut self.rng;
        let p1 = if class == Class::AtRisk { 0.05 } else { 0.02 };
        let priority = match rng.random::<f64>() {
            x if x < p1 => 1u8,
            x if x < p1 + 0.15 => 2,
            x if x < p1 + 0.5 => 3,
            _ => 4,
        };
        let p = usize::from(priority - 1);
        let (class_slow, class_esc) = match class {
            Class::Healthy => (1.0, 1.0),
            Class::Fragile => (1.1, 1.4),
            Class::AtRisk => (1.3, 2.0),
        };
        let mut steps = Vec::with_capacity(7);
        let frt_min = lognormal(rng, [20.0, 80.0, 400.0, 1200.0][p], [0.8, 0.9, 1.0, 1.0][p]) * class_slow;
        steps.push((Step::FirstResponse, (frt_min.max(1.0) * MICROS_PER_MIN as f64) as i64));
        let escalated = rng.random_bool(([0.4f64, 0.15, 0.04, 0.01][p] * class_esc).min(1.0));
        if escalated {
            let after = lognormal(rng, [20.0, 90.0, 240.0, 480.0][p], 0.8) * MICROS_PER_MIN as f64;
            steps.push((Step::Escalate { bump: p > 0 && rng.random_bool(0.3) }, after as i64));
        }
        let resolve_h = lognormal(rng, [3.0, 16.0, 29.0, 60.0][p], 0.7) * if escalated { 1.5 } else { 1.0 };
        steps.push((Step::Resolve, (resolve_h * HOUR as f64) as i64));
        if rng.random_bool(0.45) {
            steps.push((Step::Csat { score: 0 }, (lognormal(rng, 3.0, 1.0) * HOUR as f64) as i64));
        }
        if rng.random_bool(0.05) {
            steps.push((Step::Reopen, (lognormal(rng, 20.0, 1.0) * HOUR as f64) as i64));
            steps.push((Step::Resolve, (lognormal(rng, 8.0, 0.8) * HOUR as f64) as i64));
            if rng.random_bool(0.3) {
                steps.push((Step::Csat { score: 0 }, (lognormal(rng, 3.0, 1.0) * HOUR as f64) as i64));
            }
        }
        self.open_ticket(ts, i, priority, steps, MAX_TICKETS);
    }

    /// Trouble already under way when the demo starts (at-risk accounts).
    fn open_incident(&mut self, ts: Ts, i: usize) {
        let rng = &mut self.rng;
        let priority = if rng.random_bool(0.3) { 1 } else { 2 };
        let mut steps = vec![(Step::FirstResponse, mins(rng, 10.0, 300.0))];
        if rng.random_bool(0.6) {
            steps.push((Step::Escalate { bump: false }, mins(rng, 60.0, 240.0)));
        }
        steps.push((Step::Resolve, secs(rng, (86_400.0, 4.0 * 86_400.0))));
        if rng.random_bool(0.6) {
            steps.push((Step::Csat { score: 0 }, mins(rng, 30.0, 600.0)));
        }
        self.open_ticket(ts, i, priority, steps, MAX_TICKETS);
    }

    // ----- decline arcs -----

    fn pick_arc_account(&mut self, ts: Ts) -> Option<usize> {
        let n = self.accounts.len();
        if n == 0 {
            return None;
        }
        let want = match self.rng.random::<f64>() {
            x if x < 0.7 => Class::Fragile,
            x if x < 0.8 => Class::AtRisk,
            _ => Class::Healthy,
        };
        let near_renewal = self.rng.random_bool(0.3);
        let today = utc_day(ts);
        for attempt in 0..300 {
            let i = self.rng.random_range(0..n);
            let a = &self.accounts[i];
            if a.churned || a.arc.is_some() || ts - a.last_arc_end < 30 * MICROS_PER_MIN {
                continue;
            }
            if attempt < 200 && a.class != want {
                continue;
            }
            if attempt < 100 && near_renewal && !(0..=90).contains(&(a.renewal_day - today)) {
                continue;
            }
            return Some(i);
        }
        None
    }

    /// Usage collapses, a p1 opens (and is escalated at once, mostly), a second
    /// ticket follows with a poor CSAT; then recover, linger or churn.
    fn start_arc(&mut self, ts: Ts) {
        let Some(i) = self.pick_arc_account(ts) else { return };
        let can_churn = self.churned_count < self.churn_cap();
        let rng = &mut self.rng;
        let outcome = match rng.random::<f64>() {
            x if x < 0.08 && can_churn => Outcome::Churn,
            x if x < 0.30 => Outcome::Linger,
            _ => Outcome::Recover,
        };
        let mut plan: Vec<(Step, i64)> = Vec::with_capacity(4);
        if rng.random_bool(0.85) {
            plan.push((Step::Escalate { bump: false }, secs(rng, (20.0, 90.0))));
        }
        let slow = (outcome == Outcome::Linger && rng.random_bool(0.5)) || rng.random_bool(0.1);
        let first_response = if slow { mins(rng, 61.0, 80.0) } else { mins(rng, 1.0, 8.0) };
        plan.push((Step::FirstResponse, first_response));
        let resolve = match outcome {
            Outcome::Recover => mins(rng, 6.0, 14.0),
            Outcome::Linger => mins(rng, 45.0, 90.0),
            Outcome::Churn => mins(rng, 20.0, 40.0),
        }
        .max(first_response + mins(rng, 2.0, 5.0));
        plan.push((Step::Resolve, resolve));
        let csat = match outcome {
            Outcome::Recover => rng.random_bool(0.7).then(|| rng.random_range(2..=4)),
            Outcome::Linger => rng.random_bool(0.8).then(|| rng.random_range(1..=3)),
            Outcome::Churn => rng.random_bool(0.9).then_some(1),
        };
        if let Some(score) = csat {
            plan.push((Step::Csat { score }, resolve + mins(rng, 1.0, 5.0)));
        }
        let end = resolve + mins(rng, 1.0, 3.0);
        let second = rng.random_bool(0.7).then(|| secs(rng, (10.0, 60.0)));
        let churn_at = mins(rng, 4.0, 10.0);

        let steps = to_delays(plan);
        let a = &mut self.accounts[i];
        a.arc = Some(outcome);
        let epoch = a.epoch;
        let account = i as u32;
        self.open_ticket(ts, i, 1, steps, MAX_TICKETS + ARC_TICKET_SLACK);
        if let Some(after) = second {
            self.schedule(ts + after, Due::ArcSecond { account, epoch });
        }
        if outcome == Outcome::Churn {
            self.schedule(ts + churn_at, Due::ArcChurn { account, epoch });
        } else {
            self.schedule(ts + end, Due::ArcEnd { account, epoch });
        }
    }

    fn open_arc_second(&mut self, ts: Ts, i: usize) {
        let rng = &mut self.rng;
        let mut steps = vec![(Step::FirstResponse, mins(rng, 1.0, 4.0))];
        if rng.random_bool(0.6) {
            steps.push((Step::Escalate { bump: false }, mins(rng, 1.0, 3.0)));
        }
        steps.push((Step::Resolve, mins(rng, 3.0, 8.0)));
        steps.push((Step::Csat { score: rng.random_range(1..=2) }, secs(rng, (30.0, 120.0))));
        self.open_ticket(ts, i, 2, steps, MAX_TICKETS + ARC_TICKET_SLACK);
    }

    // ----- revenue and accounts -----

    fn renew(&mut self, ts: Ts, i: usize) {
        if self.accounts[i].churned {
            return;
        }
        let a = &self.accounts[i];
        let churn_p = match a.class {
            Class::Healthy => 0.01,
            Class::Fragile => 0.06,
            Class::AtRisk => 0.3,
        };
        if self.rng.random_bool(churn_p) && self.churned_count < self.churn_cap() {
            self.churn(ts, i);
            let epoch = self.accounts[i].epoch;
            let back = ts + secs(&mut self.rng, (2.0 * 86_400.0, 10.0 * 86_400.0));
            self.schedule(back, Due::Winback { account: i as u32, epoch });
            return;
        }
        let uplift = match a.class {
            Class::Healthy => unif(&mut self.rng, 0.0, 0.07),
            Class::Fragile => unif(&mut self.rng, -0.1, 0.03),
            Class::AtRisk => unif(&mut self.rng, -0.25, 0.0),
        };
        let a = &mut self.accounts[i];
        a.arr_cents = ((a.arr_cents as f64 * (1.0 + uplift)).round() as i64).max(100);
        a.price_cents = (a.arr_cents / i64::from(a.seats.max(1))).max(1);
        a.renewal_day += 365;
        self.emit_revenue(ts, i, "renewal");
        let date = format_date(self.accounts[i].renewal_day);
        self.emit_partial(ts, i, Fields { renewal_date: Some(&date), ..Default::default() });
        let at = self.renewal_sign_time(i).max(ts + days(30));
        let epoch = self.accounts[i].epoch;
        self.schedule(at, Due::Renewal { account: i as u32, epoch });
    }

    /// How many accounts may be churned at once, so the portfolio never empties.
    fn churn_cap(&self) -> usize {
        ((self.accounts.len() as f64 * MAX_CHURNED_SHARE).ceil() as usize).max(1)
    }

    fn churn(&mut self, ts: Ts, i: usize) {
        let a = &mut self.accounts[i];
        if a.churned {
            return;
        }
        a.churned = true;
        a.arc = None;
        a.last_arc_end = ts;
        a.epoch += 1;
        self.churned_count += 1;
        self.weights_dirty = true;
        self.emit_revenue(ts, i, "churn");
    }

    /// A churned account signs again: a fresh contract, a year to renewal.
    fn win_back(&mut self, ts: Ts, i: usize) {
        let share = unif(&mut self.rng, 0.6, 1.0);
        let (health, adoption) = (unif(&mut self.rng, 0.45, 0.65), unif(&mut self.rng, 0.45, 0.7));
        let a = &mut self.accounts[i];
        if !a.churned {
            return;
        }
        a.churned = false;
        a.epoch += 1;
        a.class = Class::Fragile;
        a.health = health;
        a.adoption = adoption;
        a.arr_cents = ((a.arr_cents.max(i64::from(a.seats) * a.price_cents) as f64 * share).round() as i64).max(100);
        a.renewal_day = utc_day(ts) + 365;
        self.churned_count -= 1;
        self.weights_dirty = true;
        self.emit_upsert(ts, i);
        self.emit_revenue(ts, i, "new");
        let at = self.renewal_sign_time(i).max(ts + days(30));
        let epoch = self.accounts[i].epoch;
        self.schedule(at, Due::Renewal { account: i as u32, epoch });
    }

    /// Expansion or contraction: seats and ARR move together.
    fn resize(&mut self, ts: Ts, i: usize, grow: bool) {
        let change = if grow { unif(&mut self.rng, 0.05, 0.25) } else { unif(&mut self.rng, 0.05, 0.2) };
        let a = &mut self.accounts[i];
        let delta = ((a.seats as f64 * change).round() as u32).max(1);
        let seats = if grow { a.seats.saturating_add(delta).min(a.max_seats) } else { a.seats.saturating_sub(delta) };
        if seats == a.seats || seats == 0 {
            return;
        }
        a.seats = seats;
        a.arr_cents = i64::from(seats) * a.price_cents;
        self.weights_dirty = true;
        self.emit_revenue(ts, i, if grow { "expansion" } else { "contraction" });
        self.emit_partial(ts, i, Fields { seats: Some(seats), ..Default::default() });
    }

    fn reassign(&mut self, ts: Ts, i: usize) {
        let segment = self.accounts[i].segment;
        let pool = &self.csm_pools[segment];
        let current = self.accounts[i].csm;
        let next = if pool.is_empty() || self.rng.random_bool(0.03) {
            None
        } else {
            // Another CSM of the segment than the current one, where there is one.
            let k = self.rng.random_range(0..pool.len());
            if Some(pool[k]) == current { Some(pool[(k + 1) % pool.len()]) } else { Some(pool[k]) }
        };
        if next == current {
            return;
        }
        self.accounts[i].csm = next;
        let csm = next.map(|c| self.csm_ids[c as usize].clone());
        self.emit_partial(ts, i, Fields { csm_id: Some(csm.as_deref()), ..Default::default() });
    }

    // ----- usage -----

    /// The account's usage over (lo, hi]: every active user at least once in the
    /// last 28 days, more events for engaged accounts, shaped by a growth or
    /// decline trend and by business hours.
    fn history_usage(&mut self, i: usize, lo: Ts, hi: Ts) {
        let rng = &mut self.rng;
        let a = &self.accounts[i];
        let trend = match a.class {
            Class::Healthy => Trend::Growth { from: lo, span: hi - lo, gain: unif(rng, 0.0, 0.3) },
            Class::Fragile => Trend::Decline {
                from: hi - secs(rng, (8.0 * 86_400.0, 14.0 * 86_400.0)),
                ramp: days(3),
                floor: unif(rng, 0.35, 0.6),
            },
            Class::AtRisk => Trend::Decline {
                from: hi - secs(rng, (9.0 * 86_400.0, 16.0 * 86_400.0)),
                ramp: days(4),
                floor: unif(rng, 0.05, 0.25),
            },
        };
        let users = a.active_users();
        let region = a.region;
        let per_user_day = 0.03 + 0.07 * a.health;
        let span_days = (hi - lo) as f64 / MICROS_PER_DAY as f64;
        let max_level = trend.max_level();
        let candidates = users as f64 * per_user_day * span_days * max_level;
        let candidates = candidates.floor() as u64 + u64::from(rng.random::<f64>() < candidates.fract());
        let accept = |rng: &mut SmallRng, t: Ts| rng.random::<f64>() * max_level < trend.level(t) * diurnal(region, t);
        let recent = (hi - days(28)).max(lo);
        let mut seen_recently = vec![false; users as usize + 1];
        let mut events: Vec<(Ts, u32)> = Vec::new();
        for _ in 0..candidates {
            let t = lo + 1 + rng.random_range(0..hi - lo);
            if accept(rng, t) {
                let user = 1 + ((users as f64 * rng.random::<f64>().powf(1.5)) as u32).min(users - 1);
                seen_recently[user as usize] |= t > recent;
                events.push((t, user));
            }
        }
        // Every active user at least once in the adoption window.
        for user in (1..=users).filter(|&u| !seen_recently[u as usize]) {
            let mut t = recent + 1 + rng.random_range(0..hi - recent);
            for _ in 0..32 {
                if accept(rng, t) {
                    break;
                }
                t = recent + 1 + rng.random_range(0..hi - recent);
            }
            events.push((t, user));
        }
        for (t, user) in events {
            self.emit_usage_by(t, i, user);
        }
    }

    fn burst_windows(&mut self, from: Ts, to: Ts) -> Vec<(Ts, Ts)> {
        if self.bursts.is_empty() {
            let start = from + secs(&mut self.rng, (20.0, 90.0));
            self.bursts.push_back((start, start + secs(&mut self.rng, BURST_LEN_S)));
        }
        while self.bursts.back().is_some_and(|&(s, _)| s < to) {
            let (s, _) = *self.bursts.back().expect("not empty");
            let start = s + secs(&mut self.rng, BURST_GAP_S);
            self.bursts.push_back((start, start + secs(&mut self.rng, BURST_LEN_S)));
        }
        while self.bursts.len() > 1 && self.bursts.front().is_some_and(|&(_, e)| e <= from) {
            self.bursts.pop_front();
        }
        self.bursts.iter().copied().filter(|&(s, e)| s < to && e > from).collect()
    }

    /// A usage instant in (from, to], denser inside bursts.
    fn usage_ts(&mut self, from: Ts, to: Ts, windows: &[(Ts, Ts)]) -> Ts {
        loop {
            let t = from + 1 + self.rng.random_range(0..to - from);
            if windows.is_empty() || windows.iter().any(|&(s, e)| t >= s && t < e) {
                return t;
            }
            if self.rng.random::<f64>() * BURST_FACTOR < 1.0 {
                return t;
            }
        }
    }

    /// An account for a usage event at `t`, by weight, activity and the local
    /// hour (relative to the busiest region right now, so picks stay cheap).
    fn pick_usage_account(&mut self, t: Ts) -> Option<usize> {
        self.ensure_weights();
        let peak = (0..REGIONS.len()).map(|r| diurnal(r, t)).fold(0.0, f64::max);
        for attempt in 0..96 {
            let i = self.usage_weights.pick(&mut self.rng)?;
            let a = &self.accounts[i];
            let hours = if attempt < 48 { diurnal(a.region, t) / peak } else { 1.0 };
            if self.rng.random::<f64>() < a.activity() * hours {
                return Some(i);
            }
        }
        None
    }

    // ----- emission -----

    fn emit_usage(&mut self, ts: Ts, i: usize) {
        let users = self.accounts[i].active_users();
        let user = 1 + ((users as f64 * self.rng.random::<f64>().powf(1.3)) as u32).min(users - 1);
        self.emit_usage_by(ts, i, user);
    }

    fn emit_usage_by(&mut self, ts: Ts, i: usize, user: u32) {
        let a = &self.accounts[i];
        let slot = ((f64::from(a.feature_count) * self.rng.random::<f64>().powi(2)) as usize)
            .min(usize::from(a.feature_count.max(1)) - 1);
        let feature = FEATURES[usize::from(a.features[slot])];
        let duration_s = if feature == "api" {
            self.rng.random_bool(0.3).then(|| self.rng.random_range(0..5))
        } else {
            Some((3f64 * 600f64.powf(self.rng.random::<f64>())) as u32)
        };
        let user_id = format!("{}-u{user}", a.id);
        let fields = Fields { user_id: Some(&user_id), feature: Some(feature), duration_s, ..Default::default() };
        self.emit.push(ts, Topic::Usage, &a.id, &fields);
    }

    fn emit_ticket(&mut self, ts: Ts, i: usize, no: u32, action: &str, priority: Option<u8>, score: Option<u8>) {
        let ticket_id = format!("T-{no}");
        let fields = Fields {
            ticket_id: Some(&ticket_id),
            action: Some(action),
            priority: priority.map(priority_str),
            score,
            ..Default::default()
        };
        self.emit.push(ts, Topic::Tickets, &self.accounts[i].id, &fields);
    }

    fn emit_revenue(&mut self, ts: Ts, i: usize, kind: &str) {
        let a = &self.accounts[i];
        let raw = (kind != "churn")
            .then(|| RawValue::from_string(cents_literal(a.arr_cents)).expect("a cents literal is a JSON number"));
        let fields = Fields { kind: Some(kind), arr: raw.as_deref(), ..Default::default() };
        self.emit.push(ts, Topic::Revenue, &a.id, &fields);
    }

    /// The whole account record.
    fn emit_upsert(&mut self, ts: Ts, i: usize) {
        let a = &self.accounts[i];
        let date = format_date(a.renewal_day);
        let fields = Fields {
            name: Some(&a.name),
            csm_id: Some(a.csm.map(|c| self.csm_ids[c as usize].as_str())),
            segment: Some(SEGMENTS[a.segment]),
            region: Some(REGIONS[a.region]),
            seats: Some(a.seats),
            renewal_date: Some(&date),
            ..Default::default()
        };
        self.emit.push(ts, Topic::Accounts, &a.id, &fields);
    }

    /// Only the fields that changed, as a CRM sync would send them.
    fn emit_partial(&mut self, ts: Ts, i: usize, fields: Fields<'_>) {
        self.emit.push(ts, Topic::Accounts, &self.accounts[i].id, &fields);
    }
}

/// Steps at offsets from the opening, in time order, as delays between steps.
fn to_delays(mut plan: Vec<(Step, i64)>) -> Vec<(Step, i64)> {
    plan.sort_by_key(|&(_, at)| at);
    let mut prev = 0;
    plan.into_iter()
        .map(|(step, at)| {
            let at = at.max(prev + MICROS_PER_SEC);
            let delay = at - prev;
            prev = at;
            (step, delay)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use serde_json::{Map, Value};

    use super::*;
    use crate::time::{parse_date, parse_rfc3339};

    fn start() -> Ts {
        parse_rfc3339("2026-03-04T15:00:00Z").unwrap()
    }

    fn small(seed: u64) -> PortfolioSpec {
        PortfolioSpec { accounts: 60, csms: 6, users_per_account: 20, seed }
    }

    /// Tick batches with their intervals.
    type Batches = Vec<(Ts, Ts, Vec<Message>)>;

    /// Backfill, then `seconds` of 100 ms ticks at `rate`.
    fn run(spec: PortfolioSpec, history_days: i64, seconds: i64, rate: f64) -> (Vec<Message>, Batches) {
        let mut g = Generator::new(spec);
        let history = g.backfill(start(), history_days);
        let step = MICROS_PER_SEC / 10;
        let batches = (0..seconds * 10)
            .map(|k| {
                let from = start() + k * step;
                (from, from + step, g.tick(from, from + step, rate))
            })
            .collect();
        (history, batches)
    }

    fn object(m: &Message) -> Map<String, Value> {
        match serde_json::from_slice(&m.payload) {
            Ok(Value::Object(o)) => o,
            other => panic!("not a JSON object: {other:?}: {}", String::from_utf8_lossy(&m.payload)),
        }
    }

    fn ts_of(m: &Message) -> Ts {
        parse_rfc3339(object(m)["ts"].as_str().unwrap()).unwrap()
    }

    fn str_field<'a>(o: &'a Map<String, Value>, k: &str) -> &'a str {
        o.get(k).and_then(Value::as_str).unwrap_or_else(|| panic!("{k} missing or not a string in {o:?}"))
    }

    /// Asserts the SPEC §1 shape of one message, and that the engine's decoder
    /// accepts it.
    fn check_payload(m: &Message) {
        if let Err(e) = crate::event::decode::decode(m.topic, &m.payload, 1 << 20) {
            panic!("rejected by the decoder: {e}: {}", String::from_utf8_lossy(&m.payload));
        }
        let o = object(m);
        let id = str_field(&o, "event_id");
        assert!((1..=128).contains(&id.chars().count()), "{o:?}");
        assert!(parse_rfc3339(str_field(&o, "ts")).is_some(), "{o:?}");
        assert_eq!(str_field(&o, "account_id"), m.key, "the key is the account id");
        match m.topic {
            Topic::Accounts => {
                if let Some(v) = o.get("csm_id") {
                    assert!(v.is_null() || v.as_str().is_some_and(|s| s.starts_with("csm-")), "{o:?}");
                }
                if o.contains_key("segment") {
                    assert!(SEGMENTS.contains(&str_field(&o, "segment")), "{o:?}");
                }
                if o.contains_key("region") {
                    assert!(REGIONS.contains(&str_field(&o, "region")), "{o:?}");
                }
                if let Some(v) = o.get("seats") {
                    assert!(v.is_u64(), "{o:?}");
                }
                if o.contains_key("renewal_date") {
                    assert!(parse_date(str_field(&o, "renewal_date")).is_some(), "{o:?}");
                }
                if o.contains_key("name") {
                    assert!(!str_field(&o, "name").is_empty());
                }
            }
            Topic::Usage => {
                assert!((1..=128).contains(&str_field(&o, "user_id").len()), "{o:?}");
                assert!(FEATURES.contains(&str_field(&o, "feature")), "{o:?}");
                if let Some(d) = o.get("duration_s") {
                    assert!(d.as_f64().is_some_and(|d| d >= 0.0), "{o:?}");
                }
            }
            Topic::Tickets => {
                assert!(!str_field(&o, "ticket_id").is_empty());
                let action = str_field(&o, "action");
                assert!(
                    ["opened", "first_response", "escalated", "resolved", "reopened", "csat"].contains(&action),
                    "{o:?}"
                );
                if action == "opened" {
                    assert!(o.contains_key("priority"), "priority is required on opened: {o:?}");
                }
                if let Some(p) = o.get("priority") {
                    assert!(["p1", "p2", "p3", "p4"].contains(&p.as_str().unwrap()), "{o:?}");
                }
                if action == "csat" {
                    assert!(o["score"].as_u64().is_some_and(|s| (1..=5).contains(&s)), "{o:?}");
                }
            }
            Topic::Revenue => {
                let kind = str_field(&o, "kind");
                assert!(["new", "renewal", "expansion", "contraction", "churn"].contains(&kind), "{o:?}");
                let raw: HashMap<&str, &RawValue> = serde_json::from_slice(&m.payload).unwrap();
                match raw.get("arr") {
                    None => assert_eq!(kind, "churn", "arr is required except on churn: {o:?}"),
                    Some(lit) => {
                        let lit = lit.get();
                        let (whole, frac) = lit.split_once('.').unwrap_or((lit, ""));
                        assert!(whole.bytes().all(|b| b.is_ascii_digit()) && !whole.is_empty(), "{lit}");
                        assert!(frac.len() <= 2 && frac.bytes().all(|b| b.is_ascii_digit()), "{lit}");
                        assert!(o["arr"].as_f64().is_some_and(|v| v > 0.0), "{o:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn cents_are_written_exactly() {
        assert_eq!(cents_literal(0), "0.00");
        assert_eq!(cents_literal(5), "0.05");
        assert_eq!(cents_literal(123_456), "1234.56");
        let n: Value = serde_json::from_str(&cents_literal(1_999_999_999)).unwrap();
        assert_eq!(n.as_f64(), Some(19_999_999.99));
    }

    #[test]
    fn same_seed_same_messages() {
        let a = run(small(3), 10, 20, 200.0);
        let b = run(small(3), 10, 20, 200.0);
        assert!(!a.0.is_empty() && a.1.iter().any(|(_, _, m)| !m.is_empty()));
        assert_eq!(a, b);
        let c = run(small(4), 10, 20, 200.0);
        assert_ne!(a.0, c.0, "another seed, another portfolio");
    }

    #[test]
    fn payloads_carry_the_spec_fields_and_unique_ids() {
        let (history, batches) = run(small(5), 20, 30, 300.0);
        let all: Vec<&Message> = history.iter().chain(batches.iter().flat_map(|b| &b.2)).collect();
        let mut ids = HashSet::new();
        let mut topics = HashSet::new();
        for m in &all {
            check_payload(m);
            topics.insert(m.topic);
            assert!(ids.insert(object(m)["event_id"].as_str().unwrap().to_owned()), "duplicate event id");
        }
        assert_eq!(topics.len(), 4, "every topic is fed");
    }

    #[test]
    fn backfill_stays_in_its_window_in_order_per_account() {
        let history_days = 14;
        let mut g = Generator::new(small(6));
        let history = g.backfill(start(), history_days);
        let lo = start() - days(history_days);
        let mut last: HashMap<&str, Ts> = HashMap::new();
        let mut first_topic: HashMap<&str, Topic> = HashMap::new();
        let mut new_revenue = HashSet::new();
        for m in &history {
            let ts = ts_of(m);
            let is_contract = m.topic == Topic::Revenue && object(m)["kind"] == "new";
            if is_contract {
                assert!(ts <= lo && ts >= lo - days(730), "contract starts predate the window");
            } else {
                assert!(ts > lo && ts <= start(), "ts outside (start - history, start]");
            }
            let prev = last.insert(&m.key, ts);
            assert!(prev.is_none_or(|p| p <= ts), "ts goes back for {}", m.key);
            first_topic.entry(&m.key).or_insert(m.topic);
            if m.topic == Topic::Revenue && object(m)["kind"] == "new" {
                new_revenue.insert(m.key.clone());
            }
        }
        assert_eq!(first_topic.len(), 60);
        assert!(first_topic.values().all(|t| *t == Topic::Revenue), "each account starts with its contract");
        assert_eq!(new_revenue.len(), 60, "each account has its initial contract");
        let usage = history.iter().filter(|m| m.topic == Topic::Usage).count();
        assert!(usage > 60 * 10, "history has usage ({usage})");

        // No history: everything at `start`.
        let mut g = Generator::new(small(6));
        let bare = g.backfill(start(), 0);
        assert_eq!(bare.len(), 120);
        assert!(bare.iter().all(|m| ts_of(m) == start()));
    }

    #[test]
    fn tick_stamps_inside_its_interval() {
        let mut g = Generator::new(small(7));
        g.backfill(start(), 5);
        let mut from = start();
        for (k, step_ms) in [1, 7, 100, 250, 1000, 3000, 50, 100, 20_000, 100].into_iter().cycle().take(60).enumerate()
        {
            let to = from + step_ms * 1000;
            let batch = g.tick(from, to, 400.0);
            for m in &batch {
                let ts = ts_of(m);
                assert!(ts > from && ts <= to, "tick {k}: ts {ts} outside ({from}, {to}]");
            }
            from = to;
        }
        assert!(g.tick(from, from, 300.0).is_empty(), "an empty interval has no events");
    }

    #[test]
    fn rate_is_respected_over_each_minute() {
        let spec = PortfolioSpec { accounts: 200, csms: 8, users_per_account: 20, seed: 8 };
        for rate in [300.0, 50.0] {
            let (_, batches) = run(spec.clone(), 2, 300, rate);
            for minute in batches.chunks(600) {
                let n: usize = minute.iter().map(|b| b.2.len()).sum();
                let expected = rate * 60.0;
                assert!(
                    (n as f64 - expected).abs() <= 0.3 * expected,
                    "{n} events in a minute at {rate}/s (expected ~{expected})"
                );
            }
        }
    }

    #[test]
    fn bursts_happen() {
        let (_, batches) = run(small(9), 1, 300, 300.0);
        let per_second: Vec<usize> = batches.chunks(10).map(|s| s.iter().map(|b| b.2.len()).sum()).collect();
        let max = *per_second.iter().max().unwrap();
        let median = {
            let mut v = per_second.clone();
            v.sort_unstable();
            v[v.len() / 2]
        };
        assert!(max as f64 > 3.0 * median as f64, "a burst: max {max}/s vs median {median}/s");
    }

    #[test]
    fn ticket_lifecycles_are_coherent() {
        let (history, batches) = run(small(10), 30, 120, 50.0);
        #[derive(Default)]
        struct T {
            open: bool,
            opened: bool,
            responded: bool,
            resolved_once: bool,
            last: Ts,
        }
        let mut tickets: HashMap<(String, String), T> = HashMap::new();
        let mut actions = HashSet::new();
        for m in history.iter().chain(batches.iter().flat_map(|b| &b.2)).filter(|m| m.topic == Topic::Tickets) {
            let o = object(m);
            let ts = ts_of(m);
            let action = str_field(&o, "action").to_owned();
            let t = tickets.entry((m.key.clone(), str_field(&o, "ticket_id").to_owned())).or_default();
            let what = format!("{action} of {}/{} at {ts}", m.key, o["ticket_id"]);
            assert!(t.last <= ts, "{what}: before the ticket's previous event");
            t.last = ts;
            match action.as_str() {
                "opened" => {
                    assert!(!t.opened, "{what}: opened twice");
                    t.opened = true;
                    t.open = true;
                }
                "first_response" => {
                    assert!(t.opened && !t.responded, "{what}: not after opened, or a second one");
                    t.responded = true;
                }
                "escalated" => assert!(t.open, "{what}: ticket not open"),
                "resolved" => {
                    assert!(t.open, "{what}: ticket not open");
                    t.open = false;
                    t.resolved_once = true;
                }
                "csat" => assert!(!t.open && t.resolved_once, "{what}: before resolution"),
                "reopened" => {
                    assert!(!t.open && t.resolved_once, "{what}: not resolved");
                    t.open = true;
                }
                other => panic!("unknown action {other}"),
            }
            actions.insert(action);
        }
        assert_eq!(actions.len(), 6, "every action occurs: {actions:?}");
        let finished = tickets.values().filter(|t| t.resolved_once).count();
        assert!(finished > tickets.len() / 2, "most tickets run their course");
    }

    #[test]
    fn decline_arcs_show_within_minutes() {
        let mut g = Generator::new(PortfolioSpec { accounts: 300, csms: 10, users_per_account: 20, seed: 12 });
        g.backfill(start(), 10);
        let mut p1: Vec<(String, Ts)> = Vec::new();
        let mut usage: Vec<(String, Ts)> = Vec::new();
        let mut escalations = 0;
        let step = MICROS_PER_SEC / 10;
        for k in 0..1200 {
            let from = start() + k * step;
            for m in g.tick(from, from + step, 300.0) {
                let o = object(&m);
                match (m.topic, o.get("action").and_then(Value::as_str)) {
                    (Topic::Tickets, Some("opened")) if o["priority"] == "p1" => p1.push((m.key.clone(), ts_of(&m))),
                    (Topic::Tickets, Some("escalated")) => escalations += 1,
                    (Topic::Usage, _) => usage.push((m.key.clone(), ts_of(&m))),
                    _ => {}
                }
            }
        }
        assert!(p1.len() >= 4, "a p1 every ~20 s: {} in 2 minutes", p1.len());
        assert!(escalations >= 2, "arcs escalate: {escalations}");
        // Usage of a declining account collapses once its p1 is open.
        let first_arc = &p1[0];
        let after = usage.iter().filter(|(a, t)| *a == first_arc.0 && *t > first_arc.1 + MICROS_PER_SEC).count();
        assert!(after <= 2, "usage went on after the p1: {after} events");

        // Over half an hour (at a low rate, arcs being timed in event time) some
        // accounts recover and some churn.
        let mut churns = 0;
        let mut resolved_p1 = 0;
        let mut open_p1 = HashSet::new();
        for (a, _) in &p1 {
            open_p1.insert(a.clone());
        }
        let step = 10 * MICROS_PER_SEC;
        let base = start() + 120 * MICROS_PER_SEC;
        for k in 0..180 {
            let from = base + k * step;
            for m in g.tick(from, from + step, 5.0) {
                let o = object(&m);
                if m.topic == Topic::Revenue && o["kind"] == "churn" {
                    churns += 1;
                }
                if m.topic == Topic::Tickets && o["action"] == "resolved" && open_p1.contains(&m.key) {
                    resolved_p1 += 1;
                }
                if m.topic == Topic::Tickets && o["action"] == "opened" && o["priority"] == "p1" {
                    open_p1.insert(m.key.clone());
                }
            }
        }
        assert!(resolved_p1 >= 10, "arcs recover: {resolved_p1}");
        assert!(churns >= 1, "some arcs churn");
    }

    #[test]
    fn portfolio_looks_like_a_portfolio() {
        let mut g = Generator::new(PortfolioSpec::demo());
        let upserts: Vec<Map<String, Value>> =
            g.backfill(start(), 0).iter().filter(|m| m.topic == Topic::Accounts).map(object).collect();
        assert_eq!(upserts.len(), 2000);
        let today = utc_day(start());
        let mut by_segment: HashMap<&str, Vec<u64>> = HashMap::new();
        let mut books: HashMap<&str, (usize, &str)> = HashMap::new();
        let (mut unassigned, mut past_renewal) = (0, 0);
        let mut names = HashSet::new();
        let mut regions = HashSet::new();
        for o in &upserts {
            let segment = str_field(o, "segment");
            by_segment.entry(segment).or_default().push(o["seats"].as_u64().unwrap());
            match o["csm_id"].as_str() {
                Some(csm) => {
                    let book = books.entry(csm).or_insert((0, segment));
                    book.0 += 1;
                    assert_eq!(book.1, segment, "a CSM's book is one segment");
                }
                None => unassigned += 1,
            }
            let to_renewal = parse_date(str_field(o, "renewal_date")).unwrap() - today;
            assert!((-28..=366).contains(&to_renewal), "renewal in {to_renewal} days");
            past_renewal += usize::from(to_renewal < 0);
            assert!(names.insert(str_field(o, "name")), "names are unique");
            regions.insert(str_field(o, "region"));
        }
        let share = |s: &str| by_segment[s].len() as f64 / 2000.0;
        assert!((share("enterprise") - 0.15).abs() < 0.01 && (share("smb") - 0.5).abs() < 0.01);
        assert!(by_segment["enterprise"].iter().all(|s| (200..=2000).contains(s)));
        assert!(by_segment["mid-market"].iter().all(|s| (50..=200).contains(s)));
        assert!(by_segment["smb"].iter().all(|s| (5..=50).contains(s)));
        assert!((20..=100).contains(&unassigned), "~3% unassigned: {unassigned}");
        assert!(past_renewal > 20, "some renewals are overdue: {past_renewal}");
        assert_eq!(regions.len(), 4);
        assert_eq!(books.len(), 40, "every CSM has a book");
        assert!(books.contains_key("csm-01") && books.contains_key("csm-40"));
        let mean_book = |seg: &str| {
            let b: Vec<usize> = books.values().filter(|b| b.1 == seg).map(|b| b.0).collect();
            b.iter().sum::<usize>() as f64 / b.len() as f64
        };
        assert!(mean_book("enterprise") * 3.0 < mean_book("smb"), "enterprise books are small");
        assert_eq!(g.csm_ids().len(), 40);
        assert_eq!(g.account_ids().count(), 2000);
    }

    #[test]
    fn state_stays_bounded_over_days() {
        let spec = PortfolioSpec { accounts: 100, csms: 5, users_per_account: 10, seed: 13 };
        let mut g = Generator::new(spec);
        g.backfill(start(), 10);
        let step = 10 * MICROS_PER_MIN;
        let mut revenue = 0;
        for k in 0..(4 * 24 * 6) {
            let from = start() + k * step;
            revenue += g.tick(from, from + step, 0.2).iter().filter(|m| m.topic == Topic::Revenue).count();
            assert!(g.accounts.iter().all(|a| a.tickets.len() <= MAX_TICKETS + ARC_TICKET_SLACK));
            assert!(g.due.len() <= 100 * (MAX_TICKETS + ARC_TICKET_SLACK + 8), "schedule grows: {}", g.due.len());
            assert!(g.bursts.len() as i64 <= step / (75 * MICROS_PER_SEC) + 2, "only the bursts of one tick are kept");
            assert!(g.churned_count <= 3);
        }
        assert!(revenue > 0, "revenue moves over days");
        assert!(g.accounts.iter().all(|a| a.seats <= a.max_seats));
    }
}
