//! The decoder against an independent encoder (httlib-hpack): a connection's
//! header blocks, each field written in a representation chosen at random
//! (indexed, literal with or without indexing or never indexed, name by
//! index or literal, Huffman or not, table size updates, entries larger than
//! the table), decode to the fields that were encoded, block after block, so
//! the dynamic tables of both sides stay in step.

use super::*;
use httlib_hpack::Encoder;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

#[derive(Debug, Clone)]
struct Sent {
    name: Vec<u8>,
    value: Vec<u8>,
    flags: u8,
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Names of the static table, pseudo-header fields among them.
        select(vec![
            ":method",
            ":path",
            ":scheme",
            ":authority",
            ":status",
            "accept-encoding",
            "user-agent",
            "cookie",
            "content-type",
            "x-forwarded-for",
        ])
        .prop_map(|n| n.as_bytes().to_vec()),
        vec(
            select(b"abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~".to_vec()),
            1..16
        ),
    ]
}

/// A valid field value: visible ASCII, space and tab inside, obs-text.
fn value() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff];
    prop_oneof![
        20 => vec(byte.clone(), 0..60),
        // Now and then one larger than the whole table.
        1 => (0x21u8..0x7f, 4070usize..4200).prop_map(|(b, n)| vec![b; n]),
    ]
    .prop_map(|mut v| {
        // No whitespace at the ends (a field value does not have any).
        while v.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
            v.pop();
        }
        while v.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            v.remove(0);
        }
        v
    })
}

fn sent() -> impl Strategy<Value = Sent> {
    // Huffman name and value, then how it is indexed, then whether the
    // encoder may refer to what its table has (indexed, or name by index).
    let indexing = select(vec![0u8, Encoder::WITH_INDEXING, Encoder::NEVER_INDEXED]);
    (
        name(),
        value(),
        any::<bool>(),
        any::<bool>(),
        indexing,
        any::<bool>(),
    )
        .prop_map(|(name, value, hn, hv, indexing, best)| {
            let mut flags = indexing;
            if hn {
                flags |= Encoder::HUFFMAN_NAME;
            }
            if hv {
                flags |= Encoder::HUFFMAN_VALUE;
            }
            if best {
                flags |= Encoder::BEST_FORMAT;
            }
            Sent { name, value, flags }
        })
}

/// A header block: perhaps a table size update first, then its fields.
type Block = (Option<u32>, Vec<Sent>);

/// A connection's header blocks. Fields come from a small pool, so that the
/// same ones come back and the encoder refers to its table; their sizes keep
/// the table full, so entries are evicted all the time.
fn blocks() -> impl Strategy<Value = Vec<Block>> {
    let pool = vec((name(), value()), 1..12);
    let update = proptest::option::weighted(0.1, prop_oneof![Just(0u32), 0u32..=4096]);
    let picks = vec((update, vec((any::<usize>(), sent()), 0..16)), 1..8);
    (pool, picks).prop_map(|(pool, picks)| {
        picks
            .into_iter()
            .map(|(update, fields)| {
                let fields = fields
                    .into_iter()
                    .map(|(i, s)| match s.name.first() {
                        // A field of its own now and then, from the pool mostly.
                        Some(b'z') => s,
                        _ => {
                            let (name, value) = pool[i % pool.len()].clone();
                            Sent { name, value, ..s }
                        }
                    })
                    .collect();
                (update, fields)
            })
            .collect()
    })
}

/// A decoded field as a name and a value.
fn plain(f: Field) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
    match f {
        Field::Pseudo(p, v) => {
            let name: &[u8] = match p {
                Pseudo::Method => b":method",
                Pseudo::Scheme => b":scheme",
                Pseudo::Authority => b":authority",
                Pseudo::Path => b":path",
                Pseudo::Other => b":other",
            };
            Ok((name.to_vec(), v.to_vec()))
        }
        Field::Header(n, v) => Ok((n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())),
        Field::Malformed(why) => Err(why),
    }
}

/// What the decoder must give for a sent field.
fn expected(s: &Sent) -> (Vec<u8>, Vec<u8>) {
    let name = match s.name.as_slice() {
        n @ (b":method" | b":scheme" | b":authority" | b":path") => n.to_vec(),
        n if n.starts_with(b":") => b":other".to_vec(),
        n => n.to_vec(),
    };
    (name, s.value.clone())
}

proptest! {
    #[test]
    fn blocks_of_an_independent_encoder_decode_to_what_it_encoded(blocks in blocks()) {
        let mut encoder = Encoder::with_dynamic_size(TABLE_SIZE as u32);
        let mut decoder = Decoder::default();
        for (i, (update, fields)) in blocks.iter().enumerate() {
            let mut bytes = Vec::new();
            if let Some(size) = update {
                encoder.update_max_dynamic_size(*size, &mut bytes).expect("size update");
            }
            for f in fields {
                encoder
                    .encode((f.name.clone(), f.value.clone(), f.flags), &mut bytes)
                    .expect("encode");
            }
            let mut got = Vec::new();
            let decoded = decoder.decode(&bytes, |f| got.push(plain(f)));
            prop_assert_eq!(decoded, Ok(()), "block {}", i);
            let want: Vec<_> = fields.iter().map(|f| Ok(expected(f))).collect();
            prop_assert_eq!(got, want, "block {}", i);
        }
    }

    /// Damaged blocks and random bytes, read by a decoder whose table holds
    /// entries: fields or an error, never a panic, and never more fields
    /// than bytes (every representation takes at least one).
    #[test]
    fn damaged_blocks_decode_or_fail_without_panicking(
        first in vec(sent(), 1..8),
        bytes in prop_oneof![
            (vec(sent(), 1..8), vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4)),
            (Just(Vec::new()), vec((any::<usize>(), Just(1u8), any::<u8>()), 0..48)),
        ],
    ) {
        let mut encoder = Encoder::with_dynamic_size(TABLE_SIZE as u32);
        let mut decoder = Decoder::default();
        let mut block = Vec::new();
        for f in &first {
            encoder.encode((f.name.clone(), f.value.clone(), f.flags | Encoder::WITH_INDEXING), &mut block).expect("encode");
        }
        prop_assert_eq!(decoder.decode(&block, |_| {}), Ok(()));
        let (fields, edits) = bytes;
        let mut next = Vec::new();
        for f in &fields {
            encoder.encode((f.name.clone(), f.value.clone(), f.flags), &mut next).expect("encode");
        }
        // Inserts only, into nothing: random bytes.
        let damaged = anymesh_testkit::bytes::damage(next, &edits);
        let mut count = 0;
        let _ = decoder.decode(&damaged, |_| count += 1);
        prop_assert!(count <= damaged.len());
    }
}
