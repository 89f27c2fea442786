//! Trace and span ids: their hex forms in headers and their byte forms in
//! OTLP. Hex is done by hand here (a table and two loops) because it sits on
//! the unsampled request path, where a general-purpose encoder's allocation
//! would be the largest cost.

use std::fmt;

use rand::RngCore;

/// A 128-bit trace id, never zero. A 64-bit B3 trace id is kept in the low
/// half (the high half is zero) and written back as 16 hex digits in B3.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(u128);

/// A 64-bit span id, never zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(u64);

/// The two lower-case hex digits of every byte: one load per byte instead
/// of two nibble look-ups.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

impl TraceId {
    /// `None` for zero, which every format defines as invalid.
    pub fn new(value: u128) -> Option<Self> {
        (value != 0).then_some(Self(value))
    }

    /// A random, non-zero id.
    pub fn random<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        loop {
            let v = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            if v != 0 {
                return Self(v);
            }
        }
    }

    pub fn get(self) -> u128 {
        self.0
    }

    /// The 16 bytes, big-endian (OTLP's `trace_id`).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Whether the id fits in 64 bits (it came from a 64-bit B3 id).
    pub fn is_64bit(self) -> bool {
        self.0 >> 64 == 0
    }

    /// 32 lower-case hex digits.
    pub fn to_hex(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        write_hex(&self.0.to_be_bytes(), &mut out);
        out
    }

    /// From 16 or 32 hex digits; `lower_only` refuses upper-case digits
    /// (W3C demands lower case, B3 readers accept either).
    pub(crate) fn parse_hex(s: &[u8], lower_only: bool) -> Option<Self> {
        let v = match s.len() {
            16 => u128::from(parse_u64(s, lower_only)?),
            32 => {
                let hi = parse_u64(&s[..16], lower_only)?;
                let lo = parse_u64(&s[16..], lower_only)?;
                (u128::from(hi) << 64) | u128::from(lo)
            }
            _ => return None,
        };
        Self::new(v)
    }
}

impl SpanId {
    /// `None` for zero.
    pub fn new(value: u64) -> Option<Self> {
        (value != 0).then_some(Self(value))
    }

    /// A random, non-zero id.
    pub fn random<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        loop {
            let v = rng.next_u64();
            if v != 0 {
                return Self(v);
            }
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// The 8 bytes, big-endian (OTLP's `span_id`).
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// 16 lower-case hex digits.
    pub fn to_hex(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        write_hex(&self.0.to_be_bytes(), &mut out);
        out
    }

    /// From exactly 16 hex digits.
    pub(crate) fn parse_hex(s: &[u8], lower_only: bool) -> Option<Self> {
        if s.len() != 16 {
            return None;
        }
        Self::new(parse_u64(s, lower_only)?)
    }
}

/// Digit values; 0x80 marks a byte that is not a digit. Upper-case digits
/// carry a marker bit of their own (0x40) so W3C can refuse them.
const DIGITS: [u8; 256] = {
    let mut t = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 0x40 | (10 + i as u8);
        i += 1;
    }
    t
};

/// Up to 16 hex digits, without a branch per digit (the request path reads
/// 48 of them per `traceparent`).
fn parse_u64(s: &[u8], lower_only: bool) -> Option<u64> {
    let mut v: u64 = 0;
    let mut marks = 0u8;
    for &c in s {
        let d = DIGITS[usize::from(c)];
        marks |= d;
        v = (v << 4) | u64::from(d & 0x0f);
    }
    let refused = if lower_only { 0xc0 } else { 0x80 };
    (marks & refused == 0).then_some(v)
}

/// Writes `2 * bytes.len()` hex digits into the start of `out`.
pub(crate) fn write_hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
}

/// A random UUID (version 4, RFC 9562 variant) in its lower-case
/// hyphenated form, from 128 random bits (6 of which the version and
/// variant replace).
pub(crate) fn uuid_v4(hi: u64, lo: u64) -> [u8; 36] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    // 8-4-4-4-12 digits: the groups of 4, 2, 2, 2 and 6 bytes.
    write_hex(&b[0..4], &mut out[0..8]);
    write_hex(&b[4..6], &mut out[9..13]);
    write_hex(&b[6..8], &mut out[14..18]);
    write_hex(&b[8..10], &mut out[19..23]);
    write_hex(&b[10..16], &mut out[24..36]);
    out
}

fn fmt_hex(digits: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    // The digits are ASCII hex by construction.
    f.write_str(std::str::from_utf8(digits).map_err(|_| fmt::Error)?)
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_hex(&self.to_hex(), f)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_hex(&self.to_hex(), f)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_zero_refused() {
        let t = TraceId::parse_hex(b"4bf92f3577b34da6a3ce929d0e0e4736", true).expect("valid");
        assert_eq!(&t.to_hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let short = TraceId::parse_hex(b"a3ce929d0e0e4736", false).expect("64-bit");
        assert!(short.is_64bit());
        assert_eq!(&short.to_hex()[..16], b"0000000000000000");
        assert!(TraceId::parse_hex(&[b'0'; 32], true).is_none());
        assert!(TraceId::parse_hex(b"4BF92F3577B34DA6A3CE929D0E0E4736", true).is_none());
        assert!(TraceId::parse_hex(b"4BF92F3577B34DA6A3CE929D0E0E4736", false).is_some());
        assert!(TraceId::parse_hex(b"4bf92f3577b34da6a3ce929d0e0e473", false).is_none());
        assert!(TraceId::parse_hex(b"4bf92f3577b34da6a3ce929d0e0e473g", false).is_none());
        let s = SpanId::parse_hex(b"00f067aa0ba902b7", true).expect("valid");
        assert_eq!(s.get(), 0x00f0_67aa_0ba9_02b7);
        assert_eq!(&s.to_hex(), b"00f067aa0ba902b7");
        assert!(SpanId::parse_hex(b"0000000000000000", true).is_none());
        assert!(SpanId::parse_hex(b"00f067aa0ba902b", true).is_none());
    }

    #[test]
    fn uuid_v4_is_a_version_4_rfc_variant_uuid() {
        let id = uuid_v4(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        assert_eq!(&id, b"01234567-89ab-4def-bedc-ba9876543210");
        for (hi, lo) in [(0, 0), (u64::MAX, u64::MAX), (0x5555, 0xaaaa << 50)] {
            let id = uuid_v4(hi, lo);
            let s = std::str::from_utf8(&id).expect("ascii");
            let u = uuid::Uuid::parse_str(s).expect("a UUID");
            assert_eq!(u.get_version_num(), 4);
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(s, u.hyphenated().to_string(), "lower case, hyphenated");
        }
    }
}
