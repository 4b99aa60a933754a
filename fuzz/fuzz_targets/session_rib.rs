//! Stateful: a sequence of events, read from the input, drives a session's
//! state machine (timers, TCP events and decoded messages in any order) and
//! the speaker's core (sessions up and down, UPDATEs, crashes, timers,
//! refresh requests, flushes) through the replay of a recorded stream.
//! Nothing may panic, whatever the order.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bgpd::fsm::{Event, Fsm, FsmConfig, Negotiated};
use bgpd::speaker::record::{
    Recorded, RecordedDownReason, RecordedInput, RecordedPeerEvent, StartRecord,
};
use bgpd::speaker::{NeighborAddress, NeighborConfig, RestartState, SpeakerConfig};
use bgpd::wire::capability::Capability;
use bgpd::wire::{AfiSafi, Message, Open, WireContext};
use libfuzzer_sys::fuzz_target;

const LOCAL_AS: u32 = 65000;
const ROUTER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// The events of one input, read a step at a time.
struct Steps<'a>(&'a [u8]);

impl<'a> Steps<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A length-prefixed piece.
    fn piece(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte().unwrap_or(0)).min(self.0.len());
        let (p, rest) = self.0.split_at(n);
        self.0 = rest;
        p
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An UPDATE whose body is `body`, framed as the wire has it.
fn update_frame(body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    let len = u16::try_from(19 + body.len()).unwrap_or(u16::MAX);
    m.extend_from_slice(&len.to_be_bytes());
    m.push(2);
    m.extend_from_slice(body);
    m
}

fn negotiated(peer: u32) -> Negotiated {
    let peer_id = Ipv4Addr::new(10, 0, 0, 1 + peer as u8);
    let asn = if peer == 1 { 65001 } else { LOCAL_AS };
    let caps = vec![
        Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
        Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
        Capability::RouteRefresh,
    ];
    Negotiated {
        peer_asn: asn,
        peer_id,
        hold_time: 90,
        keepalive_time: 30,
        families: vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
        route_refresh: true,
        enhanced_route_refresh: false,
        peer_graceful_restart: None,
        peer_long_lived: None,
        rx: WireContext::modern(),
        tx: WireContext::modern(),
        local_open: Open::new(LOCAL_AS, 90, ROUTER_ID, caps.clone()),
        remote_open: Open::new(asn, 90, peer_id, caps),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut steps = Steps(data);
    let mut fsm = Fsm::new(FsmConfig::new(LOCAL_AS, ROUTER_ID, 65001));

    let mut config = SpeakerConfig::new(LOCAL_AS, ROUTER_ID);
    config.listen.clear();
    let upstream = NeighborConfig::new(
        "upstream",
        NeighborAddress::Address(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
        65001,
    );
    let mut client = NeighborConfig::new(
        "client",
        NeighborAddress::Address(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3))),
        LOCAL_AS,
    );
    client.route_reflector_client = true;
    config.neighbors = vec![upstream, client];
    let start = StartRecord {
        config: config.clone(),
        restart: RestartState::default(),
    };
    let mut at_ms = 0u64;
    let mut inputs = Vec::new();
    let mut push = |at_ms: u64, input: RecordedInput| {
        inputs.push(Recorded {
            at_ms,
            at_ns: None,
            input,
        })
    };
    push(
        0,
        RecordedInput::Configure {
            config: Box::new(config),
        },
    );
    push(0, RecordedInput::EndOfBatch);
    push(0, RecordedInput::SubscribeFib);
    let mut session = 0u64;

    for _ in 0..256 {
        let Some(op) = steps.byte() else { break };
        let peer = 1 + u32::from(op & 1);
        let event = match op >> 1 {
            // The session's state machine.
            0 => Some(Event::ManualStart),
            1 => Some(Event::TcpConnected),
            2 => Some(Event::TcpAccepted),
            3 => Some(Event::TcpFailed),
            4 => Some(Event::HoldTimerExpires),
            5 => Some(Event::KeepaliveTimerExpires),
            6 => Some(Event::SendHoldTimerExpires),
            7 => Some(Event::ConnectRetryTimerExpires),
            8 => Some(Event::AutomaticStop(steps.byte().unwrap_or(0))),
            9 => Some(Event::ManualStop(None)),
            10 => {
                let bytes = steps.piece();
                Message::decode(bytes, &WireContext::modern())
                    .ok()
                    .map(|d| Event::Message(d.message))
            }
            11 => {
                let body = steps.piece();
                Message::decode(&update_frame(body), &WireContext::modern())
                    .ok()
                    .map(|d| Event::Message(d.message))
            }
            _ => None,
        };
        if let Some(e) = event {
            let _ = fsm.handle(e);
            continue;
        }
        // The speaker's core.
        let ev = match op >> 1 {
            12 => {
                session += 1;
                let remote =
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + peer as u8)), 179);
                let local = SocketAddr::new(IpAddr::V4(ROUTER_ID), 40000);
                RecordedPeerEvent::up(session, local, remote, &negotiated(peer)).ok()
            }
            13 => Some(RecordedPeerEvent::Update {
                hex: hex(&update_frame(steps.piece())),
                treat_as_withdraw: steps.byte().is_some_and(|b| b & 1 == 1),
            }),
            14 => Some(RecordedPeerEvent::Down {
                reason: RecordedDownReason::ConnectionLost,
                established: true,
            }),
            15 => Some(RecordedPeerEvent::Crashed { why: "fuzz".into() }),
            16 => Some(RecordedPeerEvent::RouteRefresh {
                family: "ipv4-unicast".into(),
            }),
            17 => {
                at_ms += 1000 * u64::from(steps.byte().unwrap_or(1));
                push(at_ms, RecordedInput::Timers);
                None
            }
            _ => None,
        };
        if let Some(event) = ev {
            push(at_ms, RecordedInput::Peer { peer, event });
            push(at_ms, RecordedInput::Flush { max: Some(1024) });
            push(at_ms, RecordedInput::EndOfBatch);
        }
    }
    let _ = bgpd::speaker::replay::replay(&start, &inputs);
});
