//! Active health checks through the running mesh: an endpoint whose health
//! path starts failing leaves routing before any client request fails,
//! and returns once it passes again.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anymesh_proxy::health::{HealthBoard, Verdict};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::harness::*;

/// An upstream whose health path (`/healthz`) and application (every other
/// path) can each be told to answer 503.
struct App {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    serving: Arc<AtomicBool>,
    probes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl App {
    async fn start(name: &'static str) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let healthy = Arc::new(AtomicBool::new(true));
        let serving = Arc::new(AtomicBool::new(true));
        let probes = Arc::new(AtomicUsize::new(0));
        let (h, s, p) = (healthy.clone(), serving.clone(), probes.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (h, s, p) = (h.clone(), s.clone(), p.clone());
                let svc = service_fn(move |req: Request<Incoming>| {
                    let up = if req.uri().path() == "/healthz" {
                        p.fetch_add(1, Ordering::SeqCst);
                        h.load(Ordering::SeqCst)
                    } else {
                        s.load(Ordering::SeqCst)
                    };
                    let status = if up {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    async move {
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
                        *resp.status_mut() = status;
                        resp.headers_mut()
                            .insert("x-upstream", http::HeaderValue::from_static(name));
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        App {
            addr,
            healthy,
            serving,
            probes,
            task,
        }
    }

    fn endpoint(&self, id: &str) -> String {
        format!(
            "      - {{address: 127.0.0.1, port: {}, id: {id}}}\n",
            self.addr.port()
        )
    }
}

fn verdict(board: &HealthBoard, app: &App) -> Option<Verdict> {
    board.get(&app.addr.to_string()).map(|h| h.verdict)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_path_takes_an_endpoint_out_before_requests_fail() {
    let apps = [
        App::start("a").await,
        App::start("b").await,
        App::start("sick").await,
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let endpoints: Vec<String> = apps
        .iter()
        .zip(["a", "b", "sick"])
        .map(|(app, id)| app.endpoint(id))
        .collect();
    let services_file = dir.path().join("services.yaml");
    write(&services_file, &services("web", "http", &endpoints));
    let mesh = TestMesh::start_with_settings(
        &format!(
            "[{{name: file, type: file, path: {}, poll_interval: 200ms}}]",
            services_file.display()
        ),
        "",
        "health_checks:\n\
         \x20 - service: web\n\
         \x20   http: {path: /healthz}\n\
         \x20   interval: 200ms\n\
         \x20   timeout: 150ms\n\
         \x20   unhealthy_threshold: 2\n\
         \x20   healthy_threshold: 2\n",
    )
    .await;
    let board = mesh.mesh.health.clone().expect("health checks run");
    let sick = &apps[2];

    let load = Load::start(&mesh, "web");
    eventually("every endpoint passing and in use", || async {
        let passing = apps
            .iter()
            .all(|a| verdict(&board, a) == Some(Verdict::Passing));
        (passing && load.seen("sick") > 20).then_some(())
    })
    .await;

    // The health path fails first (as an app about to stop would say so);
    // the endpoint leaves routing.
    sick.healthy.store(false, Ordering::SeqCst);
    eventually("sick marked failing", || async {
        (verdict(&board, sick) == Some(Verdict::Failing)).then_some(())
    })
    .await;
    let state = board.get(&sick.addr.to_string()).expect("on the board");
    assert_eq!(state.consecutive_failures, 2);
    assert!(state.last.is_some_and(|l| !l.passed()));
    // Requests picked just before the verdict reached the balancer may still
    // be on their way to it: wait for a window of traffic none of which it
    // answered, then let the application fail.
    eventually("traffic off the failing endpoint", || async {
        load.next_epoch();
        anymesh_testkit::wait::Poll::new()
            .until("a window of traffic on the others", || {
                load.seen("a") + load.seen("b") > 50
            })
            .await;
        (load.seen("sick") == 0).then_some(())
    })
    .await;
    load.next_epoch();
    // Now the application fails too: no client request may see it.
    sick.serving.store(false, Ordering::SeqCst);
    eventually("traffic on the others", || async {
        (load.seen("a") + load.seen("b") > 200).then_some(())
    })
    .await;
    assert_eq!(load.seen("sick"), 0, "a failing endpoint got requests");
    let probes = sick.probes.load(Ordering::SeqCst);
    eventually("it is still probed", || async {
        (sick.probes.load(Ordering::SeqCst) > probes + 2).then_some(())
    })
    .await;

    // Healthy again: it returns once its passes reach the threshold.
    sick.serving.store(true, Ordering::SeqCst);
    sick.healthy.store(true, Ordering::SeqCst);
    eventually("sick passing again", || async {
        (verdict(&board, sick) == Some(Verdict::Passing)).then_some(())
    })
    .await;
    load.next_epoch();
    eventually("traffic on sick again", || async {
        (load.seen("sick") > 20).then_some(())
    })
    .await;

    let (total, failures) = load.finish().await;
    assert!(total > 0);
    assert!(failures.is_empty(), "client requests failed: {failures:?}");
    mesh.mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_health_checks_nothing_is_probed() {
    let app = App::start("a").await;
    let mesh = TestMesh::start(&services("web", "http", &[app.endpoint("a")]), "").await;
    assert!(mesh.mesh.health.is_none());
    let (status, who, _) = mesh.get("web", "/", &[]).await;
    assert_eq!((status, who.as_str()), (StatusCode::OK, "a"));
    assert_eq!(app.probes.load(Ordering::SeqCst), 0);
}
