//! Event time: instants as integer microseconds since the Unix epoch (UTC),
//! RFC 3339 parsing and formatting, durations, and the calendar arithmetic the
//! metrics need (UTC dates, quarter starts).
//!
//! Integer microseconds keep window arithmetic exact and cheap; every RFC 3339
//! year (0000–9999) fits. Digits below the microsecond are truncated.

use std::fmt;
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::macros::date;
use time::{Date, Month, OffsetDateTime, UtcOffset};

const EPOCH: Date = date!(1970 - 01 - 01);

/// An instant in event time: microseconds since 1970-01-01T00:00:00Z.
pub type Ts = i64;

pub const MICROS_PER_SEC: i64 = 1_000_000;
pub const MICROS_PER_MIN: i64 = 60 * MICROS_PER_SEC;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// Days as a span in microseconds.
pub const fn days(n: i64) -> i64 {
    n * MICROS_PER_DAY
}

/// Parses an RFC 3339 timestamp with offset into UTC microseconds.
pub fn parse_rfc3339(s: &str) -> Option<Ts> {
    if let Some(ts) = parse_utc_z(s.as_bytes()) {
        return Some(ts);
    }
    // The `time` crate accepts any separator byte; RFC 3339 allows only T or t.
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't')) {
        return None;
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let nanos = t.unix_timestamp_nanos();
    Some(nanos.div_euclid(1000) as i64)
}

/// The shape producers send nearly always, `YYYY-MM-DDTHH:MM:SS[.f…]Z`
/// from 1970 on with at most 9 fraction digits, read directly (the general
/// parser costs several times more). `None` leaves the string, valid or
/// not, to the general parser.
fn parse_utc_z(b: &[u8]) -> Option<Ts> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (&last, rest) = b.split_last()?;
    if last != b'Z' {
        return None;
    }
    let digits =
        |part: &[u8]| part.iter().try_fold(0i64, |n, &c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')));
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if year < 1970
        || !(1..=12).contains(&month)
        || !(1..=month_days).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let micros = match &rest[19..] {
        [] => 0,
        [b'.', frac @ ..] if (1..=9).contains(&frac.len()) => {
            let n = digits(frac)?;
            // Digits below the microsecond are truncated.
            let scale = 10i64.pow(frac.len().abs_diff(6) as u32);
            if frac.len() >= 6 { n / scale } else { n * scale }
        }
        _ => return None,
    };
    // Days since the epoch of a proleptic Gregorian date (year >= 1970).
    let y = if month <= 2 { year - 1 } else { year };
    let (era, year_of_era) = (y / 400, y % 400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some((days * 86_400 + hour * 3600 + minute * 60 + second) * MICROS_PER_SEC + micros)
}

/// Formats an instant as RFC 3339 in UTC (`2026-01-05T09:00:00Z`, with a
/// fraction only when the instant has one).
pub fn format_rfc3339(ts: Ts) -> String {
    match OffsetDateTime::from_unix_timestamp_nanos(ts as i128 * 1000) {
        Ok(t) => t.format(&Rfc3339).unwrap_or_else(|_| ts.to_string()),
        Err(_) => ts.to_string(),
    }
}

/// A `YYYY-MM-DD` calendar date, as days since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i32> {
        let part = &s[r];
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let year = num(0..4)?;
    let month = Month::try_from(num(5..7)? as u8).ok()?;
    let day = num(8..10)? as u8;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    Some(date_to_days(date))
}

/// Formats days since the epoch as `YYYY-MM-DD`.
pub fn format_date(days: i32) -> String {
    let d = days_to_date(days);
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

fn date_to_days(d: Date) -> i32 {
    d.to_julian_day() - EPOCH.to_julian_day()
}

fn days_to_date(days: i32) -> Date {
    Date::from_julian_day(days + EPOCH.to_julian_day()).unwrap_or(EPOCH)
}

/// The UTC calendar date of an instant, as days since the epoch.
pub fn utc_day(ts: Ts) -> i32 {
    ts.div_euclid(MICROS_PER_DAY) as i32
}

/// The first instant of the UTC calendar quarter containing `ts`.
pub fn quarter_start(ts: Ts) -> Ts {
    let date = days_to_date(utc_day(ts));
    let first_month = ((date.month() as u8 - 1) / 3) * 3 + 1;
    let month = Month::try_from(first_month).unwrap_or(Month::January);
    let start = Date::from_calendar_date(date.year(), month, 1).unwrap_or(date);
    date_to_days(start) as i64 * MICROS_PER_DAY
}

/// The same UTC calendar position `months` months before `ts` (time of
/// day kept), clamped to that month's last day: 31 March less one month is
/// 28 (or 29) February.
pub fn months_back(ts: Ts, months: u32) -> Ts {
    let date = days_to_date(utc_day(ts));
    let time_of_day = ts.rem_euclid(MICROS_PER_DAY);
    let index = date.year() * 12 + (date.month() as i32 - 1) - months as i32;
    let (year, month) =
        (index.div_euclid(12), Month::try_from(index.rem_euclid(12) as u8 + 1).unwrap_or(Month::January));
    let day = date.day().min(time::util::days_in_month(month, year));
    let back = Date::from_calendar_date(year, month, day).unwrap_or(date);
    date_to_days(back) as i64 * MICROS_PER_DAY + time_of_day
}

/// A UTC calendar period (targets, §15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalendarPeriod {
    Month,
    Quarter,
    Year,
}

impl CalendarPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            CalendarPeriod::Month => "month",
            CalendarPeriod::Quarter => "quarter",
            CalendarPeriod::Year => "year",
        }
    }

    pub fn months(self) -> u32 {
        match self {
            CalendarPeriod::Month => 1,
            CalendarPeriod::Quarter => 3,
            CalendarPeriod::Year => 12,
        }
    }

    /// The period containing `ts`: [start, end).
    pub fn around(self, ts: Ts) -> (Ts, Ts) {
        let date = days_to_date(utc_day(ts));
        let month0 = date.month() as u8 - 1;
        let first = match self {
            CalendarPeriod::Month => month0,
            CalendarPeriod::Quarter => month0 / 3 * 3,
            CalendarPeriod::Year => 0,
        };
        let start = Date::from_calendar_date(date.year(), Month::try_from(first + 1).unwrap_or(Month::January), 1)
            .unwrap_or(date);
        let start = date_to_days(start) as i64 * MICROS_PER_DAY;
        // The first of a month one period later: a month ahead of the start
        // is less than 32 days, so step from the start's own day.
        let mut end = start;
        for _ in 0..self.months() {
            let d = days_to_date(utc_day(end));
            end = date_to_days(d) as i64 * MICROS_PER_DAY
                + i64::from(time::util::days_in_month(d.month(), d.year())) * MICROS_PER_DAY;
        }
        (start, end)
    }
}

/// The wall clock as an instant.
pub fn wall_now() -> Ts {
    let t = OffsetDateTime::now_utc().to_offset(UtcOffset::UTC);
    (t.unix_timestamp_nanos() / 1000) as i64
}

/// A configuration duration: `250ms`, `5m`, `35d`, `1h 30m`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span(pub Duration);

impl Span {
    pub fn micros(self) -> i64 {
        i64::try_from(self.0.as_micros()).unwrap_or(i64::MAX)
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl std::str::FromStr for Span {
    type Err = humantime::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim()).map(Span)
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| {
            serde::de::Error::custom(format!("invalid duration {s:?} ({e}); use forms like 250ms, 5m, 35d"))
        })
    }
}

impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_periods_and_months_back() {
        let t = |s: &str| parse_rfc3339(s).unwrap();
        assert_eq!(months_back(t("2026-03-31T10:30:00Z"), 1), t("2026-02-28T10:30:00Z"), "clamped");
        assert_eq!(months_back(t("2028-03-31T10:30:00Z"), 1), t("2028-02-29T10:30:00Z"), "leap year");
        assert_eq!(months_back(t("2026-01-15T00:00:00Z"), 3), t("2025-10-15T00:00:00Z"));
        assert_eq!(months_back(t("2026-05-31T23:59:59Z"), 12), t("2025-05-31T23:59:59Z"));
        assert_eq!(months_back(t("2026-08-31T00:00:00Z"), 3), t("2026-05-31T00:00:00Z"));
        let around = |p: CalendarPeriod, s: &str| {
            let (a, b) = p.around(t(s));
            (format_rfc3339(a), format_rfc3339(b))
        };
        assert_eq!(
            around(CalendarPeriod::Month, "2026-02-14T12:00:00Z"),
            ("2026-02-01T00:00:00Z".into(), "2026-03-01T00:00:00Z".into())
        );
        assert_eq!(
            around(CalendarPeriod::Quarter, "2026-12-31T23:59:59Z"),
            ("2026-10-01T00:00:00Z".into(), "2027-01-01T00:00:00Z".into())
        );
        assert_eq!(
            around(CalendarPeriod::Year, "2026-01-01T00:00:00Z"),
            ("2026-01-01T00:00:00Z".into(), "2027-01-01T00:00:00Z".into())
        );
    }

    #[test]
    fn rfc3339_round_trip_and_offsets() {
        let t = parse_rfc3339("2026-01-05T09:00:00Z").unwrap();
        assert_eq!(format_rfc3339(t), "2026-01-05T09:00:00Z");
        assert_eq!(parse_rfc3339("2026-01-05T10:00:00+01:00"), Some(t));
        assert_eq!(parse_rfc3339("2026-01-05T09:00:00.5Z"), Some(t + 500_000));
        assert_eq!(format_rfc3339(t + 500_000), "2026-01-05T09:00:00.5Z");
        assert_eq!(parse_rfc3339("2026-01-05 09:00:00"), None);
        assert_eq!(parse_rfc3339("2026-01-05T09:00:00"), None, "offset is required");
        assert_eq!(parse_rfc3339("2026-01-05x09:00:00Z"), None, "separator is T");
        assert_eq!(parse_rfc3339("2026-01-05t09:00:00z"), Some(t));
        assert_eq!(parse_rfc3339("2026-02-30T09:00:00Z"), None);
    }

    proptest::proptest! {
        /// The direct reading of the usual shape agrees with the general
        /// parser on valid and invalid strings alike, and takes every valid
        /// one of its shape.
        #[test]
        fn utc_z_shape_agrees_with_the_general_parser(
            year in 1965i64..2105, month in 0i64..14, day in 0i64..33, hour in 0i64..25,
            minute in 0i64..61, second in 0i64..61, frac in proptest::option::of("[0-9]{1,10}"),
            end in proptest::sample::select(vec!["Z", "z", "+00:00", "-05:30", ""]),
        ) {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let s = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{frac}{end}");
            let general = OffsetDateTime::parse(&s, &Rfc3339).ok().map(|t| t.unix_timestamp_nanos().div_euclid(1000) as i64);
            let fast = parse_utc_z(s.as_bytes());
            if let Some(ts) = fast {
                proptest::prop_assert_eq!(Some(ts), general, "{}", s);
            }
            if end == "Z" && year >= 1970 && frac.len() <= 10 && second < 60 {
                proptest::prop_assert_eq!(fast, general, "{}", s);
            }
            proptest::prop_assert_eq!(parse_rfc3339(&s), general, "{}", s);
        }
    }

    #[test]
    fn dates_and_quarters() {
        let d = parse_date("2026-09-30").unwrap();
        assert_eq!(format_date(d), "2026-09-30");
        assert_eq!(parse_date("2026-9-30"), None);
        assert_eq!(parse_date("2026-02-29"), None);
        assert_eq!(parse_date("+026-02-01"), None);
        let t = parse_rfc3339("2026-05-17T12:00:00Z").unwrap();
        assert_eq!(format_rfc3339(quarter_start(t)), "2026-04-01T00:00:00Z");
        let t = parse_rfc3339("2026-12-31T23:59:59Z").unwrap();
        assert_eq!(format_rfc3339(quarter_start(t)), "2026-10-01T00:00:00Z");
        assert_eq!(utc_day(parse_rfc3339("1969-12-31T23:00:00Z").unwrap()), -1);
    }

    #[test]
    fn spans() {
        assert_eq!("250ms".parse::<Span>().unwrap().micros(), 250_000);
        assert_eq!("35d".parse::<Span>().unwrap().micros(), days(35));
        assert_eq!("5m".parse::<Span>().unwrap().micros(), 5 * MICROS_PER_MIN);
        assert!("five".parse::<Span>().is_err());
    }
}
