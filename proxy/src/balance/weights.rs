//! Weighted random sampling over a cluster's endpoints, and the thread-local RNG.

use std::cell::RefCell;

use anymesh_core::routes::ClusterEndpoint;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// A uniformly random `u64` from the thread's fast RNG.
pub(super) fn random_u64() -> u64 {
    RNG.with_borrow_mut(|r| r.next_u64())
}

/// A uniform draw in `0..n` (`n > 0`) by multiply-shift; the bias is below
/// `n / 2^64`.
pub(crate) fn below(n: u64) -> u64 {
    ((u128::from(random_u64()) * u128::from(n)) >> 64) as u64
}

/// An endpoint's weight as balancers use it: 0 counts as 1.
pub(super) fn weight(e: &ClusterEndpoint) -> u32 {
    e.weight.max(1)
}

/// The weights of a cluster's endpoints, ready for sampling.
pub(super) enum Weights {
    /// All weights equal: a plain uniform draw.
    Uniform { len: usize },
    /// `ends[i]` is the sum of the weights of endpoints `0..=i`.
    Cumulative { ends: Box<[u64]> },
}

impl Weights {
    pub(super) fn new(endpoints: &[ClusterEndpoint]) -> Self {
        let first = endpoints.first().map(weight);
        if endpoints.iter().all(|e| Some(weight(e)) == first) {
            return Weights::Uniform {
                len: endpoints.len(),
            };
        }
        let ends = endpoints
            .iter()
            .scan(0u64, |acc, e| {
                *acc += u64::from(weight(e));
                Some(*acc)
            })
            .collect();
        Weights::Cumulative { ends }
    }

    /// Number of endpoints.
    pub(super) fn len(&self) -> usize {
        match self {
            Weights::Uniform { len } => *len,
            Weights::Cumulative { ends } => ends.len(),
        }
    }

    /// The weight of endpoint `i` (1 for uniform weights, which is all a
    /// comparison needs).
    pub(super) fn weight(&self, i: usize) -> u64 {
        match self {
            Weights::Uniform { .. } => 1,
            Weights::Cumulative { ends } => {
                let end = ends.get(i).copied().unwrap_or(0);
                let start = i.checked_sub(1).and_then(|p| ends.get(p)).copied();
                end - start.unwrap_or(0)
            }
        }
    }

    /// A weighted random index; the cluster must not be empty.
    pub(super) fn sample(&self) -> usize {
        match self {
            Weights::Uniform { len } => below(*len as u64) as usize,
            Weights::Cumulative { ends } => {
                let total = ends.last().copied().unwrap_or(0);
                index_of(ends, below(total))
            }
        }
    }

    /// Two distinct weighted random indices (the second drawn without
    /// replacement); equal only when there is a single endpoint.
    pub(super) fn sample_two(&self) -> (usize, usize) {
        match self {
            Weights::Uniform { len } if *len < 2 => (0, 0),
            Weights::Uniform { len } => {
                let a = below(*len as u64) as usize;
                let b = below(*len as u64 - 1) as usize;
                (a, if b >= a { b + 1 } else { b })
            }
            Weights::Cumulative { ends } => {
                let total = ends.last().copied().unwrap_or(0);
                let a = index_of(ends, below(total));
                let w = self.weight(a);
                if w >= total {
                    return (a, a);
                }
                // Draw over the other endpoints' weight, stepping over `a`'s range.
                let start = ends.get(a).copied().unwrap_or(0) - w;
                let mut point = below(total - w);
                if point >= start {
                    point += w;
                }
                (a, index_of(ends, point))
            }
        }
    }
}

/// The endpoint whose weight range holds `point` (`point < total`).
fn index_of(ends: &[u64], point: u64) -> usize {
    ends.partition_point(|&end| end <= point)
}
