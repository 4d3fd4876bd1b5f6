//! Report schedules (SPEC §17): when a `[[reports]]` entry runs, in its
//! IANA time zone, and the period each template's run covers.
//!
//! A schedule is one of `daily HH:MM`, `weekly <day> HH:MM`, `monthly
//! first-business-day HH:MM` (the first Monday–Friday of the month; no
//! holiday calendar), `quarterly first-monday HH:MM` (the first Monday of
//! January, April, July and October), or a 5-field cron expression
//! (`minute hour day-of-month month day-of-week`: `*`, lists, ranges,
//! steps, month and day names; when both day fields are restricted a day
//! matching either runs, as in Vixie cron).
//!
//! Local times follow the zone's rules: a time that does not exist that
//! day (the spring-forward gap) runs at the next valid minute, one that
//! occurs twice (the autumn fold) runs once, at its first occurrence. The
//! search walks local days and, on a matching day, its matching times in
//! order, so every run is a distinct instant and none is skipped.
//!
//! The cron grammar is our own (~100 lines): the jiff-based cron crate
//! (`jiff-cron`) builds on jiff 0.2 (a second copy of the time zone code
//! beside our jiff 1) and runs a folded hour twice, which §17 forbids.

use std::fmt;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

use crate::time::Ts;

/// How far ahead a schedule is searched for its next run (a cron
/// expression that never matches in this long is refused when parsed).
const SEARCH_DAYS: i32 = 5 * 366;

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("sun", Weekday::Sunday),
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
];
const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

/// Which local days and times a schedule runs at.
#[derive(Clone, Debug, PartialEq, Eq)]
enum When {
    Daily(Time),
    Weekly(Weekday, Time),
    FirstBusinessDay(Time),
    QuarterlyFirstMonday(Time),
    Cron(Cron),
}

/// A 5-field cron expression, each field the set of values it allows.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cron {
    minutes: Vec<i8>,
    hours: Vec<i8>,
    days: Vec<i8>,
    months: Vec<i8>,
    /// 0 = Sunday … 6 = Saturday.
    weekdays: Vec<i8>,
    /// Whether the day-of-month / day-of-week fields were `*` (Vixie cron:
    /// with both restricted, either matching is enough).
    any_day: bool,
    any_weekday: bool,
}

/// A parsed schedule in its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    text: String,
    zone_name: String,
    when: When,
    zone: TimeZone,
}

impl PartialEq for Schedule {
    fn eq(&self, o: &Self) -> bool {
        self.text == o.text && self.zone_name == o.zone_name
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.text, self.zone_name)
    }
}

fn time_of(text: &str) -> Result<Time, String> {
    let (h, m) = text.split_once(':').ok_or_else(|| format!("{text:?}: a time HH:MM"))?;
    let two = h.len() == 2 && m.len() == 2;
    let (h, m): (i8, i8) = match (h.parse::<i8>(), m.parse::<i8>()) {
        (Ok(h), Ok(m)) if two && (0..24).contains(&h) && (0..60).contains(&m) => (h, m),
        _ => return Err(format!("{text:?}: a time HH:MM from 00:00 to 23:59")),
    };
    Ok(Time::constant(h, m, 0, 0))
}

/// One cron field: the values in `lo..=hi` it allows, sorted.
fn field(text: &str, name: &str, lo: i8, hi: i8, names: &[&str], names_from: i8) -> Result<Vec<i8>, String> {
    let err = |why: &str| format!("cron {name} field {text:?}: {why}");
    let value = |t: &str| -> Result<i8, String> {
        let lower = t.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as i8 + names_from);
        }
        t.parse::<i8>().ok().filter(|v| (lo..=hi).contains(v)).ok_or_else(|| err(&format!("{t:?} is not in {lo}–{hi}")))
    };
    let mut out = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<i8>().ok().filter(|s| *s > 0).ok_or_else(|| err("a step is 1 or more"))?),
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" => (lo, hi),
            _ => match range.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `5/15` runs from 5 to the end in steps of 15.
                None if part.contains('/') => (value(range)?, hi),
                None => (value(range)?, value(range)?),
            },
        };
        if from > to {
            return Err(err(&format!("the range {range:?} runs backwards")));
        }
        out.extend((from..=to).step_by(step as usize));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

impl Cron {
    fn parse(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "{text:?}: a cron expression has 5 fields (minute hour day-of-month month day-of-week)"
            ));
        };
        let day_names: Vec<&str> = WEEKDAYS.iter().map(|(n, _)| *n).collect();
        let mut weekdays = field(weekday, "day-of-week", 0, 7, &day_names, 0)?;
        // 7 is Sunday too.
        for w in &mut weekdays {
            *w %= 7;
        }
        weekdays.sort_unstable();
        weekdays.dedup();
        Ok(Cron {
            minutes: field(minute, "minute", 0, 59, &[], 0)?,
            hours: field(hour, "hour", 0, 23, &[], 0)?,
            days: field(day, "day-of-month", 1, 31, &[], 0)?,
            months: field(month, "month", 1, 12, &MONTHS, 1)?,
            weekdays,
            any_day: day.starts_with('*'),
            any_weekday: weekday.starts_with('*'),
        })
    }

    fn runs_on(&self, d: Date) -> bool {
        if !self.months.contains(&d.month()) {
            return false;
        }
        let by_day = self.days.contains(&d.day());
        let by_weekday = self.weekdays.contains(&d.weekday().to_sunday_zero_offset());
        match (self.any_day, self.any_weekday) {
            (false, false) => by_day || by_weekday,
            (true, false) => by_weekday,
            (false, true) => by_day,
            (true, true) => true,
        }
    }
}

impl When {
    fn parse(text: &str) -> Result<When, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        match words[..] {
            ["daily", at] => Ok(When::Daily(time_of(at)?)),
            ["weekly", day, at] => {
                let lower = day.to_ascii_lowercase();
                let (_, weekday) = WEEKDAYS
                    .iter()
                    .find(|(n, _)| *n == lower)
                    .ok_or_else(|| format!("weekly {day:?}: a day mon, tue, wed, thu, fri, sat or sun"))?;
                Ok(When::Weekly(*weekday, time_of(at)?))
            }
            ["monthly", "first-business-day", at] => Ok(When::FirstBusinessDay(time_of(at)?)),
            ["quarterly", "first-monday", at] => Ok(When::QuarterlyFirstMonday(time_of(at)?)),
            ["daily" | "weekly" | "monthly" | "quarterly", ..] => Err(format!(
                "{text:?}: \"daily HH:MM\", \"weekly mon HH:MM\", \"monthly first-business-day HH:MM\", \
                 \"quarterly first-monday HH:MM\" or a 5-field cron expression"
            )),
            _ => Ok(When::Cron(Cron::parse(text)?)),
        }
    }

    /// The local times it runs at on `d`, in order (none on other days).
    fn times_on(&self, d: Date) -> Vec<Time> {
        let first_weekday_of_month = |d: Date, weekdays: &[Weekday]| {
            let first = d.first_of_month();
            (0..7).map(|i| first + i.days()).find(|x| weekdays.contains(&x.weekday())) == Some(d)
        };
        match self {
            When::Daily(t) => vec![*t],
            When::Weekly(w, t) => {
                if d.weekday() == *w {
                    vec![*t]
                } else {
                    vec![]
                }
            }
            When::FirstBusinessDay(t) => {
                use Weekday::*;
                if first_weekday_of_month(d, &[Monday, Tuesday, Wednesday, Thursday, Friday]) {
                    vec![*t]
                } else {
                    vec![]
                }
            }
            When::QuarterlyFirstMonday(t) => {
                if matches!(d.month(), 1 | 4 | 7 | 10) && first_weekday_of_month(d, &[Weekday::Monday]) {
                    vec![*t]
                } else {
                    vec![]
                }
            }
            When::Cron(c) => {
                if !c.runs_on(d) {
                    return vec![];
                }
                c.hours.iter().flat_map(|h| c.minutes.iter().map(move |m| Time::constant(*h, *m, 0, 0))).collect()
            }
        }
    }
}

/// The instant a local date-time runs at in `zone`: itself; in a fold its
/// first occurrence; in a gap the next valid minute.
fn resolve(zone: &TimeZone, dt: DateTime) -> Timestamp {
    let mut dt = dt;
    // A gap is at most a few hours (a day at worst, when a zone skipped one).
    for _ in 0..=(26 * 60) {
        match zone.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => return offset.to_timestamp(dt).unwrap_or(Timestamp::MAX),
            AmbiguousOffset::Fold { before, .. } => return before.to_timestamp(dt).unwrap_or(Timestamp::MAX),
            AmbiguousOffset::Gap { .. } => match dt.checked_add(1.minute()) {
                Ok(next) => dt = next,
                Err(_) => return Timestamp::MAX,
            },
        }
    }
    Timestamp::MAX
}

fn to_ts(t: Timestamp) -> Ts {
    t.as_microsecond()
}

fn of_ts(ts: Ts) -> Timestamp {
    Timestamp::from_microsecond(ts).unwrap_or(if ts < 0 { Timestamp::MIN } else { Timestamp::MAX })
}

impl Schedule {
    /// `text` in the IANA zone `zone_name` (from the system's tz database).
    pub fn parse(text: &str, zone_name: &str) -> Result<Schedule, String> {
        let zone = TimeZone::get(zone_name)
            .map_err(|e| format!("time_zone {zone_name:?}: not an IANA time zone of this system ({e})"))?;
        let when = When::parse(text.trim()).map_err(|e| format!("schedule {text:?}: {e}"))?;
        let schedule = Schedule { text: text.trim().to_owned(), zone_name: zone_name.to_owned(), when, zone };
        // Refuse what never runs (`0 0 31 2 *`).
        if schedule.next_after(crate::time::wall_now()).is_none() {
            return Err(format!("schedule {text:?}: never runs (no matching day in five years)"));
        }
        Ok(schedule)
    }

    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: Ts) -> Option<Ts> {
        let after = of_ts(after);
        // A run in a gap moves later, so it may belong to the day before.
        let start = after.to_zoned_datetime(self.zone.clone()).date().yesterday().ok()?;
        for i in 0..SEARCH_DAYS {
            let Ok(day) = start.checked_add(i.days()) else { break };
            for t in self.when.times_on(day) {
                let at = resolve(&self.zone, day.to_datetime(t));
                if at > after {
                    return Some(to_ts(at));
                }
            }
        }
        None
    }

    /// The last run at or before `at`.
    pub fn last_at_or_before(&self, at: Ts) -> Option<Ts> {
        let at_t = of_ts(at);
        // A run in a gap resolves later than its local time: look a day past.
        let end = at_t.to_zoned_datetime(self.zone.clone()).date().tomorrow().ok()?;
        for i in 0..SEARCH_DAYS {
            let Ok(day) = end.checked_sub(i.days()) else { break };
            for t in self.when.times_on(day).into_iter().rev() {
                let run = resolve(&self.zone, day.to_datetime(t));
                if run <= at_t {
                    return Some(to_ts(run));
                }
            }
        }
        None
    }

    /// The runs in `(after, through]`, oldest first (at most `limit`).
    pub fn runs_between(&self, after: Ts, through: Ts, limit: usize) -> Vec<Ts> {
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < limit {
            match self.next_after(cursor) {
                Some(run) if run <= through => {
                    out.push(run);
                    cursor = run;
                }
                _ => break,
            }
        }
        out
    }
}

/// What a report covers (SPEC §17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeriodKind {
    /// The day ending at the run: from the same local time the day before.
    Day,
    /// The 7 days ending at the run (from the same local time a week before).
    Week,
    /// The last complete calendar month before the run.
    Month,
    /// The last complete calendar quarter before the run.
    Quarter,
}

/// `[start, end)` of the period a run at `run` covers, in `zone`.
pub fn period(kind: PeriodKind, run: Ts, zone: &TimeZone) -> (Ts, Ts) {
    let local = of_ts(run).to_zoned_datetime(zone.clone()).datetime();
    let midnight = |d: Date| to_ts(resolve(zone, d.to_datetime(Time::midnight())));
    match kind {
        PeriodKind::Day | PeriodKind::Week => {
            let days = if kind == PeriodKind::Day { 1 } else { 7 };
            let start = local.checked_sub(days.days()).unwrap_or(local);
            (to_ts(resolve(zone, start)), run)
        }
        PeriodKind::Month => {
            let this = local.date().first_of_month();
            let last = this.checked_sub(1.month()).unwrap_or(this);
            (midnight(last), midnight(this))
        }
        PeriodKind::Quarter => {
            let d = local.date();
            let q_month = (d.month() - 1) / 3 * 3 + 1;
            let this = Date::new(d.year(), q_month, 1).unwrap_or(d);
            let last = this.checked_sub(3.months()).unwrap_or(this);
            (midnight(last), midnight(this))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3339 → Ts.
    fn at(text: &str) -> Ts {
        to_ts(text.parse::<Timestamp>().unwrap())
    }

    fn show(ts: Ts, zone: &str) -> String {
        of_ts(ts).to_zoned_datetime(TimeZone::get(zone).unwrap()).strftime("%Y-%m-%d %H:%M %:z %a").to_string()
    }

    fn runs(schedule: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(schedule, zone).unwrap();
        let mut cursor = at(from);
        (0..n)
            .map(|_| {
                cursor = s.next_after(cursor).unwrap();
                show(cursor, zone)
            })
            .collect()
    }

    #[test]
    fn named_schedules_run_at_their_local_times() {
        assert_eq!(
            runs("daily 08:00", "Europe/Berlin", "2026-12-04T06:59:00Z", 2),
            ["2026-12-04 08:00 +01:00 Fri", "2026-12-05 08:00 +01:00 Sat"]
        );
        assert_eq!(
            runs("weekly mon 09:00", "America/New_York", "2026-12-04T00:00:00Z", 2),
            ["2026-12-07 09:00 -05:00 Mon", "2026-12-14 09:00 -05:00 Mon"]
        );
        // First business days: Fri 1 Jan 2027 (no holiday calendar), Mon 1
        // Feb, Mon 1 Mar; May 2027 starts on a Saturday: Mon 3 May.
        assert_eq!(
            runs("monthly first-business-day 09:00", "Europe/Berlin", "2026-12-02T00:00:00Z", 6),
            [
                "2027-01-01 09:00 +01:00 Fri",
                "2027-02-01 09:00 +01:00 Mon",
                "2027-03-01 09:00 +01:00 Mon",
                "2027-04-01 09:00 +02:00 Thu",
                "2027-05-03 09:00 +02:00 Mon",
                "2027-06-01 09:00 +02:00 Tue",
            ]
        );
        assert_eq!(
            runs("quarterly first-monday 09:00", "America/New_York", "2026-12-01T00:00:00Z", 4),
            [
                "2027-01-04 09:00 -05:00 Mon",
                "2027-04-05 09:00 -04:00 Mon",
                "2027-07-05 09:00 -04:00 Mon",
                "2027-10-04 09:00 -04:00 Mon",
            ]
        );
    }

    #[test]
    fn a_time_missing_that_day_runs_at_the_next_valid_minute_and_a_doubled_one_once() {
        // Berlin springs forward on 28 Mar 2027 at 02:00 → 03:00.
        assert_eq!(
            runs("daily 02:30", "Europe/Berlin", "2027-03-26T12:00:00Z", 3),
            ["2027-03-27 02:30 +01:00 Sat", "2027-03-28 03:00 +02:00 Sun", "2027-03-29 02:30 +02:00 Mon"]
        );
        // … and falls back on 31 Oct 2027 at 03:00 → 02:00: 02:30 occurs twice.
        assert_eq!(
            runs("daily 02:30", "Europe/Berlin", "2027-10-29T12:00:00Z", 3),
            ["2027-10-30 02:30 +02:00 Sat", "2027-10-31 02:30 +02:00 Sun", "2027-11-01 02:30 +01:00 Mon"]
        );
        // New York: 14 Mar 2027 02:00 → 03:00, 7 Nov 2027 02:00 → 01:00.
        assert_eq!(
            runs("*/30 2 * * *", "America/New_York", "2027-03-14T05:00:00Z", 3),
            ["2027-03-14 03:00 -04:00 Sun", "2027-03-15 02:00 -04:00 Mon", "2027-03-15 02:30 -04:00 Mon"]
        );
        assert_eq!(
            runs("0,30 1 * * *", "America/New_York", "2027-11-07T04:00:00Z", 3),
            ["2027-11-07 01:00 -04:00 Sun", "2027-11-07 01:30 -04:00 Sun", "2027-11-08 01:00 -05:00 Mon"]
        );
        // Hourly across the fold: 01:00 runs once, then 02:00.
        assert_eq!(
            runs("0 * * * *", "America/New_York", "2027-11-07T04:30:00Z", 3),
            ["2027-11-07 01:00 -04:00 Sun", "2027-11-07 02:00 -05:00 Sun", "2027-11-07 03:00 -05:00 Sun"]
        );
    }

    #[test]
    fn cron_fields_read_as_vixie_cron_does() {
        // Month ends: the 31st only in months that have one.
        assert_eq!(
            runs("0 18 31 * *", "UTC", "2027-01-01T00:00:00Z", 3),
            ["2027-01-31 18:00 +00:00 Sun", "2027-03-31 18:00 +00:00 Wed", "2027-05-31 18:00 +00:00 Mon"]
        );
        // Both day fields restricted: either matches (the 1st, or a Friday).
        assert_eq!(
            runs("0 9 1 * fri", "UTC", "2027-01-27T00:00:00Z", 3),
            ["2027-01-29 09:00 +00:00 Fri", "2027-02-01 09:00 +00:00 Mon", "2027-02-05 09:00 +00:00 Fri"]
        );
        assert_eq!(
            runs("15 9-17/4 * jan-mar 1-5", "UTC", "2027-03-31T12:00:00Z", 3),
            ["2027-03-31 13:15 +00:00 Wed", "2027-03-31 17:15 +00:00 Wed", "2028-01-03 09:15 +00:00 Mon"]
        );
        assert_eq!(runs("0 0 29 2 *", "UTC", "2027-01-01T00:00:00Z", 1), ["2028-02-29 00:00 +00:00 Tue"]);
        assert_eq!(runs("0 12 * * 7", "UTC", "2027-01-01T00:00:00Z", 1), ["2027-01-03 12:00 +00:00 Sun"]);
        for (bad, named) in [
            ("0 0 31 2 *", "never runs"),
            ("61 * * * *", "minute"),
            ("* * *", "5 fields"),
            ("0 9 * * funday", "day-of-week"),
            ("0 5-2 * * *", "backwards"),
            ("daily 8:00", "HH:MM"),
            ("daily 24:00", "HH:MM"),
            ("weekly someday 09:00", "someday"),
            ("monthly last-day 09:00", "first-business-day"),
        ] {
            let err = Schedule::parse(bad, "UTC").unwrap_err();
            assert!(err.contains(named), "{bad}: {err}");
        }
        assert!(Schedule::parse("daily 08:00", "Mars/Olympus").unwrap_err().contains("Mars/Olympus"));
    }

    #[test]
    fn missed_runs_are_listed_and_the_last_run_found() {
        let s = Schedule::parse("daily 08:00", "Europe/Berlin").unwrap();
        let runs = s.runs_between(at("2026-12-01T12:00:00Z"), at("2026-12-04T07:30:00Z"), 10);
        let shown: Vec<String> = runs.iter().map(|r| show(*r, "Europe/Berlin")).collect();
        assert_eq!(
            shown,
            ["2026-12-02 08:00 +01:00 Wed", "2026-12-03 08:00 +01:00 Thu", "2026-12-04 08:00 +01:00 Fri"]
        );
        assert_eq!(s.last_at_or_before(at("2026-12-04T07:00:00Z")), Some(at("2026-12-04T07:00:00Z")));
        assert_eq!(s.last_at_or_before(at("2026-12-04T06:59:59Z")), Some(at("2026-12-03T07:00:00Z")));
        // A run that moved out of a gap is still the last one before.
        let g = Schedule::parse("daily 02:30", "Europe/Berlin").unwrap();
        assert_eq!(g.last_at_or_before(at("2027-03-28T01:30:00Z")), Some(at("2027-03-28T01:00:00Z")));
    }

    #[test]
    fn periods_are_local_days_weeks_months_and_quarters() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let p = |k, run: &str| {
            let (a, b) = period(k, at(run), &berlin);
            (show(a, "Europe/Berlin"), show(b, "Europe/Berlin"))
        };
        // The day the clocks go forward is 23 hours long.
        let (start, end) = period(PeriodKind::Day, at("2027-03-28T06:00:00Z"), &berlin);
        assert_eq!(end - start, 23 * 3_600_000_000);
        assert_eq!(p(PeriodKind::Week, "2026-12-07T08:00:00Z").0, "2026-11-30 09:00 +01:00 Mon");
        assert_eq!(
            p(PeriodKind::Month, "2027-01-01T08:00:00Z"),
            ("2026-12-01 00:00 +01:00 Tue".to_owned(), "2027-01-01 00:00 +01:00 Fri".to_owned())
        );
        // A quarter across the spring change: its start and end differ in offset.
        assert_eq!(
            p(PeriodKind::Quarter, "2027-04-05T07:00:00Z"),
            ("2027-01-01 00:00 +01:00 Fri".to_owned(), "2027-04-01 00:00 +02:00 Thu".to_owned())
        );
        assert_eq!(p(PeriodKind::Quarter, "2027-01-04T08:00:00Z").0, "2026-10-01 00:00 +02:00 Thu");
    }
}
