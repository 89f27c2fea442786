//! Consecutive results and the thresholds that turn them into a verdict.
//!
//! ```text
//!            unhealthy_threshold failures
//! Unchecked ────────────────────────────► Failing
//!     │ 1 pass                              │  ▲
//!     ▼        healthy_threshold passes     │  │ unhealthy_threshold failures
//!  Passing ◄────────────────────────────────┘  │
//!     └────────────────────────────────────────┘
//! ```
//! A new endpoint needs one pass to be `Passing` (as Envoy treats a host it
//! has just seen), and is not `Failing` before `unhealthy_threshold`
//! consecutive failures; a failing one needs `healthy_threshold` passes.

use super::board::Verdict;

/// An endpoint's consecutive results and verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    pub(super) verdict: Verdict,
    pub(super) passes: u32,
    pub(super) failures: u32,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            verdict: Verdict::Unchecked,
            passes: 0,
            failures: 0,
        }
    }
}

impl Tally {
    /// Counts one probe; returns the verdict when it changed.
    pub(super) fn record(
        &mut self,
        passed: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<Verdict> {
        let before = self.verdict;
        if passed {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
            let needed = match self.verdict {
                Verdict::Failing => healthy_threshold.max(1),
                _ => 1,
            };
            if self.passes >= needed {
                self.verdict = Verdict::Passing;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
            if self.failures >= unhealthy_threshold.max(1) {
                self.verdict = Verdict::Failing;
            }
        }
        (self.verdict != before).then_some(self.verdict)
    }
}
