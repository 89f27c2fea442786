//! The filter and the configuration.

use std::path::PathBuf;

use super::{full, start};
use crate::access_log::{
    AccessLogConfig, AccessLogError, AccessLogFilter, AccessLogFormat, AccessRecord, StatusClass,
};

fn with_code(code: u16) -> AccessRecord<'static> {
    let mut r = AccessRecord::new(start());
    r.response_code = code;
    r
}

#[test]
fn status_classes() {
    let errors = AccessLogFilter {
        status: vec![StatusClass::ClientError, StatusClass::ServerError],
        ..AccessLogFilter::default()
    };
    for (code, logged) in [
        (0, false),
        (101, false),
        (200, false),
        (302, false),
        (399, false),
        (400, true),
        (404, true),
        (499, true),
        (500, true),
        (503, true),
        (599, true),
        (600, false),
        (999, false),
    ] {
        assert_eq!(errors.matches(&with_code(code), 0), logged, "{code}");
    }
    let no_response = AccessLogFilter {
        status: vec![StatusClass::NoResponse],
        ..AccessLogFilter::default()
    };
    assert!(no_response.matches(&with_code(0), 0));
    assert!(!no_response.matches(&with_code(200), 0));
    // The default logs every code, even an absurd one.
    for code in [0, 200, 404, 503, 999, u16::MAX] {
        assert!(AccessLogFilter::default().matches(&with_code(code), u64::MAX));
    }
    assert!(!AccessLogFilter::default().samples());
}

#[test]
fn sampling_is_exact_for_a_given_number() {
    let quarter = AccessLogFilter {
        status: Vec::new(),
        sample_percent: 25.0,
    };
    assert!(quarter.samples());
    let r = full();
    assert!(quarter.matches(&r, 0));
    assert!(quarter.matches(&r, 249_999));
    assert!(!quarter.matches(&r, 250_000));
    assert!(!quarter.matches(&r, 999_999));
    // Reduced modulo a million.
    assert!(quarter.matches(&r, 7_000_000 + 249_999));
    assert!(!quarter.matches(&r, 7_000_000 + 250_000));
    let logged = (0..1_000_000u64)
        .step_by(7)
        .filter(|&n| quarter.matches(&r, n))
        .count();
    assert_eq!(
        logged, 35_715,
        "a quarter of the numbers 0, 7, 14 … below a million"
    );

    let none = AccessLogFilter {
        status: Vec::new(),
        sample_percent: 0.0,
    };
    assert!((0..10_000u64).all(|n| !none.matches(&r, n * 99_991)));
    let millionth = AccessLogFilter {
        status: Vec::new(),
        sample_percent: 0.0001,
    };
    assert!(millionth.matches(&r, 0) && !millionth.matches(&r, 1));

    // Sampling applies to what the status classes let through.
    let sampled_errors = AccessLogFilter {
        status: vec![StatusClass::ServerError],
        sample_percent: 50.0,
    };
    assert!(sampled_errors.matches(&with_code(503), 1));
    assert!(!sampled_errors.matches(&with_code(503), 500_000));
    assert!(!sampled_errors.matches(&with_code(200), 1));
}

#[test]
fn config_defaults_from_an_empty_object() {
    let config: AccessLogConfig = serde_json::from_str("{}").expect("an empty config");
    assert_eq!(config, AccessLogConfig::default());
    assert_eq!(config.path, None);
    assert_eq!(config.format, AccessLogFormat::Text);
    assert_eq!(config.filter, AccessLogFilter::default());
    assert_eq!(config.queue, 4096);
    config.validate().expect("the default is valid");
}

#[test]
fn config_every_field() {
    let config: AccessLogConfig = serde_json::from_str(
        r#"{
            "path": "/var/log/anymesh/access.log",
            "format": "json",
            "filter": {"status": ["4xx", "5xx", "none"], "sample_percent": 12.5},
            "max_size": 1048576,
            "keep": 3,
            "queue": 100,
            "queue_bytes": 1000000,
            "flush_interval": "250ms"
        }"#,
    )
    .expect("a full config");
    assert_eq!(
        config,
        AccessLogConfig {
            path: Some(PathBuf::from("/var/log/anymesh/access.log")),
            format: AccessLogFormat::Json,
            filter: AccessLogFilter {
                status: vec![
                    StatusClass::ClientError,
                    StatusClass::ServerError,
                    StatusClass::NoResponse
                ],
                sample_percent: 12.5,
            },
            max_size: Some(1 << 20),
            keep: 3,
            queue: 100,
            queue_bytes: 1_000_000,
            flush_interval: std::time::Duration::from_millis(250),
        }
    );
    config.validate().expect("valid");
    for (format, expected) in [
        ("text", AccessLogFormat::Text),
        ("envoy", AccessLogFormat::Envoy),
        ("json", AccessLogFormat::Json),
    ] {
        let config: AccessLogConfig =
            serde_json::from_str(&format!(r#"{{"format": "{format}"}}"#)).expect("a format");
        assert_eq!(config.format, expected);
    }
}

#[test]
fn config_rejects_unknown_fields_and_values() {
    for bad in [
        r#"{"paht": "/tmp/x"}"#,
        r#"{"filter": {"status": ["4xx"], "sampling": 3}}"#,
        r#"{"filter": {"status": ["6xx"]}}"#,
        r#"{"format": "xml"}"#,
        r#"{"queue": -1}"#,
    ] {
        assert!(
            serde_json::from_str::<AccessLogConfig>(bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn config_validation() {
    let invalid = |config: AccessLogConfig| {
        matches!(config.validate(), Err(AccessLogError::InvalidConfig(_)))
    };
    let filter = |sample_percent| AccessLogConfig {
        filter: AccessLogFilter {
            status: Vec::new(),
            sample_percent,
        },
        ..AccessLogConfig::default()
    };
    assert!(invalid(filter(-0.5)));
    assert!(invalid(filter(100.01)));
    assert!(invalid(filter(f64::NAN)));
    assert!(!invalid(filter(0.0)) && !invalid(filter(100.0)));
    assert!(invalid(AccessLogConfig {
        queue: 0,
        ..AccessLogConfig::default()
    }));
    assert!(invalid(AccessLogConfig {
        queue_bytes: 1000,
        ..AccessLogConfig::default()
    }));
    assert!(invalid(AccessLogConfig {
        max_size: Some(0),
        ..AccessLogConfig::default()
    }));
    assert!(invalid(AccessLogConfig {
        keep: 1001,
        ..AccessLogConfig::default()
    }));
}
