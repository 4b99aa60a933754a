//! Two petrel speakers in one process, over loopback: sessions come up, routes
//! flow both ways, a configuration change resets only what changed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bgpd::fsm::State;
use bgpd::speaker::{NeighborAddress, NeighborConfig, RouteFilter, Speaker, SpeakerConfig};

mod live;
use live::{has_route, local, wait_for};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn speaker_config(asn: u32, me: &str, port: u16) -> SpeakerConfig {
    let mut c = SpeakerConfig::new(asn, me.parse().expect("v4"));
    c.listen = vec![SocketAddr::new(ip(me), port)];
    c
}

fn neighbor(name: &str, addr: &str, port: u16, asn: u32, source: &str) -> NeighborConfig {
    let mut n = NeighborConfig::new(name, NeighborAddress::Address(ip(addr)), asn);
    n.port = port;
    n.source_address = Some(ip(source));
    n.connect_retry = Duration::from_millis(300);
    n
}

#[tokio::test]
async fn two_speakers_exchange_routes_and_reconfigure() {
    let (pa, pb) = (17901, 17902);
    let mut ca = speaker_config(65001, "127.0.0.1", pa);
    ca.neighbors = vec![neighbor("b", "127.0.0.2", pb, 65002, "127.0.0.1")];
    ca.originate = vec![local("10.1.0.0/24"), local("2001:db8:1::/48")];
    let mut cb = speaker_config(65002, "127.0.0.2", pb);
    cb.neighbors = vec![neighbor("a", "127.0.0.1", pa, 65001, "127.0.0.2")];
    cb.originate = vec![local("10.2.0.0/24")];
    let a = Speaker::start(ca.clone()).await.expect("a starts");
    let b = Speaker::start(cb).await.expect("b starts");

    wait_for(10, "session up", || async {
        a.peers()
            .await
            .expect("peers")
            .iter()
            .all(|p| p.state == State::Established)
    })
    .await;
    wait_for(10, "10.1.0.0/24 at b", || has_route(&b, "10.1.0.0/24")).await;
    wait_for(10, "2001:db8:1::/48 at b", || {
        has_route(&b, "2001:db8:1::/48")
    })
    .await;
    wait_for(10, "10.2.0.0/24 at a", || has_route(&a, "10.2.0.0/24")).await;

    // The path b learned: AS path [65001], next hop a's session address.
    let r = b
        .routes(RouteFilter {
            prefix: Some("10.1.0.0/24".parse().expect("p")),
            ..Default::default()
        })
        .await
        .expect("routes");
    let best = &r[0].paths[0];
    assert_eq!(best.attrs.as_path.to_string(), "65001");
    assert_eq!(best.attrs.next_hop, Some(ip("127.0.0.1")));
    let peers = b.peers().await.expect("peers");
    assert!(
        peers[0].capabilities.iter().any(|c| c == "four-octet-as"),
        "{:?}",
        peers[0].capabilities
    );
    assert_eq!(
        peers[0]
            .prefixes
            .iter()
            .map(|(_, c)| c.received)
            .sum::<u64>(),
        2
    );

    // Withdraw one prefix by configuration: b loses it, the session stays up.
    let flaps_before = a.peers().await.expect("peers")[0].flaps;
    ca.originate
        .retain(|r| r.prefix.to_string() != "10.1.0.0/24");
    a.configure(ca.clone()).await.expect("configure");
    wait_for(10, "withdrawal at b", || async {
        !has_route(&b, "10.1.0.0/24").await
    })
    .await;
    assert_eq!(
        a.peers().await.expect("peers")[0].flaps,
        flaps_before,
        "no session reset"
    );

    // Changing the neighbour's hold time resets that session only.
    ca.neighbors[0].hold_time = 30;
    a.configure(ca).await.expect("configure");
    wait_for(10, "session back with hold time 30", || async {
        a.peers()
            .await
            .expect("peers")
            .iter()
            .any(|p| p.state == State::Established && p.hold_time == Some(30))
    })
    .await;

    a.shutdown().await;
    wait_for(10, "b sees the shutdown", || async {
        b.peers()
            .await
            .expect("peers")
            .iter()
            .all(|p| p.state != State::Established)
    })
    .await;
    let last = b.peers().await.expect("peers")[0]
        .last_error
        .clone()
        .unwrap_or_default();
    // Graceful restart on both sides (RFC 8538's N bit): stopping is a
    // restart, said with Cease / Administrative Reset.
    assert!(last.contains("Administrative Reset"), "{last}");
    b.shutdown().await;
}

#[tokio::test]
async fn wrong_asn_is_reported() {
    let (pa, pb) = (17911, 17912);
    let mut ca = speaker_config(65001, "127.0.0.3", pa);
    // a believes b is AS 65099; b is really 65002.
    ca.neighbors = vec![neighbor("b", "127.0.0.4", pb, 65099, "127.0.0.3")];
    let mut cb = speaker_config(65002, "127.0.0.4", pb);
    cb.neighbors = vec![neighbor("a", "127.0.0.3", pa, 65001, "127.0.0.4")];
    let a = Speaker::start(ca).await.expect("a");
    let b = Speaker::start(cb).await.expect("b");
    wait_for(10, "the error", || async {
        a.peers().await.expect("peers")[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Bad Peer AS"))
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn dynamic_neighbors_from_a_listen_range() {
    let (pa, pb) = (17921, 17922);
    let mut ca = speaker_config(65000, "127.0.0.5", pa);
    let mut range = NeighborConfig::new(
        "nodes",
        NeighborAddress::Range("127.0.0.0/24".parse().expect("range")),
        65000,
    );
    range.passive = true;
    ca.neighbors = vec![range];
    ca.originate = vec![local("10.5.0.0/24")];
    let mut cb = speaker_config(65000, "127.0.0.6", pb);
    cb.neighbors = vec![neighbor("rr", "127.0.0.5", pa, 65000, "127.0.0.6")];
    let a = Speaker::start(ca).await.expect("a");
    let b = Speaker::start(cb).await.expect("b");
    wait_for(10, "dynamic peer up", || async {
        a.peers().await.expect("peers").iter().any(|p| {
            p.dynamic
                && p.state == State::Established
                && p.address == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6))
        })
    })
    .await;
    wait_for(10, "route at b", || has_route(&b, "10.5.0.0/24")).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_new_identity_restarts_sessions_with_it() {
    let (pa, pb) = (17931, 17932);
    let mut ca = speaker_config(65001, "127.0.0.7", pa);
    ca.neighbors = vec![neighbor("b", "127.0.0.8", pb, 65002, "127.0.0.7")];
    let mut cb = speaker_config(65002, "127.0.0.8", pb);
    cb.neighbors = vec![neighbor("a", "127.0.0.7", pa, 65001, "127.0.0.8")];
    let a = Speaker::start(ca.clone()).await.expect("a");
    let b = Speaker::start(cb).await.expect("b");
    let id_seen_by_b = |want: Ipv4Addr| {
        let b = b.clone();
        move || {
            let b = b.clone();
            async move {
                b.peers()
                    .await
                    .expect("peers")
                    .iter()
                    .any(|p| p.state == State::Established && p.peer_router_id == Some(want))
            }
        }
    };
    wait_for(
        10,
        "first session",
        id_seen_by_b(Ipv4Addr::new(127, 0, 0, 7)),
    )
    .await;
    ca.router_id = Ipv4Addr::new(10, 255, 0, 7);
    a.configure(ca).await.expect("configure");
    wait_for(
        15,
        "session with the new router ID",
        id_seen_by_b(Ipv4Addr::new(10, 255, 0, 7)),
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_peer_over_its_prefix_limit_is_reset_and_comes_back() {
    use bgpd::speaker::{MaxPrefixes, MaxPrefixesAction};
    use bgpd::wire::AfiSafi;
    let (pa, pb) = (17971, 17972);
    let mut ca = speaker_config(65001, "127.0.0.1", pa);
    ca.neighbors = vec![neighbor("b", "127.0.0.2", pb, 65002, "127.0.0.1")];
    ca.originate = (0..5).map(|i| local(&format!("10.{i}.0.0/24"))).collect();
    let mut cb = speaker_config(65002, "127.0.0.2", pb);
    let mut n = neighbor("a", "127.0.0.1", pa, 65001, "127.0.0.2");
    n.max_prefixes = vec![MaxPrefixes {
        family: AfiSafi::IPV4_UNICAST,
        limit: 3,
        warning_percent: 75,
        action: MaxPrefixesAction::Restart(Duration::from_millis(500)),
        force: false,
    }];
    cb.neighbors = vec![n.clone()];
    let a = Speaker::start(ca).await.expect("a");
    let b = Speaker::start(cb.clone()).await.expect("b");
    wait_for(10, "b to end the session over the limit", || async {
        b.peers().await.expect("peers")[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Maximum Number of Prefixes"))
    })
    .await;
    // a hears why.
    let pa_status = a.peers().await.expect("peers").remove(0);
    assert!(
        pa_status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Maximum Number of Prefixes")),
        "{pa_status:?}"
    );
    // After the delay the session is tried again (and, still over, reset again).
    wait_for(10, "a second session", || async {
        b.peers().await.expect("peers")[0].flaps >= 2
    })
    .await;

    // With the log action the session stays, with all five prefixes.
    n.max_prefixes[0].action = MaxPrefixesAction::Log;
    cb.neighbors = vec![n];
    b.configure(cb).await.expect("configure");
    wait_for(10, "all five accepted", || async {
        let p = b.peers().await.expect("peers").remove(0);
        p.state == State::Established
            && p.prefixes.iter().map(|(_, c)| c.accepted).sum::<u64>() == 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.peers().await.expect("peers")[0].state, State::Established);
}

/// Fail closed: a neighbour whose TCP-MD5 key the listener cannot take
/// (longer than the kernel's 80 bytes) gets no unsigned session in its
/// place; its connections are refused.
#[tokio::test]
async fn a_neighbour_whose_md5_key_the_listener_refuses_gets_no_unsigned_session() {
    let (pa, pb) = (17991, 17992);
    let mut ca = speaker_config(65001, "127.0.0.1", pa);
    let mut n = neighbor("b", "127.0.0.2", pb, 65002, "127.0.0.1");
    n.passive = true;
    n.password = Some("x".repeat(81).into());
    ca.neighbors = vec![n];
    let mut cb = speaker_config(65002, "127.0.0.2", pb);
    cb.neighbors = vec![neighbor("a", "127.0.0.1", pa, 65001, "127.0.0.2")];
    let a = Speaker::start(ca).await.expect("a");
    let b = Speaker::start(cb).await.expect("b");
    // b keeps trying (every 300 ms); none of its connections may become a
    // session.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        let p = a.peers().await.expect("peers").remove(0);
        assert!(
            !matches!(p.state, State::OpenConfirm | State::Established),
            "an unsigned session with a neighbour that has a key: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// With `force`, a prefix limit counts what the peer sends, not only what
/// is accepted: a peer whose routes are all refused on import still cannot
/// send more than the limit.
#[tokio::test]
async fn a_forced_prefix_limit_counts_what_is_refused_too() {
    use bgpd::policy::{Action, Policy, Rule};
    use bgpd::speaker::{MaxPrefixes, MaxPrefixesAction};
    use bgpd::wire::AfiSafi;
    let (pa, pb) = (17975, 17976);
    let mut ca = speaker_config(65001, "127.0.0.1", pa);
    ca.neighbors = vec![neighbor("b", "127.0.0.2", pb, 65002, "127.0.0.1")];
    ca.originate = (0..5).map(|i| local(&format!("10.{i}.0.0/24"))).collect();
    let mut cb = speaker_config(65002, "127.0.0.2", pb);
    let mut n = neighbor("a", "127.0.0.1", pa, 65001, "127.0.0.2");
    n.import_policy = Some(std::sync::Arc::new(Policy {
        name: "refuse-all".into(),
        rules: vec![Rule {
            matches: Vec::new(),
            actions: vec![Action::Reject],
        }],
    }));
    n.max_prefixes = vec![MaxPrefixes {
        family: AfiSafi::IPV4_UNICAST,
        limit: 3,
        warning_percent: 75,
        action: MaxPrefixesAction::Restart(Duration::from_secs(30)),
        force: false,
    }];
    cb.neighbors = vec![n.clone()];
    let a = Speaker::start(ca).await.expect("a");
    let b = Speaker::start(cb.clone()).await.expect("b");
    // Without force: nothing accepted, nothing over.
    wait_for(10, "five refused prefixes at b", || async {
        let p = b.peers().await.expect("peers").remove(0);
        p.state == State::Established
            && p.prefixes.iter().map(|(_, c)| c.received).sum::<u64>() == 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.peers().await.expect("peers")[0].state, State::Established);
    // With force: the five refused count, and the session ends.
    n.max_prefixes[0].force = true;
    cb.neighbors = vec![n];
    b.configure(cb).await.expect("configure");
    wait_for(10, "b to end the session over the forced limit", || async {
        b.peers().await.expect("peers")[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Maximum Number of Prefixes"))
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn a_password_never_shows_in_a_debug_dump() {
    let mut n = neighbor("b", "127.0.0.2", 179, 65002, "127.0.0.1");
    n.password = Some("s3cret-md5".to_string().into());
    let dump = format!("{n:?}");
    assert!(!dump.contains("s3cret-md5"), "{dump}");
    assert!(dump.contains("password: Some(\"***\")"), "{dump}");
}

#[tokio::test]
async fn a_large_table_is_read_a_page_at_a_time_each_route_once() {
    use bgpd::speaker::AdjRibSide;

    let (pa, pb) = (17993, 17994);
    // More than one shard's worth (8192), so the table is split in parts.
    let n: u32 = 20_000;
    let mut ca = speaker_config(65001, "127.0.0.1", pa);
    ca.neighbors = vec![neighbor("b", "127.0.0.2", pb, 65002, "127.0.0.1")];
    ca.originate = (0..n)
        .map(|i| local(&format!("10.{}.{}.0/24", i / 256, i % 256)))
        .collect();
    let mut cb = speaker_config(65002, "127.0.0.2", pb);
    cb.neighbors = vec![neighbor("a", "127.0.0.1", pa, 65001, "127.0.0.2")];
    let a = Speaker::start(ca).await.expect("a");
    let b = Speaker::start(cb).await.expect("b");
    wait_for(30, "b to hold every route", || async {
        b.summary().await.is_ok_and(|s| s.prefixes >= n as usize)
    })
    .await;
    let mut seen = std::collections::HashMap::new();
    let (mut pages, mut from) = (0, Some(0));
    while let Some(f) = from {
        let page = b
            .routes_page(RouteFilter::default(), f)
            .await
            .expect("a page");
        assert!(
            page.routes.windows(2).all(|w| w[0].prefix < w[1].prefix),
            "a page is in prefix order"
        );
        for r in page.routes {
            *seen.entry(r.prefix).or_insert(0) += 1;
        }
        from = page.next;
        pages += 1;
        assert!(pages < 10_000, "the listing ends");
    }
    assert_eq!(seen.len(), n as usize);
    assert!(seen.values().all(|c| *c == 1), "a route listed twice");
    assert!(pages > 1, "{pages} page(s): the table was read at once");
    // The whole listing, and the Adj-RIBs, come sorted.
    let all = b.routes(RouteFilter::default()).await.expect("routes");
    assert_eq!(all.len(), n as usize);
    assert!(all.windows(2).all(|w| w[0].prefix < w[1].prefix));
    let adj_in = b.adj_rib("a", AdjRibSide::In).await.expect("Adj-RIB-In");
    assert_eq!(adj_in.len(), n as usize);
    assert!(adj_in.windows(2).all(|w| w[0].prefix < w[1].prefix));
    let adj_out = a.adj_rib("b", AdjRibSide::Out).await.expect("Adj-RIB-Out");
    assert_eq!(adj_out.len(), n as usize);
    // What costs little is one page: b sends a none of a's routes back (the
    // 20,000 entries read are fewer than a page's worth), and a listing
    // that matches 256 routes takes one page.
    let back = b
        .adj_rib_page("a", AdjRibSide::Out, 0)
        .await
        .expect("Adj-RIB-Out page");
    assert!(back.routes.is_empty());
    assert_eq!(back.next, None, "an empty listing took more than a page");
    let few = RouteFilter {
        prefix: Some("10.3.0.0/16".parse().expect("prefix")),
        longer: true,
        ..RouteFilter::default()
    };
    let page = b.routes_page(few, 0).await.expect("a page");
    assert_eq!(page.routes.len(), 256);
    assert_eq!(page.next, None, "256 routes took more than a page");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_strict_bfd_link_holds_the_session_until_bfd_is_up_and_bfd_down_ends_it() {
    use bgpd::speaker::BfdLink;

    let (pa, pb) = (17995, 17996);
    let mut ca = speaker_config(65001, "127.0.0.1", pa);
    ca.neighbors = vec![neighbor("b", "127.0.0.2", pb, 65002, "127.0.0.1")];
    ca.originate = vec![local("10.77.0.0/24")];
    let mut cb = speaker_config(65002, "127.0.0.2", pb);
    let mut n = neighbor("a", "127.0.0.1", pa, 65001, "127.0.0.2");
    n.connect_retry = Duration::from_secs(1);
    n.bfd = Some(BfdLink { strict: true });
    cb.neighbors = vec![n];
    let a = Speaker::start(ca).await.expect("a");
    let b = Speaker::start(cb).await.expect("b");
    let a_ip: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    // BFD has not said Up: b neither connects nor accepts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(b.peers().await.expect("peers")[0].state, State::Established);
    b.set_liveness(a_ip, true).expect("liveness");
    wait_for(15, "b to establish once BFD is up", || async {
        b.peers().await.expect("peers")[0].state == State::Established
    })
    .await;
    wait_for(10, "a's route at b", || async {
        b.summary().await.is_ok_and(|s| s.prefixes == 1)
    })
    .await;
    // BFD down: the session ends at once with Cease / BFD Down, a's route
    // leaves b's RIB, and b stays down while BFD is.
    b.set_liveness(a_ip, false).expect("liveness");
    wait_for(5, "b to end the session", || async {
        let p = &b.peers().await.expect("peers")[0];
        p.state != State::Established && p.last_error.as_deref().is_some_and(|e| e.contains("BFD"))
    })
    .await;
    wait_for(5, "a's route to leave b", || async {
        b.summary().await.is_ok_and(|s| s.prefixes == 0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(b.peers().await.expect("peers")[0].state, State::Established);
    b.set_liveness(a_ip, true).expect("liveness");
    wait_for(15, "b to establish again", || async {
        b.peers().await.expect("peers")[0].state == State::Established
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}
