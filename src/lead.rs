//! Leadership (SPEC §12): work that belongs to no partition (scope-level
//! rules now; scope history rows, report schedules and their deliveries
//! later) asks this handle before acting. One instance always leads; the
//! scale-out work backs the handle with a fenced Redis lease, setting it as
//! the lease is won, renewed or lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Whether this instance leads, shared by everything that asks.
#[derive(Clone, Debug)]
pub struct Leadership {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    leads: AtomicBool,
    /// The fencing token of the current term (0: the sole instance's).
    term: AtomicU64,
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership::sole()
    }
}

impl Leadership {
    /// The only instance: it always leads.
    pub fn sole() -> Self {
        Leadership { state: Arc::new(State { leads: AtomicBool::new(true), term: AtomicU64::new(0) }) }
    }

    /// An instance that does not lead until [`Leadership::won`].
    pub fn follower() -> Self {
        let l = Leadership::sole();
        l.state.leads.store(false, Ordering::SeqCst);
        l
    }

    pub fn leads(&self) -> bool {
        self.state.leads.load(Ordering::SeqCst)
    }

    /// The fencing token of the term this instance leads in, if it leads:
    /// writes made as leader carry it.
    pub fn term(&self) -> Option<u64> {
        self.leads().then(|| self.state.term.load(Ordering::SeqCst))
    }

    /// Leadership won (or renewed) with fencing token `term`.
    pub fn won(&self, term: u64) {
        self.state.term.store(term, Ordering::SeqCst);
        self.state.leads.store(true, Ordering::SeqCst);
    }

    /// Leadership lost: scope-level work stops at once.
    pub fn lost(&self) {
        self.state.leads.store(false, Ordering::SeqCst);
    }
}
