//! Fuzzing the decoder and the fold for a bounded time (SPEC §9: nothing an
//! input topic carries may stop or corrupt the engine).
//!
//! Inputs come from three generators: arbitrary bytes; arbitrary JSON
//! values; and the valid examples of `schemas/examples` mutated (a field
//! replaced by an arbitrary value or removed, a key repeated, bytes spliced
//! in, the text cut short). Each input is decoded twice (the result must be
//! the same: no hidden state) and folded into one long-lived engine on a
//! random topic, partition and offset; every few hundred inputs the
//! engine's views are rendered. A panic anywhere fails the test and prints
//! the input. It runs for `CSPULSE_FUZZ_SECONDS` (default 20) and reports
//! how many inputs it tried.

use std::path::Path;
use std::time::{Duration, Instant};

use cspulse::event::Topic;
use cspulse::event::decode::decode;
use cspulse::state::view::Channel;
use cspulse::state::{Engine, Input, StateConfig};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRng, TestRunner};
use serde_json::Value;

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(Value::from(1e300)),
        Just(Value::from(u64::MAX)),
        ".{0,200}".prop_map(Value::String),
        Just(Value::String("2026-11-02T09:00:00Z".into())),
        Just(Value::String("9999-12-31T23:59:60+14:00".into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The valid examples of every input schema, with their topics.
fn seeds() -> Vec<(Topic, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/examples");
    let mut out = Vec::new();
    for (name, topic) in
        [("account", Topic::Accounts), ("usage", Topic::Usage), ("ticket", Topic::Tickets), ("revenue", Topic::Revenue)]
    {
        for entry in std::fs::read_dir(dir.join(name).join("valid")).expect("examples") {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            out.push((topic, serde_json::from_str(&text).unwrap()));
        }
    }
    out
}

/// A mutation of a valid event's text.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, Value),
    Remove(usize),
    RepeatKey(usize, Value),
    Splice(usize, Vec<u8>),
    Cut(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any_json()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), any_json()).prop_map(|(i, v)| Mutation::RepeatKey(i, v)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Splice(i, b)),
        any::<usize>().prop_map(Mutation::Cut),
    ]
}

fn mutate(seed: &Value, mutations: &[Mutation]) -> Vec<u8> {
    let mut object = seed.as_object().cloned().unwrap_or_default();
    let mut repeated = Vec::new();
    let mut bytes_ops = Vec::new();
    for m in mutations {
        let keys: Vec<String> = object.keys().cloned().collect();
        let key = |i: &usize| (!keys.is_empty()).then(|| keys[i % keys.len()].clone());
        match m {
            Mutation::Replace(i, v) => {
                if let Some(k) = key(i) {
                    object.insert(k, v.clone());
                }
            }
            Mutation::Remove(i) => {
                if let Some(k) = key(i) {
                    object.remove(&k);
                }
            }
            Mutation::RepeatKey(i, v) => {
                if let Some(k) = key(i) {
                    repeated.push((k, v.clone()));
                }
            }
            other => bytes_ops.push(other.clone()),
        }
    }
    let mut text = serde_json::to_string(&Value::Object(object)).unwrap();
    for (k, v) in repeated {
        text.insert_str(1, &format!("{}:{},", Value::String(k), v));
    }
    let mut bytes = text.into_bytes();
    for op in bytes_ops {
        match op {
            Mutation::Splice(at, b) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, b);
            }
            Mutation::Cut(at) => bytes.truncate(at % (bytes.len() + 1)),
            _ => unreachable!("applied to the object"),
        }
    }
    bytes
}

#[derive(Debug, Clone)]
enum Case {
    Bytes(Vec<u8>),
    Json(Value),
    Mutated(usize, Vec<Mutation>),
}

fn case(seeds: usize) -> impl Strategy<Value = Case> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512).prop_map(Case::Bytes),
        1 => any_json().prop_map(Case::Json),
        4 => (0..seeds, prop::collection::vec(mutation(), 1..4)).prop_map(|(s, m)| Case::Mutated(s, m)),
    ]
}

#[test]
fn no_input_crashes_or_confuses_the_decoder_or_the_fold() {
    let seconds: u64 = std::env::var("CSPULSE_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let seeds = seeds();
    assert!(seeds.len() >= 8, "the schema examples are the seeds");
    let strategy = (case(seeds.len()), 0..4usize, 0..4i32);
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let mut engine = Engine::new(StateConfig::default());
    let (mut tried, mut accepted) = (0u64, 0u64);
    while Instant::now() < deadline {
        let (case, topic, partition) = strategy.new_tree(&mut runner).expect("a case").current();
        let (topic, payload) = match &case {
            Case::Bytes(b) => (Topic::ALL[topic], b.clone()),
            Case::Json(v) => (Topic::ALL[topic], serde_json::to_vec(v).unwrap()),
            Case::Mutated(s, m) => (seeds[*s].0, mutate(&seeds[*s].1, m)),
        };
        let shown = || format!("{case:?} on {topic:?}: {:?}", String::from_utf8_lossy(&payload));
        let first = std::panic::catch_unwind(|| decode(topic, &payload, 1 << 20).map_err(|r| r.reason));
        let first = first.unwrap_or_else(|_| panic!("decode panicked on {}", shown()));
        let again = decode(topic, &payload, 1 << 20).map_err(|r| r.reason);
        assert_eq!(first, again, "decoding is deterministic: {}", shown());
        accepted += u64::from(first.is_ok());
        let input =
            Input { topic, partition, offset: tried as i64, payload: &payload, wall: cspulse::time::wall_now() };
        let folded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.fold(&input);
        }));
        assert!(folded.is_ok(), "the fold panicked on {}", shown());
        tried += 1;
        if tried % 500 == 0 {
            for channel in ["executive", "manager", "analyst"] {
                let view = engine.channel_view(&Channel::parse(channel).unwrap());
                assert!(view.is_object(), "{channel} renders");
            }
            engine.take_alerts();
        }
    }
    println!("fuzzed {tried} inputs in {seconds} s ({accepted} accepted)");
    assert!(tried > 1000, "the fuzzer made progress: {tried}");
}
