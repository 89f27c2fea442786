use std::path::Path;
use std::time::Duration;

use anymesh_core::routes::RetryBudget;
use anymesh_proxy::health::{CheckKind, HttpCheck};

use crate::settings::Settings;

fn parse(text: &str) -> anyhow::Result<Settings> {
    Settings::parse(Path::new("m.yaml"), text)
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_when_the_keys_are_absent() {
    let s = parse("").unwrap();
    assert!(s.health_checks.is_empty());
    assert_eq!(s.max_concurrent_probes, 32);
    assert_eq!(s.locality, anymesh_core::Locality::default());
    assert_eq!(
        s.retry_budget,
        RetryBudget::Rate {
            ratio: 0.2,
            window: Duration::from_secs(10),
            min_per_second: 10
        }
    );
    assert!(!s.mirror_shadow_suffix);
}

#[test]
fn a_health_check_with_its_defaults() {
    let s = parse("health_checks:\n  - {service: Reviews, http: {path: /healthz}}\n").unwrap();
    let checks = s.active_health_checks();
    assert_eq!(checks.len(), 1);
    let c = &checks[0];
    assert_eq!(c.service, "reviews", "normalised as hostnames are");
    assert_eq!((c.subset.as_deref(), c.port), (None, None));
    assert_eq!(c.kind, CheckKind::Http(HttpCheck::new("/healthz")));
    assert_eq!(c.interval, Duration::from_secs(10));
    assert_eq!(c.timeout, Duration::from_secs(1));
    assert_eq!((c.unhealthy_threshold, c.healthy_threshold), (3, 2));
    assert_eq!(c.jitter, Duration::from_secs(1), "10% of the interval");
}

#[test]
fn every_field_of_a_health_check() {
    let yaml = r#"
health_checks:
  - service: reviews.shop
    subset: v2
    port: 9080
    http: {path: /h, expected_statuses: [200, 204-206, '300'], host: health.local}
    interval: 5s
    timeout: 500ms
    unhealthy_threshold: 1
    healthy_threshold: 4
    jitter: 250ms
  - {service: db, tcp: {}, jitter: 50%}
  - {service: pay, grpc: {service: payments.v1}}
  - {service: ledger, tcp: }
  - {service: ledger2, grpc: }
max_concurrent_probes: 4
"#;
    let s = parse(yaml).unwrap();
    assert_eq!(s.max_concurrent_probes, 4);
    let c = s.active_health_checks();
    assert_eq!(c[0].subset.as_deref(), Some("v2"));
    assert_eq!(c[0].port, Some(9080));
    assert_eq!(
        c[0].kind,
        CheckKind::Http(HttpCheck {
            path: "/h".into(),
            expected_statuses: vec![200..=200, 204..=206, 300..=300],
            host: Some("health.local".into()),
        })
    );
    assert_eq!(c[0].interval, Duration::from_secs(5));
    assert_eq!(c[0].timeout, Duration::from_millis(500));
    assert_eq!((c[0].unhealthy_threshold, c[0].healthy_threshold), (1, 4));
    assert_eq!(c[0].jitter, Duration::from_millis(250));
    assert_eq!(c[1].kind, CheckKind::Tcp);
    assert_eq!(c[1].jitter, Duration::from_secs(5));
    assert_eq!(
        c[2].kind,
        CheckKind::Grpc {
            service: "payments.v1".into()
        }
    );
    assert_eq!(c[3].kind, CheckKind::Tcp, "a bare `tcp:` counts");
    assert_eq!(
        c[4].kind,
        CheckKind::Grpc {
            service: String::new()
        }
    );
}

#[test]
fn bad_health_checks_are_refused_with_the_field_path() {
    let cases = [
        (
            "- {service: a}",
            "health_checks[0]: exactly one of http, tcp, grpc",
        ),
        (
            "- {service: a, tcp: {}, http: {}}",
            "health_checks[0]: exactly one",
        ),
        (
            "- {service: a, tcp: {}}\n- {service: 'b c', tcp: {}}",
            "health_checks[1].service: invalid hostname",
        ),
        (
            "- {service: a, tcp: {}, timeout: 10s}",
            "health_checks[0].timeout: must be more than 0 and less than interval (10s)",
        ),
        (
            "- {service: a, tcp: {}, interval: 0s}",
            "health_checks[0].interval",
        ),
        (
            "- {service: a, tcp: {}, interval: 5 parsecs}",
            "health_checks[0].interval",
        ),
        (
            "- {service: a, tcp: {}, unhealthy_threshold: 0}",
            "health_checks[0].unhealthy_threshold: must be at least 1",
        ),
        (
            "- {service: a, tcp: {}, healthy_threshold: -1}",
            "health_checks[0].healthy_threshold",
        ),
        (
            "- {service: a, tcp: {}, jitter: 120%}",
            "health_checks[0].jitter",
        ),
        (
            "- {service: a, tcp: {}, jitter: 11s}",
            "health_checks[0].jitter: 11s is more than the interval",
        ),
        ("- {service: a, tcp: {}, port: 0}", "health_checks[0].port"),
        (
            "- {service: a, tcp: {}, port: 70000}",
            "health_checks[0].port",
        ),
        (
            "- {service: a, tcp: {}, subset: ''}",
            "health_checks[0].subset",
        ),
        (
            "- {service: a, tcp: {x: 1}}",
            "health_checks[0].tcp: unknown field `x`",
        ),
        (
            "- {service: a, grpc: {svc: x}}",
            "health_checks[0].grpc: unknown field `svc`",
        ),
        (
            "- {service: a, http: {path: healthz}}",
            "health_checks[0].http.path",
        ),
        (
            "- {service: a, http: {expected_statuses: []}}",
            "health_checks[0].http.expected_statuses",
        ),
        (
            "- {service: a, http: {expected_statuses: [600]}}",
            "health_checks[0].http.expected_statuses[0]",
        ),
        (
            "- {service: a, http: {expected_statuses: [399-200]}}",
            "ends before it starts",
        ),
        (
            "- {service: a, http: {host: 'a b'}}",
            "health_checks[0].http.host",
        ),
        (
            "- {service: a, tcp: {}, intervall: 5s}",
            "health_checks[0]: unknown field `intervall`",
        ),
    ];
    for (yaml, want) in cases {
        let e = error(&format!("health_checks:\n{yaml}\n"));
        assert!(e.contains(want), "{yaml}: {e}");
    }
    let e = error("max_concurrent_probes: 0\n");
    assert!(
        e.contains("max_concurrent_probes: must be at least 1"),
        "{e}"
    );
}

#[test]
fn locality_is_read_and_checked() {
    let s = parse("locality: {region: eu-west, zone: eu-west-1a, subzone: rack7}\n").unwrap();
    assert_eq!(s.locality.region.as_deref(), Some("eu-west"));
    assert_eq!(s.locality.zone.as_deref(), Some("eu-west-1a"));
    assert_eq!(s.locality.subzone.as_deref(), Some("rack7"));
    assert_eq!(
        parse("locality: {region: r}\n").unwrap().locality.zone,
        None
    );
    for (yaml, want) in [
        ("locality: {zone: z}", "locality.zone: set without a region"),
        (
            "locality: {region: r, subzone: s}",
            "locality.subzone: set without a zone",
        ),
        ("locality: {region: 'a/b'}", "locality.region"),
        ("locality: {region: ''}", "locality.region"),
        ("locality: {regoin: r}", "locality: unknown field `regoin`"),
    ] {
        let e = error(yaml);
        assert!(e.contains(want), "{yaml}: {e}");
    }
}

#[test]
fn retry_budget_is_a_rate_or_off() {
    let s = parse("retry_budget: off\n").unwrap();
    assert_eq!(s.retry_budget, RetryBudget::Off);
    let s = parse("retry_budget: {ratio: 0.5, window: 1m}\n").unwrap();
    assert_eq!(
        s.retry_budget,
        RetryBudget::Rate {
            ratio: 0.5,
            window: Duration::from_secs(60),
            min_per_second: 10
        },
        "missing keys keep their defaults"
    );
    let s = parse("retry_budget: {ratio: 0, min_per_second: 0}\n").unwrap();
    assert_eq!(
        s.retry_budget,
        RetryBudget::Rate {
            ratio: 0.0,
            window: Duration::from_secs(10),
            min_per_second: 0
        }
    );
    for (yaml, want) in [
        (
            "retry_budget: {ratio: 1.5}",
            "retry_budget.ratio: must be from 0 to 1",
        ),
        ("retry_budget: {ratio: -0.1}", "retry_budget.ratio"),
        ("retry_budget: {ratio: .nan}", "retry_budget.ratio"),
        ("retry_budget: {window: 0s}", "retry_budget.window"),
        ("retry_budget: {window: 2h}", "retry_budget.window"),
        ("retry_budget: {window: soon}", "retry_budget.window"),
        (
            "retry_budget: {min_per_second: -1}",
            "retry_budget.min_per_second",
        ),
        ("retry_budget: {percent: 20}", "unknown field `percent`"),
        ("retry_budget: on", "retry_budget"),
    ] {
        let e = error(yaml);
        assert!(e.contains(want), "{yaml}: {e}");
    }
}

#[test]
fn mirror_shadow_suffix_is_a_bool() {
    assert!(
        parse("mirror_shadow_suffix: true\n")
            .unwrap()
            .mirror_shadow_suffix
    );
    let e = error("mirror_shadow_suffix: sometimes\n");
    assert!(e.contains("mirror_shadow_suffix"), "{e}");
}
