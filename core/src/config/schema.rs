//! Which fields exist, per Istio message, and what anymesh does with them.
//!
//! The parser collects every key serde did not consume (via `serde_ignored`)
//! and [`classify`]s it against this table by walking the key's path:
//!
//! - a field anymesh implements never shows up here (serde consumed it);
//! - [`Field::Unsupported`]: a real Istio field anymesh does not implement;
//!   a *warning*, the rest of the resource applies without it;
//! - [`Field::Narrows`]: a real Istio field that restricts which traffic the
//!   rule applies to (e.g. `match[].sourceLabels`); ignoring it would apply the
//!   rule to traffic it does not select, so it is an *error*;
//! - [`Field::Silent`]: Kubernetes bookkeeping (`metadata.uid`, `status`) with
//!   no routing meaning; accepted without a word;
//! - anything else is a field nobody defines (a typo): an *error*, with a
//!   suggestion when a known field is close.

/// What a field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// Implemented; a scalar, list of scalars or map of scalars.
    Leaf,
    /// Implemented; a nested message.
    Struct(&'static str),
    /// Implemented; a list of messages.
    List(&'static str),
    /// Implemented; a map from any key to a message.
    Map(&'static str),
    Unsupported,
    Narrows,
    Silent,
}

use Field::*;

/// Top-level messages for the kinds anymesh reads.
pub(crate) const VIRTUAL_SERVICE_DOC: &str = "VirtualService document";
pub(crate) const DESTINATION_RULE_DOC: &str = "DestinationRule document";
pub(crate) const PEER_AUTHENTICATION_DOC: &str = "PeerAuthentication document";
pub(crate) const AUTHORIZATION_POLICY_DOC: &str = "AuthorizationPolicy document";
pub(crate) const REQUEST_AUTHENTICATION_DOC: &str = "RequestAuthentication document";
pub(crate) const TELEMETRY_DOC: &str = "Telemetry document";

type Message = (&'static str, &'static [(&'static str, Field)]);

static MESSAGES: &[Message] = &[
    (
        VIRTUAL_SERVICE_DOC,
        &[
            ("apiVersion", Leaf),
            ("kind", Leaf),
            ("metadata", Struct("ObjectMeta")),
            ("spec", Struct("VirtualService")),
            ("status", Silent),
        ],
    ),
    (
        DESTINATION_RULE_DOC,
        &[
            ("apiVersion", Leaf),
            ("kind", Leaf),
            ("metadata", Struct("ObjectMeta")),
            ("spec", Struct("DestinationRule")),
            ("status", Silent),
        ],
    ),
    (
        PEER_AUTHENTICATION_DOC,
        &[
            ("apiVersion", Leaf),
            ("kind", Leaf),
            ("metadata", Struct("ObjectMeta")),
            ("spec", Struct("PeerAuthentication")),
            ("status", Silent),
        ],
    ),
    (
        AUTHORIZATION_POLICY_DOC,
        &[
            ("apiVersion", Leaf),
            ("kind", Leaf),
            ("metadata", Struct("ObjectMeta")),
            ("spec", Struct("AuthorizationPolicy")),
            ("status", Silent),
        ],
    ),
    (
        REQUEST_AUTHENTICATION_DOC,
        &[
            ("apiVersion", Leaf),
            ("kind", Leaf),
            ("metadata", Struct("ObjectMeta")),
            ("spec", Struct("RequestAuthentication")),
            ("status", Silent),
        ],
    ),
    (
        "ObjectMeta",
        &[
            ("name", Leaf),
            ("namespace", Leaf),
            ("labels", Leaf),
            ("annotations", Leaf),
            ("uid", Silent),
            ("resourceVersion", Silent),
            ("generation", Silent),
            ("creationTimestamp", Silent),
            ("deletionTimestamp", Silent),
            ("deletionGracePeriodSeconds", Silent),
            ("managedFields", Silent),
            ("ownerReferences", Silent),
            ("finalizers", Silent),
            ("generateName", Silent),
            ("selfLink", Silent),
        ],
    ),
    (
        "VirtualService",
        &[
            ("hosts", Leaf),
            ("gateways", Leaf),
            ("http", List("HTTPRoute")),
            ("tls", Unsupported),
            ("tcp", Unsupported),
            ("exportTo", Unsupported),
        ],
    ),
    (
        "HTTPRoute",
        &[
            ("name", Leaf),
            ("match", List("HTTPMatchRequest")),
            ("route", List("HTTPRouteDestination")),
            ("redirect", Struct("HTTPRedirect")),
            ("directResponse", Struct("HTTPDirectResponse")),
            ("rewrite", Struct("HTTPRewrite")),
            ("timeout", Leaf),
            ("headers", Struct("Headers")),
            ("retries", Struct("HTTPRetry")),
            ("fault", Struct("HTTPFaultInjection")),
            ("mirror", Struct("Destination")),
            ("mirrors", List("HTTPMirrorPolicy")),
            ("mirrorPercentage", Struct("Percent")),
            ("mirrorPercent", Leaf),
            ("delegate", Unsupported),
            ("corsPolicy", Unsupported),
        ],
    ),
    (
        "HTTPRetry",
        &[
            ("attempts", Leaf),
            ("perTryTimeout", Leaf),
            ("retryOn", Leaf),
            ("retryRemoteLocalities", Leaf),
            ("retryIgnorePreviousHosts", Leaf),
            ("backoff", Leaf),
        ],
    ),
    (
        "HTTPFaultInjection",
        &[
            ("delay", Struct("HTTPFaultInjection.Delay")),
            ("abort", Struct("HTTPFaultInjection.Abort")),
        ],
    ),
    (
        "HTTPFaultInjection.Delay",
        &[
            ("percent", Leaf),
            ("fixedDelay", Leaf),
            ("percentage", Struct("Percent")),
            ("exponentialDelay", Unsupported),
        ],
    ),
    (
        "HTTPFaultInjection.Abort",
        &[
            ("httpStatus", Leaf),
            ("grpcStatus", Leaf),
            ("percentage", Struct("Percent")),
            ("http2Error", Unsupported),
        ],
    ),
    ("Percent", &[("value", Leaf)]),
    (
        "HTTPMirrorPolicy",
        &[
            ("destination", Struct("Destination")),
            ("percentage", Struct("Percent")),
        ],
    ),
    (
        "HTTPMatchRequest",
        &[
            ("name", Leaf),
            ("uri", Struct("StringMatch")),
            ("method", Struct("StringMatch")),
            ("authority", Struct("StringMatch")),
            ("headers", Map("StringMatch")),
            ("queryParams", Map("StringMatch")),
            ("ignoreUriCase", Leaf),
            ("scheme", Narrows),
            ("port", Narrows),
            ("sourceLabels", Narrows),
            ("sourceNamespace", Narrows),
            ("gateways", Narrows),
            ("withoutHeaders", Narrows),
            ("statPrefix", Unsupported),
        ],
    ),
    (
        "StringMatch",
        &[("exact", Leaf), ("prefix", Leaf), ("regex", Leaf)],
    ),
    (
        "HTTPRouteDestination",
        &[
            ("destination", Struct("Destination")),
            ("weight", Leaf),
            ("headers", Struct("Headers")),
        ],
    ),
    (
        "Destination",
        &[
            ("host", Leaf),
            ("subset", Leaf),
            ("port", Struct("PortSelector")),
        ],
    ),
    ("PortSelector", &[("number", Leaf)]),
    (
        "Headers",
        &[
            ("request", Struct("HeaderOperations")),
            ("response", Struct("HeaderOperations")),
        ],
    ),
    (
        "HeaderOperations",
        &[("set", Leaf), ("add", Leaf), ("remove", Leaf)],
    ),
    (
        "HTTPRewrite",
        &[
            ("uri", Leaf),
            ("authority", Leaf),
            ("uriRegexRewrite", Unsupported),
        ],
    ),
    (
        "HTTPRedirect",
        &[
            ("uri", Leaf),
            ("authority", Leaf),
            ("port", Leaf),
            ("scheme", Leaf),
            ("redirectCode", Leaf),
            ("derivePort", Unsupported),
        ],
    ),
    (
        "HTTPDirectResponse",
        &[("status", Leaf), ("body", Struct("HTTPBody"))],
    ),
    ("HTTPBody", &[("string", Leaf), ("bytes", Unsupported)]),
    (
        "DestinationRule",
        &[
            ("host", Leaf),
            ("trafficPolicy", Struct("TrafficPolicy")),
            ("subsets", List("Subset")),
            ("exportTo", Unsupported),
            ("workloadSelector", Narrows),
        ],
    ),
    (
        "Subset",
        &[
            ("name", Leaf),
            ("labels", Leaf),
            ("trafficPolicy", Struct("TrafficPolicy")),
        ],
    ),
    (
        "TrafficPolicy",
        &[
            ("loadBalancer", Struct("LoadBalancerSettings")),
            ("connectionPool", Struct("ConnectionPoolSettings")),
            ("outlierDetection", Struct("OutlierDetection")),
            ("portLevelSettings", List("PortTrafficPolicy")),
            ("retryBudget", Struct("RetryBudget")),
            ("tls", Struct("ClientTLSSettings")),
            ("tunnel", Unsupported),
            ("proxyProtocol", Unsupported),
        ],
    ),
    (
        "PortTrafficPolicy",
        &[
            ("port", Struct("PortSelector")),
            ("loadBalancer", Struct("LoadBalancerSettings")),
            ("connectionPool", Struct("ConnectionPoolSettings")),
            ("outlierDetection", Struct("OutlierDetection")),
            ("tls", Struct("ClientTLSSettings")),
        ],
    ),
    (
        "ClientTLSSettings",
        &[
            ("mode", Leaf),
            ("clientCertificate", Leaf),
            ("privateKey", Leaf),
            ("caCertificates", Leaf),
            ("credentialName", Leaf),
            ("subjectAltNames", Leaf),
            ("sni", Leaf),
            ("insecureSkipVerify", Leaf),
            ("caCrl", Leaf),
        ],
    ),
    (
        "ConnectionPoolSettings",
        &[
            ("tcp", Struct("ConnectionPoolSettings.TCPSettings")),
            ("http", Struct("ConnectionPoolSettings.HTTPSettings")),
        ],
    ),
    (
        "ConnectionPoolSettings.TCPSettings",
        &[
            ("maxConnections", Leaf),
            ("connectTimeout", Leaf),
            ("tcpKeepalive", Struct("TcpKeepalive")),
            ("maxConnectionDuration", Leaf),
            ("idleTimeout", Leaf),
        ],
    ),
    (
        "TcpKeepalive",
        &[("probes", Leaf), ("time", Leaf), ("interval", Leaf)],
    ),
    (
        "ConnectionPoolSettings.HTTPSettings",
        &[
            ("http1MaxPendingRequests", Leaf),
            ("http2MaxRequests", Leaf),
            ("maxRequestsPerConnection", Leaf),
            ("maxRetries", Leaf),
            ("idleTimeout", Leaf),
            ("maxConcurrentStreams", Leaf),
            ("h2UpgradePolicy", Unsupported),
            ("useClientProtocol", Unsupported),
            ("http2KeepAlive", Unsupported),
        ],
    ),
    (
        "OutlierDetection",
        &[
            ("consecutiveErrors", Leaf),
            ("splitExternalLocalOriginErrors", Leaf),
            ("consecutiveLocalOriginFailures", Leaf),
            ("consecutiveGatewayErrors", Leaf),
            ("consecutive5xxErrors", Leaf),
            ("interval", Leaf),
            ("baseEjectionTime", Leaf),
            ("maxEjectionPercent", Leaf),
            ("minHealthPercent", Leaf),
            ("outlierDetectionHttpErrorCodes", Unsupported),
        ],
    ),
    (
        "RetryBudget",
        &[
            ("percent", Leaf),
            ("minRetryConcurrency", Leaf),
            ("budgetInterval", Unsupported),
        ],
    ),
    (
        "LoadBalancerSettings",
        &[
            ("simple", Leaf),
            ("consistentHash", Struct("ConsistentHashLB")),
            ("localityLbSetting", Struct("LocalityLoadBalancerSetting")),
            ("zoneAwareLbSetting", Unsupported),
            ("warmupDurationSecs", Unsupported),
            ("warmup", Unsupported),
        ],
    ),
    (
        "ConsistentHashLB",
        &[
            ("httpHeaderName", Leaf),
            ("httpCookie", Struct("HTTPCookie")),
            ("useSourceIp", Leaf),
            ("httpQueryParameterName", Leaf),
            ("ringHash", Struct("RingHash")),
            ("maglev", Struct("MagLev")),
            ("minimumRingSize", Leaf),
        ],
    ),
    (
        "HTTPCookie",
        &[
            ("name", Leaf),
            ("path", Leaf),
            ("ttl", Leaf),
            ("attributes", Unsupported),
        ],
    ),
    (
        "LocalityLoadBalancerSetting",
        &[
            ("distribute", List("LocalityLoadBalancerSetting.Distribute")),
            ("failover", List("LocalityLoadBalancerSetting.Failover")),
            ("failoverPriority", Leaf),
            ("enabled", Leaf),
        ],
    ),
    (
        "LocalityLoadBalancerSetting.Distribute",
        &[("from", Leaf), ("to", Leaf)],
    ),
    (
        "LocalityLoadBalancerSetting.Failover",
        &[("from", Leaf), ("to", Leaf)],
    ),
    ("RingHash", &[("minimumRingSize", Leaf)]),
    ("WorkloadSelector", &[("matchLabels", Leaf)]),
    (
        "PeerAuthentication",
        &[
            ("selector", Struct("WorkloadSelector")),
            ("mtls", Struct("PeerAuthentication.MutualTLS")),
            ("portLevelMtls", Map("PeerAuthentication.MutualTLS")),
        ],
    ),
    ("PeerAuthentication.MutualTLS", &[("mode", Leaf)]),
    (
        "AuthorizationPolicy",
        &[
            ("selector", Struct("WorkloadSelector")),
            ("targetRef", Narrows),
            ("targetRefs", Narrows),
            ("action", Leaf),
            ("provider", Struct("AuthorizationPolicy.ExtensionProvider")),
            ("rules", List("Rule")),
        ],
    ),
    ("AuthorizationPolicy.ExtensionProvider", &[("name", Leaf)]),
    (
        "Rule",
        &[
            ("from", List("Rule.From")),
            ("to", List("Rule.To")),
            ("when", List("Condition")),
        ],
    ),
    ("Rule.From", &[("source", Struct("Source"))]),
    ("Rule.To", &[("operation", Struct("Operation"))]),
    (
        "Source",
        &[
            ("principals", Leaf),
            ("notPrincipals", Leaf),
            ("requestPrincipals", Leaf),
            ("notRequestPrincipals", Leaf),
            ("namespaces", Leaf),
            ("notNamespaces", Leaf),
            ("serviceAccounts", Leaf),
            ("notServiceAccounts", Leaf),
            ("trustDomains", Leaf),
            ("notTrustDomains", Leaf),
            ("ipBlocks", Leaf),
            ("notIpBlocks", Leaf),
            ("remoteIpBlocks", Leaf),
            ("notRemoteIpBlocks", Leaf),
        ],
    ),
    (
        "Operation",
        &[
            ("hosts", Leaf),
            ("notHosts", Leaf),
            ("ports", Leaf),
            ("notPorts", Leaf),
            ("methods", Leaf),
            ("notMethods", Leaf),
            ("paths", Leaf),
            ("notPaths", Leaf),
        ],
    ),
    (
        "Condition",
        &[("key", Leaf), ("values", Leaf), ("notValues", Leaf)],
    ),
    (
        "RequestAuthentication",
        &[
            ("selector", Struct("WorkloadSelector")),
            ("targetRef", Narrows),
            ("targetRefs", Narrows),
            ("jwtRules", List("JWTRule")),
        ],
    ),
    (
        "JWTRule",
        &[
            ("issuer", Leaf),
            ("audiences", Leaf),
            ("jwksUri", Leaf),
            ("jwks", Leaf),
            ("fromHeaders", List("JWTHeader")),
            ("fromParams", Leaf),
            ("fromCookies", Leaf),
            ("outputPayloadToHeader", Leaf),
            ("outputClaimToHeaders", List("ClaimToHeader")),
            ("forwardOriginalToken", Leaf),
            ("timeout", Leaf),
            ("spaceDelimitedClaims", Unsupported),
        ],
    ),
    ("JWTHeader", &[("name", Leaf), ("prefix", Leaf)]),
    ("ClaimToHeader", &[("header", Leaf), ("claim", Leaf)]),
    ("MagLev", &[("tableSize", Leaf)]),
    (
        TELEMETRY_DOC,
        &[
            ("apiVersion", Leaf),
            ("kind", Leaf),
            ("metadata", Struct("ObjectMeta")),
            ("spec", Struct("Telemetry")),
            ("status", Silent),
        ],
    ),
    (
        "Telemetry",
        &[
            ("selector", Struct("WorkloadSelector")),
            ("targetRef", Narrows),
            ("targetRefs", Narrows),
            ("metrics", List("Metrics")),
            ("tracing", List("Tracing")),
            ("accessLogging", List("AccessLogging")),
        ],
    ),
    ("ProviderRef", &[("name", Leaf)]),
    (
        "Metrics",
        &[
            ("providers", List("ProviderRef")),
            ("overrides", List("MetricsOverrides")),
            ("reportingInterval", Unsupported),
        ],
    ),
    (
        "MetricsOverrides",
        &[
            ("match", Struct("MetricSelector")),
            ("disabled", Leaf),
            ("tagOverrides", Map("MetricsOverrides.TagOverride")),
        ],
    ),
    (
        "MetricSelector",
        &[("metric", Leaf), ("customMetric", Leaf), ("mode", Leaf)],
    ),
    (
        "MetricsOverrides.TagOverride",
        &[("operation", Leaf), ("value", Leaf)],
    ),
    (
        "Tracing",
        &[
            ("match", Struct("Tracing.TracingSelector")),
            ("providers", List("ProviderRef")),
            ("randomSamplingPercentage", Leaf),
            ("disableSpanReporting", Leaf),
            ("customTags", Map("Tracing.CustomTag")),
            ("useRequestIdForTraceSampling", Unsupported),
            ("enableIstioTags", Unsupported),
        ],
    ),
    ("Tracing.TracingSelector", &[("mode", Leaf)]),
    (
        "Tracing.CustomTag",
        &[
            ("literal", Struct("Tracing.Literal")),
            ("environment", Struct("Tracing.Environment")),
            ("header", Struct("Tracing.RequestHeader")),
        ],
    ),
    ("Tracing.Literal", &[("value", Leaf)]),
    (
        "Tracing.Environment",
        &[("name", Leaf), ("defaultValue", Leaf)],
    ),
    (
        "Tracing.RequestHeader",
        &[("name", Leaf), ("defaultValue", Leaf)],
    ),
    (
        "AccessLogging",
        &[
            ("match", Struct("AccessLogging.LogSelector")),
            ("providers", List("ProviderRef")),
            ("disabled", Leaf),
            ("filter", Struct("AccessLogging.Filter")),
        ],
    ),
    ("AccessLogging.LogSelector", &[("mode", Leaf)]),
    ("AccessLogging.Filter", &[("expression", Leaf)]),
];

fn fields(message: &str) -> &'static [(&'static str, Field)] {
    MESSAGES
        .iter()
        .find(|(name, _)| *name == message)
        .map_or(&[], |(_, f)| *f)
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Renders a path as people write it: `spec.http[0].route`.
pub(crate) fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Converts a `serde_ignored` path into segments (option and newtype layers vanish).
pub(crate) fn segments(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    fn walk(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
        use serde_ignored::Path as P;
        match path {
            P::Root => {}
            P::Seq { parent, index } => {
                walk(parent, out);
                out.push(Seg::Index(*index));
            }
            P::Map { parent, key } => {
                walk(parent, out);
                out.push(Seg::Key(key.clone()));
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                walk(parent, out)
            }
        }
    }
    let mut out = Vec::new();
    walk(path, &mut out);
    out
}

/// What to do about a key serde did not consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unused {
    Silent,
    Unsupported,
    Narrows,
    Unknown { suggestion: Option<&'static str> },
}

/// Classifies the unused key at the end of `path`, starting from message `root`.
pub(crate) fn classify(root: &'static str, path: &[Seg]) -> Unused {
    #[derive(Clone, Copy)]
    enum At {
        Message(&'static str),
        Element(&'static str),
        Entry(&'static str),
        Lost,
    }
    let Some((Seg::Key(last), parents)) = path.split_last() else {
        return Unused::Unknown { suggestion: None };
    };
    let mut at = At::Message(root);
    for seg in parents {
        at = match (at, seg) {
            (At::Message(m), Seg::Key(k)) => match fields(m).iter().find(|(n, _)| n == k) {
                Some((_, Struct(s))) => At::Message(s),
                Some((_, List(s))) => At::Element(s),
                Some((_, Map(s))) => At::Entry(s),
                _ => At::Lost,
            },
            (At::Element(s), Seg::Index(_)) | (At::Entry(s), Seg::Key(_)) => At::Message(s),
            _ => At::Lost,
        };
    }
    let At::Message(message) = at else {
        return Unused::Unknown { suggestion: None };
    };
    let known = fields(message);
    match known.iter().find(|(n, _)| n == last) {
        Some((_, Unsupported)) => Unused::Unsupported,
        Some((_, Narrows)) => Unused::Narrows,
        Some((_, Silent)) => Unused::Silent,
        // A supported field that serde still did not consume cannot happen;
        // treat it like an unknown one rather than dropping it.
        _ => Unused::Unknown {
            suggestion: suggest(last, known),
        },
    }
}

/// The known field closest to a misspelt one, if any is close enough.
fn suggest(typo: &str, known: &[(&'static str, Field)]) -> Option<&'static str> {
    let norm = |s: &str| s.replace(['_', '-'], "").to_ascii_lowercase();
    let typo_n = norm(typo);
    known
        .iter()
        .filter(|(_, f)| *f != Silent)
        .map(|(name, _)| (edit_distance(&typo_n, &norm(name)), *name))
        .filter(|(d, name)| *d <= 1 + name.len() / 4)
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<Seg> {
        s.split('.')
            .map(|k| match k.parse() {
                Ok(i) => Seg::Index(i),
                Err(_) => Seg::Key(k.to_string()),
            })
            .collect()
    }

    #[test]
    fn classifies_by_context() {
        let vs = VIRTUAL_SERVICE_DOC;
        assert_eq!(
            classify(vs, &p("spec.http.0.corsPolicy")),
            Unused::Unsupported
        );
        assert_eq!(
            classify(vs, &p("spec.http.0.fault.delay.exponentialDelay")),
            Unused::Unsupported
        );
        assert_eq!(
            classify(vs, &p("spec.http.0.retries.retryon")),
            Unused::Unknown {
                suggestion: Some("retryOn")
            }
        );
        assert_eq!(
            classify(vs, &p("spec.http.0.match.1.sourceLabels")),
            Unused::Narrows
        );
        // `port` is an Istio field of a match block, not of a route.
        assert_eq!(
            classify(vs, &p("spec.http.0.port")),
            Unused::Unknown { suggestion: None }
        );
        assert_eq!(
            classify(vs, &p("spec.http.0.rout")),
            Unused::Unknown {
                suggestion: Some("route")
            }
        );
        assert_eq!(
            classify(vs, &p("spec.http.0.match.0.headers.x-user.exct")),
            Unused::Unknown {
                suggestion: Some("exact")
            }
        );
        assert_eq!(classify(vs, &p("metadata.uid")), Unused::Silent);
        let dr = DESTINATION_RULE_DOC;
        assert_eq!(
            classify(dr, &p("spec.subsets.0.trafficPolicy.tunnel")),
            Unused::Unsupported
        );
        assert_eq!(
            classify(dr, &p("spec.trafficPolicy.portLevelSettings.0.tls.sn")),
            Unused::Unknown {
                suggestion: Some("sni")
            }
        );
        let ap = AUTHORIZATION_POLICY_DOC;
        assert_eq!(classify(ap, &p("spec.targetRef")), Unused::Narrows);
        assert_eq!(
            classify(ap, &p("spec.rules.0.from.1.source.principal")),
            Unused::Unknown {
                suggestion: Some("principals")
            }
        );
        assert_eq!(
            classify(
                PEER_AUTHENTICATION_DOC,
                &[
                    Seg::Key("spec".into()),
                    Seg::Key("portLevelMtls".into()),
                    Seg::Key("8080".into()),
                    Seg::Key("mod".into())
                ]
            ),
            Unused::Unknown {
                suggestion: Some("mode")
            }
        );
        assert_eq!(
            classify(
                dr,
                &p("spec.trafficPolicy.portLevelSettings.0.connectionPool.http.h2UpgradePolicy")
            ),
            Unused::Unsupported
        );
        assert_eq!(
            classify(
                dr,
                &p("spec.trafficPolicy.loadBalancer.consistentHash.http_cookie")
            ),
            Unused::Unknown {
                suggestion: Some("httpCookie")
            }
        );
    }

    #[test]
    fn renders_paths() {
        assert_eq!(
            render(&p("spec.http.1.route.0.weight")),
            "spec.http[1].route[0].weight"
        );
    }
}
