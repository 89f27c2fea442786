//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted.
//!
//! Each endpoint's identity (its [`EndpointKey`], which is stable across
//! registry updates) gives it a permutation of the table's `M` slots (`M`
//! prime): `offset + j·skip mod M`. Endpoints take turns claiming their next
//! free preferred slot until the table is full; an endpoint of weight `w` takes
//! a turn in `w / max_weight` of the rounds. The table is built over endpoints
//! sorted by identity, so it depends only on the set of (identity, weight)
//! pairs, never on the order the compiler listed them in; removing one of `n`
//! endpoints moves about `1/n` of the slots, those it held.

use std::sync::Arc;

use anymesh_core::routes::ClusterEndpoint;
use anymesh_core::EndpointKey;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::weights::weight;

/// Table size when the policy sets none (Envoy's and Istio's default, prime).
pub(super) const DEFAULT_TABLE_SIZE: u64 = 65_537;
/// Largest table built (a prime; Envoy's limit too): 20 MB of slots at most.
pub(super) const MAX_TABLE_SIZE: u64 = 5_000_011;

const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

/// Slot → endpoint index (into the cluster's `endpoints`).
#[derive(Clone)]
pub(super) enum Maglev {
    /// Up to 65,536 endpoints: half the memory.
    Narrow(Arc<[u16]>),
    Wide(Arc<[u32]>),
}

impl Maglev {
    /// The endpoint index `step` slots after the key's slot (wrapping): when
    /// the key's endpoint cannot take the request, the next slots hand its
    /// keys to the others in proportion to their slots, the same way for
    /// every request with the key.
    pub(super) fn lookup_step(&self, hash: u64, step: usize) -> usize {
        let slot = |len: usize| {
            let home = ((u128::from(hash) * len as u128) >> 64) as usize;
            (home + step % len.max(1)) % len.max(1)
        };
        match self {
            Maglev::Narrow(t) => t.get(slot(t.len())).map_or(0, |&i| usize::from(i)),
            Maglev::Wide(t) => t.get(slot(t.len())).map_or(0, |&i| i as usize),
        }
    }

    /// Slots in the table.
    pub(super) fn len(&self) -> usize {
        match self {
            Maglev::Narrow(t) => t.len(),
            Maglev::Wide(t) => t.len(),
        }
    }

    #[cfg(test)]
    pub(super) fn ptr_eq(&self, other: &Maglev) -> bool {
        match (self, other) {
            (Maglev::Narrow(a), Maglev::Narrow(b)) => Arc::ptr_eq(a, b),
            (Maglev::Wide(a), Maglev::Wide(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// A cluster's Maglev table with what it was built from, kept across table
/// swaps so an unchanged cluster does not rebuild it.
pub(super) struct MaglevCache {
    /// (identity, weight) in cluster order.
    inputs: Vec<(EndpointKey, u32)>,
    size: u64,
    pub(super) maglev: Maglev,
}

impl MaglevCache {
    /// Reuses `previous` when the endpoints, their order and weights and the
    /// table size are the same; builds a new table otherwise.
    pub(super) fn build(
        endpoints: &[ClusterEndpoint],
        table_size: Option<u64>,
        previous: Option<MaglevCache>,
    ) -> Self {
        let size = prime_table_size(table_size);
        let inputs: Vec<_> = endpoints
            .iter()
            .map(|e| (e.key.clone(), weight(e)))
            .collect();
        if let Some(p) = previous {
            if p.size == size && p.inputs == inputs {
                return p;
            }
        }
        let maglev = populate(endpoints, size);
        Self {
            inputs,
            size,
            maglev,
        }
    }
}

/// The smallest prime at or above the requested size (default
/// [`DEFAULT_TABLE_SIZE`], at most [`MAX_TABLE_SIZE`]).
pub(super) fn prime_table_size(requested: Option<u64>) -> u64 {
    let n = requested
        .unwrap_or(DEFAULT_TABLE_SIZE)
        .clamp(2, MAX_TABLE_SIZE);
    (n..).find(|&c| is_prime(c)).unwrap_or(MAX_TABLE_SIZE)
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 {
        return false;
    }
    (3..)
        .step_by(2)
        .take_while(|d| d * d <= n)
        .all(|d| n % d != 0)
}

/// Fills a table of `size` (prime) slots.
fn populate(endpoints: &[ClusterEndpoint], size: u64) -> Maglev {
    // Canonical order: by identity, so the table does not depend on list order.
    let mut order: Vec<usize> = (0..endpoints.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&endpoints[a], &endpoints[b]);
        (&a.key, &a.authority).cmp(&(&b.key, &b.authority))
    });
    let max_weight = endpoints.iter().map(weight).max().map_or(1, u64::from);
    struct Turn {
        index: usize,
        next: u64,
        skip: u64,
        weight: u64,
        credit: u64,
    }
    let mut turns: Vec<Turn> = order
        .into_iter()
        .map(|index| {
            let e = &endpoints[index];
            let mut id =
                Vec::with_capacity(e.key.source.as_str().len() + e.key.native_id.len() + 1);
            id.extend_from_slice(e.key.source.as_str().as_bytes());
            id.push(0);
            id.extend_from_slice(e.key.native_id.as_bytes());
            Turn {
                index,
                next: xxh3_64_with_seed(&id, OFFSET_SEED) % size,
                skip: xxh3_64_with_seed(&id, SKIP_SEED) % (size - 1) + 1,
                weight: u64::from(weight(e)),
                credit: 0,
            }
        })
        .collect();

    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; size as usize];
    let mut filled = 0u64;
    while filled < size && !turns.is_empty() {
        for t in &mut turns {
            t.credit += t.weight;
            if t.credit < max_weight {
                continue;
            }
            t.credit -= max_weight;
            // `skip` is coprime with the prime `size`, so the walk visits every
            // slot and finds a free one while the table is not full.
            loop {
                let slot = t.next as usize;
                t.next += t.skip;
                if t.next >= size {
                    t.next -= size;
                }
                if table[slot] == EMPTY {
                    table[slot] = t.index as u32;
                    break;
                }
            }
            filled += 1;
            if filled == size {
                break;
            }
        }
    }
    if endpoints.len() <= usize::from(u16::MAX) + 1 {
        Maglev::Narrow(table.into_iter().map(|i| i as u16).collect())
    } else {
        Maglev::Wide(table.into())
    }
}
