//! Alert rules (SPEC §5.1): parsed from `[[alerts.rules]]`, validated at
//! start-up, with every metric path resolved to a typed accessor.

use std::fmt;

use serde_json::{Value, json};

use crate::event::Topic;
use crate::exact::Decimal;
pub use crate::metric::MetricValue;
use crate::metric::{ACCOUNT, KPI, Kind, position};
use crate::time::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Severity {
    Critical,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The scope a condition rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum ScopeKind {
    Account,
    Csm,
    Segment,
    Portfolio,
}

impl ScopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Account => "account",
            ScopeKind::Csm => "csm",
            ScopeKind::Segment => "segment",
            ScopeKind::Portfolio => "portfolio",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Lt => ord == Less,
            Op::Le => ord != Greater,
            Op::Gt => ord == Greater,
            Op::Ge => ord != Less,
            Op::Eq => ord == Equal,
            Op::Ne => ord != Equal,
        }
    }
}

/// The value a condition compares against (a number as the decimal it was
/// written as).
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Num(Decimal),
    Str(String),
}

/// Event fields an event rule may match, per input topic.
fn matchable(topic: Topic) -> &'static [&'static str] {
    match topic {
        Topic::Accounts => &["account_id", "csm_id", "segment", "region"],
        Topic::Usage => &["account_id", "user_id", "feature"],
        Topic::Tickets => &["account_id", "ticket_id", "action", "priority"],
        Topic::Revenue => &["account_id", "kind"],
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// The dotted path, as configured (also the key in an alert's `values`).
    pub path: String,
    /// Index into the metric catalogue (`metric::ACCOUNT` or `metric::KPI`).
    pub metric: usize,
    pub op: Op,
    pub value: Operand,
}

impl Condition {
    /// A null metric, or one of the other kind than the operand, fails every
    /// op. Numbers compare exactly (the metric's exact value with the decimal).
    pub fn holds(&self, v: &MetricValue) -> bool {
        match (v, &self.value) {
            (MetricValue::Num(a), Operand::Num(b)) => self.op.holds(a.exact.cmp_ratio(&b.ratio())),
            (MetricValue::Str(a), Operand::Str(b)) => self.op.holds(a.as_ref().cmp(b.as_str())),
            _ => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConditionRule {
    pub name: String,
    pub scope: ScopeKind,
    pub when: Vec<Condition>,
    pub severity: Severity,
    /// µs of event time.
    pub cooldown: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EventRule {
    pub name: String,
    pub on: Topic,
    /// Field → allowed values (all fields must match).
    pub matches: Vec<(String, Vec<String>)>,
    pub severity: Severity,
}

/// The validated rule set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules {
    pub conditions: Vec<ConditionRule>,
    pub events: Vec<EventRule>,
}

/// An invalid rule, named with its position, name and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(pub String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuleError {}

/// The default rule set of §5.1, in configuration form.
pub fn default_rules() -> Vec<Value> {
    let c = |name: &str, scope: &str, when: Value, severity: &str| json!({"name": name, "scope": scope, "when": when, "severity": severity});
    let w = |metric: &str, op: &str, value: Value| json!({"metric": metric, "op": op, "value": value});
    vec![
        c("account_red", "account", json!([w("health.tier", "==", json!("red"))]), "critical"),
        c(
            "red_renewal_90d",
            "account",
            json!([
                w("health.tier", "==", json!("red")),
                w("revenue.days_to_renewal", ">=", json!(0)),
                w("revenue.days_to_renewal", "<=", json!(90))
            ]),
            "critical",
        ),
        c("p1_ticket_open", "account", json!([w("tickets.open_p1", ">=", json!(1))]), "critical"),
        c("escalation_open", "account", json!([w("tickets.escalated_open", ">=", json!(1))]), "warning"),
        c("first_response_sla_breach", "account", json!([w("tickets.sla_breached", ">=", json!(1))]), "warning"),
        c(
            "usage_drop",
            "account",
            json!([w("usage.usage_events_prev_7d", ">=", json!(20)), w("usage.drop_ratio", ">=", json!(0.5))]),
            "warning",
        ),
        c("portfolio_at_risk", "portfolio", json!([w("health.at_risk_share", ">", json!(0.15))]), "critical"),
        json!({"name": "churned", "on": "cs.revenue", "match": {"kind": ["churn"]}, "severity": "critical"}),
        json!({"name": "contraction", "on": "cs.revenue", "match": {"kind": ["contraction"]}, "severity": "warning"}),
    ]
}

impl Rules {
    /// Parses and validates rules; `topic_names` are the configured input
    /// topic names by role (an event rule's `on` may use either those or the
    /// default names).
    pub fn parse(raw: &[Value], topic_names: &[String; 4]) -> Result<Rules, RuleError> {
        let mut rules = Rules::default();
        let mut names = std::collections::HashSet::new();
        for (i, r) in raw.iter().enumerate() {
            let label = r
                .get("name")
                .and_then(Value::as_str)
                .map_or(format!("alerts.rules[{i}]"), |n| format!("alerts.rules[{i}] ({n})"));
            let err = |field: &str, problem: String| RuleError(format!("{label}: {field}: {problem}"));
            let obj = r.as_object().ok_or_else(|| err("rule", "must be a table".into()))?;
            let name = match obj.get("name") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => return Err(err("name", "a non-empty string is required".into())),
            };
            if !names.insert(name.clone()) {
                return Err(err("name", "rule names must be unique".into()));
            }
            let severity = match obj.get("severity").and_then(Value::as_str) {
                Some("critical") => Severity::Critical,
                Some("warning") => Severity::Warning,
                _ => return Err(err("severity", "must be \"critical\" or \"warning\"".into())),
            };
            if obj.contains_key("on") {
                for key in obj.keys() {
                    if !["name", "on", "match", "severity"].contains(&key.as_str()) {
                        return Err(err(key, "unknown field of an event rule".into()));
                    }
                }
                let on_name = obj.get("on").and_then(Value::as_str).unwrap_or_default();
                let on = Topic::ALL
                    .into_iter()
                    .find(|t| topic_names[t.index()] == on_name || t.default_name() == on_name)
                    .ok_or_else(|| err("on", format!("{on_name:?} is not an input topic")))?;
                let table = obj
                    .get("match")
                    .and_then(Value::as_object)
                    .ok_or_else(|| err("match", "a table of field = [values] is required".into()))?;
                let mut matches = Vec::new();
                for (field, allowed) in table {
                    if !matchable(on).contains(&field.as_str()) {
                        return Err(err(
                            &format!("match.{field}"),
                            format!(
                                "not a field of {} events (one of {})",
                                on.default_name(),
                                matchable(on).join(", ")
                            ),
                        ));
                    }
                    let values: Option<Vec<String>> =
                        allowed.as_array().and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect());
                    let values = values
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| err(&format!("match.{field}"), "must be a non-empty list of strings".into()))?;
                    matches.push((field.clone(), values));
                }
                rules.events.push(EventRule { name, on, matches, severity });
                continue;
            }
            for key in obj.keys() {
                if !["name", "scope", "when", "severity", "cooldown"].contains(&key.as_str()) {
                    return Err(err(key, "unknown field of a condition rule".into()));
                }
            }
            let scope = match obj.get("scope").and_then(Value::as_str) {
                Some("account") => ScopeKind::Account,
                Some("csm") => ScopeKind::Csm,
                Some("segment") => ScopeKind::Segment,
                Some("portfolio") => ScopeKind::Portfolio,
                _ => {
                    return Err(err(
                        "scope",
                        "must be account, csm, segment or portfolio (or give `on` for an event rule)".into(),
                    ));
                }
            };
            let cooldown = match obj.get("cooldown") {
                None => 0,
                Some(Value::String(s)) => {
                    s.parse::<Span>().map_err(|e| err("cooldown", format!("invalid duration {s:?} ({e})")))?.micros()
                }
                Some(_) => return Err(err("cooldown", "must be a duration string like \"30m\"".into())),
            };
            let when = obj
                .get("when")
                .and_then(Value::as_array)
                .filter(|w| !w.is_empty())
                .ok_or_else(|| err("when", "a non-empty list of conditions is required".into()))?;
            let mut conditions = Vec::new();
            for (j, c) in when.iter().enumerate() {
                let field = |f: &str| format!("when[{j}].{f}");
                let path = c.get("metric").and_then(Value::as_str).unwrap_or_default();
                let found = if scope == ScopeKind::Account { position(ACCOUNT, path) } else { position(KPI, path) };
                let metric = found.ok_or_else(|| {
                    err(&field("metric"), format!("unknown metric {path:?} for {} scope", scope.as_str()))
                })?;
                let op_s = c.get("op").and_then(Value::as_str).unwrap_or_default();
                let op = Op::parse(op_s)
                    .ok_or_else(|| err(&field("op"), format!("{op_s:?} is not one of < <= > >= == !=")))?;
                let kind = if scope == ScopeKind::Account { ACCOUNT[metric].kind() } else { KPI[metric].kind() };
                let value = match (c.get("value"), kind) {
                    (Some(Value::Number(n)), Kind::Num) => {
                        Operand::Num(Decimal::parse(&n.to_string()).map_err(|e| err(&field("value"), e))?)
                    }
                    (Some(Value::String(s)), Kind::Str) => Operand::Str(s.clone()),
                    (Some(_), Kind::Num) => {
                        return Err(err(&field("value"), format!("{path} is a number: the value must be a number")));
                    }
                    (Some(_), Kind::Str) => {
                        return Err(err(&field("value"), format!("{path} is a string: the value must be a string")));
                    }
                    (None, _) => return Err(err(&field("value"), "required".into())),
                };
                conditions.push(Condition { path: path.to_owned(), metric, op, value });
            }
            rules.conditions.push(ConditionRule { name, scope, when: conditions, severity, cooldown });
        }
        Ok(rules)
    }

    pub fn uses_account_metric(&self, path: &str) -> bool {
        self.conditions.iter().filter(|r| r.scope == ScopeKind::Account).any(|r| r.when.iter().any(|c| c.path == path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact::Number;

    fn names() -> [String; 4] {
        Topic::ALL.map(|t| t.default_name().to_owned())
    }

    #[test]
    fn the_default_rules_are_valid() {
        let r = Rules::parse(&default_rules(), &names()).unwrap();
        assert_eq!((r.conditions.len(), r.events.len()), (7, 2));
        assert_eq!(r.conditions[1].when.len(), 3);
        assert!(r.uses_account_metric("revenue.days_to_renewal"));
    }

    #[test]
    fn invalid_rules_name_the_rule_and_field() {
        let bad = |rule: Value| Rules::parse(&[rule], &names()).unwrap_err().0;
        let e = bad(
            json!({"name":"x","scope":"account","severity":"warning","when":[{"metric":"usage.dropratio","op":">","value":1}]}),
        );
        assert!(e.contains("(x)") && e.contains("when[0].metric") && e.contains("usage.dropratio"), "{e}");
        let e = bad(
            json!({"name":"x","scope":"account","severity":"warning","when":[{"metric":"usage.drop_ratio","op":"=>","value":1}]}),
        );
        assert!(e.contains("when[0].op"), "{e}");
        let e = bad(
            json!({"name":"x","scope":"account","severity":"warning","cooldown":"soon","when":[{"metric":"usage.drop_ratio","op":">","value":1}]}),
        );
        assert!(e.contains("cooldown"), "{e}");
        let e = bad(
            json!({"name":"x","scope":"account","severity":"warning","when":[{"metric":"health.tier","op":"==","value":3}]}),
        );
        assert!(e.contains("when[0].value"), "{e}");
        let e = bad(
            json!({"name":"x","scope":"portfolio","severity":"warning","when":[{"metric":"tickets.open_p1","op":">","value":1}]}),
        );
        assert!(e.contains("unknown metric"), "KPI paths differ: {e}");
        let e = bad(json!({"name":"x","scope":"galaxy","severity":"warning","when":[]}));
        assert!(e.contains("scope"), "{e}");
        let e = bad(json!({"name":"x","on":"cs.nothing","match":{"kind":["churn"]},"severity":"critical"}));
        assert!(e.contains("on"), "{e}");
        let e = bad(json!({"name":"x","on":"cs.revenue","match":{"arr":["1"]},"severity":"critical"}));
        assert!(e.contains("match.arr"), "{e}");
        let e = bad(json!({"name":"x","on":"cs.revenue","match":{"kind":["churn"]},"severity":"urgent"}));
        assert!(e.contains("severity"), "{e}");
        let e = Rules::parse(&[default_rules()[0].clone(), default_rules()[0].clone()], &names()).unwrap_err().0;
        assert!(e.contains("unique"), "{e}");
    }

    /// Numeric conditions are decided on exact values against the decimal
    /// written in the rule, whatever the floating-point figure says.
    #[test]
    fn numeric_conditions_are_decided_exactly() {
        use crate::exact::Ratio;
        let rule = |metric: &str, op: &str, value: Value| {
            let raw = json!({"name": "r", "scope": "account", "severity": "warning",
                "when": [{"metric": metric, "op": op, "value": value}]});
            Rules::parse(&[raw], &names()).unwrap().conditions.remove(0).when.remove(0)
        };
        let num = |approx: f64, num: i128, den: u128| MetricValue::Num(Number::new(approx, Ratio::new(num, den)));
        // drop_ratio 1 − 11/20 is 0.44999999999999996 in floating point.
        let drop = num(1.0 - 11.0 / 20.0, 9, 20);
        assert!(rule("usage.drop_ratio", ">=", json!(0.45)).holds(&drop));
        assert!(rule("usage.drop_ratio", "==", json!(0.45)).holds(&drop));
        assert!(!rule("usage.drop_ratio", "<", json!(0.45)).holds(&drop));
        // Exactly 0.5 is >= 0.5.
        assert!(rule("usage.drop_ratio", ">=", json!(0.5)).holds(&num(0.5, 10, 20)));
        // A share of exactly 0.15 is not > 0.15; one just above it is, though
        // both print as 0.15.
        let kpi = |metric: &str, op: &str, value: Value| {
            let raw = json!({"name": "r", "scope": "portfolio", "severity": "warning",
                "when": [{"metric": metric, "op": op, "value": value}]});
            Rules::parse(&[raw], &names()).unwrap().conditions.remove(0).when.remove(0)
        };
        let above = 15 * 10u128.pow(17) + 1;
        assert!(!kpi("health.at_risk_share", ">", json!(0.15)).holds(&num(0.15, 3, 20)));
        assert!(kpi("health.at_risk_share", ">=", json!(0.15)).holds(&num(0.15, 3, 20)));
        assert!(kpi("health.at_risk_share", ">", json!(0.15)).holds(&num(0.15, above as i128, 10u128.pow(19))));
        // A score of exactly 40 (39.99999999999999 in floating point).
        let forty = num(39.99999999999999, 40, 1);
        assert!(rule("health.score", "<", json!(40.5)).holds(&forty));
        assert!(rule("health.score", ">=", json!(40)).holds(&forty));
        assert!(!rule("health.score", "<", json!(40.0)).holds(&forty));
        // Integers beyond 2⁵³ are read exactly too.
        let big = MetricValue::Num(Number::count(9_007_199_254_740_993));
        assert!(rule("tickets.open", ">", json!(9_007_199_254_740_992u64)).holds(&big));
        // A value no decimal of 30 digits holds is refused at start-up.
        let raw = json!({"name": "r", "scope": "account", "severity": "warning",
            "when": [{"metric": "usage.drop_ratio", "op": ">", "value": 1e-40}]});
        let e = Rules::parse(&[raw], &names()).unwrap_err().0;
        assert!(e.contains("when[0].value"), "{e}");
    }

    #[test]
    fn conditions_compare_numbers_and_strings_and_fail_on_null() {
        let c = |op, value| Condition { path: "p".into(), metric: 0, op, value };
        let one = || Operand::Num(Decimal::int(1));
        assert!(c(Op::Ge, one()).holds(&MetricValue::Num(Number::count(1))));
        assert!(!c(Op::Gt, one()).holds(&MetricValue::Num(Number::count(1))));
        assert!(c(Op::Eq, Operand::Str("red".into())).holds(&MetricValue::Str("red".into())));
        assert!(c(Op::Ne, Operand::Str("red".into())).holds(&MetricValue::Str("green".into())));
        assert!(c(Op::Lt, Operand::Str("b".into())).holds(&MetricValue::Str("a".into())));
        for op in [Op::Lt, Op::Le, Op::Gt, Op::Ge, Op::Eq, Op::Ne] {
            assert!(!c(op, Operand::Num(Decimal::int(0))).holds(&MetricValue::Null), "null fails {op:?}");
            assert!(!c(op, Operand::Num(Decimal::int(0))).holds(&MetricValue::Str("0".into())));
        }
    }
}
