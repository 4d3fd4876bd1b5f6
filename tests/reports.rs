//! Reports (SPEC §17) rendered from a real history store: the engine folds
//! ten days of two books into SQLite, then `daily_ops` is rendered for
//! each day of the period: a book's report holds none of another book's
//! accounts (every cell of every table, and the XLSX as openpyxl reads it),
//! its tier changes and alerts are exactly the history API's logs of its
//! accounts over the days, and its "needs attention" table is the
//! account rows of the day in the §3.4 order. `cspulse report render`
//! writes the same workbook.

mod common;

use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::auth::Role;
use cspulse::report::Audience;
use cspulse::report::daily::daily_ops;
use cspulse::time::{MICROS_PER_DAY, MICROS_PER_MIN, format_rfc3339, parse_rfc3339};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cspulse");

/// Two books over ten days: csm-1 holds acct-a (busy on day 0: its tier
/// rises red, yellow, green) and acct-c (a P1 ticket on day 3: a critical
/// alert); csm-2 holds acct-b (active every day, moving the watermark, with
/// a P1 of its own on day 3).
fn events(t0: i64) -> Vec<(&'static str, String, Value)> {
    let ts = format_rfc3339;
    let mut out = Vec::new();
    for (id, csm) in [("acct-a", "csm-1"), ("acct-b", "csm-2"), ("acct-c", "csm-1")] {
        out.push((
            "cs.accounts",
            id.to_owned(),
            json!({"event_id": format!("up-{id}"), "ts": ts(t0), "account_id": id,
            "name": id.to_uppercase(), "csm_id": csm, "segment": "smb", "region": "emea", "seats": 10,
            "renewal_date": "2026-12-20"}),
        ));
        out.push((
            "cs.revenue",
            id.to_owned(),
            json!({"event_id": format!("arr-{id}"), "ts": ts(t0 + 1),
            "account_id": id, "kind": "new", "arr": 50000}),
        ));
    }
    for i in 0..30i64 {
        out.push((
            "cs.usage",
            "acct-a".to_owned(),
            json!({"event_id": format!("u-a-{i}"), "ts": ts(t0 + 2 + i * MICROS_PER_MIN),
            "account_id": "acct-a", "user_id": format!("user-{}", i % 10), "feature": "api"}),
        ));
    }
    for (id, day) in [("acct-c", 3), ("acct-b", 3)] {
        out.push((
            "cs.tickets",
            id.to_owned(),
            json!({"event_id": format!("t-{id}"), "ts": ts(t0 + day * MICROS_PER_DAY + 5 * 3_600_000_000),
            "account_id": id, "ticket_id": format!("T-{id}"), "action": "opened", "priority": "p1"}),
        ));
    }
    for d in 1..=10i64 {
        for u in 0..10i64 {
            out.push((
                "cs.usage",
                "acct-b".to_owned(),
                json!({"event_id": format!("u-b-{d}-{u}"),
                "ts": ts(t0 + d * MICROS_PER_DAY + u * MICROS_PER_MIN), "account_id": "acct-b",
                "user_id": format!("user-b{u}"), "feature": "api"}),
            ));
        }
    }
    out.sort_by_key(|(_, _, v)| parse_rfc3339(v["ts"].as_str().unwrap()).unwrap());
    out
}

fn cells(doc: &cspulse::report::document::Document) -> Vec<String> {
    doc.tables().iter().flat_map(|t| t.rows.iter().flatten().map(|v| v.to_string())).collect()
}

/// §3.4's order, read off account objects as the API shows them.
fn priority_key(a: &Value) -> (bool, usize, i64, i64, String) {
    let tier = ["red", "yellow", "green"].iter().position(|t| a["health"]["tier"] == *t).unwrap();
    let days = a["revenue"]["days_to_renewal"].as_i64();
    let renewing = tier == 0 && days.is_some_and(|d| (0..=90).contains(&d));
    let score = (a["health"]["score"].as_f64().unwrap() * 10.0).round() as i64;
    let arr = (a["revenue"]["arr"].as_f64().unwrap() * 100.0).round() as i64;
    (!renewing, tier, score, -arr, a["account_id"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_ops_from_history_is_the_books_logs_and_rows_and_nothing_of_another_book() {
    test_logging();
    let (_cluster, mut config) = cluster_and_config();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    config.history.store = format!("sqlite://{}", db.display());
    config.time.align_wait = "50ms".parse().unwrap();
    let t0 = parse_rfc3339("2026-11-02T00:00:00Z").unwrap();
    let p = producer(&config.kafka.brokers);
    for (topic, key, v) in events(t0) {
        produce(&p, topic, 0, &key, &serde_json::to_vec(&v).unwrap()).await;
    }
    let app = App::start(&config).await.expect("engine starts");
    let base = format!("http://{}", app.addr);
    let exec = token(Role::Executive, None);
    let history = |id: &'static str| {
        let base = base.clone();
        let exec = exec.clone();
        async move { get(&format!("{base}/api/v1/accounts/{id}/history"), Some(&exec)).await.1 }
    };
    // Every day boundary up to the last event's day has its rows.
    let last_day = t0 + 10 * MICROS_PER_DAY;
    wait_for("ten days of rows", Duration::from_secs(60), || async {
        let h = history("acct-c").await;
        let days = h["days"].as_array()?;
        days.iter().any(|d| d["at"] == format_rfc3339(last_day)).then_some(())
    })
    .await;
    let (a, b, c) = (history("acct-a").await, history("acct-b").await, history("acct-c").await);
    let store = cspulse::history::store::HistoryStore::open(&config.history.store).await.unwrap();

    // The runs at 08:00 UTC on days 0..=10 cover [day -1 08:00, day 10 08:00).
    let csm1 = Audience::Csm("csm-1".into());
    let mut changes = Vec::new();
    let mut alerts = Vec::new();
    for d in 0..=10i64 {
        let run = t0 + d * MICROS_PER_DAY + 8 * 3_600_000_000;
        let doc = daily_ops(&store, "daily", &csm1, run, "UTC").await.unwrap();
        assert_eq!(doc.header.period_end - doc.header.period_start, MICROS_PER_DAY);
        assert!(
            cells(&doc).iter().all(|c| !c.contains("acct-b") && !c.contains("ACCT-B")),
            "day {d}: csm-1's report names another book's account: {:?}",
            doc.tables()
        );
        let midnight = format_rfc3339(t0 + d * MICROS_PER_DAY);
        assert_eq!(doc.header.as_of.map(format_rfc3339), Some(midnight.clone()), "the day's rows");
        // Needs attention: the book's account rows of the day, not green, §3.4 order.
        let mut want: Vec<&Value> = [&a, &c]
            .iter()
            .filter_map(|h| h["days"].as_array().unwrap().iter().find(|r| r["at"] == midnight.as_str()))
            .map(|r| &r["account"])
            .filter(|o| o["health"]["tier"] != "green")
            .collect();
        want.sort_by_key(|o| priority_key(o));
        let attention = doc.sections.iter().find(|s| s.table.name == "attention").unwrap();
        let got: Vec<&str> = attention.table.rows.iter().map(|r| r[0].as_str().unwrap()).collect();
        let want_ids: Vec<&str> = want.iter().map(|o| o["account_id"].as_str().unwrap()).collect();
        assert_eq!(got, want_ids, "day {d}");
        for (row, object) in attention.table.rows.iter().zip(&want) {
            for (cell, column) in row.iter().zip(&attention.table.columns) {
                let path = &column.path;
                let expected =
                    if path == "account_id" { &object["account_id"] } else { cspulse::export::at_path(object, path) };
                assert_eq!(cell, expected, "day {d} {path}");
            }
        }
        for s in &doc.sections {
            match s.table.name.as_str() {
                "tier_changes" => {
                    changes.extend(s.table.rows.iter().map(|r| (r[0].clone(), r[1].clone(), r[4].clone())))
                }
                "alerts" => alerts.extend(s.table.rows.iter().map(|r| (r[0].clone(), r[1].clone(), r[6].clone()))),
                _ => {}
            }
        }
        if d == 4 {
            // The workbook as openpyxl reads it: the same rows, numbers as numbers.
            let book = doc.xlsx().unwrap();
            let read = python_json(READ_XLSX, &book);
            let sheet = read["attention"].as_array().unwrap();
            assert_eq!(sheet.len(), attention.table.rows.len() + 1);
            for (row, want) in sheet[1..].iter().zip(&attention.table.rows) {
                for (cell, want) in row.as_array().unwrap().iter().zip(want) {
                    match (cell, want) {
                        (Value::Number(x), Value::Number(y)) => assert_eq!(x.as_f64(), y.as_f64()),
                        (x, y) => assert_eq!(x, y),
                    }
                }
            }
            assert!(!read.to_string().contains("acct-b"), "the workbook names another book's account");
            let period = read["report"].as_array().unwrap().iter().find(|r| r[0] == "period_start").unwrap()[1].clone();
            assert_eq!(period, json!(format_rfc3339(run - MICROS_PER_DAY)));
        }
    }
    // Over the ten periods: exactly the logs of the book's accounts in
    // [day -1 08:00, day 10 08:00).
    let (from, to) = (t0 - 16 * 3_600_000_000, t0 + 10 * MICROS_PER_DAY + 8 * 3_600_000_000);
    let within = |ts: &Value| {
        let t = parse_rfc3339(ts.as_str().unwrap()).unwrap();
        (from..to).contains(&t)
    };
    let mut want_changes: Vec<(Value, Value, Value)> = [(&a, "acct-a"), (&c, "acct-c")]
        .iter()
        .flat_map(|(h, id)| {
            h["tier_changes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| within(&t["ts"]))
                .map(move |t| (t["ts"].clone(), json!(id), t["to"].clone()))
        })
        .collect();
    let text = |v: &(Value, Value, Value)| (v.0.to_string(), v.1.to_string(), v.2.to_string());
    want_changes.sort_by_key(text);
    changes.sort_by_key(text);
    assert!(want_changes.len() >= 4, "acct-a's and acct-c's tiers change in the period: {a:#} {c:#}");
    assert_eq!(changes, want_changes);
    let mut want_alerts: Vec<(Value, Value, Value)> = [&a, &c]
        .iter()
        .flat_map(|h| {
            h["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| within(&x["ts"]))
                .map(|x| (x["ts"].clone(), x["state"].clone(), x["account_id"].clone()))
        })
        .collect();
    want_alerts.sort_by_key(text);
    alerts.sort_by_key(text);
    assert!(want_alerts.iter().any(|x| x.2 == "acct-c"), "acct-c's P1 fires: {c:#}");
    assert_eq!(alerts, want_alerts);
    assert!(b["alerts"].as_array().unwrap().iter().any(|x| within(&x["ts"])), "acct-b had alerts too (left out above)");

    // The manager's report holds every book.
    let run = t0 + 4 * MICROS_PER_DAY + 8 * 3_600_000_000;
    let all = daily_ops(&store, "daily", &Audience::Manager, run, "UTC").await.unwrap();
    assert!(cells(&all).iter().any(|c| c.contains("acct-b")), "{:?}", all.tables());

    // The CLI writes the same workbook (deterministic).
    app.shutdown().await;
    let cfg = dir.path().join("cspulse.toml");
    std::fs::write(
        &cfg,
        format!("[auth]\njwt_secret = \"{SECRET}\"\n[history]\nstore = \"{}\"\n", config.history.store),
    )
    .unwrap();
    let out = dir.path().join("daily.xlsx");
    let at = format_rfc3339(run);
    let cli = |extra: &[&str]| {
        std::process::Command::new(BIN)
            .args(["report", "render", "--template", "daily_ops", "--audience", "csm:csm-1", "--at", &at, "--out"])
            .arg(&out)
            .args(["--config"])
            .arg(&cfg)
            .args(extra)
            .output()
            .unwrap()
    };
    let done = cli(&["--format", "xlsx"]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let doc = daily_ops(&store, "daily_ops", &csm1, run, "UTC").await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), doc.xlsx().unwrap(), "the CLI's workbook is the library's");
    let refused = cli(&["--format", "docx"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--format docx"));
}
