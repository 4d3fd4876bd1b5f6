//! Authentication and the access matrix over REST: failures get 401/403/404
//! and carry no data.

mod common;

use std::time::Duration;

use common::*;
use cspulse::app::App;
use cspulse::auth::{Claims, Role};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_get_no_data() {
    let (_cluster, config) = cluster_and_config();
    let app = App::start(&config).await.expect("engine starts");
    let p = producer(&config.kafka.brokers);
    for (id, csm) in [("mine", "csm-1"), ("theirs", "csm-2")] {
        let body = json!({"event_id": id, "ts": "2026-11-01T00:00:00Z", "account_id": id, "csm_id": csm, "name": id});
        produce(&p, "cs.accounts", 0, id, &serde_json::to_vec(&body).unwrap()).await;
    }
    let base = format!("http://{}", app.addr);
    let exec = token(Role::Executive, None);
    wait_for("both accounts", Duration::from_secs(30), || {
        let url = format!("{base}/api/v1/channels/manager");
        let exec = exec.clone();
        async move {
            let (_, v) = get(&url, Some(&exec)).await;
            (v["csms"].as_object().map(|m| m.len()) == Some(2)).then_some(())
        }
    })
    .await;

    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &Claims { sub: "x".into(), role: Role::Executive, csm_id: None, exp: 1_600_000_000 },
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let forged = cspulse::auth::Auth::new("some-other-secret-0123", false)
        .mint("x", Role::Executive, None, Duration::from_secs(60))
        .unwrap();
    let csm1 = token(Role::Csm, Some("csm-1"));
    let wall = token(Role::Wall, None);
    let cases: Vec<(String, Option<&str>, u16, &str)> = vec![
        (format!("{base}/api/v1/channels/executive"), None, 401, "unauthorized"),
        (format!("{base}/api/v1/channels/executive"), Some("not-a-jwt"), 401, "unauthorized"),
        (format!("{base}/api/v1/channels/executive"), Some(&expired), 401, "unauthorized"),
        (format!("{base}/api/v1/channels/executive"), Some(&forged), 401, "unauthorized"),
        (format!("{base}/api/v1/accounts/mine"), None, 401, "unauthorized"),
        (format!("{base}/api/v1/channels/executive"), Some(&csm1), 403, "forbidden"),
        (format!("{base}/api/v1/channels/manager"), Some(&csm1), 403, "forbidden"),
        (format!("{base}/api/v1/channels/analyst"), Some(&csm1), 403, "forbidden"),
        (format!("{base}/api/v1/channels/csm:csm-2"), Some(&csm1), 403, "forbidden"),
        (format!("{base}/api/v1/channels/analyst"), Some(&wall), 403, "forbidden"),
        (format!("{base}/api/v1/channels/csm:csm-1"), Some(&wall), 403, "forbidden"),
        (format!("{base}/api/v1/accounts/theirs"), Some(&csm1), 404, "not_found"),
        (format!("{base}/api/v1/accounts/nobody"), Some(&csm1), 404, "not_found"),
        (format!("{base}/api/v1/channels/boardroom"), Some(&exec), 404, "unknown_channel"),
    ];
    for (url, tok, status, code) in cases {
        let (got, body) = get(&url, tok).await;
        assert_eq!(got, status, "{url}: {body}");
        assert_eq!(body["error"], json!(code), "{url}: {body}");
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["error", "message"], "{url}: errors carry no data");
        assert!(!body.to_string().contains("theirs") || url.ends_with("/theirs"), "{body}");
    }
    // Allowed paths, including the token in the query string for browsers.
    let (status, own) = get(&format!("{base}/api/v1/channels/csm:csm-1?token={csm1}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(own["accounts"].as_object().unwrap().keys().collect::<Vec<_>>(), ["mine"]);
    assert!(!own.to_string().contains("theirs"), "a csm never sees another book");
    assert_eq!(get(&format!("{base}/api/v1/accounts/mine"), Some(&csm1)).await.0, 200);
    assert_eq!(get(&format!("{base}/api/v1/channels/executive"), Some(&wall)).await.0, 200);
    assert_eq!(get(&format!("{base}/api/v1/channels/csm:csm-2"), Some(&token(Role::Manager, None))).await.0, 200);
    assert_eq!(get(&format!("{base}/healthz"), None).await.0, 200);
    app.shutdown().await;
}
