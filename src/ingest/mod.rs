//! Ingest: consume the input topics, decode and validate, dead-letter what is
//! rejected, and hand everything to the fold.
//!
//! One consumer-group member, served by three threads in a pipeline:
//! `cspulse-decode` polls messages, decodes them and releases them in
//! event-time order across partitions ([`align`]) in batches of up to 1,024,
//! `cspulse-ingest` folds each batch under the engine lock (in the order
//! polled) and hands alerts to the push layer, and `cspulse-publish`
//! builds and produces the dead letters, produces the alerts to Kafka and
//! releases the messages.
//!
//! Alerts are delivered at least once (§5.3 additions): each transition is
//! posted to the engine's outbox when it is folded and leaves it only when
//! the broker acknowledges it (the delivery report), so every checkpoint
//! holds the transitions still unacknowledged and a restart produces them
//! again. A failed delivery is counted and retried with exponential backoff,
//! without limit. While the outbox holds `alerts.outbox_max` transitions the
//! consumer is paused (the group membership stays alive) and `/readyz` says
//! why; nothing is ever dropped.
//! So decoding and producing overlap the fold instead of adding to it (the
//! fold is the one step that must be serial). Offsets are never
//! committed to Kafka: the engine records, per partition, the offset of the
//! next message to fold, and on every assignment the consumer is positioned
//! there (or at the beginning for partitions it has never seen). So the
//! consumed position can never run ahead of the state that reflects it, and a
//! re-delivered message (offset behind the position) is skipped, not folded
//! twice. Checkpoints persist those positions together with the state.

pub mod align;

use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use metrics::{counter, histogram};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use serde_json::json;
use tracing::{debug, error, info, warn};

use crate::alert::Alert;
use crate::config::{KafkaConfig, TopicsConfig};
use crate::event::decode::{self, Rejection};
use crate::event::{Event, Topic};
use crate::state::snapshot::Snapshot;
use crate::state::{Engine, Input, Outcome};

/// Largest dead-letter payload kept, in bytes of the `payload` string.
pub const DEADLETTER_PAYLOAD_LIMIT: usize = 64 * 1024;
/// The longest a busy fold goes without publishing a barrier (SPEC §12:
/// at most 250 ms apart); an idle one publishes at once.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// How often an idle fold thread looks for transitions to post.
const IDLE_CHECK: Duration = Duration::from_millis(100);

/// Messages folded under one hold of the engine lock.
pub const BATCH: usize = 1024;

/// Maps configured topic names to their role.
#[derive(Clone, Debug)]
pub struct TopicNames {
    inputs: [String; 4],
}

impl TopicNames {
    pub fn new(t: &TopicsConfig) -> Self {
        TopicNames { inputs: [t.accounts.clone(), t.usage.clone(), t.tickets.clone(), t.revenue.clone()] }
    }

    pub fn role(&self, name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| self.inputs[t.index()] == name)
    }

    pub fn name(&self, topic: Topic) -> &str {
        &self.inputs[topic.index()]
    }

    pub fn inputs(&self) -> Vec<&str> {
        self.inputs.iter().map(String::as_str).collect()
    }
}

/// What the ingest loop shares with the HTTP side.
pub struct Shared {
    /// The fold's state: the ingest loop, restore, checkpoints and alert
    /// acknowledgements lock it; readers never do (see `snapshot`).
    pub engine: Mutex<Engine>,
    /// The latest publish barrier's snapshot: what HTTP and WebSocket read.
    snapshot: arc_swap::ArcSwap<Snapshot>,
    pub topics: TopicNames,
    /// Latest high watermark per assigned input partition (from librdkafka stats).
    high_watermarks: Mutex<HashMap<(Topic, i32), i64>>,
    /// Partitions currently assigned to this instance.
    assigned: Mutex<Vec<(Topic, i32)>>,
    /// Set once the state is restored (checkpoint loaded, or none to load).
    pub restored: AtomicBool,
    /// Alert transitions and book changes, the moment they are folded, in
    /// fold order (for the push layer).
    pub alerts: tokio::sync::broadcast::Sender<Pushed>,
    /// Alert transitions waiting for the broker's acknowledgement.
    outbox_len: AtomicUsize,
    /// `alerts.outbox_max`: at this many, ingestion pauses.
    outbox_max: AtomicUsize,
    /// Set while ingestion is paused because the outbox is full.
    paused: AtomicBool,
    /// Where each assigned partition was positioned at its assignment, and
    /// how many assignments there have been (the aligner starts anew on each).
    starts: Mutex<Assignment>,
    /// `time.align_wait`, in microseconds.
    align_wait_us: std::sync::atomic::AtomicU64,
    /// Signalled after every publish barrier (real-time push topics).
    pub folded: tokio::sync::Notify,
}

/// The assignments so far, and where the latest one positioned each
/// partition.
type Assignment = (u64, HashMap<(Topic, i32), i64>);

/// What the push layer learns from each folded batch, in fold order: its
/// alert transitions, then the CSMs whose book changed in it.
#[derive(Clone, Debug)]
pub enum Pushed {
    Alert(Arc<Alert>),
    Books(Arc<[Arc<str>]>),
}

/// Consumer lag as the engine sees it: high watermark minus its position.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    /// Partitions assigned to this instance.
    pub assigned: usize,
    /// Lag of the assigned partitions whose high watermark is known.
    pub partitions: Vec<(Topic, i32, i64)>,
    /// False until every assigned partition has reported a high watermark.
    pub known: bool,
}

impl Lag {
    pub fn total(&self) -> i64 {
        self.partitions.iter().map(|p| p.2).sum()
    }
}

impl Shared {
    pub fn new(engine: Engine, topics: TopicNames) -> Self {
        let snapshot = arc_swap::ArcSwap::from_pointee(engine.snapshot());
        Shared {
            engine: Mutex::new(engine),
            snapshot,
            topics,
            high_watermarks: Mutex::new(HashMap::new()),
            assigned: Mutex::new(Vec::new()),
            restored: AtomicBool::new(false),
            alerts: tokio::sync::broadcast::channel(4096).0,
            folded: tokio::sync::Notify::new(),
            outbox_len: AtomicUsize::new(0),
            outbox_max: AtomicUsize::new(100_000),
            paused: AtomicBool::new(false),
            starts: Mutex::new((0, HashMap::new())),
            align_wait_us: std::sync::atomic::AtomicU64::new(50_000),
        }
    }

    /// Sets `time.align_wait`.
    pub fn set_align_wait(&self, wait: Duration) {
        self.align_wait_us.store(wait.as_micros() as u64, Ordering::Relaxed);
    }

    /// Sets `alerts.outbox_max`.
    pub fn set_outbox_max(&self, max: usize) {
        self.outbox_max.store(max.max(1), Ordering::Relaxed);
    }

    /// Why ingestion is paused, if it is.
    pub fn paused(&self) -> Option<String> {
        self.paused.load(Ordering::Relaxed).then(|| {
            format!(
                "alert outbox full: {} transitions await the broker's acknowledgement (alerts.outbox_max = {})",
                self.outbox_len.load(Ordering::Relaxed),
                self.outbox_max.load(Ordering::Relaxed)
            )
        })
    }

    fn outbox_full(&self) -> bool {
        self.outbox_len.load(Ordering::Relaxed) >= self.outbox_max.load(Ordering::Relaxed)
    }

    fn note_outbox(&self, len: usize) {
        self.outbox_len.store(len, Ordering::Relaxed);
        metrics::gauge!("cspulse_alert_outbox").set(len as f64);
    }

    pub fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state as of the latest publish barrier (never waits for the fold).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Publishes a barrier of `engine` (held by the caller) for readers.
    pub fn publish(&self, engine: &mut Engine) {
        let started = Instant::now();
        let snapshot = engine.publish();
        self.snapshot.store(Arc::new(snapshot));
        histogram!("cspulse_publish_seconds").record(started.elapsed().as_secs_f64());
        self.folded.notify_one();
    }

    /// Replaces the state (a restore) and publishes it.
    pub fn replace_engine(&self, engine: Engine) {
        let mut held = self.engine();
        *held = engine;
        self.publish(&mut held);
    }

    pub fn lag(&self) -> Lag {
        let assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let hw = self.high_watermarks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let snapshot = self.snapshot();
        let positions = snapshot.partitions();
        let mut lag = Lag { assigned: assigned.len(), partitions: Vec::new(), known: !assigned.is_empty() };
        for (topic, p) in assigned {
            match hw.get(&(topic, p)) {
                Some(&hi) if hi >= 0 => {
                    let pos = positions.get(&(topic, p)).map_or(0, |x| x.next_offset);
                    lag.partitions.push((topic, p, (hi - pos).max(0)));
                }
                _ => lag.known = false,
            }
        }
        lag
    }
}

/// librdkafka callbacks: positions on assignment, high watermarks from stats.
struct IngestContext {
    shared: Arc<Shared>,
}

impl ClientContext for IngestContext {
    fn stats(&self, stats: Statistics) {
        let mut hw = self.shared.high_watermarks.lock().unwrap_or_else(|p| p.into_inner());
        for (name, t) in &stats.topics {
            let Some(topic) = self.shared.topics.role(name) else { continue };
            for (&p, ps) in &t.partitions {
                if p >= 0 && ps.hi_offset >= 0 {
                    hw.insert((topic, p), ps.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<(String, i32)> =
                    tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                let mut assigned = Vec::new();
                let mut starts = HashMap::new();
                {
                    let engine = self.shared.engine();
                    for (name, p) in &parts {
                        let Some(topic) = self.shared.topics.role(name) else { continue };
                        assigned.push((topic, *p));
                        let offset = match engine.partitions().get(&(topic, *p)) {
                            Some(progress) if progress.next_offset > 0 => Offset::Offset(progress.next_offset),
                            _ => Offset::Beginning,
                        };
                        starts.insert((topic, *p), if let Offset::Offset(o) = offset { o } else { 0 });
                        if let Err(e) = tpl.set_partition_offset(name, *p, offset) {
                            error!(topic = %name, partition = p, error = %e, "cannot position partition");
                        }
                    }
                }
                info!(partitions = parts.len(), "partitions assigned; positioned at the engine's offsets");
                if let Err(e) = consumer.assign(tpl) {
                    error!(error = %e, "assign failed");
                }
                *self.shared.assigned.lock().unwrap_or_else(|p| p.into_inner()) = assigned;
                let mut known = self.shared.starts.lock().unwrap_or_else(|p| p.into_inner());
                *known = (known.0 + 1, starts);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                info!(partitions = tpl.count(), "partitions revoked");
                if let Err(e) = consumer.unassign() {
                    error!(error = %e, "unassign failed");
                }
                self.shared.assigned.lock().unwrap_or_else(|p| p.into_inner()).clear();
                let mut known = self.shared.starts.lock().unwrap_or_else(|p| p.into_inner());
                *known = (known.0 + 1, HashMap::new());
            }
            other => error!(error = ?other, "rebalance error"),
        }
    }
}

/// librdkafka settings shared by our consumer and producers.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers);
    for (k, v) in &kafka.properties {
        c.set(k, v);
    }
    c
}

/// The ingest consumer's configuration (public so that benchmarks consume
/// with exactly the engine's settings).
pub fn consumer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = client_config(kafka);
    c.set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // High watermarks (lag, `/readyz`) come from the statistics: after a
        // restart, readiness waits for the first report after the assignment.
        .set("statistics.interval.ms", "250")
        // Once the prefetch queue is full (`queued.max.messages.kbytes`,
        // 64 MiB), librdkafka waits this long before fetching a partition
        // again. Its default, 1 s, starves a consumer that folds slower than
        // the broker delivers: catching up a backlog, the ingest thread sat
        // idle about half the time (114K/s; 5 ms: 280K/s, load-tests README).
        .set("fetch.queue.backoff.ms", "5");
    // The operator's properties win over our defaults.
    for (k, v) in &kafka.properties {
        c.set(k, v);
    }
    c
}

/// The producers' configuration: idempotent, so librdkafka's own retries
/// never duplicate or reorder a partition's records.
fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = client_config(kafka);
    c.set("enable.idempotence", "true").set("linger.ms", "5");
    if !kafka.properties.contains_key("message.timeout.ms") {
        // A record the broker has not taken within this is reported failed,
        // counted and produced again (alerts) rather than waited on silently.
        c.set("message.timeout.ms", "30000");
    }
    for key in ["fetch.wait.max.ms", "session.timeout.ms", "heartbeat.interval.ms"] {
        c.remove(key);
    }
    c
}

/// A producer whose deliveries nobody tracks (the demo's generator).
pub fn producer(
    kafka: &KafkaConfig,
) -> Result<ThreadedProducer<rdkafka::producer::DefaultProducerContext>, KafkaError> {
    producer_config(kafka).create()
}

/// What a produced record is, for its delivery report.
pub enum Delivery {
    DeadLetter,
    /// Outbox entry `n` (see [`Engine::post_alerts`]), on its `attempt`.
    Alert {
        n: u64,
        alert: Arc<Alert>,
        attempt: u32,
    },
}

/// Delivery reports of the ingest producer: an acknowledged alert leaves
/// the engine's outbox; a failed one is counted and queued for another try.
pub struct Deliveries {
    shared: Arc<Shared>,
    retry: std::sync::mpsc::Sender<(u64, Arc<Alert>, u32)>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        match (*delivery, result) {
            (Delivery::DeadLetter, Ok(_)) => {}
            (Delivery::DeadLetter, Err((e, _))) => {
                counter!("cspulse_produce_errors_total", "topic" => "deadletter").increment(1);
                warn!(error = %e, "dead letter not delivered");
            }
            (Delivery::Alert { n, alert, .. }, Ok(_)) => {
                counter!("cspulse_alerts_delivered_total", "state" => alert.state.as_str()).increment(1);
                let left = self.shared.engine().ack_alert(n);
                self.shared.note_outbox(left);
            }
            (Delivery::Alert { n, alert, attempt }, Err((e, _))) => {
                counter!("cspulse_alert_delivery_errors_total").increment(1);
                warn!(error = %e, alert_id = %alert.alert_id, attempt, "alert not delivered; will retry");
                let _ = self.retry.send((n, alert, attempt + 1));
            }
        }
    }
}

/// The ingest producer (dead letters and alerts).
type IngestProducer = ThreadedProducer<Deliveries>;
/// Failed alert deliveries: outbox number, the alert, the next attempt.
type Retries = std::sync::mpsc::Receiver<(u64, Arc<Alert>, u32)>;

/// The ingest producer and the receiving end of its failed alert deliveries.
fn ingest_producer(kafka: &KafkaConfig, shared: Arc<Shared>) -> Result<(IngestProducer, Retries), KafkaError> {
    let (retry, retries) = std::sync::mpsc::channel();
    let producer = producer_config(kafka).create_with_context(Deliveries { shared, retry })?;
    Ok((producer, retries))
}

/// A rejected message as written to the dead-letter topic (§9).
pub fn dead_letter_record(
    rejection: &Rejection,
    topic: &str,
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    payload: &[u8],
) -> serde_json::Value {
    let key = key.map(|k| String::from_utf8_lossy(k).into_owned());
    let mut record = json!({
        "reason": rejection.reason.as_str(),
        "detail": rejection.detail,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key,
    });
    let obj = record.as_object_mut().expect("object literal");
    match std::str::from_utf8(payload) {
        Ok(text) => {
            let mut cut = text.len().min(DEADLETTER_PAYLOAD_LIMIT);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            obj.insert("payload".into(), json!(&text[..cut]));
        }
        Err(_) => {
            // Base64 grows by 4/3: keep the encoded string within the limit.
            let raw = &payload[..payload.len().min(DEADLETTER_PAYLOAD_LIMIT / 4 * 3)];
            obj.insert("payload".into(), json!(base64::engine::general_purpose::STANDARD.encode(raw)));
            obj.insert("payload_encoding".into(), json!("base64"));
        }
    }
    record
}

/// The running ingest thread.
pub struct Ingest {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Ingest {
    /// Creates the consumer, subscribes, and starts the poll loop.
    pub fn start(kafka: &KafkaConfig, shared: Arc<Shared>) -> Result<Ingest, KafkaError> {
        Ok(Subscribed::new(kafka, shared)?.start())
    }
    /// Stops consuming and waits for the loop to finish its batch.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A consumer that has subscribed but does not poll yet: the group join
/// goes on in librdkafka's background while the checkpoint is restored;
/// partitions are positioned (from the engine) only once polling starts.
pub struct Subscribed {
    consumer: BaseConsumer<IngestContext>,
    producer: IngestProducer,
    retries: Retries,
    outputs: Outputs,
    shared: Arc<Shared>,
}

impl Subscribed {
    pub fn new(kafka: &KafkaConfig, shared: Arc<Shared>) -> Result<Subscribed, KafkaError> {
        let consumer: BaseConsumer<IngestContext> =
            consumer_config(kafka).create_with_context(IngestContext { shared: shared.clone() })?;
        consumer.subscribe(&shared.topics.inputs())?;
        let (producer, retries) = ingest_producer(kafka, shared.clone())?;
        let outputs = Outputs { deadletter: kafka.topics.deadletter.clone(), alerts: kafka.topics.alerts.clone() };
        Ok(Subscribed { consumer, producer, retries, outputs, shared })
    }

    /// Starts the poll loop.
    pub fn start(self) -> Ingest {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let Subscribed { consumer, producer, retries, outputs, shared } = self;
        let thread = std::thread::Builder::new()
            .name("cspulse-ingest".into())
            .spawn(move || poll_loop(&consumer, &producer, retries, &outputs, &shared, &flag))
            .expect("spawn ingest thread");
        Ingest { thread: Some(thread), stop }
    }
}

/// Output topic names.
struct Outputs {
    deadletter: String,
    alerts: String,
}

fn poll_loop(
    consumer: &BaseConsumer<IngestContext>,
    producer: &IngestProducer,
    retries: Retries,
    outputs: &Outputs,
    shared: &Shared,
    stop: &AtomicBool,
) {
    let (max_bytes, restored) = {
        let engine = shared.engine();
        (engine.config().max_message_bytes, engine.unacked_alerts())
    };
    shared.note_outbox(restored.len());
    if !restored.is_empty() {
        info!(alerts = restored.len(), "producing the alert transitions the checkpoint holds unacknowledged");
    }
    // Two batches in flight at most: one being folded, one decoded and waiting.
    let (batches, received) = std::sync::mpsc::sync_channel::<Batch<'_>>(1);
    let (outgoing, to_publish) = std::sync::mpsc::sync_channel::<Folded<'_>>(4);
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("cspulse-decode".into())
            .spawn_scoped(s, move || {
                let mut pause = Pause::default();
                let mut poller = Poller::new(consumer, shared, max_bytes);
                while !stop.load(Ordering::Relaxed) {
                    pause.follow(consumer, shared);
                    let Some(batch) = poller.next_batch() else { continue };
                    if batches.send(batch).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn decode thread");
        std::thread::Builder::new()
            .name("cspulse-publish".into())
            .spawn_scoped(s, move || {
                let mut publisher = Publisher { producer, outputs, stop, retries, waiting: BinaryHeap::new() };
                for (n, alert) in restored {
                    publisher.produce_alert(n, Arc::new(alert), 0);
                }
                publisher.run(to_publish);
            })
            .expect("spawn publish thread");
        // This thread folds, in the order polled, until the poller stops,
        // and publishes a barrier whenever it has caught up with the poller,
        // folded an alert transition or a book change, or PUBLISH_EVERY
        // has passed since the last one.
        let mut published = Instant::now();
        loop {
            let batch = match received.try_recv() {
                Ok(batch) => batch,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    {
                        let mut engine = shared.engine();
                        if engine.has_unpublished() {
                            shared.publish(&mut engine);
                        }
                    }
                    published = Instant::now();
                    match received.recv_timeout(IDLE_CHECK) {
                        Ok(batch) => batch,
                        // Transitions raised without an event (a rule
                        // reload) are posted by folding nothing.
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) if shared.engine().has_unposted_alerts() => {
                            Batch::with_capacity(0)
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            if outgoing.send(fold(batch, shared, &mut published)).is_err() {
                break;
            }
        }
        // Ends the publisher's loop, so the scope's join of it returns.
        drop(outgoing);
    });
    let _ = producer.flush(Duration::from_secs(5));
    info!("ingest stopped");
}

/// One polled message, decoded, while it waits for its turn. Fields drop
/// in this order: the decoded event and the input borrow the message's
/// payload (see `payload_for_consumer`), so the message goes last.
struct Polled<'c> {
    decoded: Result<Event<'c>, Rejection>,
    input: Input<'c>,
    message: BorrowedMessage<'c>,
}

/// Messages on their way from the polling thread to the folding one, in
/// the order they are to be folded.
struct Batch<'c> {
    /// `decode` of `inputs[i]`. Declared before `messages`, whose payloads
    /// these events borrow, so they are dropped first.
    decoded: Vec<Result<Event<'c>, Rejection>>,
    inputs: Vec<Input<'c>>,
    /// The place in `messages` of each input.
    places: Vec<usize>,
    messages: Vec<BorrowedMessage<'c>>,
}

impl<'c> Batch<'c> {
    fn with_capacity(n: usize) -> Self {
        Batch {
            decoded: Vec::with_capacity(n),
            inputs: Vec::with_capacity(n),
            places: Vec::with_capacity(n),
            messages: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, p: Polled<'c>) {
        let Polled { decoded, input, message } = p;
        self.places.push(self.messages.len());
        self.decoded.push(decoded);
        self.inputs.push(input);
        self.messages.push(message);
    }

    /// The messages, once nothing borrows their payloads any more.
    fn into_messages(self) -> Vec<BorrowedMessage<'c>> {
        let Batch { decoded, inputs, places: _, messages } = self;
        drop((decoded, inputs));
        messages
    }
}

/// While this many polled messages wait in the aligner, no partition is
/// waited for: what is buffered folds in `ts` order, and the polling thread
/// goes no further ahead than the fold takes (its batches' queue is bounded).
/// So the buffer stays near this size whatever a partition does, and polling
/// never stops while a lagging partition is waited for (its messages come
/// with the next fetch).
const MAX_ALIGNED: usize = 64 * BATCH;

/// The polling thread's state: polls, decodes, and releases batches in
/// event-time order across partitions (SPEC §2 additions).
struct Poller<'c> {
    consumer: &'c BaseConsumer<IngestContext>,
    shared: &'c Shared,
    max_bytes: usize,
    aligner: align::Aligner<Polled<'c>>,
    /// The assignment the aligner's state belongs to.
    generation: u64,
    /// Per partition, the offset after the last message polled.
    polled_to: HashMap<(Topic, i32), i64>,
    /// Topic names as C strings, by role (for librdkafka's watermark cache).
    names: [std::ffi::CString; 4],
}

impl<'c> Poller<'c> {
    fn new(consumer: &'c BaseConsumer<IngestContext>, shared: &'c Shared, max_bytes: usize) -> Self {
        let wait = Duration::from_micros(shared.align_wait_us.load(Ordering::Relaxed));
        let names = Topic::ALL.map(|t| std::ffi::CString::new(shared.topics.name(t)).unwrap_or_default());
        Poller {
            consumer,
            shared,
            max_bytes,
            aligner: align::Aligner::new(wait),
            generation: 0,
            polled_to: HashMap::new(),
            names,
        }
    }

    /// Polls what is there (waiting up to 100 ms for the first message when
    /// nothing is buffered, a few ms while a lagging partition is waited
    /// for), then releases up to `BATCH` messages in event-time order;
    /// `None` if none may be folded yet.
    fn next_batch(&mut self) -> Option<Batch<'c>> {
        let first_wait = if self.aligner.is_empty() { Duration::from_millis(100) } else { Duration::from_millis(2) };
        self.poll(first_wait);
        // Rebalances run inside `poll`, on this thread: nothing waits on this lock.
        let known = self.shared.starts.lock().unwrap_or_else(|p| p.into_inner());
        let (generation, starts) = (known.0, &known.1);
        if generation != self.generation {
            // Repositioned at the engine's offsets: what is buffered comes again.
            self.aligner.clear();
            self.polled_to.clear();
            self.generation = generation;
            return None;
        }
        let assigned = self.shared.assigned.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut batch = Batch::with_capacity(BATCH.min(self.aligner.len()));
        let (polled_to, consumer, names) = (&self.polled_to, self.consumer, &self.names);
        let full = self.aligner.len() >= MAX_ALIGNED;
        let behind = |part: (Topic, i32)| {
            let at = polled_to.get(&part).or_else(|| starts.get(&part)).copied().unwrap_or(0);
            !full && cached_high_watermark(consumer, &names[part.0.index()], part.1).is_none_or(|high| at < high)
        };
        let stop = self.aligner.drain(Instant::now(), &assigned, behind, BATCH, |p| batch.push(p));
        if stop == align::Stop::Wait {
            counter!("cspulse_align_waits_total").increment(1);
        }
        (!batch.inputs.is_empty()).then_some(batch)
    }

    /// Polls up to `BATCH` messages, decodes them and buffers them.
    fn poll(&mut self, first_wait: Duration) {
        let wall = crate::time::wall_now();
        let mut next = self.consumer.poll(first_wait);
        let mut n = 0;
        while let Some(polled) = next {
            match polled {
                Ok(m) => {
                    n += 1;
                    if let Some(topic) = self.shared.topics.role(m.topic()) {
                        let (partition, offset) = (m.partition(), m.offset());
                        // SAFETY: librdkafka keeps a message's payload until
                        // the message is destroyed; the input and the decoded
                        // event that borrow it travel with the message and are
                        // dropped before it (field order of `Polled` and
                        // `Batch`), or moved into the fold, which ends before.
                        let payload = unsafe { payload_for_consumer(&m) };
                        let input = Input { topic, partition, offset, payload, wall };
                        let decoded = decode::decode(topic, payload, self.max_bytes);
                        let ts = decoded.as_ref().ok().map(|e| e.ts);
                        self.polled_to.insert((topic, partition), offset + 1);
                        self.aligner.push((topic, partition), ts, Polled { decoded, input, message: m });
                    }
                }
                Err(e) => warn!(error = %e, "consumer error"),
            }
            if n >= BATCH {
                break;
            }
            next = self.consumer.poll(Duration::ZERO);
        }
    }
}

/// The high watermark librdkafka last learned for a partition from its
/// fetch responses (no request is made), if it knows one.
fn cached_high_watermark(
    consumer: &BaseConsumer<IngestContext>,
    topic: &std::ffi::CStr,
    partition: i32,
) -> Option<i64> {
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client handle is valid while `consumer` is; `topic` is
    // NUL-terminated; the out-pointers are to locals. The call only reads
    // librdkafka's cached partition state under its own lock.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// A message's payload, borrowed for the consumer's lifetime instead of the
/// message's (librdkafka owns the bytes until the message is destroyed).
///
/// # Safety
/// The slice must not be used after `m` is dropped.
unsafe fn payload_for_consumer<'c>(m: &BorrowedMessage<'c>) -> &'c [u8] {
    let p = m.payload().unwrap_or_default();
    // SAFETY: same pointer and length as a live slice; the caller bounds its use.
    unsafe { std::slice::from_raw_parts(p.as_ptr(), p.len()) }
}

/// Folds one batch under the engine lock and hands the alerts it raised to
/// the push layer; what is left to produce goes to the publishing thread.
fn fold<'c>(mut batch: Batch<'c>, shared: &Shared, published: &mut Instant) -> Folded<'c> {
    // Rejected messages by their place in the batch: their dead-letter
    // records are built off the lock, by the publishing thread.
    let mut rejected: Vec<(usize, Rejection)> = Vec::new();
    let alerts = {
        let Batch { decoded, inputs, places, .. } = &mut batch;
        let mut engine = shared.engine();
        let started = Instant::now();
        let mut k = 0;
        engine.fold_decoded_batch(inputs, std::mem::take(decoded), |_, outcome| {
            if let Outcome::Rejected(r) = outcome {
                rejected.push((places[k], r));
            }
            k += 1;
        });
        if !inputs.is_empty() {
            histogram!("cspulse_fold_seconds").record(started.elapsed().as_secs_f64() / inputs.len() as f64);
        }
        let alerts = engine.post_alerts();
        shared.note_outbox(engine.alert_outbox_len());
        let books = engine.take_book_changes();
        // The push layer reads the alert sections and book membership from
        // the snapshot the moment it hears of them.
        if !alerts.is_empty() || !books.is_empty() || published.elapsed() >= PUBLISH_EVERY {
            shared.publish(&mut engine);
            *published = Instant::now();
        }
        (alerts, books)
    };
    let (alerts, books) = alerts;
    // No receiver (no WebSocket clients yet) is fine.
    let alerts = alerts
        .into_iter()
        .map(|(n, alert)| {
            let _ = shared.alerts.send(Pushed::Alert(alert.clone()));
            (n, alert)
        })
        .collect();
    if !books.is_empty() {
        let _ = shared.alerts.send(Pushed::Books(books.into()));
    }
    Folded { rejected, alerts, messages: batch.into_messages() }
}

/// Pauses the consumer while the alert outbox is full, and resumes it
/// once it has room again; polling goes on, so the group membership and
/// rebalances are served meanwhile.
#[derive(Default)]
struct Pause {
    /// The assignment paused (re-paused when a rebalance changes it).
    paused: Option<TopicPartitionList>,
}

impl Pause {
    fn follow(&mut self, consumer: &BaseConsumer<IngestContext>, shared: &Shared) {
        let full = shared.outbox_full();
        if full {
            let Ok(assignment) = consumer.assignment() else { return };
            if self.paused.as_ref().is_some_and(|p| p.to_topic_map() == assignment.to_topic_map()) {
                return;
            }
            if self.paused.is_none() {
                warn!(outbox = shared.outbox_len.load(Ordering::Relaxed), "alert outbox full: ingestion paused");
                counter!("cspulse_ingest_pauses_total").increment(1);
            }
            if let Err(e) = consumer.pause(&assignment) {
                warn!(error = %e, "cannot pause the consumer");
                return;
            }
            self.paused = Some(assignment);
            shared.paused.store(true, Ordering::Relaxed);
            metrics::gauge!("cspulse_ingest_paused").set(1.0);
        } else if let Some(paused) = self.paused.take() {
            if let Err(e) = consumer.resume(&paused) {
                warn!(error = %e, "cannot resume the consumer");
            }
            shared.paused.store(false, Ordering::Relaxed);
            metrics::gauge!("cspulse_ingest_paused").set(0.0);
            info!("alert outbox has room: ingestion resumed");
        }
    }
}

/// What a folded batch leaves to do off the folding thread: produce its dead
/// letters and alerts, and destroy its messages.
struct Folded<'c> {
    /// The rejected messages: their place in `messages`, and why.
    rejected: Vec<(usize, Rejection)>,
    /// The alert transitions, with their outbox numbers.
    alerts: Vec<(u64, Arc<Alert>)>,
    messages: Vec<BorrowedMessage<'c>>,
}

/// The publishing thread: dead letters and alerts of each folded batch,
/// and the retries of alerts whose delivery failed.
struct Publisher<'a> {
    producer: &'a IngestProducer,
    outputs: &'a Outputs,
    stop: &'a AtomicBool,
    retries: Retries,
    /// Failed alerts by when they are due again (earliest first).
    waiting: BinaryHeap<std::cmp::Reverse<Retry>>,
}

/// An alert to produce again at `due`.
struct Retry {
    due: Instant,
    n: u64,
    alert: Arc<Alert>,
    attempt: u32,
}

impl PartialEq for Retry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.n) == (other.due, other.n)
    }
}
impl Eq for Retry {}
impl PartialOrd for Retry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Retry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.n).cmp(&(other.due, other.n))
    }
}

/// The wait before another try of a failed alert delivery: 100 ms doubling
/// up to 30 s, with up to a quarter of jitter (many alerts failing together
/// do not retry in lockstep).
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1 << attempt.min(9)).min(Duration::from_secs(30));
    base + base.mul_f64(rand::random::<f64>() / 4.0)
}

impl Publisher<'_> {
    /// Until the folding thread is done: each folded batch as it comes,
    /// and failed alerts when their backoff ends.
    fn run(&mut self, folded: std::sync::mpsc::Receiver<Folded<'_>>) {
        loop {
            let wait = self.waiting.peek().map_or(Duration::from_millis(100), |r| {
                r.0.due.saturating_duration_since(Instant::now()).min(Duration::from_millis(100))
            });
            match folded.recv_timeout(wait) {
                Ok(batch) => self.publish(batch),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            while let Ok((n, alert, attempt)) = self.retries.try_recv() {
                self.waiting.push(std::cmp::Reverse(Retry {
                    due: Instant::now() + backoff(attempt),
                    n,
                    alert,
                    attempt,
                }));
            }
            while self.waiting.peek().is_some_and(|r| r.0.due <= Instant::now()) {
                let std::cmp::Reverse(r) = self.waiting.pop().expect("peeked");
                self.produce_alert(r.n, r.alert, r.attempt);
            }
        }
    }

    /// Produces the dead letters, then the alerts to the alert topic keyed
    /// by scope id, counting them.
    fn publish(&mut self, folded: Folded<'_>) {
        let Folded { rejected, alerts, messages } = folded;
        let dead: Vec<(Option<Vec<u8>>, Vec<u8>)> = rejected
            .iter()
            .map(|(place, r)| {
                let m = &messages[*place];
                debug!(reason = r.reason.as_str(), detail = %r.detail, topic = m.topic(), offset = m.offset(), "rejected");
                let payload = m.payload().unwrap_or_default();
                let record = dead_letter_record(r, m.topic(), m.partition(), m.offset(), m.key(), payload);
                (m.key().map(<[u8]>::to_vec), serde_json::to_vec(&record).unwrap_or_default())
            })
            .collect();
        drop(messages);
        for (key, body) in dead {
            send_with_retry(self.producer, &self.outputs.deadletter, key.as_deref(), &body, self.stop, || {
                Box::new(Delivery::DeadLetter)
            });
        }
        for (n, alert) in alerts {
            counter!("cspulse_alerts_emitted_total", "rule" => alert.rule.clone(), "state" => alert.state.as_str())
                .increment(1);
            self.produce_alert(n, alert, 0);
        }
    }

    /// Hands one alert transition to the producer. If the process stops
    /// first, it stays in the outbox (and the final checkpoint).
    fn produce_alert(&mut self, n: u64, alert: Arc<Alert>, attempt: u32) {
        let body = serde_json::to_vec(&alert.to_json()).unwrap_or_default();
        let key = alert.scope_id.clone();
        let handed =
            send_with_retry(self.producer, &self.outputs.alerts, Some(key.as_bytes()), &body, self.stop, || {
                Box::new(Delivery::Alert { n, alert: alert.clone(), attempt })
            });
        if !handed && !self.stop.load(Ordering::Relaxed) {
            counter!("cspulse_alert_delivery_errors_total").increment(1);
            let due = Instant::now() + backoff(attempt);
            self.waiting.push(std::cmp::Reverse(Retry { due, n, alert, attempt: attempt + 1 }));
        }
    }
}

/// Hands one record to the producer, waiting while its queue is full (the
/// producer drains it) until `stop`. Returns whether it was handed over;
/// errors other than a full queue are counted and logged.
pub fn send_with_retry<C: ProducerContext>(
    producer: &ThreadedProducer<C>,
    topic: &str,
    key: Option<&[u8]>,
    body: &[u8],
    stop: &AtomicBool,
    opaque: impl Fn() -> C::DeliveryOpaque,
) -> bool {
    loop {
        let mut record = BaseRecord::with_opaque_to(topic, opaque()).payload(body);
        if let Some(k) = key {
            record = record.key(k);
        }
        match producer.send(record) {
            Ok(()) => {
                counter!("cspulse_produced_total", "topic" => topic.to_owned()).increment(1);
                return true;
            }
            Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _))
                if !stop.load(Ordering::Relaxed) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => {
                counter!("cspulse_produce_errors_total", "topic" => topic.to_owned()).increment(1);
                error!(error = %e, topic, "cannot produce");
                return false;
            }
        }
    }
}
