//! An agent restart with its index reset while the catalog changed during
//! the downtime: the adapter resyncs in full and keeps nothing stale — an
//! instance deregistered meanwhile and a whole service gone from the
//! catalog both leave — and changes keep flowing at the low index.

use std::sync::Arc;
use std::time::Duration;

use anymesh_adapter_consul::{ConsulConfig, ConsulRegistry};
use anymesh_core::config::GoDuration;
use anymesh_core::{Change, Hostname, Registry, SourceId, SourceStatus};
use anymesh_testkit::consul::Instance;
use anymesh_testkit::contract::Observer;
use anymesh_testkit::wait::eventually;
use anymesh_testkit::FakeConsul;

fn watch_all(fake: &FakeConsul) -> Arc<dyn Registry> {
    let ms = |n| GoDuration(Duration::from_millis(n));
    let mut c = ConsulConfig::new(fake.url());
    c.watch_all = true;
    c.wait = GoDuration(Duration::from_secs(1));
    c.min_query_interval = ms(10);
    c.jitter = ms(5);
    c.request_timeout = GoDuration(Duration::from_secs(2));
    c.backoff.initial = ms(20);
    c.backoff.max = ms(200);
    match ConsulRegistry::new(SourceId::new("consul"), c, None) {
        Ok(r) => Arc::new(r),
        Err(e) => panic!("{e}"),
    }
}

fn has_service(obs: &Observer, name: &str) -> bool {
    let host = Hostname::new(name).expect("test service name");
    obs.catalog().snapshot(0).services.contains_key(&host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_reset_index_resyncs_and_keeps_nothing_stale() {
    let fake = FakeConsul::start().await;
    fake.register(Instance::new("web", "w1", "127.0.0.1", 8001));
    fake.register(Instance::new("web", "w2", "127.0.0.2", 8001));
    fake.register(Instance::new("api", "a1", "127.0.0.3", 9001));
    let mut obs = Observer::start(watch_all(&fake));
    obs.until_endpoints("web", &[("127.0.0.1", 8001), ("127.0.0.2", 8001)])
        .await;
    obs.until_endpoints("api", &[("127.0.0.3", 9001)]).await;

    // Raise the index well above what the restarted agent will count to,
    // and let the long-polls park at it.
    for _ in 0..40 {
        fake.set_node_meta("node-127.0.0.2", "churn", "x");
    }
    eventually("web and api parked", || {
        fake.open_blocking("web") == 1 && fake.open_blocking("api") == 1
    })
    .await;
    let high = fake.index();

    // The agent goes down; meanwhile w1 leaves, `api` leaves the catalog
    // altogether and w3 arrives. It comes back with its index reset.
    fake.stop();
    fake.deregister("node-127.0.0.1", "w1");
    fake.deregister("node-127.0.0.3", "a1");
    fake.register(Instance::new("web", "w3", "127.0.0.4", 8001));
    fake.reset_index();
    fake.start_again().await;
    assert!(fake.index() < high, "the index went back");

    let resets_before = obs
        .log
        .iter()
        .filter(|c| matches!(c, Change::Reset(_)))
        .count();
    obs.until_endpoints("web", &[("127.0.0.2", 8001), ("127.0.0.4", 8001)])
        .await;
    obs.until("api gone and the source healthy", |c, catalog| {
        let api = Hostname::new("api").expect("host");
        matches!(c, Change::Status(SourceStatus::Healthy))
            && !catalog.snapshot(0).services.contains_key(&api)
    })
    .await;
    assert!(!has_service(&obs, "api"), "nothing stale from `api`");
    assert_eq!(
        obs.endpoints("web"),
        vec![
            ("127.0.0.2".to_string(), 8001),
            ("127.0.0.4".to_string(), 8001)
        ],
        "w1 is not kept"
    );
    let resets_after = obs
        .log
        .iter()
        .filter(|c| matches!(c, Change::Reset(_)))
        .count();
    assert!(
        resets_after > resets_before,
        "a full resync (Reset) after the restart: {:#?}",
        obs.log
    );

    // Changes flow again at the low index: a registration and a
    // deregistration, each seen through a woken long-poll.
    fake.register(Instance::new("web", "w4", "127.0.0.5", 8001));
    obs.until_endpoints(
        "web",
        &[
            ("127.0.0.2", 8001),
            ("127.0.0.4", 8001),
            ("127.0.0.5", 8001),
        ],
    )
    .await;
    fake.deregister("node-127.0.0.2", "w2");
    obs.until_endpoints("web", &[("127.0.0.4", 8001), ("127.0.0.5", 8001)])
        .await;
    // `api` registering again after the restart is picked up too.
    fake.register(Instance::new("api", "a2", "127.0.0.6", 9001));
    obs.until_endpoints("api", &[("127.0.0.6", 9001)]).await;
    assert!(obs.is_running());
}
