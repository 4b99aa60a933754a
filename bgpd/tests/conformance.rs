//! Golden conformance tests: recorded input streams of small topologies,
//! replayed through the speaker's core without sockets; what it does (the
//! UPDATEs each peer is sent, the FIB's changes, peer states, the final RIB)
//! is compared with the files under `tests/conformance/<topology>/output/`.
//!
//! `PETREL_GOLDEN_UPDATE=1 cargo test -p bgpd --test conformance` rewrites
//! the golden files. Each topology's input stream (`config.json`,
//! `events.jsonl`) is checked in; the scenario below wrote it, and writes
//! it again only when it is missing (delete it to rebuild it after
//! changing the scenario).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bgpd::fsm::{DownReason, Negotiated};
use bgpd::policy::{Action, Match, Policy, Rule};
use bgpd::speaker::record::{Recorded, RecordedInput, RecordedPeerEvent, StartRecord};
use bgpd::speaker::replay::{self, GoldenError};
use bgpd::speaker::{LocalRoute, NeighborAddress, NeighborConfig, RestartState, SpeakerConfig};
use bgpd::wire::attr::{AsPath, AttrValue, Community, Origin, PathAttribute};
use bgpd::wire::capability::{Capability, GrFamily, GracefulRestart};
use bgpd::wire::{AfiSafi, Nlri, Open, Update, WireContext};

mod live;

const LOCAL_AS: u32 = 65000;
const ROUTER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// An input stream as the speaker task would produce it, built step by step.
struct Script {
    start: StartRecord,
    inputs: Vec<Recorded>,
    at_ms: u64,
}

impl Script {
    /// Starts the way `Speaker::start` does: the configuration, the end of
    /// the (empty) first batch; then the FIB side subscribes.
    fn new(config: SpeakerConfig) -> Script {
        let mut s = Script {
            start: StartRecord {
                config: config.clone(),
                restart: RestartState::default(),
            },
            inputs: Vec::new(),
            at_ms: 0,
        };
        s.configure(config);
        s.push(RecordedInput::SubscribeFib);
        s
    }

    fn at(&mut self, ms: u64) -> &mut Self {
        self.at_ms = ms;
        self
    }

    fn push(&mut self, input: RecordedInput) {
        self.inputs.push(Recorded {
            at_ms: self.at_ms,
            at_ns: None,
            input,
        });
    }

    /// A configuration, as `Speaker::configure` applies it.
    fn configure(&mut self, config: SpeakerConfig) {
        self.push(RecordedInput::Flush { max: None });
        self.push(RecordedInput::Configure {
            config: Box::new(config),
        });
        self.push(RecordedInput::EndOfBatch);
    }

    /// A batch of one peer event, flushed and closed as the task does.
    fn event(&mut self, peer: u32, event: RecordedPeerEvent) {
        self.push(RecordedInput::Peer { peer, event });
        self.push(RecordedInput::Flush { max: Some(1024) });
        self.push(RecordedInput::EndOfBatch);
    }

    fn state(&mut self, peer: u32, state: &str) {
        self.event(
            peer,
            RecordedPeerEvent::State {
                state: state.into(),
            },
        );
    }

    /// The session comes up: the state change, then Up.
    fn up(&mut self, peer: u32, session: u64, remote: &str, asn: u32, gr: Option<GracefulRestart>) {
        self.state(peer, "Established");
        let remote_ip = ip(remote);
        let peer_id = match remote_ip {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::new(192, 0, 2, 1),
        };
        let local = match remote_ip {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & !0xff | 1)),
            v6 => v6,
        };
        let families = vec![AfiSafi::IPV4_UNICAST];
        let mut remote_caps = vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::RouteRefresh,
        ];
        if let Some(gr) = &gr {
            remote_caps.push(Capability::GracefulRestart(gr.clone()));
        }
        let negotiated = Negotiated {
            peer_asn: asn,
            peer_id,
            hold_time: 90,
            keepalive_time: 30,
            families,
            route_refresh: true,
            enhanced_route_refresh: false,
            peer_graceful_restart: gr,
            peer_long_lived: None,
            rx: WireContext::modern(),
            tx: WireContext::modern(),
            local_open: Open::new(
                LOCAL_AS,
                90,
                ROUTER_ID,
                vec![Capability::Multiprotocol(AfiSafi::IPV4_UNICAST)],
            ),
            remote_open: Open::new(asn, 90, peer_id, remote_caps),
        };
        let event = RecordedPeerEvent::up(
            session,
            SocketAddr::new(local, 179),
            SocketAddr::new(remote_ip, 40000 + peer as u16),
            &negotiated,
        )
        .expect("an Up event");
        self.event(peer, event);
    }

    fn update(&mut self, peer: u32, update: Update) {
        let event =
            RecordedPeerEvent::update(&update, &WireContext::modern()).expect("an UPDATE encodes");
        self.event(peer, event);
    }

    fn end_of_rib(&mut self, peer: u32) {
        self.update(peer, Update::end_of_rib(AfiSafi::IPV4_UNICAST));
    }

    fn down(&mut self, peer: u32, reason: DownReason) {
        let reason = match reason {
            DownReason::ConnectionLost => bgpd::speaker::record::RecordedDownReason::ConnectionLost,
            _ => bgpd::speaker::record::RecordedDownReason::ManualStop,
        };
        self.event(
            peer,
            RecordedPeerEvent::Down {
                reason,
                established: true,
            },
        );
        self.state(peer, "Idle");
    }

    fn timers(&mut self) {
        self.push(RecordedInput::Timers);
    }
}

/// An announcement from a peer.
fn announce(as_path: &[u32], next_hop: &str, prefixes: &[&str], extra: Vec<AttrValue>) -> Update {
    let mut attributes = vec![
        PathAttribute::new(AttrValue::Origin(Origin::Igp)),
        PathAttribute::new(AttrValue::AsPath(AsPath::sequence(as_path.to_vec()))),
        PathAttribute::new(AttrValue::NextHop(next_hop.parse().expect("next hop"))),
    ];
    attributes.extend(extra.into_iter().map(PathAttribute::new));
    Update {
        attributes,
        nlri: prefixes
            .iter()
            .map(|p| Nlri::new(p.parse().expect("prefix")))
            .collect(),
        ..Update::default()
    }
}

fn withdraw(prefixes: &[&str]) -> Update {
    Update {
        withdrawn: prefixes
            .iter()
            .map(|p| Nlri::new(p.parse().expect("prefix")))
            .collect(),
        ..Update::default()
    }
}

fn base_config() -> SpeakerConfig {
    let mut c = SpeakerConfig::new(LOCAL_AS, ROUTER_ID);
    c.listen.clear();
    c
}

fn neighbor(name: &str, address: &str, asn: u32) -> NeighborConfig {
    let mut n = NeighborConfig::new(name, NeighborAddress::Address(ip(address)), asn);
    n.families = vec![AfiSafi::IPV4_UNICAST];
    n
}

fn dir(topology: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance")
        .join(topology)
}

/// Builds the scenario's inputs and checks they are the checked-in ones
/// (written only when the golden files are being regenerated), then replays
/// the checked-in inputs against the golden outputs.
fn conformance(topology: &str, scenario: impl FnOnce() -> Script) {
    let d = dir(topology);
    let s = scenario();
    let regenerate =
        std::env::var_os(replay::GOLDEN_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    if regenerate {
        replay::save(&d, &s.start, &s.inputs).expect("the inputs are written");
    } else {
        let (start, inputs) = replay::load(&d)
            .unwrap_or_else(|e| panic!("{topology}: cannot read the checked-in inputs: {e}"));
        // The records have no `PartialEq`: compared as the JSON they are
        // stored as.
        let same = serde_json::to_string(&start).ok() == serde_json::to_string(&s.start).ok()
            && serde_json::to_string(&inputs).ok() == serde_json::to_string(&s.inputs).ok();
        assert!(
            same,
            "{topology}: the scenario no longer writes the checked-in inputs; run with {}=1 and review the diff",
            replay::GOLDEN_ENV
        );
    }
    match replay::check_golden(&d) {
        Ok(()) => {}
        Err(e @ GoldenError::Differs { .. })
        | Err(e @ GoldenError::Missing(_))
        | Err(e @ GoldenError::Updated(_)) => panic!("{topology}: {e}"),
        Err(e) => panic!("{topology}: cannot replay: {e}"),
    }
}

/// A route reflector with two iBGP clients: one announces two prefixes,
/// the other is sent them reflected (ORIGINATOR_ID, CLUSTER_LIST); then one
/// is withdrawn.
#[test]
fn route_reflector_with_two_clients() {
    conformance("rr-two-clients", || {
        let mut config = base_config();
        let mut a = neighbor("client-a", "10.0.0.2", LOCAL_AS);
        a.route_reflector_client = true;
        let mut b = neighbor("client-b", "10.0.0.3", LOCAL_AS);
        b.route_reflector_client = true;
        config.neighbors = vec![a, b];
        let mut s = Script::new(config);
        s.at(1000).up(1, 1, "10.0.0.2", LOCAL_AS, None);
        s.at(1100).up(2, 1, "10.0.0.3", LOCAL_AS, None);
        s.at(1200).end_of_rib(1);
        s.at(1300).end_of_rib(2);
        s.at(2000).update(
            1,
            announce(
                &[65010],
                "10.0.0.2",
                &["10.1.0.0/24", "10.1.1.0/24"],
                vec![AttrValue::LocalPref(200)],
            ),
        );
        s.at(3000).update(1, withdraw(&["10.1.0.0/24"]));
        s
    });
}

fn graceful(restarting: bool) -> GracefulRestart {
    GracefulRestart {
        flags: if restarting {
            GracefulRestart::RESTART_STATE
        } else {
            0
        },
        restart_time: 120,
        families: vec![GrFamily {
            afi_safi: AfiSafi::IPV4_UNICAST,
            flags: GrFamily::FORWARDING_PRESERVED,
        }],
    }
}

/// Graceful restart, helper side: an eBGP peer's session drops without a
/// NOTIFICATION; its routes stay, stale (the iBGP client hears nothing);
/// it comes back, announces two of its three prefixes and End-of-RIB, and
/// the third is swept. It drops again and does not come back: at the end of
/// its restart time its stale routes go.
#[test]
fn graceful_restart_keeps_stale_routes() {
    conformance("graceful-restart", || {
        let mut config = base_config();
        let upstream = neighbor("upstream", "10.0.1.2", 65001);
        let mut client = neighbor("client", "10.0.0.2", LOCAL_AS);
        client.route_reflector_client = true;
        config.neighbors = vec![upstream, client];
        let mut s = Script::new(config);
        s.at(1000)
            .up(1, 1, "10.0.1.2", 65001, Some(graceful(false)));
        s.at(1000).up(2, 1, "10.0.0.2", LOCAL_AS, None);
        s.at(1500).update(
            1,
            announce(
                &[65001],
                "10.0.1.2",
                &["10.2.0.0/24", "10.2.1.0/24", "10.2.2.0/24"],
                vec![],
            ),
        );
        s.at(1600).end_of_rib(1);
        s.at(1600).end_of_rib(2);
        // The session is lost: the routes stay, stale.
        s.at(10_000).down(1, DownReason::ConnectionLost);
        // Back (R bit set) with two of the three prefixes.
        s.at(20_000)
            .up(1, 2, "10.0.1.2", 65001, Some(graceful(true)));
        s.at(20_500).update(
            1,
            announce(
                &[65001],
                "10.0.1.2",
                &["10.2.0.0/24", "10.2.1.0/24"],
                vec![],
            ),
        );
        s.at(21_000).end_of_rib(1);
        // Lost again, for good: the restart time (120 s) runs out.
        s.at(30_000).down(1, DownReason::ConnectionLost);
        s.at(100_000).timers();
        s.at(150_000).timers();
        s.push(RecordedInput::Flush { max: Some(1024) });
        s
    });
}

fn transit_policy(reject_second: bool) -> Policy {
    let mut rules = Vec::new();
    if reject_second {
        rules.push(Rule {
            matches: vec![Match::Prefix {
                net: "10.3.1.0/24".parse().expect("prefix"),
                ge: None,
                le: None,
            }],
            actions: vec![Action::Reject],
        });
        rules.push(Rule {
            matches: vec![Match::Community(Community(65002 << 16 | 100))],
            actions: vec![Action::Prepend {
                asn: None,
                count: 2,
            }],
        });
    }
    rules.push(Rule {
        matches: vec![Match::Prefix {
            net: "10.3.0.0/16".parse().expect("prefix"),
            ge: None,
            le: Some(24),
        }],
        actions: vec![Action::SetMed(50), Action::Accept],
    });
    Policy {
        name: if reject_second {
            "transit-v2"
        } else {
            "transit-v1"
        }
        .into(),
        rules,
    }
}

/// A policy change: a customer's routes reach a transit peer through an
/// export policy; a new configuration changes only that policy (the session
/// stays): one prefix is withdrawn from the transit peer, another is sent
/// again prepended.
#[test]
fn export_policy_change_changes_what_is_sent() {
    conformance("policy-change", || {
        let mut config = base_config();
        let customer = neighbor("customer", "10.0.2.2", 65002);
        let mut transit = neighbor("transit", "10.0.3.2", 65003);
        transit.export_policy = Some(Arc::new(transit_policy(false)));
        config.neighbors = vec![customer, transit.clone()];
        config.originate = vec![LocalRoute {
            communities: vec![Community(LOCAL_AS << 16 | 1)],
            ..LocalRoute::from("192.0.2.0/24".parse::<ipnet::IpNet>().expect("prefix"))
        }];
        let mut s = Script::new(config.clone());
        s.at(1000).up(1, 1, "10.0.2.2", 65002, None);
        s.at(1000).up(2, 1, "10.0.3.2", 65003, None);
        s.at(1200).update(
            1,
            announce(
                &[65002],
                "10.0.2.2",
                &["10.3.0.0/24", "10.3.1.0/24"],
                vec![AttrValue::Communities(vec![Community(65002 << 16 | 100)])],
            ),
        );
        s.at(1300).end_of_rib(1);
        s.at(1300).end_of_rib(2);
        transit.export_policy = Some(Arc::new(transit_policy(true)));
        config.neighbors = vec![config.neighbors[0].clone(), transit];
        s.at(5000).configure(config);
        s
    });
}

/// A recording of a real run (two speakers over loopback) replays to the
/// Loc-RIB the recorded speaker had: the recorded inputs are complete.
#[tokio::test]
async fn a_recorded_run_replays_to_the_same_rib() {
    use bgpd::fsm::State;
    use bgpd::speaker::{RouteFilter, Speaker};
    use std::time::Duration;

    let (pa, pb) = (17991, 17992); // unique among the crate's tests, which may run side by side
    let node = |asn: u32, me: &str, port: u16, peer: &str, peer_port: u16, peer_asn: u32| {
        let mut c = SpeakerConfig::new(asn, me.parse().expect("v4"));
        c.listen = vec![SocketAddr::new(ip(me), port)];
        let mut n = NeighborConfig::new("peer", NeighborAddress::Address(ip(peer)), peer_asn);
        n.port = peer_port;
        n.source_address = Some(ip(me));
        n.connect_retry = Duration::from_millis(300);
        c.neighbors = vec![n];
        c
    };
    let mut ca = node(65001, "127.0.0.1", pa, "127.0.0.2", pb, 65002);
    ca.originate = vec![live::local("10.1.0.0/24")];
    let mut cb = node(65002, "127.0.0.2", pb, "127.0.0.1", pa, 65001);
    cb.originate = vec![live::local("10.2.0.0/24"), live::local("10.2.1.0/24")];
    let dir = std::env::temp_dir().join(format!("petrel-record-{}", std::process::id()));
    let a = Speaker::start_recording(ca, RestartState::default(), &dir)
        .await
        .expect("a starts, recording");
    let b = Speaker::start(cb.clone()).await.expect("b starts");
    live::wait_for(10, "session up", || async {
        a.peers()
            .await
            .expect("peers")
            .iter()
            .all(|p| p.state == State::Established)
    })
    .await;
    live::wait_for(10, "b's routes at a", || live::has_route(&a, "10.2.1.0/24")).await;
    live::wait_for(10, "a's route at b", || live::has_route(&b, "10.1.0.0/24")).await;
    cb.originate.truncate(1);
    b.configure(cb).await.expect("b reconfigures");
    live::wait_for(10, "the withdrawal at a", || async {
        !live::has_route(&a, "10.2.1.0/24").await
    })
    .await;
    let live_routes = a.routes(RouteFilter::default()).await.expect("routes");
    a.shutdown().await;
    b.shutdown().await;

    let (start, mut inputs) = replay::load(&dir).expect("the recording reads back");
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(i) = inputs
        .iter()
        .position(|r| r.input == RecordedInput::Shutdown)
    {
        inputs.truncate(i);
    }
    let out = replay::replay(&start, &inputs).expect("the recording replays");
    assert_eq!(out.routes, live_routes);
    let updates = &out.files["updates.txt"];
    assert!(
        updates.contains("announce 10.1.0.0/24 {origin IGP as-path [65001] next-hop 127.0.0.1"),
        "{updates}"
    );
}

/// A recording is input from outside: a time no replay can represent is
/// refused with the line, not a panic.
#[test]
fn a_recording_from_beyond_reach_is_refused() {
    let from = dir("rr-two-clients");
    let to = std::env::temp_dir().join(format!("petrel-conformance-late-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir_all(&to).expect("dir");
    std::fs::copy(from.join("config.json"), to.join("config.json")).expect("config");
    let events = std::fs::read_to_string(from.join("events.jsonl")).expect("events");
    let first = events.lines().next().expect("an input");
    let mut late: serde_json::Value = serde_json::from_str(first).expect("json");
    late["at_ms"] = u64::MAX.into();
    std::fs::write(to.join("events.jsonl"), format!("{first}\n{late}\n")).expect("write");
    let result = replay::load(&to);
    let _ = std::fs::remove_dir_all(&to);
    match result {
        Err(e) => assert!(e.to_string().contains("events.jsonl:2"), "{e}"),
        Ok(_) => panic!("a time past a century was taken"),
    }
}

/// A peer's session task panics: the speaker hears of it, the peer's routes
/// go at once (to the FIB and to the other peers: no graceful restart,
/// nothing says the peer restarted), and the peer starts again in a new
/// task.
#[test]
fn a_crashed_session_task_loses_its_routes_and_starts_again() {
    conformance("task-crash", || {
        let mut config = base_config();
        let upstream = neighbor("upstream", "10.0.1.2", 65001);
        let mut client = neighbor("client", "10.0.0.2", LOCAL_AS);
        client.route_reflector_client = true;
        config.neighbors = vec![upstream, client];
        let mut s = Script::new(config);
        s.at(1000)
            .up(1, 1, "10.0.1.2", 65001, Some(graceful(false)));
        s.at(1000).up(2, 1, "10.0.0.2", LOCAL_AS, None);
        s.at(1500)
            .update(1, announce(&[65001], "10.0.1.2", &["10.3.0.0/24"], vec![]));
        s.at(1600).end_of_rib(1);
        s.at(1600).end_of_rib(2);
        s.at(5000).event(
            1,
            RecordedPeerEvent::Crashed {
                why: "index out of bounds".into(),
            },
        );
        s
    });
}
