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
        let mut upsert = json!({"event_id": format!("u-{i}"), "ts": ts(0), "account_id": id(i), "name": name,
            "csm_id": csm, "segment": SEGMENTS[i % 3], "region": REGIONS[i % 4], "seats": 10, "renewal_date": renewal});
        // No renewal date: the field left out (a null one is a schema error, §9).
        if upsert["renewal_date"].is_null() {
            upsert.as_object_mut().unwrap().remove("renewal_date");
        }
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
            let score = a["health"]["score"].as_f64().unwrap();
            one("score_min").is_none_or(|m| score >= m.parse::<f64>().unwrap())
                && one("score_below").is_none_or(|m| score < m.parse::<f64>().unwrap())
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
        vec![("score_min", "50"), ("score_below", "70.5"), ("sort", "-health.score")],
        vec![("score_below", "50")],
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
        ("score_min=high", "score_min=high"),
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

fn form_urlencoded_pair(key: &str, value: &str) -> String {
    let encoded: String = value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{key}={encoded}")
}

/// Reads a zip of CSVs with Python's zipfile and csv: `{file: [row…]}`.
const READ_ZIP: &str = "import csv, io, json, sys, zipfile
z = zipfile.ZipFile(io.BytesIO(sys.stdin.buffer.read()))
print(json.dumps({n: list(csv.reader(io.TextIOWrapper(z.open(n), 'utf-8'))) for n in z.namelist()}))";

async fn download(url: &str, token: &str) -> (u16, String, Vec<u8>) {
    let res = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
    let status = res.status().as_u16();
    let kind = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, kind, res.bytes().await.unwrap().to_vec())
}

/// A KPI table row as the channel shows it: the key, then every column.
fn kpi_row(key: &str, kpi: &Value, header: &[Value]) -> Vec<Value> {
    std::iter::once(json!(key)).chain(header[1..].iter().map(|c| at(kpi, c.as_str().unwrap()).clone())).collect()
}

/// An openpyxl cell as JSON gives it back: whole floats come back as
/// floats, so numbers are compared as numbers.
fn same_cell(cell: &Value, want: &Value) -> bool {
    match (cell, want) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Null, Value::Null) => true,
        (a, b) => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_open_in_independent_readers_and_distributions_count_exactly() {
    test_logging();
    let (_cluster, config) = cluster_and_config();
    let app = App::start(&config).await.expect("engine starts");
    let base = format!("http://{}", app.addr);
    portfolio(&config.kafka.brokers).await;
    let executive = token(Role::Executive, None);
    let all = wait_for("the portfolio folded", Duration::from_secs(60), || async {
        let objects = objects(&base, &executive).await?;
        let (_, list) = get(&format!("{base}/api/v1/accounts?limit=1000"), Some(&executive)).await;
        let same = objects
            .iter()
            .all(|o| list["accounts"].as_array().unwrap().iter().any(|l| l["account_id"] == o["account_id"] && l == o));
        let settled = objects.iter().all(|o| {
            o["revenue"]["arr"].as_f64().unwrap() > 0.0 && SEGMENTS.iter().any(|s| o["info"]["segment"] == *s)
        });
        (settled && same).then_some(objects)
    })
    .await;

    // `sums=`: additive figures over every match (not only the page), exactly.
    let (status, page) = get(
        &format!("{base}/api/v1/accounts?tier=red&tier=yellow&limit=3&sums=revenue.arr&sums=tickets.open_p1&sums=usage.active_users_7d"),
        Some(&executive),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(schema("accounts").is_valid(&page), "{page}");
    let matched = naive(&all, &[("tier", "red"), ("tier", "yellow")]);
    let cents: i64 = matched.iter().map(|a| (a["revenue"]["arr"].as_f64().unwrap() * 100.0).round() as i64).sum();
    assert_eq!(page["sums"]["revenue.arr"].as_f64().unwrap(), cents as f64 / 100.0);
    for path in ["tickets.open_p1", "usage.active_users_7d"] {
        let want: i64 = matched.iter().map(|a| at(a, path).as_i64().unwrap()).sum();
        assert_eq!(page["sums"][path], want, "{path}");
    }
    let (_, own) =
        get(&format!("{base}/api/v1/accounts?sums=revenue.arr"), Some(&token(Role::Csm, Some("csm-1")))).await;
    let book: i64 = naive(&all, &[("csm_id", "csm-1")])
        .iter()
        .map(|a| (a["revenue"]["arr"].as_f64().unwrap() * 100.0).round() as i64)
        .sum();
    assert_eq!(own["sums"]["revenue.arr"].as_f64().unwrap(), book as f64 / 100.0, "a csm's sums are of its book");
    let (status, body) = get(&format!("{base}/api/v1/accounts?sums=health.score"), Some(&executive)).await;
    assert_eq!(status, 400, "a score does not add up: {body}");
    assert!(body["message"].as_str().unwrap().contains("sums=health.score"), "{body}");

    // A health histogram bucket is `score_min=10·i&score_below=10·(i+1)`
    // (the last one `score_min=90`): its accounts are the bucket's count.
    let (_, analyst) = get(&format!("{base}/api/v1/channels/analyst"), Some(&executive)).await;
    for i in 0..10 {
        let query = if i == 9 {
            "score_min=90".to_owned()
        } else {
            format!("score_min={}&score_below={}", i * 10, i * 10 + 10)
        };
        let (_, page) = get(&format!("{base}/api/v1/accounts?{query}&limit=1"), Some(&executive)).await;
        assert_eq!(page["total"], analyst["health_histogram"][i], "bucket {i}: {query}");
    }

    // A feature row's accounts: `feature=<name>` lists the accounts with a
    // usage event on it in 30 days, as many as the row counts.
    let features = analyst["features"].as_object().unwrap();
    assert!(!features.is_empty());
    for (name, row) in features {
        let q = form_urlencoded_pair("feature", name);
        let (_, page) = get(&format!("{base}/api/v1/accounts?{q}&limit=1"), Some(&executive)).await;
        assert_eq!(page["total"], row["accounts_30d"], "feature {name}");
    }
    let (_, none) = get(&format!("{base}/api/v1/accounts?feature=never-used"), Some(&executive)).await;
    assert_eq!(none["total"], 0);

    // `csm_id=` (empty) lists the unassigned accounts.
    let (_, unassigned) = get(&format!("{base}/api/v1/accounts?csm_id=&sort=account_id"), Some(&executive)).await;
    let want: Vec<&Value> = all.iter().filter(|a| a["info"]["csm_id"].is_null()).collect();
    assert!(!want.is_empty());
    assert_eq!(
        ids(unassigned["accounts"].as_array().unwrap()),
        want.iter().map(|a| a["account_id"].as_str().unwrap()).collect::<Vec<_>>()
    );

    // The accounts list as XLSX: the list's rows and figures, as openpyxl reads them.
    let (status, kind, body) =
        download(&format!("{base}/api/v1/accounts/export.xlsx?segment=enterprise&sort=-revenue.arr"), &executive).await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"), "{kind}");
    let book = python_json(READ_XLSX, &body);
    let sheet = book["accounts"].as_array().unwrap();
    let header = sheet[0].as_array().unwrap();
    let want = naive(&all, &[("segment", "enterprise"), ("sort", "-revenue.arr")]);
    assert_eq!(sheet.len(), want.len() + 1);
    for (row, object) in sheet[1..].iter().zip(&want) {
        for (cell, column) in row.as_array().unwrap().iter().zip(header) {
            let path = column.as_str().unwrap();
            let expected = if path == "account_id" { &object["account_id"] } else { at(object, path) };
            assert!(same_cell(cell, expected), "{path}: {cell} in the workbook, {expected} in the list");
        }
    }

    // Channel exports: the analyst's three tables zipped, the manager's
    // CSM table as a workbook, a book as one CSV; the channel's access.
    let (_, analyst) = get(&format!("{base}/api/v1/channels/analyst"), Some(&executive)).await;
    let (status, kind, body) = download(&format!("{base}/api/v1/channels/analyst/export.csv"), &executive).await;
    assert_eq!((status, kind.as_str()), (200, "application/zip"));
    let files = python_json(READ_ZIP, &body);
    let mut names: Vec<&String> = files.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["features.csv", "regions.csv", "segments.csv"]);
    let segments = files["segments.csv"].as_array().unwrap();
    let header = segments[0].as_array().unwrap().clone();
    assert_eq!(segments.len(), SEGMENTS.len() + 1, "{segments:?}");
    for row in &segments[1..] {
        let name = row[0].as_str().unwrap();
        let want = kpi_row(name, &analyst["segments"][name], &header);
        for ((cell, want), column) in row.as_array().unwrap().iter().zip(&want).zip(&header) {
            let shown = match want {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(cell.as_str().unwrap(), shown, "segments.csv {name} {column}");
        }
    }
    assert_eq!(
        files["features.csv"][1],
        json!([
            "reports",
            analyst["features"]["reports"]["accounts_30d"].to_string(),
            analyst["features"]["reports"]["users_30d"].to_string()
        ])
    );

    let (_, manager) = get(&format!("{base}/api/v1/channels/manager"), Some(&executive)).await;
    let (status, _, body) = download(&format!("{base}/api/v1/channels/manager/export.xlsx"), &executive).await;
    assert_eq!(status, 200);
    let book = python_json(READ_XLSX, &body);
    let csms = book["csms"].as_array().unwrap();
    let header = csms[0].as_array().unwrap().clone();
    let mut want: Vec<Vec<Value>> =
        manager["csms"].as_object().unwrap().iter().map(|(id, kpi)| kpi_row(id, kpi, &header)).collect();
    want.sort_by(|a, b| a[0].as_str().cmp(&b[0].as_str()));
    want.push(kpi_row("", &manager["unassigned"], &header));
    assert_eq!(csms.len(), want.len() + 1);
    for (row, want) in csms[1..].iter().zip(&want) {
        let row = row.as_array().unwrap();
        // openpyxl reads an empty text cell as None.
        let key = if row[0].is_null() { json!("") } else { row[0].clone() };
        assert_eq!(key, want[0]);
        for ((cell, want), column) in row[1..].iter().zip(&want[1..]).zip(&header[1..]) {
            assert!(same_cell(cell, want), "{}: {column}: {cell} vs {want}", want[0]);
        }
    }

    let own = token(Role::Csm, Some("csm-1"));
    let (status, kind, body) = download(&format!("{base}/api/v1/channels/csm:csm-1/export.csv"), &own).await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/csv"), "{kind}");
    let rows = python_json("import csv, json, sys; print(json.dumps(list(csv.DictReader(sys.stdin))))", &body);
    let book: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["account_id"].as_str().unwrap()).collect();
    assert_eq!(book, ids(&naive(&all, &[("csm_id", "csm-1")])), "the book in its priority order");
    let (status, _, _) = download(&format!("{base}/api/v1/channels/csm:csm-2/export.xlsx"), &own).await;
    assert_eq!(status, 403, "another book's export");
    let (status, _, _) =
        download(&format!("{base}/api/v1/channels/analyst/export.csv"), &token(Role::Wall, None)).await;
    assert_eq!(status, 403, "a wall may not read the analyst channel");
    let (status, kind, _) =
        download(&format!("{base}/api/v1/channels/analyst/export.csv?table=regions"), &executive).await;
    assert_eq!((status, kind.starts_with("text/csv")), (200, true), "one table: one CSV");
    let (status, _, body) =
        download(&format!("{base}/api/v1/channels/executive/export.csv?table=regions"), &executive).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("table=regions"));
    let (status, _, _) = download(&format!("{base}/api/v1/channels/executive/export.pdf"), &executive).await;
    assert_eq!(status, 404);

    // Distributions: exact counts of the matches per bucket, a csm's own
    // book only.
    for (query, field, buckets) in [
        ("", "revenue.arr", 4),
        ("segment=smb", "health.score", 5),
        ("tier=red&tier=yellow", "usage.active_users_7d", 3),
        ("", "revenue.days_to_renewal", 10),
    ] {
        let (status, d) = get(
            &format!("{base}/api/v1/accounts/distribution?field={field}&buckets={buckets}&{query}"),
            Some(&executive),
        )
        .await;
        assert_eq!(status, 200, "{d}");
        assert!(schema("distribution").is_valid(&d), "{d}");
        let pairs: Vec<(&str, &str)> =
            query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap()).collect();
        let matched = naive(&all, &pairs);
        let values: Vec<f64> = matched.iter().filter_map(|a| at(a, field).as_f64()).collect();
        assert_eq!(d["total"], matched.len(), "{field}");
        assert_eq!(d["nulls"], matched.len() - values.len(), "{field}");
        let counted: u64 = d["buckets"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
        assert_eq!(counted as usize, values.len(), "{field}: every value in one bucket");
        let bs = d["buckets"].as_array().unwrap();
        for v in &values {
            let last = bs.len() - 1;
            let holding = bs
                .iter()
                .enumerate()
                .filter(|(i, b)| {
                    let (from, to) = (b["from"].as_f64().unwrap(), b["to"].as_f64().unwrap());
                    *v >= from && (*v < to || (*i == last && *v <= to))
                })
                .count();
            assert_eq!(holding, 1, "{field}: {v} falls in one bucket of {bs:?}");
        }
        for b in bs {
            let (from, to) = (b["from"].as_f64().unwrap(), b["to"].as_f64().unwrap());
            let last = std::ptr::eq(b, bs.last().unwrap());
            let n = values.iter().filter(|v| **v >= from && (**v < to || (last && **v <= to))).count();
            assert_eq!(b["count"].as_u64().unwrap() as usize, n, "{field} [{from}, {to})");
        }
    }
    let (_, mine) = get(&format!("{base}/api/v1/accounts/distribution?field=revenue.arr"), Some(&own)).await;
    assert_eq!(mine["total"], naive(&all, &[("csm_id", "csm-1")]).len(), "a csm's distribution is of its book");
    for (query, named) in
        [("field=info.name", "field=info.name"), ("", "field"), ("field=revenue.arr&buckets=0", "buckets=0")]
    {
        let (status, body) = get(&format!("{base}/api/v1/accounts/distribution?{query}"), Some(&executive)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["message"].as_str().unwrap().contains(named), "{query}: {body}");
    }
    app.shutdown().await;
}
