//! The `security.istio.io` kinds and DestinationRule `tls`: what parses,
//! and Istio's validation with exact field paths.

use super::*;

/// Loads `yaml` and returns the diagnostics as `severity: Display` lines.
fn lines(yaml: &str) -> (ConfigSet, Vec<String>) {
    let (set, diags) = load_str("sec.yaml", yaml);
    let got = diags
        .iter()
        .map(|d| format!("{}: {d}", d.severity))
        .collect();
    (set, got)
}

fn doc(kind: &str, version: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/{version}\nkind: {kind}\nmetadata: {{name: p, namespace: \
         foo}}\nspec:\n{spec}"
    )
}

#[test]
fn the_three_kinds_load_in_both_versions() {
    let text = [
        doc("PeerAuthentication", "v1", "  mtls: {mode: STRICT}\n"),
        doc(
            "PeerAuthentication",
            "v1beta1",
            "  selector: {matchLabels: {app: db}}\n  mtls: {mode: UNSET}\n  portLevelMtls:\n    \
             5432: {mode: DISABLE}\n    \"8080\": {mode: PERMISSIVE}\n",
        )
        .replace("name: p", "name: q"),
        doc(
            "AuthorizationPolicy",
            "v1",
            "  action: DENY\n  rules:\n  - from: [{source: {notNamespaces: [foo], ipBlocks: \
             [10.0.0.0/8, 1.2.3.4], principals: [\"*\"]}}]\n    to: [{operation: {methods: [POST], \
             paths: [\"/admin/*\", \"/v1/{*}/x\"], ports: [8080, \"9090\"]}}]\n    when:\n    - \
             {key: \"request.auth.claims[groups][0]\", values: [a]}\n    - {key: \
             \"request.headers[X-Token]\", notValues: [\"*\"]}\n    - {key: destination.port, \
             values: [443]}\n",
        ),
        doc(
            "RequestAuthentication",
            "v1beta1",
            "  selector: {matchLabels: {app: web}}\n  jwtRules:\n  - issuer: \
             testing@secure.istio.io\n    jwksUri: https://example.com/jwks.json\n    \
             fromHeaders: [{name: X-Jwt, prefix: \"Bearer \"}]\n    outputClaimToHeaders: \
             [{header: X-Sub, claim: sub}]\n    timeout: 2s\n",
        ),
    ]
    .join("---\n");
    let (set, got) = lines(&text);
    assert!(got.is_empty(), "{got:#?}");
    assert_eq!(set.peer_authentications.len(), 2);
    assert_eq!(set.authorization_policies.len(), 1);
    assert_eq!(set.request_authentications.len(), 1);
    let pa = &set.peer_authentications[1].spec;
    let ports: Vec<_> = pa.port_level_mtls.keys().filter_map(|k| k.port()).collect();
    assert_eq!(ports, [5432, 8080]);
    let op = set.authorization_policies[0].spec.rules[0].to[0]
        .operation
        .as_ref()
        .expect("operation");
    assert_eq!(op.ports, ["8080", "9090"]);
    assert_eq!(set.authorization_policies[0].namespace, "foo");
}

#[test]
fn errors_name_their_field() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "PeerAuthentication",
            "  mtls: {mode: STRIC}\n",
            &["error: sec.yaml:5:16: PeerAuthentication foo/p: spec.mtls.mode: unknown variant `STRIC`, expected one of `UNSET`, `DISABLE`, `PERMISSIVE`, `STRICT`"],
        ),
        (
            "PeerAuthentication",
            "  portLevelMtls: {8080: {mode: STRICT}}\n",
            &["error: sec.yaml: PeerAuthentication foo/p: spec.portLevelMtls: a mesh-wide or namespace-wide PeerAuthentication (no selector) cannot have portLevelMtls"],
        ),
        (
            "PeerAuthentication",
            "  selector: {matchLabels: {app: \"*\"}}\n  portLevelMtls: {0: {mode: STRICT}, 8080: {mod: STRICT}}\n",
            &[
                "error: sec.yaml: PeerAuthentication foo/p: spec.portLevelMtls.8080.mod: unknown field 'mod' (did you mean 'mode'?)",
                "error: sec.yaml: PeerAuthentication foo/p: spec.selector.matchLabels.app: wildcard is not supported in selector: app=*",
                "error: sec.yaml: PeerAuthentication foo/p: spec.portLevelMtls.0: port 0 is not a number in 1..=65535",
            ],
        ),
        (
            "AuthorizationPolicy",
            "  targetRef: {kind: Gateway, name: gw}\n  action: DENY\n",
            &[
                "error: sec.yaml: AuthorizationPolicy foo/p: spec.targetRef: unsupported field 'targetRef': anymesh cannot honour it, and ignoring it would apply the rule to traffic it does not select",
                "error: sec.yaml: AuthorizationPolicy foo/p: spec.rules: DENY action without rules is never triggered; add an empty rule {} to deny every request",
            ],
        ),
        (
            "AuthorizationPolicy",
            "  rules:\n  - from: [{source: {ipBlocks: [10.0.0.0/33]}}, {source: {}}, {}]\n    to: [{operation: {ports: [\"http\"], paths: [\"/a/{*}.txt\"]}}]\n    when: [{key: source.ip, values: [banana]}, {key: request.headers, values: [x]}, {key: \"destination.labels[app]\", values: [x]}, {key: source.principal}, {key: sauce.ip, values: [x]}]\n",
            &[
                "error: sec.yaml: AuthorizationPolicy foo/p: spec.rules[0].from[0].source.ipBlocks[0]: bad CIDR range \"10.0.0.0/33\": prefix length must be 0..=32",
                "error: sec.yaml: AuthorizationPolicy foo/p: spec.rules[0].from[1].source: source must set at least one field",
                "error: sec.yaml: AuthorizationPolicy foo/p: spec.rules[0].from[2].source: source is required",
                "error: sec.yaml: AuthorizationPolicy foo/p: spec.rules[0].to[0].operation.ports[0]: bad port \"http\": must be a number in 0..=65535",
                "error: sec.yaml: AuthorizationPolicy foo/p: spec.rules[0].to[0].operation.paths[0]: invalid path template \"/a/{*}.txt\": segment \"{*}.txt\" has characters other than one {*} or {**} operator",
                "error: sec.yaml: AuthorizationPolicy foo/p: spec.rules[0].when[0].values[0]: bad IP address \"banana\"",
                "error: sec.yaml: AuthorizationPolicy foo/p: spec.rules[0].when[1].key: bad key (request.headers): should have format a[b]",
                "error: sec.yaml: AuthorizationPolicy foo/p: spec.rules[0].when[2].key: attribute destination.labels[app] is replaced by the workload selector",
                "error: sec.yaml: AuthorizationPolicy foo/p: spec.rules[0].when[3]: at least one of values or notValues is required for key source.principal",
                "error: sec.yaml: AuthorizationPolicy foo/p: spec.rules[0].when[4].key: unknown attribute: sauce.ip",
            ],
        ),
        (
            "AuthorizationPolicy",
            "  action: CUSTOM\n  provider: {name: ext}\n  rules: [{to: [{operation: {paths: [/admin]}}]}]\n",
            &["warning: sec.yaml: AuthorizationPolicy foo/p: spec.action: CUSTOM (external authorization) is not supported by anymesh: the policy fails closed, every request its rules match is denied"],
        ),
        (
            "AuthorizationPolicy",
            "  provider: {name: ext}\n  rules: [{when: [{key: \"experimental.envoy.filters.a[b]\", values: [x]}]}]\n",
            &[
                "error: sec.yaml: AuthorizationPolicy foo/p: spec.provider: provider is only allowed with action CUSTOM, found Allow",
                "warning: sec.yaml: AuthorizationPolicy foo/p: spec.rules[0].when[0].key: unsupported condition experimental.envoy.filters.a[b]: Envoy filter metadata does not exist in anymesh; an ALLOW or AUDIT rule with it never matches, a DENY rule matches as if it held",
            ],
        ),
        (
            "RequestAuthentication",
            "  jwtRules:\n  - jwksUri: ftp://x\n    fromHeaders: [{prefix: b}]\n  - issuer: a\n    jwks: '{\"nokeys\": 1}'\n    outputClaimToHeaders: [{header: \"bad header\", claim: \"\"}]\n  - issuer: b\n  - issuer: c\n    jwksUri: https://c/jwks\n    jwks: '{\"keys\": []}'\n    timeout: 0s\n",
            &[
                "error: sec.yaml: RequestAuthentication foo/p: spec.jwtRules[0].issuer: issuer is required (anymesh does not accept tokens of any issuer)",
                "error: sec.yaml: RequestAuthentication foo/p: spec.jwtRules[0].jwksUri: URI \"ftp://x\" must be http:// or https://",
                "error: sec.yaml: RequestAuthentication foo/p: spec.jwtRules[0].fromHeaders[0].name: header name is required",
                "error: sec.yaml: RequestAuthentication foo/p: spec.jwtRules[1].jwks: jwks must be a JSON Web Key Set: an object with a \"keys\" array",
                "error: sec.yaml: RequestAuthentication foo/p: spec.jwtRules[1].outputClaimToHeaders[0].header: invalid header name \"bad header\"",
                "error: sec.yaml: RequestAuthentication foo/p: spec.jwtRules[1].outputClaimToHeaders[0].claim: claim is required",
                "error: sec.yaml: RequestAuthentication foo/p: spec.jwtRules[2]: one of jwksUri or jwks is required (OpenID discovery from the issuer is not supported)",
                "warning: sec.yaml: RequestAuthentication foo/p: spec.jwtRules[3].jwks: jwks is ignored: jwksUri is set and is used, as in Istio's default fetch mode",
                "error: sec.yaml: RequestAuthentication foo/p: spec.jwtRules[3].timeout: timeout must be at least 1ms",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (kind, spec, want) in cases {
        let (_, got) = lines(&doc(kind, "v1", spec));
        if got != *want {
            failures.push(format!("{kind}\n{spec}\n  got  {got:#?}\n  want {want:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn wrong_versions_and_duplicates() {
    let (_, got) = lines(&doc(
        "PeerAuthentication",
        "v1alpha3",
        "  mtls: {mode: STRICT}\n",
    ));
    assert_eq!(
        got,
        ["error: sec.yaml: PeerAuthentication foo/p: apiVersion: unsupported apiVersion \"security.istio.io/v1alpha3\" (use security.istio.io/v1 or v1beta1)"]
    );
    let one = doc("AuthorizationPolicy", "v1", "  {}\n");
    let (set, got) = lines(&format!("{one}---\n{one}"));
    assert_eq!(set.authorization_policies.len(), 1);
    assert_eq!(
        got,
        ["error: sec.yaml: AuthorizationPolicy foo/p: metadata.name: duplicate AuthorizationPolicy foo/p: already defined in sec.yaml (document 1)"]
    );
}

fn dr_tls(policy: &str) -> Vec<String> {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: ext}}\n\
         spec:\n  host: ext.example.com\n  trafficPolicy:\n{policy}"
    );
    lines(&text).1
}

#[test]
fn destination_rule_tls_is_checked() {
    let cases: &[(&str, &[&str])] = &[
        ("    tls: {mode: ISTIO_MUTUAL, sni: a.b, subjectAltNames: [spiffe://td/ns/a/sa/b]}\n", &[]),
        (
            "    tls: {mode: SIMPLE, caCertificates: /etc/ca.pem, sni: ext.example.com}\n",
            &[],
        ),
        (
            "    tls: {mode: MUTUAL, caCertificates: /ca.pem}\n",
            &[
                "error: sec.yaml: DestinationRule default/ext: spec.trafficPolicy.tls.clientCertificate: client certificate required for mutual TLS",
                "error: sec.yaml: DestinationRule default/ext: spec.trafficPolicy.tls.privateKey: private key required for mutual TLS",
            ],
        ),
        (
            "    portLevelSettings:\n    - port: {number: 443}\n      tls: {mode: SIMPLE, credentialName: s, caCrl: /crl.pem}\n",
            &[
                "error: sec.yaml: DestinationRule default/ext: spec.trafficPolicy.portLevelSettings[0].tls.credentialName: unsupported field 'credentialName': Kubernetes secrets are not read by anymesh; give clientCertificate, privateKey and caCertificates as files",
                "error: sec.yaml: DestinationRule default/ext: spec.trafficPolicy.portLevelSettings[0].tls.caCrl: unsupported field 'caCrl': anymesh cannot check revocation, and ignoring it would accept revoked certificates",
            ],
        ),
        (
            "    tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem}\n",
            &["error: sec.yaml: DestinationRule default/ext: spec.trafficPolicy.tls: caCertificates and subjectAltNames cannot be set when insecureSkipVerify is true"],
        ),
        (
            "    tls: {mode: ISTIO_MUTUAL, privateKey: /k.pem}\n",
            &["warning: sec.yaml: DestinationRule default/ext: spec.trafficPolicy.tls.privateKey: ignored with ISTIO_MUTUAL: the proxy's mesh identity and trust bundle are used"],
        ),
        (
            "    tls: {mode: MUTUL}\n",
            &["error: sec.yaml:7:17: DestinationRule default/ext: spec.trafficPolicy.tls.mode: unknown variant `MUTUL`, expected one of `DISABLE`, `SIMPLE`, `MUTUAL`, `ISTIO_MUTUAL`"],
        ),
    ];
    let mut failures = Vec::new();
    for (policy, want) in cases {
        let got = dr_tls(policy);
        if got != *want {
            failures.push(format!("{policy}\n  got  {got:#?}\n  want {want:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
