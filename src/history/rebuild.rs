//! `cspulse history rebuild` and `cspulse history import` (SPEC §15):
//! restate history by folding the input again, from the topics' earliest
//! offsets or from JSON-lines files, in an engine of its own.
//!
//! The fold is the engine's own, in event-time order across partitions
//! (the live alignment rule with the whole input known: a partition that
//! has not been read to its end is always waited for), so the rows are
//! the ones the live engine wrote for the same input. Rows go to staging
//! tables (`rebuild_*`) as they are made; at the end one transaction
//! replaces the live rows from `--from` through the rebuild's watermark
//! with them, so readers see the old history or the new, never a mix, and
//! the running engine is never touched (it goes on writing later rows).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::info;

use super::store::HistoryStore;
use crate::config::Config;
use crate::event::Topic;
use crate::event::decode;
use crate::ingest::TopicNames;
use crate::ingest::align::{Aligner, Part};
use crate::state::log::Row;
use crate::state::{Engine, Input};
use crate::time::{Ts, format_rfc3339, wall_now};

/// Where the input comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The configured input topics, from their earliest offsets to their
    /// ends when the rebuild starts.
    Topics,
    /// JSON-lines files of input events (the §1 shapes with a `topic`).
    Files(Vec<PathBuf>),
}

/// What a rebuild did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub rows: u64,
    /// The watermark it ended at: rows in [from, watermark] were replaced.
    pub watermark: Option<Ts>,
}

/// One input event, owned: (topic, partition, offset, payload).
type Owned = (Topic, i32, i64, Vec<u8>);

/// Rows written to staging per transaction.
const FLUSH: usize = 5_000;
/// Messages buffered per partition before it is paused.
const PER_PARTITION: usize = 20_000;

/// Folds the input of `source` and replaces the history from `from` (all
/// of it without) with what the fold records.
pub fn run(config: &Config, source: Source, from: Option<Ts>) -> anyhow::Result<Summary> {
    if !config.history.enabled() {
        bail!("history.store is off: there is no history to rebuild");
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = runtime.block_on(HistoryStore::open(&config.history.store)).context("history.store")?;
    runtime.block_on(store.begin_rebuild())?;
    let mut engine = Engine::new(config.state_config());
    engine.set_history(true);
    engine.set_history_buffer(usize::MAX);
    let from = from.unwrap_or(Ts::MIN);
    let mut summary = Summary { events: 0, rows: 0, watermark: None };
    let mut last_log = Instant::now();
    let mut fold = |(topic, partition, offset, payload): Owned| -> anyhow::Result<()> {
        engine.fold(&Input { topic, partition, offset, payload: &payload, wall: wall_now() });
        for (n, _) in engine.post_alerts() {
            engine.ack_alert(n);
        }
        summary.events += 1;
        if engine.history_len() >= FLUSH {
            summary.rows += runtime.block_on(flush(&store, &mut engine, from))?;
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            info!(events = summary.events, rows = summary.rows, watermark = ?engine.watermark().map(format_rfc3339), "rebuilding history");
            last_log = Instant::now();
        }
        Ok(())
    };
    match source {
        Source::Topics => {
            let mut replay = TopicReplay::new(config)?;
            while let Some(event) = replay.next()? {
                fold(event)?;
            }
        }
        Source::Files(files) => {
            for event in read_files(config, &files)? {
                fold(event)?;
            }
        }
    }
    summary.rows += runtime.block_on(flush(&store, &mut engine, from))?;
    summary.watermark = engine.watermark();
    let through = summary.watermark.unwrap_or(Ts::MIN);
    runtime.block_on(store.finish_rebuild(from, through))?;
    info!(
        events = summary.events,
        rows = summary.rows,
        from = %if from == Ts::MIN { "the beginning".to_owned() } else { format_rfc3339(from) },
        through = ?summary.watermark.map(format_rfc3339),
        "history rebuilt and swapped in"
    );
    Ok(summary)
}

/// The row's instant (its boundary, or when it happened).
fn row_at(row: &Row) -> Ts {
    match row {
        Row::Alert(a) => a.ts,
        Row::Tier(t) => t.ts,
        Row::Scope(s) => s.at,
        Row::Account(a) => a.at,
        Row::Gap { to, .. } => *to,
    }
}

/// Writes the engine's rows at or after `from` to staging; returns how many.
async fn flush(store: &HistoryStore, engine: &mut Engine, from: Ts) -> anyhow::Result<u64> {
    let rows = engine.history_pending(usize::MAX);
    let Some(&(last, _)) = rows.last() else { return Ok(0) };
    let kept: Vec<(u64, Row)> = rows.into_iter().filter(|(_, r)| row_at(r) >= from).collect();
    store.write_staging(&kept).await.context("writing the rebuild's staging tables")?;
    engine.history_committed(last);
    Ok(kept.len() as u64)
}

/// The input topics read from their beginnings to the ends they had when
/// the replay started, in event-time order across partitions.
struct TopicReplay {
    consumer: BaseConsumer,
    topics: TopicNames,
    max_bytes: usize,
    /// Per partition: the end to read to, and the next offset to read.
    ends: HashMap<Part, i64>,
    next: HashMap<Part, i64>,
    paused: Vec<Part>,
    aligner: Aligner<Owned>,
    ready: VecDeque<Owned>,
}

impl TopicReplay {
    fn new(config: &Config) -> anyhow::Result<TopicReplay> {
        let group = format!("{}-rebuild-{}-{}", config.kafka.group_id, std::process::id(), wall_now());
        let mut c = crate::ingest::client_config(&config.kafka);
        c.set("group.id", &group).set("enable.auto.commit", "false").set("auto.offset.reset", "earliest");
        let consumer: BaseConsumer = c.create().context("cannot create the rebuild's Kafka consumer")?;
        let topics = TopicNames::new(&config.kafka.topics);
        let timeout = Duration::from_secs(10);
        let mut assignment = TopicPartitionList::new();
        let (mut ends, mut next) = (HashMap::new(), HashMap::new());
        for topic in Topic::ALL {
            let name = topics.name(topic).to_owned();
            let metadata = consumer
                .fetch_metadata(Some(&name), timeout)
                .with_context(|| format!("cannot read the metadata of topic {name}"))?;
            for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
                let p = partition.id();
                let (low, high) = consumer
                    .fetch_watermarks(&name, p, timeout)
                    .with_context(|| format!("cannot read the offsets of {name}/{p}"))?;
                if high > low {
                    assignment.add_partition_offset(&name, p, Offset::Offset(low))?;
                    ends.insert((topic, p), high);
                    next.insert((topic, p), low);
                }
            }
        }
        consumer.assign(&assignment).context("cannot assign the input partitions")?;
        info!(
            partitions = ends.len(),
            messages = ends.iter().map(|(p, h)| h - next[p]).sum::<i64>(),
            "replaying the input topics"
        );
        Ok(TopicReplay {
            consumer,
            topics,
            max_bytes: config.kafka.max_message_bytes,
            ends,
            next,
            paused: Vec::new(),
            aligner: Aligner::new(Duration::MAX),
            ready: VecDeque::new(),
        })
    }

    /// The next event in event-time order, or `None` when every partition
    /// has been read to its end.
    fn next(&mut self) -> anyhow::Result<Option<Owned>> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e));
            }
            let assigned: Vec<Part> = self.ends.keys().copied().collect();
            let (ends, next) = (&self.ends, &self.next);
            let behind = |p: Part| next.get(&p) < ends.get(&p);
            let ready = &mut self.ready;
            self.aligner.drain(Instant::now(), &assigned, behind, 10_000, |e| ready.push_back(e));
            if !self.ready.is_empty() {
                self.resume_drained()?;
                continue;
            }
            if self.next.iter().all(|(p, n)| *n >= self.ends[p]) && self.aligner.is_empty() {
                return Ok(None);
            }
            self.poll()?;
        }
    }

    fn poll(&mut self) -> anyhow::Result<()> {
        let Some(polled) = self.consumer.poll(Duration::from_millis(500)) else { return Ok(()) };
        let m = polled.context("reading the input topics")?;
        let Some(topic) = self.topics.role(m.topic()) else { return Ok(()) };
        let part = (topic, m.partition());
        let end = self.ends.get(&part).copied().unwrap_or(0);
        if m.offset() >= end {
            return Ok(());
        }
        self.next.insert(part, m.offset() + 1);
        let payload = m.payload().unwrap_or_default().to_vec();
        let ts = decode::decode(topic, &payload, self.max_bytes).ok().map(|e| e.ts);
        self.aligner.push(part, ts, (topic, part.1, m.offset(), payload));
        if self.aligner.queued(part) >= PER_PARTITION && !self.paused.contains(&part) {
            self.pause(part, true)?;
        }
        Ok(())
    }

    /// Resumes the paused partitions whose queues have drained.
    fn resume_drained(&mut self) -> anyhow::Result<()> {
        let drained: Vec<Part> =
            self.paused.iter().copied().filter(|p| self.aligner.queued(*p) < PER_PARTITION / 2).collect();
        for part in drained {
            self.pause(part, false)?;
        }
        Ok(())
    }

    fn pause(&mut self, part: Part, pause: bool) -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(self.topics.name(part.0), part.1);
        if pause {
            self.consumer.pause(&tpl)?;
            self.paused.push(part);
        } else {
            self.consumer.resume(&tpl)?;
            self.paused.retain(|p| *p != part);
        }
        Ok(())
    }
}

/// The events of JSON-lines `files` (each line an input event with a
/// `topic`: its configured or default name), in `ts` order (file order
/// among equal instants). A line that is not such an event is an error
/// naming its file and line.
fn read_files(config: &Config, files: &[PathBuf]) -> anyhow::Result<Vec<Owned>> {
    use std::io::BufRead;
    let topics = TopicNames::new(&config.kafka.topics);
    let mut events: Vec<(Ts, Owned)> = Vec::new();
    for path in files {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let at = || format!("{}:{}", path.display(), i + 1);
            let value: serde_json::Value =
                serde_json::from_str(&line).with_context(|| format!("{}: not a JSON object", at()))?;
            let name = value["topic"].as_str().with_context(|| format!("{}: no \"topic\" field", at()))?;
            let topic = topics
                .role(name)
                .or_else(|| Topic::ALL.into_iter().find(|t| t.default_name() == name))
                .with_context(|| format!("{}: topic {name:?} is not an input topic", at()))?;
            let ts = value["ts"].as_str().and_then(crate::time::parse_rfc3339).unwrap_or(Ts::MIN);
            let n = events.len() as i64;
            events.push((ts, (topic, 0, n, line.into_bytes())));
        }
        info!(file = %path.display(), events = events.len(), "read");
    }
    events.sort_by_key(|(ts, e)| (*ts, e.2));
    Ok(events.into_iter().map(|(_, e)| e).collect())
}
