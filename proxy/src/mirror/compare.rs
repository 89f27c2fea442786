//! Comparing a mirror's response with the primary's (an anymesh
//! extension: `MirrorCompare` on the route): the status, the values of the
//! selected headers, and — when asked — a hash of the whole body.
//!
//! Both sides reduce their response to a [`Digest`]. The primary's is
//! built by the [`PrimaryTap`](super::PrimaryTap) its path feeds (a
//! branch and a streaming xxh3 update per body chunk); the mirror's in its
//! own task, which then waits for the primary's through a oneshot and
//! compares. Whichever ends first, the waiting happens in the mirror's
//! task, never on the primary's path.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anymesh_core::routes::MirrorCompare;
use bytes::Bytes;
use tokio::time::Instant;
use xxhash_rust::xxh3::Xxh3Default;

/// One side's response, reduced to what is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Digest {
    pub status: u16,
    /// The first value of each compared header, in `MirrorCompare::headers` order.
    pub headers: Vec<Option<Bytes>>,
    /// xxh3 of the whole body, when bodies are compared.
    pub body: Option<u64>,
}

/// Builds a [`Digest`] from a response head and its body chunks.
pub(super) struct DigestBuilder {
    status: u16,
    headers: Vec<Option<Bytes>>,
    /// Boxed: xxh3's streaming state is several hundred bytes.
    hash: Option<Box<Xxh3Default>>,
}

impl DigestBuilder {
    /// Starts a digest of a response with `status`; `header(name)` gives
    /// the first value of a field by its lower-case name.
    pub(super) fn new<'h>(
        compare: &MirrorCompare,
        status: u16,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> Self {
        Self {
            status,
            headers: compare
                .headers
                .iter()
                .map(|n| header(n).map(Bytes::copy_from_slice))
                .collect(),
            hash: compare.body.then(|| Box::new(Xxh3Default::new())),
        }
    }

    /// A body chunk (streaming xxh3 equals xxh3 of the concatenation, so
    /// chunk boundaries do not matter).
    #[inline]
    pub(super) fn body(&mut self, chunk: &[u8]) {
        if let Some(h) = &mut self.hash {
            h.update(chunk);
        }
    }

    pub(super) fn finish(self) -> Digest {
        Digest {
            status: self.status,
            headers: self.headers,
            body: self.hash.map(|h| h.digest()),
        }
    }
}

/// What differs between the primary's digest and a mirror's, for the log:
/// `status 200 vs 500; header etag "a" vs "b"; body hash 0x.. vs 0x..`.
/// Empty when they match.
pub(super) fn differences(compare: &MirrorCompare, primary: &Digest, mirror: &Digest) -> String {
    let mut out = String::new();
    let sep = |out: &mut String| {
        if !out.is_empty() {
            out.push_str("; ");
        }
    };
    if primary.status != mirror.status {
        sep(&mut out);
        let _ = write!(out, "status {} vs {}", primary.status, mirror.status);
    }
    let values = primary.headers.iter().zip(&mirror.headers);
    for (name, (p, m)) in compare.headers.iter().zip(values) {
        if p != m {
            sep(&mut out);
            let _ = write!(out, "header {name} {} vs {}", shown(p), shown(m));
        }
    }
    if primary.body != mirror.body {
        sep(&mut out);
        let hash = |h: Option<u64>| h.map_or("-".into(), |h| format!("{h:#018x}"));
        let _ = write!(
            out,
            "body hash {} vs {}",
            hash(primary.body),
            hash(mirror.body)
        );
    }
    out
}

/// A header value for the log: quoted, cut to 64 bytes, `absent` when missing.
fn shown(v: &Option<Bytes>) -> String {
    match v {
        None => "absent".into(),
        Some(v) => {
            let cut = &v[..v.len().min(64)];
            let more = if v.len() > cut.len() { "…" } else { "" };
            format!("{:?}{more}", String::from_utf8_lossy(cut))
        }
    }
}

/// At most one logged mismatch per route per [`LOG_EVERY`].
#[derive(Default)]
pub(super) struct LogSampler {
    last: HashMap<Arc<str>, Instant, foldhash::fast::RandomState>,
}

/// The interval between two logged mismatches of one route.
pub(super) const LOG_EVERY: Duration = Duration::from_secs(1);

/// Routes remembered at most (route names are bounded by configuration;
/// past this the memory is reset rather than grown).
const SAMPLER_ROUTES: usize = 4096;

impl LogSampler {
    /// Whether a mismatch of `route` seen `now` is logged.
    pub(super) fn admit(&mut self, route: &Arc<str>, now: Instant) -> bool {
        if let Some(last) = self.last.get_mut(route) {
            if now.duration_since(*last) < LOG_EVERY {
                return false;
            }
            *last = now;
            return true;
        }
        if self.last.len() >= SAMPLER_ROUTES {
            self.last.clear();
        }
        self.last.insert(route.clone(), now);
        true
    }
}
