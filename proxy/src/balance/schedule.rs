//! Weighted round-robin schedules, computed once per route table.
//!
//! Endpoint `i` with weight `w` is due at times `(k + ½) / w` for
//! `k = 0..w`, all inside one period `[0, 1)`; the schedule is every due time
//! in order (ties to the lower index). Each endpoint thus appears exactly `w`
//! times per period, evenly spread: weights 3:1 give `a a b a`, never `a a a b`.
//! The comparison is exact (cross-multiplied integers), so the result is the
//! same on every platform and every build.

use anymesh_core::routes::ClusterEndpoint;

use super::weights::weight;

/// Longest schedule built; larger weight sums are scaled down to fit (each
/// endpoint keeps at least one slot, so a cluster with more endpoints than
/// this gets one slot each).
pub(super) const MAX_SCHEDULE: u64 = 4096;

/// The order in which a round-robin cluster visits its endpoints.
pub(super) enum Schedule {
    /// Equal weights: position `p` is endpoint `p % len`.
    Uniform { len: usize },
    /// Endpoint indices, one period.
    Weighted(Box<[u32]>),
}

impl Schedule {
    pub(super) fn new(endpoints: &[ClusterEndpoint]) -> Self {
        let weights = scaled_weights(endpoints);
        if weights.iter().all(|&w| w == 1) {
            return Schedule::Uniform {
                len: endpoints.len(),
            };
        }
        // (numerator 2k+1, weight, index): due at (2k+1) / 2w.
        let mut due: Vec<(u64, u64, u32)> =
            Vec::with_capacity(weights.iter().sum::<u64>() as usize);
        for (i, &w) in (0u32..).zip(&weights) {
            due.extend((0..w).map(|k| (2 * k + 1, w, i)));
        }
        due.sort_unstable_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)).then(a.2.cmp(&b.2)));
        Schedule::Weighted(due.into_iter().map(|(_, _, i)| i).collect())
    }

    /// The endpoint index at a (wrapping, ever-increasing) cursor position.
    pub(super) fn at(&self, position: usize) -> usize {
        match self {
            Schedule::Uniform { len } => position % (*len).max(1),
            Schedule::Weighted(s) => s.get(position % s.len().max(1)).map_or(0, |&i| i as usize),
        }
    }

    /// Positions in one period.
    pub(super) fn len(&self) -> usize {
        match self {
            Schedule::Uniform { len } => *len,
            Schedule::Weighted(s) => s.len(),
        }
    }
}

/// Weights divided by their greatest common divisor and, when they still sum
/// past [`MAX_SCHEDULE`], scaled proportionally (rounded, at least 1).
fn scaled_weights(endpoints: &[ClusterEndpoint]) -> Vec<u64> {
    let raw: Vec<u64> = endpoints.iter().map(|e| u64::from(weight(e))).collect();
    let divisor = raw.iter().copied().fold(0, gcd).max(1);
    let reduced: Vec<u64> = raw.iter().map(|w| w / divisor).collect();
    let sum: u64 = reduced.iter().sum();
    if sum <= MAX_SCHEDULE {
        return reduced;
    }
    let scaled: Vec<u64> = reduced
        .iter()
        .map(|&w| ((w * MAX_SCHEDULE + sum / 2) / sum).max(1))
        .collect();
    let divisor = scaled.iter().copied().fold(0, gcd).max(1);
    scaled.into_iter().map(|w| w / divisor).collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
