//! Publish barriers: the fold notes what changed (accounts, scopes, books),
//! and `Engine::publish` turns only that into the next [`Snapshot`].

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::config::OTHER_FEATURE;
use super::scope::{Scope, ScopeKeys, ScopeTable};
use super::snapshot::{Book, Kpis, Record, Rendered, Snapshot};
use super::view::kpi;
use super::{Engine, distinct};

/// What changed since the last barrier.
#[derive(Clone, Debug)]
pub(super) struct Dirty {
    /// Everything (no snapshot yet, or a restore replaced the state).
    pub all: bool,
    /// Account slots refreshed (repeats allowed).
    pub accounts: Vec<u32>,
    /// CSMs whose book gained or lost an account.
    pub books: Vec<Arc<str>>,
    pub segments: Vec<u32>,
    pub regions: Vec<u32>,
    pub csms: Vec<u32>,
    /// The portfolio, the unassigned scope or anything at all moved.
    pub any: bool,
}

impl Default for Dirty {
    fn default() -> Self {
        Dirty {
            all: true,
            accounts: Vec::new(),
            books: Vec::new(),
            segments: Vec::new(),
            regions: Vec::new(),
            csms: Vec::new(),
            any: true,
        }
    }
}

impl Dirty {
    /// Nothing changed (right after a barrier).
    fn clean() -> Self {
        Dirty { all: false, any: false, ..Dirty::default() }
    }

    pub fn scopes(&mut self, keys: ScopeKeys) {
        self.any = true;
        self.segments.push(keys.segment);
        self.regions.push(keys.region);
        self.csms.extend(keys.csm);
    }

    pub fn account(&mut self, idx: u32) {
        self.any = true;
        self.accounts.push(idx);
    }
}

/// Brings the rendered KPI objects of the listed scopes up to date.
fn refresh_kpis(kpis: &mut Kpis, table: &ScopeTable, listed: &mut Vec<u32>) {
    for &i in distinct(listed) {
        let (name, scope) = (table.name(i), table.scope(i));
        if scope.is_empty() {
            kpis.remove(name);
        } else {
            kpis.insert(name.clone(), Arc::new(Rendered::new(kpi(scope))));
        }
    }
    listed.clear();
}

fn all_kpis<'a>(scopes: impl Iterator<Item = (&'a Arc<str>, &'a Scope)>) -> Kpis {
    scopes.map(|(name, scope)| (name.clone(), Arc::new(Rendered::new(kpi(scope))))).collect()
}

impl Engine {
    /// The account's record as of the watermark, for barrier `version`.
    fn record_of(&self, idx: u32, version: u64) -> Arc<Record> {
        let a = &self.slots[idx as usize].account;
        let mut features: Vec<Arc<str>> = a
            .usage
            .feature_slots()
            .map(|slot| self.features.shared_name(slot).cloned().unwrap_or_else(|| Arc::from(OTHER_FEATURE)))
            .collect();
        features.sort_unstable();
        features.dedup();
        let metrics = a.metrics(self.watermark.unwrap_or(0), &self.cfg);
        Arc::new(Record::of(a, idx, metrics, version, features))
    }

    fn book_of(&self, csm: &str, version: u64) -> Option<Arc<Book>> {
        let members = self.books.get(csm)?;
        let members =
            members.iter().map(|&i| self.records[i as usize].clone().expect("every slot has a record")).collect();
        Some(Arc::new(Book { version, members }))
    }

    fn features_view(&self) -> Value {
        let features: Map<String, Value> = self
            .features
            .live()
            .map(|(name, accounts, users)| (name.to_owned(), json!({"accounts_30d": accounts, "users_30d": users})))
            .collect();
        Value::Object(features)
    }

    /// The snapshot of the state now, built from scratch (what a barrier
    /// would publish; for tests and one-off readers).
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_and_records().0
    }

    /// `snapshot`, with each slot's record.
    fn snapshot_and_records(&self) -> (Snapshot, Vec<Arc<Record>>) {
        let mut copy = Snapshot { barrier: self.published.barrier, ..Snapshot::default() };
        let version = copy.barrier + 1;
        // Every account's record, on every core (a restore publishes all).
        let n = self.slots.len();
        let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(n / 4096 + 1);
        let chunk = n.div_ceil(threads.max(1)).max(1);
        let records: Vec<Arc<Record>> = std::thread::scope(|s| {
            let parts: Vec<_> = (0..n)
                .step_by(chunk)
                .map(|from| {
                    let to = (from + chunk).min(n);
                    s.spawn(move || (from..to).map(|i| self.record_of(i as u32, version)).collect::<Vec<_>>())
                })
                .collect();
            parts.into_iter().flat_map(|p| p.join().expect("record threads do not panic")).collect()
        });
        copy.accounts = records.iter().map(|r| (smol_str::SmolStr::new(&*r.id), r.clone())).collect();
        copy.numbering = self.numbering.0;
        copy.tiers = Arc::new(records.iter().map(|r| Some(r.metrics.tier())).collect());
        copy.books = self
            .books
            .iter()
            .map(|(csm, members)| {
                let members = members.iter().map(|&i| records[i as usize].clone()).collect();
                (csm.clone(), Arc::new(Book { version, members }))
            })
            .collect();
        self.fill_scopes(&mut copy);
        copy.segments = all_kpis(self.scopes.segments.iter());
        copy.regions = all_kpis(self.scopes.regions.iter());
        copy.csms = all_kpis(self.scopes.csms.iter());
        copy.alerts = self.alerting.firing().cloned().collect();
        (copy, records)
    }

    /// What every barrier renders again: the watermark, the portfolio and
    /// unassigned scopes, the features, positions and counters.
    fn fill_scopes(&self, s: &mut Snapshot) {
        s.now = self.watermark;
        s.portfolio = Arc::new(Rendered::new(kpi(&self.scopes.portfolio)));
        s.unassigned = Arc::new(Rendered::new(kpi(&self.scopes.unassigned)));
        s.histogram = self.scopes.portfolio.totals.histogram;
        s.features = Arc::new(Rendered::new(self.features_view()));
        s.positions = Arc::new(self.partitions.clone());
        s.stats = Arc::new(self.stats.clone());
    }

    /// Whether anything changed since the last barrier (positions included).
    pub fn has_unpublished(&self) -> bool {
        self.dirty.all || self.dirty.any || *self.published.positions != self.partitions
    }

    /// Publishes a barrier: the next snapshot, made of the last one and
    /// what changed since (accounts refreshed, their books, the scopes
    /// they moved, the firing alerts when a transition happened).
    pub fn publish(&mut self) -> Snapshot {
        if self.dirty.all {
            let (snapshot, records) = self.snapshot_and_records();
            self.published = snapshot;
            self.records = records.into_iter().map(Some).collect();
            self.dirty = Dirty::clean();
            self.alerts_published = self.alerting.generation();
        } else {
            self.publish_changes();
        }
        self.published.barrier += 1;
        self.published.clone()
    }

    fn publish_changes(&mut self) {
        let mut dirty = std::mem::replace(&mut self.dirty, Dirty::clean());
        let mut s = std::mem::take(&mut self.published);
        let version = s.barrier + 1;
        s.numbering = self.numbering.0;
        self.records.resize(self.slots.len(), None);
        let mut books = std::mem::take(&mut dirty.books);
        for &idx in distinct(&mut dirty.accounts) {
            let record = self.record_of(idx, version);
            s.accounts.insert(smol_str::SmolStr::new(&*record.id), record.clone());
            books.extend(record.info.csm_id.clone());
            let tier = Some(record.metrics.tier());
            // The tiers are copied only when one changed (or an account is new).
            if s.tiers.get(idx as usize) != Some(&tier) {
                let tiers = Arc::make_mut(&mut s.tiers);
                tiers.resize(tiers.len().max(idx as usize + 1), None);
                tiers[idx as usize] = tier;
            }
            self.records[idx as usize] = Some(record);
        }
        for csm in distinct_names(&mut books) {
            match self.book_of(csm, version) {
                Some(book) => s.books.insert(csm.clone(), book),
                None => s.books.remove(&**csm),
            };
        }
        refresh_kpis(&mut s.segments, &self.scopes.segments, &mut dirty.segments);
        refresh_kpis(&mut s.regions, &self.scopes.regions, &mut dirty.regions);
        refresh_kpis(&mut s.csms, &self.scopes.csms, &mut dirty.csms);
        if dirty.any || s.now != self.watermark {
            self.fill_scopes(&mut s);
        } else {
            s.positions = Arc::new(self.partitions.clone());
            s.stats = Arc::new(self.stats.clone());
        }
        let generation = self.alerting.generation();
        if generation != self.alerts_published {
            s.alerts = self.alerting.firing().cloned().collect();
            self.alerts_published = generation;
        }
        // The buffers are reused by the next barrier.
        dirty.accounts.clear();
        books.clear();
        self.dirty = Dirty { books, any: false, ..dirty };
        self.published = s;
    }
}

fn distinct_names(v: &mut Vec<Arc<str>>) -> &[Arc<str>] {
    v.sort_unstable();
    v.dedup();
    v
}
