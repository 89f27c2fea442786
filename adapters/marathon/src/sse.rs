//! A server-sent events parser (the WHATWG "event stream interpretation"),
//! fed with chunks as they arrive.
//!
//! Lines end in LF, CRLF or CR (Jetty, under Marathon, writes CRLF and a
//! bare CRLF heartbeat every 10 s). `event:` names the event, `data:` lines
//! are joined with `\n`, lines starting with `:` are comments, a blank line
//! dispatches; a blank line with no data (a heartbeat) dispatches nothing.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub name: Option<String>,
    pub data: String,
}

/// Incremental parser state.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of an unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in CR: an LF starting the next one belongs to it.
    after_cr: bool,
    name: Option<String>,
    data: Option<String>,
    /// Blank lines and comments seen (heartbeats); for tests and logs.
    pub heartbeats: u64,
}

/// The longest line accepted; a longer one is a broken stream.
pub(crate) const MAX_LINE: usize = 16 * 1024 * 1024;

impl SseParser {
    /// Feeds a chunk; returns the events it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut out = Vec::new();
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut out);
                }
                _ => {
                    if self.line.len() >= MAX_LINE {
                        return Err(format!(
                            "an event stream line is longer than {MAX_LINE} bytes"
                        ));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        let line = String::from_utf8_lossy(&line);
        if line.is_empty() {
            match self.data.take() {
                Some(data) => out.push(SseEvent {
                    name: self.name.take(),
                    data,
                }),
                None => {
                    self.name = None;
                    self.heartbeats += 1;
                }
            }
            return;
        }
        if line.starts_with(':') {
            self.heartbeats += 1;
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.name = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            // `id` and `retry` are not used by Marathon; unknown fields are ignored.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], chunk: usize) -> (Vec<SseEvent>, u64) {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            out.extend(p.feed(c).unwrap());
        }
        (out, p.heartbeats)
    }

    #[test]
    fn lf_crlf_and_cr_frames_split_anywhere_give_the_same_events() {
        let lf = b"event: a\ndata: {\"x\":1}\n\n: ping\n\ndata: one\ndata: two\n\n";
        let crlf =
            b"event: a\r\ndata: {\"x\":1}\r\n\r\n: ping\r\n\r\ndata: one\r\ndata: two\r\n\r\n";
        let cr = b"event: a\rdata: {\"x\":1}\r\r: ping\r\rdata: one\rdata: two\r\r";
        for input in [&lf[..], &crlf[..], &cr[..]] {
            for chunk in [1, 2, 3, 7, 1000] {
                let (events, beats) = all(input, chunk);
                assert_eq!(
                    events,
                    vec![
                        SseEvent {
                            name: Some("a".into()),
                            data: "{\"x\":1}".into()
                        },
                        SseEvent {
                            name: None,
                            data: "one\ntwo".into()
                        },
                    ],
                    "chunk {chunk}"
                );
                assert_eq!(beats, 2, "a comment and the blank line after it");
            }
        }
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        let (events, _) = all(b"event: a\ndata: x\n", 4);
        assert!(events.is_empty());
    }
}
