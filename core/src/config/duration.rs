//! Durations as Istio writes them: Go's `time.ParseDuration` syntax.
//!
//! A duration is a sequence of decimal numbers, each with an optional fraction
//! and a unit: `10s`, `1.5s`, `250ms`, `1m30s`, `1h`, `100us` (or `100µs`),
//! `20ns`. A bare `0` is allowed, as in Go. Negative durations are rejected:
//! nothing in routing config means "before now".

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct InvalidDuration {
    pub input: String,
    pub reason: String,
}

/// A duration written in Go syntax; deserializes from a YAML string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor (rather than `String::deserialize` then parse) so the
        // error is raised at the scalar and carries its line and path.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 10s, 250ms or 1m30s")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GoDuration, E> {
                parse_duration(v).map(GoDuration).map_err(E::custom)
            }
            // `timeout: 10` is a number in YAML: report the missing unit.
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<GoDuration, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<GoDuration, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<GoDuration, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(Visitor)
    }
}

const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go duration (`1m30s`, `250ms`, `0`).
pub fn parse_duration(input: &str) -> Result<Duration, InvalidDuration> {
    let bad = |reason: String| InvalidDuration {
        input: input.to_string(),
        reason,
    };
    let mut rest = input.trim();
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    } else if rest.starts_with('-') {
        return Err(bad("must not be negative".into()));
    }
    if rest.is_empty() {
        return Err(bad("empty".into()));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad(format!("expected a number at {rest:?}")));
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(bad(format!(
                "missing unit after {int_part}{}{frac_part} (use ns, us, ms, s, m or h, e.g. 10s)",
                if frac_part.is_empty() { "" } else { "." }
            )));
        }
        let Some(&(_, scale)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(bad(format!(
                "unknown unit {unit:?} (use ns, us, ms, s, m or h)"
            )));
        };
        let overflow = || bad("too large".into());
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut nanos = whole.checked_mul(scale).ok_or_else(overflow)?;
        // Fractions are exact to the nanosecond; further digits are truncated, as in Go.
        let mut frac_scale = scale;
        for digit in frac_part.bytes().map(|b| u128::from(b - b'0')) {
            frac_scale /= 10;
            if frac_scale == 0 {
                break;
            }
            nanos += digit * frac_scale;
        }
        total = total.checked_add(nanos).ok_or_else(overflow)?;
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad("too large".into()))?;
    // The remainder is below 10^9 and always fits in u32.
    let sub = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_syntax() {
        let ok = [
            ("10s", Duration::from_secs(10)),
            ("1.5s", Duration::from_millis(1500)),
            ("250ms", Duration::from_millis(250)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("20ns", Duration::from_nanos(20)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("+2m", Duration::from_secs(120)),
            ("1h2m3.004s", Duration::from_millis(3_723_004)),
            ("1.0000000009s", Duration::from_secs(1)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_with_reasons() {
        let bad = [
            ("", "empty"),
            (
                "10",
                "missing unit after 10 (use ns, us, ms, s, m or h, e.g. 10s)",
            ),
            (
                "1.5",
                "missing unit after 1.5 (use ns, us, ms, s, m or h, e.g. 10s)",
            ),
            ("10x", "unknown unit \"x\" (use ns, us, ms, s, m or h)"),
            ("10 s", "unknown unit \" s\" (use ns, us, ms, s, m or h)"),
            ("-1s", "must not be negative"),
            ("s", "expected a number at \"s\""),
            ("1s.", "expected a number at \".\""),
            ("99999999999999999999999h", "too large"),
        ];
        for (text, reason) in bad {
            let err = parse_duration(text).expect_err(text);
            assert_eq!(err.reason, reason, "{text}");
        }
        assert_eq!(
            parse_duration("5d").expect_err("5d").to_string(),
            "invalid duration \"5d\": unknown unit \"d\" (use ns, us, ms, s, m or h)"
        );
    }
}
