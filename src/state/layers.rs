//! How much of the fold runs: all of it, except in a benchmark build
//! (feature `layer-probe`) that measures what each layer of the fold costs
//! (`cspulse-load fold --layers`, see load-tests/README.md, "Layer by
//! layer"). A cut leaves the state incomplete, so only that build has it.

#[cfg(feature = "layer-probe")]
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The whole fold.
    Full,
    /// The event is applied to the account's raw state, but nothing is
    /// derived from it (no metrics, health, scope totals or rules).
    NoRefresh,
    /// Only the checks, de-duplication, the watermark and the account
    /// lookup: the event's body is not applied.
    NoState,
}

#[cfg(feature = "layer-probe")]
static CUT: AtomicU8 = AtomicU8::new(Cut::Full as u8);

/// Where folds in this process cut short from now on.
#[cfg(feature = "layer-probe")]
pub fn set(cut: Cut) {
    CUT.store(cut as u8, Ordering::Relaxed);
}

#[cfg(feature = "layer-probe")]
pub(super) fn cut() -> Cut {
    match CUT.load(Ordering::Relaxed) {
        0 => Cut::Full,
        1 => Cut::NoRefresh,
        _ => Cut::NoState,
    }
}

#[cfg(not(feature = "layer-probe"))]
#[inline(always)]
pub(super) fn cut() -> Cut {
    Cut::Full
}
