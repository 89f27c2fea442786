//! The active health checker, started when `anymesh.yaml` lists
//! `health_checks`; it follows the router's tables and stops with the mesh.

use std::sync::Arc;

use anymesh_proxy::health::{HealthBoard, HealthChecker};
use anymesh_proxy::Router;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::settings::Settings;

/// Starts the checker (none without checks); its board shows each probed
/// endpoint's state.
pub(super) fn start(
    settings: &Settings,
    router: Arc<Router>,
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> Option<Arc<HealthBoard>> {
    if settings.health_checks.is_empty() {
        return None;
    }
    let checker = HealthChecker::new(
        settings.active_health_checks(),
        settings.max_concurrent_probes,
    );
    let board = checker.board();
    let running = checker.spawn(router, stop.clone());
    tasks.spawn(async move {
        let _ = running.await;
    });
    Some(board)
}
