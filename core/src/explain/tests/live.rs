//! Policies and the running proxy's health verdicts and counters, rendered.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::explain::live::{
    ActiveCheck, ActiveVerdict, ClusterCounters, ClusterHealth, EjectionCause, Fused, HealthMode,
    HealthSources, OutlierStatus,
};

const RESILIENT: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}\n    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n      retryBudget: {percent: 25, minRetryConcurrency: 5}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 90\n    - destination: {host: reviews, subset: v2}\n      weight: 10\n";

fn explained() -> Explanation {
    let snap = catalog(false);
    let (set, diags) = load_str("routes.yaml", RESILIENT);
    assert!(diags.is_empty(), "{diags:?}");
    let table = compile(&snap, &set, 5).0;
    let mut x = explain(&snap, &table, "reviews", &LocalProxy::default()).unwrap();
    x.set_default_retry_budget(&RetryBudget::Rate {
        ratio: 0.2,
        window: Duration::from_secs(10),
        min_per_second: 10,
    });
    x
}

fn lines_of<'t>(text: &'t str, start: &str) -> Vec<&'t str> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with(start))
        .take(8)
        .map(str::trim)
        .collect()
}

#[test]
fn offline_shows_the_policies_and_says_it_is_offline() {
    let x = explained();
    assert!(!x.live);
    let text = x.render(at(40));
    assert!(
        text.contains("  offline: the policies as configured; health verdicts and counters come only from the running proxy"),
        "{text}"
    );
    let v1 = lines_of(&text, V1);
    assert_eq!(
        v1[1],
        "retry budget: retries at most 20% of requests over 10s plus 10/s (the proxy default, anymesh.yaml retry_budget: the DestinationRule sets none)",
        "{text}"
    );
    assert_eq!(
        v1[2],
        "connection pool: tcp.maxConnections 1, http.http1MaxPendingRequests 1"
    );
    assert_eq!(
        v1[3],
        "outlier detection: consecutive5xxErrors 2, interval 1s, baseEjectionTime 30s, maxEjectionPercent 100, minHealthPercent 0"
    );
    assert!(v1[4].starts_with("locality: "), "{v1:?}");
    let v2 = lines_of(&text, V2);
    assert_eq!(
        v2[1],
        "retry budget: retries in flight at most 25% of active requests, at least 5 (the DestinationRule's retryBudget)"
    );
    assert!(
        !text.contains("counters:") && !text.contains("active check"),
        "{text}"
    );
}

/// The proxy's view of r1 in v1: ejected (2nd time) while its active check
/// passes; the cluster has nothing else, so it is not routable.
fn make_live(x: &mut Explanation) {
    x.live = true;
    for c in &mut x.clusters {
        let health = ClusterHealth::assess(c.eligible, 0, 0);
        c.live = Some(ClusterLive {
            counters: ClusterCounters {
                retries: 7,
                retry_budget_exhausted: 2,
                retry_limit_exceeded: 1,
                overflows: BTreeMap::from([("max_connections".into(), 0), ("pending".into(), 3)]),
                waited: 4,
                pending: 0,
                retries_in_flight: 0,
            },
            health,
        });
    }
    let r1 = x
        .endpoints
        .iter_mut()
        .find(|e| e.native_id == "r1")
        .unwrap();
    let v = r1.clusters.iter_mut().find(|v| v.cluster == V1).unwrap();
    let outlier = OutlierStatus::Ejected {
        // 12:03:41 UTC.
        until: UNIX_EPOCH + Duration::from_secs(19_700 * 86_400 + 12 * 3600 + 3 * 60 + 41),
        remaining_ms: 27_500,
        cause: EjectionCause::Consecutive5xx,
        failures: 5,
        nth: 2,
    };
    let active = ActiveCheck {
        verdict: ActiveVerdict::Passing,
        check: Some("http reviews".into()),
        last_probe: Some(at(38)),
        last_failure: None,
        consecutive_passes: 3,
        consecutive_failures: 0,
        probes: 9,
    };
    v.health = Some(HealthSources {
        fused: Fused::of(active.verdict, &outlier, HealthMode::NoneRoutable),
        active,
        outlier,
    });
}

#[test]
fn live_shows_each_health_source_the_fused_verdict_and_the_counters() {
    let mut x = explained();
    make_live(&mut x);
    let text = x.render(at(40));
    assert!(!text.contains("offline:"), "{text}");
    let v1 = lines_of(&text, V1);
    assert_eq!(
        v1[5],
        "counters: 7 retries, 2 refused by the retry budget, 1 out of attempts; overflows: pending 3; 4 waited for a connection, 0 waiting now",
        "{text}"
    );
    assert_eq!(
        v1[6],
        "health: NO ENDPOINT ROUTABLE, 0 of 1 endpoints routable (panic threshold 0%): requests get 503 no healthy upstream (UH)"
    );
    let r1 = lines_of(&text, "10.0.0.1 port 9080");
    assert_eq!(
        r1[2], "registry health healthy, weight 1, locality -",
        "{r1:?}"
    );
    let at_v1 = r1.iter().position(|l| l.starts_with(V1)).unwrap();
    assert_eq!(
        &r1[at_v1..at_v1 + 4],
        [
            "outbound|9080|v1|reviews  eligible -> 10.0.0.1:9080",
            "active check: passing (http reviews, last probe 22:13:58 (2s ago), 3 passes in a row, 9 probes)",
            "outlier detection: ejected until 12:03:41 after 5 consecutive 5xx, 2nd ejection (28s left)",
            "=> not routable: ejected by outlier detection",
        ],
        "{text}"
    );
    assert!(text.contains("\nendpoints (5; times UTC):\n"), "{text}");
}

#[test]
fn panic_mode_is_named_on_the_endpoint_and_the_cluster() {
    let mut x = explained();
    make_live(&mut x);
    let c = x.clusters.iter_mut().find(|c| c.name == V1).unwrap();
    if let Some(live) = &mut c.live {
        live.health = ClusterHealth::assess(1, 0, 50);
    }
    let r1 = x
        .endpoints
        .iter_mut()
        .find(|e| e.native_id == "r1")
        .unwrap();
    let v = r1.clusters.iter_mut().find(|v| v.cluster == V1).unwrap();
    if let Some(h) = &mut v.health {
        h.active = ActiveCheck::none(ActiveVerdict::Failing);
        h.fused = Fused::of(ActiveVerdict::Failing, &h.outlier, HealthMode::Panic);
    }
    let text = x.render(at(40));
    assert!(
        text.contains("    health: PANIC MODE, 0 of 1 endpoints routable (panic threshold 50%): every endpoint takes traffic, health ignored\n"),
        "{text}"
    );
    assert!(text.contains("      active check: failing\n"), "{text}");
    assert!(
        text.contains("      => routable in panic mode (health ignored), though failing its active health check and ejected by outlier detection\n"),
        "{text}"
    );
}

#[test]
fn live_json_shape() {
    let mut x = explained();
    make_live(&mut x);
    let v = serde_json::to_value(&x).unwrap();
    assert_eq!(v["live"], true);
    let c = &v["clusters"][0];
    assert_eq!(c["name"], V1);
    assert_eq!(c["retry_budget"]["from"], "proxy_default");
    assert_eq!(c["policy"]["outlier"]["consecutive_5xx"], 2);
    assert_eq!(c["live"]["counters"]["overflows"]["pending"], 3);
    assert_eq!(c["live"]["health"]["mode"], "none_routable");
    let r1 = &v["endpoints"][0];
    let h = &r1["clusters"][0]["health"];
    assert_eq!(r1["clusters"][0]["cluster"], V1);
    assert_eq!(h["active"]["verdict"], "passing");
    assert_eq!(h["outlier"]["state"], "ejected");
    assert_eq!(h["outlier"]["cause"], "consecutive_5xx");
    assert_eq!(h["outlier"]["nth"], 2);
    let until = 19_700 * 86_400 + 12 * 3600 + 3 * 60 + 41;
    assert_eq!(h["outlier"]["until"], serde_json::json!(f64::from(until)));
    assert_eq!(
        h["active"]["last_probe"],
        serde_json::json!(1_700_000_038.0)
    );
    assert_eq!(h["fused"]["verdict"], "out");
    assert_eq!(h["fused"]["out"], serde_json::json!(["ejected"]));
    // Offline: no live keys at all.
    let v = serde_json::to_value(explained()).unwrap();
    assert_eq!(v["live"], false);
    assert!(v["clusters"][0].get("live").is_none());
    assert!(v["endpoints"][0]["clusters"][0].get("health").is_none());
}
