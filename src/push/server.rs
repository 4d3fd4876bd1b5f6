//! WebSocket push (SPEC §6) on axum: `GET /ws`, token auth before the
//! upgrade, role-checked subscriptions, per-topic cadence ticks, alerts at
//! once, and a bounded queue per connection.
//!
//! Every message is serialized once per channel and shared by all
//! subscribers (`Utf8Bytes` is reference-counted). Fan-out never waits: a
//! subscriber's queue ([`Outbox`]) folds older updates of the same channel
//! and topic together when full, and a subscriber whose queue is still full
//! is disconnected with 1008 `slow consumer`, so a slow or dead client never
//! slows ingestion or other clients. A writer that cannot hand its queue to
//! the socket before the client has been silent for the drop time is
//! dropped too. Locks are taken in one order (hub, then engine, then a
//! connection's queue) and never held across `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use metrics::{counter, gauge};
use serde_json::{Value, json};
use tracing::debug;

use super::outbox::{Kind, Next, Outbox, Queued, Refused};
use super::{ChannelState, PushTopic};
use crate::alert::{Alert, ScopeKind, Severity};
use crate::auth::{Auth, Principal};
use crate::http::{ApiError, TokenQuery, bearer};
use crate::ingest::{Pushed, Shared};
use crate::state::view::Channel;

/// Limits of §6.5.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_subscriptions: usize,
    pub max_frame_bytes: usize,
    pub max_messages_per_sec: u32,
    /// Outbound messages queued per connection before it counts as slow.
    pub queue: usize,
    pub ping_every: Duration,
    pub drop_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 20_000,
            max_subscriptions: 32,
            max_frame_bytes: 4096,
            max_messages_per_sec: 20,
            queue: 256,
            ping_every: Duration::from_secs(30),
            drop_after: Duration::from_secs(90),
        }
    }
}

struct Entry {
    /// The channel's number (for folding queued updates).
    id: u64,
    /// Bumped when a subscribe brings the dormant channel up to date (a
    /// tick whose views were taken before must not move it back).
    epoch: u64,
    state: ChannelState,
    subscribers: HashMap<u64, Arc<Outbox>>,
}

/// Channels with their push state and subscribers.
pub struct PushService {
    shared: Arc<Shared>,
    auth: Arc<Auth>,
    allowed_origins: Vec<String>,
    history: usize,
    limits: Limits,
    channels: Mutex<HashMap<Channel, Entry>>,
    /// Held while a tick builds its views and applies them, so ticks apply
    /// in the order their views were taken (a book change pushed at once
    /// is never undone by a cadence tick whose view is older).
    ticking: Mutex<()>,
    /// Books whose membership is to be pushed (`None` inside: every book),
    /// gathered while one such push runs, and its wake-up.
    books_due: Mutex<Option<Option<std::collections::BTreeSet<Arc<str>>>>>,
    books_wake: tokio::sync::Notify,
    next_connection: AtomicU64,
    next_channel: AtomicU64,
    connections: AtomicUsize,
    /// Where every channel's `seq` starts: the start time in microseconds,
    /// so a restarted server numbers above anything the previous process
    /// sent, and a client resuming with an old `since` gets a snapshot, not
    /// somebody else's messages.
    seq_base: u64,
}

fn frame(text: &str) -> Utf8Bytes {
    Utf8Bytes::from(text)
}

impl PushService {
    pub fn new(
        shared: Arc<Shared>,
        auth: Arc<Auth>,
        allowed_origins: Vec<String>,
        history: usize,
        limits: Limits,
    ) -> Arc<Self> {
        Arc::new(PushService {
            shared,
            auth,
            allowed_origins,
            history,
            limits,
            channels: Mutex::new(HashMap::new()),
            ticking: Mutex::new(()),
            books_due: Mutex::new(None),
            books_wake: tokio::sync::Notify::new(),
            next_connection: AtomicU64::new(1),
            next_channel: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            seq_base: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        })
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<Channel, Entry>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues to every subscriber without waiting; subscribers whose queue
    /// is still full after folding are dropped (they close as slow consumers).
    fn fan_out(channel: &Channel, entry: &mut Entry, message: &Utf8Bytes, kind: Kind) {
        let (mut sent, before) = (0, entry.subscribers.len());
        entry.subscribers.retain(|_, outbox| match outbox.push(Queued { text: message.clone(), kind }) {
            Ok(()) => {
                sent += 1;
                true
            }
            Err(Refused::Full) => {
                counter!("cspulse_ws_slow_consumer_disconnects_total").increment(1);
                false
            }
            Err(Refused::Closed) => false,
        });
        counter!("cspulse_ws_messages_sent_total").increment(sent);
        let dropped = before - entry.subscribers.len();
        if dropped > 0 {
            gauge!("cspulse_ws_subscriptions", "channel" => channel_kind(channel)).decrement(dropped as f64);
        }
    }

    /// A tick of `topic` on every channel with subscribers.
    pub fn tick(&self, topic: PushTopic) {
        let _ticking = self.ticking.lock().unwrap_or_else(|p| p.into_inner());
        // The channels to tick, then their views under the engine lock
        // alone, then the diffs and fan-out under the hub lock alone: alert
        // messages and subscribes wait for neither view building nor ingest.
        let wanted: Vec<(Channel, u64)> = self
            .channels()
            .iter()
            .filter(|(_, e)| !e.subscribers.is_empty())
            .map(|(c, e)| (c.clone(), e.epoch))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let views: Vec<Value> = {
            let engine = self.shared.engine();
            wanted.iter().map(|(c, _)| engine.channel_view(c)).collect()
        };
        let mut channels = self.channels();
        for ((channel, epoch), view) in wanted.iter().zip(&views) {
            let Some(entry) = channels.get_mut(channel) else { continue };
            // Brought up to date by a subscribe meanwhile: the view is older.
            if entry.epoch != *epoch || entry.subscribers.is_empty() {
                continue;
            }
            if let Some(message) = entry.state.tick(topic, view) {
                Self::fan_out(channel, entry, &frame(&message), Kind::Update(entry.id, topic));
            }
        }
    }

    /// Pushes at once the membership of the books of `csms` (every book
    /// when `None`): an account that left a book is deleted from its
    /// channel, one that joined arrives whole (§6.2 additions).
    pub fn books_changed(&self, csms: Option<&[Arc<str>]>) {
        let _ticking = self.ticking.lock().unwrap_or_else(|p| p.into_inner());
        let wanted: Vec<(Channel, u64)> = self
            .channels()
            .iter()
            .filter(|(c, e)| {
                !e.subscribers.is_empty()
                    && matches!(c, Channel::Csm(id) if csms.is_none_or(|l| l.iter().any(|x| **x == **id)))
            })
            .map(|(c, e)| (c.clone(), e.epoch))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let views: Vec<Value> = {
            let engine = self.shared.engine();
            wanted.iter().map(|(c, _)| engine.channel_view(c)).collect()
        };
        let mut channels = self.channels();
        for ((channel, epoch), view) in wanted.iter().zip(&views) {
            let Some(entry) = channels.get_mut(channel) else { continue };
            // Brought up to date by a subscribe meanwhile: the view is older.
            if entry.epoch != *epoch || entry.subscribers.is_empty() {
                continue;
            }
            if let Some(message) = entry.state.membership("accounts", view) {
                Self::fan_out(channel, entry, &frame(&message), Kind::Update(entry.id, PushTopic::Health));
            }
        }
    }

    /// `alert` messages on the channels §6.4 routes each alert to (the
    /// `alerts` sections follow at the next alerts tick).
    pub fn alert_messages(&self, alerts: &[Arc<Alert>]) {
        let mut channels = self.channels();
        for alert in alerts {
            let json = alert.to_json();
            for channel in routes(alert) {
                if let Some(entry) = channels.get_mut(&channel)
                    && !entry.subscribers.is_empty()
                {
                    let message = entry.state.alert(&json);
                    Self::fan_out(&channel, entry, &frame(&message), Kind::Alert(entry.id));
                }
            }
        }
    }

    /// Registers a subscriber and returns what it gets first.
    fn subscribe(&self, conn: u64, channel: &Channel, since: Option<u64>, outbox: &Arc<Outbox>) -> Result<(), ()> {
        let mut channels = self.channels();
        let entry = channels.entry(channel.clone()).or_insert_with(|| Entry {
            id: self.next_channel.fetch_add(1, Ordering::Relaxed),
            epoch: 0,
            state: ChannelState::new(channel.to_string(), self.shared.engine().channel_view(channel), self.history)
                .starting_at(self.seq_base),
            subscribers: HashMap::new(),
        });
        if entry.subscribers.is_empty() {
            // A dormant channel is not ticked; bring it up to date (recorded
            // as updates, so a client resuming with `since` replays them).
            let current = self.shared.engine().channel_view(channel);
            for topic in PushTopic::ALL {
                entry.state.tick(topic, &current);
            }
            entry.epoch += 1;
        }
        // A replay longer than half the queue comes as a snapshot instead.
        for message in entry.state.subscribe(since, self.limits.queue / 2) {
            outbox.push(Queued { text: frame(&message), kind: Kind::Barrier(entry.id) }).map_err(|_| ())?;
        }
        entry.subscribers.insert(conn, outbox.clone());
        gauge!("cspulse_ws_subscriptions", "channel" => channel_kind(channel)).increment(1.0);
        Ok(())
    }

    fn unsubscribe(&self, conn: u64, channel: &Channel) -> bool {
        let removed = self.channels().get_mut(channel).is_some_and(|e| e.subscribers.remove(&conn).is_some());
        if removed {
            gauge!("cspulse_ws_subscriptions", "channel" => channel_kind(channel)).decrement(1.0);
        }
        removed
    }

    /// Runs the cadence tickers and the alert relay until `stop`.
    ///
    /// `health`, `usage` and `revenue` tick at their wall-clock cadence.
    /// `tickets` is real time: a tick follows each folded batch, at most
    /// one per `max(cadence.tickets, 50 ms)`, so a change waits at most that
    /// long and usually not at all. `alert` messages go out from their own
    /// task the moment alerts are folded; the `alerts` sections follow in
    /// the same real-time manner (at most one tick per 50 ms).
    pub async fn run(self: Arc<Self>, cadences: [Duration; 4], mut stop: tokio::sync::watch::Receiver<bool>) {
        let alerts_due = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(self.clone().relay_alerts(alerts_due.clone(), stop.clone()));
        tokio::spawn(self.clone().relay_books(stop.clone()));
        let periodic = [(0, PushTopic::Health), (1, PushTopic::Usage), (3, PushTopic::Revenue)]
            .map(|(i, topic)| (topic, cadences[i].max(Duration::from_millis(100))));
        let mut tickers: Vec<tokio::time::Interval> = periodic.iter().map(|(_, d)| tokio::time::interval(*d)).collect();
        for t in &mut tickers {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let [h, u, r] = &mut tickers[..] else { unreachable!("three periodic cadences") };
        let mut tickets = RealTime::new(cadences[2].max(Duration::from_millis(50)));
        let mut sections = RealTime::new(Duration::from_millis(50));
        loop {
            let (tickets_at, sections_at) = (tickets.at(), sections.at());
            let topic = tokio::select! {
                _ = h.tick() => periodic[0].0,
                _ = u.tick() => periodic[1].0,
                _ = r.tick() => periodic[2].0,
                _ = self.shared.folded.notified(), if tickets.idle() => { tickets.schedule(); continue }
                _ = tokio::time::sleep_until(tickets_at), if !tickets.idle() => { tickets.fire(); PushTopic::Tickets }
                _ = alerts_due.notified(), if sections.idle() => { sections.schedule(); continue }
                _ = tokio::time::sleep_until(sections_at), if !sections.idle() => { sections.fire(); PushTopic::Alerts }
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { return } else { continue },
            };
            let me = self.clone();
            let started = tokio::time::Instant::now();
            let _ = tokio::task::spawn_blocking(move || me.tick(topic)).await;
            // Real-time ticks take at most a quarter of the time: a tick that
            // took T waits 3T before the next one, so building views never
            // starves ingestion (updates coalesce instead).
            let took = started.elapsed();
            match topic {
                PushTopic::Tickets => tickets.rest(took * 3),
                PushTopic::Alerts => sections.rest(took * 3),
                _ => {}
            }
        }
    }

    /// Sends `alert` messages the moment alerts are folded, in batches of
    /// an eighth of a connection's queue (a reading client must not
    /// overflow on a burst), and asks for an `alerts` sections tick; pushes
    /// book changes at once, in fold order with the alerts.
    async fn relay_alerts(
        self: Arc<Self>,
        due: Arc<tokio::sync::Notify>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut pushed = self.shared.alerts.subscribe();
        loop {
            let first = tokio::select! {
                a = pushed.recv() => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            let first = match first {
                Ok(p) => p,
                // Lagging behind the broadcast: the sections still catch up,
                // and every book is brought to its current membership.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.books_due(None);
                    due.notify_one();
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let (mut batch, mut books) = (Vec::new(), None);
            match first {
                Pushed::Alert(a) => batch.push(a),
                Pushed::Books(b) => books = Some(b),
            }
            // More alerts up to the batch size; a book change ends the batch
            // (it is pushed after the alerts folded before it).
            while books.is_none()
                && batch.len() < (self.limits.queue / 8).max(1)
                && let Ok(more) = pushed.try_recv()
            {
                match more {
                    Pushed::Alert(a) => batch.push(a),
                    Pushed::Books(b) => books = Some(b),
                }
            }
            if !batch.is_empty() {
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.alert_messages(&batch)).await;
            }
            if let Some(csms) = books {
                self.books_due(Some(&csms));
            }
            due.notify_one();
        }
    }

    /// Asks for the membership of `csms` (every book: `None`) to be pushed.
    fn books_due(&self, csms: Option<&[Arc<str>]>) {
        let mut due = self.books_due.lock().unwrap_or_else(|p| p.into_inner());
        match (due.as_mut(), csms) {
            (Some(None), _) => {}
            (_, None) => *due = Some(None),
            (Some(Some(set)), Some(csms)) => set.extend(csms.iter().cloned()),
            (None, Some(csms)) => *due = Some(Some(csms.iter().cloned().collect())),
        }
        self.books_wake.notify_one();
    }

    /// Pushes book changes as they are asked for, on a task of their own:
    /// building a book's view may wait behind a cadence tick, and `alert`
    /// messages never wait for either. (The alerts folded before a change
    /// were handed to the sockets before it was asked for.)
    async fn relay_books(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.books_wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let Some(due) = self.books_due.lock().unwrap_or_else(|p| p.into_inner()).take() else { continue };
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let csms: Option<Vec<Arc<str>>> = due.map(|set| set.into_iter().collect());
                me.books_changed(csms.as_deref());
            })
            .await;
        }
    }
}

/// A real-time topic: a change schedules a tick, at most one per `gap`.
struct RealTime {
    gap: Duration,
    rest: Duration,
    last: tokio::time::Instant,
    due: Option<tokio::time::Instant>,
}

impl RealTime {
    fn new(gap: Duration) -> Self {
        RealTime { gap, rest: Duration::ZERO, last: tokio::time::Instant::now() - gap, due: None }
    }

    fn idle(&self) -> bool {
        self.due.is_none()
    }

    fn at(&self) -> tokio::time::Instant {
        self.due.unwrap_or_else(tokio::time::Instant::now)
    }

    fn schedule(&mut self) {
        self.due = Some((self.last + self.gap.max(self.rest)).max(tokio::time::Instant::now()));
    }

    fn fire(&mut self) {
        self.due = None;
        self.last = tokio::time::Instant::now();
    }

    /// The least pause after the tick just made.
    fn rest(&mut self, pause: Duration) {
        self.rest = pause;
    }
}

fn channel_kind(c: &Channel) -> &'static str {
    match c {
        Channel::Executive => "executive",
        Channel::Manager => "manager",
        Channel::Analyst => "analyst",
        Channel::Csm(_) => "csm",
    }
}

/// §6.4 routing of `alert` messages.
pub fn routes(alert: &Alert) -> Vec<Channel> {
    let critical = alert.severity == Severity::Critical;
    let mut out = Vec::new();
    match alert.scope {
        ScopeKind::Account => {
            if let Some(owner) = alert.owner() {
                out.push(Channel::Csm(owner.to_owned()));
            }
            out.push(Channel::Manager);
            if critical {
                out.push(Channel::Executive);
            }
        }
        ScopeKind::Csm => out.extend([Channel::Csm(alert.scope_id.clone()), Channel::Manager, Channel::Executive]),
        ScopeKind::Segment | ScopeKind::Portfolio => out.extend([Channel::Manager, Channel::Executive]),
    }
    out
}

/// `GET /ws`: checks the origin and the token, then upgrades.
pub async fn upgrade(
    State(service): State<Arc<PushService>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())
        && !service.allowed_origins.is_empty()
        && !service.allowed_origins.iter().any(|a| a == origin || a == "*")
    {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "origin not allowed").into_response();
    }
    let who = match service.auth.verify(bearer(&headers, &query)) {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if service.connections.load(Ordering::Relaxed) >= service.limits.max_connections {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "rate_limited", "too many connections").into_response();
    }
    let max = service.limits.max_frame_bytes;
    // Small buffers: the read buffer is allocated per connection up front
    // (tungstenite's default is 128 KiB); clients send small frames.
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| connection(service, who, socket))
}

/// Per-connection read buffer (bytes). Clients send small messages; a larger
/// frame (up to the inbound limit) gets room reserved for it as it arrives.
/// The buffer is zero-filled and stays resident, so it is most of what an
/// idle connection costs: 4 KiB measured 9.4 KiB per idle connection, 1 KiB
/// 6.1 KiB, 512 bytes 5.6 KiB (load-tests `fanout`).
const READ_BUFFER: usize = 512;
/// Outgoing frames are gathered up to this size before a write; the writer
/// flushes after each batch anyway.
const WRITE_BUFFER: usize = 16 * 1024;

fn error(code: &str, message: &str) -> Utf8Bytes {
    frame(&json!({"type": "error", "code": code, "message": message}).to_string())
}

async fn connection(service: Arc<PushService>, who: Principal, socket: WebSocket) {
    let conn = service.next_connection.fetch_add(1, Ordering::Relaxed);
    service.connections.fetch_add(1, Ordering::Relaxed);
    gauge!("cspulse_ws_connections").increment(1.0);
    let (mut sink, mut stream) = socket.split();
    let outbox = Arc::new(Outbox::new(service.limits.queue));
    let mut subscribed: Vec<Channel> = Vec::new();
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(service.limits.ping_every);
    let mut window = (Instant::now(), 0u32);
    let mut batch: Vec<Utf8Bytes> = Vec::new();
    let close = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
    };
    let mut slow = false;
    loop {
        tokio::select! {
            next = outbox.next(&mut batch) => match next {
                Next::Messages => {
                    // Hand the whole queue to the socket, then flush once;
                    // give up when the client has been silent too long.
                    let deadline = tokio::time::Instant::from_std(last_heard + service.limits.drop_after);
                    let send = async {
                        for text in batch.drain(..) {
                            sink.feed(Message::Text(text)).await?;
                        }
                        sink.flush().await
                    };
                    tokio::select! {
                        sent = tokio::time::timeout_at(deadline, send) => match sent {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => break,
                            Err(_) => {
                                counter!("cspulse_ws_stalled_disconnects_total").increment(1);
                                break;
                            }
                        },
                        _ = outbox.became_slow() => { slow = true; break; }
                    }
                    batch.clear();
                }
                Next::Slow => { slow = true; break; }
                Next::Closed => break,
            },
            inbound = stream.next() => {
                let Some(Ok(msg)) = inbound else { break };
                last_heard = Instant::now();
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Close(_) => break,
                    _ => continue,
                };
                // At most N client messages per second.
                if window.0.elapsed() >= Duration::from_secs(1) { window = (Instant::now(), 0); }
                window.1 += 1;
                let reply = if window.1 > service.limits.max_messages_per_sec {
                    Some(error("rate_limited", "at most 20 messages per second"))
                } else {
                    handle(&service, &who, conn, &text, &outbox, &mut subscribed)
                };
                if let Some(reply) = reply
                    && outbox.push(Queued { text: reply, kind: Kind::Reply }).is_err()
                {
                    slow = outbox.is_slow();
                    break;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > service.limits.drop_after {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close(1001, "no activity"))).await;
                    break;
                }
                let deadline = tokio::time::Instant::from_std(last_heard + service.limits.drop_after);
                if !matches!(tokio::time::timeout_at(deadline, sink.send(Message::Ping(Default::default()))).await, Ok(Ok(()))) {
                    break;
                }
            }
        }
    }
    if slow {
        // Dropped from a full fan-out: this subscriber was too slow. The
        // close frame waits behind what the socket still holds; give a
        // client that is reading again a few seconds to get it.
        let _ = tokio::time::timeout(Duration::from_secs(10), sink.send(close(1008, "slow consumer"))).await;
    }
    outbox.close();
    for c in &subscribed {
        service.unsubscribe(conn, c);
    }
    service.connections.fetch_sub(1, Ordering::Relaxed);
    gauge!("cspulse_ws_connections").decrement(1.0);
    debug!(conn, slow, "websocket closed");
}

/// One client message; returns an immediate reply, if any.
fn handle(
    service: &PushService,
    who: &Principal,
    conn: u64,
    text: &str,
    outbox: &Arc<Outbox>,
    subscribed: &mut Vec<Channel>,
) -> Option<Utf8Bytes> {
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        return Some(error("bad_request", "messages are JSON objects"));
    };
    let channel_of = |msg: &Value| -> Result<Channel, Utf8Bytes> {
        let name = msg["channel"].as_str().ok_or_else(|| error("bad_request", "channel is required"))?;
        let channel = Channel::parse(name).ok_or_else(|| error("unknown_channel", "no such channel"))?;
        if !who.may_read(&channel) {
            return Err(error("forbidden", "this role may not read that channel"));
        }
        Ok(channel)
    };
    match msg["op"].as_str() {
        Some("ping") => Some(frame(r#"{"type":"pong"}"#)),
        Some("subscribe") => {
            let channel = match channel_of(&msg) {
                Ok(c) => c,
                Err(e) => return Some(e),
            };
            if subscribed.contains(&channel) {
                service.unsubscribe(conn, &channel);
                subscribed.retain(|c| c != &channel);
            }
            if subscribed.len() >= service.limits.max_subscriptions {
                return Some(error("bad_request", "too many subscriptions on this connection"));
            }
            let since = msg["since"].as_u64();
            if service.subscribe(conn, &channel, since, outbox).is_ok() {
                subscribed.push(channel);
            }
            None
        }
        Some("unsubscribe") => match channel_of(&msg) {
            Ok(channel) => {
                service.unsubscribe(conn, &channel);
                subscribed.retain(|c| c != &channel);
                None
            }
            Err(e) => Some(e),
        },
        _ => Some(error("bad_request", "op must be subscribe, unsubscribe or ping")),
    }
}
