//! Event-time alignment (SPEC §2 additions) with the real consumer: a
//! backlog spread over partitions, consumed in whatever chunks librdkafka
//! fetches, folds the sequence a live run folds (lowest `ts` first across
//! partitions), so the alert transitions, with their timestamps and ids,
//! are those of an engine fed the events in `ts` order.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::event::Topic;
use cspulse::state::{Engine, Input};
use cspulse::time::{MICROS_PER_MIN, format_rfc3339, parse_rfc3339};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_folds_the_live_sequence() {
    let (_cluster, mut config) = cluster_and_config();
    // The SPEC's wait (the default is 0ms: README, "Event-time alignment").
    config.time.align_wait = "50ms".parse().unwrap();
    let t0 = parse_rfc3339("2026-11-02T00:00:00Z").unwrap();
    // Three usage partitions and a tickets partition; each account's first
    // event (and so its `account_red` firing at the watermark) comes at its
    // own minute, interleaved across partitions.
    let mut events: Vec<(Topic, i32, String, Vec<u8>)> = Vec::new();
    for i in 0..600i64 {
        let (topic, partition) = if i % 4 == 3 { (Topic::Tickets, 5) } else { (Topic::Usage, (i % 4) as i32) };
        let account = format!("acct-{}", i % 150);
        let ts = format_rfc3339(t0 + i * MICROS_PER_MIN);
        let body = match topic {
            Topic::Usage => {
                json!({"event_id": format!("e{i}"), "ts": ts, "account_id": account, "user_id": "u", "feature": "api"})
            }
            _ => json!({"event_id": format!("e{i}"), "ts": ts, "account_id": account, "ticket_id": format!("T{i}"),
                "action": "opened", "priority": "p1"}),
        };
        events.push((topic, partition, account, serde_json::to_vec(&body).unwrap()));
    }
    // The backlog is all there before the engine starts.
    let p = producer(&config.kafka.brokers);
    for (topic, partition, key, payload) in &events {
        produce(&p, topic.default_name(), *partition, key, payload).await;
    }
    let app = App::start(&config).await.expect("engine starts");

    // The live run: every event folded as it happened, in ts order.
    let mut live = Engine::new(config.state_config());
    let mut offsets = std::collections::HashMap::new();
    for (topic, partition, _, payload) in &events {
        let offset = offsets.entry((*topic, *partition)).or_insert(0i64);
        live.fold(&Input {
            topic: *topic,
            partition: *partition,
            offset: *offset,
            payload,
            wall: cspulse::time::wall_now(),
        });
        *offset += 1;
    }
    let want: BTreeSet<(String, String, String)> = live
        .take_alerts()
        .iter()
        .map(|a| (a.alert_id.clone(), a.state.as_str().to_owned(), format_rfc3339(a.ts)))
        .collect();
    assert!(want.len() > 200, "the stream raises alerts at many instants: {}", want.len());

    let records = tokio::task::spawn_blocking({
        let brokers = config.kafka.brokers.clone();
        let n = want.len();
        move || consume_all(&brokers, "cs.alerts", n, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let got: BTreeSet<(String, String, String)> = records
        .iter()
        .map(|(_, v)| {
            let s = |k: &str| v[k].as_str().unwrap().to_owned();
            (s("alert_id"), s("state"), s("ts"))
        })
        .collect();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, not in the live run {extra:?}");
    app.shutdown().await;
}
