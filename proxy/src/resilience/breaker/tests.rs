use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anymesh_core::routes::ConnectionPool;
use futures_util::FutureExt;
use tokio::sync::Barrier;

use super::*;

type Waiting<'a> = Pin<Box<dyn Future<Output = Result<Admitted, Overflow>> + Send + 'a>>;

fn h1(max_connections: u32, pending: Option<u32>) -> Limits {
    Limits::new(
        &ConnectionPool {
            max_connections: Some(max_connections),
            http1_max_pending_requests: pending,
            ..ConnectionPool::default()
        },
        false,
    )
}

/// Polls an admission once: `Some` when it is decided.
fn poll(waiting: &mut Waiting<'_>) -> Option<Result<Admitted, Overflow>> {
    waiting.as_mut().now_or_never()
}

fn admit_now(limits: &Limits) -> Result<Admitted, Overflow> {
    limits
        .admit()
        .now_or_never()
        .expect("an admission without waiting")
}

#[test]
fn istios_task_one_connection_one_pending_three_clients_one_overflow() {
    let limits = h1(1, Some(1));
    let first = admit_now(&limits).expect("the connection is free");
    let mut second: Waiting<'_> = Box::pin(limits.admit());
    assert!(poll(&mut second).is_none(), "the second waits");
    assert_eq!(limits.pending(), 1);
    assert_eq!(admit_now(&limits).unwrap_err(), Overflow::Pending);
    assert_eq!(limits.overflows(Overflow::Pending), 1);
    assert_eq!(limits.waited(), 1);

    drop(first);
    let second = poll(&mut second).expect("admitted once the first ended");
    assert!(second.is_ok());
    assert_eq!(limits.pending(), 0);
    // The total refusals stay one.
    let total: u64 = Overflow::ALL.iter().map(|o| limits.overflows(*o)).sum();
    assert_eq!(total, 1);
}

#[tokio::test]
async fn istios_task_with_concurrent_clients() {
    let limits = Arc::new(h1(1, Some(1)));
    // Every client has tried once before any lets go of its slot.
    let tried = Arc::new(Barrier::new(3));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (limits, tried) = (limits.clone(), tried.clone());
        clients.spawn(async move {
            let mut admission: Waiting<'_> = Box::pin(limits.admit());
            let first = poll(&mut admission);
            tried.wait().await;
            let admitted = match first {
                Some(decided) => decided,
                None => admission.await,
            };
            admitted.is_ok()
        });
    }
    let mut admitted = 0;
    while let Some(ok) = clients.join_next().await {
        admitted += usize::from(ok.expect("client task"));
    }
    assert_eq!(admitted, 2);
    assert_eq!(limits.overflows(Overflow::Pending), 1);
    assert_eq!((limits.pending(), limits.waited()), (0, 1));
}

#[test]
fn waiting_requests_are_admitted_first_come_first_served() {
    let limits = h1(1, None);
    let first = admit_now(&limits).unwrap();
    let mut queue: Vec<Waiting<'_>> = (0..3)
        .map(|_| Box::pin(limits.admit()) as Waiting<'_>)
        .collect();
    for waiting in &mut queue {
        assert!(poll(waiting).is_none());
    }
    assert_eq!(limits.pending(), 3);
    // A newcomer queues behind them rather than taking a released slot.
    drop(first);
    let mut late: Waiting<'_> = Box::pin(limits.admit());
    assert!(poll(&mut late).is_none());
    let mut order = Vec::new();
    for _ in 0..3 {
        let mut admitted = None;
        for i in (0..queue.len()).filter(|i| !order.contains(i)) {
            if let Some(result) = poll(&mut queue[i]) {
                assert!(admitted.is_none(), "two admitted for one slot");
                admitted = Some((i, result.unwrap()));
            }
        }
        let (i, guard) = admitted.expect("one admitted per released slot");
        order.push(i);
        // The response ends: the next in line gets the slot.
        drop(guard);
    }
    assert_eq!(order, [0, 1, 2]);
    assert!(poll(&mut late).expect("the newcomer last").is_ok());
}

#[test]
fn a_cancelled_wait_leaks_no_slot() {
    let limits = h1(1, Some(1));
    let first = admit_now(&limits).unwrap();
    let mut waiting: Waiting<'_> = Box::pin(limits.admit());
    assert!(poll(&mut waiting).is_none());
    drop(waiting);
    assert_eq!(limits.pending(), 0);
    // Its place in the queue is free again.
    let mut again: Waiting<'_> = Box::pin(limits.admit());
    assert!(poll(&mut again).is_none());

    // The slot went to a waiter that is dropped before it looks.
    drop(first);
    drop(again);
    assert_eq!(limits.pending(), 0);
    let now = admit_now(&limits).expect("the slot came back");
    let mut next: Waiting<'_> = Box::pin(limits.admit());
    assert!(poll(&mut next).is_none(), "one slot, taken");
    drop(now);
    assert!(poll(&mut next).expect("admitted").is_ok());
    assert_eq!(limits.pending(), 0);
}

#[test]
fn no_pending_queue_refuses_at_the_connection_limit() {
    let limits = h1(2, Some(0));
    let _held = (admit_now(&limits).unwrap(), admit_now(&limits).unwrap());
    assert_eq!(admit_now(&limits).unwrap_err(), Overflow::MaxConnections);
    assert_eq!(limits.overflows(Overflow::MaxConnections), 1);
    assert_eq!(limits.waited(), 0);
    // No connection at all: refused rather than waiting forever.
    let none = h1(0, None);
    assert_eq!(admit_now(&none).unwrap_err(), Overflow::MaxConnections);
}

#[test]
fn http2_max_requests_overflows_at_once_for_either_protocol() {
    let pool = ConnectionPool {
        max_connections: Some(1),
        http2_max_requests: Some(2),
        ..ConnectionPool::default()
    };
    // HTTP/2: streams share connections; maxConnections does not queue.
    let h2 = Limits::new(&pool, true);
    let held = (admit_now(&h2).unwrap(), admit_now(&h2).unwrap());
    assert_eq!(admit_now(&h2).unwrap_err(), Overflow::Http2MaxRequests);
    drop(held);
    assert!(admit_now(&h2).is_ok());
    assert_eq!(h2.overflows(Overflow::Http2MaxRequests), 1);

    // HTTP/1.1: a waiting request counts as one of the requests.
    let h1 = Limits::new(&pool, false);
    let first = admit_now(&h1).unwrap();
    let mut second: Waiting<'_> = Box::pin(h1.admit());
    assert!(poll(&mut second).is_none());
    assert_eq!(admit_now(&h1).unwrap_err(), Overflow::Http2MaxRequests);
    drop(second);
    let mut third: Waiting<'_> = Box::pin(h1.admit());
    assert!(
        poll(&mut third).is_none(),
        "the cancelled wait gave its count back"
    );
    drop(first);
    assert!(poll(&mut third).expect("admitted").is_ok());
}

#[test]
fn max_retries_bounds_retries_in_flight() {
    let limits = Limits::new(
        &ConnectionPool {
            max_retries: Some(1),
            ..ConnectionPool::default()
        },
        false,
    );
    // Requests are not limited: admission is free.
    assert!(matches!(admit_now(&limits), Ok(Admitted(None))));
    let retry = limits.admit_retry().unwrap();
    assert_eq!(limits.admit_retry().unwrap_err(), Overflow::MaxRetries);
    assert_eq!(limits.retries_in_flight(), 1);
    drop(retry);
    assert!(limits.admit_retry().is_ok());
    assert_eq!(limits.overflows(Overflow::MaxRetries), 1);
    assert_eq!(limits.retries_in_flight(), 0);
}

#[test]
fn without_limits_admission_is_free() {
    for limits in [
        Limits::new(&ConnectionPool::default(), false),
        Limits::new(&ConnectionPool::default(), true),
        // maxConnections bounds nothing over HTTP/2.
        Limits::new(
            &ConnectionPool {
                max_connections: Some(1),
                http1_max_pending_requests: Some(1),
                ..ConnectionPool::default()
            },
            true,
        ),
        Limits::unlimited(),
    ] {
        assert!(limits.is_unlimited());
        let held: Vec<_> = (0..1000).map(|_| admit_now(&limits).unwrap()).collect();
        assert!(held.iter().all(|a| a.0.is_none()));
        let retries: Vec<_> = (0..1000).map(|_| limits.admit_retry().unwrap()).collect();
        assert!(retries.iter().all(|r| r.0.is_none()));
        let total: u64 = Overflow::ALL.iter().map(|o| limits.overflows(*o)).sum();
        assert_eq!(total + limits.waited() + limits.pending(), 0);
    }
}

#[test]
fn overflow_names_the_limit() {
    let reasons: Vec<_> = Overflow::ALL.iter().map(|o| o.reason()).collect();
    assert_eq!(
        reasons,
        [
            "max_connections",
            "pending",
            "http2_max_requests",
            "max_retries"
        ]
    );
    assert_eq!(
        Overflow::Pending.to_string(),
        "connectionPool.http.http1MaxPendingRequests reached"
    );
}

/// Many threads admitting, cancelling and releasing at once: never more
/// than the limit in flight, no wake-up lost (every task finishes; with one
/// connection a lost one hangs), and every slot and place given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contended_admissions_respect_the_limit_and_lose_no_wake_up() {
    for max in [1, 2] {
        contend(max).await;
    }
}

async fn contend(max: u32) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    let limits = Arc::new(h1(max, None));
    let holding = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8u64 {
        let (limits, holding, most) = (limits.clone(), holding.clone(), most.clone());
        tasks.spawn(async move {
            let mut admitted = 0u32;
            for i in 0..2000u64 {
                let mut admission = limits.admit();
                let result = if (i + t) % 4 == 0 {
                    // Gives up unless admitted at once.
                    match (&mut admission).now_or_never() {
                        Some(result) => result,
                        None => continue,
                    }
                } else {
                    admission.await
                };
                let held = result.expect("no pending bound, nothing overflows");
                let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                if i % 2 == 0 {
                    tokio::task::yield_now().await;
                }
                holding.fetch_sub(1, Ordering::SeqCst);
                drop(held);
                admitted += 1;
            }
            admitted
        });
    }
    let all = async {
        let mut admitted = 0;
        while let Some(n) = tasks.join_next().await {
            admitted += n.expect("task");
        }
        admitted
    };
    let admitted = tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("a waiter was never woken");
    assert!(admitted >= 8 * 1500, "{admitted}");
    assert!(most.load(Ordering::SeqCst) <= u64::from(max));
    assert_eq!(limits.pending(), 0);
    // Every slot is free again.
    let _all: Vec<_> = (0..max).map(|_| admit_now(&limits).unwrap()).collect();
    let mut more: Waiting<'_> = Box::pin(limits.admit());
    assert!(poll(&mut more).is_none());
}
