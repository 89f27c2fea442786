//! Loaders for the captured registry payloads in `../shared/fixtures`
//! (beside the workspace), plus a reader for etcd's JSON gateway format.
//!
//! The directory can be moved with `ANYMESH_FIXTURES`.

use std::path::PathBuf;

use serde_json::Value;

/// The fixtures directory: `$ANYMESH_FIXTURES`, else `<workspace>/../shared/fixtures`.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ANYMESH_FIXTURES") {
        return PathBuf::from(d);
    }
    // This crate lives at <workspace>/adapters/testkit.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

/// The bytes of `rel` (e.g. `etcd/range_prefix_with_slash.json`).
pub fn read(rel: &str) -> Vec<u8> {
    let path = dir().join(rel);
    match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => panic!(
            "fixture {} is missing ({e}): the shared fixtures are expected beside the workspace, \
             or set ANYMESH_FIXTURES",
            path.display()
        ),
    }
}

/// `rel` parsed as one JSON document.
pub fn json(rel: &str) -> Value {
    match serde_json::from_slice(&read(rel)) {
        Ok(v) => v,
        Err(e) => panic!("fixture {rel} is not JSON: {e}"),
    }
}

/// `rel` parsed as newline-delimited JSON (blank lines skipped).
pub fn ndjson(rel: &str) -> Vec<Value> {
    let text = String::from_utf8_lossy(&read(rel)).into_owned();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| match serde_json::from_str(l) {
            Ok(v) => v,
            Err(e) => panic!("fixture {rel} line {}: not JSON: {e}", i + 1),
        })
        .collect()
}

/// etcd's v3 JSON gateway encoding: int64 fields are strings (or numbers in
/// `etcdctl -w json` output), bytes are base64, default values are omitted.
pub mod etcd_gateway {
    use base64::Engine;
    use serde_json::Value;

    /// One key-value as the gateway shows it, decoded.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Kv {
        pub key: Vec<u8>,
        pub value: Vec<u8>,
        pub mod_revision: i64,
        pub lease: i64,
    }

    /// One watch event.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Event {
        Put(Kv),
        Delete(Kv),
    }

    /// One watch stream frame (`{"result": ...}`).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum WatchFrame {
        Created {
            revision: i64,
        },
        Events {
            revision: i64,
            events: Vec<Event>,
        },
        Canceled {
            compact_revision: i64,
            reason: String,
        },
    }

    /// An int64 written as a string or a number; absent means 0.
    pub fn int(v: &Value) -> i64 {
        match v {
            Value::String(s) => s.parse().unwrap_or_else(|e| panic!("int64 {s:?}: {e}")),
            Value::Number(n) => n.as_i64().unwrap_or_else(|| panic!("int64 {n}")),
            Value::Null => 0,
            other => panic!("not an int64: {other}"),
        }
    }

    /// Base64 bytes; absent means empty.
    pub fn bytes(v: &Value) -> Vec<u8> {
        match v {
            Value::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .unwrap_or_else(|e| panic!("base64 {s:?}: {e}")),
            Value::Null => Vec::new(),
            other => panic!("not base64 bytes: {other}"),
        }
    }

    pub fn kv(v: &Value) -> Kv {
        Kv {
            key: bytes(&v["key"]),
            value: bytes(&v["value"]),
            mod_revision: int(&v["mod_revision"]),
            lease: int(&v["lease"]),
        }
    }

    /// A range response: its header revision and its kvs.
    pub fn range(v: &Value) -> (i64, Vec<Kv>) {
        let kvs = v["kvs"].as_array().map_or(&[][..], Vec::as_slice);
        (int(&v["header"]["revision"]), kvs.iter().map(kv).collect())
    }

    /// One watch stream frame.
    pub fn watch_frame(v: &Value) -> WatchFrame {
        let r = &v["result"];
        let revision = int(&r["header"]["revision"]);
        if r["canceled"] == Value::Bool(true) {
            return WatchFrame::Canceled {
                compact_revision: int(&r["compact_revision"]),
                reason: r["cancel_reason"].as_str().unwrap_or_default().to_string(),
            };
        }
        if r["created"] == Value::Bool(true) {
            return WatchFrame::Created { revision };
        }
        let events = r["events"].as_array().map_or(&[][..], Vec::as_slice);
        let events = events
            .iter()
            .map(|e| match e["type"].as_str() {
                None | Some("PUT") => Event::Put(kv(&e["kv"])),
                Some("DELETE") => Event::Delete(kv(&e["kv"])),
                Some(other) => panic!("unknown event type {other}"),
            })
            .collect();
        WatchFrame::Events { revision, events }
    }

    /// A gateway error body: its gRPC code and message.
    pub fn error(v: &Value) -> (i32, String) {
        let code = v["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no code in {v}"));
        let message = v["message"].as_str().unwrap_or_default().to_string();
        (code as i32, message)
    }
}
