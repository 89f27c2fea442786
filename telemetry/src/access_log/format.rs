//! The three line formats, written into a caller's buffer with no
//! allocation of their own.
//!
//! Text: Istio's `EnvoyTextLogFormat` (pilot/pkg/model/telemetry_logging.go),
//! its default for `meshConfig.accessLogEncoding: TEXT`:
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%
//! ```
//!
//! Envoy's default is the same without the three details fields and
//! without everything after `"%UPSTREAM_HOST%"`.
//!
//! JSON: Istio's `EnvoyJSONLogFormatIstio`, its keys in the order Istio's
//! source declares them (Envoy prints them in the unspecified order of a
//! protobuf map; no consumer may depend on it). As Envoy's typed JSON does,
//! `response_code`, `bytes_received`, `bytes_sent` and `duration` are
//! numbers, `upstream_service_time` is a string (it is a header's value),
//! and a missing value is `null`.
//!
//! Escaping. Everything that can come from a request is escaped so a line
//! stays one line and one JSON value: in text, control characters (C0, DEL,
//! C1), `"`, `\`, the Unicode line separators and bidirectional overrides
//! become `\xNN` (one per UTF-8 byte, nginx's style), and so does a space in
//! an unquoted field or inside the quoted request line (so the line splits
//! on spaces); in JSON the same characters become JSON escapes (`\n`,
//! `\u0000`, `\u2028`). Valid UTF-8 otherwise passes through. The escaped
//! form of each value is cut at [`MAX_VALUE_BYTES`] bytes, ending in `...`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{AccessLogFormat, AccessRecord};

/// The most bytes one value takes in a line once escaped: a longer value is
/// cut on a character (and escape) boundary and ends with `...` (those three
/// bytes included in the bound). A line therefore has a bounded size, about
/// 60 KiB at worst with every request value at the bound, a few hundred
/// bytes usually.
pub const MAX_VALUE_BYTES: usize = 4096;

const ELLIPSIS: &[u8] = b"...";
const HEX: &[u8; 16] = b"0123456789abcdef";

impl AccessLogFormat {
    /// Appends `record`'s line, newline included, to `out`.
    pub fn write(self, record: &AccessRecord<'_>, out: &mut Vec<u8>) {
        match self {
            AccessLogFormat::Text => write_text(record, out, true),
            AccessLogFormat::Envoy => write_text(record, out, false),
            AccessLogFormat::Json => write_json(record, out),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Text between double quotes.
    Quoted,
    /// Text delimited by spaces: a space is escaped too.
    Bare,
    /// The inside of a JSON string.
    Json,
}

fn write_text(r: &AccessRecord<'_>, out: &mut Vec<u8>, istio: bool) {
    out.push(b'[');
    if !write_time(out, r.start_time) {
        out.push(b'-');
    }
    out.extend_from_slice(b"] \"");
    text(out, r.method, Style::Bare);
    out.push(b' ');
    text(out, r.path, Style::Bare);
    out.push(b' ');
    text(out, r.protocol, Style::Bare);
    out.extend_from_slice(b"\" ");
    number(out, u64::from(r.response_code));
    out.push(b' ');
    text(out, Some(r.response_flags), Style::Bare);
    if istio {
        out.push(b' ');
        text(out, r.response_code_details, Style::Bare);
        out.push(b' ');
        text(out, r.connection_termination_details, Style::Bare);
        out.extend_from_slice(b" \"");
        text(out, r.upstream_transport_failure_reason, Style::Quoted);
        out.push(b'"');
    }
    out.push(b' ');
    number(out, r.bytes_received);
    out.push(b' ');
    number(out, r.bytes_sent);
    out.push(b' ');
    number(out, r.duration_ms);
    out.push(b' ');
    match r.upstream_service_time_ms {
        Some(ms) => number(out, ms),
        None => out.push(b'-'),
    }
    for value in [r.x_forwarded_for, r.user_agent, r.request_id, r.authority] {
        out.extend_from_slice(b" \"");
        text(out, value, Style::Quoted);
        out.push(b'"');
    }
    out.extend_from_slice(b" \"");
    text_addr(out, r.upstream_host);
    out.push(b'"');
    if istio {
        out.push(b' ');
        text(out, r.upstream_cluster, Style::Bare);
        for addr in [
            r.upstream_local_address,
            r.downstream_local_address,
            r.downstream_remote_address,
        ] {
            out.push(b' ');
            text_addr(out, addr);
        }
        out.push(b' ');
        text(out, r.requested_server_name, Style::Bare);
        out.push(b' ');
        text(out, r.route_name, Style::Bare);
    }
    out.push(b'\n');
}

fn write_json(r: &AccessRecord<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"start_time\":");
    let mark = out.len();
    out.push(b'"');
    if write_time(out, r.start_time) {
        out.push(b'"');
    } else {
        out.truncate(mark);
        out.extend_from_slice(b"null");
    }
    key(out, "route_name");
    json(out, r.route_name);
    key(out, "method");
    json(out, r.method);
    key(out, "path");
    json(out, r.path);
    key(out, "protocol");
    json(out, r.protocol);
    key(out, "response_code");
    number(out, u64::from(r.response_code));
    key(out, "response_flags");
    json(
        out,
        Some(r.response_flags)
            .filter(|f| !f.is_empty())
            .or(Some("-")),
    );
    key(out, "response_code_details");
    json(out, r.response_code_details);
    key(out, "connection_termination_details");
    json(out, r.connection_termination_details);
    key(out, "bytes_received");
    number(out, r.bytes_received);
    key(out, "bytes_sent");
    number(out, r.bytes_sent);
    key(out, "duration");
    number(out, r.duration_ms);
    key(out, "upstream_service_time");
    match r.upstream_service_time_ms {
        Some(ms) => {
            out.push(b'"');
            number(out, ms);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    key(out, "x_forwarded_for");
    json(out, r.x_forwarded_for);
    key(out, "user_agent");
    json(out, r.user_agent);
    key(out, "request_id");
    json(out, r.request_id);
    key(out, "authority");
    json(out, r.authority);
    key(out, "upstream_host");
    json_addr(out, r.upstream_host);
    key(out, "upstream_cluster");
    json(out, r.upstream_cluster);
    key(out, "upstream_local_address");
    json_addr(out, r.upstream_local_address);
    key(out, "downstream_local_address");
    json_addr(out, r.downstream_local_address);
    key(out, "downstream_remote_address");
    json_addr(out, r.downstream_remote_address);
    key(out, "requested_server_name");
    json(out, r.requested_server_name);
    key(out, "upstream_transport_failure_reason");
    json(out, r.upstream_transport_failure_reason);
    out.extend_from_slice(b"}\n");
}

/// `,"name":`
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn text(out: &mut Vec<u8>, value: Option<&str>, style: Style) {
    match value {
        Some(v) if !v.is_empty() => escape(out, v, style),
        _ => out.push(b'-'),
    }
}

fn json(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(v) if !v.is_empty() => {
            out.push(b'"');
            escape(out, v, Style::Json);
            out.push(b'"');
        }
        _ => out.extend_from_slice(b"null"),
    }
}

fn text_addr(out: &mut Vec<u8>, addr: Option<SocketAddr>) {
    match addr {
        Some(a) => put_addr(out, a),
        None => out.push(b'-'),
    }
}

fn json_addr(out: &mut Vec<u8>, addr: Option<SocketAddr>) {
    match addr {
        Some(a) => {
            out.push(b'"');
            put_addr(out, a);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// `a.b.c.d:port` by hand (the standard library's `Display` for
/// `SocketAddrV4` pads through a formatter and costs about as much as the
/// rest of a line); `[v6]:port` through `Display`.
fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            let mut buf = itoa::Buffer::new();
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(buf.format(octet).as_bytes());
            }
            out.push(b':');
            out.extend_from_slice(buf.format(a.port()).as_bytes());
        }
        // Writing to a Vec cannot fail.
        SocketAddr::V6(a) => drop(write!(out, "{a}")),
    }
}

/// `2024-01-02T03:04:05.678Z`, Envoy's `%START_TIME%`; false (nothing
/// written) for a time before 1970 or past year 9999.
fn write_time(out: &mut Vec<u8>, t: SystemTime) -> bool {
    let Ok(since) = t.duration_since(UNIX_EPOCH) else {
        return false;
    };
    let Ok(secs) = i64::try_from(since.as_secs()) else {
        return false;
    };
    let Ok(dt) = time::OffsetDateTime::from_unix_timestamp(secs) else {
        return false;
    };
    let Ok(year) = u32::try_from(dt.year()) else {
        return false;
    };
    if year > 9999 {
        return false;
    }
    digits(out, year, 4);
    out.push(b'-');
    digits(out, u32::from(u8::from(dt.month())), 2);
    out.push(b'-');
    digits(out, u32::from(dt.day()), 2);
    out.push(b'T');
    digits(out, u32::from(dt.hour()), 2);
    out.push(b':');
    digits(out, u32::from(dt.minute()), 2);
    out.push(b':');
    digits(out, u32::from(dt.second()), 2);
    out.push(b'.');
    digits(out, since.subsec_millis(), 3);
    out.push(b'Z');
    true
}

/// `n` in exactly `width` decimal digits, zero-padded (`n < 10^width`).
fn digits(out: &mut Vec<u8>, n: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        // n / div % 10 is a single digit.
        out.push(b'0' + (n / div % 10) as u8);
        div /= 10;
    }
}

/// True for a byte that passes through unescaped in `style`.
fn plain(b: u8, style: Style) -> bool {
    match b {
        b'"' | b'\\' => false,
        b' ' => style != Style::Bare,
        0x21..=0x7e => true,
        _ => false,
    }
}

/// Non-ASCII characters that can disguise a line: C1 controls, the Unicode
/// line and paragraph separators and the bidirectional overrides.
fn disguising(c: char) -> bool {
    matches!(c, '\u{80}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Appends `value` escaped for `style`, its escaped form cut at
/// [`MAX_VALUE_BYTES`].
fn escape(out: &mut Vec<u8>, value: &str, style: Style) {
    let keep = MAX_VALUE_BYTES - ELLIPSIS.len();
    if value.len() <= keep && value.bytes().all(|b| plain(b, style)) {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    let start = out.len();
    // The end of the last whole character that leaves room for "...".
    let mut cut = start;
    for c in value.chars() {
        escape_char(out, c, style);
        let written = out.len() - start;
        if written <= keep {
            cut = out.len();
        } else if written > MAX_VALUE_BYTES {
            out.truncate(cut);
            out.extend_from_slice(ELLIPSIS);
            return;
        }
    }
}

fn escape_char(out: &mut Vec<u8>, c: char, style: Style) {
    if c.is_ascii() {
        let b = c as u8;
        if plain(b, style) {
            out.push(b);
        } else if style == Style::Json {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                _ => json_unicode(out, u32::from(b)),
            }
        } else {
            text_byte(out, b);
        }
        return;
    }
    if !disguising(c) {
        let mut utf8 = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
    } else if style == Style::Json {
        json_unicode(out, u32::from(c));
    } else {
        let mut utf8 = [0u8; 4];
        for &b in c.encode_utf8(&mut utf8).as_bytes() {
            text_byte(out, b);
        }
    }
}

fn text_byte(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(&[
        b'\\',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 15)],
    ]);
}

/// `\uXXXX` for a character of the basic multilingual plane.
fn json_unicode(out: &mut Vec<u8>, c: u32) {
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((c >> shift) & 15) as usize]);
    }
}
