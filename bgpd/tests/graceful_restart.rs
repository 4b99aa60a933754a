//! Graceful restart (RFC 4724) between two petrel speakers over loopback. The
//! restarting one runs on a runtime of its own, so it can crash the way a
//! killed process does: its sockets close and no NOTIFICATION is sent.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bgpd::fsm::State;
use bgpd::speaker::{
    NeighborAddress, NeighborConfig, PeerStatus, RestartState, RouteFilter, Speaker, SpeakerConfig,
};

mod live;
use live::{has_route, local, wait_for};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn config(
    asn: u32,
    me: &str,
    port: u16,
    peer: &str,
    peer_port: u16,
    peer_asn: u32,
) -> SpeakerConfig {
    let mut c = SpeakerConfig::new(asn, me.parse().expect("v4"));
    c.listen = vec![SocketAddr::new(ip(me), port)];
    let mut n = NeighborConfig::new("peer", NeighborAddress::Address(ip(peer)), peer_asn);
    n.port = peer_port;
    n.source_address = Some(ip(me));
    n.connect_retry = Duration::from_millis(300);
    c.neighbors = vec![n];
    c
}

/// A speaker on its own runtime and thread pool.
struct Crashable {
    rt: Option<tokio::runtime::Runtime>,
    speaker: Speaker,
}

impl Crashable {
    async fn start(config: SpeakerConfig, restart: RestartState) -> Crashable {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let speaker = rt
            .spawn(Speaker::start_with(config, restart))
            .await
            .expect("joins")
            .expect("starts");
        Crashable {
            rt: Some(rt),
            speaker,
        }
    }

    /// Drops every task at once: connections close without a NOTIFICATION.
    fn crash(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Crashable {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn peer(s: &Speaker) -> PeerStatus {
    s.peers().await.expect("peers").remove(0)
}

#[tokio::test]
async fn a_helper_keeps_routes_until_the_restarted_peer_sends_end_of_rib() {
    let (pa, pb) = (17941, 17942);
    let mut ca = config(65001, "127.0.0.1", pa, "127.0.0.2", pb, 65002);
    ca.graceful_restart.restart_time = 30;
    ca.originate = vec![local("10.1.0.0/24"), local("10.11.0.0/24")];
    let cb = config(65002, "127.0.0.2", pb, "127.0.0.1", pa, 65001);
    let a = Crashable::start(ca.clone(), RestartState::default()).await;
    let b = Speaker::start(cb).await.expect("b starts");
    wait_for(10, "10.11.0.0/24 at b", || has_route(&b, "10.11.0.0/24")).await;
    assert!(
        peer(&b)
            .await
            .capabilities
            .iter()
            .any(|c| c == "graceful-restart"),
        "{:?}",
        peer(&b).await.capabilities
    );

    a.crash();
    wait_for(10, "b to see the session drop", || async {
        peer(&b).await.state != State::Established
    })
    .await;
    // Kept, marked stale, while a restarts.
    assert!(has_route(&b, "10.1.0.0/24").await);
    assert!(has_route(&b, "10.11.0.0/24").await);
    assert_eq!(peer(&b).await.stale_routes, 2);

    // a comes back, having kept its forwarding state, announcing one of the two.
    ca.originate = vec![local("10.1.0.0/24")];
    let a2 = Crashable::start(
        ca,
        RestartState {
            restarted: true,
            forwarding_preserved: true,
        },
    )
    .await;
    wait_for(15, "the stale route to go with a's End-of-RIB", || async {
        !has_route(&b, "10.11.0.0/24").await
    })
    .await;
    assert!(
        has_route(&b, "10.1.0.0/24").await,
        "the re-announced route stays"
    );
    assert_eq!(peer(&b).await.stale_routes, 0);
    // a deferred its selection until b's End-of-RIB, then took b's view in.
    assert_eq!(peer(&a2.speaker).await.state, State::Established);
}

#[tokio::test]
async fn stale_routes_go_when_the_peer_does_not_return_in_its_restart_time() {
    let (pa, pb) = (17951, 17952);
    let mut ca = config(65001, "127.0.0.1", pa, "127.0.0.2", pb, 65002);
    ca.graceful_restart.restart_time = 2;
    ca.originate = vec![local("10.1.0.0/24")];
    let cb = config(65002, "127.0.0.2", pb, "127.0.0.1", pa, 65001);
    let a = Crashable::start(ca, RestartState::default()).await;
    let b = Speaker::start(cb).await.expect("b starts");
    wait_for(10, "10.1.0.0/24 at b", || has_route(&b, "10.1.0.0/24")).await;
    a.crash();
    wait_for(10, "b to see the session drop", || async {
        peer(&b).await.state != State::Established
    })
    .await;
    assert_eq!(peer(&b).await.stale_routes, 1);
    wait_for(10, "the restart time to run out", || async {
        !has_route(&b, "10.1.0.0/24").await
    })
    .await;
    assert_eq!(peer(&b).await.stale_routes, 0);
}

#[tokio::test]
async fn a_shutdown_is_a_restart_and_the_helper_keeps_the_routes() {
    // Both set RFC 8538's N bit: Cease / Administrative Reset keeps them.
    let (pa, pb) = (17961, 17962);
    let mut ca = config(65001, "127.0.0.1", pa, "127.0.0.2", pb, 65002);
    ca.originate = vec![local("10.1.0.0/24")];
    let cb = config(65002, "127.0.0.2", pb, "127.0.0.1", pa, 65001);
    let a = Crashable::start(ca, RestartState::default()).await;
    let b = Speaker::start(cb).await.expect("b starts");
    wait_for(10, "10.1.0.0/24 at b", || has_route(&b, "10.1.0.0/24")).await;
    a.speaker.shutdown().await;
    wait_for(10, "b to see the session drop", || async {
        peer(&b).await.state != State::Established
    })
    .await;
    assert!(has_route(&b, "10.1.0.0/24").await);
    assert_eq!(peer(&b).await.stale_routes, 1);
    let last = peer(&b).await.last_error.unwrap_or_default();
    assert!(last.contains("Administrative Reset"), "{last}");
}

#[tokio::test]
async fn a_removed_peer_gets_a_hard_reset_and_keeps_nothing() {
    let (pa, pb) = (17963, 17964);
    let mut ca = config(65001, "127.0.0.1", pa, "127.0.0.2", pb, 65002);
    ca.originate = vec![local("10.1.0.0/24")];
    let cb = config(65002, "127.0.0.2", pb, "127.0.0.1", pa, 65001);
    let a = Crashable::start(ca.clone(), RestartState::default()).await;
    let b = Speaker::start(cb).await.expect("b starts");
    wait_for(10, "10.1.0.0/24 at b", || has_route(&b, "10.1.0.0/24")).await;
    // b is no longer a's peer: Cease / Peer De-configured would be a
    // restart under RFC 8538, so it goes as a Hard Reset.
    ca.neighbors.clear();
    let configured = a.speaker.clone();
    a.rt.as_ref()
        .expect("runtime")
        .spawn(async move { configured.configure(ca).await })
        .await
        .expect("joins")
        .expect("configured");
    wait_for(10, "the route to go at once", || async {
        !has_route(&b, "10.1.0.0/24").await
    })
    .await;
    assert_eq!(peer(&b).await.stale_routes, 0);
    let last = peer(&b).await.last_error.unwrap_or_default();
    assert!(last.contains("Hard Reset"), "{last}");
}

#[tokio::test]
async fn without_graceful_restart_a_shutdown_withdraws_at_once() {
    let (pa, pb) = (17965, 17966);
    let mut ca = config(65001, "127.0.0.1", pa, "127.0.0.2", pb, 65002);
    ca.graceful_restart.enabled = false;
    ca.originate = vec![local("10.1.0.0/24")];
    let cb = config(65002, "127.0.0.2", pb, "127.0.0.1", pa, 65001);
    let a = Crashable::start(ca, RestartState::default()).await;
    let b = Speaker::start(cb).await.expect("b starts");
    wait_for(10, "10.1.0.0/24 at b", || has_route(&b, "10.1.0.0/24")).await;
    a.speaker.shutdown().await;
    wait_for(10, "the route to go at once", || async {
        !has_route(&b, "10.1.0.0/24").await
    })
    .await;
    assert_eq!(peer(&b).await.stale_routes, 0);
}

#[tokio::test]
async fn long_lived_stale_routes_outlast_the_restart_time_marked_and_least_preferred() {
    let (pa, pb) = (17981, 17982);
    let llgr = Duration::from_secs(60);
    let mut ca = config(65001, "127.0.0.1", pa, "127.0.0.2", pb, 65002);
    ca.graceful_restart.restart_time = 1;
    ca.graceful_restart.long_lived_stale_time = llgr;
    ca.originate = vec![local("10.1.0.0/24")];
    let mut cb = config(65002, "127.0.0.2", pb, "127.0.0.1", pa, 65001);
    cb.graceful_restart.long_lived_stale_time = llgr;
    let a = Crashable::start(ca, RestartState::default()).await;
    let b = Speaker::start(cb).await.expect("b starts");
    wait_for(10, "10.1.0.0/24 at b", || has_route(&b, "10.1.0.0/24")).await;
    assert!(
        peer(&b)
            .await
            .capabilities
            .iter()
            .any(|c| c == "long-lived-graceful-restart"),
        "{:?}",
        peer(&b).await.capabilities
    );
    a.crash();
    // After the one-second restart time the route stays, marked LLGR_STALE.
    let stale = || async {
        b.routes(RouteFilter {
            prefix: Some("10.1.0.0/24".parse().expect("p")),
            ..Default::default()
        })
        .await
        .expect("routes")
        .first()
        .and_then(|r| r.paths.first().cloned())
        .is_some_and(|p| {
            p.attrs
                .communities
                .contains(&bgpd::wire::attr::Community::LLGR_STALE)
        })
    };
    wait_for(10, "the route to turn long-lived stale", stale).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        has_route(&b, "10.1.0.0/24").await,
        "still there after the restart time"
    );
    assert_eq!(peer(&b).await.stale_routes, 1);
}
