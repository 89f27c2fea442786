//! The checks of the security resources (and of DestinationRule `tls`)
//! that need only the resource itself, as Istio's validation makes them,
//! each at its field path.

use std::collections::BTreeMap;

use http::HeaderName;

use super::{
    AuthorizationAction, AuthorizationPolicy, Condition, JwtRuleSpec, Operation,
    PeerAuthentication, RequestAuthentication, Source, WorkloadSelector,
};
use crate::config::destination_rule::{ClientTlsSettings, TlsMode};
use crate::config::diagnostic::Findings;
use crate::security::{Cidr, PathPattern, WhenKey};

pub(crate) fn peer_authentication(
    pa: &PeerAuthentication,
    _annotations: &BTreeMap<String, String>,
    f: &mut Findings,
) {
    selector(pa.selector.as_ref(), f);
    if !pa.port_level_mtls.is_empty() && !pa.has_selector() {
        f.error(
            "spec.portLevelMtls",
            "a mesh-wide or namespace-wide PeerAuthentication (no selector) cannot have \
             portLevelMtls",
        );
    }
    for key in pa.port_level_mtls.keys() {
        if key.port().is_none() {
            f.error(
                format!("spec.portLevelMtls.{key}"),
                format!("port {key} is not a number in 1..=65535"),
            );
        }
    }
}

fn selector(s: Option<&WorkloadSelector>, f: &mut Findings) {
    workload_selector(s, "the policy", f);
}

/// Checks a `spec.selector` of a resource (`what`, as the warning names
/// it): labels given, no empty key, no wildcard.
pub(crate) fn workload_selector(s: Option<&WorkloadSelector>, what: &str, f: &mut Findings) {
    let Some(s) = s else { return };
    if s.match_labels.is_empty() {
        f.warning(
            "spec.selector",
            format!("selector without labels: {what} applies to every workload in its namespace"),
        );
    }
    for (k, v) in &s.match_labels {
        let at = format!("spec.selector.matchLabels.{k}");
        if k.is_empty() {
            f.error(&at, "empty label key");
        }
        if k.contains('*') || v.contains('*') {
            f.error(
                &at,
                format!("wildcard is not supported in selector: {k}={v}"),
            );
        }
    }
}

pub(crate) fn authorization_policy(
    ap: &AuthorizationPolicy,
    _annotations: &BTreeMap<String, String>,
    f: &mut Findings,
) {
    selector(ap.selector.as_ref(), f);
    match ap.action {
        AuthorizationAction::Custom => {
            if ap.rules.is_empty() {
                f.error(
                    "spec.rules",
                    "CUSTOM action without rules is never triggered; add an empty rule {} to \
                     trigger it for every request",
                );
            }
            if ap.provider.as_ref().is_none_or(|p| p.name.is_empty()) {
                f.error(
                    "spec.provider.name",
                    "provider.name is required with CUSTOM",
                );
            }
            f.warning(
                "spec.action",
                "CUSTOM (external authorization) is not supported by anymesh: the policy fails \
                 closed, every request its rules match is denied",
            );
        }
        action => {
            if ap.provider.is_some() {
                f.error(
                    "spec.provider",
                    format!("provider is only allowed with action CUSTOM, found {action:?}"),
                );
            }
            if action == AuthorizationAction::Deny && ap.rules.is_empty() {
                f.error(
                    "spec.rules",
                    "DENY action without rules is never triggered; add an empty rule {} to deny \
                     every request",
                );
            }
        }
    }
    for (i, rule) in ap.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        for (j, from) in rule.from.iter().enumerate() {
            let at = format!("{at}.from[{j}].source");
            match &from.source {
                None => f.error(&at, "source is required"),
                Some(s) => source(s, &at, f),
            }
        }
        for (j, to) in rule.to.iter().enumerate() {
            let at = format!("{at}.to[{j}].operation");
            match &to.operation {
                None => f.error(&at, "operation is required"),
                Some(o) => operation(o, &at, f),
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            condition(c, &format!("{at}.when[{j}]"), f);
        }
        if ap.action == AuthorizationAction::Deny && http_only_deny(rule) {
            f.warning(
                &at,
                "this DENY rule uses only HTTP attributes, so on plain TCP it denies every \
                 connection to the workloads it applies to (as in Istio); name the ports to \
                 limit it",
            );
        }
    }
}

/// Istio's check: a DENY rule whose `from` has no TCP attribute (and no
/// `to`), or whose `to` has no ports.
fn http_only_deny(rule: &super::AuthorizationRule) -> bool {
    let tcp_from = rule.from.iter().filter_map(|f| f.source.as_ref()).any(|s| {
        [
            &s.principals,
            &s.not_principals,
            &s.namespaces,
            &s.not_namespaces,
            &s.ip_blocks,
            &s.not_ip_blocks,
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
            &s.service_accounts,
            &s.not_service_accounts,
        ]
        .iter()
        .any(|v| !v.is_empty())
    });
    let tcp_to = rule
        .to
        .iter()
        .filter_map(|t| t.operation.as_ref())
        .any(|o| !o.ports.is_empty() || !o.not_ports.is_empty());
    let from = rule.from.iter().any(|f| f.source.is_some());
    let to = rule.to.iter().any(|t| t.operation.is_some());
    (from && !to && !tcp_from) || (to && !tcp_to)
}

fn non_empty(field: &str, values: &[String], at: &str, f: &mut Findings) {
    for (k, v) in values.iter().enumerate() {
        if v.is_empty() {
            f.error(format!("{at}.{field}[{k}]"), "empty value");
        }
    }
}

fn ips(field: &str, values: &[String], at: &str, f: &mut Findings) {
    for (k, v) in values.iter().enumerate() {
        if let Err(why) = Cidr::parse(v) {
            f.error(format!("{at}.{field}[{k}]"), why);
        }
    }
}

fn ports(field: &str, values: &[String], at: &str, f: &mut Findings) {
    for (k, v) in values.iter().enumerate() {
        if v.parse::<u16>().is_err() || !v.bytes().all(|b| b.is_ascii_digit()) {
            f.error(
                format!("{at}.{field}[{k}]"),
                format!("bad port {v:?}: must be a number in 0..=65535"),
            );
        }
    }
}

fn service_accounts(field: &str, values: &[String], at: &str, f: &mut Findings) {
    if values.len() > 16 {
        f.error(format!("{at}.{field}"), "may not have more than 16 values");
    }
    for (k, v) in values.iter().enumerate() {
        let at = format!("{at}.{field}[{k}]");
        let why = if v.contains('*') {
            "wildcards are not allowed"
        } else if v.len() > 320 {
            "longer than 320 characters"
        } else {
            match v.split_once('/') {
                _ if v.is_empty() => "empty value",
                Some((ns, sa)) if ns.is_empty() || sa.is_empty() || sa.contains('/') => {
                    "expected 'serviceAccount' or 'namespace/serviceAccount'"
                }
                _ => continue,
            }
        };
        f.error(at, format!("{why}: {v:?}"));
    }
}

fn trust_domains(field: &str, values: &[String], at: &str, f: &mut Findings) {
    for (k, v) in values.iter().enumerate() {
        let at = format!("{at}.{field}[{k}]");
        let stars = v.matches('*').count();
        if v.is_empty() {
            f.error(at, "empty value");
        } else if stars > 1 {
            f.error(at, format!("at most one wildcard is allowed: {v:?}"));
        } else if stars == 1 && !v.starts_with('*') && !v.ends_with('*') {
            f.error(
                at,
                format!("a wildcard is only allowed at the start or end: {v:?}"),
            );
        } else if v.contains('/') {
            f.error(at, format!("a trust domain must not contain '/': {v:?}"));
        }
    }
}

fn source(s: &Source, at: &str, f: &mut Findings) {
    let lists = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ];
    let accounts = [
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
    ];
    let domains = [
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ];
    if lists
        .iter()
        .chain(&accounts)
        .chain(&domains)
        .all(|(_, v)| v.is_empty())
    {
        f.error(at, "source must set at least one field");
    }
    let by_identity = [
        &s.principals,
        &s.not_principals,
        &s.namespaces,
        &s.not_namespaces,
    ];
    if by_identity.iter().any(|v| !v.is_empty()) && accounts.iter().any(|(_, v)| !v.is_empty()) {
        f.error(
            at,
            "serviceAccounts cannot be combined with namespaces or principals",
        );
    }
    for (field, values) in lists {
        non_empty(field, values, at, f);
    }
    for (field, values) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        ips(field, values, at, f);
    }
    for (field, values) in accounts {
        service_accounts(field, values, at, f);
    }
    for (field, values) in domains {
        trust_domains(field, values, at, f);
    }
}

fn operation(o: &Operation, at: &str, f: &mut Findings) {
    let lists = [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("ports", &o.ports),
        ("notPorts", &o.not_ports),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ];
    if lists.iter().all(|(_, v)| v.is_empty()) {
        f.error(at, "operation must set at least one field");
    }
    for (field, values) in lists {
        non_empty(field, values, at, f);
    }
    ports("ports", &o.ports, at, f);
    ports("notPorts", &o.not_ports, at, f);
    for (field, values) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
        for (k, p) in values.iter().enumerate() {
            if let Err(why) = PathPattern::parse(p) {
                f.error(format!("{at}.{field}[{k}]"), why);
            }
        }
    }
}

fn condition(c: &Condition, at: &str, f: &mut Findings) {
    if c.key.is_empty() {
        return f.error(format!("{at}.key"), "key is required");
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        return f.error(
            at,
            format!(
                "at least one of values or notValues is required for key {}",
                c.key
            ),
        );
    }
    let key = match WhenKey::parse(&c.key) {
        Ok(k) => k,
        Err(why) => return f.error(format!("{at}.key"), why),
    };
    for (field, values) in [("values", &c.values), ("notValues", &c.not_values)] {
        non_empty(field, values, at, f);
        match key {
            WhenKey::SourceIp | WhenKey::RemoteIp | WhenKey::DestinationIp => {
                ips(field, values, at, f)
            }
            WhenKey::DestinationPort => ports(field, values, at, f),
            WhenKey::SourceServiceAccount => service_accounts(field, values, at, f),
            WhenKey::SourceTrustDomain => trust_domains(field, values, at, f),
            _ => {}
        }
    }
    if key == WhenKey::Experimental {
        f.warning(
            format!("{at}.key"),
            format!(
                "unsupported condition {}: Envoy filter metadata does not exist in anymesh; an \
                 ALLOW or AUDIT rule with it never matches, a DENY rule matches as if it held",
                c.key
            ),
        );
    }
}

pub(crate) fn request_authentication(
    ra: &RequestAuthentication,
    _annotations: &BTreeMap<String, String>,
    f: &mut Findings,
) {
    selector(ra.selector.as_ref(), f);
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        jwt_rule(rule, &format!("spec.jwtRules[{i}]"), f);
    }
}

fn header_name(name: &str, at: &str, f: &mut Findings) {
    if name.is_empty() {
        f.error(at, "header name is required");
    } else if HeaderName::from_bytes(name.as_bytes()).is_err() {
        f.error(at, format!("invalid header name {name:?}"));
    }
}

fn jwt_rule(r: &JwtRuleSpec, at: &str, f: &mut Findings) {
    if r.issuer.is_empty() {
        f.error(
            format!("{at}.issuer"),
            "issuer is required (anymesh does not accept tokens of any issuer)",
        );
    }
    non_empty("audiences", &r.audiences, at, f);
    match (r.jwks_uri.is_empty(), r.jwks.is_empty()) {
        (true, true) => f.error(
            at,
            "one of jwksUri or jwks is required (OpenID discovery from the issuer is not \
             supported)",
        ),
        (false, false) => f.warning(
            format!("{at}.jwks"),
            "jwks is ignored: jwksUri is set and is used, as in Istio's default fetch mode",
        ),
        _ => {}
    }
    if !r.jwks_uri.is_empty() {
        let rest = r
            .jwks_uri
            .strip_prefix("https://")
            .or_else(|| r.jwks_uri.strip_prefix("http://"));
        match rest {
            None => f.error(
                format!("{at}.jwksUri"),
                format!("URI {:?} must be http:// or https://", r.jwks_uri),
            ),
            Some(rest) if rest.split(['/', '?', '#']).next().is_none_or(str::is_empty) => f.error(
                format!("{at}.jwksUri"),
                format!("URI {:?} has no host", r.jwks_uri),
            ),
            Some(_) => {}
        }
    }
    if !r.jwks.is_empty() {
        let doc: Result<serde_json::Value, _> = serde_json::from_str(&r.jwks);
        match doc {
            Err(e) => f.error(format!("{at}.jwks"), format!("jwks parse error: {e}")),
            Ok(v) if !v.get("keys").is_some_and(serde_json::Value::is_array) => f.error(
                format!("{at}.jwks"),
                "jwks must be a JSON Web Key Set: an object with a \"keys\" array",
            ),
            Ok(_) => {}
        }
    }
    for (k, h) in r.from_headers.iter().enumerate() {
        header_name(&h.name, &format!("{at}.fromHeaders[{k}].name"), f);
    }
    non_empty("fromParams", &r.from_params, at, f);
    non_empty("fromCookies", &r.from_cookies, at, f);
    if !r.output_payload_to_header.is_empty() {
        header_name(
            &r.output_payload_to_header,
            &format!("{at}.outputPayloadToHeader"),
            f,
        );
    }
    for (k, c) in r.output_claim_to_headers.iter().enumerate() {
        let at = format!("{at}.outputClaimToHeaders[{k}]");
        header_name(&c.header, &format!("{at}.header"), f);
        if c.claim.is_empty() {
            f.error(format!("{at}.claim"), "claim is required");
        }
    }
    if let Some(t) = r.timeout {
        if t.0 < std::time::Duration::from_millis(1) {
            f.error(format!("{at}.timeout"), "timeout must be at least 1ms");
        }
    }
}

/// DestinationRule `tls` at `at` (a traffic policy's or a port's).
pub(crate) fn client_tls(t: &ClientTlsSettings, at: &str, f: &mut Findings) {
    if !t.credential_name.is_empty() {
        f.error(
            format!("{at}.credentialName"),
            "unsupported field 'credentialName': Kubernetes secrets are not read by anymesh; \
             give clientCertificate, privateKey and caCertificates as files",
        );
    }
    if !t.ca_crl.is_empty() {
        f.error(
            format!("{at}.caCrl"),
            "unsupported field 'caCrl': anymesh cannot check revocation, and ignoring it would \
             accept revoked certificates",
        );
    }
    let skip = t.insecure_skip_verify == Some(true);
    let verifies = !t.ca_certificates.is_empty() || !t.subject_alt_names.is_empty();
    if skip && verifies && matches!(t.mode, TlsMode::Simple | TlsMode::Mutual) {
        f.error(
            at,
            "caCertificates and subjectAltNames cannot be set when insecureSkipVerify is true",
        );
    }
    match t.mode {
        TlsMode::Mutual if t.credential_name.is_empty() => {
            if t.client_certificate.is_empty() {
                f.error(
                    format!("{at}.clientCertificate"),
                    "client certificate required for mutual TLS",
                );
            }
            if t.private_key.is_empty() {
                f.error(
                    format!("{at}.privateKey"),
                    "private key required for mutual TLS",
                );
            }
        }
        TlsMode::IstioMutual => {
            for (field, set) in [
                ("clientCertificate", !t.client_certificate.is_empty()),
                ("privateKey", !t.private_key.is_empty()),
                ("caCertificates", !t.ca_certificates.is_empty()),
                ("insecureSkipVerify", t.insecure_skip_verify.is_some()),
            ] {
                if set {
                    f.warning(
                        format!("{at}.{field}"),
                        "ignored with ISTIO_MUTUAL: the proxy's mesh identity and trust bundle \
                         are used",
                    );
                }
            }
        }
        _ => {}
    }
}
