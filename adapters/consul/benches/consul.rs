//! Consul registry benchmark against the testkit's fake agent. A plain
//! `main`, not criterion, not a test; prints a markdown report.
//!
//! ```sh
//! cargo bench -p anymesh-adapter-consul --bench consul
//! cargo bench -p anymesh-adapter-consul --bench consul -- --services 1000 --changes 50
//! ```
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it makes a quick
//! run (300 services, 20 changes) so it does not rot.
//!
//! 1. **Sync.** A catalog of N services (one instance each). The clock runs
//!    from `run` to the first `Reset`: following 3 referenced services, and
//!    with `watch_all` (N health reads, 8 at a time). Then the long-polls
//!    the agent holds are counted.
//! 2. **Propagation.** Following 3 services, one registration at a time:
//!    the clock starts before the fake's write and stops when the adapter
//!    sends the endpoint (no mesh, a channel sink). Before each change the
//!    service's long-poll is parked again, so the pacing (`min_query_interval`,
//!    `jitter`, defaults) is not in the figure: it delays only a change that
//!    follows another within `min_query_interval`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anymesh_adapter_consul::{ConsulConfig, ConsulRegistry, Interest};
use anymesh_core::{Change, ChangeSink, Mapping, Registry, SourceId};
use anymesh_testkit::consul::{Instance, CATALOG};
use anymesh_testkit::wait::Poll;
use anymesh_testkit::FakeConsul;
use tokio::sync::{mpsc, watch};

struct Options {
    services: usize,
    changes: usize,
}

fn options() -> Options {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // too, without it: then a quick run that only checks it still works.
    let quick = !std::env::args().any(|a| a == "--bench");
    let mut o = if quick {
        Options {
            services: 300,
            changes: 20,
        }
    } else {
        Options {
            services: 5000,
            changes: 200,
        }
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let n = |v: Option<String>| v.and_then(|v| v.parse().ok());
        match a.as_str() {
            "--services" => o.services = n(args.next()).unwrap_or(o.services),
            "--changes" => o.changes = n(args.next()).unwrap_or(o.changes),
            _ => {}
        }
    }
    o
}

/// Yields between checks instead of sleeping: the bench times how soon a
/// change lands.
async fn wait_for(what: &str, check: impl FnMut() -> bool) {
    Poll::new()
        .deadline(Duration::from_secs(60))
        .every(Duration::ZERO)
        .until(what, check)
        .await
}

fn start(
    fake: &FakeConsul,
    watch_all: bool,
    interest: watch::Receiver<Interest>,
) -> (
    mpsc::Receiver<anymesh_core::SourcedChange>,
    tokio::task::JoinHandle<()>,
) {
    let mut c = ConsulConfig::new(fake.url());
    c.watch_all = watch_all;
    let reg = ConsulRegistry::new(SourceId::new("consul"), c, None)
        .expect("registry")
        .with_interest(interest, Arc::new(Mapping::default()));
    let (tx, rx) = mpsc::channel(16_384);
    let sink = ChangeSink::new(SourceId::new("consul"), tx);
    let task = tokio::spawn(async move { reg.run(sink).await });
    (rx, task)
}

async fn first_reset(rx: &mut mpsc::Receiver<anymesh_core::SourcedChange>) -> usize {
    loop {
        let c = rx.recv().await.expect("a change");
        if let Change::Reset(v) = c.change {
            return v.endpoints.len();
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = options();
    let fake = FakeConsul::start().await;
    for i in 0..o.services {
        let port = 10_000 + (i % 50_000) as u16;
        fake.register(Instance::new(
            &format!("app-{i}"),
            &format!("i{i}"),
            "127.0.0.1",
            port,
        ));
    }
    let routed = ["app-1", "app-2", "app-3"];
    println!("# Consul registry against the fake agent\n");
    println!("catalog: {} services, one instance each\n", o.services);
    println!("| measurement | result |\n|---|---|");

    // 1. Sync, following the referenced services only.
    let (_tx, rx_interest) = watch::channel(Interest::hosts(routed));
    let t = Instant::now();
    let (mut rx, task) = start(&fake, false, rx_interest.clone());
    let n = first_reset(&mut rx).await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    wait_for("3 long-polls and the catalog's", || {
        fake.blocked_services().len() == 3 && fake.open_blocking(CATALOG) == 1
    })
    .await;
    println!(
        "| sync, 3 services referenced | {ms:.1} ms to the first Reset ({n} endpoints); long-polls held by the agent: {} + catalog {} |",
        fake.blocked_services().len(),
        fake.open_blocking(CATALOG)
    );

    // 2. Propagation of one registration at a time.
    let mut lat = Vec::with_capacity(o.changes);
    for k in 0..o.changes {
        wait_for("the long-poll parked", || fake.open_blocking("app-2") == 1).await;
        let id = format!("extra-{k}");
        let t = Instant::now();
        fake.register(Instance::new("app-2", &id, "127.0.0.2", 20_000));
        loop {
            let c = rx.recv().await.expect("a change");
            if matches!(&c.change, Change::UpsertEndpoint(ep) if ep.provenance.native_id.ends_with(&id))
            {
                break;
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "| propagation, register → endpoint sent ({} changes) | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms |",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    task.abort();
    wait_for("the long-polls closed", || {
        fake.blocked_services().is_empty()
    })
    .await;

    // 3. Sync with watch_all.
    let t = Instant::now();
    let (mut rx, task) = start(&fake, true, rx_interest);
    let n = first_reset(&mut rx).await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let want = o.services + 1; // and the `consul` service
    wait_for("every long-poll", || fake.blocked_services().len() == want).await;
    println!(
        "| sync, `watch_all` | {ms:.1} ms to the first Reset ({n} endpoints); long-polls held by the agent: {} + catalog {} |",
        fake.blocked_services().len(),
        fake.open_blocking(CATALOG)
    );
    task.abort();
}
