//! Saved views (SPEC §19) against both history back ends: a subject's
//! views are kept, listed, replaced and deleted; survive a restart of the
//! engine; never widen a role (a csm saves only its own book, walls only
//! load); wall views are loadable by wall tokens and unique by name; bad
//! bodies are refused naming the field; answers fit `views.schema.json`.

mod common;

use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::auth::{Auth, Role};
use cspulse::config::Config;
use serde_json::{Value, json};

fn token_of(sub: &str, role: Role, csm: Option<&str>) -> String {
    Auth::new(SECRET, false).mint(sub, role, csm, Duration::from_secs(3600)).unwrap()
}

async fn send(method: reqwest::Method, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url).bearer_auth(token).timeout(Duration::from_secs(10));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("http request");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn put(base: &str, token: &str, name: &str, body: Value) -> (u16, Value) {
    send(reqwest::Method::PUT, &format!("{base}/api/v1/views/{name}"), token, Some(body)).await
}

fn names(list: &Value) -> Vec<&str> {
    list["views"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect()
}

async fn scenario(config: Config) {
    let schema = schema("views");
    let app = App::start(&config).await.expect("engine starts");
    let base = format!("http://{}", app.addr);
    let ada = token_of("ada", Role::Manager, None);
    let bob = token_of("bob", Role::Executive, None);
    let wall = token_of("lobby", Role::Wall, None);
    let csm = token_of("cleo", Role::Csm, Some("csm-1"));
    let analyst = token_of("ann", Role::Analyst, None);

    let renewals = json!({"page": "accounts", "filters": {"tier": ["red"], "renewal_within": "90d", "arr_min": 25000},
        "columns": ["info.name", "revenue.arr", "revenue.days_to_renewal"], "sort": "revenue.days_to_renewal", "pinned": true});
    let (status, view) = put(&base, &ada, "Renewals at risk", renewals.clone()).await;
    assert_eq!(status, 201, "{view}");
    assert!(schema.is_valid(&view), "{view}");
    assert_eq!(view["filters"], json!({"tier": ["red"], "renewal_within": "90d", "arr_min": 25000}));
    assert_eq!((view["pinned"].as_bool(), view["wall"].as_bool()), (Some(true), Some(false)));
    let (status, again) = put(&base, &ada, "Renewals at risk", renewals).await;
    assert_eq!(status, 200, "a second PUT replaces: {again}");
    let lobby =
        json!({"page": "executive", "filters": {"period": "month"}, "sort": "-health.at_risk_arr", "wall": true});
    assert_eq!(put(&base, &ada, "Lobby", lobby.clone()).await.0, 201);
    let (status, body) = put(&base, &ada, "Segments", json!({"page": "analyst", "filters": {"tier": "green"}})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["filters"]["tier"], json!(["green"]), "a single tier is kept as a list");

    let (status, list) = get(&format!("{base}/api/v1/views"), Some(&ada)).await;
    assert_eq!(status, 200);
    assert!(schema.is_valid(&list), "{list}");
    assert_eq!(names(&list), ["Renewals at risk", "Lobby", "Segments"], "pinned first, then by name");
    let (_, others) = get(&format!("{base}/api/v1/views"), Some(&bob)).await;
    assert!(names(&others).is_empty(), "views are per subject: {others}");
    let (status, _) = get(&format!("{base}/api/v1/views/Lobby"), Some(&bob)).await;
    assert_eq!(status, 404, "another subject's view is not found");

    // Wall displays load the wall views, of any subject, and change nothing.
    let (_, list) = get(&format!("{base}/api/v1/views"), Some(&wall)).await;
    assert_eq!(names(&list), ["Lobby"]);
    let (status, lobby_view) = get(&format!("{base}/api/v1/views/Lobby"), Some(&wall)).await;
    assert_eq!((status, lobby_view["page"].as_str()), (200, Some("executive")));
    assert_eq!(get(&format!("{base}/api/v1/views/Segments"), Some(&wall)).await.0, 404);
    assert_eq!(put(&base, &wall, "Mine", json!({"page": "executive"})).await.0, 403);
    assert_eq!(send(reqwest::Method::DELETE, &format!("{base}/api/v1/views/Lobby"), &wall, None).await.0, 403);
    let (status, body) = put(&base, &bob, "Lobby", json!({"page": "manager", "wall": true})).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")), "wall names are unique: {body}");
    assert_eq!(put(&base, &bob, "Lobby", json!({"page": "manager"})).await.0, 201, "not a wall view: fine");

    // A view never widens its owner's role.
    let (status, body) = put(&base, &csm, "Mine", json!({"page": "book"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["filters"]["csm_id"], "csm-1", "a csm's book view is its own book");
    for (page, filters, why) in [
        ("book", json!({"csm_id": "csm-2"}), "another book"),
        ("accounts", json!({"csm_id": "csm-2"}), "another book's accounts"),
        ("executive", json!({}), "a page the role cannot read"),
    ] {
        let (status, body) = put(&base, &csm, "Wider", json!({"page": page, "filters": filters})).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{why}: {body}");
    }
    assert_eq!(put(&base, &analyst, "Book", json!({"page": "book", "filters": {"csm_id": "csm-1"}})).await.0, 403);
    let (status, body) = put(&base, &ada, "Wall book", json!({"page": "accounts", "wall": true})).await;
    assert_eq!(status, 400, "only executive and manager views go on a wall: {body}");

    // Bad bodies are refused, naming what is wrong.
    for (body, named) in [
        (json!({"page": "reports"}), "page=reports"),
        (json!({"page": "accounts", "filters": {"colour": "red"}}), "filters.colour"),
        (json!({"page": "accounts", "filters": {"tier": ["purple"]}}), "tier=purple"),
        (json!({"page": "accounts", "filters": {"period": "decade"}}), "filters.period"),
        (json!({"page": "accounts", "columns": ["revenue.nope"]}), "revenue.nope"),
        (json!({"page": "accounts", "sort": "-health.nope"}), "sort=-health.nope"),
        (json!({"page": "accounts", "sort": "-health.at_risk_arr"}), "sort=-health.at_risk_arr"),
        (json!({"page": "manager", "sort": "-info.name"}), "sort=-info.name"),
        (json!({"page": "accounts", "shape": 1}), "shape"),
        (json!({"page": "accounts", "name": "Other"}), "Other"),
    ] {
        let (status, answer) = put(&base, &ada, "Bad", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains(named), "{body}: {answer}");
    }
    let long = "x".repeat(65);
    assert_eq!(put(&base, &ada, &long, json!({"page": "accounts"})).await.0, 400);

    // Deleting.
    assert_eq!(send(reqwest::Method::DELETE, &format!("{base}/api/v1/views/Segments"), &ada, None).await.0, 204);
    assert_eq!(send(reqwest::Method::DELETE, &format!("{base}/api/v1/views/Segments"), &ada, None).await.0, 404);

    // What was saved survives a restart.
    app.shutdown().await;
    let app = App::start(&config).await.expect("engine restarts");
    let base = format!("http://{}", app.addr);
    let (status, list) = get(&format!("{base}/api/v1/views"), Some(&ada)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(names(&list), ["Renewals at risk", "Lobby"]);
    assert_eq!(list["views"][0], again, "kept as answered");
    let (_, list) = get(&format!("{base}/api/v1/views"), Some(&csm)).await;
    assert_eq!(names(&list), ["Mine"]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_kept_per_subject_in_sqlite_and_never_widen_a_role() {
    test_logging();
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, mut config) = cluster_and_config();
    config.history.store = format!("sqlite://{}", dir.path().join("history.db").display());
    scenario(config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_kept_per_subject_in_postgres() {
    test_logging();
    let db = fresh_postgres_database().await;
    let (_cluster, mut config) = cluster_and_config();
    config.history.store = format!("postgres://postgres@127.0.0.1:5432/{db}");
    scenario(config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_need_the_history_store() {
    let (_cluster, config) = cluster_and_config();
    let app = App::start(&config).await.expect("engine starts");
    let (status, body) =
        get(&format!("http://{}/api/v1/views", app.addr), Some(&token_of("ada", Role::Manager, None))).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")), "{body}");
    app.shutdown().await;
}
