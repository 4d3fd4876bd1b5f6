//! Property test of alert transitions (SPEC §5): the engine's transitions
//! equal those of a naive model that, after every accepted event, recomputes
//! every scope from scratch (`naive.rs` views) and evaluates every rule on
//! the recomputed JSON with its own lifecycle bookkeeping.
//!
//! The JSON views show `health.score` and components rounded, so the rule
//! sets here avoid those two paths (rules on them use the unrounded values,
//! covered by `rule_metrics_read_what_the_views_show`).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::naive::{NaiveModel, NaiveOutcome};
use super::tests::{Msg, render, spec};
use super::{Engine, StateConfig};
use crate::alert::alert_id;
use crate::alert::rules::{ConditionRule, Operand, Rules, ScopeKind, default_rules};
use crate::event::Topic;
use crate::time::{Ts, days, format_rfc3339, parse_rfc3339};

/// The naive lifecycle: firing (rule, scope, id) → started_at and, for
/// account scope, the account's context (name, owner, segment) it carries;
/// cooldowns.
#[derive(Default)]
struct Lifecycle {
    firing: BTreeMap<(String, ScopeKind, String), (Ts, Value)>,
    cooldown_until: BTreeMap<(String, String), Ts>,
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| v.get(k).unwrap_or(&Value::Null))
}

fn holds(rule: &ConditionRule, object: &Value) -> bool {
    rule.when.iter().all(|c| match (at(object, &c.path), &c.value) {
        (Value::Number(n), Operand::Num(b)) => {
            // Exactly, in big rationals: the figure as the decimal the view
            // prints (exact for the small figures generated here) and the
            // operand as written.
            compare(&big_decimal(&n.to_string()), c.op.as_str(), &big_decimal(&b.to_string()))
        }
        (Value::String(a), Operand::Str(b)) => compare(a, c.op.as_str(), b),
        _ => false,
    })
}

/// `a op b` for one of the rule operators.
fn compare<T: PartialOrd>(a: &T, op: &str, b: &T) -> bool {
    match op {
        "<" => a < b,
        "<=" => a <= b,
        ">" => a > b,
        ">=" => a >= b,
        "==" => a == b,
        _ => a != b,
    }
}

/// A decimal literal (`-1.25`, `3e-7`) as a big rational.
fn big_decimal(s: &str) -> num_rational::BigRational {
    use num_bigint::BigInt;
    let (mantissa, exp) = s.split_once(['e', 'E']).map_or((s, 0), |(m, e)| (m, e.parse::<i32>().unwrap()));
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: BigInt = format!("{int}{frac}").parse().unwrap();
    let shift = exp - frac.len() as i32;
    let ten = BigInt::from(10);
    if shift >= 0 {
        num_rational::BigRational::from_integer(digits * ten.pow(shift as u32))
    } else {
        num_rational::BigRational::new(digits, ten.pow((-shift) as u32))
    }
}

/// Every scope instance of a kind in the recomputed views.
fn scopes(views: &Value, kind: ScopeKind) -> BTreeMap<String, Value> {
    let map =
        |v: &Value| v.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
    match kind {
        ScopeKind::Account => map(&views["accounts"]),
        ScopeKind::Csm => map(&views["manager"]["csms"]),
        ScopeKind::Segment => map(&views["executive"]["segments"]),
        ScopeKind::Portfolio => BTreeMap::from([("portfolio".to_owned(), views["executive"]["portfolio"].clone())]),
    }
}

/// One transition as compared: (rule, state, scope id, started_at, ts, the
/// owning csm_id it carries, for account scope).
type Transition = (String, String, String, Ts, Ts, Option<String>);

/// An account alert's context as the account object shows it now.
fn context(object: &Value) -> Value {
    json!([object["info"]["name"], object["info"]["csm_id"], object["info"]["segment"]])
}

/// The transitions after one event.
fn naive_transitions(rules: &Rules, life: &mut Lifecycle, views: &Value, now: Ts) -> BTreeSet<Transition> {
    let mut out = BTreeSet::new();
    for rule in &rules.conditions {
        let present = scopes(views, rule.scope);
        let mut ids: BTreeSet<String> = present.keys().cloned().collect();
        ids.extend(
            life.firing.keys().filter(|(r, k, _)| r == &rule.name && *k == rule.scope).map(|(_, _, id)| id.clone()),
        );
        for id in ids {
            let key = (rule.name.clone(), rule.scope, id.clone());
            let now_holds = present.get(&id).is_some_and(|object| holds(rule, object));
            let current = present.get(&id).filter(|_| rule.scope == ScopeKind::Account).map_or(Value::Null, context);
            let owner = current.get(1).and_then(Value::as_str).map(str::to_owned);
            match (now_holds, life.firing.get(&key).cloned()) {
                (true, None) => {
                    let cool = (rule.name.clone(), id.clone());
                    if life.cooldown_until.get(&cool).is_some_and(|until| now < *until) {
                        continue;
                    }
                    life.cooldown_until.remove(&cool);
                    life.firing.insert(key, (now, current));
                    out.insert((rule.name.clone(), "firing".into(), id, now, now, owner));
                }
                (false, Some((started, _))) => {
                    life.firing.remove(&key);
                    if rule.cooldown > 0 {
                        life.cooldown_until.insert((rule.name.clone(), id.clone()), now + rule.cooldown);
                    }
                    out.insert((rule.name.clone(), "resolved".into(), id, started, now, owner));
                }
                // Still firing, about an account whose name, owner or
                // segment changed: emitted again, carrying the new context.
                (true, Some((started, carried))) if carried != current => {
                    life.firing.insert(key, (started, current));
                    out.insert((rule.name.clone(), "updated".into(), id, started, now, owner));
                }
                _ => {}
            }
        }
    }
    out
}

fn naive_event_alerts(rules: &Rules, topic: Topic, payload: &[u8], views: &Value, now: Ts) -> BTreeSet<Transition> {
    let body: Value = serde_json::from_slice(payload).unwrap();
    let owner = views["accounts"][body["account_id"].as_str().unwrap()]["info"]["csm_id"].as_str().map(str::to_owned);
    rules
        .events
        .iter()
        .filter(|r| r.on == topic)
        .filter(|r| {
            r.matches.iter().all(|(f, allowed)| body[f].as_str().is_some_and(|v| allowed.iter().any(|a| a == v)))
        })
        .map(|r| {
            (r.name.clone(), "fired".into(), body["account_id"].as_str().unwrap().to_owned(), now, now, owner.clone())
        })
        .collect()
}

/// History boundaries a day apart: the naive model recomputes every scope
/// at each boundary an event passes, and the streams leap up to 400 days
/// (the stepping is the same at every resolution).
const RESOLUTION: Ts = crate::time::MICROS_PER_DAY;

fn check(msgs: &[Msg], rules: Rules) -> Result<(), TestCaseError> {
    let cfg = StateConfig { rules: rules.clone(), resolution: RESOLUTION, ..StateConfig::default() };
    let mut engine = Engine::new(cfg.clone());
    let mut naive = NaiveModel::new(cfg);
    let mut life = Lifecycle::default();
    for (i, m) in msgs.iter().enumerate() {
        engine.fold(&m.input(i));
        let got: BTreeSet<Transition> = engine
            .take_alerts()
            .iter()
            .map(|a| {
                prop_assert_eq!(&a.alert_id, &alert_id(&a.rule, a.scope, &a.scope_id, a.started_at));
                let owner = a.account.as_ref().and_then(|c| c.csm_id.clone());
                Ok((a.rule.clone(), a.state.as_str().to_owned(), a.scope_id.clone(), a.started_at, a.ts, owner))
            })
            .collect::<Result<_, TestCaseError>>()?;
        let before = naive.clone();
        let want = match naive.offer(m.topic, m.partition, &m.payload, m.wall) {
            NaiveOutcome::Accepted => {
                let views = naive.views();
                let now = parse_rfc3339(views["executive"]["as_of"].as_str().unwrap()).unwrap();
                // Time first advances to each history boundary B the event
                // passes (old watermark <= B < its ts, the last 35 days),
                // where every rule is evaluated on the state before the event.
                let mut t = BTreeSet::new();
                if let Some(old) = before.watermark().filter(|&w| w < now) {
                    let res = RESOLUTION;
                    let mut b = ((old + res - 1).div_euclid(res) * res).max((now - days(35)).div_euclid(res) * res);
                    while b < now {
                        t.extend(naive_transitions(&rules, &mut life, &before.views_at(Some(b)), b));
                        b += res;
                    }
                }
                t.extend(naive_transitions(&rules, &mut life, &views, now));
                t.extend(naive_event_alerts(&rules, m.topic, &m.payload, &views, now));
                t
            }
            _ => BTreeSet::new(),
        };
        prop_assert_eq!(
            &got,
            &want,
            "message {} ({}) at {:?}",
            i,
            String::from_utf8_lossy(&m.payload),
            engine.watermark().map(format_rfc3339)
        );
    }
    Ok(())
}

fn parsed(raw: &[Value]) -> Rules {
    Rules::parse(raw, &Topic::ALL.map(|t| t.default_name().to_owned())).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 1000, ..ProptestConfig::default() })]

    /// The default rules of §5.1.
    #[test]
    fn transitions_equal_recomputing_every_scope_after_every_event(specs in proptest::collection::vec(spec(), 1..100)) {
        check(&render(&specs), parsed(&default_rules()))?;
    }

    /// Cooldowns, csm and segment scopes, string and numeric conditions.
    #[test]
    fn with_cooldowns_and_every_scope_kind(specs in proptest::collection::vec(spec(), 1..100)) {
        let mut raw = default_rules();
        raw[2]["cooldown"] = json!("2h");
        raw[4]["cooldown"] = json!("1d");
        raw.push(json!({"name": "book_breaching", "scope": "csm", "severity": "warning", "cooldown": "30m",
            "when": [{"metric": "tickets.sla_breached", "op": ">=", "value": 1}]}));
        raw.push(json!({"name": "segment_red_arr", "scope": "segment", "severity": "critical",
            "when": [{"metric": "health.tiers.red.accounts", "op": ">", "value": 1}, {"metric": "revenue.arr", "op": ">=", "value": 100}]}));
        raw.push(json!({"name": "named_emea", "scope": "account", "severity": "warning",
            "when": [{"metric": "info.region", "op": "==", "value": "emea"}, {"metric": "usage.active_users_7d", "op": "<", "value": 2}]}));
        raw.push(json!({"name": "p1_opened", "on": "cs.tickets", "match": {"action": ["opened"], "priority": ["p1"]}, "severity": "critical"}));
        check(&render(&specs), parsed(&raw))?;
    }
}
