//! A naive reference model of the fold (SPEC §1–§4, §14), for property tests.
//!
//! It keeps every accepted event and recomputes every view from scratch on each
//! `views()` call with plain loops over the stored events: no incremental
//! structures, no shared code with the real engine beyond decoding and time
//! helpers. It is meant to be obviously correct, not fast (inputs are small).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use num_bigint::BigInt;
use num_rational::BigRational;
use serde_json::{Value, json};

use crate::event::decode::{Reason, decode};
use crate::event::{Body, Priority, RevenueKind, TicketAction, Topic};
use crate::state::config::{OTHER_FEATURE, StateConfig};
use crate::time::{Ts, days, format_date, format_rfc3339, quarter_start, utc_day};

/// What the model did with one offered message.
#[derive(Debug, Clone, PartialEq)]
pub enum NaiveOutcome {
    Accepted,
    Duplicate,
    Rejected(Reason),
}

/// The recompute-from-scratch model: the configuration and every accepted event.
#[derive(Clone)]
pub struct NaiveModel {
    cfg: StateConfig,
    /// Accepted events in arrival order; `seq` is the index.
    events: Vec<Stored>,
}

/// One accepted event, owned.
#[derive(Clone, Debug)]
struct Stored {
    /// Arrival order among accepted events; breaks ties of equal `ts`.
    seq: usize,
    topic: Topic,
    partition: i32,
    event_id: String,
    ts: Ts,
    account_id: String,
    body: StoredBody,
}

#[derive(Clone, Debug)]
enum StoredBody {
    Account {
        name: Option<String>,
        /// `Some(None)` is an explicit null (unassigned).
        csm_id: Option<Option<String>>,
        segment: Option<String>,
        region: Option<String>,
        seats: Option<u64>,
        renewal_date: Option<i32>,
    },
    Usage {
        user_id: String,
        feature: String,
        /// The feature it counts under (§18: itself, or `(other)` beyond
        /// `limits.max_features`); `None` if outside the 30-day window on arrival.
        counted_as: Option<String>,
    },
    Ticket {
        ticket_id: String,
        action: TicketAction,
        priority: Option<Priority>,
        score: Option<u8>,
    },
    Revenue {
        kind: RevenueKind,
        arr_cents: i64,
    },
}

impl StoredBody {
    fn from_body(body: Body<'_>) -> Self {
        match body {
            Body::Account(up) => StoredBody::Account {
                name: up.name.map(|s| s.into_owned()),
                csm_id: up.csm_id.map(|c| c.map(|s| s.into_owned())),
                segment: up.segment.map(|s| s.into_owned()),
                region: up.region.map(|s| s.into_owned()),
                seats: up.seats,
                renewal_date: up.renewal_date,
            },
            Body::Usage { user_id, feature } => {
                StoredBody::Usage { user_id: user_id.into_owned(), feature: feature.into_owned(), counted_as: None }
            }
            Body::Ticket(t) => StoredBody::Ticket {
                ticket_id: t.ticket_id.into_owned(),
                action: t.action,
                priority: t.priority,
                score: t.score,
            },
            Body::Revenue { kind, arr_cents } => StoredBody::Revenue { kind, arr_cents },
        }
    }
}

impl NaiveModel {
    pub fn new(cfg: StateConfig) -> Self {
        NaiveModel { cfg, events: Vec::new() }
    }

    /// One Kafka message of `topic` from `partition`, checked at wall clock `wall`.
    pub fn offer(&mut self, topic: Topic, partition: i32, payload: &[u8], wall: Ts) -> NaiveOutcome {
        // 1. too_large, invalid_json, schema.
        let event = match decode(topic, payload, self.cfg.max_message_bytes) {
            Ok(e) => e,
            Err(rej) => return NaiveOutcome::Rejected(rej.reason),
        };
        // 2. future_ts, against the wall clock.
        if event.ts > wall.saturating_add(self.cfg.max_future_skew) {
            return NaiveOutcome::Rejected(Reason::FutureTs);
        }
        // 3. late, against the largest ts accepted from the same topic-partition.
        let partition_max =
            self.events.iter().filter(|e| e.topic == topic && e.partition == partition).map(|e| e.ts).max();
        if let Some(max) = partition_max {
            if event.ts < max.saturating_sub(self.cfg.allowed_lateness) {
                return NaiveOutcome::Rejected(Reason::Late);
            }
        }
        // 4. duplicate: an accepted event with this id still within the horizon
        //    of the watermark before this event.
        if let Some(watermark) = self.watermark() {
            let horizon_start = watermark.saturating_sub(self.cfg.dedup_horizon);
            let seen = self.events.iter().any(|e| e.event_id == *event.event_id && e.ts > horizon_start);
            if seen {
                return NaiveOutcome::Duplicate;
            }
        }
        // 5. limit (§18), not registering the id.
        let mut stored = Stored {
            seq: self.events.len(),
            topic,
            partition,
            event_id: event.event_id.into_owned(),
            ts: event.ts,
            account_id: event.account_id.into_owned(),
            body: StoredBody::from_body(event.body),
        };
        if self.over_limit(&stored) {
            return NaiveOutcome::Rejected(Reason::Limit);
        }
        // 6. accepted; a usage event's feature counts as itself while fewer
        //    than `max_features` real features are used in the window.
        let now = self.watermark().map_or(stored.ts, |w| w.max(stored.ts));
        let floor = now - days(30);
        if let StoredBody::Usage { feature, counted_as, .. } = &mut stored.body {
            let live: BTreeSet<&str> = self
                .events
                .iter()
                .filter(|e| e.ts > floor)
                .filter_map(|e| match &e.body {
                    StoredBody::Usage { counted_as: Some(f), .. } if f != OTHER_FEATURE => Some(f.as_str()),
                    _ => None,
                })
                .collect();
            *counted_as = if stored.ts <= floor {
                None
            } else if feature == OTHER_FEATURE
                || live.contains(feature.as_str())
                || live.len() < self.cfg.limits.max_features
            {
                Some(feature.clone())
            } else {
                Some(OTHER_FEATURE.to_owned())
            };
        }
        self.events.push(stored);
        NaiveOutcome::Accepted
    }

    /// Whether accepting `e` would exceed a cardinality limit (§18).
    fn over_limit(&self, e: &Stored) -> bool {
        let limits = &self.cfg.limits;
        let from_partition: BTreeSet<&str> = self
            .events
            .iter()
            .filter(|x| x.topic == e.topic && x.partition == e.partition)
            .map(|x| x.account_id.as_str())
            .collect();
        if !from_partition.contains(e.account_id.as_str())
            && from_partition.len() as u64 >= limits.max_accounts_per_partition
        {
            return true;
        }
        let StoredBody::Ticket { ticket_id, action, priority, .. } = &e.body else { return false };
        if *action == TicketAction::Csat {
            return false;
        }
        let tickets = self.tickets_of(&e.account_id);
        let steps = tickets.get(ticket_id.as_str()).cloned().unwrap_or_default();
        if steps.len() >= limits.max_events_per_ticket {
            return true;
        }
        let open = tickets.values().filter(|s| TicketState::from_events(s).open).count() as u64;
        let mut with = steps.clone();
        // Arriving last, it sorts after every step at or before its ts.
        let at = with.partition_point(|s| s.0 <= e.ts);
        with.insert(at, (e.ts, *action, *priority));
        open >= limits.max_open_tickets_per_account
            && !TicketState::from_events(&steps).open
            && TicketState::from_events(&with).open
    }

    /// Each ticket's (non-csat) events of an account, in (ts, arrival) order.
    fn tickets_of(&self, account_id: &str) -> BTreeMap<&str, Vec<TicketStep>> {
        let mut tickets: BTreeMap<&str, Vec<TicketStep>> = BTreeMap::new();
        for e in self.events_of(account_id) {
            if let StoredBody::Ticket { ticket_id, action, priority, .. } = &e.body {
                if *action != TicketAction::Csat {
                    tickets.entry(ticket_id.as_str()).or_default().push((e.ts, *action, *priority));
                }
            }
        }
        tickets
    }

    /// The largest accepted ts, if any event was accepted.
    pub fn watermark(&self) -> Option<Ts> {
        self.events.iter().map(|e| e.ts).max()
    }

    /// All views as of the current watermark.
    pub fn views(&self) -> Value {
        self.views_at(self.watermark())
    }

    /// All views of the events accepted so far, with time advanced to
    /// `watermark` (at or after the latest event's ts).
    pub fn views_at(&self, watermark: Option<Ts>) -> Value {
        let as_of = match watermark {
            Some(t) => Value::String(format_rfc3339(t)),
            None => Value::Null,
        };
        // With nothing accepted there are no accounts, so `now` matters nowhere.
        let now = watermark.unwrap_or(0);

        let ids: BTreeSet<&str> = self.events.iter().map(|e| e.account_id.as_str()).collect();
        let mut accounts: Vec<AccountFacts> = ids.iter().map(|id| self.account_facts(id, now)).collect();
        assign_ranks(&mut accounts);
        let all: Vec<&AccountFacts> = accounts.iter().collect();

        // Scope groupings.
        let mut segments: BTreeMap<&str, Vec<&AccountFacts>> = BTreeMap::new();
        let mut regions: BTreeMap<&str, Vec<&AccountFacts>> = BTreeMap::new();
        let mut csms: BTreeMap<&str, Vec<&AccountFacts>> = BTreeMap::new();
        let mut unassigned: Vec<&AccountFacts> = Vec::new();
        for a in &accounts {
            segments.entry(a.segment.as_str()).or_default().push(a);
            regions.entry(a.region.as_str()).or_default().push(a);
            match &a.csm_id {
                Some(c) => csms.entry(c.as_str()).or_default().push(a),
                None => unassigned.push(a),
            }
        }
        let kpis_of = |groups: &BTreeMap<&str, Vec<&AccountFacts>>| -> Value {
            let map: serde_json::Map<String, Value> =
                groups.iter().map(|(k, v)| (k.to_string(), self.kpi(v))).collect();
            Value::Object(map)
        };

        let portfolio = self.kpi(&all);
        let segment_kpis = kpis_of(&segments);
        let region_kpis = kpis_of(&regions);
        let csm_kpis = kpis_of(&csms);

        let executive = json!({
            "as_of": as_of.clone(),
            "portfolio": portfolio.clone(),
            "segments": segment_kpis.clone(),
        });
        let manager = json!({
            "as_of": as_of.clone(),
            "csms": csm_kpis,
            "unassigned": self.kpi(&unassigned),
        });
        let analyst = json!({
            "as_of": as_of.clone(),
            "portfolio": portfolio,
            "segments": segment_kpis,
            "regions": region_kpis,
            "features": self.features(now),
            "health_histogram": health_histogram(&all),
        });

        let mut csm_channels = serde_json::Map::new();
        for (csm, book) in &csms {
            let book_accounts: serde_json::Map<String, Value> =
                book.iter().map(|a| (a.id.clone(), a.to_json())).collect();
            csm_channels.insert(
                csm.to_string(),
                json!({
                    "as_of": as_of.clone(),
                    "csm_id": csm,
                    "kpis": self.kpi(book),
                    "accounts": book_accounts,
                }),
            );
        }
        let account_objects: serde_json::Map<String, Value> =
            accounts.iter().map(|a| (a.id.clone(), a.to_json())).collect();

        json!({
            "executive": executive,
            "manager": manager,
            "analyst": analyst,
            "csm": csm_channels,
            "accounts": account_objects,
        })
    }

    /// The accepted usage events of `account_id` with `ts` in the UTC day
    /// starting at `day`, and their distinct users.
    pub fn day_usage(&self, account_id: &str, day: Ts) -> (u64, u64) {
        let mut users = BTreeSet::new();
        let mut events = 0;
        for e in &self.events {
            if let StoredBody::Usage { user_id, .. } = &e.body
                && e.account_id == account_id
                && e.ts >= day
                && e.ts < day + days(1)
            {
                events += 1;
                users.insert(user_id.as_str());
            }
        }
        (events, users.len() as u64)
    }

    /// The accepted events naming `account_id`, sorted by (ts, arrival).
    fn events_of(&self, account_id: &str) -> Vec<&Stored> {
        let mut evs: Vec<&Stored> = self.events.iter().filter(|e| e.account_id == account_id).collect();
        evs.sort_by_key(|e| (e.ts, e.seq));
        evs
    }

    /// Everything about one account as of `now`, computed from its events.
    fn account_facts(&self, account_id: &str, now: Ts) -> AccountFacts {
        let evs = self.events_of(account_id);
        let cfg = &self.cfg;
        let in_last = |ts: Ts, n: i64| ts > now - days(n);

        // Info: apply upserts in (ts, arrival) order; the last setter of each
        // field wins, which is the ">= ts, ties by arrival" rule.
        let mut name: Option<String> = None;
        let mut csm_id: Option<String> = None;
        let mut segment = "unknown".to_string();
        let mut region = "unknown".to_string();
        let mut seats: u64 = 0;
        let mut renewal_date: Option<i32> = None;
        for e in &evs {
            if let StoredBody::Account { name: n, csm_id: c, segment: s, region: r, seats: st, renewal_date: d } =
                &e.body
            {
                if let Some(n) = n {
                    name = Some(n.clone());
                }
                if let Some(c) = c {
                    csm_id = c.clone();
                }
                if let Some(s) = s {
                    segment = s.clone();
                }
                if let Some(r) = r {
                    region = r.clone();
                }
                if let Some(st) = st {
                    seats = *st;
                }
                if let Some(d) = d {
                    renewal_date = Some(*d);
                }
            }
        }

        // Usage.
        let usage: Vec<(Ts, &str, &str, Option<&str>)> = evs
            .iter()
            .filter_map(|e| match &e.body {
                StoredBody::Usage { user_id, feature, counted_as } => {
                    Some((e.ts, user_id.as_str(), feature.as_str(), counted_as.as_deref()))
                }
                _ => None,
            })
            .collect();
        let users_7d: BTreeSet<&str> = usage.iter().filter(|u| in_last(u.0, 7)).map(|u| u.1).collect();
        let users_30d: BTreeSet<&str> = usage.iter().filter(|u| in_last(u.0, 30)).map(|u| u.1).collect();
        let features_30d: BTreeSet<&str> = usage.iter().filter(|u| in_last(u.0, 30)).filter_map(|u| u.3).collect();
        let usage_events_7d = usage.iter().filter(|u| in_last(u.0, 7)).count() as u64;
        let usage_events_prev_7d = usage.iter().filter(|u| in_last(u.0, 14) && !in_last(u.0, 7)).count() as u64;
        let last_activity = usage.iter().map(|u| u.0).max();
        let core_usage_7d = usage
            .iter()
            .any(|u| in_last(u.0, 7) && (cfg.core_features.is_empty() || cfg.core_features.iter().any(|f| f == u.2)));

        // Tickets: each ticket's non-csat events, in (ts, arrival) order.
        let mut ticket_events: BTreeMap<&str, Vec<TicketStep>> = BTreeMap::new();
        for e in &evs {
            if let StoredBody::Ticket { ticket_id, action, priority, .. } = &e.body {
                if *action != TicketAction::Csat {
                    ticket_events.entry(ticket_id.as_str()).or_default().push((e.ts, *action, *priority));
                }
            }
        }
        let mut open_by_priority = [0u64; 4];
        let mut open = 0u64;
        let mut escalated_open = 0u64;
        let mut sla_breached = 0u64;
        let mut first_responses_30d: Vec<i64> = Vec::new();
        for tevs in ticket_events.values() {
            let t = TicketState::from_events(tevs);
            if t.open {
                open += 1;
                if let Some(p) = t.priority {
                    open_by_priority[p.index()] += 1;
                }
                if t.escalated {
                    escalated_open += 1;
                }
                if let (Some(opened), None, Some(p)) = (t.first_opened, t.first_response, t.priority) {
                    if now - opened > cfg.sla[p.index()] {
                        sla_breached += 1;
                    }
                }
            }
            if let (Some(opened), Some(responded)) = (t.first_opened, t.first_response) {
                if in_last(responded, 30) {
                    first_responses_30d.push(responded - opened);
                }
            }
        }
        let mut csat_sum_90d = 0u64;
        let mut csat_count_90d = 0u64;
        for e in &evs {
            if let StoredBody::Ticket { action: TicketAction::Csat, score: Some(s), .. } = &e.body {
                if in_last(e.ts, 90) {
                    csat_sum_90d += *s as u64;
                    csat_count_90d += 1;
                }
            }
        }

        // Revenue, in (ts, arrival) order.
        let revenue: Vec<(Ts, RevenueKind, i64)> = evs
            .iter()
            .filter_map(|e| match &e.body {
                StoredBody::Revenue { kind, arr_cents } => Some((e.ts, *kind, *arr_cents)),
                _ => None,
            })
            .collect();
        let arr_cents = revenue.last().map_or(0, |r| r.2);
        // The latest event before `s` (the list is sorted).
        let arr_before = |s: Ts| revenue.iter().rev().find(|r| r.0 < s).map_or(0, |r| r.2);
        let qtd_start = quarter_start(now);
        let t12m_start = now - days(365);
        let mut expansion_qtd = 0i64;
        let mut contraction_qtd = 0i64;
        let mut churned_qtd = 0i64;
        let mut prev = 0i64;
        for &(ts, kind, arr) in &revenue {
            if ts >= qtd_start && ts <= now {
                match kind {
                    RevenueKind::Expansion => expansion_qtd += (arr - prev).max(0),
                    RevenueKind::Contraction => contraction_qtd += (prev - arr).max(0),
                    RevenueKind::Churn => churned_qtd += prev,
                    RevenueKind::New | RevenueKind::Renewal => {}
                }
            }
            prev = arr;
        }
        let days_to_renewal = renewal_date.map(|d| d as i64 - utc_day(now) as i64);

        // Health (SPEC §4).
        let au30 = users_30d.len() as u64;
        let adoption = if seats > 0 {
            (100.0 * au30 as f64 / seats as f64).min(100.0)
        } else if au30 > 0 {
            100.0
        } else {
            0.0
        };
        let (cur, prev7) = (usage_events_7d as i64, usage_events_prev_7d as i64);
        let engagement = if prev7 == 0 {
            if cur > 0 { 100.0 } else { 0.0 }
        } else {
            (50.0 + 50.0 * (cur - prev7) as f64 / prev7 as f64).clamp(0.0, 100.0)
        };
        let [p1, p2, p3, p4] = open_by_priority.map(|n| n as i64);
        let support = (100 - 30 * p1 - 15 * p2 - 5 * (p3 + p4) - 20 * escalated_open as i64).max(0) as f64;
        let csat_avg_90d = if csat_count_90d > 0 { Some(csat_sum_90d as f64 / csat_count_90d as f64) } else { None };
        let sentiment = match csat_avg_90d {
            None => 60.0,
            Some(avg) => 100.0 * (avg - 1.0) / 4.0,
        };
        let c = [adoption, engagement, support, sentiment];
        let w = cfg.weights.f64();
        let num = w[0] * c[0] + w[1] * c[1] + w[2] * c[2] + w[3] * c[3];
        let den = w[0] + w[1] + w[2] + w[3];
        let score = num / den;
        // The same formula in big rationals, term by term as §4 writes it
        // (the engine uses 128-bit integers over a common denominator).
        let q = |n: i64| BigRational::from_integer(BigInt::from(n));
        let exact_adoption = if seats > 0 {
            (q(100) * q(au30 as i64) / q(seats as i64)).min(q(100))
        } else {
            q(if au30 > 0 { 100 } else { 0 })
        };
        let exact_engagement = if prev7 == 0 {
            q(if cur > 0 { 100 } else { 0 })
        } else {
            (q(50) + q(50) * (q(cur) - q(prev7)) / q(prev7)).clamp(q(0), q(100))
        };
        let exact_sentiment = if csat_count_90d > 0 {
            q(100) * (q(csat_sum_90d as i64) / q(csat_count_90d as i64) - q(1)) / q(4)
        } else {
            q(60)
        };
        let exact_c = [exact_adoption, exact_engagement, q(support as i64), exact_sentiment];
        let decimal =
            |d: &crate::exact::Decimal| BigRational::new(BigInt::from(d.units), BigInt::from(10).pow(d.scale));
        let exact_w = cfg.weights.decimals.map(|d| decimal(&d));
        let total_w: BigRational = exact_w.iter().sum();
        let exact: BigRational = exact_w.iter().zip(&exact_c).map(|(w, c)| w * c).sum::<BigRational>() / total_w;
        let tier = if exact >= decimal(&cfg.green) {
            Tier::Green
        } else if exact >= decimal(&cfg.yellow) {
            Tier::Yellow
        } else {
            Tier::Red
        };

        AccountFacts {
            id: account_id.to_string(),
            name,
            csm_id,
            segment,
            region,
            seats,
            renewal_date,
            active_users_7d: users_7d.len() as u64,
            active_users_30d: au30,
            usage_events_7d,
            usage_events_prev_7d,
            features_30d: features_30d.len() as u64,
            last_activity,
            core_usage_7d,
            open_by_priority,
            open,
            escalated_open,
            sla_breached,
            first_responses_30d,
            csat_sum_90d,
            csat_count_90d,
            arr_cents,
            days_to_renewal,
            arr_before_qtd: arr_before(qtd_start),
            arr_before_t12m: arr_before(t12m_start),
            expansion_qtd,
            contraction_qtd,
            churned_qtd,
            components: c,
            score,
            exact,
            tier,
            rank: None,
        }
    }

    /// The KPI object of a scope (SPEC §3.2).
    fn kpi(&self, scope: &[&AccountFacts]) -> Value {
        let n = scope.len() as u64;

        // Health.
        let mut tiers = serde_json::Map::new();
        for tier in [Tier::Green, Tier::Yellow, Tier::Red] {
            let members: Vec<&&AccountFacts> = scope.iter().filter(|a| a.tier == tier).collect();
            let arr: i64 = members.iter().map(|a| a.arr_cents).sum();
            tiers.insert(tier.as_str().to_string(), json!({"accounts": members.len() as u64, "arr": money(arr)}));
        }
        let arr: i64 = scope.iter().map(|a| a.arr_cents).sum();
        let at_risk: i64 = scope.iter().filter(|a| a.tier == Tier::Red).map(|a| a.arr_cents).sum();
        let at_risk_share = if arr == 0 { 0.0 } else { at_risk as f64 / arr as f64 };
        let avg_score = if n == 0 {
            Value::Null
        } else {
            let billion = BigRational::from_integer(BigInt::from(1_000_000_000));
            let sum: i64 =
                scope.iter().map(|a| i64::try_from((&a.exact * &billion).round().to_integer()).unwrap()).sum();
            json!(sum as f64 / 1e9 / n as f64)
        };

        // Usage.
        let paying: Vec<&&AccountFacts> = scope.iter().filter(|a| a.arr_cents > 0).collect();
        let adoption_rate = if paying.is_empty() {
            Value::Null
        } else {
            let adopted = paying.iter().filter(|a| a.core_usage_7d).count();
            json!(adopted as f64 / paying.len() as f64)
        };

        // Tickets.
        let open_p = |i: usize| scope.iter().map(|a| a.open_by_priority[i]).sum::<u64>();
        let mut frt: Vec<i64> = scope.iter().flat_map(|a| a.first_responses_30d.iter().copied()).collect();
        frt.sort();
        let percentile = |p: usize| -> Value {
            if frt.is_empty() {
                return Value::Null;
            }
            // Nearest rank: k = ceil(p/100 · count), 1-based.
            let k = (p * frt.len()).div_ceil(100);
            json!(frt[k - 1] as f64 / 60_000_000.0)
        };
        let csat_sum: u64 = scope.iter().map(|a| a.csat_sum_90d).sum();
        let csat_count: u64 = scope.iter().map(|a| a.csat_count_90d).sum();
        let csat_avg = if csat_count == 0 { Value::Null } else { json!(csat_sum as f64 / csat_count as f64) };

        // Revenue.
        let (grr_qtd, nrr_qtd) = retention(scope, |a| a.arr_before_qtd);
        let (grr_t12m, nrr_t12m) = retention(scope, |a| a.arr_before_t12m);

        json!({
            "health": {
                "accounts": n,
                "tiers": tiers,
                "at_risk_arr": money(at_risk),
                "at_risk_share": at_risk_share,
                "avg_score": avg_score,
            },
            "usage": {
                "active_users_7d": scope.iter().map(|a| a.active_users_7d).sum::<u64>(),
                "active_users_30d": scope.iter().map(|a| a.active_users_30d).sum::<u64>(),
                "usage_events_7d": scope.iter().map(|a| a.usage_events_7d).sum::<u64>(),
                "adoption_rate": adoption_rate,
            },
            "tickets": {
                "open": {
                    "p1": open_p(0),
                    "p2": open_p(1),
                    "p3": open_p(2),
                    "p4": open_p(3),
                    "total": scope.iter().map(|a| a.open).sum::<u64>(),
                },
                "escalated_open": scope.iter().map(|a| a.escalated_open).sum::<u64>(),
                "sla_breached": scope.iter().map(|a| a.sla_breached).sum::<u64>(),
                "first_response_minutes": {
                    "count": frt.len() as u64,
                    "p50": percentile(50),
                    "p90": percentile(90),
                    "p99": percentile(99),
                },
                "csat_avg_90d": csat_avg,
                "csat_count_90d": csat_count,
            },
            "revenue": {
                "arr": money(arr),
                "paying_accounts": paying.len() as u64,
                "grr_qtd": grr_qtd,
                "nrr_qtd": nrr_qtd,
                "grr_t12m": grr_t12m,
                "nrr_t12m": nrr_t12m,
                "expansion_arr_qtd": money(scope.iter().map(|a| a.expansion_qtd).sum()),
                "contraction_arr_qtd": money(scope.iter().map(|a| a.contraction_qtd).sum()),
                "churned_arr_qtd": money(scope.iter().map(|a| a.churned_qtd).sum()),
            },
            "alerts": {"critical": 0, "warning": 0},
        })
    }

    /// Analyst features: per feature used in the last 30 days, distinct
    /// accounts and distinct `user_id`s.
    fn features(&self, now: Ts) -> Value {
        let mut per_feature: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
        for e in &self.events {
            if let StoredBody::Usage { user_id, counted_as: Some(feature), .. } = &e.body {
                if e.ts > now - days(30) {
                    let entry = per_feature.entry(feature.as_str()).or_default();
                    entry.0.insert(e.account_id.as_str());
                    entry.1.insert(user_id.as_str());
                }
            }
        }
        let map: serde_json::Map<String, Value> = per_feature
            .into_iter()
            .map(|(f, (accounts, users))| {
                (f.to_string(), json!({"accounts_30d": accounts.len() as u64, "users_30d": users.len() as u64}))
            })
            .collect();
        Value::Object(map)
    }
}

/// One ticket event: ts, action, and the priority it carries.
type TicketStep = (Ts, TicketAction, Option<Priority>);

/// A ticket's state after folding its (non-csat) events in order.
#[derive(Debug, Default)]
struct TicketState {
    open: bool,
    escalated: bool,
    priority: Option<Priority>,
    first_opened: Option<Ts>,
    first_response: Option<Ts>,
}

impl TicketState {
    /// `events` must be sorted by (ts, arrival).
    fn from_events(events: &[TicketStep]) -> Self {
        let mut t = TicketState::default();
        for &(ts, action, priority) in events {
            match action {
                TicketAction::Opened => {
                    t.open = true;
                    t.priority = priority;
                    t.first_opened = Some(t.first_opened.map_or(ts, |f| f.min(ts)));
                }
                TicketAction::Reopened => {
                    t.open = true;
                    if priority.is_some() {
                        t.priority = priority;
                    }
                }
                TicketAction::Escalated => {
                    t.escalated = true;
                    if priority.is_some() {
                        t.priority = priority;
                    }
                }
                TicketAction::Resolved => {
                    t.open = false;
                    t.escalated = false;
                }
                TicketAction::FirstResponse => {
                    t.first_response = Some(t.first_response.map_or(ts, |f| f.min(ts)));
                }
                TicketAction::Csat => {}
            }
        }
        t
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    Red,
    Yellow,
    Green,
}

impl Tier {
    fn as_str(self) -> &'static str {
        match self {
            Tier::Red => "red",
            Tier::Yellow => "yellow",
            Tier::Green => "green",
        }
    }

    /// Position in the CSM priority order: red first.
    fn order(self) -> u8 {
        match self {
            Tier::Red => 0,
            Tier::Yellow => 1,
            Tier::Green => 2,
        }
    }
}

/// Everything the views say about one account, as of `now`.
#[derive(Debug)]
struct AccountFacts {
    id: String,
    name: Option<String>,
    csm_id: Option<String>,
    segment: String,
    region: String,
    seats: u64,
    renewal_date: Option<i32>,
    active_users_7d: u64,
    active_users_30d: u64,
    usage_events_7d: u64,
    usage_events_prev_7d: u64,
    features_30d: u64,
    last_activity: Option<Ts>,
    /// A usage event on a core feature in the last 7 days (for adoption_rate).
    core_usage_7d: bool,
    open_by_priority: [u64; 4],
    open: u64,
    escalated_open: u64,
    sla_breached: u64,
    /// First-response times (µs) of tickets whose first response is in the last 30 days.
    first_responses_30d: Vec<i64>,
    csat_sum_90d: u64,
    csat_count_90d: u64,
    arr_cents: i64,
    days_to_renewal: Option<i64>,
    /// ARR at the last instant before the quarter start / now − 365 days.
    arr_before_qtd: i64,
    arr_before_t12m: i64,
    expansion_qtd: i64,
    contraction_qtd: i64,
    churned_qtd: i64,
    /// adoption, engagement, support, sentiment (unrounded).
    components: [f64; 4],
    /// Unrounded.
    score: f64,
    /// The score exactly (tier, rank order and histogram use it).
    exact: BigRational,
    tier: Tier,
    rank: Option<usize>,
}

impl AccountFacts {
    /// Red with a renewal in the next 90 days: the top of a CSM's day.
    fn renewal_at_risk(&self) -> bool {
        self.tier == Tier::Red && matches!(self.days_to_renewal, Some(d) if (0..=90).contains(&d))
    }

    /// The account object (SPEC §3.1).
    fn to_json(&self) -> Value {
        let drop_ratio = if self.usage_events_prev_7d > 0 {
            1.0 - self.usage_events_7d as f64 / self.usage_events_prev_7d as f64
        } else {
            0.0
        };
        let csat_avg = if self.csat_count_90d > 0 {
            json!(self.csat_sum_90d as f64 / self.csat_count_90d as f64)
        } else {
            Value::Null
        };
        let [adoption, engagement, support, sentiment] = self.components;
        json!({
            "account_id": self.id,
            "info": {
                "name": self.name,
                "csm_id": self.csm_id,
                "segment": self.segment,
                "region": self.region,
                "seats": self.seats,
                "renewal_date": self.renewal_date.map(format_date),
            },
            "usage": {
                "active_users_7d": self.active_users_7d,
                "active_users_30d": self.active_users_30d,
                "usage_events_7d": self.usage_events_7d,
                "usage_events_prev_7d": self.usage_events_prev_7d,
                "drop_ratio": drop_ratio,
                "features_30d": self.features_30d,
                "last_activity": self.last_activity.map(format_rfc3339),
            },
            "tickets": {
                "open_p1": self.open_by_priority[0],
                "open_p2": self.open_by_priority[1],
                "open_p3": self.open_by_priority[2],
                "open_p4": self.open_by_priority[3],
                "open": self.open,
                "escalated_open": self.escalated_open,
                "sla_breached": self.sla_breached,
                "csat_avg_90d": csat_avg,
                "csat_count_90d": self.csat_count_90d,
            },
            "revenue": {
                "arr": money(self.arr_cents),
                "days_to_renewal": self.days_to_renewal,
            },
            "health": {
                "score": round1(self.score),
                "tier": self.tier.as_str(),
                "components": {
                    "adoption": round1(adoption),
                    "engagement": round1(engagement),
                    "support": round1(support),
                    "sentiment": round1(sentiment),
                },
                "rank": self.rank.map(|r| r as u64),
            },
            "alerts": {"critical": 0, "warning": 0},
        })
    }
}

/// The CSM priority order (SPEC §3.4).
fn priority_order(a: &AccountFacts, b: &AccountFacts) -> Ordering {
    b.renewal_at_risk()
        .cmp(&a.renewal_at_risk())
        .then(a.tier.order().cmp(&b.tier.order()))
        .then(a.exact.cmp(&b.exact))
        .then(b.arr_cents.cmp(&a.arr_cents))
        .then(a.id.cmp(&b.id))
}

/// Sets each assigned account's 1-based rank within its CSM's book.
fn assign_ranks(accounts: &mut [AccountFacts]) {
    let csms: BTreeSet<String> = accounts.iter().filter_map(|a| a.csm_id.clone()).collect();
    for csm in csms {
        let mut book: Vec<usize> =
            (0..accounts.len()).filter(|&i| accounts[i].csm_id.as_deref() == Some(&csm)).collect();
        book.sort_by(|&i, &j| priority_order(&accounts[i], &accounts[j]));
        for (pos, &i) in book.iter().enumerate() {
            accounts[i].rank = Some(pos + 1);
        }
    }
}

/// (grr, nrr) for the cohort of accounts with `start(a)` > 0; nulls when empty.
fn retention(scope: &[&AccountFacts], start: impl Fn(&AccountFacts) -> i64) -> (Value, Value) {
    let cohort: Vec<&&AccountFacts> = scope.iter().filter(|a| start(a) > 0).collect();
    if cohort.is_empty() {
        return (Value::Null, Value::Null);
    }
    let sum_start: i64 = cohort.iter().map(|a| start(a)).sum();
    let sum_cur: i64 = cohort.iter().map(|a| a.arr_cents).sum();
    let sum_kept: i64 = cohort.iter().map(|a| a.arr_cents.min(start(a))).sum();
    (json!(sum_kept as f64 / sum_start as f64), json!(sum_cur as f64 / sum_start as f64))
}

/// 10 buckets of account counts by exact score.
fn health_histogram(accounts: &[&AccountFacts]) -> Value {
    let mut buckets = [0u64; 10];
    for a in accounts {
        let tenth = (&a.exact / BigRational::from_integer(BigInt::from(10))).floor().to_integer();
        let b = usize::try_from(tenth).unwrap_or(0).min(9);
        buckets[b] += 1;
    }
    json!(buckets)
}

/// Integer cents as a JSON number of currency units.
fn money(cents: i64) -> Value {
    json!(cents as f64 / 100.0)
}

/// Rounds to one decimal, half away from zero.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{MICROS_PER_MIN, parse_rfc3339};

    const HOUR: i64 = 60 * MICROS_PER_MIN;

    fn t(s: &str) -> Ts {
        parse_rfc3339(s).unwrap()
    }

    /// `2026-03-10T12:00:00Z`, the watermark of most tests.
    fn now() -> Ts {
        t("2026-03-10T12:00:00Z")
    }

    /// A payload: `fields` plus the common fields.
    fn payload(id: &str, ts: Ts, account: &str, fields: Value) -> Vec<u8> {
        let mut v = fields;
        v["event_id"] = json!(id);
        v["ts"] = json!(format_rfc3339(ts));
        v["account_id"] = json!(account);
        serde_json::to_vec(&v).unwrap()
    }

    /// Offers on partition 0 with a wall clock far ahead, expecting acceptance.
    fn accept(m: &mut NaiveModel, topic: Topic, id: &str, ts: Ts, account: &str, fields: Value) {
        let out = m.offer(topic, 0, &payload(id, ts, account, fields), ts + days(365));
        assert_eq!(out, NaiveOutcome::Accepted, "{id}");
    }

    fn usage(m: &mut NaiveModel, id: &str, ts: Ts, account: &str, user: &str, feature: &str) {
        accept(m, Topic::Usage, id, ts, account, json!({"user_id": user, "feature": feature}));
    }

    fn ticket(m: &mut NaiveModel, id: &str, ts: Ts, account: &str, fields: Value) {
        accept(m, Topic::Tickets, id, ts, account, fields);
    }

    fn revenue(m: &mut NaiveModel, id: &str, ts: Ts, account: &str, kind: &str, arr: Option<f64>) {
        let mut f = json!({"kind": kind});
        if let Some(a) = arr {
            f["arr"] = json!(a);
        }
        accept(m, Topic::Revenue, id, ts, account, f);
    }

    fn close(v: &Value, want: f64) -> bool {
        v.as_f64().is_some_and(|x| (x - want).abs() < 1e-9)
    }

    #[test]
    fn acceptance_decisions() {
        let mut m = NaiveModel::new(StateConfig::default());
        let n = now();
        let wall = n;
        let u = |id: &str, ts: Ts| payload(id, ts, "a", json!({"user_id": "u", "feature": "f"}));

        assert_eq!(m.offer(Topic::Usage, 0, b"[1]", wall), NaiveOutcome::Rejected(Reason::InvalidJson));
        assert_eq!(m.offer(Topic::Usage, 0, b"{\"event_id\":\"x\"}", wall), NaiveOutcome::Rejected(Reason::Schema));
        // Future: at most 1 h ahead of the wall clock.
        assert_eq!(m.offer(Topic::Usage, 0, &u("f1", wall + HOUR + 1), wall), NaiveOutcome::Rejected(Reason::FutureTs));
        // A rejected event does not register its id.
        assert_eq!(m.offer(Topic::Usage, 0, &u("f1", n), wall), NaiveOutcome::Accepted);
        assert_eq!(m.offer(Topic::Usage, 0, &u("e2", wall + HOUR), wall), NaiveOutcome::Accepted);
        let max0 = wall + HOUR;

        // Late is per topic-partition, and the bound is inclusive.
        let lateness = days(35);
        assert_eq!(m.offer(Topic::Usage, 0, &u("l1", max0 - lateness - 1), wall), NaiveOutcome::Rejected(Reason::Late));
        assert_eq!(m.offer(Topic::Usage, 0, &u("l2", max0 - lateness), wall), NaiveOutcome::Accepted);
        assert_eq!(m.offer(Topic::Usage, 1, &u("l3", max0 - days(100)), wall), NaiveOutcome::Accepted);
        assert_eq!(
            m.offer(
                Topic::Tickets,
                0,
                &payload("l4", max0 - days(100), "a", json!({"ticket_id": "T", "action": "resolved"})),
                wall
            ),
            NaiveOutcome::Accepted
        );
        // Late wins over duplicate.
        assert_eq!(m.offer(Topic::Usage, 0, &u("l3", max0 - days(100)), wall), NaiveOutcome::Rejected(Reason::Late));

        // Duplicate across topics while within the horizon of the watermark.
        let dup = payload("f1", n, "a", json!({"kind": "churn"}));
        assert_eq!(m.offer(Topic::Revenue, 0, &dup, wall), NaiveOutcome::Duplicate);
        // l3 (ts 100 days back) is outside the horizon: its id may be used again.
        assert_eq!(m.offer(Topic::Usage, 1, &u("l3", max0 - days(90)), wall), NaiveOutcome::Accepted);
        // Advance the watermark to exactly 7 days after f1: f1 is forgotten.
        let later = n + days(7);
        assert_eq!(m.offer(Topic::Usage, 0, &u("w", later), later), NaiveOutcome::Accepted);
        assert_eq!(m.offer(Topic::Usage, 0, &u("e2", later), later), NaiveOutcome::Duplicate);
        assert_eq!(m.offer(Topic::Usage, 0, &u("f1", later), later), NaiveOutcome::Accepted);
        assert_eq!(m.views()["as_of"], Value::Null, "as_of lives in the channels");
        assert_eq!(m.views()["executive"]["as_of"], json!("2026-03-17T12:00:00Z"));
    }

    #[test]
    fn empty_model() {
        let m = NaiveModel::new(StateConfig::default());
        let v = m.views();
        assert_eq!(v["executive"]["as_of"], Value::Null);
        assert_eq!(v["executive"]["segments"], json!({}));
        assert_eq!(v["manager"]["csms"], json!({}));
        assert_eq!(v["manager"]["unassigned"]["health"]["accounts"], json!(0));
        assert_eq!(v["manager"]["unassigned"]["health"]["avg_score"], Value::Null);
        assert_eq!(v["analyst"]["portfolio"]["usage"]["adoption_rate"], Value::Null);
        assert_eq!(v["analyst"]["portfolio"]["revenue"]["nrr_qtd"], Value::Null);
        assert_eq!(v["analyst"]["portfolio"]["revenue"]["arr"], json!(0.0));
        assert_eq!(v["analyst"]["health_histogram"], json!([0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(v["csm"], json!({}));
        assert_eq!(v["accounts"], json!({}));
    }

    /// One account: usage over two weeks, tickets in every state, csat.
    #[test]
    fn one_account_usage_tickets_health() {
        let mut m = NaiveModel::new(StateConfig::default());
        let n = now();
        accept(
            &mut m,
            Topic::Accounts,
            "a-1",
            n - days(20),
            "acme",
            json!({"name": "Acme", "csm_id": "c1", "segment": "ent", "region": "emea", "seats": 10, "renewal_date": "2026-04-09"}),
        );
        usage(&mut m, "u-1", n - days(14), "acme", "u9", "x"); // in 30d only
        usage(&mut m, "u-2", n - days(10), "acme", "u1", "a");
        usage(&mut m, "u-3", n - days(9), "acme", "u2", "a");
        usage(&mut m, "u-4", n - days(8), "acme", "u1", "a");
        usage(&mut m, "u-5", n - days(7), "acme", "u2", "a"); // prev week (half-open)
        usage(&mut m, "u-6", n - days(3), "acme", "u1", "b");

        ticket(&mut m, "c-old", n - days(100), "acme", json!({"ticket_id": "T0", "action": "csat", "score": 5}));
        ticket(&mut m, "c-1", n - days(10), "acme", json!({"ticket_id": "T0", "action": "csat", "score": 3}));
        // T3: opened p2, escalated, resolved: closed, no first response.
        ticket(&mut m, "t3-o", n - days(6), "acme", json!({"ticket_id": "T3", "action": "opened", "priority": "p2"}));
        ticket(&mut m, "t3-e", n - days(6) + HOUR, "acme", json!({"ticket_id": "T3", "action": "escalated"}));
        // T2: p4, answered after 90 min, escalated, still open.
        ticket(&mut m, "t2-o", n - days(5), "acme", json!({"ticket_id": "T2", "action": "opened", "priority": "p4"}));
        ticket(
            &mut m,
            "t2-f",
            n - days(5) + 90 * MICROS_PER_MIN,
            "acme",
            json!({"ticket_id": "T2", "action": "first_response"}),
        );
        // T4: p3, answered after 30 min, resolved, reopened as p4.
        ticket(&mut m, "t4-o", n - days(4), "acme", json!({"ticket_id": "T4", "action": "opened", "priority": "p3"}));
        ticket(
            &mut m,
            "t4-f",
            n - days(4) + 30 * MICROS_PER_MIN,
            "acme",
            json!({"ticket_id": "T4", "action": "first_response"}),
        );
        ticket(&mut m, "t2-e", n - days(4) + HOUR, "acme", json!({"ticket_id": "T2", "action": "escalated"}));
        ticket(&mut m, "t4-r", n - days(3), "acme", json!({"ticket_id": "T4", "action": "resolved"}));
        ticket(&mut m, "t3-r", n - days(1), "acme", json!({"ticket_id": "T3", "action": "resolved"}));
        ticket(
            &mut m,
            "t4-re",
            n - days(1),
            "acme",
            json!({"ticket_id": "T4", "action": "reopened", "priority": "p4"}),
        );
        // T1: p1, 2 h without a response: breaches the 60 min SLA.
        ticket(&mut m, "t1-o", n - 2 * HOUR, "acme", json!({"ticket_id": "T1", "action": "opened", "priority": "p1"}));
        usage(&mut m, "u-7", n, "acme", "u3", "b");

        let v = m.views();
        let a = &v["accounts"]["acme"];
        assert_eq!(a["account_id"], json!("acme"));
        assert_eq!(
            a["info"],
            json!({"name": "Acme", "csm_id": "c1", "segment": "ent", "region": "emea", "seats": 10, "renewal_date": "2026-04-09"})
        );
        assert_eq!(
            a["usage"],
            json!({
                "active_users_7d": 2, "active_users_30d": 4, "usage_events_7d": 2, "usage_events_prev_7d": 4,
                "drop_ratio": 0.5, "features_30d": 3, "last_activity": "2026-03-10T12:00:00Z",
            })
        );
        assert_eq!(
            a["tickets"],
            json!({
                "open_p1": 1, "open_p2": 0, "open_p3": 0, "open_p4": 2, "open": 3, "escalated_open": 1,
                "sla_breached": 1, "csat_avg_90d": 3.0, "csat_count_90d": 1,
            })
        );
        assert_eq!(a["revenue"], json!({"arr": 0.0, "days_to_renewal": 30}));
        // adoption 100·4/10 = 40; engagement 50 + 50·(2−4)/4 = 25;
        // support 100 − 30 − 5·2 − 20 = 40; sentiment 100·(3−1)/4 = 50;
        // score = 0.35·40 + 0.2·25 + 0.25·40 + 0.2·50 = 39 → red.
        let h = &a["health"];
        assert_eq!(h["components"], json!({"adoption": 40.0, "engagement": 25.0, "support": 40.0, "sentiment": 50.0}));
        assert!(close(&h["score"], 39.0), "{h}");
        assert_eq!(h["tier"], json!("red"));
        assert_eq!(h["rank"], json!(1));

        let k = &v["executive"]["portfolio"];
        assert_eq!(k["tickets"]["open"], json!({"p1": 1, "p2": 0, "p3": 0, "p4": 2, "total": 3}));
        // First responses: T4 30 min, T2 90 min; nearest rank.
        assert_eq!(k["tickets"]["first_response_minutes"], json!({"count": 2, "p50": 30.0, "p90": 90.0, "p99": 90.0}));
        assert_eq!(k["tickets"]["csat_avg_90d"], json!(3.0));
        assert_eq!(
            k["usage"],
            json!({"active_users_7d": 2, "active_users_30d": 4, "usage_events_7d": 2, "adoption_rate": null})
        );
        assert_eq!(k["health"]["tiers"]["red"], json!({"accounts": 1, "arr": 0.0}));
        assert!(close(&k["health"]["avg_score"], 39.0));
        assert_eq!(k["health"]["at_risk_share"], json!(0.0));
        assert_eq!(v["analyst"]["health_histogram"], json!([0, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
        assert_eq!(
            v["analyst"]["features"],
            json!({
                "x": {"accounts_30d": 1, "users_30d": 1},
                "a": {"accounts_30d": 1, "users_30d": 2},
                "b": {"accounts_30d": 1, "users_30d": 2},
            })
        );
        assert_eq!(v["executive"]["segments"].as_object().unwrap().keys().collect::<Vec<_>>(), ["ent"]);
        assert_eq!(v["analyst"]["regions"].as_object().unwrap().keys().collect::<Vec<_>>(), ["emea"]);
        assert_eq!(v["manager"]["unassigned"]["health"]["accounts"], json!(0));
        assert_eq!(v["csm"]["c1"]["accounts"]["acme"], *a);
        assert_eq!(v["csm"]["c1"]["csm_id"], json!("c1"));

        // A day later (another account moves the watermark): u-6 and u-7 are
        // still in the 7d window, u-2..u-5 in the previous one, u-1 leaves 30d
        // only after 16 days.
        usage(&mut m, "u-8", n + days(1), "other", "u1", "a");
        let v = m.views();
        let a = &v["accounts"]["acme"];
        assert_eq!(a["usage"]["usage_events_prev_7d"], json!(4));
        assert_eq!(a["usage"]["usage_events_7d"], json!(2));
        assert_eq!(a["usage"]["active_users_30d"], json!(4));
        assert_eq!(a["revenue"]["days_to_renewal"], json!(29));
        assert_eq!(v["analyst"]["features"]["a"], json!({"accounts_30d": 2, "users_30d": 2}));
        assert_eq!(v["manager"]["unassigned"]["health"]["accounts"], json!(1));
    }

    /// new → expansion → contraction and new → churn across a quarter boundary.
    #[test]
    fn revenue_and_retention() {
        let mut m = NaiveModel::new(StateConfig::default());
        revenue(&mut m, "r4-n", t("2025-02-01T00:00:00Z"), "r4", "new", Some(200.0));
        revenue(&mut m, "r1-n", t("2025-11-01T00:00:00Z"), "r1", "new", Some(1000.0));
        revenue(&mut m, "r2-n", t("2025-12-01T00:00:00Z"), "r2", "new", Some(500.0));
        revenue(&mut m, "r4-c", t("2025-12-15T00:00:00Z"), "r4", "contraction", Some(150.0));
        revenue(&mut m, "r1-e", t("2026-01-15T00:00:00Z"), "r1", "expansion", Some(1500.5));
        revenue(&mut m, "r1-c", t("2026-02-01T00:00:00Z"), "r1", "contraction", Some(1200.0));
        revenue(&mut m, "r2-x", t("2026-02-15T00:00:00Z"), "r2", "churn", None);
        revenue(&mut m, "r3-n", t("2026-02-20T00:00:00Z"), "r3", "new", Some(300.0));
        accept(&mut m, Topic::Accounts, "a", now(), "r1", json!({"segment": "smb"}));

        let v = m.views();
        assert_eq!(v["accounts"]["r1"]["revenue"]["arr"], json!(1200.0));
        assert_eq!(v["accounts"]["r2"]["revenue"]["arr"], json!(0.0));
        let r = &v["executive"]["portfolio"]["revenue"];
        assert_eq!(r["arr"], json!(1650.0));
        assert_eq!(r["paying_accounts"], json!(3));
        // Quarter from 2026-01-01: cohort r1 1000, r2 500, r4 150 (r3 is new).
        assert!(close(&r["nrr_qtd"], 1350.0 / 1650.0), "{r}");
        assert!(close(&r["grr_qtd"], 1150.0 / 1650.0), "{r}");
        // Since 2025-03-10T12:00Z: only r4 (200 → 150).
        assert!(close(&r["nrr_t12m"], 0.75), "{r}");
        assert!(close(&r["grr_t12m"], 0.75), "{r}");
        assert_eq!(r["expansion_arr_qtd"], json!(500.5));
        assert_eq!(r["contraction_arr_qtd"], json!(300.5));
        assert_eq!(r["churned_arr_qtd"], json!(500.0));

        // No usage, no tickets: 0.25·100 + 0.2·60 = 37, all red.
        let h = &v["executive"]["portfolio"]["health"];
        assert_eq!(h["tiers"]["red"], json!({"accounts": 4, "arr": 1650.0}));
        assert_eq!(h["at_risk_arr"], json!(1650.0));
        assert_eq!(h["at_risk_share"], json!(1.0));
        assert!(close(&h["avg_score"], 37.0));
        assert_eq!(v["executive"]["portfolio"]["usage"]["adoption_rate"], json!(0.0));
        assert_eq!(v["analyst"]["health_histogram"], json!([0, 0, 0, 4, 0, 0, 0, 0, 0, 0]));
        // Segment scopes: r1 moved to smb.
        let smb = &v["executive"]["segments"]["smb"]["revenue"];
        assert_eq!(smb["expansion_arr_qtd"], json!(500.5));
        assert_eq!(smb["churned_arr_qtd"], json!(0.0));
        assert!(close(&smb["nrr_qtd"], 1.2));
        assert!(close(&smb["grr_qtd"], 1.0));
        let unknown = &v["executive"]["segments"]["unknown"]["revenue"];
        assert_eq!(unknown["arr"], json!(450.0));
    }

    #[test]
    fn upserts_converge_and_ranks_follow_priority() {
        let mut m = NaiveModel::new(StateConfig::default());
        let n = now();
        let up =
            |m: &mut NaiveModel, id: &str, ts: Ts, acct: &str, f: Value| accept(m, Topic::Accounts, id, ts, acct, f);
        up(&mut m, "a1", n - days(2), "a", json!({"csm_id": "c1", "name": "A"}));
        // Older than the csm_id setter: csm_id stays, the unseen segment is set.
        up(&mut m, "a2", n - days(3), "a", json!({"csm_id": "c2", "segment": "smb", "name": "old"}));
        up(&mut m, "b1", n - days(2), "b", json!({"csm_id": "c1", "renewal_date": "2026-04-09"}));
        up(&mut m, "c1", n - days(2), "c", json!({"csm_id": "c1", "renewal_date": "2026-04-09"}));
        up(&mut m, "e1", n - days(2), "e", json!({"csm_id": "c1", "renewal_date": "2026-03-09"}));
        up(&mut m, "d1", n, "d", json!({"csm_id": "c1"}));
        // Equal ts: the later arrival wins; explicit null unassigns.
        up(&mut m, "d2", n, "d", json!({"csm_id": null}));
        revenue(&mut m, "c-r", n - days(1), "c", "new", Some(100.0));
        revenue(&mut m, "e-r", n - days(1), "e", "new", Some(999.0));

        let v = m.views();
        let info = &v["accounts"]["a"]["info"];
        assert_eq!(info["csm_id"], json!("c1"));
        assert_eq!(info["name"], json!("A"));
        assert_eq!(info["segment"], json!("smb"));
        assert_eq!(info["region"], json!("unknown"));
        assert_eq!(v["accounts"]["d"]["info"]["csm_id"], Value::Null);
        assert_eq!(v["accounts"]["d"]["health"]["rank"], Value::Null);
        // All red at 37: renewal-at-risk first (c by ARR, then b); then e
        // (renewal passed) by ARR before a.
        let rank = |id: &str| v["accounts"][id]["health"]["rank"].clone();
        assert_eq!([rank("c"), rank("b"), rank("e"), rank("a")], [json!(1), json!(2), json!(3), json!(4)]);
        assert_eq!(v["accounts"]["e"]["revenue"]["days_to_renewal"], json!(-1));
        let c1 = &v["csm"]["c1"];
        assert_eq!(c1["accounts"].as_object().unwrap().keys().collect::<Vec<_>>(), ["a", "b", "c", "e"]);
        assert_eq!(c1["kpis"]["health"]["accounts"], json!(4));
        assert_eq!(v["manager"]["unassigned"]["health"]["accounts"], json!(1));
        assert_eq!(v["manager"]["csms"].as_object().unwrap().keys().collect::<Vec<_>>(), ["c1"]);
        assert!(v["csm"].get("c2").is_none());
        assert_eq!(v["executive"]["segments"].as_object().unwrap().keys().collect::<Vec<_>>(), ["smb", "unknown"]);
    }

    #[test]
    fn sla_and_core_features() {
        let cfg = StateConfig { core_features: vec!["core".into()], ..StateConfig::default() };
        let mut m = NaiveModel::new(cfg);
        let n = now();
        revenue(&mut m, "ra", n - days(1), "a", "new", Some(10.0));
        revenue(&mut m, "rb", n - days(1), "b", "new", Some(10.0));
        usage(&mut m, "ua", n - days(1), "a", "u", "core");
        usage(&mut m, "ub", n - days(1), "b", "u", "other");
        // Exactly at the SLA: not breached (strict); one µs more: breached.
        // Opened as p2 (240 min SLA), escalated to p1 (60 min).
        ticket(&mut m, "p1", n - HOUR, "a", json!({"ticket_id": "T", "action": "opened", "priority": "p2"}));
        ticket(&mut m, "p2", n - HOUR + 1, "a", json!({"ticket_id": "T", "action": "escalated", "priority": "p1"}));
        // Never opened: open, no priority, never breaches.
        ticket(&mut m, "q1", n - days(2), "b", json!({"ticket_id": "Q", "action": "reopened"}));
        accept(&mut m, Topic::Accounts, "now", n, "b", json!({}));
        let v = m.views();
        assert_eq!(v["accounts"]["a"]["tickets"]["sla_breached"], json!(0));
        assert_eq!(v["accounts"]["a"]["tickets"]["open_p1"], json!(1));
        assert_eq!(v["accounts"]["b"]["tickets"]["open"], json!(1));
        assert_eq!(v["accounts"]["b"]["tickets"]["sla_breached"], json!(0));
        assert!(close(&v["executive"]["portfolio"]["usage"]["adoption_rate"], 0.5));
        accept(&mut m, Topic::Accounts, "now2", n + 1, "b", json!({}));
        assert_eq!(m.views()["accounts"]["a"]["tickets"]["sla_breached"], json!(1));
    }
}
