//! Registry documents into [`Applications`], whichever shape the server
//! emits.
//!
//! Eureka servers write the same data in several ways: `application` and
//! `instance` as one object or as an array (the old XStream/Jettison codec
//! writes a lone instance as an object), numbers as JSON numbers or as
//! strings (`"$":"7101"` before Eureka 1.2.2, `"$":7101` after), the
//! overridden status as `overriddenStatus` or `overriddenstatus`, empty
//! metadata as `{"@class":"java.util.Collections$EmptyMap"}`. Everything is
//! read through lenient accessors over a JSON tree, so each of these decodes;
//! XML bodies are first turned into the same tree (see [`crate::xml`]).

use anymesh_core::Labels;
use serde::Deserialize;
use serde_json::{Map, Value};

/// An instance status (`InstanceInfo.InstanceStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub enum Status {
    #[serde(rename = "UP")]
    Up,
    #[serde(rename = "DOWN")]
    Down,
    #[serde(rename = "STARTING")]
    Starting,
    #[serde(rename = "OUT_OF_SERVICE")]
    OutOfService,
    #[serde(rename = "UNKNOWN")]
    Unknown,
}

impl Status {
    /// Parses a status as Eureka's `InstanceStatus.toEnum` does: case
    /// insensitive, anything else is `UNKNOWN`.
    pub fn parse(s: &str) -> Status {
        match s.trim().to_ascii_uppercase().as_str() {
            "UP" => Status::Up,
            "DOWN" => Status::Down,
            "STARTING" => Status::Starting,
            "OUT_OF_SERVICE" => Status::OutOfService,
            _ => Status::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "UP",
            Status::Down => "DOWN",
            Status::Starting => "STARTING",
            Status::OutOfService => "OUT_OF_SERVICE",
            Status::Unknown => "UNKNOWN",
        }
    }
}

/// What a delta says happened to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Added,
    Modified,
    Deleted,
}

/// `port` or `securePort`: `{"$": 8080, "@enabled": "true"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// The number as written (a string or a number); checked when used.
    pub number: String,
    pub enabled: bool,
}

impl PortInfo {
    /// The port number, or why it is not one.
    pub fn number(&self) -> Result<u16, String> {
        match self.number.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("port {:?} is not a port number", self.number)),
            Ok(n) => Ok(n),
        }
    }
}

/// `dataCenterInfo`: `MyOwn`, or `Amazon` with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataCenter {
    /// `@class` (`com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo`).
    pub class: Option<String>,
    pub name: Option<String>,
    /// Amazon's metadata (`availability-zone`, `instance-id`, ...).
    pub metadata: Labels,
}

/// `leaseInfo`, in seconds and epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lease {
    pub renewal_interval_secs: Option<i64>,
    pub duration_secs: Option<i64>,
    pub registration_timestamp: Option<i64>,
    pub last_renewal_timestamp: Option<i64>,
    pub eviction_timestamp: Option<i64>,
    pub service_up_timestamp: Option<i64>,
}

/// One instance of one application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The application's name as the registry writes it (`TESTENG.LSM`).
    pub app: String,
    /// `instanceId`, else Amazon's `instance-id`, else `hostName` (as
    /// Netflix's `InstanceInfo.getId`).
    pub id: String,
    pub host_name: Option<String>,
    pub ip_addr: Option<String>,
    pub status: Status,
    /// `overriddenStatus` (or the legacy `overriddenstatus`); `UNKNOWN` and
    /// absent both mean "not overridden".
    pub overridden_status: Option<Status>,
    pub port: PortInfo,
    pub secure_port: PortInfo,
    /// `metadata` without the `@class` marker of an empty map.
    pub metadata: Labels,
    pub vip_address: Option<String>,
    pub secure_vip_address: Option<String>,
    pub data_center: Option<DataCenter>,
    pub lease: Option<Lease>,
    /// Set in deltas (and, as `ADDED`, in full fetches).
    pub action: Option<Action>,
}

impl Instance {
    /// The status that decides eligibility: the overridden status when one
    /// is set (not `UNKNOWN`), else `status`.
    pub fn effective_status(&self) -> Status {
        match self.overridden_status {
            Some(s) if s != Status::Unknown => s,
            _ => self.status,
        }
    }

    /// The registry-wide key: `<APP>/<id>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.app, self.id)
    }
}

/// A decoded `/apps`, `/apps/delta` or `/apps/<APP>` document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applications {
    /// `versions__delta`, as written.
    pub version_delta: Option<String>,
    /// `apps__hashcode`: the server's reconcile hashcode of its whole registry.
    pub hashcode: Option<String>,
    pub instances: Vec<Instance>,
    /// Instances that could not be read at all, with why (`application X
    /// instance #2: ...`). Other instances are unaffected.
    pub problems: Vec<String>,
}

/// Decodes a registry document. `content_type` picks XML when it says so
/// (or the body starts with `<`); JSON otherwise. Fails only when the body
/// as a whole is not a registry document.
pub fn decode_applications(
    body: &[u8],
    content_type: Option<&str>,
) -> Result<Applications, String> {
    let is_xml = content_type.is_some_and(|t| t.contains("xml"))
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<');
    let root: Value = if is_xml {
        crate::xml::to_value(body)?
    } else {
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?
    };
    let Some(obj) = root.as_object() else {
        return Err("the document is not an object".into());
    };
    if let Some(apps) = obj.get("applications") {
        let empty = Map::new();
        let apps = match apps {
            Value::Object(m) => m,
            // `<applications/>` in XML, or null.
            Value::String(s) if s.trim().is_empty() => &empty,
            Value::Null => &empty,
            other => return Err(format!("`applications` is not an object: {}", short(other))),
        };
        let mut out = Applications {
            version_delta: apps.get("versions__delta").and_then(text),
            hashcode: apps.get("apps__hashcode").and_then(text),
            ..Applications::default()
        };
        for app in one_or_many(apps.get("application")) {
            read_application(app, &mut out);
        }
        Ok(out)
    } else if let Some(app) = obj.get("application") {
        let mut out = Applications::default();
        read_application(app, &mut out);
        Ok(out)
    } else {
        Err("neither `applications` nor `application` at the top level".into())
    }
}

fn read_application(app: &Value, out: &mut Applications) {
    let name = app.get("name").and_then(text).unwrap_or_default();
    for (i, inst) in one_or_many(app.get("instance")).into_iter().enumerate() {
        match read_instance(&name, inst) {
            Ok(instance) => out.instances.push(instance),
            Err(e) => {
                let name = if name.is_empty() { "(no name)" } else { &name };
                out.problems
                    .push(format!("application {name} instance #{}: {e}", i + 1));
            }
        }
    }
}

fn read_instance(app_name: &str, v: &Value) -> Result<Instance, String> {
    let Some(o) = v.as_object() else {
        return Err(format!("not an object: {}", short(v)));
    };
    let get = |k: &str| o.get(k).and_then(text).filter(|s| !s.is_empty());
    let app = match app_name {
        "" => get("app").ok_or("no application name")?,
        n => n.to_string(),
    };
    let data_center = o.get("dataCenterInfo").map(data_center);
    let amazon_id = data_center
        .as_ref()
        .and_then(|d| d.metadata.get("instance-id").cloned());
    let host_name = get("hostName");
    let id = get("instanceId")
        .or(amazon_id)
        .or_else(|| host_name.clone())
        .ok_or("no instanceId and no hostName")?;
    // Both casings exist (Netflix/eureka#1051); when a document carries
    // both, the current name `overriddenStatus` wins.
    let overridden = get("overriddenStatus")
        .or_else(|| get("overriddenstatus"))
        .map(|s| Status::parse(&s));
    Ok(Instance {
        app,
        id,
        host_name,
        ip_addr: get("ipAddr"),
        status: get("status").map_or(Status::Unknown, |s| Status::parse(&s)),
        overridden_status: overridden,
        port: port(o.get("port"), "7001", true),
        secure_port: port(o.get("securePort"), "7002", false),
        metadata: o.get("metadata").map(labels).unwrap_or_default(),
        vip_address: get("vipAddress"),
        secure_vip_address: get("secureVipAddress"),
        data_center,
        lease: o.get("leaseInfo").map(lease),
        action: get("actionType").and_then(|a| match a.to_ascii_uppercase().as_str() {
            "ADDED" => Some(Action::Added),
            "MODIFIED" => Some(Action::Modified),
            "DELETED" => Some(Action::Deleted),
            _ => None,
        }),
    })
}

/// A port object, a bare number, or absent (Netflix's defaults: 7001
/// enabled, 7002 disabled). Without `@enabled`, `port` counts as enabled
/// and `securePort` as disabled (as Eureka's XML converter reads them).
fn port(v: Option<&Value>, default_number: &str, default_enabled: bool) -> PortInfo {
    match v {
        Some(Value::Object(o)) => PortInfo {
            number: o
                .get("$")
                .and_then(text)
                .unwrap_or_else(|| default_number.into()),
            enabled: o
                .get("@enabled")
                .and_then(truthy)
                .unwrap_or(default_enabled),
        },
        Some(v) => PortInfo {
            number: text(v).unwrap_or_else(|| default_number.into()),
            enabled: default_enabled,
        },
        None => PortInfo {
            number: default_number.into(),
            enabled: default_enabled,
        },
    }
}

fn data_center(v: &Value) -> DataCenter {
    DataCenter {
        class: v.get("@class").and_then(text),
        name: v.get("name").and_then(text),
        metadata: v.get("metadata").map(labels).unwrap_or_default(),
    }
}

fn lease(v: &Value) -> Lease {
    let n = |k: &str| v.get(k).and_then(int);
    Lease {
        renewal_interval_secs: n("renewalIntervalInSecs"),
        duration_secs: n("durationInSecs"),
        registration_timestamp: n("registrationTimestamp"),
        last_renewal_timestamp: n("lastRenewalTimestamp").or_else(|| n("renewalTimestamp")),
        eviction_timestamp: n("evictionTimestamp"),
        service_up_timestamp: n("serviceUpTimestamp"),
    }
}

/// A metadata map as labels: `@class` dropped, scalars as text, anything
/// else as compact JSON.
fn labels(v: &Value) -> Labels {
    let Some(o) = v.as_object() else {
        return Labels::new();
    };
    o.iter()
        .filter(|(k, _)| !k.starts_with('@'))
        .map(|(k, v)| (k.clone(), text(v).unwrap_or_else(|| v.to_string())))
        .collect()
}

/// A scalar as text: strings as they are, numbers and booleans written out.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn truthy(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// An array's items, a lone object as one item, nothing for absent, null
/// or an empty XML element.
fn one_or_many(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(o @ Value::Object(_)) => vec![o],
        _ => Vec::new(),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests;
