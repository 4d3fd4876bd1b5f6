//! Decoding and schema validation of input messages (SPEC §1, §9, §14).
//!
//! One pass of serde_json into a struct of loosely typed fields, then explicit
//! checks in a fixed field order so the `detail` of a `schema` rejection always
//! names the first offending field. Nothing here allocates for well-formed
//! input without JSON escapes.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::{AccountUpsert, Body, Event, Priority, RevenueKind, TicketAction, TicketEvent, Topic};
use crate::time::{parse_date, parse_rfc3339};

/// Why a message was rejected (SPEC §9), in check order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    TooLarge,
    InvalidJson,
    Schema,
    FutureTs,
    Late,
    /// A cardinality limit (§18), checked last, after `duplicate`.
    Limit,
}

impl Reason {
    pub const ALL: [Reason; 6] =
        [Reason::TooLarge, Reason::InvalidJson, Reason::Schema, Reason::FutureTs, Reason::Late, Reason::Limit];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::InvalidJson => "invalid_json",
            Reason::Schema => "schema",
            Reason::FutureTs => "future_ts",
            Reason::Late => "late",
            Reason::Limit => "limit",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A rejected message: the reason and a human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection { reason, detail: detail.into() }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

/// The largest ARR accepted, in cents (10 billion per account), so that sums
/// over any realistic portfolio stay exact in `i64`.
pub const MAX_ARR_CENTS: i64 = 1_000_000_000_000;

/// Decodes and validates one message of `topic`. Checks `too_large`,
/// `invalid_json` and `schema`; the time and duplicate checks need engine state
/// and happen in the fold.
pub fn decode(topic: Topic, payload: &[u8], max_bytes: usize) -> Result<Event<'_>, Rejection> {
    if payload.len() > max_bytes {
        return Err(Rejection::new(
            Reason::TooLarge,
            format!("message is {} bytes, the limit is {max_bytes}", payload.len()),
        ));
    }
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(Rejection::new(Reason::InvalidJson, "not a JSON object"));
    }
    let text =
        std::str::from_utf8(payload).map_err(|e| Rejection::new(Reason::InvalidJson, format!("not UTF-8: {e}")))?;
    let rejection = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => Rejection::new(Reason::Schema, e.to_string()),
        _ => Rejection::new(Reason::InvalidJson, e.to_string()),
    };
    // One struct per topic: fields of other topics are unknown extra fields
    // here (§1: ignored), and the parser fills only the fields it can use.
    match topic {
        Topic::Accounts => serde_json::from_str::<RawAccount<'_>>(text).map_err(rejection)?.validate(),
        Topic::Usage => serde_json::from_str::<RawUsage<'_>>(text).map_err(rejection)?.validate(),
        Topic::Tickets => serde_json::from_str::<RawTicket<'_>>(text).map_err(rejection)?.validate(),
        Topic::Revenue => serde_json::from_str::<RawRevenue<'_>>(text).map_err(rejection)?.validate(),
    }
}

/// A JSON value as loosely typed as validation needs.
#[derive(Debug, Default)]
enum Scalar<'a> {
    #[default]
    Missing,
    Null,
    Bool,
    Str(Cow<'a, str>),
    UInt(u64),
    NegInt,
    Float(f64),
    Compound,
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool)
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::UInt(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(if v >= 0 { Scalar::UInt(v as u64) } else { Scalar::NegInt })
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Compound)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Compound)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl Scalar<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Scalar::Missing => "missing",
            Scalar::Null => "null",
            Scalar::Bool => "a boolean",
            Scalar::Str(_) => "a string",
            Scalar::UInt(_) | Scalar::NegInt | Scalar::Float(_) => "a number",
            Scalar::Compound => "an array or object",
        }
    }
}

fn some_raw<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<&'a RawValue>, D::Error> {
    <&'a RawValue>::deserialize(d).map(Some)
}

/// A struct of one topic's message fields: the envelope every event has
/// (`event_id`, `ts`, `account_id`), then the topic's own, all loosely typed
/// (`raw`: kept as the literal). Fields of other topics are unknown extra
/// fields (§1: ignored by serde).
macro_rules! raw_message {
    ($(#[$doc:meta])* $name:ident { $($field:ident),* } $(raw $raw:ident)?) => {
        $(#[$doc])*
        #[derive(Deserialize)]
        struct $name<'a> {
            #[serde(default, borrow)]
            event_id: Scalar<'a>,
            #[serde(default, borrow)]
            ts: Scalar<'a>,
            #[serde(default, borrow)]
            account_id: Scalar<'a>,
            $(
                #[serde(default, borrow)]
                $field: Scalar<'a>,
            )*
            $(
                #[serde(default, borrow, deserialize_with = "some_raw")]
                $raw: Option<&'a RawValue>,
            )?
        }
    };
}

raw_message!(
    /// A `cs.accounts` message.
    RawAccount { name, csm_id, segment, region, seats, renewal_date }
);
raw_message!(
    /// A `cs.usage` message.
    RawUsage { user_id, feature, duration_s }
);
raw_message!(
    /// A `cs.tickets` message.
    RawTicket { ticket_id, action, priority, score }
);
raw_message!(
    /// A `cs.revenue` message (`arr` is read from its literal, exactly).
    RawRevenue { kind } raw arr
);

fn schema(field: &str, problem: impl fmt::Display) -> Rejection {
    Rejection::new(Reason::Schema, format!("{field}: {problem}"))
}

fn char_len_within(s: &str, min: usize, max: usize) -> bool {
    // Byte length bounds char length from above, so most strings skip counting.
    if s.len() <= max {
        return s.len() >= min;
    }
    let n = s.chars().count();
    n >= min && n <= max
}

/// A required string of `min..=max` characters.
fn req_str<'a>(field: &str, v: Scalar<'a>, min: usize, max: usize) -> Result<Cow<'a, str>, Rejection> {
    match v {
        Scalar::Str(s) if char_len_within(&s, min, max) => Ok(s),
        Scalar::Str(_) => Err(schema(field, format!("must be {min}..{max} characters"))),
        Scalar::Missing => Err(schema(field, "required")),
        other => Err(schema(field, format!("must be a string, got {}", other.type_name()))),
    }
}

/// An optional string of `min..=max` characters (absent → `None`; `null` is an error).
fn opt_str<'a>(field: &str, v: Scalar<'a>, min: usize, max: usize) -> Result<Option<Cow<'a, str>>, Rejection> {
    match v {
        Scalar::Missing => Ok(None),
        v => req_str(field, v, min, max).map(Some),
    }
}

fn opt_uint(field: &str, v: &Scalar<'_>) -> Result<Option<u64>, Rejection> {
    match v {
        Scalar::Missing => Ok(None),
        Scalar::UInt(n) => Ok(Some(*n)),
        Scalar::NegInt => Err(schema(field, "must be >= 0")),
        Scalar::Float(_) => Err(schema(field, "must be an integer")),
        other => Err(schema(field, format!("must be an integer, got {}", other.type_name()))),
    }
}

/// An event from its envelope fields, checked in this order (§14), and its
/// topic's body, checked after them.
fn event<'a>(
    event_id: Scalar<'a>,
    ts: Scalar<'a>,
    account_id: Scalar<'a>,
    body: impl FnOnce() -> Result<Body<'a>, Rejection>,
) -> Result<Event<'a>, Rejection> {
    let event_id = req_str("event_id", event_id, 1, 128)?;
    let ts = match ts {
        Scalar::Str(s) => parse_rfc3339(&s).ok_or_else(|| schema("ts", "must be an RFC 3339 timestamp with offset"))?,
        Scalar::Missing => return Err(schema("ts", "required")),
        other => return Err(schema("ts", format!("must be a string, got {}", other.type_name()))),
    };
    let account_id = req_str("account_id", account_id, 1, 128)?;
    Ok(Event { event_id, ts, account_id, body: body()? })
}

impl<'a> RawAccount<'a> {
    fn validate(self) -> Result<Event<'a>, Rejection> {
        let RawAccount { event_id, ts, account_id, name, csm_id, segment, region, seats, renewal_date } = self;
        event(event_id, ts, account_id, move || {
            Ok(Body::Account(AccountUpsert {
                name: opt_str("name", name, 0, 256)?,
                csm_id: match csm_id {
                    Scalar::Missing => None,
                    Scalar::Null => Some(None),
                    v => Some(Some(req_str("csm_id", v, 1, 128)?)),
                },
                segment: opt_str("segment", segment, 1, 64)?,
                region: opt_str("region", region, 1, 64)?,
                seats: opt_uint("seats", &seats)?,
                renewal_date: match renewal_date {
                    Scalar::Missing => None,
                    Scalar::Str(s) => {
                        Some(parse_date(&s).ok_or_else(|| schema("renewal_date", "must be a YYYY-MM-DD date"))?)
                    }
                    other => {
                        return Err(schema("renewal_date", format!("must be a string, got {}", other.type_name())));
                    }
                },
            }))
        })
    }
}

impl<'a> RawUsage<'a> {
    fn validate(self) -> Result<Event<'a>, Rejection> {
        let RawUsage { event_id, ts, account_id, user_id, feature, duration_s } = self;
        event(event_id, ts, account_id, move || {
            let user_id = req_str("user_id", user_id, 1, 128)?;
            let feature = req_str("feature", feature, 1, 64)?;
            match duration_s {
                Scalar::Missing | Scalar::UInt(_) => {}
                Scalar::Float(f) if f >= 0.0 => {}
                Scalar::NegInt | Scalar::Float(_) => return Err(schema("duration_s", "must be >= 0")),
                other => {
                    return Err(schema("duration_s", format!("must be a number, got {}", other.type_name())));
                }
            }
            Ok(Body::Usage { user_id, feature })
        })
    }
}

impl<'a> RawTicket<'a> {
    fn validate(self) -> Result<Event<'a>, Rejection> {
        let RawTicket { event_id, ts, account_id, ticket_id, action, priority, score } = self;
        event(event_id, ts, account_id, move || {
            let ticket_id = req_str("ticket_id", ticket_id, 1, 128)?;
            let action_s = req_str("action", action, 1, 64)?;
            let action = TicketAction::parse(&action_s).ok_or_else(|| {
                schema("action", "must be one of opened, first_response, escalated, resolved, reopened, csat")
            })?;
            let priority = match action {
                TicketAction::Opened | TicketAction::Reopened | TicketAction::Escalated => match priority {
                    Scalar::Missing if action == TicketAction::Opened => {
                        return Err(schema("priority", "required on opened"));
                    }
                    Scalar::Missing => None,
                    Scalar::Str(s) => {
                        Some(Priority::parse(&s).ok_or_else(|| schema("priority", "must be one of p1, p2, p3, p4"))?)
                    }
                    other => {
                        return Err(schema("priority", format!("must be a string, got {}", other.type_name())));
                    }
                },
                _ => None,
            };
            let score = if action == TicketAction::Csat {
                match score {
                    Scalar::UInt(n @ 1..=5) => Some(n as u8),
                    Scalar::Missing => return Err(schema("score", "required on csat")),
                    Scalar::UInt(_) | Scalar::NegInt => return Err(schema("score", "must be 1..5")),
                    other => {
                        return Err(schema("score", format!("must be an integer, got {}", other.type_name())));
                    }
                }
            } else {
                None
            };
            Ok(Body::Ticket(TicketEvent { ticket_id, action, priority, score }))
        })
    }
}

impl<'a> RawRevenue<'a> {
    fn validate(self) -> Result<Event<'a>, Rejection> {
        let RawRevenue { event_id, ts, account_id, kind, arr } = self;
        event(event_id, ts, account_id, move || {
            let kind_s = req_str("kind", kind, 1, 64)?;
            let kind = RevenueKind::parse(&kind_s)
                .ok_or_else(|| schema("kind", "must be one of new, renewal, expansion, contraction, churn"))?;
            let arr_cents = if kind == RevenueKind::Churn {
                0
            } else {
                match arr {
                    None => return Err(schema("arr", "required")),
                    Some(raw) => parse_cents(raw.get()).map_err(|p| schema("arr", p))?,
                }
            };
            Ok(Body::Revenue { kind, arr_cents })
        })
    }
}

/// Parses a JSON number literal into exact integer cents: the value must be
/// >= 0, have at most 2 decimal places, and be at most `MAX_ARR_CENTS`.
pub fn parse_cents(lit: &str) -> Result<i64, &'static str> {
    let bytes = lit.as_bytes();
    let first = bytes.first().copied().unwrap_or(b' ');
    if !(first == b'-' || first.is_ascii_digit()) {
        return Err("must be a number");
    }
    let (negative, rest) = match lit.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, lit),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => {
            let e: i64 = rest[i + 1..].trim_start_matches('+').parse().map_err(|_| "must be a number")?;
            (&rest[..i], e)
        }
        None => (rest, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // value = digits × 10^(exp − frac_len); cents = digits × 10^(exp − frac_len + 2).
    let digits: String = int_part.chars().chain(frac_part.chars()).collect();
    let shift = exp.saturating_sub(frac_part.len() as i64).saturating_add(2);
    let significant = digits.trim_start_matches('0');
    let cents_digits: String = if shift >= 0 {
        if significant.is_empty() {
            String::new()
        } else if shift > 20 {
            return Err("must be at most 10000000000");
        } else {
            let mut s = significant.to_string();
            s.extend(std::iter::repeat_n('0', shift as usize));
            s
        }
    } else {
        let cut = (-shift) as usize;
        let (keep, dropped) =
            if cut >= significant.len() { ("", significant) } else { significant.split_at(significant.len() - cut) };
        if dropped.bytes().any(|b| b != b'0') {
            return Err("must have at most 2 decimal places");
        }
        keep.to_string()
    };
    if cents_digits.is_empty() {
        return Ok(0);
    }
    if negative {
        return Err("must be >= 0");
    }
    if cents_digits.len() > 15 {
        return Err("must be at most 10000000000");
    }
    let cents: i64 = cents_digits.parse().map_err(|_| "must be a number")?;
    if cents > MAX_ARR_CENTS {
        return Err("must be at most 10000000000");
    }
    Ok(cents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(topic: Topic, s: &str) -> Rejection {
        decode(topic, s.as_bytes(), 1 << 20).expect_err(s)
    }

    #[test]
    fn decodes_each_topic() {
        let e = decode(
            Topic::Accounts,
            br#"{"event_id":"a-1","ts":"2026-01-05T09:00:00Z","account_id":"acme","name":"Acme Corp","csm_id":"csm-7","segment":"enterprise","region":"emea","seats":250,"renewal_date":"2026-09-30","extra":[1,{"x":2}]}"#,
            1 << 20,
        )
        .unwrap();
        let Body::Account(up) = e.body else { panic!() };
        assert_eq!(up.seats, Some(250));
        assert_eq!(up.csm_id, Some(Some("csm-7".into())));
        let e = decode(
            Topic::Accounts,
            br#"{"event_id":"a","ts":"2026-01-05T09:00:00Z","account_id":"x","csm_id":null}"#,
            999,
        )
        .unwrap();
        assert_eq!(e.body, Body::Account(AccountUpsert { csm_id: Some(None), ..Default::default() }));
        let e = decode(Topic::Usage, br#"{"event_id":"u","ts":"2026-01-05T09:00:00Z","account_id":"x","user_id":"u\n2","feature":"f","duration_s":1.5}"#, 999).unwrap();
        assert_eq!(e.body, Body::Usage { user_id: "u\n2".into(), feature: "f".into() });
        let e = decode(Topic::Tickets, br#"{"event_id":"t","ts":"2026-01-05T09:00:00Z","account_id":"x","ticket_id":"T","action":"first_response","priority":null,"score":"x"}"#, 999).unwrap();
        assert!(matches!(e.body, Body::Ticket(TicketEvent { priority: None, score: None, .. })));
        let e = decode(
            Topic::Revenue,
            br#"{"event_id":"r","ts":"2026-01-05T09:00:00Z","account_id":"x","kind":"churn","arr":"ignored"}"#,
            999,
        )
        .unwrap();
        assert_eq!(e.body, Body::Revenue { kind: RevenueKind::Churn, arr_cents: 0 });
    }

    #[test]
    fn rejections_name_the_reason_and_field() {
        let base = r#""event_id":"e","ts":"2026-01-05T09:00:00Z","account_id":"x""#;
        assert_eq!(decode(Topic::Usage, b"{}", 1).unwrap_err().reason, Reason::TooLarge);
        assert_eq!(reject(Topic::Usage, "[1]").reason, Reason::InvalidJson);
        assert_eq!(reject(Topic::Usage, "{\"a\":").reason, Reason::InvalidJson);
        assert_eq!(reject(Topic::Usage, "{} x").reason, Reason::InvalidJson);
        assert_eq!(decode(Topic::Usage, b"{\"a\":\"\xff\"}", 99).unwrap_err().reason, Reason::InvalidJson);
        let r = reject(Topic::Usage, &format!("{{{base},\"feature\":\"f\"}}"));
        assert_eq!((r.reason, r.detail.as_str()), (Reason::Schema, "user_id: required"));
        let r = reject(Topic::Usage, r#"{"event_id":null,"ts":"x"}"#);
        assert!(r.detail.starts_with("event_id:"), "{r}");
        let r = reject(Topic::Usage, r#"{"event_id":"e","ts":"2026-01-05","account_id":"x"}"#);
        assert!(r.detail.starts_with("ts:"), "{r}");
        let r = reject(Topic::Accounts, &format!("{{{base},\"seats\":250.0}}"));
        assert_eq!(r.detail, "seats: must be an integer");
        let r = reject(Topic::Accounts, &format!("{{{base},\"seats\":true}}"));
        assert!(r.detail.starts_with("seats:"), "{r}");
        let r = reject(Topic::Accounts, &format!("{{{base},\"name\":null}}"));
        assert!(r.detail.starts_with("name:"), "{r}");
        let r = reject(Topic::Tickets, &format!("{{{base},\"ticket_id\":\"T\",\"action\":\"opened\"}}"));
        assert_eq!(r.detail, "priority: required on opened");
        let r = reject(Topic::Tickets, &format!("{{{base},\"ticket_id\":\"T\",\"action\":\"csat\",\"score\":6}}"));
        assert!(r.detail.starts_with("score:"), "{r}");
        let r = reject(Topic::Tickets, &format!("{{{base},\"ticket_id\":\"T\",\"action\":\"closed\"}}"));
        assert!(r.detail.starts_with("action:"), "{r}");
        let r = reject(Topic::Revenue, &format!("{{{base},\"kind\":\"new\",\"arr\":1.005}}"));
        assert_eq!(r.detail, "arr: must have at most 2 decimal places");
        let r = reject(Topic::Revenue, &format!("{{{base},\"kind\":\"new\",\"arr\":null}}"));
        assert!(r.detail.starts_with("arr:"), "{r}");
        let r = reject(Topic::Usage, &format!("{{{base},\"ts\":\"2026-01-05T09:00:00Z\"}}"));
        assert_eq!(r.reason, Reason::Schema, "duplicate keys are a schema error: {r}");
        // Another topic's keys are unknown extra fields here: ignored, even
        // twice or mistyped.
        let usage = format!("{{{base},\"user_id\":\"u\",\"feature\":\"f\",\"seats\":\"x\",\"name\":1,\"name\":2}}");
        assert!(decode(Topic::Usage, usage.as_bytes(), 1 << 20).is_ok(), "{usage}");
        let long = "x".repeat(129);
        let r = reject(Topic::Usage, &format!("{{\"event_id\":\"{long}\"}}"));
        assert!(r.detail.starts_with("event_id:"), "{r}");
        // 128 multi-byte characters are fine.
        let wide = "é".repeat(128);
        let ok = format!(
            "{{\"event_id\":\"{wide}\",\"ts\":\"2026-01-05T09:00:00Z\",\"account_id\":\"x\",\"user_id\":\"u\",\"feature\":\"f\"}}"
        );
        assert!(decode(Topic::Usage, ok.as_bytes(), 1 << 20).is_ok());
    }

    #[test]
    fn cents_are_exact() {
        assert_eq!(parse_cents("150000.00"), Ok(15_000_000));
        assert_eq!(parse_cents("1.10"), Ok(110));
        assert_eq!(parse_cents("1.100"), Ok(110));
        assert_eq!(parse_cents("1e2"), Ok(10_000));
        assert_eq!(parse_cents("1.5E+3"), Ok(150_000));
        assert_eq!(parse_cents("12345e-2"), Ok(12_345));
        assert_eq!(parse_cents("0.01"), Ok(1));
        assert_eq!(parse_cents("-0"), Ok(0));
        assert_eq!(parse_cents("0"), Ok(0));
        assert!(parse_cents("1.005").is_err());
        assert!(parse_cents("0.001").is_err());
        assert!(parse_cents("-1").is_err());
        assert!(parse_cents("1e400").is_err());
        assert!(parse_cents("10000000000.01").is_err());
        assert_eq!(parse_cents("10000000000"), Ok(MAX_ARR_CENTS));
        assert!(parse_cents("\"5\"").is_err());
        assert!(parse_cents("true").is_err());
    }
}
