//! A connection's bounded outbound queue (SPEC §6.5).
//!
//! Fan-out pushes without waiting. When the queue is full, an older `update`
//! of the same channel and topic is folded into a later one (their patches
//! composed, the later `seq` and `as_of` kept); only when nothing can be
//! folded is the connection marked slow, and the hub drops it (1008).
//!
//! A burst is not slowness: when the fan-out queues faster than a reading
//! client's writer task gets to run (a flood of `alert` messages, a starved
//! core), the queue may hold up to [`BURST`] times its capacity as long as
//! the writer has taken messages (or waited for them) within [`GRACE`]. A
//! client that stops reading blocks its writer in a socket write, so it is
//! dropped at most `GRACE` after its queue fills.
//!
//! Folding moves the older update's changes forward to the later one's
//! place. That is safe across `alert` messages and across updates of other
//! topics, which own disjoint sections (§14) and never change membership,
//! but not across a `health` update (it adds and removes accounts) or a
//! subscribe, snapshot or replay of the channel: those are barriers.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use serde_json::Value;
use tokio::sync::Notify;

use super::{PushTopic, merge_compose};

/// What a queued message is, as far as folding cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An `update` of a channel (by the hub's channel number) and topic.
    Update(u64, PushTopic),
    /// An `alert` message: carries no data, anything may pass it.
    Alert(u64),
    /// Anything else on a channel (`subscribed`, `snapshot`, replays):
    /// nothing of that channel passes it.
    Barrier(u64),
    /// Replies (`pong`, `error`): no channel.
    Reply,
}

#[derive(Clone, Debug)]
pub struct Queued {
    pub text: Utf8Bytes,
    pub kind: Kind,
}

/// Why a push was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Full, and nothing could be folded: the connection is now slow.
    Full,
    /// The connection is gone.
    Closed,
}

/// What `next` hands the writer.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Messages,
    Slow,
    Closed,
}

/// How far past its capacity a reading client's queue may grow in a burst.
pub const BURST: usize = 4;
/// How recently the writer must have taken messages for a burst to be held.
pub const GRACE: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Queue {
    messages: VecDeque<Queued>,
    /// When the writer last took messages or waited for some.
    taken: Instant,
}

#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    capacity: usize,
    ready: Notify,
    slow: AtomicBool,
    closed: AtomicBool,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Outbox {
            queue: Mutex::new(Queue { messages: VecDeque::new(), taken: Instant::now() }),
            capacity: capacity.max(1),
            ready: Notify::new(),
            slow: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a message without waiting, folding older updates if full.
    pub fn push(&self, message: Queued) -> Result<(), Refused> {
        if self.closed.load(Ordering::Relaxed) || self.slow.load(Ordering::Relaxed) {
            return Err(Refused::Closed);
        }
        {
            let mut queue = self.lock();
            queue.messages.push_back(message);
            let len = queue.messages.len();
            if len > self.capacity {
                if fold_one(&mut queue.messages) {
                    metrics::counter!("cspulse_ws_updates_coalesced_total").increment(1);
                } else if len <= self.capacity * BURST && queue.taken.elapsed() < GRACE {
                    // A burst for a client that is reading: held.
                } else {
                    queue.messages.clear();
                    drop(queue);
                    self.slow.store(true, Ordering::Relaxed);
                    self.ready.notify_one();
                    return Err(Refused::Full);
                }
            }
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Moves everything queued into `out` (waiting until there is some),
    /// or says why there never will be.
    pub async fn next(&self, out: &mut Vec<Utf8Bytes>) -> Next {
        loop {
            if self.slow.load(Ordering::Relaxed) {
                return Next::Slow;
            }
            if self.closed.load(Ordering::Relaxed) {
                return Next::Closed;
            }
            {
                let mut queue = self.lock();
                queue.taken = Instant::now();
                if !queue.messages.is_empty() {
                    out.extend(queue.messages.drain(..).map(|q| q.text));
                    return Next::Messages;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Resolves once the connection has been marked slow.
    pub async fn became_slow(&self) {
        while !self.slow.load(Ordering::Relaxed) {
            self.ready.notified().await;
        }
    }

    pub fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.ready.notify_one();
    }

    /// Pretends the writer last took messages `by` earlier.
    #[cfg(test)]
    pub fn backdate(&self, by: Duration) {
        let mut queue = self.lock();
        queue.taken = queue.taken.checked_sub(by).expect("the clock reaches back that far");
    }

    /// Takes everything queued (what a reader gets, without a socket).
    #[cfg(test)]
    pub fn take_queued(&self) -> Vec<Queued> {
        let mut queue = self.lock();
        queue.taken = Instant::now();
        queue.messages.drain(..).collect()
    }
}

fn channel_of(kind: Kind) -> Option<u64> {
    match kind {
        Kind::Update(c, _) | Kind::Alert(c) | Kind::Barrier(c) => Some(c),
        Kind::Reply => None,
    }
}

/// Folds one older update into a later one of the same channel and topic,
/// newest pairs first. False when no pair can be folded.
fn fold_one(queue: &mut VecDeque<Queued>) -> bool {
    for later in (0..queue.len()).rev() {
        let Kind::Update(channel, topic) = queue[later].kind else { continue };
        let Some(earlier) = (0..later).rev().find(|&i| queue[i].kind == Kind::Update(channel, topic)) else {
            continue;
        };
        if !may_move(queue, earlier, later) {
            continue;
        }
        if let Some(text) = compose(&queue[earlier].text, &queue[later].text) {
            queue[later].text = text;
            queue.remove(earlier);
            return true;
        }
    }
    false
}

/// Whether the update at `from` may move forward to `to`, past everything
/// in between on its channel: `alert` messages carry no data; an update of
/// another topic touches other sections (§14), unless one of the two is a
/// `health` update that adds or removes a member the other one touches.
fn may_move(queue: &VecDeque<Queued>, from: usize, to: usize) -> bool {
    let Kind::Update(channel, topic) = queue[from].kind else { return false };
    let mut moving: Option<Value> = None;
    for k in from + 1..to {
        let other = queue[k].kind;
        if channel_of(other) != Some(channel) {
            continue;
        }
        match other {
            Kind::Alert(_) => {}
            Kind::Update(_, t) if t != PushTopic::Health && topic != PushTopic::Health => {}
            Kind::Update(_, t) => {
                let Some(m) = moving.get_or_insert_with(|| patch_of(&queue[from].text)).as_object() else {
                    return false;
                };
                let o = patch_of(&queue[k].text);
                let Some(o) = o.as_object() else { return false };
                let clash = if t == PushTopic::Health { membership_clash(o, m) } else { membership_clash(m, o) };
                if clash {
                    return false;
                }
            }
            Kind::Barrier(_) | Kind::Reply => return false,
        }
    }
    true
}

fn patch_of(text: &str) -> Value {
    serde_json::from_str::<Value>(text).ok().and_then(|mut v| v.get_mut("patch").map(Value::take)).unwrap_or_default()
}

/// Channel maps whose membership `health` owns.
const MEMBER_MAPS: [&str; 4] = ["accounts", "segments", "regions", "csms"];

/// Whether `health` (a health patch) adds or removes a member that `other`
/// touches. A member a health patch adds comes whole, so it carries
/// sections other topics own; one it removes is `null`.
fn membership_clash(health: &serde_json::Map<String, Value>, other: &serde_json::Map<String, Value>) -> bool {
    MEMBER_MAPS.iter().any(|map| {
        let (Some(h), Some(o)) =
            (health.get(*map).and_then(Value::as_object), other.get(*map).and_then(Value::as_object))
        else {
            return false;
        };
        h.iter().any(|(member, v)| {
            let changes_membership = match v {
                Value::Object(sections) => sections.keys().any(|s| super::section_owner(s) != Some(PushTopic::Health)),
                _ => true,
            };
            changes_membership && o.contains_key(member)
        })
    })
}

/// The `later` update message carrying both patches.
fn compose(earlier: &str, later: &str) -> Option<Utf8Bytes> {
    let earlier: Value = serde_json::from_str(earlier).ok()?;
    let mut later: Value = serde_json::from_str(later).ok()?;
    let patch = merge_compose(earlier.get("patch")?, later.get("patch")?)?;
    later["patch"] = patch;
    Some(Utf8Bytes::from(later.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(i: usize) -> Queued {
        Queued { text: format!("{{\"type\":\"alert\",\"n\":{i}}}").into(), kind: Kind::Alert(0) }
    }

    #[test]
    fn a_burst_for_a_reading_client_is_held_up_to_the_burst_bound() {
        let outbox = Outbox::new(4);
        assert!(outbox.take_queued().is_empty());
        for i in 0..4 * BURST {
            outbox.push(alert(i)).unwrap();
        }
        assert!(!outbox.is_slow());
        assert_eq!(outbox.push(alert(99)), Err(Refused::Full));
        assert!(outbox.is_slow());
    }

    #[test]
    fn a_full_queue_whose_writer_took_nothing_within_the_grace_is_slow() {
        let outbox = Outbox::new(4);
        for i in 0..4 {
            outbox.push(alert(i)).unwrap();
        }
        outbox.backdate(GRACE * 2);
        assert_eq!(outbox.push(alert(4)), Err(Refused::Full));
        assert!(outbox.is_slow());
        assert_eq!(outbox.push(alert(5)), Err(Refused::Closed));
    }

    #[test]
    fn a_reader_that_keeps_taking_is_never_slow() {
        let outbox = Outbox::new(4);
        for round in 0..50 {
            for i in 0..3 * 4 {
                outbox.push(alert(round * 100 + i)).unwrap();
            }
            assert_eq!(outbox.take_queued().len(), 12);
        }
        assert!(!outbox.is_slow());
    }
}
