//! Targets against actuals (SPEC §15 `[[targets]]`): a KPI figure of one
//! scope, per UTC calendar period, against a value.
//!
//! A target's `actual` is the figure now (the published state); its
//! `projected` value extends the line from the figure at the period's start
//! (the history row at the latest boundary at or before it) through now to
//! the period's end. While the period runs the target is `on_track` or
//! `off_track` by the projection; the period before the current one is
//! judged `met` or `missed` by its value at its end.

use serde_json::{Value, json};

use crate::config::TargetConfig;
use crate::metric::{KPI, Kind, Unit};
use crate::state::log::ScopeKind;
use crate::time::{CalendarPeriod, Ts, format_rfc3339};

/// How the figure is held against the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    AtLeast,
    AtMost,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::AtLeast => ">=",
            Op::AtMost => "<=",
        }
    }

    pub fn holds(self, actual: f64, value: f64) -> bool {
        match self {
            Op::AtLeast => actual >= value,
            Op::AtMost => actual <= value,
        }
    }
}

/// A validated target.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    /// The figure's index in `metric::KPI`.
    pub metric: usize,
    pub kind: ScopeKind,
    /// The segment, region or CSM id (`portfolio` for the portfolio).
    pub id: String,
    pub period: CalendarPeriod,
    pub op: Op,
    pub value: f64,
}

impl Target {
    /// Every configured target, or the position of the first invalid one
    /// and what is wrong with it.
    pub fn parse_all(targets: &[TargetConfig]) -> Result<Vec<Target>, (usize, String)> {
        let mut out: Vec<Target> = Vec::with_capacity(targets.len());
        for (i, t) in targets.iter().enumerate() {
            let target = Target::parse(t).map_err(|e| (i, e))?;
            if out.iter().any(|o| o.name == target.name) {
                return Err((i, format!("name {:?} is used twice", t.name)));
            }
            out.push(target);
        }
        Ok(out)
    }

    fn parse(t: &TargetConfig) -> Result<Target, String> {
        if t.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        let metric = KPI
            .iter()
            .position(|m| m.path == t.metric && m.kind() == Kind::Num)
            .ok_or_else(|| format!("metric {:?} is not a figure of the KPI object (SPEC §3.2)", t.metric))?;
        let (kind, id) = match t.scope.split_once(':') {
            None if t.scope == "portfolio" => (ScopeKind::Portfolio, "portfolio".to_owned()),
            Some(("segment", v)) if !v.is_empty() => (ScopeKind::Segment, v.to_owned()),
            Some(("region", v)) if !v.is_empty() => (ScopeKind::Region, v.to_owned()),
            Some(("csm", v)) if !v.is_empty() => (ScopeKind::Csm, v.to_owned()),
            _ => {
                return Err(format!(
                    "scope {:?} must be portfolio, segment:<value>, region:<value> or csm:<id>",
                    t.scope
                ));
            }
        };
        let op = match t.op.as_str() {
            ">=" => Op::AtLeast,
            "<=" => Op::AtMost,
            other => return Err(format!("op {other:?} must be \">=\" or \"<=\"")),
        };
        if !t.value.is_finite() {
            return Err("value must be a finite number".into());
        }
        Ok(Target { name: t.name.clone(), metric, kind, id, period: t.period, op, value: t.value })
    }

    /// The scope as configured (`segment:smb`).
    pub fn scope(&self) -> String {
        match self.kind {
            ScopeKind::Portfolio => "portfolio".into(),
            kind => format!("{}:{}", kind.as_str(), self.id),
        }
    }

    pub fn path(&self) -> &'static str {
        KPI[self.metric].path
    }

    /// The values the figure can take, which bound a projection: scores
    /// 0–100, CSAT means 1–5, shares and gross retention 0–1, everything
    /// else (counts, money, net retention, minutes) at least 0.
    fn range(&self) -> (f64, f64) {
        let path = self.path();
        match KPI[self.metric].unit {
            Unit::Score => (0.0, 100.0),
            _ if path.starts_with("tickets.csat_avg") => (1.0, 5.0),
            _ if path.ends_with("_share") || path.ends_with("_rate") || path.starts_with("revenue.grr") => (0.0, 1.0),
            _ => (0.0, f64::INFINITY),
        }
    }

    /// The target's standing at `now` (the watermark): `actual` is the
    /// figure now, `start` the figure at the latest boundary at or before
    /// the period's start, `last_end` the figure at the latest boundary at
    /// or before the previous period's end.
    pub fn report(&self, now: Ts, actual: Option<f64>, start: Option<f64>, last_end: Option<f64>) -> Value {
        let (from, to) = self.period.around(now);
        let projected = match (actual, start) {
            (Some(a), Some(s)) if now > from => {
                let (lo, hi) = self.range();
                Some((s + (a - s) * (to - from) as f64 / (now - from) as f64).clamp(lo, hi))
            }
            (a, _) => a,
        };
        let status = projected.map(|p| if self.op.holds(p, self.value) { "on_track" } else { "off_track" });
        let (last_from, _) = self.period.around(from - 1);
        json!({
            "name": self.name,
            "metric": self.path(),
            "scope": self.scope(),
            "period": self.period.as_str(),
            "op": self.op.as_str(),
            "value": self.value,
            "period_start": format_rfc3339(from),
            "period_end": format_rfc3339(to),
            "actual": actual,
            "projected": projected,
            "status": status,
            "previous": {
                "period_start": format_rfc3339(last_from),
                "period_end": format_rfc3339(from),
                "actual": last_end,
                "status": last_end.map(|v| if self.op.holds(v, self.value) { "met" } else { "missed" }),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_rfc3339;

    fn config(metric: &str, scope: &str, op: &str) -> TargetConfig {
        TargetConfig {
            name: "nrr".into(),
            metric: metric.into(),
            scope: scope.into(),
            period: CalendarPeriod::Quarter,
            op: op.into(),
            value: 1.05,
        }
    }

    #[test]
    fn parsing_names_what_is_wrong() {
        let t = Target::parse(&config("revenue.nrr_qtd", "segment:smb", ">=")).unwrap();
        assert_eq!((t.kind, t.id.as_str(), t.scope()), (ScopeKind::Segment, "smb", "segment:smb".to_owned()));
        let e = Target::parse(&config("revenue.nope", "portfolio", ">=")).unwrap_err();
        assert!(e.contains("revenue.nope"), "{e}");
        let e = Target::parse(&config("revenue.arr", "team:x", ">=")).unwrap_err();
        assert!(e.contains("team:x"), "{e}");
        let e = Target::parse(&config("revenue.arr", "segment:", ">=")).unwrap_err();
        assert!(e.contains("segment:"), "{e}");
        let e = Target::parse(&config("revenue.arr", "portfolio", ">")).unwrap_err();
        assert!(e.contains('>'), "{e}");
        let two = [config("revenue.arr", "portfolio", ">="), config("revenue.arr", "portfolio", "<=")];
        let (i, e) = Target::parse_all(&two).unwrap_err();
        assert_eq!(i, 1);
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn projection_extends_the_line_through_now_to_the_period_end() {
        let t = Target::parse(&config("revenue.nrr_qtd", "portfolio", ">=")).unwrap();
        // A quarter of the quarter (Oct 1 .. Jan 1, 92 days) gone.
        let from = parse_rfc3339("2026-10-01T00:00:00Z").unwrap();
        let now = from + (parse_rfc3339("2027-01-01T00:00:00Z").unwrap() - from) / 4;
        let r = t.report(now, Some(1.01), Some(1.0), Some(1.06));
        let projected = r["projected"].as_f64().unwrap();
        assert!((projected - 1.04).abs() < 1e-9, "{r}");
        assert_eq!(r["status"], "off_track");
        assert_eq!(r["period_start"], "2026-10-01T00:00:00Z");
        assert_eq!(r["period_end"], "2027-01-01T00:00:00Z");
        assert_eq!(r["previous"]["period_start"], "2026-07-01T00:00:00Z");
        assert_eq!(r["previous"]["status"], "met");
        // No history at the start: the projection is the actual.
        let r = t.report(now, Some(1.06), None, None);
        assert_eq!((r["projected"].as_f64(), &r["status"]), (Some(1.06), &json!("on_track")));
        assert_eq!(r["previous"]["status"], Value::Null);
        let at_most = Target { op: Op::AtMost, ..t };
        assert_eq!(at_most.report(now, Some(1.06), None, None)["status"], "off_track");
    }

    #[test]
    fn a_projection_stays_within_the_figures_range() {
        let share = Target::parse(&config("health.at_risk_share", "portfolio", "<=")).unwrap();
        let from = parse_rfc3339("2026-10-01T00:00:00Z").unwrap();
        let now = from + 86_400_000_000;
        // From 0.1 to 0.5 in a day: the line would leave [0, 1] long before January.
        assert_eq!(share.report(now, Some(0.5), Some(0.1), None)["projected"], 1.0);
        assert_eq!(share.report(now, Some(0.1), Some(0.5), None)["projected"], 0.0);
        let score = Target::parse(&config("health.avg_score", "portfolio", ">=")).unwrap();
        assert_eq!(score.report(now, Some(90.0), Some(60.0), None)["projected"], 100.0);
        let arr = Target::parse(&config("revenue.arr", "portfolio", ">=")).unwrap();
        assert_eq!(arr.report(now, Some(100.0), Some(1000.0), None)["projected"], 0.0);
        let nrr = Target::parse(&config("revenue.nrr_qtd", "portfolio", ">=")).unwrap();
        assert!(nrr.report(now, Some(1.1), Some(1.0), None)["projected"].as_f64().unwrap() > 1.5);
    }
}
