//! Alerts (SPEC §5): rule evaluation on every change of a scope, the
//! firing → resolved lifecycle with cooldowns in event time, event rules, and
//! the alert messages of §5.3.
//!
//! Part of the fold: synchronous, no clock, no I/O. Transitions collect in
//! a list that the ingest loop takes after each batch; it posts them to the
//! delivery outbox ([`Alerting::post`]), where each stays, checkpointed with
//! the rest of the state, until the broker has acknowledged it
//! ([`Alerting::ack`]), so a crash re-produces every transition not yet
//! acknowledged (§5.3 additions). Firing alerts and cooldowns are engine
//! state, so a restored engine does not fire again what is already firing.
//!
//! An account alert always carries the account's current name, owner and
//! segment: when one of them changes while the alert fires, the alert is
//! emitted again as `updated` with the next `version` (§5 additions).

pub mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;

use serde_json::{Map, Value, json};
use siphasher::sip128::{Hasher128, SipHasher13};
use smol_str::SmolStr;

use crate::fast::FastMap;
use crate::time::{Ts, format_rfc3339};
use rules::ConditionRule;
pub use rules::{MetricValue, Rules, ScopeKind, Severity};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AlertState {
    Firing,
    Resolved,
    Fired,
    /// A firing alert's account context changed (name, owner or segment).
    Updated,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
            AlertState::Fired => "fired",
            AlertState::Updated => "updated",
        }
    }
}

/// Who an account-scope alert is about (§5.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountContext {
    pub account_id: String,
    pub name: Option<String>,
    pub csm_id: Option<String>,
    pub segment: String,
}

/// One alert transition (§5.3).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub rule: String,
    pub severity: Severity,
    pub state: AlertState,
    pub scope: ScopeKind,
    pub scope_id: String,
    pub account: Option<AccountContext>,
    pub ts: Ts,
    pub started_at: Ts,
    pub values: Vec<(String, MetricValue)>,
    pub message: String,
    /// How many times the alert was `updated` so far: 0 when it fired,
    /// 1, 2, … on its updates; a `resolved` carries the latest.
    pub version: u32,
}

impl Alert {
    pub fn to_json(&self) -> Value {
        let values: Map<String, Value> = self.values.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
        let mut o = json!({
            "alert_id": self.alert_id,
            "rule": self.rule,
            "severity": self.severity.as_str(),
            "state": self.state.as_str(),
            "scope": self.scope.as_str(),
            "scope_id": self.scope_id,
            "ts": format_rfc3339(self.ts),
            "started_at": format_rfc3339(self.started_at),
            "values": values,
            "message": self.message,
            "version": self.version,
        });
        if let Some(a) = &self.account {
            let m = o.as_object_mut().expect("object");
            m.insert("account_id".into(), json!(a.account_id));
            m.insert("account_name".into(), json!(a.name));
            m.insert("csm_id".into(), json!(a.csm_id));
            m.insert("segment".into(), json!(a.segment));
        }
        o
    }

    /// The CSM whose book this alert concerns, for routing and access.
    pub fn owner(&self) -> Option<&str> {
        match self.scope {
            ScopeKind::Account => self.account.as_ref().and_then(|a| a.csm_id.as_deref()),
            ScopeKind::Csm => Some(&self.scope_id),
            _ => None,
        }
    }
}

/// `alert_id`: a deterministic digest of (rule, scope, scope_id, started_at).
pub fn alert_id(rule: &str, scope: ScopeKind, scope_id: &str, started_at: Ts) -> String {
    let mut h = SipHasher13::new_with_keys(0x6373_7075_6c73_6531, 0x616c_6572_7469_6473);
    for part in [rule, scope.as_str(), scope_id] {
        h.write(part.as_bytes());
        h.write_u8(0);
    }
    h.write_i64(started_at);
    format!("{:032x}", h.finish128().as_u128())
}

/// What a scope looks like to the rules at one instant.
pub struct Subject<'a> {
    pub scope: ScopeKind,
    pub scope_id: &'a str,
    /// False when the scope no longer exists (its rules resolve).
    pub exists: bool,
    /// The value of catalogue metric `i` (`metric::ACCOUNT` or `metric::KPI`).
    pub metric: &'a dyn Fn(usize) -> MetricValue,
    /// Who an account-scope alert is about; built only on a transition.
    pub account: Option<&'a dyn Fn() -> AccountContext>,
    /// The caller knows the subject has no firing alert and no running
    /// cooldown (its last `Verdict` was `idle`): its state is not looked up.
    pub idle: bool,
}

/// The lifecycle state as checkpointed: per scope, per rule name.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredAlerting {
    #[allow(clippy::type_complexity)]
    scopes: Vec<(ScopeKind, String, Vec<(String, Option<Alert>, Option<Ts>)>)>,
    scope_wakes: Vec<(Ts, ScopeKind, String)>,
    /// Transitions not yet acknowledged by the broker, in the order emitted.
    outbox: Vec<Alert>,
}

/// What `Alerting::evaluate` found for one subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Firing condition alerts: critical, warning.
    pub firing: [u64; 2],
    /// The earliest cooldown end after `now` among its rules (so the
    /// subject is re-evaluated then).
    pub next_cooldown_end: Option<Ts>,
    /// No alert of the subject is firing and no cooldown runs: until it is
    /// evaluated again, it has no lifecycle state (see `Subject::idle`).
    pub idle: bool,
}

/// Lifecycle state of one scope instance, per condition rule (by index).
#[derive(Clone, Debug)]
struct ScopeAlerts {
    firing: Vec<Option<Alert>>,
    cooldown_until: Vec<Option<Ts>>,
}

impl ScopeAlerts {
    fn new(rules: usize) -> Self {
        ScopeAlerts { firing: vec![None; rules], cooldown_until: vec![None; rules] }
    }

    fn next_cooldown_end(&self, now: Ts) -> Option<Ts> {
        self.cooldown_until.iter().flatten().copied().filter(|t| *t > now).min()
    }

    fn is_idle(&self) -> bool {
        self.firing.iter().all(Option::is_none) && self.cooldown_until.iter().all(Option::is_none)
    }
}

/// Lifecycle state of every condition rule and scope, and the outbox.
#[derive(Clone, Debug, Default)]
pub struct Alerting {
    rules: Rules,
    /// Per scope kind, the scopes with a firing alert or a running cooldown.
    /// Looked up by `&str` without allocating; entries come and go with
    /// transitions.
    /// Keys hold ids of up to 23 bytes inline (no pointer to follow).
    states: [FastMap<SmolStr, ScopeAlerts>; 4],
    /// Non-account scopes to re-evaluate when a cooldown ends.
    scope_wakes: BTreeSet<(Ts, ScopeKind, String)>,
    /// Transitions since the last `take_outbox`/`post`.
    outbox: Vec<Alert>,
    /// The delivery outbox: posted transitions not yet acknowledged by the
    /// broker, by their number (checkpointed; re-produced after a restart).
    unacked: BTreeMap<u64, Alert>,
    /// The number the next posted transition gets.
    next_post: u64,
    /// Per scope kind, whether it has rules, and whether any has a cooldown
    /// (asked on every account refresh: read off, not searched).
    has_rules: [bool; 4],
    cooldowns: [bool; 4],
    /// Counts transitions (so a reader can tell whether `firing` changed).
    generation: u64,
}

impl Alerting {
    pub fn new(rules: Rules) -> Self {
        let (mut has_rules, mut cooldowns) = ([false; 4], [false; 4]);
        for r in &rules.conditions {
            has_rules[r.scope as usize] = true;
            cooldowns[r.scope as usize] |= r.cooldown > 0;
        }
        Alerting { rules, has_rules, cooldowns, ..Alerting::default() }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn has_rules_for(&self, scope: ScopeKind) -> bool {
        self.has_rules[scope as usize]
    }

    /// Evaluates every condition rule of the subject's scope at `now` and
    /// records transitions. Returns the subject's firing alerts by severity
    /// and when its next cooldown ends (one lookup of its state for both).
    pub fn evaluate(&mut self, s: &Subject<'_>, now: Ts) -> Verdict {
        let mut counts = [0; 2];
        // Decide first, allocating nothing unless something transitions.
        let mut todo: Vec<(usize, bool)> = Vec::new();
        debug_assert!(!s.idle || !self.states[s.scope as usize].contains_key(s.scope_id), "idle subject has state");
        let state = if s.idle { None } else { self.states[s.scope as usize].get(s.scope_id) };
        for (i, rule) in self.rules.conditions.iter().enumerate() {
            if rule.scope != s.scope {
                continue;
            }
            let holds = s.exists && rule.when.iter().all(|c| c.holds(&(s.metric)(c.metric)));
            let firing = state.is_some_and(|st| st.firing[i].is_some());
            if holds && !firing {
                if state.and_then(|st| st.cooldown_until[i]).is_some_and(|until| now < until) {
                    continue;
                }
                todo.push((i, true));
            } else if !holds && firing {
                todo.push((i, false));
            } else if holds {
                counts[rule.severity.index()] += 1;
            }
        }
        let cooldowns = self.cooldowns[s.scope as usize];
        if todo.is_empty() {
            let next_cooldown_end = state.filter(|_| cooldowns).and_then(|st| st.next_cooldown_end(now));
            return Verdict { firing: counts, next_cooldown_end, idle: state.is_none() };
        }
        let n = self.rules.conditions.len();
        let table = &mut self.states[s.scope as usize];
        if !table.contains_key(s.scope_id) {
            table.insert(SmolStr::new(s.scope_id), ScopeAlerts::new(n));
        }
        let state = table.get_mut(s.scope_id).expect("inserted above");
        let mut account = s.account.map(|f| f());
        let last = todo.len() - 1;
        for (k, (i, fire)) in todo.into_iter().enumerate() {
            let rule = &self.rules.conditions[i];
            // Usually one transition: the context is moved, not copied.
            let context = if k == last { account.take() } else { account.clone() };
            if fire {
                state.cooldown_until[i] = None;
                let alert = transition(rule, s, context, now, now, AlertState::Firing);
                self.generation += 1;
                self.outbox.push(alert.clone());
                state.firing[i] = Some(alert);
                counts[rule.severity.index()] += 1;
            } else {
                let fired = state.firing[i].take().expect("firing");
                let mut resolved = transition(rule, s, context, now, fired.started_at, AlertState::Resolved);
                resolved.version = fired.version;
                self.generation += 1;
                self.outbox.push(resolved);
                if rule.cooldown > 0 {
                    let until = now + rule.cooldown;
                    state.cooldown_until[i] = Some(until);
                    if s.scope != ScopeKind::Account {
                        self.scope_wakes.insert((until, s.scope, s.scope_id.to_owned()));
                    }
                }
            }
        }
        let next_cooldown_end = if cooldowns { state.next_cooldown_end(now) } else { None };
        let idle = state.is_idle();
        if idle {
            table.remove(s.scope_id);
        }
        Verdict { firing: counts, next_cooldown_end, idle }
    }

    /// Non-account scopes whose cooldown ended at or before `now`.
    pub fn due_scope_wakes(&mut self, now: Ts) -> Vec<(ScopeKind, String)> {
        let mut due = Vec::new();
        while let Some((at, _, _)) = self.scope_wakes.first() {
            if *at > now {
                break;
            }
            let (_, kind, id) = self.scope_wakes.pop_first().expect("first exists");
            due.push((kind, id));
        }
        due
    }

    /// Event rules matching an accepted event: one `fired` alert each.
    pub fn on_event(
        &mut self,
        topic: crate::event::Topic,
        field: &dyn Fn(&str) -> Option<String>,
        account: AccountContext,
        now: Ts,
    ) {
        for rule in &self.rules.events {
            if rule.on != topic {
                continue;
            }
            let mut values = Vec::new();
            let matched = rule.matches.iter().all(|(f, allowed)| match field(f) {
                Some(v) if allowed.contains(&v) => {
                    values.push((f.clone(), MetricValue::Str(v.into())));
                    true
                }
                _ => false,
            });
            if !matched {
                continue;
            }
            let name = account.name.clone().unwrap_or_else(|| account.account_id.clone());
            let message = match rule.name.as_str() {
                "churned" => format!("{name} churned"),
                "contraction" => format!("{name} contracted"),
                other => format!("{name}: {other}"),
            };
            self.generation += 1;
            self.outbox.push(Alert {
                alert_id: alert_id(&rule.name, ScopeKind::Account, &account.account_id, now),
                rule: rule.name.clone(),
                severity: rule.severity,
                state: AlertState::Fired,
                scope: ScopeKind::Account,
                scope_id: account.account_id.clone(),
                account: Some(account.clone()),
                ts: now,
                started_at: now,
                values,
                message,
                version: 0,
            });
        }
    }

    /// Re-emits the firing alerts of an account as `updated` (next
    /// `version`) where `context` (its current name, owner and segment)
    /// differs from what they carry. Alerts fired or resolved in the same
    /// step already carry it; event-rule alerts never stay firing.
    pub fn update_context(&mut self, account_id: &str, context: &dyn Fn() -> AccountContext, now: Ts) {
        let Some(state) = self.states[ScopeKind::Account as usize].get_mut(account_id) else { return };
        let mut current = None;
        for (rule, alert) in self.rules.conditions.iter().zip(&mut state.firing) {
            let Some(alert) = alert else { continue };
            let context = current.get_or_insert_with(context);
            if alert.account.as_ref() == Some(&*context) {
                continue;
            }
            alert.account = Some(context.clone());
            alert.version += 1;
            // The message names the account as it is now.
            alert.message =
                message(rule, ScopeKind::Account, &alert.scope_id, alert.account.as_ref(), &alert.values, alert.state);
            let mut updated = alert.clone();
            updated.state = AlertState::Updated;
            updated.ts = now;
            self.generation += 1;
            self.outbox.push(updated);
        }
    }

    /// Transitions since the last call (not tracked for delivery: for
    /// callers that deliver nothing, such as tests and benchmarks).
    /// Changes whenever an alert fires, resolves or is updated.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn take_outbox(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.outbox)
    }

    /// Moves the transitions since the last call into the delivery outbox
    /// and returns them with their outbox numbers: each stays there (and in
    /// every checkpoint) until [`Alerting::ack`].
    pub fn post(&mut self) -> Vec<(u64, Alert)> {
        let posted: Vec<(u64, Alert)> = std::mem::take(&mut self.outbox)
            .into_iter()
            .map(|alert| {
                let n = self.next_post;
                self.next_post += 1;
                self.unacked.insert(n, alert.clone());
                (n, alert)
            })
            .collect();
        posted
    }

    /// The broker acknowledged transition `n`: it leaves the outbox.
    pub fn ack(&mut self, n: u64) {
        self.unacked.remove(&n);
    }

    /// Posted transitions not yet acknowledged, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = (u64, &Alert)> {
        self.unacked.iter().map(|(n, a)| (*n, a))
    }

    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// The lifecycle state with rules named, not numbered, so a checkpoint
    /// survives rules being added, removed or reordered in the configuration.
    pub fn to_stored(&self) -> StoredAlerting {
        let names: Vec<&str> = self.rules.conditions.iter().map(|r| r.name.as_str()).collect();
        let kinds = [ScopeKind::Account, ScopeKind::Csm, ScopeKind::Segment, ScopeKind::Portfolio];
        let mut scopes = Vec::new();
        for (kind, table) in kinds.into_iter().zip(&self.states) {
            for (id, st) in table {
                let per_rule = (0..names.len())
                    .filter(|&i| st.firing[i].is_some() || st.cooldown_until[i].is_some())
                    .map(|i| (names[i].to_owned(), st.firing[i].clone(), st.cooldown_until[i]))
                    .collect();
                scopes.push((kind, id.to_string(), per_rule));
            }
        }
        // Posted and not acknowledged, then not yet posted: the order emitted.
        let outbox = self.unacked.values().chain(&self.outbox).cloned().collect();
        StoredAlerting { scopes, scope_wakes: self.scope_wakes.iter().cloned().collect(), outbox }
    }

    /// Rebuilds the lifecycle state for `rules`; the state of rules that no
    /// longer exist is dropped.
    pub fn from_stored(rules: Rules, stored: StoredAlerting) -> Alerting {
        let mut a = Alerting::new(rules);
        let n = a.rules.conditions.len();
        for (kind, id, per_rule) in stored.scopes {
            let mut st = ScopeAlerts::new(n);
            for (name, firing, cooldown) in per_rule {
                if let Some(i) = a.rules.conditions.iter().position(|r| r.name == name && r.scope == kind) {
                    st.firing[i] = firing;
                    st.cooldown_until[i] = cooldown;
                }
            }
            if !st.is_idle() {
                a.states[kind as usize].insert(SmolStr::from(id), st);
            }
        }
        a.scope_wakes = stored.scope_wakes.into_iter().collect();
        // Everything the checkpoint holds was emitted (and pushed) before:
        // it is only left to be produced again.
        a.unacked = stored.outbox.into_iter().enumerate().map(|(n, alert)| (n as u64, alert)).collect();
        a.next_post = a.unacked.len() as u64;
        a
    }

    /// Takes a new rule set (a reload): each scope keeps the lifecycle state
    /// of the rules that keep their name and scope (a changed condition is
    /// judged at the scope's next evaluation); a firing alert of a rule that
    /// is gone resolves at `now`, so no receiver keeps an incident open for
    /// a rule nobody runs. The outbox and its numbering are untouched.
    /// Returns how many alerts resolved so.
    pub fn replace_rules(&mut self, rules: Rules, now: Ts) -> usize {
        let old = std::mem::replace(self, Alerting::new(rules));
        let n = self.rules.conditions.len();
        let mut resolved = 0;
        for (table, old_table) in self.states.iter_mut().zip(old.states) {
            for (id, old_state) in old_table {
                let mut st = ScopeAlerts::new(n);
                for (i, rule) in old.rules.conditions.iter().enumerate() {
                    let (firing, cooldown) = (old_state.firing[i].clone(), old_state.cooldown_until[i]);
                    match self.rules.conditions.iter().position(|r| r.name == rule.name && r.scope == rule.scope) {
                        Some(j) => {
                            st.firing[j] = firing;
                            st.cooldown_until[j] = cooldown;
                        }
                        None => {
                            if let Some(alert) = firing {
                                let mut gone = alert;
                                gone.state = AlertState::Resolved;
                                gone.ts = now;
                                gone.message = format!("Resolved (rule removed): {}", gone.message);
                                self.outbox.push(gone);
                                resolved += 1;
                            }
                        }
                    }
                }
                if !st.is_idle() {
                    table.insert(id, st);
                }
            }
        }
        let Alerting { scope_wakes, outbox, unacked, next_post, generation, .. } = old;
        self.scope_wakes = scope_wakes;
        // Transitions not yet posted come first: the order emitted.
        let removed = std::mem::replace(&mut self.outbox, outbox);
        self.outbox.extend(removed);
        self.unacked = unacked;
        self.next_post = next_post;
        self.generation = generation + resolved as u64 + 1;
        resolved
    }

    /// Whether the scope has lifecycle state (a firing alert or a cooldown).
    pub fn has_state(&self, scope: ScopeKind, id: &str) -> bool {
        self.states[scope as usize].contains_key(id)
    }

    /// Whether transitions wait to be posted.
    pub fn has_unposted(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Currently firing condition alerts.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.states.iter().flat_map(|t| t.values()).flat_map(|st| st.firing.iter().flatten())
    }
}

fn transition(
    rule: &ConditionRule,
    s: &Subject<'_>,
    account: Option<AccountContext>,
    now: Ts,
    started_at: Ts,
    state: AlertState,
) -> Alert {
    let values: Vec<(String, MetricValue)> = rule.when.iter().map(|c| (c.path.clone(), (s.metric)(c.metric))).collect();
    let message = message(rule, s.scope, s.scope_id, account.as_ref(), &values, state);
    Alert {
        alert_id: alert_id(&rule.name, s.scope, s.scope_id, started_at),
        rule: rule.name.clone(),
        severity: rule.severity,
        state,
        scope: s.scope,
        scope_id: s.scope_id.to_owned(),
        account,
        ts: now,
        started_at,
        values,
        message,
        version: 0,
    }
}

fn num(values: &[(String, MetricValue)], path: &str) -> f64 {
    values
        .iter()
        .find(|(p, _)| p == path)
        .and_then(|(_, v)| if let MetricValue::Num(n) = v { Some(n.approx) } else { None })
        .unwrap_or(0.0)
}

/// A human-readable line for the alert.
fn message(
    rule: &ConditionRule,
    scope: ScopeKind,
    scope_id: &str,
    account: Option<&AccountContext>,
    values: &[(String, MetricValue)],
    state: AlertState,
) -> String {
    let who = account.map_or_else(
        || match scope {
            ScopeKind::Portfolio => "The portfolio".to_owned(),
            ScopeKind::Segment => format!("Segment {scope_id}"),
            ScopeKind::Csm => format!("The book of {scope_id}"),
            ScopeKind::Account => scope_id.to_owned(),
        },
        |a| a.name.clone().unwrap_or_else(|| a.account_id.clone()),
    );
    let text = match rule.name.as_str() {
        "account_red" => format!("{who} is red"),
        "red_renewal_90d" => format!("{who} is red with renewal in {} days", num(values, "revenue.days_to_renewal")),
        "p1_ticket_open" => format!("{who} has {} open P1 ticket(s)", num(values, "tickets.open_p1")),
        "escalation_open" => format!("{who} has {} escalated open ticket(s)", num(values, "tickets.escalated_open")),
        "first_response_sla_breach" => {
            format!("{who} has {} ticket(s) past the first-response SLA", num(values, "tickets.sla_breached"))
        }
        "usage_drop" => format!("{who}: usage down {:.0}% week over week", 100.0 * num(values, "usage.drop_ratio")),
        "portfolio_at_risk" => {
            format!("{:.1}% of portfolio ARR is at risk", 100.0 * num(values, "health.at_risk_share"))
        }
        _ => {
            let conds: Vec<String> = rule
                .when
                .iter()
                .zip(values)
                .map(|(c, (_, v))| format!("{} {} {} (is {})", c.path, c.op.as_str(), operand(&c.value), v.to_json()))
                .collect();
            format!("{who}: {}: {}", rule.name, conds.join(", "))
        }
    };
    match state {
        AlertState::Resolved => format!("Resolved: {text}"),
        _ => text,
    }
}

fn operand(o: &rules::Operand) -> String {
    match o {
        rules::Operand::Num(n) => n.to_string(),
        rules::Operand::Str(s) => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rules::default_rules;

    #[test]
    fn alert_ids_are_deterministic_and_distinct() {
        let a = alert_id("account_red", ScopeKind::Account, "acme", 5);
        assert_eq!(a, alert_id("account_red", ScopeKind::Account, "acme", 5));
        assert_eq!(a.len(), 32);
        assert_ne!(a, alert_id("account_red", ScopeKind::Account, "acme", 6));
        assert_ne!(a, alert_id("account_red", ScopeKind::Account, "acm", 5));
    }

    #[test]
    fn lifecycle_fires_once_resolves_with_the_same_id_and_honours_cooldown() {
        let names = crate::event::Topic::ALL.map(|t| t.default_name().to_owned());
        let mut raw = default_rules();
        raw.truncate(1);
        raw[0]["cooldown"] = json!("10us");
        let mut a = Alerting::new(Rules::parse(&raw, &names).unwrap());
        let eval = |a: &mut Alerting, tier: &'static str, now| {
            let metric = move |i: usize| {
                if crate::metric::ACCOUNT[i].id == crate::metric::AccountMetric::Tier {
                    MetricValue::Str(tier.into())
                } else {
                    MetricValue::Null
                }
            };
            let _ = &a.states;
            let s = Subject {
                scope: ScopeKind::Account,
                scope_id: "acme",
                exists: true,
                metric: &metric,
                account: None,
                idle: false,
            };
            a.evaluate(&s, now)
        };
        assert_eq!(eval(&mut a, "red", 100).firing, [1, 0]);
        assert_eq!(eval(&mut a, "red", 101).firing, [1, 0]);
        let out = a.take_outbox();
        assert_eq!(out.len(), 1, "firing once while it holds");
        assert_eq!(out[0].state, AlertState::Firing);
        let verdict = eval(&mut a, "green", 102);
        assert_eq!(verdict.firing, [0, 0]);
        let resolved = a.take_outbox();
        assert_eq!((resolved[0].state, &resolved[0].alert_id), (AlertState::Resolved, &out[0].alert_id));
        assert_eq!(resolved[0].started_at, 100);
        assert_eq!(verdict.next_cooldown_end, Some(112));
        assert_eq!(eval(&mut a, "red", 111).firing, [0, 0], "in cooldown");
        assert!(a.take_outbox().is_empty());
        assert_eq!(eval(&mut a, "red", 112).firing, [1, 0], "cooldown over");
        let again = a.take_outbox();
        assert_eq!(again[0].started_at, 112);
        assert_ne!(again[0].alert_id, out[0].alert_id);
    }

    fn context(csm: Option<&str>) -> AccountContext {
        AccountContext {
            account_id: "acme".into(),
            name: Some("Acme".into()),
            csm_id: csm.map(str::to_owned),
            segment: "smb".into(),
        }
    }

    fn firing_red(a: &mut Alerting, csm: Option<&str>, tier: &'static str, now: Ts) {
        let metric = move |i: usize| {
            if crate::metric::ACCOUNT[i].id == crate::metric::AccountMetric::Tier {
                MetricValue::Str(tier.into())
            } else {
                MetricValue::Null
            }
        };
        let ctx = move || context(csm);
        let s = Subject {
            scope: ScopeKind::Account,
            scope_id: "acme",
            exists: true,
            metric: &metric,
            account: Some(&ctx),
            idle: false,
        };
        a.evaluate(&s, now);
    }

    /// A reload keeps the outbox and its numbering (the ingest loop acks by
    /// number), keeps the state of rules that stay, and resolves the firing
    /// alerts of a rule that is gone.
    #[test]
    fn replacing_rules_keeps_the_outbox_numbering_and_resolves_removed_rules() {
        let names = crate::event::Topic::ALL.map(|t| t.default_name().to_owned());
        let mut raw = default_rules();
        raw.truncate(1);
        let mut a = Alerting::new(Rules::parse(&raw, &names).unwrap());
        firing_red(&mut a, None, "red", 100);
        let posted = a.post();
        assert_eq!(posted.len(), 1);
        // The same rule, now second, under another rule's name first.
        let mut moved = vec![json!({"name": "other", "scope": "account", "severity": "warning",
            "when": [{"metric": "tickets.open_p1", "op": ">=", "value": 1}]})];
        moved.push(raw[0].clone());
        assert_eq!(a.replace_rules(Rules::parse(&moved, &names).unwrap(), 150), 0);
        assert_eq!(a.firing().count(), 1, "the kept rule's alert stays firing");
        assert!(a.take_outbox().is_empty(), "nothing transitions");
        assert_eq!(a.unacked().map(|(n, _)| n).collect::<Vec<_>>(), vec![posted[0].0]);
        firing_red(&mut a, None, "green", 160);
        let resolved = a.take_outbox();
        assert_eq!(resolved.len(), 1);
        assert_eq!(
            (resolved[0].alert_id.as_str(), resolved[0].state),
            (posted[0].1.alert_id.as_str(), AlertState::Resolved)
        );
        firing_red(&mut a, None, "red", 170);
        assert_eq!(a.take_outbox().len(), 1);
        let before = a.generation();
        assert_eq!(a.replace_rules(Rules::parse(&moved[..1], &names).unwrap(), 200), 1);
        assert!(a.generation() > before, "readers see the firing set change");
        assert_eq!(a.firing().count(), 0);
        let gone = a.post();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, posted[0].0 + 1, "numbering continues");
        assert_eq!((gone[0].1.state, gone[0].1.ts, gone[0].1.started_at), (AlertState::Resolved, 200, 170));
        assert!(gone[0].1.message.starts_with("Resolved (rule removed): "), "{}", gone[0].1.message);
        assert!(!a.has_state(ScopeKind::Account, "acme"));
    }

    #[test]
    fn a_changed_context_re_emits_firing_alerts_as_updated_with_the_next_version() {
        let names = crate::event::Topic::ALL.map(|t| t.default_name().to_owned());
        let mut raw = default_rules();
        raw.truncate(1);
        let mut a = Alerting::new(Rules::parse(&raw, &names).unwrap());
        firing_red(&mut a, None, "red", 100);
        a.update_context("acme", &|| context(None), 101);
        assert_eq!(a.take_outbox().len(), 1, "the same context: no update");
        a.update_context("acme", &|| context(Some("csm-1")), 102);
        a.update_context("acme", &|| context(Some("csm-2")), 103);
        a.update_context("other", &|| context(Some("csm-3")), 103);
        let updates = a.take_outbox();
        assert_eq!(updates.len(), 2);
        for (u, (version, csm, ts)) in updates.iter().zip([(1, "csm-1", 102), (2, "csm-2", 103)]) {
            assert_eq!(
                (u.state, u.version, u.owner(), u.ts, u.started_at),
                (AlertState::Updated, version, Some(csm), ts, 100)
            );
            assert_eq!(u.to_json()["state"], json!("updated"));
            assert_eq!(u.to_json()["version"], json!(version));
        }
        assert_eq!(a.firing().next().unwrap().owner(), Some("csm-2"), "the firing alert carries the current owner");
        firing_red(&mut a, Some("csm-2"), "green", 104);
        let resolved = a.take_outbox();
        assert_eq!((resolved[0].state, resolved[0].version), (AlertState::Resolved, 2), "resolved carries the latest");
    }

    #[test]
    fn posted_transitions_stay_in_the_checkpointed_outbox_until_acknowledged() {
        let names = crate::event::Topic::ALL.map(|t| t.default_name().to_owned());
        let rules = Rules::parse(&default_rules(), &names).unwrap();
        let mut a = Alerting::new(rules.clone());
        firing_red(&mut a, Some("csm-1"), "red", 100);
        a.update_context("acme", &|| context(Some("csm-2")), 101);
        let posted = a.post();
        assert_eq!(posted.len(), 2);
        assert!(a.post().is_empty(), "posted once");
        a.ack(posted[0].0);
        assert_eq!(a.unacked_len(), 1);
        // Not yet posted transitions are kept too.
        firing_red(&mut a, Some("csm-2"), "green", 102);
        let restored = Alerting::from_stored(rules, a.to_stored());
        let kept: Vec<(AlertState, u32)> = restored.unacked().map(|(_, al)| (al.state, al.version)).collect();
        assert_eq!(kept, [(AlertState::Updated, 1), (AlertState::Resolved, 1)], "oldest first, nothing acknowledged");
        assert!(restored.firing().next().is_none());
    }
}
