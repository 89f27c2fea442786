//! The fake's JSON, in the shapes of `fixtures/eureka`.

use serde_json::{json, Value};

use super::{obj, ActionType, FakeInstance, Shape, State};

fn instance(i: &FakeInstance, action: ActionType, shape: Shape) -> Value {
    let legacy = shape == Shape::Legacy;
    let port = |n: u16, enabled: bool| {
        let n = if legacy {
            json!(n.to_string())
        } else {
            json!(n)
        };
        json!({"$": n, "@enabled": enabled.to_string()})
    };
    let ts = i.registration_timestamp;
    let metadata = if i.metadata.is_empty() {
        json!({"@class": "java.util.Collections$EmptyMap"})
    } else {
        json!(i.metadata)
    };
    let base = format!("http://{}:{}", i.host_name, i.port);
    let mut v = obj([
        ("instanceId", json!(i.instance_id)),
        ("hostName", json!(i.host_name)),
        ("app", json!(i.app)),
        ("ipAddr", json!(i.ip_addr)),
        ("status", json!(i.status)),
        ("port", port(i.port, i.port_enabled)),
        ("securePort", port(i.secure_port, i.secure_port_enabled)),
        ("countryId", json!(1)),
        (
            "dataCenterInfo",
            json!({"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"}),
        ),
        (
            "leaseInfo",
            json!({"renewalIntervalInSecs": 30, "durationInSecs": 90, "registrationTimestamp": ts,
                   "lastRenewalTimestamp": ts, "evictionTimestamp": 0, "serviceUpTimestamp": ts}),
        ),
        ("metadata", metadata),
        ("homePageUrl", json!(format!("{base}/"))),
        ("statusPageUrl", json!(format!("{base}/actuator/info"))),
        ("healthCheckUrl", json!(format!("{base}/actuator/health"))),
        ("vipAddress", json!(i.vip_address)),
        ("secureVipAddress", json!(i.secure_vip_address)),
        ("actionType", json!(action.as_str())),
    ]);
    if let Value::Object(m) = &mut v {
        if legacy {
            m.insert("overriddenstatus".into(), json!(i.overridden_status));
            m.insert("isCoordinatingDiscoveryServer".into(), json!(false));
            m.insert("lastUpdatedTimestamp".into(), json!(ts));
            m.insert("lastDirtyTimestamp".into(), json!(ts));
        } else {
            m.insert("overriddenStatus".into(), json!(i.overridden_status));
            m.insert("isCoordinatingDiscoveryServer".into(), json!("false"));
            m.insert("lastUpdatedTimestamp".into(), json!(ts.to_string()));
            m.insert("lastDirtyTimestamp".into(), json!(ts.to_string()));
        }
    }
    v
}

/// An application; the legacy codec writes a lone instance as an object.
fn application(name: &str, instances: Vec<Value>, shape: Shape) -> Value {
    let instances = match (shape, instances.len()) {
        (Shape::Legacy, 1) => instances.into_iter().next().unwrap_or(Value::Null),
        _ => Value::Array(instances),
    };
    json!({"name": name, "instance": instances})
}

fn applications(s: &State, apps: Vec<Value>) -> Value {
    let version = match s.shape {
        Shape::Modern => json!(s.version.to_string()),
        Shape::Legacy => json!(s.version),
    };
    json!({"applications": {
        "versions__delta": version,
        "apps__hashcode": s.hashcode(),
        "application": apps,
    }})
}

/// `GET /apps`.
pub(super) fn full(s: &State) -> Value {
    let apps = s
        .apps
        .iter()
        .map(|(name, insts)| {
            let insts = insts
                .values()
                .map(|i| instance(i, ActionType::Added, s.shape))
                .collect();
            application(name, insts, s.shape)
        })
        .collect();
    applications(s, apps)
}

/// `GET /apps/delta`: the queued changes, grouped by application in order.
pub(super) fn delta(s: &State) -> Value {
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for q in &s.queue {
        let v = instance(&q.instance, q.action, s.shape);
        match groups.iter_mut().find(|(name, _)| *name == q.instance.app) {
            Some((_, insts)) => insts.push(v),
            None => groups.push((q.instance.app.clone(), vec![v])),
        }
    }
    let apps = groups
        .into_iter()
        .map(|(name, insts)| application(&name, insts, s.shape))
        .collect();
    applications(s, apps)
}

/// `GET /apps/{APP}`.
pub(super) fn one_app(s: &State, app: &str) -> Option<Value> {
    let name = app.to_ascii_uppercase();
    let insts = s.apps.get(&name)?;
    let insts = insts
        .values()
        .map(|i| instance(i, ActionType::Added, s.shape))
        .collect();
    Some(json!({"application": application(&name, insts, s.shape)}))
}

/// The body of `POST /apps/{APP}`: `{"instance": {...}}`.
pub(super) fn parse_instance(app: &str, body: &Value) -> Result<FakeInstance, String> {
    let i = body.get("instance").ok_or("no `instance` in the body")?;
    let text = |k: &str| match i.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let port = |k: &str| -> Result<Option<(u16, bool)>, String> {
        let Some(p) = i.get(k) else { return Ok(None) };
        let n = match &p["$"] {
            Value::String(s) => s.parse::<u16>().map_err(|e| format!("{k}: {e}"))?,
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or(format!("{k}: not a port"))?,
            _ => return Err(format!("{k}: no `$`")),
        };
        let enabled = !matches!(&p["@enabled"], Value::String(s) if s == "false")
            && p["@enabled"] != Value::Bool(false);
        Ok(Some((n, enabled)))
    };
    let host = text("hostName").ok_or("no hostName")?;
    let id = text("instanceId").unwrap_or_else(|| host.clone());
    let ip = text("ipAddr").ok_or("no ipAddr")?;
    let (p, p_on) = port("port")?.unwrap_or((7001, true));
    let mut inst = FakeInstance::new(app, &id, &ip, p);
    inst.host_name = host;
    inst.port_enabled = p_on;
    if let Some((n, on)) = port("securePort")? {
        inst.secure_port = n;
        inst.secure_port_enabled = on;
    }
    if let Some(s) = text("status") {
        inst.status = s;
    }
    if let Some(v) = text("vipAddress") {
        inst.vip_address = v;
    }
    if let Some(v) = text("secureVipAddress") {
        inst.secure_vip_address = v;
    }
    if let Some(Value::Object(m)) = i.get("metadata") {
        for (k, v) in m {
            if let (false, Value::String(v)) = (k.starts_with('@'), v) {
                inst.metadata.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(inst)
}
