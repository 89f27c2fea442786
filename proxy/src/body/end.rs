//! What a response body tells the end of its exchange as it goes to the
//! client ([`BodyEnd`]), and the gRPC message counting both directions use
//! ([`GrpcMessages`]). A leaf: the bodies report through the trait without
//! knowing the hooks that implement it.

/// The end of an exchange, riding with its response body: told of every
/// DATA frame and the trailers as they are sent, it reports the exchange
/// when dropped.
pub(crate) trait BodyEnd: Send + Sync {
    /// A DATA frame went to the client.
    fn data(&mut self, data: &[u8]);
    /// The response's trailers (or a trailers-only response's head) went
    /// to the client.
    fn trailers(&mut self, trailers: &http::HeaderMap);
}

/// Counts the gRPC messages in a stream of DATA bytes, however cut: each
/// is a one-byte flag, a four-byte big-endian length, then that many bytes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct GrpcMessages {
    count: u64,
    /// Bytes of the current message still to pass.
    skip: u64,
    /// Bytes of the current prefix seen (0–4), and its length so far.
    prefix: u8,
    len: u32,
}

impl GrpcMessages {
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64);
                data = &data[n as usize..];
                self.skip -= n;
                continue;
            }
            let b = data[0];
            data = &data[1..];
            if self.prefix == 0 {
                // The compressed flag.
                self.prefix = 1;
                self.len = 0;
                continue;
            }
            self.len = (self.len << 8) | u32::from(b);
            self.prefix += 1;
            if self.prefix == 5 {
                self.count += 1;
                self.skip = u64::from(self.len);
                self.prefix = 0;
            }
        }
    }

    /// Messages whose prefix has been seen.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::GrpcMessages;
    use proptest::prelude::*;

    fn message(flag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![flag];
        m.extend_from_slice(&(body.len() as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn counts_messages_including_empty_and_compressed_ones() {
        let mut stream = message(0, b"hello");
        stream.extend(message(1, b""));
        stream.extend(message(0, &[7; 300]));
        let mut m = GrpcMessages::default();
        m.feed(&stream);
        assert_eq!(m.count(), 3);
        // A prefix alone counts the message it announces.
        m.feed(&[0, 0, 0, 1]);
        assert_eq!(m.count(), 3);
        m.feed(&[0]);
        assert_eq!(m.count(), 4);
    }

    proptest! {
        #[test]
        fn however_the_stream_is_cut_the_count_is_the_same(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..12),
            cuts in proptest::collection::vec(0usize..64, 0..20),
        ) {
            let stream: Vec<u8> = bodies.iter().flat_map(|b| message(0, b)).collect();
            let mut m = GrpcMessages::default();
            let mut rest = &stream[..];
            for c in cuts {
                let n = c.min(rest.len());
                m.feed(&rest[..n]);
                rest = &rest[n..];
            }
            m.feed(rest);
            prop_assert_eq!(m.count(), bodies.len() as u64);
        }
    }
}
