//! The JSON Schemas in `schemas/` (SPEC §1, §5.3, §6.3, §9), checked against
//! the engine: every schema compiles (draft 2020-12, formats asserted); every
//! example under `schemas/examples/<name>/{valid,invalid}` is judged as its
//! directory says; for the four input topics the decoder judges every example,
//! and sweeps of generated timestamps, dates, numbers and strings, exactly as
//! the schema does; and the engine's own dead-letter records fit their schema.
//! A schema that accepts what the decoder rejects, or the reverse, is a broken
//! contract for every producer that validates against it. See schemas/README.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use cspulse::event::Topic;
use cspulse::event::decode::{Reason, Rejection, decode};
use cspulse::ingest::dead_letter_record;
use jsonschema::paths::{LazyLocation, Location};
use jsonschema::{Draft, Keyword, Resource, ValidationError, ValidationOptions, Validator};
use serde_json::{Map, Value};

/// Every schema, by the name used for its file and its examples directory.
const SCHEMAS: [&str; 18] = [
    "account",
    "usage",
    "ticket",
    "revenue",
    "deadletter",
    "alert",
    "ws-client",
    "ws-server",
    "account-history",
    "channel-history",
    "compare",
    "targets",
    "audit",
    "deliveries",
    "webhook",
    "accounts",
    "views",
    "distribution",
];

const MAX_BYTES: usize = 1 << 20;

fn topic_of(name: &str) -> Option<Topic> {
    match name {
        "account" => Some(Topic::Accounts),
        "usage" => Some(Topic::Usage),
        "ticket" => Some(Topic::Tickets),
        "revenue" => Some(Topic::Revenue),
        _ => None,
    }
}

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The `*.json` files of a directory, sorted (an absent directory has none).
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().expect("a file name").to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------
// The two extension keywords (schemas/README.md). Standard JSON Schema cannot
// tell `250` from `250.0`, and no validator working on binary floating point
// evaluates `multipleOf: 0.01` reliably (jsonschema 0.33 rejects 2.01), so the
// schemas state those rules with these keywords and this is their reference
// implementation.

/// `"x-cspulse-integer-literal": true`: a number must be written as a JSON
/// integer (no fraction, no exponent), as the decoder requires of `seats` and
/// `score`. serde_json keeps integer literals as u64/i64 and everything else
/// (`250.0`, `2.5e2`, `-0`, integers beyond 64 bits) as f64.
struct IntegerLiteral {
    location: Location,
}

impl Keyword for IntegerLiteral {
    fn validate<'i>(&self, instance: &'i Value, location: &LazyLocation) -> Result<(), ValidationError<'i>> {
        if self.is_valid(instance) {
            return Ok(());
        }
        Err(ValidationError::custom(
            self.location.clone(),
            location.into(),
            instance,
            "must be written as a JSON integer (no fraction or exponent)",
        ))
    }

    fn is_valid(&self, instance: &Value) -> bool {
        match instance {
            Value::Number(n) => n.is_u64() || n.is_i64(),
            _ => true,
        }
    }
}

#[allow(clippy::result_large_err)] // the signature `with_keyword` requires
fn integer_literal_keyword<'a>(
    _: &'a Map<String, Value>,
    value: &'a Value,
    location: Location,
) -> Result<Box<dyn Keyword>, ValidationError<'a>> {
    if value != &Value::Bool(true) {
        return Err(ValidationError::custom(
            Location::new(),
            location,
            value,
            "x-cspulse-integer-literal must be true",
        ));
    }
    Ok(Box::new(IntegerLiteral { location }))
}

/// `"x-cspulse-max-decimals": n`: the number's decimal value has at most `n`
/// decimal places (`1.10`, `1.100` and `1e2` have at most 2; `1.005` has 3).
/// Judged on the number's shortest round-trip decimal text, which is the
/// literal itself for any literal of at most 15 significant digits — every
/// money amount up to 10^10 with cents included.
struct MaxDecimals {
    max: u64,
    location: Location,
}

impl Keyword for MaxDecimals {
    fn validate<'i>(&self, instance: &'i Value, location: &LazyLocation) -> Result<(), ValidationError<'i>> {
        if self.is_valid(instance) {
            return Ok(());
        }
        Err(ValidationError::custom(
            self.location.clone(),
            location.into(),
            instance,
            format!("must have at most {} decimal places", self.max),
        ))
    }

    fn is_valid(&self, instance: &Value) -> bool {
        match instance {
            Value::Number(n) => decimal_places(&n.to_string()).is_some_and(|d| d <= self.max),
            _ => true,
        }
    }
}

#[allow(clippy::result_large_err)] // the signature `with_keyword` requires
fn max_decimals_keyword<'a>(
    _: &'a Map<String, Value>,
    value: &'a Value,
    location: Location,
) -> Result<Box<dyn Keyword>, ValidationError<'a>> {
    match value.as_u64() {
        Some(max) => Ok(Box::new(MaxDecimals { max, location })),
        None => Err(ValidationError::custom(
            Location::new(),
            location,
            value,
            "x-cspulse-max-decimals must be a non-negative integer",
        )),
    }
}

/// Decimal places of the value of a JSON number literal: `1.10` → 1, `1e2` → 0,
/// `12345e-2` → 2, `1.5e-7` → 8. `None` if the text is not a number.
fn decimal_places(literal: &str) -> Option<u64> {
    let unsigned = literal.strip_prefix('-').unwrap_or(literal);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], unsigned[i + 1..].parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int_part.chars().chain(frac_part.chars()).collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // value = digits × 10^-scale; trailing zeros of the digits do not count.
    let significant = digits.trim_end_matches('0');
    if significant.trim_start_matches('0').is_empty() {
        return Some(0);
    }
    let trailing_zeros = (digits.len() - significant.len()) as i64;
    let scale = frac_part.len() as i64 - exponent - trailing_zeros;
    Some(scale.max(0) as u64)
}

#[test]
fn decimal_places_of_literals() {
    let cases = [
        ("0", 0),
        ("-0.0", 0),
        ("150000.00", 0),
        ("1.10", 1),
        ("1.100", 1),
        ("1.005", 3),
        ("1e2", 0),
        ("1.5E+3", 0),
        ("12345e-2", 2),
        ("100e-4", 2),
        ("1.5e-7", 8),
        ("2.01", 2),
        ("1e21", 0),
    ];
    for (literal, places) in cases {
        assert_eq!(decimal_places(literal), Some(places), "{literal}");
    }
    assert_eq!(decimal_places("true"), None);
}

// ---------------------------------------------------------------------------

/// Validation options as cspulse uses them: draft 2020-12, `format` asserted,
/// unknown formats an error, the extension keywords, and every schema
/// registered under its `$id` so cross-schema `$ref`s resolve offline.
fn options(schemas: &BTreeMap<&str, Value>) -> ValidationOptions {
    let resources = schemas.values().map(|s| {
        let id = s["$id"].as_str().expect("$id").to_owned();
        (id, Resource::from_contents(s.clone()).expect("a 2020-12 resource"))
    });
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false)
        .with_keyword("x-cspulse-integer-literal", integer_literal_keyword)
        .with_keyword("x-cspulse-max-decimals", max_decimals_keyword)
        .with_resources(resources)
}

fn load_schemas() -> BTreeMap<&'static str, Value> {
    SCHEMAS.iter().map(|&name| (name, read_json(&schemas_dir().join(format!("{name}.schema.json"))))).collect()
}

fn compile_all() -> BTreeMap<&'static str, Validator> {
    let schemas = load_schemas();
    let options = options(&schemas);
    schemas
        .iter()
        .map(|(&name, schema)| {
            let validator = options
                .build(schema)
                .unwrap_or_else(|e| panic!("{name}.schema.json does not compile: {e} at {}", e.instance_path));
            (name, validator)
        })
        .collect()
}

fn errors_of(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at `{}` (schema {})", e, e.instance_path, e.schema_path))
        .collect()
}

/// Whether a schema error is about `field` of the event: at `/field`, or the
/// object missing `field`.
fn error_is_about(error: &ValidationError<'_>, field: &str) -> bool {
    let path = error.instance_path.as_str();
    let at = format!("/{field}");
    if path == at || path.starts_with(&format!("{at}/")) {
        return true;
    }
    path.is_empty()
        && matches!(&error.kind, jsonschema::error::ValidationErrorKind::Required { property } if property == field)
}

#[test]
fn every_schema_compiles_and_is_labelled() {
    let schemas = load_schemas();
    for (name, schema) in &schemas {
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema", "{name}");
        assert_eq!(schema["$id"], format!("https://cspulse.dev/schemas/{name}.schema.json"), "{name}");
        for key in ["title", "description"] {
            assert!(schema[key].as_str().is_some_and(|s| !s.is_empty()), "{name}: {key}");
        }
        assert!(jsonschema::meta::is_valid(schema), "{name}.schema.json is not a valid 2020-12 schema");
    }
    let compiled = compile_all();
    // Each schema's own `examples` are valid instances of it.
    for (name, schema) in &schemas {
        for example in schema["examples"].as_array().into_iter().flatten() {
            let errors = errors_of(&compiled[name], example);
            assert!(errors.is_empty(), "{name}: its `examples` entry {example} fails: {errors:#?}");
        }
    }
    // Nothing else lies in schemas/ unaccounted for.
    let stray: Vec<String> = json_files(&schemas_dir())
        .iter()
        .map(|p| file_name(p))
        .filter(|f| !SCHEMAS.iter().any(|n| *f == format!("{n}.schema.json")))
        .collect();
    assert!(stray.is_empty(), "schema files not covered by this test: {stray:?}");
}

/// `schemas/examples/<name>/expected.json`: invalid file name → the field the
/// decoder's `detail` starts with, or `null` for an `invalid_json` rejection.
fn expected_fields(name: &str) -> BTreeMap<String, Option<String>> {
    let path = schemas_dir().join("examples").join(name).join("expected.json");
    let Value::Object(map) = read_json(&path) else { panic!("{} must be an object", path.display()) };
    map.into_iter()
        .map(|(file, field)| {
            let field = match field {
                Value::String(s) => Some(s),
                Value::Null => None,
                other => panic!("{}: {file} → {other} (want a field name or null)", path.display()),
            };
            (file, field)
        })
        .collect()
}

#[test]
fn examples_are_judged_as_filed_by_schema_and_decoder() {
    let compiled = compile_all();
    let mut failures = String::new();
    let mut fail = |msg: String| {
        failures.push_str("\n- ");
        failures.push_str(&msg);
    };
    let examples = schemas_dir().join("examples");
    let mut dirs: Vec<String> = fs::read_dir(&examples)
        .expect("schemas/examples")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_dir())
        .map(|p| file_name(&p))
        .collect();
    dirs.sort();
    let mut names: Vec<String> = SCHEMAS.iter().map(|s| s.to_string()).collect();
    names.sort();
    assert_eq!(dirs, names, "schemas/examples must hold one directory per schema");
    for name in SCHEMAS {
        let validator = &compiled[name];
        let valid = json_files(&examples.join(name).join("valid"));
        let invalid = json_files(&examples.join(name).join("invalid"));
        assert!(valid.len() >= 3, "{name}: want several valid examples, found {}", valid.len());
        assert!(invalid.len() >= 3, "{name}: want several invalid examples, found {}", invalid.len());
        let topic = topic_of(name);
        let expected = topic.map(|_| expected_fields(name));
        if let Some(expected) = &expected {
            let filed: Vec<String> = invalid.iter().map(|p| file_name(p)).collect();
            let listed: Vec<String> = expected.keys().cloned().collect();
            assert_eq!(listed, filed, "{name}/expected.json must list exactly the invalid examples");
        }

        for path in &valid {
            let shown = format!("{name}/valid/{}", file_name(path));
            let instance = read_json(path);
            let errors = errors_of(validator, &instance);
            if !errors.is_empty() {
                fail(format!("{shown}: schema rejects it: {errors:?}"));
            }
            if let Some(topic) = topic {
                let bytes = fs::read(path).expect("readable");
                if let Err(rejection) = decode(topic, &bytes, MAX_BYTES) {
                    fail(format!("{shown}: decoder rejects it: {rejection}"));
                }
            }
        }

        for path in &invalid {
            let file = file_name(path);
            let shown = format!("{name}/invalid/{file}");
            let instance = read_json(path);
            let errors: Vec<ValidationError<'_>> = validator.iter_errors(&instance).collect();
            if errors.is_empty() {
                fail(format!("{shown}: schema accepts it"));
            }
            let (Some(topic), Some(expected)) = (topic, &expected) else {
                continue;
            };
            let field = &expected[&file];
            if let Some(field) = field {
                // The schema must reject it for the filed reason and no other, so
                // each example pins down one rule.
                let stray: Vec<String> = errors
                    .iter()
                    .filter(|e| !error_is_about(e, field))
                    .map(|e| format!("{e} at `{}`", e.instance_path))
                    .collect();
                if !stray.is_empty() {
                    fail(format!("{shown}: schema errors not about `{field}`: {stray:?}"));
                }
            }
            let bytes = fs::read(path).expect("readable");
            match (decode(topic, &bytes, MAX_BYTES), field) {
                (Ok(_), _) => fail(format!("{shown}: decoder accepts it")),
                (Err(r), Some(field)) => {
                    if r.reason != Reason::Schema || !r.detail.starts_with(&format!("{field}:")) {
                        fail(format!("{shown}: want `schema` / `{field}: …`, decoder says {r}"));
                    }
                }
                (Err(r), None) => {
                    if r.reason != Reason::InvalidJson {
                        fail(format!("{shown}: want `invalid_json`, decoder says {r}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "schema examples disagree:{failures}");
}

/// The records the engine itself writes to `cs.deadletter` are instances of
/// the dead-letter schema: text and binary payloads, over the 64 KiB cut, with
/// and without a key, for every reason.
#[test]
fn engine_dead_letter_records_match_the_schema() {
    let compiled = compile_all();
    let validator = &compiled["deadletter"];
    let long_text = "\u{e9}".repeat(40_000); // 80 000 bytes of 2-byte characters
    let binary: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let payloads: [&[u8]; 5] = [b"{\"seats\":250.0}", b"[1]", b"{\"a\":\"\xff\"}", long_text.as_bytes(), &binary];
    for reason in Reason::ALL {
        let rejection = Rejection::new(reason, "seats: must be an integer");
        for payload in payloads {
            for key in [None, Some(&b"acme"[..]), Some(&b"\xfe\xff"[..])] {
                let record = dead_letter_record(&rejection, "cs.accounts", 3, 1842, key, payload);
                let errors = errors_of(validator, &record);
                assert!(errors.is_empty(), "{reason:?}, {} payload bytes, key {key:?}: {errors:#?}", payload.len());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Sweeps: generated values of the fields whose rules are subtle, judged by the
// schema and by the decoder, which must agree on every one.

struct Sweep {
    topic: Topic,
    validator: Validator,
    checked: usize,
    disagreements: Vec<String>,
}

impl Sweep {
    fn new(name: &str) -> Self {
        let mut compiled = compile_all();
        Sweep {
            topic: topic_of(name).expect("an input schema"),
            validator: compiled.remove(name).expect("compiled"),
            checked: 0,
            disagreements: Vec::new(),
        }
    }

    /// Judges one event given as JSON text.
    fn check(&mut self, event: &str) {
        let instance: Value = serde_json::from_str(event).unwrap_or_else(|e| panic!("{event}: {e}"));
        let schema_ok = self.validator.is_valid(&instance);
        let decoded = decode(self.topic, event.as_bytes(), MAX_BYTES);
        self.checked += 1;
        if schema_ok != decoded.is_ok() {
            let decoder = match decoded {
                Ok(_) => "accepts".to_owned(),
                Err(r) => format!("rejects ({r})"),
            };
            let schema = if schema_ok { "accepts" } else { "rejects" };
            self.disagreements.push(format!("{event}: schema {schema}, decoder {decoder}"));
        }
    }

    fn finish(self, what: &str, min_checked: usize) {
        assert!(self.checked >= min_checked, "{what}: only {} cases", self.checked);
        let mut report = String::new();
        for d in self.disagreements.iter().take(25) {
            let _ = write!(report, "\n- {d}");
        }
        assert!(
            self.disagreements.is_empty(),
            "{what}: schema and decoder disagree on {} of {} cases:{report}",
            self.disagreements.len(),
            self.checked
        );
    }
}

const COMMON: &str = r#""event_id":"e-1","account_id":"acme""#;

#[test]
fn timestamps_agree_with_the_decoder() {
    let mut sweep = Sweep::new("usage");
    let years = ["0000", "1969", "2000", "2024", "2026", "2100", "9999"];
    let days = ["00", "01", "28", "29", "30", "31", "32"];
    let times = [
        "00:00:00",
        "23:59:59",
        "23:59:60",
        "23:59:60.5",
        "00:59:60",
        "22:59:60",
        "12:34:60",
        "23:58:60",
        "24:00:00",
        "23:60:00",
        "23:59:61",
        "12:30:45.123456789123",
        "12:30:45.",
        "12:30:45,5",
        "1:00:00",
    ];
    let offsets = [
        "Z", "z", "+00:00", "-00:00", "+01:00", "-01:00", "+00:01", "-00:01", "+23:59", "-23:59", "+24:00", "+01:60",
        "+0100", "", "+1:00", "Z ",
    ];
    // Separators other than T/t are left out: the decoder accepts any single
    // byte there (see the `ts-space-separator` examples).
    for year in years {
        for month in 0..=13 {
            for day in days {
                for time in times {
                    for offset in offsets {
                        for sep in ["T", "t"] {
                            let ts = format!("{year}-{month:02}-{day}{sep}{time}{offset}");
                            sweep.check(&format!(r#"{{{COMMON},"ts":"{ts}","user_id":"u","feature":"f"}}"#));
                        }
                    }
                }
            }
        }
    }
    sweep.finish("ts", 100_000);
}

#[test]
fn renewal_dates_agree_with_the_decoder() {
    let mut sweep = Sweep::new("account");
    for year in ["0000", "0001", "1900", "2000", "2023", "2024", "2100", "2400", "9999"] {
        for month in 0..=13 {
            for day in 0..=32 {
                sweep.check(&format!(
                    r#"{{{COMMON},"ts":"2026-01-05T09:00:00Z","renewal_date":"{year}-{month:02}-{day:02}"}}"#
                ));
            }
        }
    }
    for odd in [
        "2026-1-05",
        "2026-01-5",
        "+026-01-05",
        "2026/01/05",
        "2026-01-05T00:00:00Z",
        " 2026-01-05",
        "2026-01-05 ",
        "２０２６-01-05",
        "2026-01-0\u{e9}",
        "20260105",
        "",
        "-2026-01-05",
    ] {
        sweep.check(&format!(r#"{{{COMMON},"ts":"2026-01-05T09:00:00Z","renewal_date":"{odd}"}}"#));
    }
    sweep.finish("renewal_date", 4_000);
}

/// Number literals: `arr` with at most 2 decimals in [0, 10^10], written many
/// ways, and near misses.
#[test]
fn arr_amounts_agree_with_the_decoder() {
    let mut sweep = Sweep::new("revenue");
    let mut cents: Vec<u64> = vec![
        0,
        1,
        7,
        10,
        99,
        100,
        110,
        201,
        402,
        804,
        813,
        1601,
        1000,
        15_000_000,
        999_999_999_999,
        1_000_000_000_000,
        1_000_000_000_001,
        1_000_000_000_100,
    ];
    // xorshift: deterministic spread over every magnitude up to the limit.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..4000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cents.push(x % 10u64.pow(1 + (i % 13)));
    }
    for c in cents {
        let (int, frac) = (c / 100, c % 100);
        for literal in [
            format!("{int}.{frac:02}"),
            format!("{int}.{frac:02}0"),
            format!("{int}.{frac:02}1"),
            format!("{int}.{frac:02}9"),
            format!("{c}e-2"),
            format!("{c}0E-3"),
            format!("{c}1e-3"),
            format!("{int}.{frac:02}e0"),
            format!("{c}"),
            format!("{c}e2"),
            format!("-{int}.{frac:02}"),
        ] {
            if serde_json::from_str::<Value>(&literal).is_err() {
                continue; // `00e-2` and the like: not JSON at all
            }
            sweep.check(&format!(r#"{{{COMMON},"ts":"2026-01-05T09:00:00Z","kind":"renewal","arr":{literal}}}"#));
        }
    }
    for literal in [
        "-0",
        "-0.0",
        "0e5",
        "0.0e-9",
        "1e10",
        "1.0000000001e10",
        "1e11",
        "10000000000.00",
        "10000000000.01",
        "9999999999.99",
        "0.001",
        "0.005",
        "1.5E+3",
        "12345e-2",
        "\"1.00\"",
        "null",
        "true",
        "[1]",
        "{}",
    ] {
        sweep.check(&format!(r#"{{{COMMON},"ts":"2026-01-05T09:00:00Z","kind":"new","arr":{literal}}}"#));
        sweep.check(&format!(r#"{{{COMMON},"ts":"2026-01-05T09:00:00Z","kind":"churn","arr":{literal}}}"#));
    }
    sweep.finish("arr", 40_000);
}

/// Integer fields must be JSON integers: `250.0` and `2.5e2` are not.
#[test]
fn integer_fields_agree_with_the_decoder() {
    let literals = [
        "0",
        "1",
        "3",
        "5",
        "6",
        "250",
        "-1",
        "-0",
        "250.0",
        "2.5e2",
        "1e3",
        "0.5",
        "3.0",
        "3e0",
        "9223372036854775807",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "\"250\"",
        "true",
        "null",
        "[]",
        "{}",
    ];
    let mut seats = Sweep::new("account");
    let mut score = Sweep::new("ticket");
    let mut duration = Sweep::new("usage");
    for literal in literals {
        seats.check(&format!(r#"{{{COMMON},"ts":"2026-01-05T09:00:00Z","seats":{literal}}}"#));
        score.check(&format!(
            r#"{{{COMMON},"ts":"2026-01-05T09:00:00Z","ticket_id":"T-1","action":"csat","score":{literal}}}"#
        ));
        score.check(&format!(
            r#"{{{COMMON},"ts":"2026-01-05T09:00:00Z","ticket_id":"T-1","action":"resolved","score":{literal}}}"#
        ));
        duration.check(&format!(
            r#"{{{COMMON},"ts":"2026-01-05T09:00:00Z","user_id":"u","feature":"f","duration_s":{literal}}}"#
        ));
    }
    seats.finish("seats", literals.len());
    duration.finish("duration_s", literals.len());
    score.finish("score", 2 * literals.len());
}

/// Text fields: lengths count Unicode code points, and `null` is only allowed
/// for `csm_id`.
#[test]
fn text_fields_agree_with_the_decoder() {
    let mut account = Sweep::new("account");
    let mut ticket = Sweep::new("ticket");
    let mut usage = Sweep::new("usage");
    for (field, limit) in [("name", 256), ("csm_id", 128), ("segment", 64), ("region", 64)] {
        for n in [0, 1, limit - 1, limit, limit + 1] {
            for unit in ["x", "\u{e9}", "\u{1F600}", "\\n"] {
                let text = unit.repeat(n);
                account.check(&format!(r#"{{{COMMON},"ts":"2026-01-05T09:00:00Z","{field}":"{text}"}}"#));
            }
        }
        for other in ["null", "1", "true", "[]", "{}"] {
            account.check(&format!(r#"{{{COMMON},"ts":"2026-01-05T09:00:00Z","{field}":{other}}}"#));
        }
    }
    for (field, limit) in [("event_id", 128), ("account_id", 128), ("user_id", 128), ("feature", 64)] {
        for n in [0, 1, limit, limit + 1] {
            for unit in ["x", "\u{1F600}"] {
                let text = unit.repeat(n);
                let mut event: Map<String, Value> = serde_json::from_str(
                    r#"{"event_id":"e","ts":"2026-01-05T09:00:00Z","account_id":"a","user_id":"u","feature":"f"}"#,
                )
                .expect("json");
                event.insert(field.to_owned(), Value::String(text));
                usage.check(&Value::Object(event).to_string());
            }
        }
    }
    for action in ["opened", "first_response", "escalated", "resolved", "reopened", "csat", "closed", "Opened", ""] {
        for priority in [None, Some("\"p1\""), Some("\"p4\""), Some("\"p5\""), Some("\"P1\""), Some("null"), Some("1")]
        {
            let priority = priority.map_or(String::new(), |p| format!(r#","priority":{p}"#));
            ticket.check(&format!(
                r#"{{{COMMON},"ts":"2026-01-05T09:00:00Z","ticket_id":"T-1","action":"{action}","score":4{priority}}}"#
            ));
        }
    }
    account.finish("account text", 100);
    ticket.finish("ticket priority", 50);
    usage.finish("usage ids", 30);
}
