//! Event-time alignment across input partitions (SPEC §2 additions), as
//! Kafka Streams synchronises a task's partitions by timestamp.
//!
//! Polled messages wait here, one queue per topic-partition in offset
//! order, and leave lowest `ts` first (ties: topic role, then partition
//! number). A message can leave only while no partition that is *behind*
//! (the broker holds messages of it that have not been polled yet) has an
//! empty queue: such a partition is waited for, at most `time.align_wait`
//! of wall time per stretch of emptiness; a partition that is caught up is
//! never waited for. So whenever each partition is in `ts` order, a replay,
//! a catch-up after downtime and a live run fold the same sequence.
//!
//! A message without a `ts` (rejected before its timestamp was read) leaves
//! as soon as it leads its queue: it changes nothing but its partition's
//! position, which must advance in offset order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::event::Topic;
use crate::time::Ts;

/// A topic-partition, by role.
pub type Part = (Topic, i32);

/// Why `Aligner::drain` stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// It released as many as asked for.
    Full,
    /// A partition that is behind has nothing buffered: poll again first.
    Wait,
    /// Nothing is buffered.
    Empty,
}

/// Buffered messages per partition, released in event-time order.
#[derive(Debug)]
pub struct Aligner<T> {
    queues: HashMap<Part, VecDeque<(Ts, T)>>,
    /// The leading message of every non-empty queue, lowest first.
    leads: BinaryHeap<Reverse<(Ts, Part)>>,
    /// Since when each empty, lagging partition has been waited for.
    waiting: HashMap<Part, Instant>,
    wait: Duration,
    len: usize,
}

impl<T> Aligner<T> {
    pub fn new(wait: Duration) -> Self {
        Aligner { queues: HashMap::new(), leads: BinaryHeap::new(), waiting: HashMap::new(), wait, len: 0 }
    }

    /// Buffers a message of `part` (messages of a partition come in offset
    /// order); `ts` is its event time, `None` if it has none.
    pub fn push(&mut self, part: Part, ts: Option<Ts>, item: T) {
        self.waiting.remove(&part);
        // Without ts it leaves as soon as it leads.
        let ts = ts.unwrap_or(Ts::MIN);
        let queue = self.queues.entry(part).or_default();
        if queue.is_empty() {
            self.leads.push(Reverse((ts, part)));
        }
        queue.push_back((ts, item));
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Messages of `part` buffered.
    pub fn queued(&self, part: Part) -> usize {
        self.queues.get(&part).map_or(0, VecDeque::len)
    }

    fn holds(&self, part: Part) -> bool {
        self.queues.contains_key(&part)
    }

    /// Whether an empty partition that is behind still holds the others
    /// back at `now` (its stretch of emptiness began less than `wait` ago).
    fn holds_back(&mut self, part: Part, now: Instant) -> bool {
        let since = *self.waiting.entry(part).or_insert(now);
        now.duration_since(since) < self.wait
    }

    /// Releases up to `max` messages to `out`, lowest (ts, topic,
    /// partition) first, while no assigned partition that is `behind` has
    /// an empty queue (within its wait). `behind` is asked at most once per
    /// partition and call.
    pub fn drain(
        &mut self,
        now: Instant,
        assigned: &[Part],
        mut behind: impl FnMut(Part) -> bool,
        max: usize,
        mut out: impl FnMut(T),
    ) -> Stop {
        let mut blocking = 0usize;
        for &part in assigned {
            if !self.holds(part) && behind(part) && self.holds_back(part, now) {
                blocking += 1;
            }
        }
        for _ in 0..max {
            let Some(&Reverse((ts, part))) = self.leads.peek() else { return Stop::Empty };
            // A message without ts changes no window: it need not wait.
            if ts != Ts::MIN && blocking > 0 {
                return Stop::Wait;
            }
            self.leads.pop();
            let queue = self.queues.get_mut(&part).expect("a lead has a queue");
            let (_, item) = queue.pop_front().expect("a lead");
            if let Some((next, _)) = queue.front() {
                self.leads.push(Reverse((*next, part)));
            } else {
                self.queues.remove(&part);
                if assigned.contains(&part) && behind(part) && self.holds_back(part, now) {
                    blocking += 1;
                }
            }
            self.len -= 1;
            out(item);
        }
        Stop::Full
    }

    /// Drops everything buffered (after a rebalance the consumer is
    /// positioned at the engine's offsets again, so it is polled anew).
    pub fn clear(&mut self) {
        self.queues.clear();
        self.leads.clear();
        self.waiting.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WAIT: Duration = Duration::from_millis(50);

    fn parts(n: usize) -> Vec<Part> {
        (0..n).map(|i| (Topic::ALL[i % 4], (i / 4) as i32)).collect()
    }

    fn take<T>(
        a: &mut Aligner<T>,
        now: Instant,
        assigned: &[Part],
        behind: impl FnMut(Part) -> bool,
    ) -> (Vec<T>, Stop) {
        let mut out = Vec::new();
        let stop = a.drain(now, assigned, behind, usize::MAX, |x| out.push(x));
        (out, stop)
    }

    #[test]
    fn lowest_ts_first_ties_by_topic_then_partition() {
        let mut a = Aligner::new(WAIT);
        a.push((Topic::Usage, 1), Some(5), "u1@5");
        a.push((Topic::Accounts, 2), Some(5), "a2@5");
        a.push((Topic::Accounts, 0), Some(7), "a0@7");
        a.push((Topic::Usage, 0), Some(5), "u0@5");
        a.push((Topic::Usage, 0), Some(6), "u0@6");
        let (out, stop) = take(&mut a, Instant::now(), &[], |_| false);
        assert_eq!(out, ["a2@5", "u0@5", "u1@5", "u0@6", "a0@7"]);
        assert_eq!((stop, a.len()), (Stop::Empty, 0));
    }

    #[test]
    fn waits_for_an_empty_partition_that_is_behind_but_not_longer_than_the_wait() {
        let mut a = Aligner::new(WAIT);
        let (p, q, r) = ((Topic::Usage, 0), (Topic::Tickets, 0), (Topic::Revenue, 0));
        let all = [p, q, r];
        let t0 = Instant::now();
        let behind = |x: Part| x == q;
        a.push(p, Some(10), "p@10");
        assert_eq!(take(&mut a, t0, &all, behind), (vec![], Stop::Wait), "q has unpolled messages");
        assert_eq!(take(&mut a, t0 + WAIT / 2, &all, behind), (vec![], Stop::Wait));
        assert_eq!(take(&mut a, t0 + WAIT, &all, behind), (vec!["p@10"], Stop::Empty), "waited long enough");
        // The same stretch of emptiness is not waited for again.
        a.push(p, Some(11), "p@11");
        assert_eq!(take(&mut a, t0 + WAIT, &all, behind), (vec!["p@11"], Stop::Empty));
        // A message from q ends the stretch; once q is empty again it is waited for anew.
        a.push(q, Some(12), "q@12");
        a.push(p, Some(13), "p@13");
        assert_eq!(take(&mut a, t0 + WAIT * 2, &all, behind), (vec!["q@12"], Stop::Wait));
        // Caught-up partitions are never waited for; nor is a message without ts.
        assert_eq!(take(&mut a, t0 + WAIT * 2, &all, |_| false), (vec!["p@13"], Stop::Empty));
        a.push(p, None, "p rejected");
        assert_eq!(take(&mut a, t0 + WAIT * 3, &all, behind), (vec!["p rejected"], Stop::Empty));
        // At most `max` at a time.
        a.push(r, Some(20), "r@20");
        a.push(r, Some(21), "r@21");
        let mut out = Vec::new();
        assert_eq!(a.drain(t0 + WAIT * 9, &all, |_| false, 1, |x| out.push(x)), Stop::Full);
        assert_eq!(out, ["r@20"]);
        a.clear();
        assert!(a.is_empty());
    }

    /// Per partition, messages in ts order (ts, id).
    fn streams() -> impl Strategy<Value = Vec<Vec<(Ts, u32)>>> {
        proptest::collection::vec(proptest::collection::vec(0i64..40, 0..12), 1..6).prop_map(|parts| {
            let mut id = 0;
            parts
                .into_iter()
                .map(|mut ts| {
                    ts.sort_unstable();
                    ts.into_iter()
                        .map(|t| {
                            id += 1;
                            (t, id)
                        })
                        .collect()
                })
                .collect()
        })
    }

    proptest! {
        /// However the partitions' messages are delivered (any interleaving,
        /// in chunks, folded in batches of any size), with every lagging
        /// partition waited for, the order folded is the merge of the
        /// partitions by (ts, topic, partition): a replay folds what the
        /// live run folded.
        #[test]
        fn any_delivery_interleaving_folds_the_same_sequence(
            streams in streams(),
            schedule in proptest::collection::vec((0usize..6, 1usize..4, 1usize..4), 0..80),
        ) {
            let parts = parts(streams.len());
            let mut want: Vec<(Ts, Part, u32)> = streams
                .iter()
                .zip(&parts)
                .flat_map(|(s, p)| s.iter().map(move |&(ts, id)| (ts, *p, id)))
                .collect();
            want.sort();
            let want: Vec<u32> = want.into_iter().map(|(_, _, id)| id).collect();

            let mut a = Aligner::new(Duration::from_secs(3600));
            let mut delivered = vec![0usize; streams.len()];
            let mut got = Vec::new();
            let now = Instant::now();
            for step in 0.. {
                // Deliver a chunk of some partition (the schedule, then round robin).
                let (which, chunk, batch) = schedule.get(step).copied().unwrap_or((step, 1, 1));
                let i = which % streams.len();
                for _ in 0..chunk {
                    if delivered[i] < streams[i].len() {
                        let (ts, id) = streams[i][delivered[i]];
                        a.push(parts[i], Some(ts), id);
                        delivered[i] += 1;
                    }
                }
                let behind = |p: Part| {
                    let k = parts.iter().position(|x| *x == p).unwrap();
                    delivered[k] < streams[k].len()
                };
                a.drain(now, &parts, behind, batch, |id| got.push(id));
                if delivered.iter().zip(&streams).all(|(d, s)| *d == s.len()) {
                    a.drain(now, &parts, |_| false, usize::MAX, |id| got.push(id));
                    break;
                }
            }
            prop_assert_eq!(got, want);
        }
    }
}
