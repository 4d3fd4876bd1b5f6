use super::*;
use crate::alert::ScopeKind;
use crate::alert::{AccountContext, AlertState, Severity};
use crate::config::delivery::DeliveryConfig;
use crate::time::parse_rfc3339;

fn at(s: &str) -> Ts {
    parse_rfc3339(s).expect("an instant")
}

fn zone(name: &str) -> TimeZone {
    TimeZone::get(name).expect("a zone")
}

fn time(s: &str) -> Time {
    routing::parse_time(s).expect("HH:MM")
}

#[test]
fn a_daily_time_follows_the_zone_across_dst() {
    let berlin = zone("Europe/Berlin");
    // 08:00 CET is 07:00Z; the next day (clocks forward at 02:00) 08:00 CEST is 06:00Z.
    assert_eq!(next_local(time("08:00"), &berlin, at("2026-03-28T07:00:00Z")), at("2026-03-29T06:00:00Z"));
    assert_eq!(next_local(time("08:00"), &berlin, at("2026-03-28T06:59:59Z")), at("2026-03-28T07:00:00Z"));
    // 02:30 does not exist on 2026-03-29 in Berlin: the instant after the gap.
    assert_eq!(next_local(time("02:30"), &berlin, at("2026-03-28T12:00:00Z")), at("2026-03-29T01:30:00Z"));
    // Clocks back on 2026-10-25: 08:00 CET is 07:00Z, a 25-hour day after 08:00 CEST (06:00Z).
    assert_eq!(next_local(time("08:00"), &berlin, at("2026-10-24T06:00:00Z")), at("2026-10-25T07:00:00Z"));
    let ny = zone("America/New_York");
    assert_eq!(next_local(time("08:00"), &ny, at("2026-03-07T13:00:00Z")), at("2026-03-08T12:00:00Z"));
}

#[test]
fn quiet_hours_wrap_midnight_and_end_in_local_time() {
    let berlin = zone("Europe/Berlin");
    let q = Quiet { from: time("22:00"), to: time("07:00") };
    // 23:30 CEST on the night clocks go back: quiet until 07:00 CET (06:00Z).
    assert_eq!(quiet_until(q, &berlin, at("2026-10-24T21:30:00Z")), Some(at("2026-10-25T06:00:00Z")));
    // 06:30 CET: quiet for half an hour more.
    assert_eq!(quiet_until(q, &berlin, at("2026-10-26T05:30:00Z")), Some(at("2026-10-26T06:00:00Z")));
    // 12:00: not quiet.
    assert_eq!(quiet_until(q, &berlin, at("2026-10-26T11:00:00Z")), None);
    let day = Quiet { from: time("12:00"), to: time("13:00") };
    assert_eq!(quiet_until(day, &berlin, at("2026-10-26T11:30:00Z")), Some(at("2026-10-26T12:00:00Z")));
    assert_eq!(quiet_until(day, &berlin, at("2026-10-26T12:00:00Z")), None);
}

#[test]
fn backoff_doubles_from_one_second_to_ten_minutes_with_jitter() {
    for _ in 0..200 {
        let first = backoff(1);
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1), "{first:?}");
        let fourth = backoff(4);
        assert!(fourth >= Duration::from_secs(4) && fourth <= Duration::from_secs(8), "{fourth:?}");
        let late = backoff(40);
        assert!(late >= Duration::from_secs(300) && late <= Duration::from_secs(600), "{late:?}");
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(toml_text: &str) -> DeliveryConfig {
    #[derive(serde::Deserialize)]
    struct Wrap {
        delivery: DeliveryConfig,
    }
    toml::from_str::<Wrap>(toml_text).expect("toml").delivery
}

fn parse(toml_text: &str) -> Result<Routing, routing::RoutingError> {
    Routing::parse(&config(toml_text), "127.0.0.1:8080".parse().unwrap(), |v| (v == "SET").then(|| "value".to_owned()))
}

const BASE: &str = r#"
[delivery]
[[delivery.destinations]]
name = "mail"
kind = "email"
smtp_url = "smtp://127.0.0.1:2525"
from = "cspulse <alerts@example.com>"
[[delivery.destinations]]
name = "crm"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[[delivery.people]]
id = "ana"
email = "ana@example.com"
role = "csm"
csm_id = "csm-1"
time_zone = "Europe/Berlin"
[[delivery.people]]
id = "ben"
email = "ben@example.com"
role = "csm"
csm_id = "csm-2"
[[delivery.people]]
id = "mia"
email = "mia@example.com"
role = "manager"
[[delivery.alert_routes]]
name = "risk"
match = { severity = "critical" }
to = ["owner", "managers", "crm"]
"#;

#[test]
fn a_bad_entry_is_named_with_its_key() {
    assert!(parse(BASE).is_ok());
    let not_pem = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_pem.path(), "not a certificate\n").unwrap();
    let not_pem = not_pem.path().display().to_string();
    let cases = [
        (
            BASE.replace("kind = \"webhook\"", "kind = \"pager\""),
            "delivery.destinations[1] (\"crm\")",
            "kind \"pager\"",
        ),
        (BASE.replace(SECRET, "hunter2"), "delivery.destinations[1]", "whsec_"),
        (
            BASE.replace("time_zone = \"Europe/Berlin\"", "time_zone = \"Mars/Olympus\""),
            "delivery.people[0] (\"ana\")",
            "IANA",
        ),
        (
            BASE.replace("\"owner\", \"managers\", \"crm\"", "\"owner\", \"nobody\""),
            "delivery.alert_routes[0] (\"risk\")",
            "\"nobody\"",
        ),
        (BASE.replace("severity = \"critical\"", "severity = \"urgent\""), "delivery.alert_routes[0]", "urgent"),
        (BASE.replace("csm_id = \"csm-2\"\n", ""), "delivery.people[1] (\"ben\")", "csm_id"),
        (BASE.replace("smtp://127.0.0.1:2525", "http://127.0.0.1:2525"), "delivery.destinations[0]", "smtp://"),
        (
            BASE.replace("id = \"ben\"", "id = \"ben\"\nquiet_hours = \"25:00-07:00\""),
            "delivery.people[1]",
            "quiet_hours",
        ),
        (
            BASE.replace("smtp://127.0.0.1:2525\"", &format!("smtp://127.0.0.1:2525\"\nca_file = \"{not_pem}\"")),
            "delivery.destinations[0]",
            "ca_file applies to TLS",
        ),
        (
            BASE.replace("smtp://127.0.0.1:2525\"", "smtps://127.0.0.1:2525\"\nca_file = \"/nonexistent/ca.pem\""),
            "delivery.destinations[0]",
            "ca_file \"/nonexistent/ca.pem\"",
        ),
        (
            BASE.replace("smtp://127.0.0.1:2525\"", &format!("smtps://127.0.0.1:2525\"\nca_file = \"{not_pem}\"")),
            "delivery.destinations[0]",
            "holds no certificate",
        ),
    ];
    for (text, key, problem) in cases {
        let e = match parse(&text) {
            Ok(_) => panic!("accepted: {key} {problem}"),
            Err(e) => e,
        };
        assert!(e.key.starts_with(key) || e.to_string().contains(key), "{e} (wanted {key})");
        assert!(e.to_string().contains(problem), "{e} (wanted {problem})");
    }
}

fn alert(rule: &str, severity: Severity, csm: &str, ts: Ts) -> Alert {
    Alert {
        alert_id: crate::alert::alert_id(rule, ScopeKind::Account, "acme", ts),
        rule: rule.into(),
        severity,
        state: AlertState::Firing,
        scope: ScopeKind::Account,
        scope_id: "acme".into(),
        account: Some(AccountContext {
            account_id: "acme".into(),
            name: Some("Acme Corp".into()),
            csm_id: Some(csm.into()),
            segment: "enterprise".into(),
        }),
        ts,
        started_at: ts,
        values: vec![],
        message: "Acme Corp is red".into(),
        version: 0,
    }
}

#[test]
fn owner_routing_reaches_only_the_owner_and_each_recipient_once() {
    let mut text = BASE.to_owned();
    // A second route to the managers again: one message each still.
    text.push_str("[[delivery.alert_routes]]\nname = \"again\"\nto = [\"managers\"]\n");
    let service = DeliveryService::new(parse(&text).unwrap(), "s");
    let planner = service.planner();
    let now = at("2026-12-03T10:00:00Z");
    let planned = planner.plan(&alert("account_red", Severity::Critical, "csm-1", now - 1_000_000), now);
    let mut to: Vec<(&str, &str)> = planned.iter().map(|p| (p.recipient.as_str(), p.destination.as_str())).collect();
    to.sort();
    assert_eq!(to, [("ana", "mail"), ("crm", "crm"), ("mia", "mail")]);
    let ana = planned.iter().find(|p| p.recipient == "ana").unwrap();
    assert_eq!(ana.book.as_deref(), Some("csm-1"));
    assert_eq!(ana.account_id.as_deref(), Some("acme"));
    assert!(planned.iter().all(|p| p.group.is_none() && p.next_at == now));
    // The same transition planned again makes the same ids.
    let again = planner.plan(&alert("account_red", Severity::Critical, "csm-1", now - 1_000_000), now + 5);
    let ids = |v: &[Planned]| v.iter().map(|p| p.id.clone()).collect::<HashSet<_>>();
    assert_eq!(ids(&planned), ids(&again));
    // A warning matches only the second route: the manager alone.
    let warning = planner.plan(&alert("escalation_open", Severity::Warning, "csm-1", now), now);
    assert_eq!(warning.iter().map(|p| p.recipient.as_str()).collect::<Vec<_>>(), ["mia"]);
    // An alert older than give_up_after is not planned (a replay's).
    assert!(planner.plan(&alert("account_red", Severity::Critical, "csm-1", now - 25 * 3_600_000_000), now).is_empty());
    // Unsubscribed from "risk": ana gets nothing of it.
    service.set_unsubscribed([("ana".to_owned(), "risk".to_owned())]);
    let after = planner.plan(&alert("account_red", Severity::Critical, "csm-1", now), now);
    assert!(after.iter().all(|p| p.recipient != "ana"), "{after:?}");
}

#[test]
fn grouped_and_digest_routes_plan_members_of_one_group() {
    let text = BASE.replace("to = [\"owner\", \"managers\", \"crm\"]", "to = [\"owner\"]\ngroup_window = \"30s\"");
    let planner = DeliveryService::new(parse(&text).unwrap(), "s").planner();
    let now = at("2026-12-03T10:00:00Z");
    let a = planner.plan(&alert("account_red", Severity::Critical, "csm-1", now), now);
    let b = planner.plan(&alert("p1_ticket_open", Severity::Critical, "csm-1", now), now + 1_000_000);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].group, b[0].group);
    assert_ne!(a[0].id, b[0].id);
    assert_eq!(a[0].next_at, now + 30_000_000);
    let digest = BASE.replace("to = [\"owner\", \"managers\", \"crm\"]", "to = [\"owner\"]\ndigest = \"daily 08:00\"");
    let planner = DeliveryService::new(parse(&digest).unwrap(), "s").planner();
    let d = planner.plan(&alert("account_red", Severity::Critical, "csm-1", now), now);
    assert_eq!(d[0].kind, "digest");
    // ana is in Berlin: 08:00 CET on the next day is 07:00Z.
    assert_eq!(d[0].next_at, at("2026-12-04T07:00:00Z"));
}

#[test]
fn unsubscribe_tokens_are_signed() {
    let service = DeliveryService::new(Routing::default(), "secret");
    let token = service.unsubscribe_token("ana", "risk");
    assert_eq!(service.check_unsubscribe_token(&token), Some(("ana".into(), "risk".into())));
    let other = DeliveryService::new(Routing::default(), "another secret");
    assert_eq!(other.check_unsubscribe_token(&token), None);
    let (body, sig) = token.split_once('.').unwrap();
    let forged = format!("{}.{sig}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("ben\nrisk"));
    assert_ne!(body, forged.split_once('.').unwrap().0);
    assert_eq!(service.check_unsubscribe_token(&forged), None);
}
