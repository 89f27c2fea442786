use http::{HeaderMap, HeaderValue};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes()).expect("test header name");
        h.append(name, HeaderValue::from_str(v).expect("test header value"));
    }
    h
}

fn rng() -> SmallRng {
    SmallRng::seed_from_u64(7)
}

/// Extract, start a span (sampled as the request says, else `sampled`),
/// inject into the same map.
fn hop(h: &mut HeaderMap, sampled: bool) -> TraceContext {
    let ex = TraceContext::extract(h);
    let s = ex.sampled_hint().unwrap_or(sampled) || ex.forced();
    let ctx = ex.start(s, &mut rng());
    inject(&ctx, h);
    ctx
}

fn get<'a>(h: &'a HeaderMap, k: &str) -> Option<&'a str> {
    h.get(k).map(|v| v.to_str().expect("ascii"))
}

#[test]
fn w3c_is_read_and_a_child_is_written_in_both_formats() {
    let mut h = map(&[
        ("traceparent", TP),
        ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    ]);
    let ex = TraceContext::extract(&h);
    let (t, s) = ex.parent().expect("valid traceparent");
    assert_eq!(t.to_string(), TRACE);
    assert_eq!(s.to_string(), SPAN);
    assert_eq!(ex.sampled_hint(), Some(true));
    assert!(!ex.rejected_any());
    let ctx = hop(&mut h, false);
    assert_eq!(ctx.trace_id.to_string(), TRACE);
    assert_eq!(
        ctx.parent_span_id.map(|p| p.to_string()).as_deref(),
        Some(SPAN)
    );
    assert_ne!(ctx.span_id.to_string(), SPAN);
    let span = ctx.span_id.to_string();
    assert_eq!(
        get(&h, "traceparent"),
        Some(format!("00-{TRACE}-{span}-01").as_str())
    );
    assert_eq!(get(&h, "x-b3-traceid"), Some(TRACE));
    assert_eq!(get(&h, "x-b3-spanid"), Some(span.as_str()));
    assert_eq!(get(&h, "x-b3-parentspanid"), Some(SPAN));
    assert_eq!(get(&h, "x-b3-sampled"), Some("1"));
    assert_eq!(
        get(&h, "tracestate"),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );
    assert!(h.get("b3").is_none(), "b3 single only when it came in");
    assert!(h.get("x-b3-flags").is_none());
}

#[test]
fn later_w3c_versions_are_read_by_their_prefix() {
    let ex = TraceContext::extract(&map(&[(
        "traceparent",
        &format!("cc-{TRACE}-{SPAN}-01-extra"),
    )]));
    assert!(ex.formats().w3c);
    let ex = TraceContext::extract(&map(&[("traceparent", &format!("cc-{TRACE}-{SPAN}-01x"))]));
    assert!(!ex.formats().w3c);
}

#[test]
fn hostile_traceparents_are_replaced() {
    let long = format!("00-{TRACE}-{SPAN}-01{}", "a".repeat(10_000));
    let bad = [
        format!("00-{}-{SPAN}-01", "0".repeat(32)),
        format!("00-{TRACE}-0000000000000000-01"),
        format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
        format!("ff-{TRACE}-{SPAN}-01"),
        format!("00-{TRACE}-{SPAN}-01-extra"),
        format!("00_{TRACE}_{SPAN}_01"),
        format!("00-{TRACE}-{SPAN}-0g"),
        format!("00-{TRACE}-{SPAN}"),
        "00-zz".to_string(),
        long,
        String::new(),
    ];
    for v in &bad {
        let mut h = map(&[("traceparent", v), ("tracestate", "a=b")]);
        let ex = TraceContext::extract(&h);
        assert!(ex.parent().is_none(), "{v:?} was trusted");
        assert!(ex.rejected_any(), "{v:?}");
        let ctx = hop(&mut h, false);
        let tp = get(&h, "traceparent").expect("written");
        assert_eq!(tp.len(), 55);
        assert!(tp.contains(&ctx.trace_id.to_string()));
        assert_ne!(ctx.trace_id.to_string(), TRACE);
        assert!(
            h.get("tracestate").is_none(),
            "tracestate without a valid traceparent is dropped"
        );
    }
}

#[test]
fn a_repeated_traceparent_is_refused() {
    let other = format!("00-{}-{SPAN}-01", "1".repeat(32));
    let ex = TraceContext::extract(&map(&[("traceparent", TP), ("traceparent", &other)]));
    assert!(ex.parent().is_none());
    assert!(ex.rejected_any());
}

#[test]
fn tracestate_is_bounded() {
    let members = |n: usize| {
        (0..n)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let kept = |ts: &str| {
        let mut h = map(&[("traceparent", TP), ("tracestate", ts)]);
        let ctx = hop(&mut h, true);
        assert_eq!(ctx.tracestate().is_some(), h.get("tracestate").is_some());
        ctx.tracestate().map(str::to_string)
    };
    assert_eq!(kept(&members(32)), Some(members(32)));
    assert_eq!(kept(&members(33)), None);
    assert_eq!(
        kept(&format!("k={}", "v".repeat(510))),
        Some(format!("k={}", "v".repeat(510)))
    );
    assert_eq!(kept(&format!("k={}", "v".repeat(511))), None);
    assert_eq!(kept("=novalue"), None);
    assert_eq!(kept("noequals"), None);
    // Several lines are one list.
    let mut h = map(&[
        ("traceparent", TP),
        ("tracestate", "a=1"),
        ("tracestate", "b=2"),
    ]);
    let ctx = hop(&mut h, true);
    assert_eq!(ctx.tracestate(), Some("a=1,b=2"));
    assert_eq!(get(&h, "tracestate"), Some("a=1,b=2"));
}

#[test]
fn b3_multi_64_bit_stays_64_bit_in_b3() {
    let mut h = map(&[
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-parentspanid", "0020000000000001"),
        ("x-b3-sampled", "1"),
    ]);
    let ex = TraceContext::extract(&h);
    assert!(ex.formats().b3_multi);
    assert_eq!(ex.sampled_hint(), Some(true));
    let ctx = hop(&mut h, false);
    assert!(ctx.trace_id.is_64bit());
    assert_eq!(get(&h, "x-b3-traceid"), Some("463ac35c9f6413ad"));
    assert_eq!(get(&h, "x-b3-parentspanid"), Some("a2fb4a1d1a96d312"));
    let tp = get(&h, "traceparent").expect("written");
    assert!(
        tp.starts_with("00-0000000000000000463ac35c9f6413ad-"),
        "{tp}"
    );
}

#[test]
fn b3_debug_and_deny() {
    let mut h = map(&[
        ("x-b3-traceid", "463ac35c9f6413ad463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-flags", "1"),
    ]);
    let ex = TraceContext::extract(&h);
    assert!(ex.forced());
    let ctx = hop(&mut h, false);
    assert!(ctx.sampled && ctx.debug);
    assert_eq!(get(&h, "x-b3-flags"), Some("1"));

    let mut h = map(&[("b3", "0")]);
    let ex = TraceContext::extract(&h);
    assert_eq!(ex.sampled_hint(), Some(false));
    assert!(ex.parent().is_none());
    let ctx = hop(&mut h, true);
    assert!(!ctx.sampled);
    let b3 = get(&h, "b3").expect("b3 came in, b3 goes out");
    assert_eq!(b3, format!("{}-{}-0", ctx.trace_id, ctx.span_id));
    assert!(get(&h, "traceparent").expect("written").ends_with("-00"));
    assert_eq!(get(&h, "x-b3-sampled"), Some("0"));
}

#[test]
fn b3_single_is_read_and_rewritten() {
    let v = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90";
    let mut h = map(&[("b3", v)]);
    let ex = TraceContext::extract(&h);
    assert!(ex.formats().b3_single && ex.forced());
    let ctx = hop(&mut h, false);
    assert_eq!(
        ctx.parent_span_id.map(|s| s.to_string()).as_deref(),
        Some("e457b5a2e4d86bd1")
    );
    assert_eq!(
        get(&h, "b3"),
        Some(
            format!(
                "80f198ee56343ba864fe8b2a57d3eff7-{}-d-e457b5a2e4d86bd1",
                ctx.span_id
            )
            .as_str()
        )
    );
    for bad in [
        "80f198ee56343ba8-e457b5a2e4d86bd1-x",
        "80f198ee56343ba8",
        "1-2-3-4-5",
        "x",
        "",
    ] {
        let mut h = map(&[("b3", bad)]);
        let ex = TraceContext::extract(&h);
        assert!(ex.parent().is_none() && ex.rejected_any(), "{bad:?}");
        let ctx = hop(&mut h, false);
        assert!(get(&h, "b3")
            .expect("replaced")
            .starts_with(&ctx.trace_id.to_string()));
    }
}

#[test]
fn w3c_wins_over_b3_and_the_formats_then_agree() {
    let mut h = map(&[
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("traceparent", TP),
    ]);
    let ctx = hop(&mut h, false);
    assert_eq!(ctx.trace_id.to_string(), TRACE);
    assert!(ctx.sampled, "the W3C flags decide");
    assert!(get(&h, "b3").expect("kept").starts_with(TRACE));
    assert_eq!(get(&h, "x-b3-traceid"), Some(TRACE));
}

#[test]
fn round_trip_across_formats() {
    // b3 single → (hop) → traceparent → (hop) → B3 multi: one trace, each
    // hop's parent the previous hop's span.
    let mut h = map(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
    let a = hop(&mut h, false);
    let mut only_w3c = HeaderMap::new();
    only_w3c.insert(TRACEPARENT, h.get("traceparent").expect("written").clone());
    let b = hop(&mut only_w3c, false);
    let mut only_b3 = HeaderMap::new();
    for k in ["x-b3-traceid", "x-b3-spanid", "x-b3-sampled"] {
        only_b3.insert(k, only_w3c.get(k).expect("written").clone());
    }
    let c = hop(&mut only_b3, false);
    for ctx in [&a, &b, &c] {
        assert_eq!(ctx.trace_id.to_string(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert!(ctx.sampled);
    }
    assert_eq!(b.parent_span_id, Some(a.span_id));
    assert_eq!(c.parent_span_id, Some(b.span_id));
}

#[test]
fn request_ids_are_kept_or_replaced() {
    let mut h = map(&[("x-request-id", "abc-123")]);
    let ctx = hop(&mut h, false);
    assert_eq!(ctx.request_id(), "abc-123");
    assert!(!ctx.request_id_generated());
    assert_eq!(get(&h, "x-request-id"), Some("abc-123"));

    let long = "a".repeat(129);
    let mut hostile: Vec<HeaderMap> = vec![
        HeaderMap::new(),
        map(&[("x-request-id", "has space")]),
        map(&[("x-request-id", &long)]),
        map(&[("x-request-id", "a"), ("x-request-id", "b")]),
        map(&[("x-request-id", "")]),
    ];
    let mut tab = HeaderMap::new();
    tab.insert("x-request-id", HeaderValue::from_static("a\tb"));
    hostile.push(tab);
    let mut obs = HeaderMap::new();
    obs.insert(
        "x-request-id",
        HeaderValue::from_bytes(b"caf\xc3\xa9").expect("obs-text"),
    );
    hostile.push(obs);
    for mut h in hostile {
        let ctx = hop(&mut h, false);
        assert!(ctx.request_id_generated());
        let id = ctx.request_id();
        let u = uuid::Uuid::parse_str(id).expect("a UUID");
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(h.get_all("x-request-id").iter().count(), 1);
        assert_eq!(get(&h, "x-request-id"), Some(id));
    }
    assert_eq!(
        "a".repeat(REQUEST_ID_MAX_LEN).len(),
        128,
        "the bound documented in the report"
    );
    assert!(request_id_ok("a".repeat(128).as_bytes()));
}

#[test]
fn refused_headers_are_removed_from_a_forwarded_map() {
    let mut h = map(&[
        ("x-b3-traceid", "zz"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-parentspanid", "not-hex"),
        ("x-b3-flags", "7"),
    ]);
    let ctx = hop(&mut h, false);
    assert!(ctx.parent_span_id.is_none());
    assert!(h.get("x-b3-parentspanid").is_none());
    assert!(h.get("x-b3-flags").is_none());
    assert_eq!(
        get(&h, "x-b3-traceid"),
        Some(ctx.trace_id.to_string().as_str())
    );
}

#[test]
fn random_bytes_never_panic_and_never_pass_through() {
    let mut r = SmallRng::seed_from_u64(22);
    let names = [
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "x-request-id",
    ];
    for _ in 0..5_000 {
        let mut h = HeaderMap::new();
        for n in names {
            if r.random_bool(0.5) {
                let len = r.random_range(0..80);
                let bytes: Vec<u8> = (0..len).map(|_| r.random_range(0x20..0x7f)).collect();
                h.insert(n, HeaderValue::from_bytes(&bytes).expect("visible ascii"));
            }
        }
        let ctx = hop(&mut h, r.random());
        let tp = get(&h, "traceparent").expect("written");
        assert_eq!(
            tp,
            format!(
                "00-{}-{}-{}",
                ctx.trace_id,
                ctx.span_id,
                if ctx.sampled { "01" } else { "00" }
            )
        );
        let rid = get(&h, "x-request-id").expect("present");
        assert!(request_id_ok(rid.as_bytes()));
    }
}

#[test]
fn inject_into_another_map_replaces_collapses_and_removes() {
    // The incoming map says: a valid W3C parent and a kept request id.
    let incoming = map(&[("traceparent", TP), ("x-request-id", "abc-123")]);
    let ctx = TraceContext::extract(&incoming).start(false, &mut rng());
    // The upstream map holds stale trace headers, some twice, and lacks
    // the request id.
    let mut up = map(&[
        ("accept", "*/*"),
        ("x-b3-spanid", "1111111111111111"),
        ("x-b3-spanid", "2222222222222222"),
        ("traceparent", "garbage"),
        ("x-b3-flags", "1"),
        ("b3", "0"),
        ("x-b3-sampled", "1"),
        ("x-b3-sampled", "1"),
    ]);
    inject(&ctx, &mut up);
    let span = ctx.span_id.to_string();
    assert_eq!(
        get(&up, "traceparent"),
        Some(format!("00-{TRACE}-{span}-00").as_str())
    );
    for k in ["x-b3-spanid", "x-b3-sampled", "traceparent", "x-b3-traceid"] {
        assert_eq!(up.get_all(k).iter().count(), 1, "{k} once");
    }
    assert_eq!(get(&up, "x-b3-spanid"), Some(span.as_str()));
    assert_eq!(get(&up, "x-b3-sampled"), Some("0"));
    assert_eq!(get(&up, "x-b3-parentspanid"), Some(SPAN));
    assert!(up.get("x-b3-flags").is_none(), "not debug: removed");
    assert!(up.get("b3").is_none(), "no b3 came in: a stale one removed");
    assert_eq!(get(&up, "x-request-id"), Some("abc-123"), "kept, added");
    assert_eq!(get(&up, "accept"), Some("*/*"));

    // Injecting again (the steady state: every header there once) changes
    // nothing but the values.
    let before = up.len();
    let ctx2 = TraceContext::extract(&incoming).start(false, &mut SmallRng::seed_from_u64(8));
    inject(&ctx2, &mut up);
    assert_eq!(up.len(), before);
    assert_eq!(
        get(&up, "x-b3-spanid"),
        Some(ctx2.span_id.to_string().as_str())
    );
}

#[test]
fn inject_writes_what_a_fresh_map_would_hold() {
    // In place (the map already holds the headers) and by insertion (an
    // empty map) give the same headers.
    let mut r = SmallRng::seed_from_u64(3);
    for incoming in [
        map(&[]),
        map(&[("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-d")]),
        map(&[
            ("traceparent", TP),
            ("tracestate", "a=b"),
            ("x-request-id", "r-1"),
        ]),
    ] {
        let ctx = TraceContext::extract(&incoming).start(r.random(), &mut r);
        let mut fresh = HeaderMap::new();
        inject(&ctx, &mut fresh);
        let mut forwarded = incoming.clone();
        inject(&ctx, &mut forwarded);
        inject(&ctx, &mut forwarded);
        for (k, v) in &fresh {
            assert_eq!(forwarded.get(k), Some(v), "{k}");
        }
        assert_eq!(fresh.len(), forwarded.len());
    }
}
