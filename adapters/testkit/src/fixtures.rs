//! Loaders for the captured registry payloads in `adapters/testkit/fixtures`
//! (their origins are in its `README.md`), the check that each one is decoded
//! by a test, and a reader for etcd's JSON gateway format.

use std::path::PathBuf;

use serde_json::Value;

/// The registries with captured payloads: one directory of [`dir`] each.
pub const REGISTRIES: &[&str] = &["consul", "etcd", "eureka", "kubernetes", "marathon"];

/// The fixtures directory, inside this crate: a clone alone has them.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The bytes of `rel` (e.g. `etcd/range_prefix_with_slash.json`).
pub fn read(rel: &str) -> Vec<u8> {
    let path = dir().join(rel);
    match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => panic!("fixture {} is missing ({e})", path.display()),
    }
}

/// The names of the files in `registry`'s directory, sorted.
pub fn files(registry: &str) -> Vec<String> {
    let path = dir().join(registry);
    let entries = match std::fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(e) => panic!("fixture directory {} is missing ({e})", path.display()),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Fails the calling test if a file of `registry`'s fixtures is named in none
/// of `test_sources`: the text of the test files that decode them
/// (`include_str!`), so a new capture cannot slip in without a test that
/// reads it. A name counts where it appears whole, extension included.
pub fn assert_each_named(registry: &str, test_sources: &[&str]) {
    let missing: Vec<String> = files(registry)
        .into_iter()
        .filter(|f| !test_sources.iter().any(|src| src.contains(f.as_str())))
        .collect();
    assert!(
        missing.is_empty(),
        "{registry} fixtures without a decoding test: {missing:?}"
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each registry directory is in [`REGISTRIES`] (whose adapters check
    /// their files with [`assert_each_named`]), and nothing else is there.
    #[test]
    fn the_directory_holds_the_known_registries_and_the_readme() {
        let mut found = files(".");
        found.retain(|f| f != "README.md" && f != ".gitattributes");
        assert_eq!(found, REGISTRIES);
        for r in REGISTRIES {
            assert!(!files(r).is_empty(), "{r}: no fixtures");
        }
    }

    #[test]
    fn a_file_named_nowhere_fails_the_check() {
        let all = files("consul").join(" ");
        assert_each_named("consul", &[&all]);
        let without_one = all.replacen("catalog_services_docs.json", "", 1);
        let failed = std::panic::catch_unwind(|| assert_each_named("consul", &[&without_one]));
        assert!(failed.is_err());
    }
}
