//! Byte streams taken apart the ways a network or an attacker takes them:
//! cut into pieces anywhere, or damaged at a few places. For generated
//! (property) tests of parsers and of the proxy on the wire.

/// `bytes` cut at the given positions (each taken modulo one more than its
/// length, so any `usize` is a position); the pieces, in order, some perhaps
/// empty, make up `bytes` again.
pub fn cut<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.push(bytes.len());
    at.sort_unstable();
    let mut start = 0;
    at.into_iter()
        .map(|end| {
            let piece = &bytes[start..end];
            start = end;
            piece
        })
        .collect()
}

/// One damage to a byte stream: where (any `usize`, taken modulo one more
/// than the length), what (`kind % 3`: 0 replaces, 1 inserts, 2 deletes) and
/// with which byte.
pub type Edit = (usize, u8, u8);

/// `bytes` with the edits applied in order.
pub fn damage(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for &(at, kind, b) in edits {
        let at = at % (bytes.len() + 1);
        match kind % 3 {
            0 if at < bytes.len() => bytes[at] = b,
            1 => bytes.insert(at, b),
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {}
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_make_up_the_whole() {
        // 13 is position 6 (13 modulo 7), the end.
        let pieces = cut(b"abcdef", &[4, 1, 1, 13]);
        assert_eq!(pieces, [&b"a"[..], b"", b"bcd", b"ef", b""]);
        assert_eq!(cut(b"", &[5]), [&b""[..], b""]);
    }

    #[test]
    fn damage_replaces_inserts_and_deletes() {
        assert_eq!(damage(b"abc".to_vec(), &[(1, 0, b'x')]), b"axc");
        assert_eq!(damage(b"abc".to_vec(), &[(3, 1, b'x')]), b"abcx");
        assert_eq!(damage(b"abc".to_vec(), &[(0, 2, 0)]), b"bc");
        // Past the end there is nothing to replace or delete.
        assert_eq!(damage(b"abc".to_vec(), &[(3, 0, b'x'), (7, 2, 0)]), b"abc");
    }
}
