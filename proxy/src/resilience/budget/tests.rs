use std::time::Duration;

use anymesh_core::routes::RetryBudget;
use tokio::time::advance;

use super::*;

fn rate(ratio: f64, window_secs: u64, min_per_second: u32) -> Budget {
    Budget::new(&RetryBudget::Rate {
        ratio,
        window: Duration::from_secs(window_secs),
        min_per_second,
    })
}

/// Takes retries until the budget refuses one; returns how many it granted.
fn drain(budget: &Budget) -> u64 {
    let mut n = 0;
    while budget.try_retry().is_some() {
        n += 1;
        assert!(n < 1_000_000, "the budget never ran out");
    }
    n
}

#[tokio::test(start_paused = true)]
async fn off_never_refuses() {
    let budget = Budget::new(&RetryBudget::Off);
    let guards: Vec<_> = (0..10_000).map(|_| budget.try_retry()).collect();
    assert!(guards.iter().all(Option::is_some));
    assert_eq!((budget.granted(), budget.exhausted()), (10_000, 0));
    let _request = budget.request();
    assert_eq!((budget.active(), budget.retries_in_flight()), (0, 0));
}

/// Every attempt fails and every request wants two retries: per window,
/// retries stay within ratio × requests + the reserve, and use it up.
#[tokio::test(start_paused = true)]
async fn a_steady_failing_stream_spends_at_most_the_rate_budget() {
    let (ratio, window, min) = (0.2, 10u64, 1);
    let budget = rate(ratio, window, min);
    let per_second = 100u64;
    let seconds = 60usize;
    let mut requests = vec![0u64; seconds];
    let mut retries = vec![0u64; seconds];
    for s in 0..seconds {
        // Ten batches a second, spread over the second.
        for _ in 0..10 {
            for _ in 0..per_second / 10 {
                let _request = budget.request();
                requests[s] += 1;
                for _ in 0..2 {
                    if budget.try_retry().is_some() {
                        retries[s] += 1;
                    }
                }
            }
            advance(Duration::from_millis(100)).await;
        }
    }
    let reserve = (min as u64 * window) as f64;
    for end in window as usize - 1..seconds {
        let span = end + 1 - window as usize..=end;
        let r: u64 = retries[span.clone()].iter().sum();
        let d: u64 = requests[span].iter().sum();
        assert!(
            r as f64 <= ratio * d as f64 + reserve,
            "window ending {end}: {r} retries for {d} requests"
        );
        // The stream always wants more, so the budget is used up.
        assert!(
            r as f64 >= ratio * d as f64,
            "window ending {end}: only {r} retries"
        );
    }
    let wanted = 2 * per_second * seconds as u64;
    assert_eq!(budget.granted() + budget.exhausted(), wanted);
    assert!(budget.exhausted() > wanted / 2);
}

#[tokio::test(start_paused = true)]
async fn the_reserve_allows_retries_with_no_requests() {
    // 5 a second over 2 seconds: 10 retries, then none until they expire.
    let budget = rate(0.2, 2, 5);
    assert_eq!(drain(&budget), 10);
    assert_eq!(budget.exhausted(), 1);
    advance(Duration::from_millis(1500)).await;
    assert!(budget.try_retry().is_none());
    advance(Duration::from_millis(500)).await;
    assert_eq!(drain(&budget), 10);
    assert_eq!((budget.granted(), budget.exhausted()), (20, 3));
    // With no reserve and no requests, nothing.
    assert_eq!(drain(&rate(0.2, 10, 0)), 0);
}

#[tokio::test(start_paused = true)]
async fn requests_and_retries_leave_the_window_as_it_slides() {
    let budget = rate(1.0, 3, 0);
    for _ in 0..4 {
        let _ = budget.request();
    }
    advance(Duration::from_secs(1)).await;
    assert!(budget.try_retry().is_some());
    assert!(budget.try_retry().is_some());
    advance(Duration::from_millis(1500)).await;
    // Seconds 0..=2: 4 requests, 2 retries.
    assert_eq!(drain(&budget), 2);
    advance(Duration::from_millis(500)).await;
    // Seconds 1..=3: the requests of second 0 are gone, the 4 retries stay.
    let _ = (budget.request(), budget.request());
    assert!(budget.try_retry().is_none());
    advance(Duration::from_secs(2)).await;
    // Seconds 3..=5: 2 requests, no retries.
    assert_eq!(drain(&budget), 2);
    // Long idle: every bucket is stale, the ring reset lazily.
    advance(Duration::from_secs(3600)).await;
    assert_eq!(drain(&budget), 0);
    let _ = budget.request_at(Instant::now());
    assert_eq!(drain(&budget), 1);
}

#[tokio::test(start_paused = true)]
async fn a_ratio_above_one_and_a_fractional_window() {
    let budget = Budget::new(&RetryBudget::Rate {
        ratio: 2.5,
        window: Duration::from_millis(1500),
        min_per_second: 0,
    });
    for _ in 0..2 {
        let _ = budget.request();
    }
    assert_eq!(drain(&budget), 5);
    // The window is rounded up to 2 s.
    advance(Duration::from_millis(1999)).await;
    assert!(budget.try_retry().is_none());
}

#[test]
fn concurrent_retries_stay_below_the_share_of_active_requests() {
    let budget = Budget::new(&RetryBudget::Concurrent {
        percent: 20.0,
        min_concurrency: 3,
    });
    // No traffic: the floor.
    let held: Vec<_> = std::iter::from_fn(|| budget.try_retry())
        .take(100)
        .collect();
    assert_eq!(held.len(), 3);
    assert_eq!(budget.retries_in_flight(), 3);
    drop(held);
    assert_eq!(budget.retries_in_flight(), 0);

    // 50 active requests: 20 % is 10.
    let requests: Vec<_> = (0..50).map(|_| budget.request()).collect();
    assert_eq!(budget.active(), 50);
    let mut held: Vec<_> = std::iter::from_fn(|| budget.try_retry())
        .take(100)
        .collect();
    assert_eq!(held.len(), 10);
    assert!(budget.try_retry().is_none());
    // One ends: one more fits.
    held.pop();
    assert!(budget.try_retry().is_some());
    // 24 active: 20 % is 4.8, so at most max(4, 3) = 4; 9 are in flight.
    drop(requests);
    let _requests: Vec<_> = (0..24).map(|_| budget.request()).collect();
    assert!(budget.try_retry().is_none());
    held.truncate(3);
    assert!(budget.try_retry().is_some());
    assert_eq!(budget.active(), 24);
    assert_eq!(budget.exhausted(), 4);
}
