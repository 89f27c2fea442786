//! The JSON the fake agent answers, in the shapes of the captured payloads
//! in `fixtures/consul` (PascalCase keys, tagged addresses
//! capitalised as the agent writes them, node checks included).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::{Instance, NodeRec, ServiceRec, State};

fn in_dc<'a>(s: &'a State, dc: &'a str) -> impl Iterator<Item = (&'a ServiceRec, &'a NodeRec)> {
    s.services.values().filter_map(move |r| {
        let node = s.nodes.get(&r.inst.node)?;
        (node.datacenter == dc).then_some((r, node))
    })
}

pub(super) fn catalog_services(s: &State, dc: &str) -> Value {
    let mut out: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (r, _) in in_dc(s, dc) {
        out.entry(&r.inst.service)
            .or_default()
            .extend(r.inst.tags.iter().map(String::as_str));
    }
    json!(out)
}

fn check(
    node: &str,
    id: &str,
    name: &str,
    status: &str,
    notes: &str,
    svc: Option<&Instance>,
    idx: u64,
) -> Value {
    json!({
        "Node": node,
        "CheckID": id,
        "Name": name,
        "Status": status,
        "Notes": notes,
        "Output": "",
        "ServiceID": svc.map_or("", |i| i.id.as_str()),
        "ServiceName": svc.map_or("", |i| i.service.as_str()),
        "ServiceTags": svc.map_or(Vec::new(), |i| i.tags.clone()),
        "Type": "",
        "Namespace": "default",
        "CreateIndex": idx,
        "ModifyIndex": idx,
    })
}

fn checks(r: &ServiceRec, node: &NodeRec) -> Vec<Value> {
    let i = &r.inst;
    let mut out = Vec::new();
    if let Some(reason) = &node.maintenance {
        out.push(check(
            &i.node,
            "_node_maintenance",
            "Node Maintenance Mode",
            "critical",
            reason,
            None,
            node.modify,
        ));
    }
    out.push(check(
        &i.node,
        "serfHealth",
        "Serf Health Status",
        &node.serf,
        "",
        None,
        node.create,
    ));
    if let Some(reason) = &r.maintenance {
        out.push(check(
            &i.node,
            &format!("_service_maintenance:{}", i.id),
            "Service Maintenance Mode",
            "critical",
            reason,
            Some(i),
            r.modify,
        ));
    }
    if let Some(status) = &i.check {
        out.push(check(
            &i.node,
            &format!("service:{}", i.id),
            &format!("Service '{}' check", i.service),
            status,
            "",
            Some(i),
            r.modify,
        ));
    }
    out
}

fn worst(checks: &[Value]) -> &str {
    let rank = |s: &str| match s {
        "passing" => 0,
        "warning" => 1,
        _ => 2,
    };
    checks
        .iter()
        .filter_map(|c| c["Status"].as_str())
        .max_by_key(|s| rank(s))
        .unwrap_or("passing")
}

fn tagged(i: &Instance) -> Value {
    let m: BTreeMap<&str, Value> = i
        .tagged_addresses
        .iter()
        .map(|(k, (a, p))| (k.as_str(), json!({"Address": a, "Port": p})))
        .collect();
    json!(m)
}

/// A proxy's `Proxy` object as the agent writes it (the docs' sample).
fn proxy(i: &Instance) -> Value {
    match &i.proxy {
        None => json!({}),
        Some(p) => json!({
            "DestinationServiceName": p.service,
            "DestinationServiceID": p.id,
            "LocalServiceAddress": p.local_address,
            "LocalServicePort": p.local_port,
            "Mode": "",
            "Config": null,
            "Upstreams": null,
        }),
    }
}

pub(super) fn health_service(s: &State, dc: &str, name: &str, passing_only: bool) -> Value {
    let mut out = Vec::new();
    for (r, node) in in_dc(s, dc).filter(|(r, _)| r.inst.service == name) {
        let i = &r.inst;
        let checks = checks(r, node);
        if passing_only && worst(&checks) != "passing" {
            continue;
        }
        let mut service = json!({
                "ID": i.id,
                "Service": i.service,
                "Tags": i.tags,
                "Address": i.address,
                "TaggedAddresses": tagged(i),
                "Meta": i.meta,
                "Port": i.port,
                "Weights": {"Passing": 1, "Warning": 1},
                "EnableTagOverride": false,
                "Namespace": "default",
                "Datacenter": node.datacenter,
                "Proxy": proxy(i),
                "Connect": {},
                "CreateIndex": r.create,
                "ModifyIndex": r.modify,
        });
        // `Kind` is left out for a typical service (`omitempty`).
        if !i.kind.is_empty() {
            service["Kind"] = json!(i.kind);
        }
        out.push(json!({
            "Node": {
                "ID": "",
                "Node": i.node,
                "Address": node.address,
                "Datacenter": node.datacenter,
                "TaggedAddresses": {"lan": node.address, "wan": node.address},
                "Meta": node.meta,
                "CreateIndex": node.create,
                "ModifyIndex": node.modify,
            },
            "Service": service,
            "Checks": checks,
        }));
    }
    Value::Array(out)
}

pub(super) fn catalog_service(s: &State, dc: &str, name: &str) -> Value {
    let out: Vec<Value> = in_dc(s, dc)
        .filter(|(r, _)| r.inst.service == name)
        .map(|(r, node)| {
            let i = &r.inst;
            json!({
                "ID": "",
                "Node": i.node,
                "Address": node.address,
                "Datacenter": node.datacenter,
                "TaggedAddresses": {"lan": node.address, "wan": node.address},
                "NodeMeta": node.meta,
                "CreateIndex": r.create,
                "ModifyIndex": r.modify,
                "ServiceAddress": i.address,
                "ServiceEnableTagOverride": false,
                "ServiceID": i.id,
                "ServiceName": i.service,
                "ServicePort": i.port,
                "ServiceMeta": i.meta,
                "ServiceTaggedAddresses": tagged(i),
                "ServiceTags": i.tags,
                "ServiceKind": i.kind,
                "ServiceProxy": match &i.proxy {
                    None => json!({
                        "DestinationServiceName": "",
                        "DestinationServiceID": "",
                        "LocalServiceAddress": "",
                        "LocalServicePort": 0,
                        "Config": null,
                        "Upstreams": null,
                    }),
                    Some(_) => proxy(i),
                },
                "ServiceConnect": {"Native": false, "Proxy": null},
                "Namespace": "default",
            })
        })
        .collect();
    Value::Array(out)
}
