//! Telemetry checked against the real tools: a real Prometheus scrapes
//! Istio-style expositions and the PromQL of Istio's Grafana dashboards runs
//! against it (docs/telemetry.md, "Prometheus, Grafana and Kiali").
//!
//! [`prometheus::Prometheus`] runs Prometheus, [`dashboards::dashboard_queries`]
//! gives the dashboards' queries with their variables substituted, and
//! [`check_dashboards`] runs them all and says which failed. Two sets of
//! targets: two real anymesh proxies carrying traffic between three services
//! ([`mesh::ThreeServices`], the `live` test), and
//! [`exposition::StaticSidecar`]s serving what Istio's own sidecars report
//! (the `static` test: it also covers the TCP panels, which the proxies
//! cannot feed until they proxy TCP).

mod dashboards;
mod exposition;
mod live;
mod mesh;
mod prometheus;

use std::collections::BTreeSet;
use std::time::Duration;

use dashboards::{dashboard_queries, DashboardQuery, Substitutions};
use exposition::{StaticSidecar, CODES};
use prometheus::Prometheus;

/// How long the first scrapes may take (Prometheus scrapes every second).
const SCRAPE_DEADLINE: Duration = Duration::from_secs(20);

/// Why a dashboard query returns nothing from a faithful Istio exposition, if
/// it cannot: the panels that split on `connection_security_policy="mutual_tls"`
/// while reading the client side's reports. Istio's client proxy reports the
/// policy as `unknown` (only the server's proxy knows whether the hop was
/// mutual TLS), so those panels stay empty with Istio too; their
/// `!="mutual_tls"` twins show that traffic.
pub(crate) fn empty_by_design(expr: &str) -> Option<&'static str> {
    let e: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    let client_side = e.contains("reporter=\"source\"") || e.contains("reporter=~\"source\"");
    (client_side && e.contains("connection_security_policy=\"mutual_tls\""))
        .then_some(CLIENT_SIDE_MTLS)
}

/// [`empty_by_design`]'s reason.
pub(crate) const CLIENT_SIDE_MTLS: &str = "mutual TLS on the client side's reports: Istio's \
     client proxy reports connection_security_policy=\"unknown\"";

/// Says why a query must return nothing ([`check_dashboards`]), or `None`
/// when it must answer.
pub(crate) type ExpectEmpty = fn(&str) -> Option<&'static str>;

/// What [`check_dashboards`] found.
#[derive(Debug, Default)]
pub(crate) struct DashboardCheck {
    /// Queries that returned series, all of finite value.
    pub(crate) answered: usize,
    /// Queries that returned nothing, as expected, with the reason.
    pub(crate) empty: Vec<(String, &'static str)>,
    /// Queries whose outcome is wrong, with what happened.
    pub(crate) failures: Vec<String>,
}

/// Runs every dashboard query for each substitution set (each distinct
/// expression once): a query must return at least one series with finite
/// values (NaN would be a rate or percentile over nothing), except the ones
/// `expect_empty` gives a reason for, which must return nothing.
pub(crate) async fn check_dashboards(
    prom: &Prometheus,
    passes: &[Substitutions],
    expect_empty: ExpectEmpty,
) -> DashboardCheck {
    let mut seen = BTreeSet::new();
    let mut check = DashboardCheck::default();
    for subs in passes {
        for q in dashboard_queries(subs) {
            if !seen.insert(q.expr.clone()) {
                continue;
            }
            check_one(prom, &q, expect_empty, &mut check).await;
        }
    }
    check
}

async fn check_one(
    prom: &Prometheus,
    q: &DashboardQuery,
    expect_empty: ExpectEmpty,
    check: &mut DashboardCheck,
) {
    let samples = match prom.query(&q.expr).await {
        Ok(s) => s,
        Err(e) => {
            check.failures.push(format!("{q}: {e:#}\n  {}", q.expr));
            return;
        }
    };
    match (expect_empty(&q.expr), samples.is_empty()) {
        (Some(why), true) => check.empty.push((q.to_string(), why)),
        (Some(why), false) => check.failures.push(format!(
            "{q}: expected no series ({why}), got {samples:?}\n  {}",
            q.expr
        )),
        (None, true) => check.failures.push(format!("{q}: no series\n  {}", q.expr)),
        (None, false) => {
            if let Some(bad) = samples.iter().find(|s| !s.value.is_finite()) {
                check.failures.push(format!(
                    "{q}: a value that is not finite: {bad:?}\n  {}",
                    q.expr
                ));
            } else {
                check.answered += 1;
            }
        }
    }
}

/// The substitutions for the Bookinfo mesh: the Service dashboard on reviews,
/// the Workload dashboard on reviews-v1 (inbound from productpage and the
/// plain-text client, outbound to ratings), once per reporter.
pub(crate) fn bookinfo_passes() -> Vec<Substitutions> {
    ["destination", "source"]
        .into_iter()
        .map(|qrep| {
            Substitutions::for_dashboards(
                "reviews.default.svc.cluster.local",
                "default",
                "reviews-v1",
                qrep,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_dashboard_queries_answer_from_a_static_istio_exposition() {
    let mut sidecars = Vec::new();
    for e in exposition::bookinfo_mesh() {
        sidecars.push(StaticSidecar::start(e).await);
    }
    let targets: Vec<_> = sidecars.iter().map(StaticSidecar::addr).collect();
    let Some(prom) = Prometheus::start(&targets).await else {
        return;
    };
    // Two scrapes of each target: every series has two samples, so every
    // rate has a value. (Prometheus 2.42 hands its targets to the scrape loops
    // about 5 s after it starts, its discovery manager's update tick: most of
    // this test's time.)
    prom.wait_for_scrapes(2, SCRAPE_DEADLINE).await;
    assert!(sidecars.iter().all(|s| s.scrapes() >= 2));

    let check = check_dashboards(&prom, &bookinfo_passes(), empty_by_design).await;
    eprintln!(
        "prometheus at {}: {} dashboard queries answered, {} empty by design (mutual TLS on the client side)",
        prom.addr(),
        check.answered,
        check.empty.len(),
    );
    assert!(
        check.failures.is_empty(),
        "{} dashboard queries failed:\n{}\nprometheus log:\n{}",
        check.failures.len(),
        check.failures.join("\n"),
        prom.log()
    );
    // Every distinct query ran, and the empty ones are exactly the mutual-TLS
    // twins on the client side: with reporter destination (the dashboards'
    // default), the Workload dashboard's 15 outbound ones (its requests panel
    // splits on destination_principal instead, and answers); with reporter
    // source, 16 in the Service dashboard's client row and 16 in the Workload
    // dashboard's inbound row.
    let distinct: BTreeSet<String> = bookinfo_passes()
        .iter()
        .flat_map(dashboard_queries)
        .map(|q| q.expr)
        .collect();
    assert_eq!(check.answered + check.empty.len(), distinct.len());
    assert_eq!(check.empty.len(), 15 + 16 + 16, "{check:#?}");

    // The numbers are the exposition's, not just present: 9 in 10 responses
    // are not 5xx, on every hop.
    let mesh = dashboard_queries(&bookinfo_passes()[0]);
    let success = mesh
        .iter()
        .find(|q| q.panel == "Success Rate")
        .expect("the Mesh dashboard's Success Rate panel");
    let samples = prom.query(&success.expr).await.expect("success rate");
    let non_5xx: u64 = CODES.iter().filter(|(c, _)| *c < 500).map(|(_, n)| n).sum();
    let all: u64 = CODES.iter().map(|(_, n)| n).sum();
    let want = non_5xx as f64 / all as f64;
    assert!(
        samples.len() == 1 && (samples[0].value - want).abs() < 1e-9,
        "success rate {samples:?}, want {want}"
    );
    // Istio's build info reaches the Mesh dashboard's versions panel.
    let build = prom
        .wait_for_series("istio_build{component=\"proxy\"}", SCRAPE_DEADLINE)
        .await;
    assert_eq!(build.len(), targets.len(), "{build:?}");
}

#[test]
fn every_variable_the_dashboards_use_is_documented_and_substituted() {
    let origin = dashboards::origin();
    assert_eq!(origin.repository, "https://github.com/istio/istio");
    assert_eq!(origin.path, "manifests/addons/dashboards");
    assert!(
        origin.commit.len() == 40 && origin.commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{}",
        origin.commit
    );
    let documented: BTreeSet<String> = dashboards::variables()
        .into_iter()
        .inspect(|v| assert!(!v.meaning.is_empty(), "${} has no meaning", v.name))
        .map(|v| v.name)
        .collect();
    let raw = dashboard_queries(&everything_as_itself(&documented));
    let used: BTreeSet<String> = raw
        .iter()
        .flat_map(|q| dashboards::variables_in(&q.expr))
        .collect();
    assert_eq!(used, documented, "variables used vs documented");

    for subs in bookinfo_passes() {
        let queries = dashboard_queries(&subs);
        let per_dashboard = |id| queries.iter().filter(|q| q.grafana_com_id == id).count();
        assert_eq!(
            (
                per_dashboard(7639),
                per_dashboard(7636),
                per_dashboard(7630)
            ),
            (12, 76, 71)
        );
        for q in &queries {
            assert!(!q.expr.contains('$'), "{q}: {}", q.expr);
        }
    }
}

/// Substitutions that put `$name` back for each name: the queries as copied.
fn everything_as_itself(names: &BTreeSet<String>) -> Substitutions {
    names
        .iter()
        .fold(Substitutions::default(), |s, n| s.set(n, &format!("${n}")))
}

#[test]
fn substitution_replaces_every_form_and_refuses_unknown_variables() {
    let subs = Substitutions::default()
        .set("qrep", "source|destination")
        .set("__rate_interval", "1m");
    assert_eq!(
        dashboards::substitute("rate(x{reporter=~\"$qrep\"}[${__rate_interval}])", &subs),
        Ok("rate(x{reporter=~\"source|destination\"}[1m])".to_owned())
    );
    assert!(dashboards::substitute("x{a=\"$service\"}", &subs)
        .expect_err("unknown")
        .contains("$service"));
    assert!(dashboards::substitute("x $", &subs).is_err());
    assert!(dashboards::substitute("x ${qrep", &subs).is_err());
}

#[test]
fn the_client_sides_mutual_tls_panels_are_the_ones_empty_by_design() {
    assert!(empty_by_design(
        r#"sum(irate(istio_requests_total{reporter="source", connection_security_policy="mutual_tls"}[1m]))"#
    )
    .is_some());
    assert!(empty_by_design(
        r#"sum(irate(istio_requests_total{reporter=~"source",connection_security_policy="mutual_tls"}[1m]))"#
    )
    .is_some());
    assert!(empty_by_design(
        r#"sum(irate(istio_requests_total{reporter="source", connection_security_policy!="mutual_tls"}[1m]))"#
    )
    .is_none());
    assert!(empty_by_design(
        r#"sum(irate(istio_requests_total{reporter=~"destination", connection_security_policy="mutual_tls"}[1m]))"#
    )
    .is_none());
}

#[test]
fn the_exposition_grows_and_uses_envoys_buckets() {
    let e = &exposition::bookinfo_mesh()[1];
    let first = exposition::render(e, 1);
    let second = exposition::render(e, 2);
    assert_ne!(first, second);
    for le in exposition::ENVOY_BUCKETS {
        assert!(first.contains(&format!("le=\"{le}\"")), "le={le}");
    }
    assert!(first.contains("le=\"3600000\""));
    // One TYPE line per family: the families are contiguous.
    let types: Vec<&str> = first.lines().filter(|l| l.starts_with("# TYPE")).collect();
    let distinct: BTreeSet<&str> = types.iter().copied().collect();
    assert_eq!(types.len(), distinct.len());
    assert!(first.contains("connection_security_policy=\"mutual_tls\""));
    assert!(first.contains("connection_security_policy=\"none\""));
    assert!(first.contains("connection_security_policy=\"unknown\""));
    assert!(first.contains("source_canonical_revision=\"latest\""));
}
