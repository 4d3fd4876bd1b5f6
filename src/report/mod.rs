//! Reports (SPEC §17). So far: the `[[reports]]` entries checked and
//! resolved (`ReportSpec`), their schedules and the periods their runs
//! cover (`schedule`), and a report's content with its CSV and XLSX forms
//! (`document`); the templates' data, HTML and PDF, the scheduler and the
//! portal come next (issue #22).

pub mod daily;
pub mod document;
pub mod schedule;

use crate::config::delivery::DeliveryConfig;
use crate::config::reports::ReportConfig;
use schedule::{PeriodKind, Schedule};

/// The four templates (§17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    DailyOps,
    WeeklyPerformance,
    MonthlyBusiness,
    QuarterlyExecutive,
}

impl Template {
    pub const ALL: [Template; 4] =
        [Template::DailyOps, Template::WeeklyPerformance, Template::MonthlyBusiness, Template::QuarterlyExecutive];

    pub fn name(self) -> &'static str {
        match self {
            Template::DailyOps => "daily_ops",
            Template::WeeklyPerformance => "weekly_performance",
            Template::MonthlyBusiness => "monthly_business",
            Template::QuarterlyExecutive => "quarterly_executive",
        }
    }

    pub fn parse(name: &str) -> Option<Template> {
        Template::ALL.into_iter().find(|t| t.name() == name)
    }

    /// What a run covers.
    pub fn period(self) -> PeriodKind {
        match self {
            Template::DailyOps => PeriodKind::Day,
            Template::WeeklyPerformance => PeriodKind::Week,
            Template::MonthlyBusiness => PeriodKind::Month,
            Template::QuarterlyExecutive => PeriodKind::Quarter,
        }
    }

    /// The audiences it is written for (§17).
    fn allows(self, audience: &Audience) -> bool {
        match self {
            Template::DailyOps => matches!(audience, Audience::Csm(_) | Audience::EveryCsm | Audience::Manager),
            Template::WeeklyPerformance => matches!(audience, Audience::Manager | Audience::Executive),
            Template::MonthlyBusiness | Template::QuarterlyExecutive => *audience == Audience::Executive,
        }
    }

    fn audiences(self) -> &'static str {
        match self {
            Template::DailyOps => "csm:<id>, csm:* or manager",
            Template::WeeklyPerformance => "manager or executive",
            Template::MonthlyBusiness | Template::QuarterlyExecutive => "executive",
        }
    }
}

/// Whom a report is about and for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    Executive,
    Manager,
    /// One CSM's book.
    Csm(String),
    /// Every CSM, each run with its own book.
    EveryCsm,
}

impl Audience {
    pub fn parse(text: &str) -> Option<Audience> {
        match text {
            "executive" => Some(Audience::Executive),
            "manager" => Some(Audience::Manager),
            "csm:*" => Some(Audience::EveryCsm),
            _ => {
                let id = text.strip_prefix("csm:")?;
                (!id.is_empty() && id.chars().count() <= 128).then(|| Audience::Csm(id.to_owned()))
            }
        }
    }
}

/// A file a run is rendered as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Pdf,
    Xlsx,
    Csv,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "html" => Some(Format::Html),
            "pdf" => Some(Format::Pdf),
            "xlsx" => Some(Format::Xlsx),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// Who a run is sent to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// A `[[delivery.people]]` id.
    Person(String),
    /// A `[[delivery.destinations]]` name.
    Destination(String),
    /// The CSM whose book the run is of (its person).
    Owner,
}

/// A checked `[[reports]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportSpec {
    pub name: String,
    pub template: Template,
    pub audience: Audience,
    pub schedule: Schedule,
    pub formats: Vec<Format>,
    pub to: Vec<Recipient>,
    pub skip_if_empty: bool,
}

/// Whether a person of `role` (with `csm_id`) may receive a run for
/// `audience`: what the role may read (§6.2), a csm only its own book.
fn may_receive(role: &str, csm_id: Option<&str>, audience: &Audience) -> bool {
    match audience {
        Audience::Executive | Audience::Manager => matches!(role, "executive" | "manager" | "analyst"),
        Audience::Csm(id) => matches!(role, "executive" | "manager") || role == "csm" && csm_id == Some(id.as_str()),
        Audience::EveryCsm => matches!(role, "executive" | "manager"),
    }
}

impl ReportSpec {
    /// Checks one entry against the schedule grammar, the template's
    /// audiences and `delivery` (who it names, and that each may see it).
    pub fn parse(c: &ReportConfig, delivery: &DeliveryConfig) -> Result<ReportSpec, String> {
        let name = c.name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(format!("name {:?}: 1 to 64 characters, no control characters", c.name));
        }
        let template = Template::parse(&c.template).ok_or_else(|| {
            let names: Vec<&str> = Template::ALL.iter().map(|t| t.name()).collect();
            format!("template {:?}: one of {}", c.template, names.join(", "))
        })?;
        let audience = Audience::parse(&c.audience)
            .ok_or_else(|| format!("audience {:?}: executive, manager, csm:<id> or csm:*", c.audience))?;
        if !template.allows(&audience) {
            return Err(format!(
                "audience {:?}: {} is written for {}",
                c.audience,
                template.name(),
                template.audiences()
            ));
        }
        let schedule = Schedule::parse(&c.schedule, &c.time_zone)?;
        if c.formats.is_empty() {
            return Err("formats: at least one of html, pdf, xlsx, csv".to_owned());
        }
        let mut formats = Vec::new();
        for f in &c.formats {
            let format = Format::parse(f).ok_or_else(|| format!("formats: {f:?} is not html, pdf, xlsx or csv"))?;
            if formats.contains(&format) {
                return Err(format!("formats: {f:?} is listed twice"));
            }
            formats.push(format);
        }
        let mut to = Vec::new();
        for r in &c.to {
            let recipient = if r == "owner" {
                if !matches!(audience, Audience::Csm(_) | Audience::EveryCsm) {
                    return Err(format!("to: \"owner\" is the CSM of a csm audience, not of {:?}", c.audience));
                }
                Recipient::Owner
            } else if let Some(p) = delivery.people.iter().find(|p| &p.id == r) {
                if !may_receive(&p.role, p.csm_id.as_deref(), &audience) {
                    return Err(format!("to: person {r:?} ({}) may not see a report for {}", p.role, c.audience));
                }
                Recipient::Person(r.clone())
            } else if delivery.destinations.iter().any(|d| &d.name == r) {
                Recipient::Destination(r.clone())
            } else {
                return Err(format!("to: {r:?} is neither a [[delivery.people]] id, a destination nor \"owner\""));
            };
            to.push(recipient);
        }
        Ok(ReportSpec {
            name: name.to_owned(),
            template,
            audience,
            schedule,
            formats,
            to,
            skip_if_empty: c.skip_if_empty,
        })
    }

    /// Every entry, names unique; else the first bad entry's index and why.
    pub fn parse_all(all: &[ReportConfig], delivery: &DeliveryConfig) -> Result<Vec<ReportSpec>, (usize, String)> {
        let mut out: Vec<ReportSpec> = Vec::new();
        for (i, c) in all.iter().enumerate() {
            let spec = ReportSpec::parse(c, delivery).map_err(|e| (i, e))?;
            if out.iter().any(|o| o.name == spec.name) {
                return Err((i, format!("name {:?} is used by another report", spec.name)));
            }
            out.push(spec);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::delivery::{DestinationConfig, PersonConfig};

    fn delivery() -> DeliveryConfig {
        let person = |id: &str, role: &str, csm: Option<&str>| PersonConfig {
            id: id.into(),
            email: Some(format!("{id}@example.test")),
            role: role.into(),
            csm_id: csm.map(str::to_owned),
            time_zone: "UTC".into(),
            ..Default::default()
        };
        DeliveryConfig {
            people: vec![
                person("ana", "manager", None),
                person("cy", "csm", Some("csm-1")),
                person("al", "analyst", None),
            ],
            destinations: vec![DestinationConfig {
                name: "ops-mail".into(),
                kind: "email".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn entry(template: &str, audience: &str, to: &[&str]) -> ReportConfig {
        ReportConfig {
            name: "r".into(),
            template: template.into(),
            audience: audience.into(),
            schedule: "daily 08:00".into(),
            time_zone: "Europe/Berlin".into(),
            formats: vec!["html".into(), "pdf".into()],
            to: to.iter().map(|s| (*s).to_owned()).collect(),
            skip_if_empty: false,
        }
    }

    #[test]
    fn entries_resolve_and_bad_ones_are_named() {
        let d = delivery();
        let ok = ReportSpec::parse(&entry("daily_ops", "csm:*", &["owner", "ana", "ops-mail"]), &d).unwrap();
        assert_eq!(
            ok.to,
            [Recipient::Owner, Recipient::Person("ana".into()), Recipient::Destination("ops-mail".into())]
        );
        assert_eq!(ok.template.period(), PeriodKind::Day);
        assert!(ReportSpec::parse(&entry("daily_ops", "csm:csm-1", &["cy"]), &d).is_ok(), "a csm gets its own book");
        for (c, named) in [
            (entry("weekly", "manager", &[]), "template"),
            (entry("monthly_business", "manager", &[]), "written for executive"),
            (entry("daily_ops", "csm:", &[]), "audience"),
            (entry("daily_ops", "csm:csm-2", &["cy"]), "may not see"),
            (entry("daily_ops", "csm:*", &["cy"]), "may not see"),
            (entry("weekly_performance", "executive", &["owner"]), "owner"),
            (entry("weekly_performance", "executive", &["nobody"]), "nobody"),
            (ReportConfig { formats: vec!["docx".into()], ..entry("daily_ops", "manager", &[]) }, "docx"),
            (ReportConfig { formats: vec![], ..entry("daily_ops", "manager", &[]) }, "formats"),
            (ReportConfig { schedule: "weekly funday 09:00".into(), ..entry("daily_ops", "manager", &[]) }, "funday"),
            (ReportConfig { time_zone: "Nowhere/City".into(), ..entry("daily_ops", "manager", &[]) }, "Nowhere/City"),
        ] {
            let err = ReportSpec::parse(&c, &d).unwrap_err();
            assert!(err.contains(named), "{c:?}: {err}");
        }
        let twice = [entry("daily_ops", "manager", &[]), entry("weekly_performance", "manager", &[])];
        assert_eq!(ReportSpec::parse_all(&twice, &d).unwrap_err().0, 1);
    }
}
