//! The formats against golden lines, and escaping of hostile values.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::{full, start};
use crate::access_log::{AccessLogFormat, AccessRecord, MAX_VALUE_BYTES};

fn line(format: AccessLogFormat, record: &AccessRecord<'_>) -> String {
    let mut out = Vec::new();
    format.write(record, &mut out);
    String::from_utf8(out).expect("a line is UTF-8")
}

fn json(record: &AccessRecord<'_>) -> serde_json::Map<String, Value> {
    let text = line(AccessLogFormat::Json, record);
    assert!(text.ends_with('\n'));
    assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
    match serde_json::from_str(&text).expect("the line is JSON") {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Istio's `EnvoyJSONLogFormatIstio`, in its declaration order.
const ISTIO_JSON_KEYS: [&str; 24] = [
    "start_time",
    "route_name",
    "method",
    "path",
    "protocol",
    "response_code",
    "response_flags",
    "response_code_details",
    "connection_termination_details",
    "bytes_received",
    "bytes_sent",
    "duration",
    "upstream_service_time",
    "x_forwarded_for",
    "user_agent",
    "request_id",
    "authority",
    "upstream_host",
    "upstream_cluster",
    "upstream_local_address",
    "downstream_local_address",
    "downstream_remote_address",
    "requested_server_name",
    "upstream_transport_failure_reason",
];

#[test]
fn istio_text_full_record() {
    assert_eq!(
        line(AccessLogFormat::Text, &full()),
        "[2024-01-02T03:04:05.678Z] \"GET /api/orders?id=7 HTTP/1.1\" 503 UF,URX \
         upstream_reset_before_response_started{connection_failure} downstream_closed \
         \"connection refused\" 12 91 30004 30001 \"10.0.0.1, 10.0.0.2\" \"curl/8.5.0\" \
         \"f47ac10b-58cc-4372-a567-0e02b2c3d479\" \"orders.prod.svc.cluster.local:8080\" \
         \"10.244.3.12:8080\" outbound|8080||orders.prod.svc.cluster.local 10.244.1.5:54321 \
         10.96.45.67:8080 [fd00::5]:33210 outbound_.8080_._.orders.prod.svc.cluster.local \
         default\n"
    );
}

#[test]
fn istio_text_missing_values() {
    assert_eq!(
        line(AccessLogFormat::Text, &AccessRecord::new(start())),
        "[2024-01-02T03:04:05.678Z] \"- - -\" 0 - - - \"-\" 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\" - - - - - -\n"
    );
}

#[test]
fn envoy_text_full_record_and_missing_values() {
    assert_eq!(
        line(AccessLogFormat::Envoy, &full()),
        "[2024-01-02T03:04:05.678Z] \"GET /api/orders?id=7 HTTP/1.1\" 503 UF,URX 12 91 30004 \
         30001 \"10.0.0.1, 10.0.0.2\" \"curl/8.5.0\" \"f47ac10b-58cc-4372-a567-0e02b2c3d479\" \
         \"orders.prod.svc.cluster.local:8080\" \"10.244.3.12:8080\"\n"
    );
    assert_eq!(
        line(AccessLogFormat::Envoy, &AccessRecord::new(start())),
        "[2024-01-02T03:04:05.678Z] \"- - -\" 0 - 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\"\n"
    );
}

#[test]
fn json_full_record() {
    assert_eq!(
        line(AccessLogFormat::Json, &full()),
        concat!(
            r#"{"start_time":"2024-01-02T03:04:05.678Z","route_name":"default","method":"GET","#,
            r#""path":"/api/orders?id=7","protocol":"HTTP/1.1","response_code":503,"#,
            r#""response_flags":"UF,URX","#,
            r#""response_code_details":"upstream_reset_before_response_started{connection_failure}","#,
            r#""connection_termination_details":"downstream_closed","bytes_received":12,"#,
            r#""bytes_sent":91,"duration":30004,"upstream_service_time":"30001","#,
            r#""x_forwarded_for":"10.0.0.1, 10.0.0.2","user_agent":"curl/8.5.0","#,
            r#""request_id":"f47ac10b-58cc-4372-a567-0e02b2c3d479","#,
            r#""authority":"orders.prod.svc.cluster.local:8080","upstream_host":"10.244.3.12:8080","#,
            r#""upstream_cluster":"outbound|8080||orders.prod.svc.cluster.local","#,
            r#""upstream_local_address":"10.244.1.5:54321","#,
            r#""downstream_local_address":"10.96.45.67:8080","#,
            r#""downstream_remote_address":"[fd00::5]:33210","#,
            r#""requested_server_name":"outbound_.8080_._.orders.prod.svc.cluster.local","#,
            r#""upstream_transport_failure_reason":"connection refused"}"#,
            "\n"
        )
    );
}

#[test]
fn json_missing_values_are_null() {
    let map = json(&AccessRecord::new(start()));
    assert_eq!(map.len(), ISTIO_JSON_KEYS.len());
    for (key, value) in &map {
        let expected = match key.as_str() {
            "start_time" => Value::from("2024-01-02T03:04:05.678Z"),
            "response_flags" => Value::from("-"),
            "response_code" | "bytes_received" | "bytes_sent" | "duration" => Value::from(0),
            _ => Value::Null,
        };
        assert_eq!(value, &expected, "{key}");
    }
}

#[test]
fn json_keys_are_istios_in_its_order() {
    // serde_json's map sorts its keys: the order is read from the text.
    for record in [full(), AccessRecord::new(start())] {
        let text = line(AccessLogFormat::Json, &record);
        let mut at = 0;
        for key in ISTIO_JSON_KEYS {
            let quoted = format!("\"{key}\":");
            let found = text[at..]
                .find(&quoted)
                .unwrap_or_else(|| panic!("{key} after {at}"));
            at += found + quoted.len();
        }
        assert_eq!(json(&record).len(), ISTIO_JSON_KEYS.len(), "no other key");
    }
}

#[test]
fn empty_strings_are_missing_values() {
    let mut r = AccessRecord::new(start());
    r.user_agent = Some("");
    r.response_flags = "";
    r.route_name = Some("");
    assert_eq!(
        line(AccessLogFormat::Text, &r),
        line(AccessLogFormat::Text, &AccessRecord::new(start()))
    );
    let map = json(&r);
    assert_eq!(map["user_agent"], Value::Null);
    assert_eq!(map["response_flags"], Value::from("-"));
}

#[test]
fn start_time_in_utc_with_milliseconds() {
    let at = |ms: u64| {
        let mut r = AccessRecord::new(UNIX_EPOCH + Duration::from_millis(ms));
        r.response_code = 200;
        let text = line(AccessLogFormat::Envoy, &r);
        text[1..text.find(']').expect("a bracket")].to_string()
    };
    assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
    // 2024-02-29 (a leap day), 23:59:59.999
    assert_eq!(at(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
    assert_eq!(at(1_709_251_200_000), "2024-03-01T00:00:00.000Z");
    // Sub-millisecond digits are cut, not rounded, as Envoy's %E3S.
    let r = AccessRecord::new(UNIX_EPOCH + Duration::from_nanos(5_999_999));
    assert!(line(AccessLogFormat::Envoy, &r).starts_with("[1970-01-01T00:00:00.005Z]"));
    // Before 1970: no date, never a panic.
    let before = AccessRecord::new(UNIX_EPOCH - Duration::from_secs(1));
    assert!(line(AccessLogFormat::Text, &before).starts_with("[-] "));
    assert_eq!(json(&before)["start_time"], Value::Null);
}

const HOSTILE: &str =
    "evil\n[2024] \"GET / HTTP/1.1\" 200\r\t\0\\x \u{1b}[31m é日本\u{2028}\u{85}\u{202e}\u{7f}";

#[test]
fn text_escapes_hostile_values() {
    let mut r = full();
    r.user_agent = Some(HOSTILE);
    r.path = Some("/a b\"c");
    r.requested_server_name = Some("sni with space\n");
    let text = line(AccessLogFormat::Text, &r);
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    assert!(text.ends_with('\n'));
    assert!(!text.contains('\0') && !text.contains('\r') && !text.contains('\u{1b}'));
    assert!(
        text.contains(
            " \"evil\\x0a[2024] \\x22GET / HTTP/1.1\\x22 200\\x0d\\x09\\x00\\x5cx \\x1b[31m \
             é日本\\xe2\\x80\\xa8\\xc2\\x85\\xe2\\x80\\xae\\x7f\" "
        ),
        "{text}"
    );
    // Inside the request line and in unquoted fields a space is escaped,
    // so the line still splits on spaces.
    assert!(text.contains("\"GET /a\\x20b\\x22c HTTP/1.1\""), "{text}");
    assert!(
        text.contains(" sni\\x20with\\x20space\\x0a default\n"),
        "{text}"
    );
    assert_eq!(
        text.split(' ').count(),
        line(AccessLogFormat::Text, &full()).split(' ').count() + 6,
        "the user agent's six spaces are its own; no field was added"
    );
}

#[test]
fn json_round_trips_hostile_values() {
    let mut r = full();
    r.user_agent = Some(HOSTILE);
    r.path = Some("/a b\"c\\");
    r.x_forwarded_for = Some("\u{0}\u{1}\u{1f}");
    r.request_id = Some("日本語-😀");
    r.authority = Some("a\u{2029}b\u{2066}c");
    let text = line(AccessLogFormat::Json, &r);
    assert!(!text.contains('\u{2028}') && !text.contains('\u{85}') && !text.contains('\u{7f}'));
    assert!(text.contains(r#""user_agent":"evil\n[2024] \"GET / HTTP/1.1\" 200\r\t\u0000\\x \u001b[31m é日本\u2028\u0085\u202e\u007f""#), "{text}");
    let map = json(&r);
    assert_eq!(map["user_agent"], Value::from(HOSTILE));
    assert_eq!(map["path"], Value::from("/a b\"c\\"));
    assert_eq!(map["x_forwarded_for"], Value::from("\u{0}\u{1}\u{1f}"));
    assert_eq!(map["request_id"], Value::from("日本語-😀"));
    assert_eq!(map["authority"], Value::from("a\u{2029}b\u{2066}c"));
    assert_eq!(map["response_code"], Value::from(503));
    assert_eq!(map["bytes_received"], Value::from(12));
    assert_eq!(map["bytes_sent"], Value::from(91));
    assert_eq!(map["duration"], Value::from(30_004));
    assert_eq!(map["upstream_service_time"], Value::from("30001"));
    assert_eq!(
        map["downstream_remote_address"],
        Value::from("[fd00::5]:33210")
    );
}

#[test]
fn long_values_are_cut_at_the_bound() {
    let agent = "A".repeat(100 << 10);
    let mut r = full();
    r.user_agent = Some(&agent);
    let text = line(AccessLogFormat::Text, &r);
    let kept = format!("\"{}...\"", &agent[..MAX_VALUE_BYTES - 3]);
    assert!(text.contains(&kept));
    assert!(text.len() < line(AccessLogFormat::Text, &full()).len() + MAX_VALUE_BYTES);
    let map = json(&r);
    assert_eq!(
        map["user_agent"].as_str().map(str::len),
        Some(MAX_VALUE_BYTES)
    );

    // Escapes and multi-byte characters are never cut in half, and the
    // escaped form stays within the bound.
    for value in [
        "é".repeat(10_000),
        "\n".repeat(10_000),
        "a\u{85}".repeat(5_000),
    ] {
        let mut r = full();
        r.path = Some(&value);
        r.user_agent = Some(&value);
        for format in [AccessLogFormat::Text, AccessLogFormat::Json] {
            let text = line(format, &r);
            assert_eq!(text.matches('\n').count(), 1);
            let agent = match format {
                AccessLogFormat::Json => {
                    let start = text.find("\"user_agent\":\"").expect("the key") + 14;
                    &text[start..start + text[start..].find("\",").expect("the end")]
                }
                _ => text.split('"').nth(7).expect("the user agent field"),
            };
            assert!(agent.len() <= MAX_VALUE_BYTES, "{} bytes", agent.len());
            assert!(agent.len() > MAX_VALUE_BYTES - 8, "{} bytes", agent.len());
            assert!(agent.ends_with("..."));
            assert!(!agent.ends_with("\\...") && !agent.ends_with("\\x0..."));
        }
        let map = json(&r);
        let cut = map["user_agent"].as_str().expect("a string");
        let kept = cut.strip_suffix("...").expect("ends with ...");
        assert!(value.starts_with(kept), "a prefix of the value");
    }
}

#[test]
fn a_value_at_the_bound_is_kept_whole() {
    let exact = "b".repeat(MAX_VALUE_BYTES);
    let mut r = full();
    r.user_agent = Some(&exact);
    assert_eq!(json(&r)["user_agent"], Value::from(exact.as_str()));
    let over = "b".repeat(MAX_VALUE_BYTES + 1);
    r.user_agent = Some(&over);
    let cut = json(&r)["user_agent"].as_str().map(str::to_owned);
    assert_eq!(cut, Some(format!("{}...", &over[..MAX_VALUE_BYTES - 3])));
}

#[test]
fn the_buffer_is_appended_to() {
    let mut out = b"previous\n".to_vec();
    AccessLogFormat::Envoy.write(&full(), &mut out);
    AccessLogFormat::Json.write(&full(), &mut out);
    let text = String::from_utf8(out).expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], "previous");
    assert!(lines[1].starts_with("[2024-01-02T03:04:05.678Z]"));
    assert!(lines[2].starts_with("{\"start_time\""));
}
