//! The listener threads that serve traffic.
//!
//! They run apart from the control thread (registries, routing reloads and
//! compiles, admin), so that a large registry change being parsed and
//! compiled never holds up a request. Each runs its own single-threaded
//! runtime, so a connection, its tasks and its upstream connections stay on
//! one thread (as nginx's workers do); the first accepts and deals the
//! connections out in turn.

use std::sync::Arc;

use anyhow::Context;
use anymesh_identity::Identity;
use anymesh_proxy::inbound::{serve_inbound, Inbound};
use anymesh_proxy::server::{serve_connections, Connections, ServerSettings};
use anymesh_proxy::{Metrics, Proxy, Router, UpstreamSettings};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::stopped;
use crate::settings::Settings;

/// The inbound listener and what its connections are served with.
pub(super) struct InboundListener {
    pub listener: TcpListener,
    pub inbound: Arc<Inbound>,
    /// The inbound route table's router (one virtual host per workload port).
    pub router: Arc<Router>,
}

/// Starts `settings.listeners.threads` listener threads serving the
/// connections `outbound` (and `inbound`, when the proxy fronts workloads)
/// accepts. Returns once every thread serves; the mesh's shutdown (a task
/// in `tasks` per thread) waits for each one's drain.
#[allow(clippy::too_many_arguments)] // the wiring of what every thread serves with
pub(super) async fn start(
    settings: &Settings,
    outbound: TcpListener,
    inbound: Option<InboundListener>,
    router: Arc<Router>,
    (metrics, telemetry): (Arc<Metrics>, Arc<anymesh_proxy::telemetry::Telemetry>),
    identity: Option<Arc<Identity>>,
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = Listener {
        router,
        metrics,
        upstream: UpstreamSettings {
            connect_timeout: settings.upstream.connect_timeout,
            pool_idle_timeout: settings.upstream.pool_idle_timeout,
            pool_max_idle_per_host: settings.upstream.pool_max_idle_per_host,
            mirror_shadow_suffix: settings.mirror_shadow_suffix,
            identity,
            trust_domain: Arc::from(settings.mesh.trust_domain.as_str()),
            telemetry,
        },
        inbound: inbound
            .as_ref()
            .map(|i| (i.inbound.clone(), i.router.clone())),
        server: ServerSettings {
            header_read_timeout: settings.listeners.header_read_timeout,
            idle_timeout: None,
        },
        stop: stop.clone(),
    };
    let mut others = Vec::new();
    let mut inbound_others = Vec::new();
    for i in 1..settings.listeners.threads.max(1) {
        let (tx, conns) = Connections::handoff();
        others.push(tx);
        let (tx, inbound_conns) = Connections::handoff();
        inbound_others.push(tx);
        let done = listener
            .spawn(i, move || Ok((conns, Some(inbound_conns))))
            .await?;
        tasks.spawn(done);
    }
    let outbound = outbound
        .into_std()
        .context("cannot hand the outbound listener to its thread")?;
    let inbound = inbound
        .map(|i| i.listener.into_std())
        .transpose()
        .context("cannot hand the inbound listener to its thread")?;
    let done = listener
        .spawn(0, move || {
            let inbound = match inbound {
                Some(l) => Some(Connections::Accept {
                    listener: TcpListener::from_std(l)?,
                    others: inbound_others,
                }),
                None => None,
            };
            Ok((
                Connections::Accept {
                    listener: TcpListener::from_std(outbound)?,
                    others,
                },
                inbound,
            ))
        })
        .await?;
    tasks.spawn(done);
    Ok(())
}

/// What every listener thread serves with.
struct Listener {
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    upstream: UpstreamSettings,
    server: ServerSettings,
    /// The inbound listener's state and router, when it runs.
    inbound: Option<(Arc<Inbound>, Arc<Router>)>,
    stop: watch::Receiver<bool>,
}

impl Listener {
    /// Starts listener thread `i`, which serves the connections `conns`
    /// gives (called on that thread, inside its runtime). Returns once the
    /// thread serves, or with the reason it cannot; the returned future ends
    /// when the thread has drained and stopped.
    async fn spawn(
        &self,
        i: usize,
        conns: impl FnOnce() -> std::io::Result<(Connections, Option<Connections>)> + Send + 'static,
    ) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let (router, metrics, upstream, server, stop) = (
            self.router.clone(),
            self.metrics.clone(),
            self.upstream.clone(),
            self.server,
            self.stop.clone(),
        );
        let inbound = self.inbound.clone();
        std::thread::Builder::new()
            .name(format!("anymesh-listener-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(format!("cannot start its runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    match conns() {
                        Ok((conns, inbound_conns)) => {
                            let _ = started_tx.send(Ok(()));
                            // The inbound side forwards to the application on
                            // loopback: plaintext, the proxy's own settings.
                            let serving_inbound =
                                inbound.zip(inbound_conns).map(|((state, router), conns)| {
                                    let local = UpstreamSettings {
                                        identity: None,
                                        ..upstream.clone()
                                    };
                                    let proxy =
                                        Arc::new(Proxy::new(router, metrics.clone(), &local));
                                    serve_inbound(conns, state, proxy, stopped(stop.clone()))
                                });
                            let proxy = Arc::new(Proxy::new(router, metrics, &upstream));
                            let outbound = serve_connections(conns, proxy, server, stopped(stop));
                            match serving_inbound {
                                Some(inbound) => {
                                    tokio::join!(outbound, inbound);
                                }
                                None => outbound.await,
                            }
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(format!("cannot listen: {e}")));
                        }
                    }
                });
                drop(done_tx);
            })
            .context("cannot start a listener thread")?;
        // A mesh missing a listener thread would serve with less than it was
        // configured for, quietly: it does not start instead.
        match started_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("listener thread {i} {e}"),
            Err(_) => anyhow::bail!("listener thread {i} ended before it started serving"),
        }
        Ok(async move {
            let _ = done_rx.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener thread that cannot serve makes the start fail with the
    /// reason, instead of a mesh that runs short of a thread.
    #[tokio::test]
    async fn a_listener_thread_that_cannot_listen_fails_the_start() {
        let mut registry = prometheus_client::registry::Registry::default();
        let (_stop_tx, stop) = watch::channel(false);
        let listener = Listener {
            router: Arc::new(Router::new()),
            metrics: Arc::new(Metrics::new(&mut registry)),
            upstream: UpstreamSettings::default(),
            server: ServerSettings::default(),
            inbound: None,
            stop,
        };
        let failed = listener
            .spawn(3, || Err(std::io::Error::other("no sockets left")))
            .await;
        let err = failed.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert_eq!(err, "listener thread 3 cannot listen: no sockets left");
        let (_tx, conns) = Connections::handoff();
        let started = listener.spawn(4, move || Ok((conns, None))).await;
        assert!(started.is_ok(), "a thread that can serve starts");
    }
}
