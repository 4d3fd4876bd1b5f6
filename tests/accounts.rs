//! `GET /api/v1/accounts` (SPEC §19) against a naive filter: every account
//! object is read on its own (`/api/v1/accounts/{id}`), filtered and sorted
//! here by the spec's words, and compared, page by page, with the list.

mod common;

use std::cmp::Ordering;
use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::auth::Role;
use cspulse::time::{MICROS_PER_DAY, MICROS_PER_MIN, format_rfc3339, wall_now};
use serde_json::{Value, json};

const SEGMENTS: [&str; 3] = ["enterprise", "mid-market", "smb"];
const REGIONS: [&str; 4] = ["na", "emea", "apac", "latam"];
const ACCOUNTS: usize = 48;

fn id(i: usize) -> String {
    format!("acc-{i:02}")
}

/// The portfolio: every field varied, ties on purpose (ARR repeats every 5,
/// usage gives three health shapes), some accounts unassigned or without a
/// renewal date, P1 tickets (critical alerts) and escalations (warnings).
async fn portfolio(brokers: &str) {
    let p = producer(brokers);
    let t0 = wall_now() - 120 * MICROS_PER_MIN;
    let ts = |m: i64| format_rfc3339(t0 + m * MICROS_PER_MIN);
    let today = wall_now() / MICROS_PER_DAY;
    for i in 0..ACCOUNTS {
        let csm = if i % 7 == 6 { Value::Null } else { json!(format!("csm-{}", i % 4)) };
        let renewal = if i % 5 == 4 {
            Value::Null
        } else {
            let day = today + [-10i64, 20, 75, 200][i % 4] + i as i64;
            json!(cspulse::time::format_date(day as i32))
        };
        let name = if i % 6 == 0 { format!("Acme {i}") } else { format!("Company {i}") };
        let upsert = json!({"event_id": format!("u-{i}"), "ts": ts(0), "account_id": id(i), "name": name,
            "csm_id": csm, "segment": SEGMENTS[i % 3], "region": REGIONS[i % 4], "seats": 10, "renewal_date": renewal});
        produce(&p, "cs.accounts", (i % 2) as i32, &id(i), &serde_json::to_vec(&upsert).unwrap()).await;
        let arr = json!(10_000.0 + 12_500.5 * (i % 5) as f64);
        let revenue =
            json!({"event_id": format!("r-{i}"), "ts": ts(1), "account_id": id(i), "kind": "new", "arr": arr});
        produce(&p, "cs.revenue", 0, &id(i), &serde_json::to_vec(&revenue).unwrap()).await;
        // Usage: none (red), 3 of 10 seats (yellow), 10 of 10 (green).
        let users = [0, 3, 10][i % 3 * (i % 2 + 1) % 3];
        for u in 0..users {
            let usage = json!({"event_id": format!("g-{i}-{u}"), "ts": ts(2), "account_id": id(i),
                "user_id": format!("user-{u}"), "feature": "reports"});
            produce(&p, "cs.usage", 0, &id(i), &serde_json::to_vec(&usage).unwrap()).await;
        }
        if i % 8 == 3 {
            let t = json!({"event_id": format!("t-{i}"), "ts": ts(3), "account_id": id(i), "ticket_id": format!("T{i}"),
                "action": "opened", "priority": "p1"});
            produce(&p, "cs.tickets", 0, &id(i), &serde_json::to_vec(&t).unwrap()).await;
        }
        if i % 9 == 5 {
            for (k, action) in ["opened", "escalated"].into_iter().enumerate() {
                let t = json!({"event_id": format!("e-{i}-{k}"), "ts": ts(4 + k as i64), "account_id": id(i),
                    "ticket_id": format!("E{i}"), "action": action, "priority": "p3"});
                produce(&p, "cs.tickets", 0, &id(i), &serde_json::to_vec(&t).unwrap()).await;
            }
        }
    }
}

/// Every account object as `/api/v1/accounts/{id}` answers it (`None`
/// while one is not there yet).
async fn objects(base: &str, token: &str) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    for i in 0..ACCOUNTS {
        let (status, body) = get(&format!("{base}/api/v1/accounts/{}", id(i)), Some(token)).await;
        if status != 200 {
            return None;
        }
        out.push(body);
    }
    Some(out)
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

/// The spec's filters, read off the account objects.
fn naive(all: &[Value], query: &[(&str, &str)]) -> Vec<Value> {
    let values = |k: &str| query.iter().filter(|(q, _)| *q == k).map(|(_, v)| *v).collect::<Vec<_>>();
    let one = |k: &str| values(k).first().copied();
    let mut out: Vec<Value> = all
        .iter()
        .filter(|a| one("segment").is_none_or(|s| a["info"]["segment"] == s))
        .filter(|a| one("region").is_none_or(|s| a["info"]["region"] == s))
        .filter(|a| one("csm_id").is_none_or(|s| a["info"]["csm_id"] == s))
        .filter(|a| {
            let tiers = values("tier");
            tiers.is_empty() || tiers.iter().any(|t| a["health"]["tier"] == *t)
        })
        .filter(|a| {
            let arr = a["revenue"]["arr"].as_f64().unwrap();
            one("arr_min").is_none_or(|m| arr >= m.parse::<f64>().unwrap())
                && one("arr_max").is_none_or(|m| arr <= m.parse::<f64>().unwrap())
        })
        .filter(|a| {
            one("renewal_within").is_none_or(|w| {
                let days: i64 = w.trim_end_matches('d').parse().unwrap();
                a["revenue"]["days_to_renewal"].as_i64().is_some_and(|d| (0..=days).contains(&d))
            })
        })
        .filter(|a| {
            let alerts = values("alert");
            let (c, w) = (a["alerts"]["critical"].as_i64().unwrap(), a["alerts"]["warning"].as_i64().unwrap());
            alerts.is_empty()
                || alerts.iter().any(|x| match *x {
                    "critical" => c > 0,
                    "warning" => w > 0,
                    _ => c + w > 0,
                })
        })
        .filter(|a| {
            one("q").is_none_or(|q| {
                let q = q.to_lowercase();
                a["account_id"].as_str().unwrap().to_lowercase().contains(&q)
                    || a["info"]["name"].as_str().is_some_and(|n| n.to_lowercase().contains(&q))
            })
        })
        .cloned()
        .collect();
    let tier = |a: &Value| ["red", "yellow", "green"].iter().position(|t| a["health"]["tier"] == *t).unwrap();
    let id = |a: &Value| a["account_id"].as_str().unwrap().to_owned();
    match one("sort") {
        None => out.sort_by(|a, b| {
            let renewing = |a: &Value| {
                tier(a) == 0 && a["revenue"]["days_to_renewal"].as_i64().is_some_and(|d| (0..=90).contains(&d))
            };
            (!renewing(a), tier(a))
                .cmp(&(!renewing(b), tier(b)))
                .then(a["health"]["score"].as_f64().unwrap().total_cmp(&b["health"]["score"].as_f64().unwrap()))
                .then(b["revenue"]["arr"].as_f64().unwrap().total_cmp(&a["revenue"]["arr"].as_f64().unwrap()))
                .then(id(a).cmp(&id(b)))
        }),
        Some(sort) => {
            let (desc, path) = sort.strip_prefix('-').map_or((false, sort), |p| (true, p));
            let cmp_values = |x: &Value, y: &Value| -> Ordering {
                if path == "health.tier" {
                    return tier_of(x).cmp(&tier_of(y));
                }
                match (x, y) {
                    (Value::Number(a), Value::Number(b)) => a.as_f64().unwrap().total_cmp(&b.as_f64().unwrap()),
                    (Value::String(a), Value::String(b)) => a.cmp(b),
                    _ => unreachable!("{x} {y}"),
                }
            };
            out.sort_by(|a, b| {
                let (x, y) = if path == "account_id" { (&a[path], &b[path]) } else { (at(a, path), at(b, path)) };
                let by = match (x.is_null(), y.is_null()) {
                    (false, false) if desc => cmp_values(y, x),
                    (false, false) => cmp_values(x, y),
                    (false, true) => Ordering::Less,
                    (true, false) => Ordering::Greater,
                    (true, true) => Ordering::Equal,
                };
                by.then(id(a).cmp(&id(b)))
            });
        }
    }
    out
}

fn tier_of(v: &Value) -> usize {
    ["red", "yellow", "green"].iter().position(|t| v == *t).unwrap()
}

/// Every page of the list, `limit` at a time, by following `next_cursor`.
async fn pages(base: &str, token: &str, query: &[(&str, &str)], limit: usize) -> (Vec<Value>, Vec<Value>) {
    let validator = schema("accounts");
    let mut q: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    q.push(("limit".into(), limit.to_string()));
    let (mut rows, mut answers) = (Vec::new(), Vec::new());
    loop {
        let url = reqwest::Url::parse_with_params(&format!("{base}/api/v1/accounts"), &q).unwrap();
        let (status, body) = get(url.as_str(), Some(token)).await;
        assert_eq!(status, 200, "{url}: {body}");
        let errors: Vec<String> = validator.iter_errors(&body).map(|e| format!("{e} at {}", e.instance_path)).collect();
        assert!(errors.is_empty(), "{errors:?}: {body:#}");
        assert!(body["accounts"].as_array().unwrap().len() <= limit);
        rows.extend(body["accounts"].as_array().unwrap().iter().cloned());
        let next = body["next_cursor"].as_str().map(str::to_owned);
        answers.push(body);
        match next {
            Some(c) => {
                q.retain(|(k, _)| k != "cursor");
                q.push(("cursor".into(), c));
            }
            None => return (rows, answers),
        }
    }
}

fn ids(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["account_id"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_sort_and_cursor_agrees_with_a_naive_filter_of_the_account_objects() {
    test_logging();
    let (_cluster, config) = cluster_and_config();
    let app = App::start(&config).await.expect("engine starts");
    let base = format!("http://{}", app.addr);
    portfolio(&config.kafka.brokers).await;
    let executive = token(Role::Executive, None);
    // Everything folded: the last account's events are in the list.
    let all = wait_for("the portfolio folded", Duration::from_secs(60), || async {
        let objects = objects(&base, &executive).await?;
        let settled = objects.iter().all(|o| o["revenue"]["arr"].as_f64().unwrap() > 0.0);
        let (_, list) = get(&format!("{base}/api/v1/accounts?limit=1000"), Some(&executive)).await;
        // Equal figures in both readings: nothing moved in between.
        let again = objects
            .iter()
            .all(|o| list["accounts"].as_array().unwrap().iter().any(|l| l["account_id"] == o["account_id"] && l == o));
        (settled && again && list["total"] == ACCOUNTS).then_some(objects)
    })
    .await;
    let tiers: std::collections::BTreeSet<&str> = all.iter().map(|a| a["health"]["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers.len(), 3, "the portfolio has every tier: {tiers:?}");
    let queries: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("segment", "enterprise"), ("sort", "-revenue.arr")],
        vec![("tier", "red"), ("tier", "yellow"), ("sort", "health.score")],
        vec![("tier", "green")],
        vec![("arr_min", "22500.5"), ("arr_max", "47501"), ("sort", "account_id")],
        vec![("renewal_within", "90d"), ("sort", "revenue.days_to_renewal")],
        vec![("alert", "critical"), ("alert", "warning")],
        vec![("alert", "warning")],
        vec![("alert", "any"), ("sort", "-account_id")],
        vec![("q", "ACME")],
        vec![("q", "acc-1")],
        vec![("region", "emea"), ("csm_id", "csm-1"), ("sort", "-info.name")],
        vec![("sort", "info.renewal_date")],
        vec![("sort", "-info.csm_id")],
        vec![("sort", "-health.tier")],
        vec![("sort", "tickets.open")],
        vec![("segment", "smb"), ("region", "apac"), ("tier", "green"), ("q", "nothing-matches")],
    ];
    for query in &queries {
        let want = naive(&all, query);
        let (got, answers) = pages(&base, &executive, query, 7).await;
        assert_eq!(ids(&got), ids(&want), "{query:?}");
        assert_eq!(got, want, "{query:?}: the objects are the account objects");
        let as_of = &answers[0]["as_of"];
        for a in &answers {
            assert_eq!(&a["as_of"], as_of, "{query:?}: every page of one listing is of one state");
            assert_eq!(a["total"], want.len(), "{query:?}");
        }
    }

    // The export: every match in order, each field a column, as Python's
    // csv module reads it.
    let export = |token: String, query: &'static str| {
        let base = base.clone();
        async move {
            let res = reqwest::Client::new()
                .get(format!("{base}/api/v1/accounts/export.csv?{query}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
            let body = res.text().await.unwrap();
            let mut python = std::process::Command::new("python3")
                .args(["-c", "import csv, json, sys; print(json.dumps(list(csv.DictReader(sys.stdin))))"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(&mut python.stdin.take().unwrap(), body.as_bytes()).unwrap();
            let out = python.wait_with_output().unwrap();
            serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
        }
    };
    let rows = export(executive.clone(), "tier=red&tier=yellow&sort=-revenue.arr").await;
    let want = naive(&all, &[("tier", "red"), ("tier", "yellow"), ("sort", "-revenue.arr")]);
    assert_eq!(rows.len(), want.len());
    for (row, object) in rows.iter().zip(&want) {
        assert_eq!(row["account_id"], object["account_id"]);
        let arr: f64 = row["revenue.arr"].as_str().unwrap().parse().unwrap();
        assert_eq!(arr, object["revenue"]["arr"].as_f64().unwrap());
        assert_eq!(row["health.tier"], object["health"]["tier"]);
        let rank = object["health"]["rank"].as_i64().map(|r| r.to_string()).unwrap_or_default();
        assert_eq!(row["health.rank"].as_str().unwrap(), rank);
        assert_eq!(row["info.csm_id"].as_str().unwrap(), object["info"]["csm_id"].as_str().unwrap_or(""));
    }
    let own = export(token(Role::Csm, Some("csm-2")), "sort=account_id").await;
    assert_eq!(
        own.iter().map(|r| r["account_id"].as_str().unwrap()).collect::<Vec<_>>(),
        ids(&naive(&all, &[("csm_id", "csm-2"), ("sort", "account_id")])),
        "a csm exports its own book"
    );

    // A csm lists its own book only, whatever the filters say.
    let csm = token(Role::Csm, Some("csm-1"));
    let (got, _) = pages(&base, &csm, &[("sort", "account_id")], 5).await;
    assert_eq!(ids(&got), ids(&naive(&all, &[("csm_id", "csm-1"), ("sort", "account_id")])));
    let (got, _) = pages(&base, &csm, &[("csm_id", "csm-2")], 5).await;
    assert!(got.is_empty(), "another book's filter lists nothing: {got:#?}");
    let (status, body) = get(&format!("{base}/api/v1/accounts"), Some(&token(Role::Wall, None))).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");

    // Bad input is named.
    for (query, named) in [
        ("tier=purple", "tier=purple"),
        ("colour=red", "colour"),
        ("limit=5000", "limit=5000"),
        ("sort=health.nope", "sort=health.nope"),
        ("arr_min=lots", "arr_min=lots"),
        ("renewal_within=soon", "renewal_within=soon"),
        ("cursor=99.1", "cursor=99.1"),
    ] {
        let (status, body) = get(&format!("{base}/api/v1/accounts?{query}"), Some(&executive)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["message"].as_str().unwrap().contains(named), "{query}: {body}");
    }

    // A cursor pages over its first page's state: a later change does not
    // reorder it, and it is the caller's and the query's only.
    let sorted = [("sort", "-revenue.arr")];
    let (first_status, first) =
        get(&format!("{base}/api/v1/accounts?sort=-revenue.arr&limit=5"), Some(&executive)).await;
    assert_eq!(first_status, 200);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let want = naive(&all, &sorted);
    let last = want.last().unwrap()["account_id"].as_str().unwrap().to_owned();
    let p = producer(&config.kafka.brokers);
    let bump = json!({"event_id": "bump", "ts": format_rfc3339(wall_now() - MICROS_PER_MIN), "account_id": last,
        "kind": "expansion", "arr": 9_000_000});
    produce(&p, "cs.revenue", 0, &last, &serde_json::to_vec(&bump).unwrap()).await;
    wait_for("the expansion folded", Duration::from_secs(30), || async {
        let (_, now) = get(&format!("{base}/api/v1/accounts?sort=-revenue.arr&limit=1"), Some(&executive)).await;
        (now["accounts"][0]["account_id"] == last.as_str()).then_some(())
    })
    .await;
    let (status, second) =
        get(&format!("{base}/api/v1/accounts?sort=-revenue.arr&limit=5&cursor={cursor}"), Some(&executive)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["as_of"], first["as_of"]);
    assert_eq!(ids(second["accounts"].as_array().unwrap()), ids(&want[5..10]), "not reordered by the change");
    let (status, body) =
        get(&format!("{base}/api/v1/accounts?sort=revenue.arr&limit=5&cursor={cursor}"), Some(&executive)).await;
    assert_eq!(status, 400, "another query's cursor: {body}");
    let (status, body) = get(
        &format!("{base}/api/v1/accounts?sort=-revenue.arr&limit=5&cursor={cursor}"),
        Some(&token(Role::Manager, None)),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_cursor")), "another caller's cursor: {body}");
    app.shutdown().await;
}
