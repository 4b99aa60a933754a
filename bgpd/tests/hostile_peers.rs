//! Peers that misbehave, over loopback, written by hand on raw sockets: one
//! that completes OPEN and then never reads (a zero TCP window, as
//! `bgp-zerowindow-test` makes) is reset when the send hold timer (RFC
//! 9687) expires, holds no more than a bounded queue meanwhile, and stops
//! no other peer; one that floods ROUTE-REFRESH requests costs a bounded
//! number of table walks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bgpd::fsm::State;
use bgpd::speaker::{NeighborAddress, NeighborConfig, Speaker, SpeakerConfig};
use bgpd::wire::capability::Capability;
use bgpd::wire::{AfiSafi, Message, Open, WireContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod live;
use live::{has_route, local, wait_for};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// `count` prefixes under `10.<base>.0.0/16`..., all /24.
fn prefixes(base: u8, count: u32) -> Vec<bgpd::speaker::LocalRoute> {
    (0..count)
        .map(|i| {
            local(&format!(
                "{}.{}.{}.0/24",
                10 + u32::from(base),
                i / 256 % 256,
                i % 256
            ))
        })
        .collect()
}

/// A BGP peer on a raw socket from `from` to `to`, with receive buffer
/// `rcvbuf` (a few kilobytes: its window closes as soon as routes come,
/// unless it reads), through OPEN and KEEPALIVE to Established.
async fn raw_peer(to: SocketAddr, from: &str, rcvbuf: u32) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
    socket.bind(SocketAddr::new(ip(from), 0)).expect("bind");
    let mut s = socket.connect(to).await.expect("connect");
    let ctx = WireContext::modern();
    let open = Open::new(
        65003,
        90,
        Ipv4Addr::new(10, 0, 0, 3),
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(65003),
        ],
    );
    s.write_all(&Message::Open(open).to_bytes(&ctx).expect("OPEN"))
        .await
        .expect("send OPEN");
    // Its OPEN and KEEPALIVE, then ours: the session is Established.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(seen.len() >= 2 && seen[1] == 4) {
        assert!(Instant::now() < deadline, "no OPEN and KEEPALIVE: {seen:?}");
        let mut header = [0u8; 19];
        s.read_exact(&mut header).await.expect("header");
        let len = usize::from(u16::from_be_bytes([header[16], header[17]]));
        let mut body = vec![0u8; len - 19];
        s.read_exact(&mut body).await.expect("body");
        seen.push(header[18]);
    }
    s.write_all(&Message::Keepalive.to_bytes(&ctx).expect("KEEPALIVE"))
        .await
        .expect("send KEEPALIVE");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_reset_at_send_hold_and_the_others_flow_on() {
    let (pa, pb) = (17981, 17982);
    let mut ca = SpeakerConfig::new(65001, "127.0.0.1".parse().expect("v4"));
    ca.listen = vec![SocketAddr::new(ip("127.0.0.1"), pa)];
    let mut b_of_a = NeighborConfig::new("b", NeighborAddress::Address(ip("127.0.0.2")), 65002);
    b_of_a.port = pb;
    b_of_a.source_address = Some(ip("127.0.0.1"));
    b_of_a.connect_retry = Duration::from_millis(300);
    let mut stuck = NeighborConfig::new("stuck", NeighborAddress::Address(ip("127.0.0.3")), 65003);
    stuck.passive = true;
    stuck.send_hold_time = Some(3);
    ca.neighbors = vec![b_of_a, stuck];
    ca.originate = prefixes(0, 20_000);
    let mut cb = SpeakerConfig::new(65002, "127.0.0.2".parse().expect("v4"));
    cb.listen = vec![SocketAddr::new(ip("127.0.0.2"), pb)];
    let mut a_of_b = NeighborConfig::new("a", NeighborAddress::Address(ip("127.0.0.1")), 65001);
    a_of_b.port = pa;
    a_of_b.source_address = Some(ip("127.0.0.2"));
    a_of_b.connect_retry = Duration::from_millis(300);
    cb.neighbors = vec![a_of_b];
    let a = Speaker::start(ca.clone()).await.expect("a starts");
    let b = Speaker::start(cb).await.expect("b starts");
    let peer = |name: &'static str| {
        let a = &a;
        async move {
            a.peers()
                .await
                .expect("peers")
                .into_iter()
                .find(|p| p.name == name)
                .expect("the peer")
        }
    };
    wait_for(10, "a and b up", || async {
        peer("b").await.state == State::Established
    })
    .await;
    let _stuck = raw_peer(SocketAddr::new(ip("127.0.0.1"), pa), "127.0.0.3", 4096).await;
    wait_for(10, "the stuck peer up", || async {
        peer("stuck").await.state == State::Established
    })
    .await;

    // Routes keep changing while the stuck peer reads nothing: every
    // round a new set of 20,000, which b must get, and a must not hold
    // for the stuck peer beyond what its queue may hold.
    let started = Instant::now();
    let mut round = 0u8;
    let mut peak_queued = 0;
    loop {
        round += 1;
        assert!(round < 60, "the stuck peer was never reset");
        ca.originate = prefixes(round % 2, 20_000);
        ca.originate.push(local(&format!("192.0.2.{round}/32")));
        a.configure(ca.clone()).await.expect("configure");
        // b is not held back by the stuck peer: each round's marker
        // arrives.
        let marker = format!("192.0.2.{round}/32");
        let t = Instant::now();
        wait_for(10, "the round's marker at b", || has_route(&b, &marker)).await;
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "b waited {:?} for a route while another peer was stuck",
            t.elapsed()
        );
        let s = peer("stuck").await;
        peak_queued = peak_queued.max(s.out_queued);
        if s.send_hold_expired > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = peer("stuck").await;
    eprintln!(
        "the stuck peer was reset after {:?}, {peak_queued} bytes queued at most",
        started.elapsed()
    );
    assert_ne!(s.state, State::Established);
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("Send Hold Timer Expired")),
        "{s:?}"
    );
    assert!(
        peak_queued <= 128 << 20,
        "the queue passed its bound: {peak_queued}"
    );
    // Its queue goes with the session.
    wait_for(10, "the stuck peer's queue freed", || async {
        peer("stuck").await.out_queued == 0
    })
    .await;
    assert_eq!(peer("b").await.flaps, 0, "b's session stayed up");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_route_refresh_requests_cost_a_few_table_walks() {
    let pa = 17985;
    let mut ca = SpeakerConfig::new(65001, "127.0.0.1".parse().expect("v4"));
    ca.listen = vec![SocketAddr::new(ip("127.0.0.1"), pa)];
    let mut flooder =
        NeighborConfig::new("flooder", NeighborAddress::Address(ip("127.0.0.4")), 65003);
    flooder.passive = true;
    ca.neighbors = vec![flooder];
    ca.originate = prefixes(0, 5_000);
    let a = Speaker::start(ca).await.expect("a starts");
    let s = raw_peer(SocketAddr::new(ip("127.0.0.1"), pa), "127.0.0.4", 1 << 20).await;
    let (mut read, mut write) = s.into_split();
    // It reads everything it is sent, so nothing is held back by it.
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let ctx = WireContext::modern();
    let one = Message::RouteRefresh(bgpd::wire::RouteRefresh::request(AfiSafi::IPV4_UNICAST))
        .to_bytes(&ctx)
        .expect("ROUTE-REFRESH");
    let started = Instant::now();
    for _ in 0..100 {
        let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 100).collect();
        write.write_all(&burst).await.expect("requests");
        tokio::time::sleep(Duration::from_millis(9)).await;
    }
    let sent_in = started.elapsed();
    let peer = || async {
        a.peers()
            .await
            .expect("peers")
            .into_iter()
            .find(|p| p.name == "flooder")
            .expect("the peer")
    };
    wait_for(10, "every request counted", || async {
        peer().await.received_by_type[5] == 10_000
    })
    .await;
    // The last merged answer comes at most an interval after the last
    // request.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p = peer().await;
    eprintln!(
        "10,000 requests in {sent_in:?}: {} table walks",
        p.refreshes_answered
    );
    assert_eq!(p.state, State::Established, "{p:?}");
    let bound = 2 + sent_in.as_secs() + 1;
    assert!(
        p.refreshes_answered >= 2 && p.refreshes_answered <= bound,
        "{} walks for 10,000 requests in {sent_in:?} (at most {bound})",
        p.refreshes_answered
    );
    a.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_neighbours_beyond_the_limit_are_refused() {
    let pa = 17986;
    let mut ca = SpeakerConfig::new(65001, "127.0.0.1".parse().expect("v4"));
    ca.listen = vec![SocketAddr::new(ip("127.0.0.1"), pa)];
    ca.neighbors = vec![NeighborConfig::new(
        "range",
        NeighborAddress::Range("127.0.0.0/24".parse().expect("range")),
        65003,
    )];
    ca.max_dynamic_neighbors = 2;
    let a = Speaker::start(ca).await.expect("a starts");
    let to = SocketAddr::new(ip("127.0.0.1"), pa);
    let _first = raw_peer(to, "127.0.0.11", 1 << 16).await;
    let _second = raw_peer(to, "127.0.0.12", 1 << 16).await;
    // The third is closed without a word.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(ip("127.0.0.13"), 0))
        .expect("bind");
    let mut third = socket.connect(to).await.expect("connect");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("closed within 5 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the third dynamic neighbour got {read:?}"
    );
    let peers = a.peers().await.expect("peers");
    assert_eq!(peers.len(), 2, "{peers:?}");
    a.shutdown().await;
}
