//! `/metrics` (Prometheus text format), `/healthz` and `/readyz`.
//!
//! Served from the agent's start. Every scrape asks the speaker (once a
//! usable configuration has started it) for its peers and counts (it answers
//! between events, so a scrape never holds up UPDATE processing) and reads
//! route-sync's latest report, then builds a fresh registry: a peer that is
//! gone leaves no stale series behind.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use bgpd::fsm::State as SessionState;
use bgpd::speaker::{PeerStatus, Speaker, SpeakerSummary};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use route_sync::Report;
use tokio::sync::watch;

/// The default listen address of `--metrics-address`.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9479";

/// How long a scrape waits for the speaker.
const SPEAKER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Ctx {
    /// The speaker, once a usable configuration has started it.
    speaker: watch::Receiver<Option<Speaker>>,
    /// route-sync's report; `None` when the agent leaves the kernel alone.
    fib: Option<watch::Receiver<Report>>,
    /// The agent's tasks that stopped, and why.
    stopped: watch::Receiver<crate::supervise::Stopped>,
    /// The BFD sessions, as the runtime last published them.
    bfd: watch::Receiver<crate::BfdStatus>,
}

/// Serves the endpoints on `addr` until the task is aborted.
pub async fn serve(
    addr: SocketAddr,
    speaker: watch::Receiver<Option<Speaker>>,
    fib: Option<watch::Receiver<Report>>,
    stopped: watch::Receiver<crate::supervise::Stopped>,
    bfd: watch::Receiver<crate::BfdStatus>,
) -> Result<tokio::task::JoinHandle<()>, crate::AgentError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::AgentError::Metrics { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Ctx {
            speaker,
            fib,
            stopped,
            bfd,
        });
    tracing::info!(%addr, "metrics on /metrics, /healthz, /readyz");
    Ok(tokio::spawn(serve_connections(listener, app)))
}

/// At most this many connections are served at once; more wait in the
/// listener's backlog.
const MAX_CONNECTIONS: usize = 32;

/// A request's headers must arrive within this (a client that opens a
/// connection and sends nothing does not hold it).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// No connection lives longer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app`, each connection with the bounds above.
async fn serve_connections(listener: tokio::net::TcpListener, app: Router) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

/// What the speaker says: `Ok(None)` before it started, `Err` if it does
/// not answer.
async fn snapshot(ctx: &Ctx) -> Result<Option<(Vec<PeerStatus>, SpeakerSummary)>, ()> {
    let Some(speaker) = ctx.speaker.borrow().clone() else {
        return Ok(None);
    };
    let peers = tokio::time::timeout(SPEAKER_TIMEOUT, speaker.peers()).await;
    let summary = tokio::time::timeout(SPEAKER_TIMEOUT, speaker.summary()).await;
    match (peers, summary) {
        (Ok(Ok(p)), Ok(Ok(s))) => Ok(Some((p, s))),
        _ => Err(()),
    }
}

/// Alive: the speaker task answers, or none has started yet.
async fn healthz(State(ctx): State<Ctx>) -> (StatusCode, &'static str) {
    match snapshot(&ctx).await {
        Ok(Some(_)) => (StatusCode::OK, "ok\n"),
        Ok(None) => (StatusCode::OK, "ok (no usable configuration yet)\n"),
        Err(()) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the speaker does not answer\n",
        ),
    }
}

/// Ready once the initial table is installed: route-sync's first complete
/// sync (after the peers' End-of-RIB or the initial delay), or, without the
/// FIB, once every configured peer sent its table; never while one of the
/// agent's tasks has stopped.
async fn readyz(State(ctx): State<Ctx>) -> (StatusCode, String) {
    let stopped = ctx.stopped.borrow().clone();
    if !stopped.is_empty() {
        let why: Vec<String> = stopped
            .iter()
            .map(|(task, why)| format!("the {task} task stopped: {why}\n"))
            .collect();
        return (StatusCode::SERVICE_UNAVAILABLE, why.concat());
    }
    let summary = match snapshot(&ctx).await {
        Ok(Some((_, s))) => s,
        Ok(None) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "no usable BGPConfiguration yet (see the agent's log)\n".into(),
            );
        }
        Err(()) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the speaker does not answer\n".into(),
            );
        }
    };
    let (ready, why) = match &ctx.fib {
        Some(r) => {
            let r = r.borrow();
            (
                r.synced,
                format!(
                    "initial FIB sync done: {}; routes installed: {}\n",
                    r.synced, r.installed
                ),
            )
        }
        None => (
            summary.converged,
            format!("peers converged: {}\n", summary.converged),
        ),
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, why)
}

async fn metrics(
    State(ctx): State<Ctx>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    const TYPE: (&str, &str) = (
        "content-type",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    );
    let (peers, summary) = match snapshot(&ctx).await {
        Ok(Some(s)) => s,
        // Not started yet: no peers, an empty RIB.
        Ok(None) => (Vec::new(), SpeakerSummary::default()),
        Err(()) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [TYPE],
                "# the speaker does not answer\n".into(),
            );
        }
    };
    let report = ctx.fib.as_ref().map(|r| r.borrow().clone());
    let bfd = ctx.bfd.borrow().clone();
    let mut reg = registry(&peers, &summary, report.as_ref());
    register_bfd(&mut reg, &bfd);
    let mut text = String::new();
    match encode(&mut text, &reg) {
        Ok(()) => (StatusCode::OK, [TYPE], text),
        Err(e) => {
            let mut msg = String::new();
            let _ = writeln!(msg, "# cannot encode the metrics: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, [TYPE], msg)
        }
    }
}

/// Message type names by code, for the `type` label.
const MESSAGE_TYPES: [(usize, &str); 5] = [
    (1, "open"),
    (2, "update"),
    (3, "notification"),
    (4, "keepalive"),
    (5, "route_refresh"),
];

fn state_number(s: SessionState) -> i64 {
    match s {
        SessionState::Idle => 1,
        SessionState::Connect => 2,
        SessionState::Active => 3,
        SessionState::OpenSent => 4,
        SessionState::OpenConfirm => 5,
        SessionState::Established => 6,
    }
}

type Labels = Vec<(String, String)>;
type Gauges = Family<Labels, Gauge>;
type Counters = Family<Labels, Counter>;

/// The whole registry for one scrape.
/// The BFD sessions' metrics (MetalLB's set, with petrel's prefix).
fn register_bfd(reg: &mut Registry, sessions: &[bfd::runtime::PeerStatus]) {
    if sessions.is_empty() {
        return;
    }
    let up = Gauges::default();
    let state = Gauges::default();
    let detection = Gauges::default();
    let up_events = Counters::default();
    let down_events = Counters::default();
    let packets = Counters::default();
    for s in sessions {
        let l = vec![
            ("peer".to_string(), s.peer.to_string()),
            (
                "hop".to_string(),
                if s.multihop { "multi" } else { "single" }.to_string(),
            ),
        ];
        up.get_or_create(&l)
            .set(i64::from(s.session.state == bfd::State::Up));
        state.get_or_create(&l).set(match s.session.state {
            bfd::State::AdminDown => 0,
            bfd::State::Down => 1,
            bfd::State::Init => 2,
            bfd::State::Up => 3,
        });
        detection.get_or_create(&l).set(
            s.session
                .detection_time
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        );
        up_events.get_or_create(&l).inc_by(s.session.counters.up);
        down_events
            .get_or_create(&l)
            .inc_by(s.session.counters.down);
        for (dir, n) in [
            ("sent", s.session.counters.tx),
            ("received", s.session.counters.rx),
            ("discarded", s.session.counters.rx_discarded),
        ] {
            let mut d = l.clone();
            d.push(("direction".into(), dir.into()));
            packets.get_or_create(&d).inc_by(n);
        }
    }
    reg.register("bfd_session_up", "1 while the BFD session is Up", up);
    reg.register(
        "bfd_session_state",
        "BFD session state: 0 AdminDown, 1 Down, 2 Init, 3 Up",
        state,
    );
    reg.register(
        "bfd_detection_time_milliseconds",
        "How long the peer may stay silent before the session goes down (0 until it is heard)",
        detection,
    );
    reg.register(
        "bfd_session_up_events",
        "Times the BFD session came Up",
        up_events,
    );
    reg.register(
        "bfd_session_down_events",
        "Times the BFD session left Up",
        down_events,
    );
    reg.register(
        "bfd_control_packets",
        "BFD control packets: sent, received (accepted), discarded (authentication, TTL, state)",
        packets,
    );
}

fn registry(peers: &[PeerStatus], summary: &SpeakerSummary, fib: Option<&Report>) -> Registry {
    let mut reg = Registry::with_prefix("petrel");
    let state = Gauges::default();
    let up = Gauges::default();
    let uptime = Gauges::default();
    let flaps = Counters::default();
    let received = Counters::default();
    let sent = Counters::default();
    let prefixes = Gauges::default();
    let stale = Gauges::default();
    let last_error = Gauges::default();
    let out_queued = Gauges::default();
    let out_resets = Counters::default();
    let refreshes = Counters::default();
    let now = SystemTime::now();
    for p in peers {
        let peer = vec![
            ("peer".to_string(), p.address.to_string()),
            ("name".to_string(), p.name.clone()),
        ];
        state.get_or_create(&peer).set(state_number(p.state));
        let established = p.state == SessionState::Established;
        up.get_or_create(&peer).set(i64::from(established));
        let secs = if established {
            now.duration_since(p.since).unwrap_or_default().as_secs() as i64
        } else {
            0
        };
        uptime.get_or_create(&peer).set(secs);
        flaps.get_or_create(&peer).inc_by(p.flaps);
        for (code, name) in MESSAGE_TYPES {
            let mut l = peer.clone();
            l.push(("type".into(), name.into()));
            received.get_or_create(&l).inc_by(p.received_by_type[code]);
            sent.get_or_create(&l).inc_by(p.sent_by_type[code]);
        }
        for (af, c) in &p.prefixes {
            for (kind, v) in [
                ("received", c.received),
                ("accepted", c.accepted),
                ("advertised", c.advertised),
            ] {
                let mut l = peer.clone();
                l.push(("afi_safi".into(), af.to_string()));
                l.push(("kind".into(), kind.into()));
                prefixes.get_or_create(&l).set(v as i64);
            }
        }
        stale.get_or_create(&peer).set(p.stale_routes as i64);
        out_queued
            .get_or_create(&peer)
            .set(i64::try_from(p.out_queued).unwrap_or(i64::MAX));
        for (reason, n) in [
            ("send_hold_expired", p.send_hold_expired),
            ("queue_full", p.out_overflows),
        ] {
            let mut l = peer.clone();
            l.push(("reason".into(), reason.into()));
            out_resets.get_or_create(&l).inc_by(n);
        }
        refreshes.get_or_create(&peer).inc_by(p.refreshes_answered);
        if let Some(e) = &p.last_error {
            let mut l = peer.clone();
            l.push(("error".into(), e.clone()));
            last_error.get_or_create(&l).set(1);
        }
    }
    reg.register(
        "bgp_peer_state",
        "Session state: 1 Idle, 2 Connect, 3 Active, 4 OpenSent, 5 OpenConfirm, 6 Established",
        state,
    );
    reg.register("bgp_peer_up", "1 while the session is Established", up);
    reg.register(
        "bgp_peer_established_seconds",
        "How long the session has been Established (0 when it is not)",
        uptime,
    );
    reg.register(
        "bgp_peer_flaps",
        "Times the session left Established",
        flaps,
    );
    reg.register(
        "bgp_messages_received",
        "BGP messages received, by type",
        received,
    );
    reg.register("bgp_messages_sent", "BGP messages sent, by type", sent);
    reg.register(
        "bgp_prefixes",
        "Prefixes per peer and family: received, accepted (after loop checks and import filters), advertised",
        prefixes,
    );
    reg.register(
        "bgp_peer_outbound_queued_bytes",
        "Bytes queued for the peer and not yet written to its socket",
        out_queued,
    );
    reg.register(
        "bgp_peer_outbound_resets",
        "Sessions reset for not reading: send_hold_expired (RFC 9687 send hold timer) or queue_full (outbound queue at its bound)",
        out_resets,
    );
    reg.register(
        "bgp_route_refreshes_answered",
        "ROUTE-REFRESH requests answered with a table walk (requests within a second of one another are merged)",
        refreshes,
    );
    reg.register(
        "bgp_peer_stale_routes",
        "Routes kept from a restarting peer (graceful restart) not announced again yet",
        stale,
    );
    reg.register(
        "bgp_peer_last_error_info",
        "Why the last session or attempt ended (1, with the reason as a label)",
        last_error,
    );
    reg.register(
        "rib_prefixes",
        "Prefixes in the Loc-RIB",
        ConstGauge::new(summary.prefixes as i64),
    );
    reg.register(
        "rib_paths",
        "Candidate paths over all prefixes",
        ConstGauge::new(summary.paths as i64),
    );
    reg.register(
        "rib_attribute_sets",
        "Distinct path attribute sets stored",
        ConstGauge::new(summary.attribute_sets as i64),
    );
    reg.register(
        "bgp_converged",
        "1 once every configured peer has sent its table (End-of-RIB)",
        ConstGauge::new(i64::from(summary.converged)),
    );
    if let Some(r) = fib {
        reg.register(
            "fib_routes_installed",
            "Wanted routes the kernel has",
            ConstGauge::new(r.installed as i64),
        );
        reg.register(
            "fib_routes_failed",
            "Wanted routes the kernel refused (see the log for why)",
            ConstGauge::new(r.failed.len() as i64),
        );
        reg.register(
            "fib_route_conflicts",
            "Wanted routes held back because another protocol owns the prefix",
            ConstGauge::new(r.conflicts.len() as i64),
        );
        reg.register(
            "fib_routes_adopted",
            "petrel's routes found in the kernel at start",
            ConstGauge::new(r.adopted as i64),
        );
        reg.register(
            "fib_synced",
            "1 once the first complete sync is done (the initial table is installed)",
            ConstGauge::new(i64::from(r.synced)),
        );
        reg.register(
            "fib_repairs",
            "Routes changed by someone else and put back",
            ConstCounter::new(r.repaired),
        );
        reg.register(
            "fib_syncs",
            "Complete syncs against the kernel",
            ConstCounter::new(r.syncs),
        );
        reg.register(
            "fib_reconcile_rounds",
            "Rounds of route changes sent to the kernel",
            ConstCounter::new(r.applies),
        );
        reg.register(
            "fib_reconcile_seconds",
            "Time spent sending route changes to the kernel",
            ConstCounter::new(r.apply_seconds),
        );
    }
    reg
}
