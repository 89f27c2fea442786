//! The request path's tracing work when the request is not sampled:
//! `TraceContext::extract` + `Sampler::decide` + `Extracted::start` +
//! `inject`, on the headers of a typical forwarded request (issue 22's
//! target: under 100 ns).
//!
//! ```sh
//! cargo bench -p anymesh-telemetry --bench trace
//! ```
//!
//! The headline numbers inject into a forwarded map that already holds the
//! trace headers (steady state: values replaced, the map does not grow);
//! the growth of a map that lacks them is measured apart (clone baseline
//! versus clone + tracing).

use std::hint::black_box;

use anymesh_telemetry::trace::{inject, Sampler, TraceContext};
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

fn request(extra: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "reviews.default.svc.cluster.local:9080"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) curl/8.5.0"),
        ("accept", "*/*"),
        ("content-type", "application/json"),
        ("content-length", "348"),
        ("x-forwarded-proto", "http"),
        ("accept-encoding", "gzip, deflate"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        h.append(k, HeaderValue::from_static(v));
    }
    h
}

fn unsampled(c: &mut Criterion) {
    let sampler = Sampler::new(1.0);
    let mut rng = SmallRng::seed_from_u64(22);
    let cases = [
        ("no trace headers, no request id", request(&[])),
        (
            "x-request-id only (the draw says no)",
            request(&[("x-request-id", "6f1a9c2e-8d3b-4e7a-9b1c-2d4e6f8a0b1c")]),
        ),
        (
            "traceparent unsampled + x-request-id",
            request(&[
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                ),
                ("x-request-id", "6f1a9c2e-8d3b-4e7a-9b1c-2d4e6f8a0b1c"),
            ]),
        ),
        (
            "B3 multi unsampled + x-request-id",
            request(&[
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
                ("x-b3-sampled", "0"),
                ("x-request-id", "6f1a9c2e-8d3b-4e7a-9b1c-2d4e6f8a0b1c"),
            ]),
        ),
    ];
    let mut group = c.benchmark_group("unsampled");
    for (name, incoming) in &cases {
        // The upstream request's headers: the incoming ones, forwarded,
        // already holding the trace headers once (so the map does not grow
        // inside the timing; the growth is measured below on its own).
        let mut out = incoming.clone();
        let ctx = TraceContext::extract(incoming).start(false, &mut rng);
        inject(&ctx, &mut out);
        group.bench_function(format!("extract+decide+start+inject: {name}"), |b| {
            b.iter(|| {
                let ex = TraceContext::extract(black_box(incoming));
                // The largest u32 is never under a 1 % threshold.
                let d = sampler.decide(&ex, black_box(u32::MAX));
                let ctx = ex.start(d.sampled(), &mut rng);
                inject(&ctx, &mut out);
                black_box(ctx.sampled)
            })
        });
    }
    // The same into a fresh copy of the request's headers (hot in the
    // cache), so inserting grows the map: the difference between these two
    // is that growth plus the tracing work.
    let incoming = &cases[1].1;
    group.bench_function("clone of the request headers (baseline)", |b| {
        b.iter(|| black_box(black_box(incoming).clone()))
    });
    group.bench_function("clone + extract+decide+start+inject", |b| {
        b.iter(|| {
            let mut h = black_box(incoming).clone();
            let ex = TraceContext::extract(&h);
            let d = sampler.decide(&ex, black_box(u32::MAX));
            let ctx = ex.start(d.sampled(), &mut rng);
            inject(&ctx, &mut h);
            black_box(h)
        })
    });
    for (name, headers) in &cases {
        group.bench_function(format!("extract only: {name}"), |b| {
            b.iter(|| black_box(TraceContext::extract(black_box(headers))))
        });
    }
    group.bench_function("rng next_u32", |b| b.iter(|| black_box(rng.next_u32())));
    group.finish();
}

criterion_group!(benches, unsampled);
criterion_main!(benches);
