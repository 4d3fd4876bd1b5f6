//! Delivery (SPEC §16): alerts by email, Slack and signed webhooks, every
//! message a row of the ledger in the history store.
//!
//! The history writer records each alert and, in the same transaction, the
//! messages the alert routes make of it ([`Plans`], deterministic ids: a
//! rewrite plans nothing twice). The sender ([`run`]) takes the due rows,
//! checks that a csm recipient still owns the account (else `cancelled`),
//! holds warnings through the recipient's quiet hours, sends, and records
//! the outcome: `sent`, or `failed` with the next attempt backed off
//! exponentially with jitter from 1 s to 10 min, or `gave_up` after
//! `delivery.give_up_after`. Grouped alerts and digests wait as members
//! until their group is due and then become one message. A crash between a
//! server's acceptance and the ledger's `sent` sends that message once more
//! with the same id (the webhook-id, the email's Message-ID); a `sent` row
//! is never sent again.

pub mod message;
pub mod routing;
pub mod send;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use jiff::civil::Time;
use jiff::tz::TimeZone;
use metrics::{counter, histogram};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{info, warn};

use crate::alert::Alert;
use crate::history::ledger::{Delivery, Member, Outcome, Planned, Planner};
use crate::history::store::HistoryStore;
use crate::ingest::Shared;
use crate::time::{MICROS_PER_SEC, Ts, wall_now};
use message::Content;
use routing::{Channel, Person, Quiet, Route, Routing, Target};

/// The running configuration and what the sender shares with the HTTP API.
pub struct DeliveryService {
    routing: ArcSwap<Routing>,
    /// (person, route) pairs whose unsubscribe link was followed.
    unsubscribed: RwLock<HashSet<(String, String)>>,
    /// Keys the unsubscribe links.
    link_key: Vec<u8>,
    senders: send::Senders,
    /// Wakes the sender (a write planned messages, a resend).
    pub wake: Arc<Notify>,
}

/// An id: a digest of its parts.
fn digest_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// The key of `alert`'s message to `recipient` through `destination`.
pub fn alert_message_id(alert: &Alert, recipient: &str, destination: &str) -> String {
    digest_id(&[&alert.alert_id, alert.state.as_str(), &alert.version.to_string(), recipient, destination])
}

/// The key of a group or digest: a digest of its members' keys.
pub fn group_id(kind: &str, member_keys: &[String]) -> String {
    let mut parts: Vec<&str> = vec![kind];
    parts.extend(member_keys.iter().map(String::as_str));
    digest_id(&parts)
}

fn zoned(now: Ts, zone: &TimeZone) -> Option<jiff::ZonedDateTime> {
    Some(jiff::Timestamp::from_microsecond(now).ok()?.to_zoned_datetime(zone.clone()))
}

/// The first instant after `now` at local time `at` in `zone` (a time the
/// clocks skip on a DST change is taken as the instant after the gap).
pub fn next_local(at: Time, zone: &TimeZone, now: Ts) -> Ts {
    let Some(z) = zoned(now, zone) else { return now };
    let mut date = z.date();
    for _ in 0..3 {
        if let Ok(t) = date.to_datetime(at).to_zoned_datetime(zone.clone()) {
            let t = t.timestamp().as_microsecond();
            if t > now {
                return t;
            }
        }
        match date.tomorrow() {
            Ok(d) => date = d,
            Err(_) => break,
        }
    }
    now
}

/// `Some(end)` while `now` is within quiet hours `q` in `zone`: when they end.
pub fn quiet_until(q: Quiet, zone: &TimeZone, now: Ts) -> Option<Ts> {
    let t = zoned(now, zone)?.time();
    let quiet = if q.from < q.to { t >= q.from && t < q.to } else { t >= q.from || t < q.to };
    quiet.then(|| next_local(q.to, zone, now))
}

/// The backoff before attempt `attempts + 1`: 1 s doubling to 10 min, with
/// jitter (each wait is drawn from its upper half).
pub fn backoff(attempts: i64) -> Duration {
    let base = Duration::from_secs(1).saturating_mul(1u32 << attempts.clamp(1, 20).saturating_sub(1) as u32);
    let cap = base.min(Duration::from_secs(600));
    let half = cap / 2;
    half + half.mul_f64(rand::random::<f64>())
}

impl DeliveryService {
    pub fn new(routing: Routing, secret: &str) -> Arc<DeliveryService> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(b"cspulse unsubscribe links");
        Arc::new(DeliveryService {
            routing: ArcSwap::from_pointee(routing),
            unsubscribed: RwLock::default(),
            link_key: mac.finalize().into_bytes().to_vec(),
            senders: send::Senders::new(),
            wake: Arc::new(Notify::new()),
        })
    }

    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// Takes a new configuration (SIGHUP); messages already planned keep
    /// their recipients, and go out through the destinations as now named.
    pub fn replace(&self, routing: Routing) {
        self.routing.store(Arc::new(routing));
        self.senders.reset();
        self.wake.notify_one();
    }

    pub fn set_unsubscribed(&self, pairs: impl IntoIterator<Item = (String, String)>) {
        self.unsubscribed.write().unwrap_or_else(|p| p.into_inner()).extend(pairs);
    }

    fn is_unsubscribed(&self, person: &str, route: &str) -> bool {
        self.unsubscribed.read().unwrap_or_else(|p| p.into_inner()).contains(&(person.to_owned(), route.to_owned()))
    }

    /// The token of an unsubscribe link: person and route, signed.
    pub fn unsubscribe_token(&self, person: &str, route: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let body = b64.encode(format!("{person}\n{route}"));
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.link_key).expect("any key length");
        mac.update(body.as_bytes());
        format!("{body}.{}", b64.encode(mac.finalize().into_bytes()))
    }

    /// The (person, route) of a valid token.
    pub fn check_unsubscribe_token(&self, token: &str) -> Option<(String, String)> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (body, sig) = token.split_once('.')?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.link_key).expect("any key length");
        mac.update(body.as_bytes());
        mac.verify_slice(&b64.decode(sig).ok()?).ok()?;
        let text = String::from_utf8(b64.decode(body).ok()?).ok()?;
        let (person, route) = text.split_once('\n')?;
        Some((person.to_owned(), route.to_owned()))
    }

    /// Records a followed unsubscribe link.
    pub async fn unsubscribe(&self, store: &HistoryStore, person: &str, route: &str) -> Result<(), sqlx::Error> {
        store.unsubscribe(person, route, wall_now()).await?;
        self.set_unsubscribed([(person.to_owned(), route.to_owned())]);
        Ok(())
    }

    /// The planner the history writer calls.
    pub fn planner(self: &Arc<Self>) -> Arc<dyn Planner> {
        Arc::new(Plans(self.clone()))
    }
}

/// Plans each alert's messages by the routes in force.
struct Plans(Arc<DeliveryService>);

/// A recipient of a route's message: a person's channel, or a destination.
struct Recipient<'a> {
    id: &'a str,
    destination: &'a str,
    dest_kind: &'static str,
    zone: Option<&'a TimeZone>,
    book: Option<&'a str>,
    person: bool,
}

fn recipients<'a>(routing: &'a Routing, person: &'a Person) -> Vec<Recipient<'a>> {
    let mut out = Vec::new();
    let base = |d: &'a routing::Destination| Recipient {
        id: &person.id,
        destination: &d.name,
        dest_kind: d.channel.kind(),
        zone: Some(&person.zone),
        book: person.csm_id.as_deref(),
        person: true,
    };
    if person.email.is_some()
        && let Some(d) = routing.email()
    {
        out.push(base(d));
    }
    if let Some(i) = person.slack {
        out.push(base(&routing.destinations[i]));
    }
    out
}

impl Planner for Plans {
    fn plan(&self, alert: &Alert, now: Ts) -> Vec<Planned> {
        let routing = self.0.routing();
        if !routing.is_active() {
            return Vec::new();
        }
        // A catch-up or replay re-emits old alerts: nobody wants mail about
        // what happened longer ago than a message is retried.
        if routing.give_up_after > 0 && alert.ts < now.saturating_sub(routing.give_up_after) {
            counter!("cspulse_deliveries_skipped_total", "reason" => "stale").increment(1);
            return Vec::new();
        }
        let (severity, state, scope) = (alert.severity.as_str(), alert.state.as_str(), alert.scope.as_str());
        let body = alert.to_json();
        let account_id = alert.account.as_ref().map(|a| a.account_id.clone());
        let mut out: Vec<Planned> = Vec::new();
        for route in routing.routes.iter().filter(|r| r.matches(severity, &alert.rule, scope, state)) {
            let payload = json!({"route": route.name, "alerts": [body]}).to_string();
            let mut targets: Vec<Recipient<'_>> = Vec::new();
            for target in &route.to {
                match target {
                    Target::Owner => {
                        let Some(owner) = alert.owner() else { continue };
                        for p in routing.people.iter().filter(|p| p.csm_id.as_deref() == Some(owner)) {
                            targets.extend(recipients(&routing, p));
                        }
                    }
                    Target::Managers | Target::Executives => {
                        let role = if *target == Target::Managers {
                            crate::auth::Role::Manager
                        } else {
                            crate::auth::Role::Executive
                        };
                        for p in routing.people.iter().filter(|p| p.role == role) {
                            targets.extend(recipients(&routing, p));
                        }
                    }
                    Target::Destination(i) => {
                        let d = &routing.destinations[*i];
                        targets.push(Recipient {
                            id: &d.name,
                            destination: &d.name,
                            dest_kind: d.channel.kind(),
                            zone: None,
                            book: None,
                            person: false,
                        });
                    }
                }
            }
            for r in targets {
                if r.person && self.0.is_unsubscribed(r.id, &route.name) {
                    continue;
                }
                let id = alert_message_id(alert, r.id, r.destination);
                if out.iter().any(|p| p.id == id) {
                    continue;
                }
                let (kind, group, next_at) = grouping(route, &r, now);
                out.push(Planned {
                    id,
                    kind,
                    refs: vec![alert.alert_id.clone()],
                    destination: r.destination.to_owned(),
                    dest_kind: r.dest_kind,
                    recipient: r.id.to_owned(),
                    account_id: account_id.clone(),
                    book: r.book.map(str::to_owned),
                    severity: Some(severity.to_owned()),
                    created_at: now,
                    next_at,
                    payload: payload.clone(),
                    group,
                });
            }
        }
        counter!("cspulse_deliveries_planned_total").increment(out.len() as u64);
        out
    }
}

/// A message's kind, group key and due time under `route`.
fn grouping(route: &Route, r: &Recipient<'_>, now: Ts) -> (&'static str, Option<String>, Ts) {
    if let Some(at) = route.digest {
        let due = next_local(at, r.zone.unwrap_or(&TimeZone::UTC), now);
        let key = format!("digest\n{}\n{}\n{}\n{due}", route.name, r.id, r.destination);
        return ("digest", Some(key), due);
    }
    if route.group_window > 0 {
        let key = format!("group\n{}\n{}\n{}", route.name, r.id, r.destination);
        return ("alert", Some(key), now + route.group_window);
    }
    ("alert", None, now)
}

/// The alerts of a payload, and its route.
fn parse_payload(payload: &str) -> (Option<String>, Vec<Value>) {
    let v: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    let route = v.get("route").and_then(Value::as_str).map(str::to_owned);
    let alerts = v.get("alerts").and_then(Value::as_array).cloned().unwrap_or_default();
    (route, alerts)
}

/// Whether `account_id` has left the book `book` (it is gone, or another
/// csm owns it now).
fn left_book(shared: &Shared, account_id: Option<&str>, book: Option<&str>) -> bool {
    match (account_id, book) {
        (Some(account), Some(book)) => shared.snapshot().account_owner(account).is_none_or(|owner| owner != Some(book)),
        _ => false,
    }
}

/// A stored destination kind as the ledger's static name.
fn dest_kind_of(stored: &str) -> &'static str {
    match stored {
        "email" => "email",
        "slack" => "slack",
        _ => "webhook",
    }
}

/// One message from a due group's members (those still in the
/// recipient's book); `None` if none are.
fn group_message(shared: &Shared, members: Vec<Member>, now: Ts) -> Option<Planned> {
    let kept: Vec<Member> = members
        .into_iter()
        .filter(|m| {
            let left = left_book(shared, m.account_id.as_deref(), m.book.as_deref());
            if left {
                counter!("cspulse_deliveries_total", "kind" => "alert", "destination_kind" => m.dest_kind.clone(), "status" => "cancelled").increment(1);
            }
            !left
        })
        .collect();
    let first = kept.first()?;
    let keys: Vec<String> = kept.iter().map(|m| m.key.clone()).collect();
    let mut alerts = Vec::new();
    let mut refs = Vec::new();
    let mut route = None;
    for m in &kept {
        let (r, a) = parse_payload(&m.payload);
        route = route.or(r);
        for alert in a {
            if let Some(id) = alert.get("alert_id").and_then(Value::as_str) {
                refs.push(id.to_owned());
            }
            alerts.push(alert);
        }
    }
    let critical = kept.iter().any(|m| m.severity.as_deref() == Some("critical"));
    let single_account = kept.iter().all(|m| m.account_id == first.account_id);
    Some(Planned {
        id: group_id(&first.kind, &keys),
        kind: if first.kind == "digest" { "digest" } else { "alert" },
        refs,
        destination: first.destination.clone(),
        dest_kind: dest_kind_of(&first.dest_kind),
        recipient: first.recipient.clone(),
        account_id: if single_account { first.account_id.clone() } else { None },
        book: if single_account { first.book.clone() } else { None },
        severity: Some(if critical { "critical" } else { "warning" }.to_owned()),
        created_at: now,
        next_at: now,
        payload: json!({"route": route, "alerts": alerts}).to_string(),
        group: None,
    })
}

/// Sends due messages until `stop`.
pub async fn run(
    shared: Arc<Shared>,
    store: HistoryStore,
    delivery: Arc<DeliveryService>,
    mut stop: watch::Receiver<bool>,
) {
    match store.unsubscribed().await {
        Ok(pairs) => delivery.set_unsubscribed(pairs),
        Err(e) => warn!(error = %e, "cannot read the followed unsubscribe links; they apply once the store answers"),
    }
    let routing = delivery.routing();
    info!(
        destinations = routing.destinations.len(),
        people = routing.people.len(),
        routes = routing.routes.len(),
        "delivery running"
    );
    let slots = Arc::new(Semaphore::new(routing.concurrency));
    let in_flight: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
    let finished = Arc::new(Notify::new());
    let mut failing = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let now = wall_now();
        let mut wait = Duration::from_secs(1);
        let round = async {
            for group in store.due_groups(now).await? {
                let made = store.flush_group(&group, now, |members| group_message(&shared, members, now)).await?;
                if made.is_none() {
                    info!(
                        group = group.replace('\n', "/"),
                        "a group's alerts all left the recipient's book: nothing to send"
                    );
                }
            }
            // As many as there are free slots: each attempt reads its row.
            let free = slots.available_permits().max(1) as i64;
            let due = store.due_ids(now, free).await?;
            Ok::<_, sqlx::Error>((due, free))
        };
        match round.await {
            Ok((due, free)) => {
                if failing {
                    info!("delivery reads the ledger again");
                    failing = false;
                }
                let more = due.len() as i64 == free;
                for id in due {
                    if !in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone()) {
                        continue;
                    }
                    let Ok(permit) = slots.clone().acquire_owned().await else { return };
                    let (shared, store, delivery) = (shared.clone(), store.clone(), delivery.clone());
                    let (in_flight, finished) = (in_flight.clone(), finished.clone());
                    tokio::spawn(async move {
                        // Read again now that no other attempt is in flight:
                        // the page may predate the last attempt's outcome.
                        let now = wall_now();
                        match store.delivery(&id).await {
                            Ok(Some(d)) if matches!(d.status.as_str(), "pending" | "failed") && d.next_at <= now => {
                                attempt(&shared, &store, &delivery, d).await;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                warn!(id, error = %e, "cannot read a delivery before its attempt; it is tried again")
                            }
                        }
                        in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                        drop(permit);
                        finished.notify_one();
                    });
                }
                // Rows due now are in flight (their attempt's end wakes
                // this loop), unless a full page of them was read: then the
                // next page once a slot is free.
                if more {
                    wait = Duration::from_millis(50);
                } else if let Ok(Some(next)) = store.next_due().await {
                    let ahead = next.saturating_sub(wall_now());
                    if ahead > 0 {
                        wait = wait.min(Duration::from_micros(ahead as u64));
                    }
                }
            }
            Err(e) => {
                if !failing {
                    warn!(store = store.describe(), error = %e, "delivery cannot read the ledger; retrying");
                }
                failing = true;
                wait = Duration::from_secs(2);
            }
        }
        // Messages being sent are due again only once their attempt is in.
        let busy = !in_flight.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
        tokio::select! {
            _ = stop.changed() => {}
            _ = delivery.wake.notified() => {}
            _ = finished.notified(), if busy => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(2))) => {}
        }
    }
}

/// One attempt at `d`, its outcome recorded.
async fn attempt(shared: &Shared, store: &HistoryStore, delivery: &DeliveryService, d: Delivery) {
    let routing = delivery.routing();
    let now = wall_now();
    let record = |status: &'static str, error: Option<String>, attempts: i64, next_at: Ts, sent_at: Option<Ts>| {
        let id = d.id.clone();
        let dest_kind = d.dest_kind.clone();
        let kind = d.kind.clone();
        async move {
            let outcome = Outcome { status, attempts, last_error: error.as_deref(), next_at, sent_at };
            if let Err(e) = store.set_outcome(&id, &outcome).await {
                warn!(id, status, error = %e, "cannot record a delivery's outcome; it is tried again");
                return;
            }
            if status != "pending" {
                counter!("cspulse_deliveries_total", "kind" => kind, "destination_kind" => dest_kind, "status" => status).increment(1);
            }
        }
    };
    if left_book(shared, d.account_id.as_deref(), d.book.as_deref()) {
        info!(
            id = d.id,
            recipient = d.recipient,
            account = d.account_id,
            "the account left the recipient's book: cancelled"
        );
        record("cancelled", Some("the account left the recipient's book".into()), d.attempts, d.next_at, None).await;
        return;
    }
    let person = routing.person(&d.recipient).filter(|_| d.recipient != d.destination);
    if let Some(p) = person
        && let Some(q) = p.quiet
        && d.severity.as_deref() != Some("critical")
        && let Some(until) = quiet_until(q, &p.zone, now)
    {
        record(if d.attempts > 0 { "failed" } else { "pending" }, d.last_error.clone(), d.attempts, until, None).await;
        return;
    }
    let Some(dest) = routing.destination(&d.destination) else {
        let error = format!("destination {:?} is no longer configured", d.destination);
        record("gave_up", Some(error), d.attempts, d.next_at, None).await;
        return;
    };
    let (route, alerts) = parse_payload(&d.payload);
    let unsubscribe = match (person, &route, &dest.channel) {
        (Some(p), Some(route), Channel::Email { .. }) => {
            Some(format!("{}/api/v1/unsubscribe?link={}", routing.base_url, delivery.unsubscribe_token(&p.id, route)))
        }
        _ => None,
    };
    let content = Content {
        id: &d.id,
        kind: &d.kind,
        alerts: &alerts,
        base_url: &routing.base_url,
        role: person.map(|p| p.role),
        unsubscribe,
    };
    let result = match &dest.channel {
        Channel::Email { to, .. } => match person {
            Some(p) => match &p.email {
                Some(addr) => delivery.senders.email(dest, std::slice::from_ref(addr), &content).await,
                None => Err(send::SendError::Build(format!("{} has no email address", p.id))),
            },
            None => delivery.senders.email(dest, to, &content).await,
        },
        Channel::Slack { .. } => delivery.senders.slack(dest, &content).await,
        Channel::Webhook { .. } => delivery.senders.webhook(dest, &content, now / MICROS_PER_SEC).await,
    };
    let attempts = d.attempts + 1;
    match result {
        Ok(()) => {
            let sent = wall_now();
            histogram!("cspulse_delivery_latency_seconds", "destination_kind" => d.dest_kind.clone())
                .record((sent - d.created_at).max(0) as f64 / 1e6);
            record("sent", None, attempts, d.next_at, Some(sent)).await;
        }
        Err(e) => {
            let next = wall_now() + i64::try_from(backoff(attempts).as_micros()).unwrap_or(i64::MAX);
            let error = e.to_string();
            if routing.give_up_after > 0 && next - d.created_at > routing.give_up_after {
                warn!(id = d.id, destination = d.destination, attempts, error, "delivery gave up");
                record("gave_up", Some(error), attempts, next, None).await;
            } else {
                warn!(id = d.id, destination = d.destination, attempts, error, "delivery failed; retrying");
                record("failed", Some(error), attempts, next, None).await;
            }
        }
    }
}

/// A copy of `d` to send again (a resend asked for through the API): a new
/// row, so the original keeps its history and a `sent` row is never sent
/// again; its id is the original's with the resend's number.
pub fn resend_of(d: &Delivery, n: u32, now: Ts) -> Planned {
    Planned {
        id: format!("{}_r{n}", d.id),
        kind: match d.kind.as_str() {
            "digest" => "digest",
            "report" => "report",
            _ => "alert",
        },
        refs: d.refs.clone(),
        destination: d.destination.clone(),
        dest_kind: dest_kind_of(&d.dest_kind),
        recipient: d.recipient.clone(),
        account_id: d.account_id.clone(),
        book: d.book.clone(),
        severity: d.severity.clone(),
        created_at: now,
        next_at: now,
        payload: d.payload.clone(),
        group: None,
    }
}

/// A ledger row as the API shows it.
pub fn to_json(d: &Delivery) -> Value {
    let at = |t: Ts| crate::time::format_rfc3339(t);
    json!({
        "id": d.id,
        "kind": d.kind,
        "refs": d.refs,
        "destination": d.destination,
        "destination_kind": d.dest_kind,
        "recipient": d.recipient,
        "account_id": d.account_id,
        "severity": d.severity,
        "status": d.status,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "created_at": at(d.created_at),
        "next_at": (matches!(d.status.as_str(), "pending" | "failed")).then(|| at(d.next_at)),
        "sent_at": d.sent_at.map(at),
    })
}

#[cfg(test)]
mod tests;
