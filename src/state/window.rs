//! Exact sliding windows in event time.
//!
//! A window "last N" holds items with `ts > now − N`. Because the watermark
//! only moves forward, an item leaves a window exactly once, at
//! `now = ts + N`; each structure keeps its items ordered by ts so expiry pops
//! from the front and the next change time is read off the first item. Every
//! structure here can also count a shorter window inside the long one (7 days
//! inside 14 or 30) with a running counter, so counts are O(1) to read and
//! O(log n) to maintain.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;

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

/// Totals of timestamped values over the window `(now − span, now]`, and over
/// the shorter window `(now − short, now]` when `short` is set.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Window<V: Tally> {
    span: i64,
    short: Option<i64>,
    /// Items still inside the long window, summed per instant.
    items: BTreeMap<Ts, V>,
    total: V,
    /// Sum of the items at or before `short_floor` (outside the short window).
    outside_short: V,
    now: Ts,
}

impl<V: Tally> Window<V> {
    pub fn new(span: i64, short: Option<i64>) -> Self {
        Window { span, short, items: BTreeMap::new(), total: V::default(), outside_short: V::default(), now: Ts::MIN }
    }

    fn floor(&self) -> Ts {
        self.now.saturating_sub(self.span)
    }

    fn short_floor(&self) -> Ts {
        self.now.saturating_sub(self.short.unwrap_or(0))
    }

    /// Moves the window to `now` (which never goes back).
    pub fn advance(&mut self, now: Ts) {
        if now <= self.now {
            return;
        }
        let old_short = self.short_floor();
        self.now = now;
        if self.short.is_some() {
            let new_short = self.short_floor();
            for (_, v) in self.items.range(old_short.saturating_add(1)..=new_short) {
                self.outside_short.add(*v);
            }
        }
        let floor = self.floor();
        while let Some(entry) = self.items.first_entry() {
            if *entry.key() > floor {
                break;
            }
            let v = entry.remove();
            self.total.sub(v);
            if self.short.is_some() {
                self.outside_short.sub(v);
            }
        }
    }

    /// Adds an item at `ts` (call `advance` first). Items already outside the
    /// window are ignored.
    pub fn insert(&mut self, ts: Ts, v: V) {
        if ts <= self.floor() {
            return;
        }
        self.items.entry(ts).or_default().add(v);
        self.total.add(v);
        if self.short.is_some() && ts <= self.short_floor() {
            self.outside_short.add(v);
        }
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
        let first = self.items.keys().next().map(|t| t + self.span);
        let short = self
            .short
            .and_then(|s| self.items.range(self.short_floor().saturating_add(1)..).next().map(|(t, _)| t + s));
        min_opt(first, short)
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
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A key of a `LatestSeen`: small, copyable, ordered, with least and
/// greatest values to bound range queries by time alone.
pub trait WindowKey: Hash + Eq + Ord + Copy {
    const MIN: Self;
    const MAX: Self;
}

impl WindowKey for u32 {
    const MIN: Self = u32::MIN;
    const MAX: Self = u32::MAX;
}

impl WindowKey for Id {
    const MIN: Self = Id(0, 0);
    const MAX: Self = Id(u64::MAX, u64::MAX);
}

/// Distinct keys seen within `(now − span, now]`, each with the latest ts it
/// was seen at; counts the keys also seen within the shorter window.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(bound(serialize = "K: serde::Serialize", deserialize = "K: serde::de::DeserializeOwned"))]
pub struct LatestSeen<K: WindowKey> {
    span: i64,
    short: Option<i64>,
    latest: FastMap<K, Ts>,
    /// The same keys ordered by their latest ts.
    order: BTreeSet<(Ts, K)>,
    /// Keys whose latest ts is at or before the short window's floor.
    outside_short: usize,
    now: Ts,
}

impl<K: WindowKey> LatestSeen<K> {
    pub fn new(span: i64, short: Option<i64>) -> Self {
        LatestSeen { span, short, latest: FastMap::default(), order: BTreeSet::new(), outside_short: 0, now: Ts::MIN }
    }

    fn floor(&self) -> Ts {
        self.now.saturating_sub(self.span)
    }

    fn short_floor(&self) -> Ts {
        self.now.saturating_sub(self.short.unwrap_or(0))
    }

    /// Moves the window to `now`; calls `expired` for each key that leaves it.
    pub fn advance(&mut self, now: Ts, mut expired: impl FnMut(&K)) {
        if now <= self.now {
            return;
        }
        let old_short = self.short_floor();
        self.now = now;
        if self.short.is_some() {
            let new_short = self.short_floor();
            if new_short > old_short {
                self.outside_short +=
                    self.order.range((old_short.saturating_add(1), K::MIN)..=(new_short, K::MAX)).count();
            }
        }
        let floor = self.floor();
        while let Some(&(ts, k)) = self.order.first() {
            if ts > floor {
                break;
            }
            self.order.pop_first();
            self.latest.remove(&k);
            if self.short.is_some() {
                self.outside_short -= 1;
            }
            expired(&k);
        }
    }

    /// Records a sighting of `key` at `ts` (call `advance` first).
    pub fn touch(&mut self, key: K, ts: Ts) -> Touch {
        if ts <= self.floor() {
            return Touch::Unchanged;
        }
        let short_floor = self.short_floor();
        let counts_short = self.short.is_some();
        if let Some(latest) = self.latest.get_mut(&key) {
            let old = *latest;
            if old >= ts {
                return Touch::Unchanged;
            }
            *latest = ts;
            self.order.remove(&(old, key));
            self.order.insert((ts, key));
            if counts_short && old <= short_floor && ts > short_floor {
                self.outside_short -= 1;
            }
            return Touch::Moved;
        }
        if counts_short && ts <= short_floor {
            self.outside_short += 1;
        }
        self.order.insert((ts, key));
        self.latest.insert(key, ts);
        Touch::Entered
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
        let first = self.order.first().map(|(t, _)| t + self.span);
        let short = self.short.and_then(|s| {
            self.order.range((self.short_floor().saturating_add(1), K::MIN)..).next().map(|(t, _)| t + s)
        });
        min_opt(first, short)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
