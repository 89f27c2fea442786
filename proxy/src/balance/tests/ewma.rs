//! Peak EWMA: steering away from a slow endpoint, the estimate's peak and
//! decay.

use tokio::time::{advance, Instant};

use super::outlier::endpoints;
use super::*;
use crate::balance::ewma::{Ewma, DECAY, DEFAULT_RTT};
use crate::resilience::outlier::AttemptOutcome;

#[tokio::test(start_paused = true)]
async fn a_slow_endpoint_gets_few_requests() {
    let lb = lb_for(
        &mut Balancers::new(),
        endpoints(LbPolicy::PeakEwma, 3, Default::default()),
    );
    let headers = no_headers();
    let ctx = PickContext::new(&headers);
    let mut seen = [0usize; 3];
    let n = 20_000;
    for _ in 0..n {
        let picked = lb.pick(&ctx).unwrap();
        let i = picked.index;
        seen[i] += 1;
        let latency = Duration::from_millis(if i == 1 { 100 } else { 10 });
        drop(picked);
        lb.report(
            i,
            AttemptOutcome::Response {
                status: 200,
                latency,
            },
        );
        advance(Duration::from_millis(1)).await;
    }
    assert!(seen[1] * 10 < n, "the slow endpoint got {seen:?}");
    assert!(seen[0] > n / 3 && seen[2] > n / 3, "{seen:?}");
    assert!(seen[1] > 0, "it is tried again as its estimate decays");
}

#[tokio::test(start_paused = true)]
async fn the_estimate_jumps_to_peaks_and_decays() {
    let base = Instant::now();
    let ewma = Ewma::new();
    let ms = |v: f64| v / 1e6;
    assert_eq!(
        ms(ewma.estimate(base, base)),
        DEFAULT_RTT.as_millis() as f64
    );
    ewma.observe(base, base, Duration::from_millis(200));
    assert_eq!(ms(ewma.estimate(base, base)), 200.0, "peak");
    // A lower sample one τ later keeps e^−1 of the old.
    let later = base + DECAY;
    ewma.observe(base, later, Duration::from_millis(100));
    let expected = 200.0 * (-1f64).exp() + 100.0 * (1.0 - (-1f64).exp());
    assert!((ms(ewma.estimate(base, later)) - expected).abs() < 1e-6);
    // Without samples it decays toward 0.
    let idle = ms(ewma.estimate(base, later + DECAY * 3));
    assert!((idle - expected * (-3f64).exp()).abs() < 1e-6, "{idle}");
}

#[tokio::test(start_paused = true)]
async fn costs_compare_as_decayed_to_now_without_reading_the_clock() {
    let lb = lb_for(
        &mut Balancers::new(),
        endpoints(LbPolicy::PeakEwma, 2, Default::default()),
    );
    let response = |ms| AttemptOutcome::Response {
        status: 200,
        latency: Duration::from_millis(ms),
    };
    lb.report(0, response(100));
    advance(Duration::from_secs(15)).await;
    lb.report(1, response(40));
    // Now: 100 ms × e^−1.5 ≈ 22 ms against 40 ms.
    let now = Instant::now();
    let estimate = |i: usize| {
        let s = lb.endpoint_state(i).unwrap();
        s.ewma.estimate(s.base, now)
    };
    assert!(estimate(0) < estimate(1));
    assert!(lb.ewma_first_wins(0, 1) && !lb.ewma_first_wins(1, 0));
    // In flight counts multiply: 22 × 2 > 40.
    let _held = hold(&lb, 0);
    assert!(!lb.ewma_first_wins(0, 1) && lb.ewma_first_wins(1, 0));
}
