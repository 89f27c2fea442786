//! The sampling decision: an incoming decision is honoured, B3 debug and
//! `x-envoy-force-trace` force one, and otherwise a random draw at a
//! percentage decides (Istio's default is 1 %). The caller passes the random
//! number, so tests are exact and the proxy uses whatever fast generator it
//! already has.

use super::propagation::Extracted;

/// Istio's default `randomSamplingPercentage`.
pub const DEFAULT_SAMPLING_PERCENT: f64 = 1.0;

/// Why a request is, or is not, traced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// B3 debug (`x-b3-flags: 1`, `b3: …-d`) or `x-envoy-force-trace`.
    Forced,
    /// The decision that came with the request (`traceparent` flags,
    /// `x-b3-sampled`, the `b3` sampling state, `b3: 0`).
    Inherited { sampled: bool },
    /// No decision came: the random draw made one.
    Random { sampled: bool },
}

impl Decision {
    pub fn sampled(self) -> bool {
        match self {
            Decision::Forced => true,
            Decision::Inherited { sampled } | Decision::Random { sampled } => sampled,
        }
    }
}

/// A random sampler at a fixed percentage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sampler {
    /// Sampled when `random < threshold`, over the `u32` range; 2^32 means
    /// always.
    threshold: u64,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new(DEFAULT_SAMPLING_PERCENT)
    }
}

impl Sampler {
    /// `percent` is clamped to 0..=100; NaN samples nothing.
    pub fn new(percent: f64) -> Self {
        let p = if percent.is_nan() {
            0.0
        } else {
            percent.clamp(0.0, 100.0)
        };
        // Exact at 0 and 100; elsewhere within one part in 2^32.
        let threshold = (p / 100.0 * 4_294_967_296.0).round() as u64;
        Self { threshold }
    }

    /// Decides for one request. `random` is a uniformly drawn `u32`.
    pub fn decide(&self, extracted: &Extracted, random: u32) -> Decision {
        if extracted.forced() {
            return Decision::Forced;
        }
        if let Some(sampled) = extracted.sampled_hint() {
            return Decision::Inherited { sampled };
        }
        Decision::Random {
            sampled: u64::from(random) < self.threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceContext;
    use http::{HeaderMap, HeaderValue};

    fn ex(pairs: &[(&'static str, &'static str)]) -> Extracted {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        TraceContext::extract(&h)
    }

    #[test]
    fn random_draw_is_exact_at_the_threshold() {
        let none = ex(&[]);
        let s = Sampler::new(1.0);
        // 1 % of 2^32 = 42949672.96, rounded to 42949673.
        assert_eq!(
            s.decide(&none, 42_949_672),
            Decision::Random { sampled: true }
        );
        assert_eq!(
            s.decide(&none, 42_949_673),
            Decision::Random { sampled: false }
        );
        assert!(!Sampler::new(0.0).decide(&none, 0).sampled());
        assert!(Sampler::new(100.0).decide(&none, u32::MAX).sampled());
        assert!(Sampler::new(250.0).decide(&none, u32::MAX).sampled());
        assert!(!Sampler::new(-3.0).decide(&none, 0).sampled());
        assert!(!Sampler::new(f64::NAN).decide(&none, 0).sampled());
        assert_eq!(Sampler::default(), Sampler::new(1.0));
    }

    #[test]
    fn incoming_decisions_are_honoured() {
        let s = Sampler::new(100.0);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(
            s.decide(&ex(&[("traceparent", tp)]), 0),
            Decision::Inherited { sampled: false }
        );
        let s = Sampler::new(0.0);
        let tp1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            s.decide(&ex(&[("traceparent", tp1)]), u32::MAX),
            Decision::Inherited { sampled: true }
        );
        assert_eq!(
            Sampler::new(100.0).decide(&ex(&[("b3", "0")]), 0),
            Decision::Inherited { sampled: false }
        );
        assert_eq!(
            s.decide(&ex(&[("x-b3-sampled", "1")]), u32::MAX),
            Decision::Inherited { sampled: true }
        );
        assert_eq!(s.decide(&ex(&[("b3", "d")]), u32::MAX), Decision::Forced);
        assert_eq!(
            s.decide(&ex(&[("x-envoy-force-trace", "true")]), u32::MAX),
            Decision::Forced
        );
        // B3 ids without a sampling state defer to the draw.
        let b3 = [
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ];
        assert_eq!(s.decide(&ex(&b3), 0), Decision::Random { sampled: false });
        // A malformed sampling state defers too.
        assert_eq!(
            s.decide(&ex(&[("x-b3-sampled", "yes")]), 0),
            Decision::Random { sampled: false }
        );
    }
}
