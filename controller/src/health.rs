//! The controller's `/metrics`, `/healthz` and `/readyz`.
//!
//! Unlike the agent's (built afresh at each scrape from the speaker's
//! answers), the controller's metrics are counters kept as it works, in one
//! registry made at start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::lease::Leadership;

/// The default `--metrics-address` of `petrel controller` (the agent's
/// port plus one, so both can run on one machine).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9480";

/// The controller's metrics (all prefixed `petrel_controller_`).
#[derive(Debug, Default)]
pub struct Metrics {
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// Addresses newly given to Services.
    pub allocations: Counter,
    /// Services that could get no address, by reason.
    pub allocation_errors: Family<Vec<(String, String)>, Counter>,
    /// Status writes (Services and pools) that succeeded.
    pub status_writes: Counter,
    /// API requests that failed (status writes, Events).
    pub api_errors: Counter,
    /// Pod addresses seen leaked, by reason.
    pub ipam_leak_candidates: Family<Vec<(String, String)>, Counter>,
    /// Leaked pod addresses given back, by reason.
    pub ipam_released: Family<Vec<(String, String)>, Counter>,
}

impl Metrics {
    fn registry(&self) -> Registry {
        let mut reg = Registry::with_prefix("petrel_controller");
        reg.register(
            "leader",
            "1 while this replica leads (holds the Lease, or runs without election)",
            self.leader.clone(),
        );
        reg.register(
            "lb_allocations",
            "LoadBalancer addresses given to Services",
            self.allocations.clone(),
        );
        reg.register(
            "lb_allocation_errors",
            "Times a Service could get no LoadBalancer address, by reason",
            self.allocation_errors.clone(),
        );
        reg.register(
            "status_writes",
            "Status writes to Services and LoadBalancerPools",
            self.status_writes.clone(),
        );
        reg.register(
            "api_errors",
            "Failed status writes and Event publications",
            self.api_errors.clone(),
        );
        reg.register(
            "ipam_leak_candidates",
            "Pod addresses seen leaked (pod gone, pod moved, node gone), by reason",
            self.ipam_leak_candidates.clone(),
        );
        reg.register(
            "ipam_released",
            "Leaked pod addresses given back, by reason",
            self.ipam_released.clone(),
        );
        reg
    }
}

/// What the endpoints read.
#[derive(Clone)]
pub struct Health {
    /// The registry, made once.
    pub registry: Arc<Registry>,
    /// Whether this replica leads.
    pub leadership: Leadership,
    /// The Lease has been read at least once (always true without election).
    pub contact: watch::Receiver<bool>,
    /// The leader's first LoadBalancer pass of this term is done.
    pub synced: Arc<AtomicBool>,
}

impl Health {
    /// The state for `metrics`.
    pub fn new(
        metrics: &Metrics,
        leadership: Leadership,
        contact: watch::Receiver<bool>,
        synced: Arc<AtomicBool>,
    ) -> Self {
        Health {
            registry: Arc::new(metrics.registry()),
            leadership,
            contact,
            synced,
        }
    }
}

/// Serves the endpoints on `addr` until the task is aborted.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
) -> Result<tokio::task::JoinHandle<()>, crate::ControllerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::ControllerError::Metrics { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .with_state(health);
    tracing::info!(%addr, "metrics on /metrics, /healthz, /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }))
}

/// Ready: a standby that can read the Lease, or a leader whose first
/// pass is done (a standby is ready to take over, which is what a rolling
/// update waits for).
async fn readyz(State(h): State<Health>) -> (StatusCode, String) {
    if h.leadership.is_leading() {
        if h.synced.load(Ordering::SeqCst) {
            (
                StatusCode::OK,
                "leading; LoadBalancer addresses in sync\n".into(),
            )
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "leading; first LoadBalancer pass not done yet\n".into(),
            )
        }
    } else if *h.contact.borrow() {
        let holder = h.leadership.holder().unwrap_or_default();
        (StatusCode::OK, format!("standby; leader: {holder}\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the Lease could not be read yet (is the API server reachable?)\n".into(),
        )
    }
}

async fn metrics(
    State(h): State<Health>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    const TYPE: (&str, &str) = (
        "content-type",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    );
    let mut text = String::new();
    match encode(&mut text, &h.registry) {
        Ok(()) => (StatusCode::OK, [TYPE], text),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [TYPE],
            format!("# cannot encode the metrics: {e}\n"),
        ),
    }
}
