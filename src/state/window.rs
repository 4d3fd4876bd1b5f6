//! Exact sliding windows in event time.
//!
//! A window "last N" holds items with `ts > now − N`. Because the watermark
//! only moves forward, an item leaves a window exactly once, at
//! `now = ts + N`. Each structure keeps its items in a ts-ordered queue:
//! events arrive nearly in time order, so an insert is almost always a push
//! at the back (an out-of-order one is placed by binary search), expiry pops
//! from the front, and the next change time is read off the first item.
//! Every structure can also count a shorter window inside the long one (7
//! days inside 14 or 30) with a cursor that marks where the short window
//! begins, so counts are O(1) to read and amortised O(1) to maintain.
//!
//! Checkpoints hold the same layout as the ordered maps these queues replaced
//! (a ts-ordered map of items; the latest sightings in ts order), so state
//! written by earlier versions restores unchanged.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ids::Id;
use crate::time::Ts;

/// A value summed over the items of a window (an event count, a CSAT sum).
pub trait Tally: Copy + Default + PartialEq {
    fn add(&mut self, other: Self);
    fn sub(&mut self, other: Self);
}

impl Tally for u64 {
    fn add(&mut self, other: Self) {
        *self += other;
    }
    fn sub(&mut self, other: Self) {
        *self -= other;
    }
}

/// Count and sum of scores (CSAT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    pub count: u64,
    pub sum: u64,
}

impl Tally for Scores {
    fn add(&mut self, o: Self) {
        self.count += o.count;
        self.sum += o.sum;
    }
    fn sub(&mut self, o: Self) {
        self.count -= o.count;
        self.sum -= o.sum;
    }
}

/// Where `ts` goes in a queue ordered by ts: after every item at or before it.
fn position<T>(queue: &VecDeque<(Ts, T)>, ts: Ts) -> usize {
    match queue.back() {
        Some(&(last, _)) if last > ts => queue.partition_point(|(t, _)| *t <= ts),
        _ => queue.len(),
    }
}

/// Puts `entry` at `at` (found by `position`): a push in the usual case.
fn place<T>(queue: &mut VecDeque<(Ts, T)>, at: usize, entry: (Ts, T)) {
    if at == queue.len() {
        queue.push_back(entry);
    } else {
        queue.insert(at, entry);
    }
}

/// Where the short window begins in a queue at `now`: after every item at
/// or before its floor (0 without a short window).
fn short_start<T>(queue: &VecDeque<(Ts, T)>, short: Option<i64>, now: Ts) -> usize {
    short.map_or(0, |s| {
        let floor = now.saturating_sub(s);
        queue.partition_point(|(t, _)| *t <= floor)
    })
}

/// When the first entry of a ts-ordered queue leaves a window of `span`, or
/// the entry at `short_start` leaves the short window (`Ts::MAX`: never).
fn first_exit<T>(queue: &VecDeque<(Ts, T)>, span: i64, short: Option<i64>, short_start: usize) -> Ts {
    let first = queue.front().map_or(Ts::MAX, |(t, _)| t + span);
    let short = short.and_then(|s| queue.get(short_start).map(|(t, _)| t + s));
    first.min(short.unwrap_or(Ts::MAX))
}

/// Totals of timestamped values over the window `(now − span, now]`, and over
/// the shorter window `(now − short, now]` when `short` is set.
#[derive(Clone, Debug)]
pub struct Window<V: Tally> {
    span: i64,
    short: Option<i64>,
    /// Items still inside the long window, one per instant, in ts order.
    items: VecDeque<(Ts, V)>,
    total: V,
    /// Sum of the items at or before `short_floor` (outside the short window).
    outside_short: V,
    /// `items[..short_start]` are those items (when `short` is set).
    short_start: usize,
    now: Ts,
    /// When a total next changes (`Ts::MAX`: never): `next_change` kept at
    /// hand, so an `advance` before it reads nothing but this struct.
    due: Ts,
}

impl<V: Tally> Window<V> {
    pub fn new(span: i64, short: Option<i64>) -> Self {
        Window {
            span,
            short,
            items: VecDeque::new(),
            total: V::default(),
            outside_short: V::default(),
            short_start: 0,
            now: Ts::MIN,
            due: Ts::MAX,
        }
    }

    fn floor(&self) -> Ts {
        self.now.saturating_sub(self.span)
    }

    fn short_floor(&self) -> Ts {
        self.now.saturating_sub(self.short.unwrap_or(0))
    }

    /// When the first item leaves the window or the short window.
    fn first_change(&self) -> Ts {
        first_exit(&self.items, self.span, self.short, self.short_start)
    }

    /// Moves the window to `now` (which never goes back).
    pub fn advance(&mut self, now: Ts) {
        if now <= self.now {
            return;
        }
        self.now = now;
        if now < self.due {
            return;
        }
        if self.short.is_some() {
            let short_floor = self.short_floor();
            while let Some(&(ts, v)) = self.items.get(self.short_start) {
                if ts > short_floor {
                    break;
                }
                self.outside_short.add(v);
                self.short_start += 1;
            }
        }
        let floor = self.floor();
        while let Some(&(ts, v)) = self.items.front() {
            if ts > floor {
                break;
            }
            self.items.pop_front();
            self.total.sub(v);
            if self.short.is_some() {
                // The short window lies inside the long one: the item was outside it.
                self.outside_short.sub(v);
                self.short_start -= 1;
            }
        }
        self.due = self.first_change();
    }

    /// Adds an item at `ts` (call `advance` first). Items already outside the
    /// window are ignored.
    pub fn insert(&mut self, ts: Ts, v: V) {
        if ts <= self.floor() {
            return;
        }
        self.total.add(v);
        let before_short = self.short.is_some() && ts <= self.short_floor();
        if before_short {
            self.outside_short.add(v);
        }
        let at = position(&self.items, ts);
        match at.checked_sub(1).and_then(|i| self.items.get_mut(i)) {
            Some((t, sum)) if *t == ts => sum.add(v),
            _ => {
                place(&mut self.items, at, (ts, v));
                if before_short {
                    self.short_start += 1;
                }
            }
        }
        // The item is the first one or the first inside the short window, or
        // it changes nothing of when the next change is.
        self.due = self.due.min(ts + self.span);
        if let Some(s) = self.short.filter(|_| !before_short) {
            self.due = self.due.min(ts + s);
        }
        debug_assert_eq!(self.due, self.first_change());
    }

    /// Total over the long window.
    pub fn total(&self) -> V {
        self.total
    }

    /// Total over the short window.
    pub fn short_total(&self) -> V {
        let mut v = self.total;
        v.sub(self.outside_short);
        v
    }

    /// Total over `(now − span, now − short]`.
    pub fn outside_short(&self) -> V {
        self.outside_short
    }

    /// The next instant at which a total changes, if any.
    pub fn next_change(&self) -> Option<Ts> {
        debug_assert_eq!(self.due, self.first_change());
        (self.due != Ts::MAX).then_some(self.due)
    }
}

pub fn min_opt(a: Option<Ts>, b: Option<Ts>) -> Option<Ts> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// What `LatestSeen::touch` did to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// The key entered the window.
    Entered,
    /// The key was already in the window; its latest ts moved forward.
    Moved,
    /// Nothing changed (an older sighting, or one already outside the window).
    Unchanged,
}

/// Hash maps of the fold: foldhash is several times faster than SipHash on
/// short keys and is seeded per process, so crafted ids cannot force
/// collisions.
pub use crate::fast::FastMap;

/// A key of a `LatestSeen`: small and copyable.
pub trait WindowKey: Hash + Eq + Copy {}

impl WindowKey for u32 {}

impl WindowKey for Id {}

/// Distinct keys seen within `(now − span, now]`, each with the latest ts it
/// was seen at; counts the keys also seen within the shorter window.
///
/// `order` holds every key's latest sighting in ts order, and also earlier
/// sightings superseded since (stale: the key's latest ts is another). Stale
/// entries are skipped where they are met and dropped in bulk once they
/// outnumber the live ones, so a repeat sighting costs a push, not the
/// removal of the old entry from an ordered index.
#[derive(Clone, Debug)]
pub struct LatestSeen<K: WindowKey> {
    span: i64,
    short: Option<i64>,
    latest: FastMap<K, Ts>,
    order: VecDeque<(Ts, K)>,
    /// Keys whose latest ts is at or before the short window's floor.
    outside_short: usize,
    /// `order[..short_start]` are the entries at or before that floor.
    short_start: usize,
    /// The first live entry inside the short window (or `order.len()`):
    /// `order[short_start..short_live]` are all stale.
    short_live: usize,
    now: Ts,
    /// No entry leaves the window or the short window before this instant
    /// (it may be earlier than the next change: a lower bound), so an
    /// `advance` before it reads nothing but this struct.
    due: Ts,
}

impl<K: WindowKey> LatestSeen<K> {
    pub fn new(span: i64, short: Option<i64>) -> Self {
        LatestSeen {
            span,
            short,
            latest: FastMap::default(),
            order: VecDeque::new(),
            outside_short: 0,
            short_start: 0,
            short_live: 0,
            now: Ts::MIN,
            due: Ts::MAX,
        }
    }

    fn floor(&self) -> Ts {
        self.now.saturating_sub(self.span)
    }

    fn short_floor(&self) -> Ts {
        self.now.saturating_sub(self.short.unwrap_or(0))
    }

    fn is_live(&self, ts: Ts, key: &K) -> bool {
        self.latest.get(key) == Some(&ts)
    }

    /// When the first entry leaves the window or the entry at the short
    /// cursor leaves the short window (stale or not).
    fn first_change(&self) -> Ts {
        first_exit(&self.order, self.span, self.short, self.short_start)
    }

    /// Moves the window to `now`; calls `expired` for each key that leaves it.
    pub fn advance(&mut self, now: Ts, mut expired: impl FnMut(&K)) {
        if now <= self.now {
            return;
        }
        self.now = now;
        if now < self.due {
            debug_assert!(now < self.first_change());
            return;
        }
        if self.short.is_some() {
            let short_floor = self.short_floor();
            while let Some(&(ts, k)) = self.order.get(self.short_start) {
                if ts > short_floor {
                    break;
                }
                if self.is_live(ts, &k) {
                    self.outside_short += 1;
                }
                self.short_start += 1;
            }
            if self.short_live < self.short_start {
                self.short_live = self.short_start;
                self.skip_stale_short();
            }
        }
        let floor = self.floor();
        let mut popped = false;
        while let Some(&(ts, k)) = self.order.front() {
            if ts > floor {
                break;
            }
            popped = true;
            if self.pop_front() {
                self.latest.remove(&k);
                if self.short.is_some() {
                    self.outside_short -= 1;
                }
                expired(&k);
            }
        }
        if popped {
            self.drop_stale_front();
        }
        self.due = self.first_change();
    }

    /// Pops the first entry; returns whether it was live.
    fn pop_front(&mut self) -> bool {
        let Some((ts, k)) = self.order.pop_front() else { return false };
        // A stale entry may lie past the cursor (inside the short window).
        self.short_start = self.short_start.saturating_sub(1);
        self.short_live = self.short_live.saturating_sub(1);
        self.is_live(ts, &k)
    }

    /// Moves `short_live` past stale entries.
    fn skip_stale_short(&mut self) {
        while let Some(&(ts, k)) = self.order.get(self.short_live) {
            if self.is_live(ts, &k) {
                break;
            }
            self.short_live += 1;
        }
    }

    /// Keeps a live entry (or none) at the front, so the next expiry is read
    /// off it.
    fn drop_stale_front(&mut self) {
        while let Some(&(ts, k)) = self.order.front() {
            if self.is_live(ts, &k) {
                break;
            }
            self.pop_front();
        }
    }

    /// Records a sighting of `key` at `ts` (call `advance` first).
    pub fn touch(&mut self, key: K, ts: Ts) -> Touch {
        if ts <= self.floor() {
            return Touch::Unchanged;
        }
        let short_floor = self.short_floor();
        let counts_short = self.short.is_some();
        // The entry a move makes stale, if it is the first live one overall
        // or inside the short window (then a live one is looked for).
        let (mut front_moved, mut short_moved) = (false, false);
        let touch = match self.latest.get_mut(&key) {
            Some(latest) => {
                let old = *latest;
                if old >= ts {
                    return Touch::Unchanged;
                }
                *latest = ts;
                if counts_short && old <= short_floor && ts > short_floor {
                    self.outside_short -= 1;
                }
                front_moved = self.order.front() == Some(&(old, key));
                short_moved = counts_short && self.order.get(self.short_live) == Some(&(old, key));
                Touch::Moved
            }
            None => {
                if counts_short && ts <= short_floor {
                    self.outside_short += 1;
                }
                self.latest.insert(key, ts);
                Touch::Entered
            }
        };
        let at = position(&self.order, ts);
        place(&mut self.order, at, (ts, key));
        // The new entry may be the first, or the first inside the short
        // window; whatever else moves below only makes `due` earlier than
        // needed, which is safe.
        self.due = self.due.min(ts + self.span);
        if let Some(s) = self.short.filter(|_| ts > short_floor) {
            self.due = self.due.min(ts + s);
        }
        if counts_short && ts <= short_floor {
            self.short_start += 1;
            self.short_live += 1;
        } else if at < self.short_live {
            self.short_live = at;
        }
        if front_moved {
            self.drop_stale_front();
        }
        if short_moved {
            self.skip_stale_short();
        }
        if touch == Touch::Moved && self.order.len() > 2 * self.latest.len() + 16 {
            self.compact();
        }
        touch
    }

    /// Drops every stale entry.
    fn compact(&mut self) {
        let latest = &self.latest;
        self.order.retain(|(ts, k)| latest.get(k) == Some(ts));
        self.reset_cursors();
    }

    /// Places both cursors when every entry is live.
    fn reset_cursors(&mut self) {
        self.short_start = short_start(&self.order, self.short, self.now);
        self.short_live = self.short_start;
    }

    /// Keys in the long window.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Keys in the short window.
    pub fn short_len(&self) -> usize {
        self.latest.len() - self.outside_short
    }

    /// Every key in the long window with its latest ts.
    pub fn iter(&self) -> impl Iterator<Item = (&K, Ts)> {
        self.latest.iter().map(|(k, t)| (k, *t))
    }

    /// The next instant at which a count changes, if any.
    pub fn next_change(&self) -> Option<Ts> {
        // The front entry and the one at `short_live` are live (see
        // `drop_stale_front` and `skip_stale_short`).
        let first = self.order.front().map(|(t, _)| t + self.span);
        let short = self.short.and_then(|s| self.order.get(self.short_live).map(|(t, _)| t + s));
        min_opt(first, short)
    }
}

/// Distinct keys seen within `(now − span, now]` (no short window), for
/// large portfolio-wide sets such as a feature's users.
///
/// Events from many partitions arrive out of order by minutes or hours, and
/// placing such a sighting in a ts-ordered queue of hundreds of thousands of
/// keys would shift every later one (measured on the Kafka path: 44% of the
/// ingest thread in `memmove`). So sightings in ts order are pushed on a
/// queue, and the others go to a B-tree beside it; expiry takes the earlier
/// of the two fronts. As in `LatestSeen`, a repeat sighting leaves the old
/// entry behind as stale (its key's latest ts is another), to be skipped
/// where it is met and dropped in bulk once stale entries outnumber live ones.
#[derive(Clone, Debug)]
pub struct WideSeen<K: WindowKey> {
    span: i64,
    latest: FastMap<K, Ts>,
    /// Sightings that came in ts order.
    queue: VecDeque<(Ts, K)>,
    /// Sightings that came after a later one.
    late: BTreeSet<(Ts, K)>,
    now: Ts,
    /// No key leaves the window before this instant (a lower bound), so an
    /// `advance` before it reads nothing else.
    due: Ts,
}

impl<K: WindowKey + Ord> WideSeen<K> {
    pub fn new(span: i64) -> Self {
        WideSeen {
            span,
            latest: FastMap::default(),
            queue: VecDeque::new(),
            late: BTreeSet::new(),
            now: Ts::MIN,
            due: Ts::MAX,
        }
    }

    fn is_live(&self, ts: Ts, key: &K) -> bool {
        self.latest.get(key) == Some(&ts)
    }

    /// The earliest entry of either part (live or stale), and whether it is
    /// the queue's.
    fn first(&self) -> Option<((Ts, K), bool)> {
        match (self.queue.front(), self.late.first()) {
            (Some(q), Some(l)) if l < q => Some((*l, false)),
            (Some(q), _) => Some((*q, true)),
            (None, Some(l)) => Some((*l, false)),
            (None, None) => None,
        }
    }

    fn pop_first(&mut self) -> Option<(Ts, K)> {
        let (entry, from_queue) = self.first()?;
        if from_queue {
            self.queue.pop_front();
        } else {
            self.late.pop_first();
        }
        Some(entry)
    }

    /// Drops stale entries from the front, so the next change is read off it.
    fn drop_stale_front(&mut self) {
        while let Some(((ts, k), _)) = self.first() {
            if self.is_live(ts, &k) {
                break;
            }
            self.pop_first();
        }
    }

    /// Moves the window to `now`; calls `expired` for each key that leaves it.
    pub fn advance(&mut self, now: Ts, mut expired: impl FnMut(&K)) {
        if now <= self.now {
            return;
        }
        self.now = now;
        if now < self.due {
            return;
        }
        let floor = now.saturating_sub(self.span);
        while let Some(((ts, k), _)) = self.first() {
            if ts > floor {
                break;
            }
            self.pop_first();
            if self.is_live(ts, &k) {
                self.latest.remove(&k);
                expired(&k);
            }
        }
        self.drop_stale_front();
        self.due = self.next_change().unwrap_or(Ts::MAX);
    }

    /// Records a sighting of `key` at `ts` (call `advance` first).
    pub fn touch(&mut self, key: K, ts: Ts) -> Touch {
        if ts <= self.now.saturating_sub(self.span) {
            return Touch::Unchanged;
        }
        let (touch, old) = match self.latest.get_mut(&key) {
            Some(latest) if *latest >= ts => return Touch::Unchanged,
            Some(latest) => (Touch::Moved, std::mem::replace(latest, ts)),
            None => {
                self.latest.insert(key, ts);
                (Touch::Entered, ts)
            }
        };
        if self.queue.back().is_none_or(|(last, _)| *last <= ts) {
            self.queue.push_back((ts, key));
        } else {
            self.late.insert((ts, key));
        }
        self.due = self.due.min(ts + self.span);
        if touch == Touch::Moved {
            // The entry left behind is stale; if it was the first, find a live one.
            if self.first().is_some_and(|(entry, _)| entry == (old, key)) {
                self.drop_stale_front();
            }
            if self.queue.len() + self.late.len() > 2 * self.latest.len() + 16 {
                let latest = &self.latest;
                self.queue.retain(|(t, k)| latest.get(k) == Some(t));
                self.late.retain(|(t, k)| latest.get(k) == Some(t));
            }
        }
        touch
    }

    /// Keys in the window.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// No key leaves the window before this instant (`Ts::MAX`: none); a
    /// lower bound of `next_change`, kept without reading the entries.
    pub fn due(&self) -> Ts {
        self.due
    }

    /// The next instant at which the count changes, if any.
    pub fn next_change(&self) -> Option<Ts> {
        // The front entry is live (see `drop_stale_front`).
        self.first().map(|((t, _), _)| t + self.span)
    }

    /// The live entries in ts order: the queue and the B-tree merged.
    fn live_in_order(&self) -> impl Iterator<Item = (Ts, K)> + '_ {
        let (mut queue, mut late) = (self.queue.iter().peekable(), self.late.iter().peekable());
        std::iter::from_fn(move || match (queue.peek(), late.peek()) {
            (Some(q), Some(l)) if l < q => late.next(),
            (Some(_), _) => queue.next(),
            (None, _) => late.next(),
        })
        .copied()
        .filter(|(t, k)| self.is_live(*t, k))
    }
}

/// The live entries of a `WideSeen`, written as `LiveOrder` writes those of a
/// `LatestSeen`.
struct WideOrder<'a, K: WindowKey>(&'a WideSeen<K>);

impl<K: WindowKey + Ord + Serialize> Serialize for WideOrder<'_, K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.latest.len()))?;
        for entry in self.0.live_in_order() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

/// Written in the layout of a `LatestSeen` without a short window, so either
/// type reads what the other wrote.
impl<K: WindowKey + Ord + Serialize> Serialize for WideSeen<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        LatestSeenRepr {
            span: self.span,
            short: None::<i64>,
            latest: &self.latest,
            order: WideOrder(self),
            outside_short: 0usize,
            now: self.now,
        }
        .serialize(s)
    }
}

impl<'de, K: WindowKey + Ord + DeserializeOwned> Deserialize<'de> for WideSeen<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = LatestSeenRepr::<FastMap<K, Ts>, VecDeque<(Ts, K)>>::deserialize(d)?;
        if w.short.is_some() {
            return Err(serde::de::Error::custom("a portfolio-wide window has no short window"));
        }
        w.check()?;
        let mut seen =
            WideSeen { span: w.span, latest: w.latest, queue: w.order, late: BTreeSet::new(), now: w.now, due: 0 };
        seen.due = seen.next_change().unwrap_or(Ts::MAX);
        Ok(seen)
    }
}

/// A ts-ordered queue written as the ordered map it replaced.
struct AsMap<'a, V>(&'a VecDeque<(Ts, V)>);

impl<V: Serialize> Serialize for AsMap<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(t, v)| (t, v)))
    }
}

/// The queue read back from that map.
struct FromMap<V>(VecDeque<(Ts, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for FromMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Items<V> {
            type Value = FromMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of timestamps to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut items = VecDeque::with_capacity(map.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(entry) = map.next_entry::<Ts, V>()? {
                    items.push_back(entry);
                }
                Ok(FromMap(items))
            }
        }
        d.deserialize_map(Items(PhantomData))
    }
}

/// A queue's ts order must hold for every operation on it: checked on restore.
fn check_order<T, E: serde::de::Error>(queue: &VecDeque<(Ts, T)>, strict: bool) -> Result<(), E> {
    let sorted = queue.iter().zip(queue.iter().skip(1)).all(|(a, b)| if strict { a.0 < b.0 } else { a.0 <= b.0 });
    if sorted { Ok(()) } else { Err(E::custom("window items out of ts order")) }
}

/// A `Window` as checkpoints hold it: written from borrowed parts
/// (`AsMap`, `&V`), read into owned ones (`FromMap`, `V`).
#[derive(Serialize, Deserialize)]
#[serde(rename = "Window")]
struct WindowRepr<I, V> {
    span: i64,
    short: Option<i64>,
    items: I,
    total: V,
    outside_short: V,
    now: Ts,
}

impl<V: Tally + Serialize> Serialize for Window<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WindowRepr {
            span: self.span,
            short: self.short,
            items: AsMap(&self.items),
            total: &self.total,
            outside_short: &self.outside_short,
            now: self.now,
        }
        .serialize(s)
    }
}

impl<'de, V: Tally + Deserialize<'de>> Deserialize<'de> for Window<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WindowRepr::<FromMap<V>, V>::deserialize(d)?;
        check_order(&w.items.0, true)?;
        let items = w.items.0;
        let mut window = Window {
            short_start: short_start(&items, w.short, w.now),
            span: w.span,
            short: w.short,
            items,
            total: w.total,
            outside_short: w.outside_short,
            now: w.now,
            due: Ts::MAX,
        };
        window.due = window.first_change();
        Ok(window)
    }
}

/// The live entries of a `LatestSeen`, in ts order (as the ordered set of
/// `(ts, key)` it replaced was written).
struct LiveOrder<'a, K: WindowKey>(&'a LatestSeen<K>);

impl<K: WindowKey + Serialize> Serialize for LiveOrder<'_, K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let seen = self.0;
        let mut seq = s.serialize_seq(Some(seen.latest.len()))?;
        for entry in seen.order.iter().filter(|(t, k)| seen.is_live(*t, k)) {
            seq.serialize_element(entry)?;
        }
        seq.end()
    }
}

/// A `LatestSeen` as checkpoints hold it: written from borrowed parts
/// (`&FastMap`, `LiveOrder`), read into owned ones.
#[derive(Serialize, Deserialize)]
#[serde(rename = "LatestSeen")]
struct LatestSeenRepr<L, O> {
    span: i64,
    short: Option<i64>,
    latest: L,
    order: O,
    outside_short: usize,
    now: Ts,
}

impl<K: WindowKey> LatestSeenRepr<FastMap<K, Ts>, VecDeque<(Ts, K)>> {
    /// Read back: one entry per key, in ts order.
    fn check<E: serde::de::Error>(&self) -> Result<(), E> {
        check_order(&self.order, false)?;
        if self.order.len() != self.latest.len() {
            return Err(E::custom("window order does not match its keys"));
        }
        Ok(())
    }
}

impl<K: WindowKey + Serialize> Serialize for LatestSeen<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        LatestSeenRepr {
            span: self.span,
            short: self.short,
            latest: &self.latest,
            order: LiveOrder(self),
            outside_short: self.outside_short,
            now: self.now,
        }
        .serialize(s)
    }
}

impl<'de, K: WindowKey + DeserializeOwned> Deserialize<'de> for LatestSeen<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = LatestSeenRepr::<FastMap<K, Ts>, VecDeque<(Ts, K)>>::deserialize(d)?;
        w.check()?;
        let mut seen = LatestSeen {
            span: w.span,
            short: w.short,
            latest: w.latest,
            order: w.order,
            outside_short: w.outside_short,
            short_start: 0,
            short_live: 0,
            now: w.now,
            due: Ts::MAX,
        };
        seen.reset_cursors();
        seen.due = seen.first_change();
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn window_counts_long_and_short() {
        let mut w: Window<u64> = Window::new(14, Some(7));
        w.advance(20);
        for t in [5, 6, 13, 14, 20] {
            w.insert(t, 1);
        }
        // (6, 20]: 13, 14, 20 → 3; short (13, 20]: 14, 20 → 2.
        assert_eq!((w.total(), w.short_total(), w.outside_short()), (3, 2, 1));
        // 14 leaves the short window at 21, before 13 leaves the long one at 27.
        assert_eq!(w.next_change(), Some(21));
        w.advance(21);
        assert_eq!((w.total(), w.short_total()), (3, 1));
        w.advance(100);
        assert_eq!((w.total(), w.short_total()), (0, 0));
        assert_eq!(w.next_change(), None);
    }

    #[test]
    fn latest_seen_counts_distinct_keys() {
        let (a, b, c) = (1u32, 2u32, 3u32);
        let mut s: LatestSeen<u32> = LatestSeen::new(30, Some(7));
        s.advance(100, |_| {});
        assert_eq!(s.touch(a, 80), Touch::Entered);
        assert_eq!(s.touch(b, 95), Touch::Entered);
        assert_eq!(s.touch(a, 70), Touch::Unchanged);
        assert_eq!(s.touch(c, 60), Touch::Unchanged, "outside (70, 100]");
        assert_eq!((s.len(), s.short_len()), (2, 1));
        assert_eq!(s.touch(a, 99), Touch::Moved);
        assert_eq!((s.len(), s.short_len()), (2, 2));
        let mut gone = vec![];
        s.advance(124, |k| gone.push(*k));
        assert!(gone.is_empty());
        assert_eq!((s.len(), s.short_len()), (2, 0));
        assert_eq!(s.next_change(), Some(125));
        s.advance(125, |k| gone.push(*k));
        assert_eq!(gone, vec![b]);
    }

    /// One step of a window model test: move time forward, or record a
    /// sighting some way behind `now` (out of order as often as not).
    #[derive(Clone, Debug)]
    enum Op {
        Advance(i64),
        Touch { key: u32, behind: i64 },
    }

    fn ops() -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
        use proptest::prelude::*;
        let op = prop_oneof![
            (0i64..12).prop_map(Op::Advance),
            (0u32..6, prop_oneof![Just(0i64), 0i64..40]).prop_map(|(key, behind)| Op::Touch { key, behind }),
        ];
        proptest::collection::vec(op, 0..120)
    }

    /// Naive model: the latest ts of every key ever touched, and every item.
    fn expected(latest: &HashMap<u32, Ts>, now: Ts, span: i64, short: i64) -> (usize, usize, Option<Ts>) {
        let long: Vec<Ts> = latest.values().copied().filter(|t| *t > now - span).collect();
        let in_short = long.iter().filter(|t| **t > now - short).count();
        let next =
            long.iter().map(|t| t + span).chain(long.iter().filter(|t| **t > now - short).map(|t| t + short)).min();
        (long.len(), in_short, next)
    }

    proptest::proptest! {
        /// Both windows against a recount from scratch after every step,
        /// through a checkpoint round trip at the end.
        #[test]
        fn windows_match_a_recount(ops in ops()) {
            let (span, short) = (30, 7);
            let mut seen: LatestSeen<u32> = LatestSeen::new(span, Some(short));
            let mut wide: WideSeen<u32> = WideSeen::new(span);
            let mut events: Window<u64> = Window::new(span, Some(short));
            let mut latest: HashMap<u32, Ts> = HashMap::new();
            let mut items: Vec<Ts> = Vec::new();
            let mut now: Ts = 100;
            seen.advance(now, |_| {});
            wide.advance(now, |_| {});
            events.advance(now);
            for op in ops {
                match op {
                    Op::Advance(d) => {
                        now += d;
                        let mut gone = Vec::new();
                        seen.advance(now, |k| gone.push(*k));
                        let mut wide_gone = Vec::new();
                        wide.advance(now, |k| wide_gone.push(*k));
                        gone.sort_unstable();
                        wide_gone.sort_unstable();
                        proptest::prop_assert_eq!(&gone, &wide_gone);
                        events.advance(now);
                        for k in gone {
                            proptest::prop_assert!(latest.get(&k).is_some_and(|t| *t <= now - span));
                        }
                    }
                    Op::Touch { key, behind } => {
                        let ts = now - behind;
                        let touch = seen.touch(key, ts);
                        proptest::prop_assert_eq!(wide.touch(key, ts), touch);
                        events.insert(ts, 1);
                        if ts > now - span {
                            let t = latest.entry(key).or_insert(ts);
                            *t = (*t).max(ts);
                            items.push(ts);
                        }
                    }
                }
                let (len, short_len, next) = expected(&latest, now, span, short);
                proptest::prop_assert_eq!((seen.len(), seen.short_len(), seen.next_change()), (len, short_len, next));
                let wide_next = latest.values().filter(|t| **t > now - span).map(|t| t + span).min();
                proptest::prop_assert_eq!((wide.len(), wide.next_change()), (len, wide_next));
                let live: Vec<Ts> = items.iter().copied().filter(|t| *t > now - span).collect();
                let in_short = live.iter().filter(|t| **t > now - short).count() as u64;
                let next = live.iter().map(|t| t + span).chain(live.iter().filter(|t| **t > now - short).map(|t| t + short)).min();
                proptest::prop_assert_eq!(
                    (events.total(), events.short_total(), events.next_change()),
                    (live.len() as u64, in_short, next)
                );
            }
            let bytes = postcard::to_allocvec(&seen).expect("encodes");
            let back: LatestSeen<u32> = postcard::from_bytes(&bytes).expect("decodes");
            proptest::prop_assert_eq!((back.len(), back.short_len(), back.next_change()), (seen.len(), seen.short_len(), seen.next_change()));
            // A wide window reads back as itself, and as a `LatestSeen` without a short window.
            let bytes = postcard::to_allocvec(&wide).expect("encodes");
            let back: WideSeen<u32> = postcard::from_bytes(&bytes).expect("decodes");
            proptest::prop_assert_eq!((back.len(), back.next_change()), (wide.len(), wide.next_change()));
            let as_queue: LatestSeen<u32> = postcard::from_bytes(&bytes).expect("decodes");
            proptest::prop_assert_eq!((as_queue.len(), as_queue.next_change()), (wide.len(), wide.next_change()));
            let bytes = postcard::to_allocvec(&events).expect("encodes");
            let back: Window<u64> = postcard::from_bytes(&bytes).expect("decodes");
            proptest::prop_assert_eq!((back.total(), back.short_total(), back.next_change()), (events.total(), events.short_total(), events.next_change()));
        }
    }

    /// Checkpoints written before the queues (ordered map and set) still read.
    #[test]
    fn reads_the_ordered_map_layout() {
        #[derive(serde::Serialize)]
        struct OldWindow {
            span: i64,
            short: Option<i64>,
            items: std::collections::BTreeMap<Ts, u64>,
            total: u64,
            outside_short: u64,
            now: Ts,
        }
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct OldSeen {
            span: i64,
            short: Option<i64>,
            latest: HashMap<u32, Ts>,
            order: std::collections::BTreeSet<(Ts, u32)>,
            outside_short: usize,
            now: Ts,
        }
        let old = OldWindow {
            span: 14,
            short: Some(7),
            items: [(8, 2), (15, 1)].into(),
            total: 3,
            outside_short: 2,
            now: 20,
        };
        let w: Window<u64> = postcard::from_bytes(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!((w.total(), w.short_total(), w.next_change()), (3, 1, Some(22)));
        let old = OldSeen {
            span: 30,
            short: Some(7),
            latest: [(1, 80), (2, 95)].into(),
            order: [(80, 1), (95, 2)].into(),
            outside_short: 1,
            now: 100,
        };
        let s: LatestSeen<u32> = postcard::from_bytes(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!((s.len(), s.short_len(), s.next_change()), (2, 1, Some(102)));
        // It is written back in the same layout (map order aside).
        let again: OldSeen = postcard::from_bytes(&postcard::to_allocvec(&s).unwrap()).unwrap();
        assert_eq!(again, old);
    }
}
