//! The process-wide health epoch: bumped after any change to an endpoint's
//! availability (an ejection, its end, an active check's verdict), so a
//! cluster that saw every endpoint available at the current epoch knows
//! nothing changed without looking at any endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped whenever some endpoint's availability may have changed.
static EPOCH: AtomicU64 = AtomicU64::new(1);

/// The current health epoch.
pub(super) fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// Records that some endpoint's availability changed (after the change).
pub(super) fn changed() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
}
