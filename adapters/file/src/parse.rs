//! Reading and validating a registry file: [`parse`] and [`load`].
//!
//! Parsing is two steps. serde_yaml_ng deserialises the text into the
//! [`schema`] types, which reject wrong types, unknown keys and bad single
//! values with the line and column. [`build`] then checks what needs context
//! (declared port names, duplicate names and ids) and maps to the core model;
//! the position of anything it rejects is found with [`mod@locate`].

mod depth;
mod locate;
mod schema;

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;

use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
use anymesh_core::{
    Endpoint, EndpointPort, Hostname, Labels, Locality, Protocol, Provenance, Service, ServicePort,
    SourceId, SourceView,
};

use crate::error::{FileError, Position};
use depth::{too_deep, MAX_FLOW_DEPTH};
use locate::{locate, FieldPath};
use schema::{FileDoc, RawEndpoint, RawPort, RawService};

/// Files larger than this are rejected rather than read (16 MiB).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The name of the port a service gets when it declares none.
const DEFAULT_PORT_NAME: &str = "http";

/// Reads and parses the registry file at `path`.
///
/// Errors name `path` as given. A missing or unreadable file is
/// [`FileError::Read`]; see [`parse`] for the rest.
pub fn load(path: &Path, source: &SourceId) -> Result<SourceView, FileError> {
    let read_err = |source| FileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    // Reading a FIFO or device could block forever or never end.
    if !file.metadata().map_err(read_err)?.is_file() {
        return Err(read_err(io::Error::other("not a regular file")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_BYTES,
        });
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let prefix = std::str::from_utf8(valid).unwrap_or_default();
            return Err(FileError::Syntax {
                path: path.to_path_buf(),
                at: Position::after(prefix),
                message: "not valid UTF-8".into(),
            });
        }
    };
    parse(path, &text, source)
}

/// Parses the text of a registry file into the view it declares.
///
/// `path_for_messages` only names the file in errors. Every endpoint's
/// [`Provenance`] carries `source`, its native id and its labels.
pub fn parse(
    path_for_messages: &Path,
    text: &str,
    source: &SourceId,
) -> Result<SourceView, FileError> {
    if let Some(i) = too_deep(text) {
        return Err(FileError::Syntax {
            path: path_for_messages.to_path_buf(),
            at: Position::after(&text[..i]),
            message: format!("`[` and `{{` nested more than {MAX_FLOW_DEPTH} deep"),
        });
    }
    let doc: FileDoc =
        serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path_for_messages, text, &e))?;
    build(doc, source).map_err(|(path, message)| FileError::Invalid {
        path: path_for_messages.to_path_buf(),
        at: locate(text, &path),
        message: format!("{path}: {message}"),
    })
}

/// Classifies a serde_yaml_ng error: a syntax error if the text is not YAML
/// at all, else a shape or value error.
fn yaml_error(path: &Path, text: &str, err: &serde_yaml_ng::Error) -> FileError {
    // Deserialising can stop at a type error before reaching a syntax error
    // further on; report the syntax error, which is what needs fixing first.
    if let Err(syntax) = serde_yaml_ng::from_str::<serde::de::IgnoredAny>(text) {
        return match split_location(&syntax) {
            (Some(at), message) => FileError::Syntax {
                path: path.to_path_buf(),
                at,
                message,
            },
            (None, message) => FileError::Invalid {
                path: path.to_path_buf(),
                at: None,
                message,
            },
        };
    }
    let (at, mut message) = split_location(err);
    if let Ok(serde_yaml_ng::Value::Null) = serde_yaml_ng::from_str(text) {
        message = "the file is empty; write `services: []` to declare no services".into();
    }
    FileError::Invalid {
        path: path.to_path_buf(),
        at,
        message,
    }
}

/// The error's position, and its message without the `at line L column C`
/// serde_yaml_ng puts in it.
fn split_location(err: &serde_yaml_ng::Error) -> (Option<Position>, String) {
    let mut message = err.to_string();
    let Some(l) = err.location() else {
        return (None, message);
    };
    for suffix in [
        format!(" at line {} column {}", l.line(), l.column()),
        format!(" at position {}", l.index()),
    ] {
        if let Some(i) = message.find(&suffix) {
            message.replace_range(i..i + suffix.len(), "");
            break;
        }
    }
    let at = Position {
        line: l.line(),
        column: l.column(),
    };
    (Some(at), message)
}

/// A problem found after deserialisation: where, and what.
type Problem = (FieldPath, String);

/// Checks what needs context and maps the file to the core model.
fn build(doc: FileDoc, source: &SourceId) -> Result<SourceView, Problem> {
    let root = FieldPath::default().key("services");
    let mut view = SourceView::default();
    // Every hostname (name or alias) and endpoint id, with where it was first seen.
    let mut hosts: HashMap<Hostname, FieldPath> = HashMap::new();
    let mut ids: HashMap<String, FieldPath> = HashMap::new();
    for (i, raw) in doc.services.into_iter().enumerate() {
        let at = root.index(i);
        claim_hosts(&raw, &at, &mut hosts)?;
        let ports = service_ports(&raw, &at)?;
        for (j, ep) in raw.endpoints.into_iter().enumerate() {
            let ep_at = at.key("endpoints").index(j);
            let endpoint = build_endpoint(&raw.name.0, &ports, ep, &ep_at, source, &mut ids)?;
            view.endpoints.push(endpoint);
        }
        view.services.push(Service {
            hostname: raw.name.0,
            aliases: raw.aliases.into_iter().map(|a| a.0).collect(),
            ports,
        });
    }
    Ok(view)
}

/// Records the service's name and aliases, rejecting any used before.
fn claim_hosts(
    raw: &RawService,
    at: &FieldPath,
    hosts: &mut HashMap<Hostname, FieldPath>,
) -> Result<(), Problem> {
    let names = std::iter::once((&raw.name.0, at.key("name"))).chain(
        raw.aliases
            .iter()
            .enumerate()
            .map(|(k, a)| (&a.0, at.key("aliases").index(k))),
    );
    for (host, path) in names {
        if let Some(first) = hosts.get(host) {
            return Err((
                path,
                format!("hostname `{host}` is already used by {first}"),
            ));
        }
        hosts.insert(host.clone(), path);
    }
    Ok(())
}

/// The service's declared ports, or the default single `http` port on the
/// first endpoint's port number.
fn service_ports(raw: &RawService, at: &FieldPath) -> Result<Vec<ServicePort>, Problem> {
    let Some(declared) = &raw.ports else {
        let first = raw
            .endpoints
            .first()
            .and_then(|ep| match (&ep.port, &ep.ports) {
                (Some(p), None) => Some(p.0),
                (None, Some(map)) => map.get(DEFAULT_PORT_NAME).map(|p| p.0),
                _ => None,
            });
        return Ok(first
            .map(|number| ServicePort {
                name: DEFAULT_PORT_NAME.into(),
                number,
                protocol: Protocol::Http,
            })
            .into_iter()
            .collect());
    };
    let at = at.key("ports");
    if declared.is_empty() {
        return Err((
            at,
            "must declare at least one port (leave `ports` out for the default)".into(),
        ));
    }
    let mut ports: Vec<ServicePort> = Vec::with_capacity(declared.len());
    for (
        k,
        RawPort {
            name,
            port,
            protocol,
        },
    ) in declared.iter().enumerate()
    {
        let at = at.index(k);
        if name.is_empty() {
            return Err((at.key("name"), "must not be empty".into()));
        }
        if let Some(q) = ports.iter().position(|p| p.name == *name) {
            return Err((
                at.key("name"),
                format!("duplicate port name `{name}` (also ports[{q}])"),
            ));
        }
        if let Some(q) = ports.iter().position(|p| p.number == port.0) {
            return Err((
                at.key("port"),
                format!("duplicate port number {} (also ports[{q}])", port.0),
            ));
        }
        ports.push(ServicePort {
            name: name.clone(),
            number: port.0,
            protocol: *protocol,
        });
    }
    Ok(ports)
}

/// Checks one endpoint against its service's ports and the ids seen so far.
fn build_endpoint(
    service: &Hostname,
    service_ports: &[ServicePort],
    raw: RawEndpoint,
    at: &FieldPath,
    source: &SourceId,
    ids: &mut HashMap<String, FieldPath>,
) -> Result<Endpoint, Problem> {
    let ports = match (raw.port, raw.ports) {
        (Some(_), Some(_)) => {
            return Err((at.clone(), "has both `port` and `ports`; use one".into()));
        }
        (None, None) => return Err((at.clone(), "needs `port` or `ports`".into())),
        (Some(p), None) => vec![EndpointPort {
            name: String::new(),
            number: p.0,
        }],
        (None, Some(map)) => {
            if map.0.is_empty() {
                return Err((at.key("ports"), "must name at least one port".into()));
            }
            if let Some((name, _)) = map
                .0
                .iter()
                .find(|(name, _)| !service_ports.iter().any(|sp| sp.name == *name))
            {
                let declared: Vec<&str> = service_ports.iter().map(|p| p.name.as_str()).collect();
                let declared = match declared.is_empty() {
                    true => format!("only the default `{DEFAULT_PORT_NAME}`"),
                    false => declared.join(", "),
                };
                return Err((
                    at.key("ports").name(name),
                    format!("service `{service}` declares no port named `{name}` (declared: {declared})"),
                ));
            }
            // In the service's port order, so the default id is predictable.
            service_ports
                .iter()
                .filter_map(|sp| {
                    map.get(&sp.name).map(|n| EndpointPort {
                        name: sp.name.clone(),
                        number: n.0,
                    })
                })
                .collect()
        }
    };
    let labels: Labels = raw.labels.0.into_iter().map(|(k, v)| (k, v.0)).collect();
    let mut endpoint = Endpoint {
        service: service.clone(),
        address: raw.address.0,
        ports,
        labels: labels.clone(),
        health: raw.health,
        weight: raw.weight.map_or(1, |w| w.0),
        locality: Locality {
            region: raw.locality.region,
            zone: raw.locality.zone,
            subzone: raw.locality.subzone,
        },
        mesh: raw.mesh.map(|m| MeshProxy {
            port: m.port.map_or(DEFAULT_MESH_PORT, |p| p.0),
            namespace: m.namespace.map(|n| n.0),
            service_account: m.service_account.map(|n| n.0),
            spiffe_id: m.spiffe_id.map(|id| id.0),
        }),
        provenance: Provenance {
            source: source.clone(),
            native_id: String::new(),
            raw_labels: labels,
        },
    };
    let (id, id_at, how) = match raw.id {
        Some(id) if id.is_empty() => return Err((at.key("id"), "must not be empty".into())),
        Some(id) => (id, at.key("id"), ""),
        None => {
            let port = endpoint.ports.first().map_or(0, |p| p.number);
            let id = format!("{service}/{}", endpoint.authority(port));
            (
                id,
                at.clone(),
                " (the default id; set `id` to tell them apart)",
            )
        }
    };
    if let Some(first) = ids.get(&id) {
        return Err((
            id_at,
            format!("duplicate endpoint id `{id}`, also used by {first}{how}"),
        ));
    }
    ids.insert(id.clone(), at.clone());
    endpoint.provenance.native_id = id;
    Ok(endpoint)
}

#[cfg(test)]
mod tests;
