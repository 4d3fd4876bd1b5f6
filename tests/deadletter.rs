//! Every bad-input class of SPEC §9 lands in the dead-letter topic with its
//! reason and detail, duplicates are counted, and the engine keeps going.

mod common;

use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::auth::Role;
use cspulse::time::{MICROS_PER_MIN, days, format_rfc3339, wall_now};
use serde_json::{Value, json};

/// The reason and the start of the detail a dead letter must carry.
type Expected = (&'static str, &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_messages_are_dead_lettered_and_the_engine_keeps_going() {
    let (_cluster, mut config) = cluster_and_config();
    config.kafka.max_message_bytes = 2048;
    // One account per partition: a second one is over the limit (§18).
    config.limits.max_accounts_per_partition = 1;
    let app = App::start(&config).await.expect("engine starts");
    let p = producer(&config.kafka.brokers);
    let now = wall_now() - 60 * MICROS_PER_MIN;
    let ts = |t| format_rfc3339(t);
    let usage = |id: &str, t: i64| {
        serde_json::to_vec(
            &json!({"event_id": id, "ts": ts(t), "account_id": "acme", "user_id": "u1", "feature": "api"}),
        )
        .unwrap()
    };
    let big = serde_json::to_vec(
        &json!({"event_id":"big","ts":ts(now),"account_id":"acme","user_id":"u","feature":"f","pad":"x".repeat(3000)}),
    )
    .unwrap();
    // (payload, expected reason, expected detail prefix); None = accepted or duplicate.
    let cases: Vec<(Vec<u8>, Option<Expected>)> = vec![
        (usage("ok-1", now), None),
        (big, Some(("too_large", "message is"))),
        (b"not json at all".to_vec(), Some(("invalid_json", "not a JSON object"))),
        (vec![0xff, 0xfe, b'{', b'}'], Some(("invalid_json", ""))),
        (
            br#"{"event_id":"s1","ts":"2026-01-05T09:00:00Z","account_id":"acme","feature":"api"}"#.to_vec(),
            Some(("schema", "user_id:")),
        ),
        (usage("future-1", wall_now() + 2 * 60 * MICROS_PER_MIN), Some(("future_ts", "ts "))),
        (usage("late-1", now - days(36)), Some(("late", "ts "))),
        (usage("ok-1", now), None),
        (
            serde_json::to_vec(
                &json!({"event_id": "beta-1", "ts": ts(now), "account_id": "beta", "user_id": "u1", "feature": "api"}),
            )
            .unwrap(),
            Some(("limit", "account \"beta\" would be a new account of partition 0")),
        ),
        (usage("ok-2", now + 1), None),
    ];
    for (payload, _) in &cases {
        produce(&p, "cs.usage", 0, "acme", payload).await;
    }
    let expected: Vec<(usize, &str, &str)> =
        cases.iter().enumerate().filter_map(|(i, (_, e))| e.map(|(r, d)| (i, r, d))).collect();
    let records = tokio::task::spawn_blocking({
        let brokers = config.kafka.brokers.clone();
        let n = expected.len();
        move || consume_all(&brokers, "cs.deadletter", n, Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert_eq!(records.len(), expected.len(), "{records:#?}");
    for ((key, record), (offset, reason, detail)) in records.iter().zip(&expected) {
        assert_eq!(key.as_deref(), Some("acme"));
        assert_eq!(record["reason"], json!(reason), "{record}");
        assert!(record["detail"].as_str().unwrap().starts_with(detail), "{record}");
        assert_eq!(record["topic"], json!("cs.usage"));
        assert_eq!(record["partition"], json!(0));
        assert_eq!(record["offset"], json!(*offset as i64));
        assert_eq!(record["key"], json!("acme"));
        let original = &cases[*offset].0;
        match std::str::from_utf8(original) {
            Ok(text) => {
                let kept = record["payload"].as_str().unwrap();
                assert!(text.starts_with(kept) && kept.len() <= 64 * 1024);
                assert!(record.get("payload_encoding").is_none());
            }
            Err(_) => assert_eq!(record["payload_encoding"], json!("base64")),
        }
    }
    // The engine went on: both good events counted, the duplicate dropped.
    let stats = app.shared.engine().stats().clone();
    assert_eq!(stats.accepted[1], 2);
    assert_eq!(stats.duplicates, 1);
    assert_eq!(stats.rejected.iter().sum::<u64>(), 7);
    let base = format!("http://{}", app.addr);
    let (_, acme) = get(&format!("{base}/api/v1/accounts/acme"), Some(&token(Role::Analyst, None))).await;
    assert_eq!(acme["usage"]["usage_events_7d"], json!(2));
    let (status, metrics) = get(&format!("{base}/metrics"), None).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default().to_owned();
    for needle in [
        "cspulse_events_rejected_total{reason=\"late\"} 1",
        "cspulse_events_rejected_total{reason=\"invalid_json\"} 2",
        "cspulse_events_duplicate_total 1",
        "cspulse_events_rejected_total{reason=\"limit\"} 1",
        "cspulse_limit_overflow_total{kind=\"accounts\"} 1",
        "cspulse_events_accepted_total{topic=\"cs.usage\"} 2",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let _: Value = acme;
    app.shutdown().await;
}
