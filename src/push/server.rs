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
//!
//! §18 limits: connections per token subject; a socket is closed with 4401
//! when its token expires (one timer per connection serves both the pings and
//! the expiry); binary frames are `bad_request`; every client frame counts
//! toward the rate limit. A channel without subscribers is dropped after
//! `push.idle_channel_ttl`; recreated, it starts a new epoch (§12) numbered
//! above everything the old one sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use metrics::{counter, gauge};
use serde_json::{Value, json};
use tracing::debug;

use super::book::{Changes, ChannelSeen};
use super::outbox::{Kind, Next, Outbox, Queued, Refused};
use super::{ChannelState, PushTopic};
use crate::alert::{Alert, ScopeKind, Severity};
use crate::auth::{Auth, Principal};
use crate::http::{ApiError, TokenQuery, bearer};
use crate::ingest::{Pushed, Shared};
use crate::state::view::Channel;

/// Limits of §6.5 and §18.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// Connections per token `sub`.
    pub max_connections_per_subject: usize,
    /// How long a channel without subscribers is kept.
    pub idle_channel_ttl: Duration,
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
            max_connections_per_subject: 50,
            idle_channel_ttl: Duration::from_secs(60),
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
    generation: u64,
    state: ChannelState,
    subscribers: HashMap<u64, Arc<Outbox>>,
    /// Since when the channel has had no subscribers (dropped after the TTL).
    idle_since: Option<Instant>,
}

impl Entry {
    /// Notes the moment the last subscriber left.
    fn note_if_idle(&mut self) {
        if self.subscribers.is_empty() && self.idle_since.is_none() {
            self.idle_since = Some(Instant::now());
        }
    }
}

/// Channels with their push state and subscribers.
pub struct PushService {
    shared: Arc<Shared>,
    auth: Arc<Auth>,
    /// Subscriptions are audit events (§18).
    audit: Arc<crate::audit::Audit>,
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
    /// What each channel's ticks were last taken from, by channel and its
    /// number (used under `ticking` only).
    seen: Mutex<HashMap<Channel, (u64, ChannelSeen)>>,
    next_connection: AtomicU64,
    next_channel: AtomicU64,
    connections: AtomicUsize,
    /// Open connections per token subject (entries at zero are removed).
    subjects: Mutex<HashMap<String, usize>>,
    /// Above every `seq` sent by a channel since dropped: a recreated
    /// channel numbers from at least here (see `subscribe`).
    seq_floor: AtomicU64,
}

fn frame(text: &str) -> Utf8Bytes {
    Utf8Bytes::from(text)
}

impl PushService {
    pub fn new(
        shared: Arc<Shared>,
        auth: Arc<Auth>,
        audit: Arc<crate::audit::Audit>,
        allowed_origins: Vec<String>,
        history: usize,
        limits: Limits,
    ) -> Arc<Self> {
        Arc::new(PushService {
            shared,
            auth,
            audit,
            allowed_origins,
            history,
            limits,
            channels: Mutex::new(HashMap::new()),
            ticking: Mutex::new(()),
            books_due: Mutex::new(None),
            books_wake: tokio::sync::Notify::new(),
            seen: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            next_channel: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            subjects: Mutex::new(HashMap::new()),
            seq_floor: AtomicU64::new(0),
        })
    }

    /// Where a new channel's `seq` starts: its creation time in
    /// microseconds, so a restarted server numbers above anything the
    /// previous process sent and a client resuming with an old `since` gets
    /// a snapshot, not somebody else's messages; and above anything an
    /// earlier epoch of a channel on this instance sent.
    fn seq_base(&self) -> u64 {
        let now = unix_micros();
        now.max(self.seq_floor.load(Ordering::Relaxed))
    }

    /// Counts a connection of `who`'s subject, or refuses it at the cap.
    fn admit(self: &Arc<Self>, who: Principal) -> Result<Admitted, Principal> {
        let mut subjects = self.subjects.lock().unwrap_or_else(|p| p.into_inner());
        let open = subjects.entry(who.sub.clone()).or_insert(0);
        if *open >= self.limits.max_connections_per_subject {
            return Err(who);
        }
        *open += 1;
        Ok(Admitted { service: self.clone(), who })
    }

    /// Drops the channels that have had no subscriber for the TTL; their
    /// `seq` numbers stay retired (`seq_floor`).
    fn drop_idle_channels(&self) {
        let ttl = self.limits.idle_channel_ttl;
        let mut channels = self.channels();
        let before = channels.len();
        channels.retain(|_, e| {
            let drop = e.subscribers.is_empty() && e.idle_since.is_some_and(|t| t.elapsed() >= ttl);
            if drop {
                self.seq_floor.fetch_max(e.state.seq() + 1, Ordering::Relaxed);
            }
            !drop
        });
        if channels.len() != before {
            gauge!("cspulse_ws_channels").set(channels.len() as f64);
        }
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
        entry.note_if_idle();
        let dropped = before - entry.subscribers.len();
        if dropped > 0 {
            gauge!("cspulse_ws_subscriptions", "channel" => channel_kind(channel)).decrement(dropped as f64);
        }
    }

    /// A tick of `topic` on every channel with subscribers, each from what
    /// changed in it since the topic's last tick (see `push::book`).
    pub fn tick(&self, topic: PushTopic) {
        let _ticking = self.ticking.lock().unwrap_or_else(|p| p.into_inner());
        let wanted: Vec<(Channel, u64, u64)> = self
            .channels()
            .iter()
            .filter(|(_, e)| !e.subscribers.is_empty())
            .map(|(c, e)| (c.clone(), e.generation, e.id))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let snapshot = self.shared.snapshot();
        let work: Vec<Option<Changes>> = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            // What a dropped channel showed goes with it.
            seen.retain(|c, (id, _)| wanted.iter().any(|(w, _, wid)| w == c && wid == id));
            wanted
                .iter()
                .map(|(channel, _, id)| {
                    let (_, seen) = seen.entry(channel.clone()).or_insert_with(|| (*id, ChannelSeen::default()));
                    seen.changes(topic, &snapshot, channel)
                })
                .collect()
        };
        let mut channels = self.channels();
        for ((channel, generation, _), work) in wanted.iter().zip(&work) {
            let Some(entry) = channels.get_mut(channel) else { continue };
            // Brought up to date by a subscribe meanwhile: the view is older.
            if entry.generation != *generation || entry.subscribers.is_empty() {
                continue;
            }
            if let Some(message) = work.as_ref().and_then(|changes| entry.state.tick_changes(topic, changes)) {
                Self::fan_out(channel, entry, &frame(&message), Kind::Update(entry.id, topic));
            }
        }
    }

    /// Pushes at once the membership of the books of `csms` (every book
    /// when `None`): an account that left a book is deleted from its
    /// channel, one that joined arrives whole (§6.2 additions).
    pub fn books_changed(&self, csms: Option<&[Arc<str>]>) {
        let wanted = |c: &Channel| matches!(c, Channel::Csm(id) if csms.is_none_or(|l| l.iter().any(|x| **x == **id)));
        self.update(wanted, PushTopic::Health, |state, view| state.membership("accounts", view));
    }

    /// Sends `update(state, view)` of `topic` on every channel with
    /// subscribers that `wanted` accepts. The channels, then their views
    /// under the engine lock alone, then the diffs and fan-out under the hub
    /// lock alone: alert messages and subscribes wait for neither view
    /// building nor ingest. One update at a time, so they apply in the
    /// order their views were taken.
    fn update(
        &self,
        wanted: impl Fn(&Channel) -> bool,
        topic: PushTopic,
        update: impl Fn(&mut ChannelState, &Value) -> Option<Arc<str>>,
    ) {
        let _ticking = self.ticking.lock().unwrap_or_else(|p| p.into_inner());
        let wanted: Vec<(Channel, u64)> = self
            .channels()
            .iter()
            .filter(|(c, e)| !e.subscribers.is_empty() && wanted(c))
            .map(|(c, e)| (c.clone(), e.generation))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let views: Vec<Value> = {
            let snapshot = self.shared.snapshot();
            wanted.iter().map(|(c, _)| snapshot.channel_view(c)).collect()
        };
        let mut channels = self.channels();
        for ((channel, generation), view) in wanted.iter().zip(&views) {
            let Some(entry) = channels.get_mut(channel) else { continue };
            // Brought up to date by a subscribe meanwhile: the view is older.
            if entry.generation != *generation || entry.subscribers.is_empty() {
                continue;
            }
            if let Some(message) = update(&mut entry.state, view) {
                Self::fan_out(channel, entry, &frame(&message), Kind::Update(entry.id, topic));
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

    /// Registers a subscriber and returns what it gets first: a `since`
    /// is honoured only within the channel's current epoch (§12), named by
    /// the client or implied by the `seq` range.
    fn subscribe(
        &self,
        conn: u64,
        channel: &Channel,
        since: Option<u64>,
        epoch: Option<u64>,
        outbox: &Arc<Outbox>,
    ) -> Result<(), ()> {
        let mut channels = self.channels();
        let created = !channels.contains_key(channel);
        let entry = channels.entry(channel.clone()).or_insert_with(|| Entry {
            id: self.next_channel.fetch_add(1, Ordering::Relaxed),
            generation: 0,
            state: ChannelState::new(channel.to_string(), self.shared.snapshot().channel_view(channel), self.history)
                .starting_at(self.seq_base())
                .in_epoch(new_epoch()),
            subscribers: HashMap::new(),
            idle_since: Some(Instant::now()),
        });
        if entry.subscribers.is_empty() {
            // A dormant channel is not ticked; bring it up to date (recorded
            // as updates, so a client resuming with `since` replays them).
            let current = self.shared.snapshot().channel_view(channel);
            for topic in PushTopic::ALL {
                entry.state.tick(topic, &current);
            }
            entry.generation += 1;
        }
        if created {
            gauge!("cspulse_ws_channels").set(channels.len() as f64);
        }
        let entry = channels.get_mut(channel).expect("just inserted");
        // Queued under the hub lock, so no fan-out comes before them. A
        // replay longer than half the queue comes as a snapshot instead.
        for message in entry.state.subscribe_in(epoch, since, self.limits.queue / 2) {
            outbox.push(Queued { text: frame(&message), kind: Kind::Barrier(entry.id) }).map_err(|_| ())?;
        }
        entry.subscribers.insert(conn, outbox.clone());
        entry.idle_since = None;
        gauge!("cspulse_ws_subscriptions", "channel" => channel_kind(channel)).increment(1.0);
        Ok(())
    }

    fn unsubscribe(&self, conn: u64, channel: &Channel) -> bool {
        let removed = self.channels().get_mut(channel).is_some_and(|e| {
            let removed = e.subscribers.remove(&conn).is_some();
            e.note_if_idle();
            removed
        });
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
        // Idle channels go within a quarter of their TTL after it.
        let mut sweep = tokio::time::interval(
            (self.limits.idle_channel_ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(15)),
        );
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = sweep.tick() => { self.drop_idle_channels(); continue }
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

/// `GET /ws`: checks the origin, the token and the caps, then upgrades.
/// The WebSocket endpoint, `/ws` (§6.1).
pub fn ws_route(push: Arc<PushService>) -> axum::Router {
    axum::Router::new().route("/ws", axum::routing::get(upgrade)).with_state(push)
}

pub async fn upgrade(
    State(service): State<Arc<PushService>>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())
        && !service.allowed_origins.is_empty()
        && !service.allowed_origins.iter().any(|a| a == origin || a == "*")
    {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "origin not allowed"));
    }
    let (who, exp) = service.auth.verify_until(bearer(&headers, &query))?;
    let ws = ws?;
    if service.connections.load(Ordering::Relaxed) >= service.limits.max_connections {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "rate_limited", "too many connections"));
    }
    let Ok(admitted) = service.admit(who) else {
        counter!("cspulse_ws_subject_refusals_total").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("at most {} connections per subject", service.limits.max_connections_per_subject),
        ));
    };
    let max = service.limits.max_frame_bytes;
    // Small buffers: the read buffer is allocated per connection up front
    // (tungstenite's default is 128 KiB); clients send small frames.
    Ok(ws
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| connection(admitted, exp, socket)))
}

/// An admitted connection: its principal, counted against its subject's
/// cap until dropped (also when the upgrade never completes).
struct Admitted {
    service: Arc<PushService>,
    who: Principal,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut subjects = self.service.subjects.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = subjects.get_mut(&self.who.sub) {
            *open -= 1;
            if *open == 0 {
                subjects.remove(&self.who.sub);
            }
        }
    }
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

fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A channel epoch (§12): random, so that epochs of one channel on
/// different instances differ too; below 2^53 so JavaScript reads it exactly.
fn new_epoch() -> u64 {
    rand::random::<u64>() >> 11
}

/// When a token with this `exp` (Unix seconds) expires, on the runtime's
/// clock (an `exp` beyond what the clock can hold: in a century).
fn expiry_instant(exp: u64) -> tokio::time::Instant {
    let left = Duration::from_secs(exp).saturating_sub(Duration::from_micros(unix_micros()));
    let now = tokio::time::Instant::now();
    now.checked_add(left).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

async fn connection(admitted: Admitted, exp: Option<u64>, socket: WebSocket) {
    let (service, who) = (&admitted.service, &admitted.who);
    let conn = service.next_connection.fetch_add(1, Ordering::Relaxed);
    service.connections.fetch_add(1, Ordering::Relaxed);
    gauge!("cspulse_ws_connections").increment(1.0);
    let (mut sink, mut stream) = socket.split();
    let outbox = Arc::new(Outbox::new(service.limits.queue));
    let mut subscribed: Vec<Channel> = Vec::new();
    let mut last_heard = Instant::now();
    // One timer for both the next ping and the token's expiry.
    let expires_at = exp.map(expiry_instant);
    let mut next_ping = tokio::time::Instant::now() + service.limits.ping_every;
    let wake = |next_ping: tokio::time::Instant| expires_at.map_or(next_ping, |e| e.min(next_ping));
    let timer = tokio::time::sleep_until(wake(next_ping));
    tokio::pin!(timer);
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
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                // Every client frame counts: at most N per second; the
                // first one over is answered, the rest are dropped unread.
                if window.0.elapsed() >= Duration::from_secs(1) { window = (Instant::now(), 0); }
                window.1 = window.1.saturating_add(1);
                let max = service.limits.max_messages_per_sec;
                let reply = if window.1 > max {
                    (window.1 == max + 1).then(|| error("rate_limited", &format!("at most {max} messages per second")))
                } else {
                    match msg {
                        Message::Text(text) => handle(service, who, conn, &text, &outbox, &mut subscribed),
                        Message::Binary(_) => Some(error("bad_request", "frames are JSON text, not binary")),
                        _ => None,
                    }
                };
                if let Some(reply) = reply
                    && outbox.push(Queued { text: reply, kind: Kind::Reply }).is_err()
                {
                    slow = outbox.is_slow();
                    break;
                }
            }
            _ = &mut timer => {
                let now = tokio::time::Instant::now();
                if expires_at.is_some_and(|e| e <= now) {
                    counter!("cspulse_ws_token_expired_total").increment(1);
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close(4401, "token expired"))).await;
                    break;
                }
                if now >= next_ping {
                    if last_heard.elapsed() > service.limits.drop_after {
                        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close(1001, "no activity"))).await;
                        break;
                    }
                    let deadline = tokio::time::Instant::from_std(last_heard + service.limits.drop_after);
                    if !matches!(tokio::time::timeout_at(deadline, sink.send(Message::Ping(Default::default()))).await, Ok(Ok(()))) {
                        break;
                    }
                    next_ping = tokio::time::Instant::now() + service.limits.ping_every;
                }
                timer.as_mut().reset(wake(next_ping));
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
                Err(e) => {
                    let asked = msg["channel"].as_str().unwrap_or_default().chars().take(140).collect();
                    service.audit.record(who, "subscribe", asked, "denied");
                    return Some(e);
                }
            };
            service.audit.record(who, "subscribe", channel.to_string(), "ok");
            if subscribed.contains(&channel) {
                service.unsubscribe(conn, &channel);
                subscribed.retain(|c| c != &channel);
            }
            if subscribed.len() >= service.limits.max_subscriptions {
                return Some(error("bad_request", "too many subscriptions on this connection"));
            }
            let (since, epoch) = (msg["since"].as_u64(), msg["epoch"].as_u64());
            if service.subscribe(conn, &channel, since, epoch, outbox).is_ok() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_expiry_is_on_the_runtime_clock_and_never_overflows() {
        let now = tokio::time::Instant::now();
        assert!(expiry_instant(0) <= tokio::time::Instant::now(), "an expired token: at once");
        let in_a_minute = expiry_instant(unix_micros() / 1_000_000 + 60);
        assert!(in_a_minute > now + Duration::from_secs(58) && in_a_minute <= now + Duration::from_secs(61));
        assert!(expiry_instant(u64::MAX) > now + Duration::from_secs(50 * 365 * 86_400), "far future, no panic");
    }
}
