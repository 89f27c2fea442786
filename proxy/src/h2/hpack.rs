//! HPACK (RFC 7541), as an HTTP/2 server needs it.
//!
//! The decoder keeps the dynamic table and reads Huffman-coded strings; its
//! table holds fields already checked and converted, so a field the client
//! sends again by index costs a clone. The encoder writes every response
//! field as a literal that is not indexed, without Huffman coding: nothing
//! to remember per connection, and nothing the client can make it grow.

use std::collections::VecDeque;
use std::sync::LazyLock;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode};

/// The dynamic table size this server allows the client's encoder (the
/// protocol's default, which this server never raises).
pub(crate) const TABLE_SIZE: usize = 4096;

/// A pseudo-header field of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pseudo {
    Method,
    Scheme,
    Authority,
    Path,
    /// `:protocol` (extended CONNECT), and `:status`, which a request must not carry.
    Other,
}

/// One decoded field.
#[derive(Clone, Debug)]
pub(crate) enum Field {
    Pseudo(Pseudo, Bytes),
    Header(HeaderName, HeaderValue),
    /// A field no request may carry (the reason says why); the request is malformed.
    Malformed(&'static str),
}

/// A header block that cannot be decoded: the connection's decoding state
/// is lost (COMPRESSION_ERROR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("HPACK: {0}")]
pub(crate) struct HpackError(pub &'static str);

/// The static table (RFC 7541, Appendix A).
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The static table's entries as decoded fields.
static STATIC_FIELDS: LazyLock<Vec<Field>> = LazyLock::new(|| {
    STATIC
        .iter()
        .map(|(n, v)| field(n.as_bytes(), Bytes::from_static(v.as_bytes())))
        .collect()
});

/// Checks and converts one received field.
fn field(name: &[u8], value: Bytes) -> Field {
    if let Some(pseudo) = name.strip_prefix(b":") {
        let p = match pseudo {
            b"method" => Pseudo::Method,
            b"scheme" => Pseudo::Scheme,
            b"authority" => Pseudo::Authority,
            b"path" => Pseudo::Path,
            _ => Pseudo::Other,
        };
        return Field::Pseudo(p, value);
    }
    named(field_name(name), value)
}

fn field_name(name: &[u8]) -> Result<HeaderName, &'static str> {
    // HTTP/2 field names are lowercase; `HeaderName` would fold them quietly.
    if name.iter().any(u8::is_ascii_uppercase) {
        return Err("uppercase field name");
    }
    HeaderName::from_bytes(name).map_err(|_| "invalid field name")
}

fn named(name: Result<HeaderName, &'static str>, value: Bytes) -> Field {
    match name {
        Ok(n) => match HeaderValue::from_maybe_shared(value) {
            Ok(v) => Field::Header(n, v),
            Err(_) => Field::Malformed("invalid field value"),
        },
        Err(e) => Field::Malformed(e),
    }
}

struct Entry {
    field: Field,
    size: usize,
    name_len: usize,
}

/// The per-entry overhead of the dynamic table (RFC 7541, 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The decoding side of one connection.
pub(crate) struct Decoder {
    /// Newest first, with each entry's size and its name's length as
    /// received (the client counts those, whatever the field turned into).
    table: VecDeque<Entry>,
    size: usize,
    max: usize,
    /// A scratch buffer for Huffman-decoded strings.
    scratch: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max: TABLE_SIZE,
            scratch: Vec::new(),
        }
    }
}

impl Decoder {
    /// Decodes one complete header block, handing each field to `emit` in order.
    pub(crate) fn decode(
        &mut self,
        mut block: &[u8],
        mut emit: impl FnMut(Field),
    ) -> Result<(), HpackError> {
        let mut first = true;
        while let Some(&b) = block.first() {
            if b & 0x80 != 0 {
                // Indexed field.
                let (index, rest) = integer(block, 7)?;
                block = rest;
                emit(self.get(index)?.0.clone());
            } else if b & 0x40 != 0 {
                // Literal, added to the table.
                let (f, name_len, value_len, rest) = self.literal(block, 6)?;
                block = rest;
                emit(f.clone());
                self.insert(f, name_len, value_len);
            } else if b & 0x20 != 0 {
                // Dynamic table size update: only before the block's first field.
                if !first {
                    return Err(HpackError("table size update after a field"));
                }
                let (size, rest) = integer(block, 5)?;
                block = rest;
                if size > TABLE_SIZE {
                    return Err(HpackError("table size update above the allowed size"));
                }
                self.max = size;
                self.evict(0);
                continue;
            } else {
                // Literal, not indexed (0000) or never indexed (0001).
                let (f, _, _, rest) = self.literal(block, 4)?;
                block = rest;
                emit(f);
            }
            first = false;
        }
        Ok(())
    }

    /// The entry at `index` of the combined static and dynamic tables, and
    /// the length of its name.
    fn get(&self, index: usize) -> Result<(&Field, usize), HpackError> {
        match index {
            0 => Err(HpackError("index 0")),
            1..=61 => Ok((&STATIC_FIELDS[index - 1], STATIC[index - 1].0.len())),
            _ => self
                .table
                .get(index - 62)
                .map(|e| (&e.field, e.name_len))
                .ok_or(HpackError("index past the end of the table")),
        }
    }

    /// Reads a literal field with a name index of `prefix` bits; returns the
    /// field, the sizes of its name and value, and the rest of the block.
    fn literal<'b>(
        &mut self,
        block: &'b [u8],
        prefix: u8,
    ) -> Result<(Field, usize, usize, &'b [u8]), HpackError> {
        let (index, rest) = integer(block, prefix)?;
        let (field, name_len, rest) = if index == 0 {
            let (name, rest) = self.string(rest)?;
            let len = name.len();
            (field(&name, Bytes::new()), len, rest)
        } else {
            let (f, len) = self.get(index)?;
            (f.clone(), len, rest)
        };
        let (value, rest) = self.string(rest)?;
        let value_len = value.len();
        let field = match field {
            Field::Pseudo(p, _) => Field::Pseudo(p, value),
            Field::Header(n, _) => named(Ok(n), value),
            m @ Field::Malformed(_) => m,
        };
        Ok((field, name_len, value_len, rest))
    }

    /// Reads a string literal.
    fn string<'b>(&mut self, block: &'b [u8]) -> Result<(Bytes, &'b [u8]), HpackError> {
        let huffman = block.first().is_some_and(|b| b & 0x80 != 0);
        let (len, rest) = integer(block, 7)?;
        if len > rest.len() {
            return Err(HpackError("string longer than the block"));
        }
        let (raw, rest) = rest.split_at(len);
        if !huffman {
            return Ok((Bytes::copy_from_slice(raw), rest));
        }
        self.scratch.clear();
        huffman_decode(raw, &mut self.scratch)?;
        Ok((Bytes::copy_from_slice(&self.scratch), rest))
    }

    fn insert(&mut self, field: Field, name_len: usize, value_len: usize) {
        let size = name_len + value_len + ENTRY_OVERHEAD;
        if size > self.max {
            // Larger than the whole table: it empties the table (RFC 7541, 4.4).
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front(Entry {
            field,
            size,
            name_len,
        });
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            match self.table.pop_back() {
                Some(e) => self.size -= e.size,
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

/// Reads an integer with an N-bit prefix (RFC 7541, 5.1).
fn integer(block: &[u8], prefix: u8) -> Result<(usize, &[u8]), HpackError> {
    let (&first, mut rest) = block.split_first().ok_or(HpackError("truncated integer"))?;
    let mask = (1u16 << prefix) as usize - 1;
    let mut value = first as usize & mask;
    if value < mask {
        return Ok((value, rest));
    }
    let mut shift = 0u32;
    loop {
        let (&b, r) = rest.split_first().ok_or(HpackError("truncated integer"))?;
        rest = r;
        // Four continuation bytes reach 2^28, more than any length or index here.
        if shift > 21 {
            return Err(HpackError("integer too large"));
        }
        value += ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok((value, rest));
        }
    }
}

/// The length of each symbol's code, symbols 0–255 and EOS (RFC 7541,
/// Appendix B). The code is canonical: codes follow from these lengths.
const HUFFMAN_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

const EOS: u16 = 256;
const MAX_CODE_LEN: usize = 30;

/// The canonical code's decoding tables.
struct Huffman {
    /// The first code of each length.
    first: [u32; MAX_CODE_LEN + 1],
    /// How many codes each length has.
    count: [u32; MAX_CODE_LEN + 1],
    /// Where each length's symbols start in `symbols`.
    offset: [u16; MAX_CODE_LEN + 1],
    /// Symbols ordered by code.
    symbols: [u16; 257],
}

static HUFFMAN: LazyLock<Huffman> = LazyLock::new(|| {
    let mut h = Huffman {
        first: [0; MAX_CODE_LEN + 1],
        count: [0; MAX_CODE_LEN + 1],
        offset: [0; MAX_CODE_LEN + 1],
        symbols: [0; 257],
    };
    for &l in &HUFFMAN_LENGTHS {
        h.count[l as usize] += 1;
    }
    let (mut code, mut at) = (0u32, 0u16);
    for l in 1..=MAX_CODE_LEN {
        h.first[l] = code;
        h.offset[l] = at;
        code = (code + h.count[l]) << 1;
        at += h.count[l] as u16;
    }
    let mut next = h.offset;
    for (sym, &l) in HUFFMAN_LENGTHS.iter().enumerate() {
        h.symbols[next[l as usize] as usize] = sym as u16;
        next[l as usize] += 1;
    }
    h
});

/// Decodes a Huffman-coded string (RFC 7541, 5.2).
fn huffman_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let h = &*HUFFMAN;
    let mut acc: u64 = 0;
    let mut bits = 0usize;
    // Takes one symbol off the front of the accumulated bits, if a whole code is there.
    let take = |acc: u64, bits: &mut usize| -> Result<Option<u8>, HpackError> {
        for l in 5..=MAX_CODE_LEN.min(*bits) {
            let c = ((acc >> (*bits - l)) & ((1u64 << l) - 1)) as u32;
            if c < h.first[l] + h.count[l] {
                let sym = h.symbols[(h.offset[l] as u32 + (c - h.first[l])) as usize];
                if sym == EOS {
                    return Err(HpackError("EOS in a Huffman string"));
                }
                *bits -= l;
                return Ok(Some(sym as u8));
            }
        }
        Ok(None)
    };
    for &b in src {
        acc = (acc << 8) | b as u64;
        bits += 8;
        while bits >= MAX_CODE_LEN {
            match take(acc, &mut bits)? {
                Some(s) => out.push(s),
                None => return Err(HpackError("invalid Huffman code")),
            }
        }
    }
    while let Some(s) = take(acc, &mut bits)? {
        out.push(s);
    }
    // What is left is padding: fewer than 8 bits, all ones (a prefix of EOS).
    let mask = (1u64 << bits) - 1;
    if bits > 7 || acc & mask != mask {
        return Err(HpackError("invalid Huffman padding"));
    }
    Ok(())
}

/// Writes an integer with an N-bit prefix; `flags` fills the first byte's other bits.
fn put_integer(out: &mut BytesMut, value: usize, prefix: u8, flags: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.put_u8(flags | value as u8);
        return;
    }
    out.put_u8(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.put_u8((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.put_u8(rest as u8);
}

fn put_string(out: &mut BytesMut, s: &[u8]) {
    put_integer(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// Writes `:status`: indexed when the static table has it.
pub(crate) fn encode_status(out: &mut BytesMut, status: StatusCode) {
    let index = match status.as_u16() {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => {
            // Literal, not indexed, with the name of entry 8.
            put_integer(out, 8, 4, 0);
            put_string(out, status.as_str().as_bytes());
            return;
        }
    };
    put_integer(out, index, 7, 0x80);
}

/// Writes a field as received from an HTTP/1.1 upstream (a valid name in
/// any case) as a literal that is not indexed, its name lowercased.
pub(crate) fn encode_received_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    let index = INDEXED_NAMES
        .iter()
        .find(|(n, _)| n.len() == name.len() && n.eq_ignore_ascii_case(name))
        .map_or(0, |(_, i)| *i);
    put_integer(out, index, 4, 0);
    if index == 0 {
        put_integer(out, name.len(), 7, 0);
        out.extend(name.iter().map(u8::to_ascii_lowercase));
    }
    put_string(out, value);
}

/// Names of the static table common in responses, with their index.
const INDEXED_NAMES: [(&[u8], usize); 11] = [
    (b"cache-control", 24),
    (b"content-encoding", 26),
    (b"content-length", 28),
    (b"content-type", 31),
    (b"date", 33),
    (b"etag", 34),
    (b"last-modified", 44),
    (b"location", 46),
    (b"server", 54),
    (b"set-cookie", 55),
    (b"vary", 59),
];

/// Writes one field as a literal that is not indexed; `name` must be lowercase.
pub(crate) fn encode_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    let index = INDEXED_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, i)| *i);
    put_integer(out, index, 4, 0);
    if index == 0 {
        put_string(out, name);
    }
    put_string(out, value);
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
            .collect()
    }

    fn decode(d: &mut Decoder, block: &str) -> Vec<(String, String)> {
        let mut got = Vec::new();
        let r = d.decode(&hex(block), |f| {
            got.push(match f {
                Field::Pseudo(p, v) => (format!("{p:?}"), String::from_utf8_lossy(&v).into_owned()),
                Field::Header(n, v) => (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                ),
                Field::Malformed(e) => ("malformed".into(), e.into()),
            })
        });
        assert_eq!(r, Ok(()));
        got
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn static_table_matches_its_indexes() {
        assert_eq!(STATIC[0].0, ":authority");
        assert_eq!(STATIC[7], (":status", "200"));
        assert_eq!(STATIC[27].0, "content-length");
        assert_eq!(STATIC[53].0, "server");
        assert_eq!(STATIC[60].0, "www-authenticate");
        for (name, i) in INDEXED_NAMES {
            assert_eq!(STATIC[i - 1].0.as_bytes(), name);
        }
    }

    /// RFC 7541, C.4: three requests on one connection, Huffman-coded.
    #[test]
    fn decodes_the_rfc_request_examples_with_huffman() {
        let mut d = Decoder::default();
        assert_eq!(
            decode(&mut d, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
            pairs(&[
                ("Method", "GET"),
                ("Scheme", "http"),
                ("Path", "/"),
                ("Authority", "www.example.com")
            ])
        );
        assert_eq!(d.size, 57);
        assert_eq!(
            decode(&mut d, "8286 84be 5886 a8eb 1064 9cbf"),
            pairs(&[
                ("Method", "GET"),
                ("Scheme", "http"),
                ("Path", "/"),
                ("Authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!(d.size, 110);
        assert_eq!(
            decode(
                &mut d,
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"
            ),
            pairs(&[
                ("Method", "GET"),
                ("Scheme", "https"),
                ("Path", "/index.html"),
                ("Authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.size, 164);
        assert_eq!(d.table.len(), 3);
    }

    /// RFC 7541, C.3: the same requests without Huffman coding.
    #[test]
    fn decodes_the_rfc_request_examples_without_huffman() {
        let mut d = Decoder::default();
        decode(&mut d, "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
        let got = decode(&mut d, "8286 84be 5808 6e6f 2d63 6163 6865");
        assert_eq!(got[4], ("cache-control".into(), "no-cache".into()));
        let got = decode(
            &mut d,
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        );
        assert_eq!(got[3], ("Authority".into(), "www.example.com".into()));
        assert_eq!(got[4], ("custom-key".into(), "custom-value".into()));
    }

    #[test]
    fn every_byte_survives_a_huffman_round_trip() {
        // Encode with the canonical code built from the lengths, then decode.
        let h = &*HUFFMAN;
        let mut code_of = [(0u32, 0u8); 257];
        for l in 1..=MAX_CODE_LEN {
            for i in 0..h.count[l] {
                let sym = h.symbols[(h.offset[l] as u32 + i) as usize];
                code_of[sym as usize] = (h.first[l] + i, l as u8);
            }
        }
        assert_eq!(code_of[b'a' as usize], (0x3, 5));
        assert_eq!(code_of[EOS as usize], (0x3fff_ffff, 30));
        let input: Vec<u8> = (0..=255u8).chain(b"hello, world".iter().copied()).collect();
        let (mut acc, mut bits, mut enc) = (0u64, 0u32, Vec::new());
        for &b in &input {
            let (c, l) = code_of[b as usize];
            acc = (acc << l) | c as u64;
            bits += l as u32;
            while bits >= 8 {
                enc.push((acc >> (bits - 8)) as u8);
                bits -= 8;
            }
        }
        if bits > 0 {
            let pad = 8 - bits;
            enc.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
        }
        let mut out = Vec::new();
        assert_eq!(huffman_decode(&enc, &mut out), Ok(()));
        assert_eq!(out, input);
    }

    #[test]
    fn bad_huffman_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // 'a' (00011) padded with zeros instead of ones.
        assert!(huffman_decode(&[0b0001_1000], &mut out).is_err());
        // A whole byte of padding.
        assert!(huffman_decode(&[0b0001_1111, 0xff], &mut out).is_err());
        // EOS itself.
        assert!(huffman_decode(&[0xff, 0xff, 0xff, 0xfc], &mut out).is_err());
    }

    #[test]
    fn broken_blocks_are_errors_not_panics() {
        let mut d = Decoder::default();
        for block in [
            &[0x80][..],               // index 0
            &[0xff, 0x80],             // truncated integer
            &[0xbf],                   // past the table
            &[0x40, 0x05, b'a'],       // string past the end
            &[0x82, 0x3f, 0xe1, 0x1f], // size update after a field
            &[0x3f, 0xe2, 0x1f],       // size update above 4096
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        ] {
            assert!(d.decode(block, |_| {}).is_err(), "{block:x?}");
        }
        // Random bytes: any outcome but a panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let len = (x % 24) as usize;
            let block: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = d.decode(&block, |_| {});
        }
    }

    #[test]
    fn uppercase_and_unknown_names_are_malformed() {
        let mut d = Decoder::default();
        // Literal without indexing, new name "Foo": value "x".
        let got = decode(&mut d, "00 03 466f 6f 01 78");
        assert_eq!(got[0].0, "malformed");
        // ":foo" is a pseudo-header no request carries.
        let mut seen = None;
        d.decode(&hex("00 04 3a66 6f6f 01 78"), |f| seen = Some(f))
            .unwrap_or(());
        assert!(matches!(seen, Some(Field::Pseudo(Pseudo::Other, _))));
    }

    #[test]
    fn entries_count_their_names_as_received() {
        let mut d = Decoder::default();
        // "XYZ: a" (an uppercase name: malformed, but in the table all the same).
        d.decode(&hex("40 03 58595a 01 61"), |_| {}).unwrap_or(());
        assert_eq!(d.size, 3 + 1 + 32);
        // A new entry named by index 62 (that entry's name): 3 bytes again.
        d.decode(&hex("7e 01 62"), |_| {}).unwrap_or(());
        assert_eq!(d.size, 2 * (3 + 1 + 32));
    }

    #[test]
    fn size_updates_evict() {
        let mut d = Decoder::default();
        decode(&mut d, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff");
        assert_eq!(d.table.len(), 1);
        // Size update to 0, then the entry is gone.
        let mut r = d.decode(&hex("20 be"), |_| {});
        assert!(r.is_err());
        r = d.decode(&hex("20"), |_| {});
        assert_eq!(r, Ok(()));
        assert_eq!(d.table.len(), 0);
    }

    #[test]
    fn the_encoder_writes_what_the_decoder_reads() {
        let mut out = BytesMut::new();
        encode_status(&mut out, StatusCode::OK);
        encode_status(&mut out, StatusCode::IM_A_TEAPOT);
        encode_field(&mut out, b"content-type", b"text/plain");
        encode_field(&mut out, b"x-long", &[b'v'; 300]);
        encode_received_field(&mut out, b"Content-Type", b"a/b");
        encode_received_field(&mut out, b"X-Mixed-Case", b"v");
        let mut d = Decoder::default();
        let mut got = Vec::new();
        d.decode(&out, |f| got.push(f)).unwrap_or(());
        assert_eq!(got.len(), 6);
        assert!(matches!(&got[4], Field::Header(n, v) if n == "content-type" && v == "a/b"));
        assert!(matches!(&got[5], Field::Header(n, v) if n == "x-mixed-case" && v == "v"));
        assert!(matches!(&got[1], Field::Pseudo(Pseudo::Other, v) if v == "418"));
        assert!(matches!(&got[2], Field::Header(n, v) if n == "content-type" && v == "text/plain"));
        assert!(matches!(&got[3], Field::Header(_, v) if v.len() == 300));
    }
}
