//! The speaker's views as protobuf messages.

use std::net::IpAddr;
use std::time::SystemTime;

use bgpd::fsm::State;
use bgpd::rib::Attrs;
use bgpd::speaker::{PeerStatus, RouteView};
use proto::v1 as pb;

pub(crate) fn state_to_pb(s: State) -> pb::SessionState {
    match s {
        State::Idle => pb::SessionState::Idle,
        State::Connect => pb::SessionState::Connect,
        State::Active => pb::SessionState::Active,
        State::OpenSent => pb::SessionState::OpenSent,
        State::OpenConfirm => pb::SessionState::OpenConfirm,
        State::Established => pb::SessionState::Established,
    }
}

pub(crate) fn peer_to_pb(p: &PeerStatus) -> pb::Peer {
    pb::Peer {
        name: p.name.clone(),
        address: p.address.to_string(),
        asn: p.asn,
        state: state_to_pb(p.state) as i32,
        state_seconds: SystemTime::now()
            .duration_since(p.since)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        dynamic: p.dynamic,
        last_error: p.last_error.clone().unwrap_or_default(),
        capabilities: p.capabilities.clone(),
        hold_time: p.hold_time.map(u32::from).unwrap_or(0),
        peer_router_id: p.peer_router_id.map(|i| i.to_string()).unwrap_or_default(),
        local_address: p.local_address.map(|a| a.to_string()).unwrap_or_default(),
        prefixes: p
            .prefixes
            .iter()
            .map(|(af, c)| pb::PrefixCounts {
                afi_safi: af.to_string(),
                received: c.received,
                accepted: c.accepted,
                advertised: c.advertised,
            })
            .collect(),
        messages_received: p.messages_received,
        messages_sent: p.messages_sent,
        flaps: p.flaps,
        stale_routes: p.stale_routes as u64,
        disabled: p.disabled,
        bfd: None,
    }
}

/// A BFD session as the API shows it.
pub(crate) fn bfd_to_pb(s: &bfd::runtime::PeerStatus) -> pb::BfdSession {
    let ms = |d: Option<std::time::Duration>| {
        d.map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
    };
    let st = &s.session;
    pb::BfdSession {
        state: st.state.name().into(),
        remote_state: st.remote_state.name().into(),
        diagnostic: st.diag.name().into(),
        remote_diagnostic: st.remote_diag.name().into(),
        local_discriminator: st.local_disc,
        remote_discriminator: st.remote_disc,
        transmit_interval_ms: ms(st.tx_interval),
        detection_time_ms: ms(st.detection_time),
        remote_detect_multiplier: u32::from(st.remote_detect_mult),
        up_seconds: s
            .up_since
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map_or(0, |d| d.as_secs()),
        packets_sent: st.counters.tx,
        packets_received: st.counters.rx,
        packets_discarded: st.counters.rx_discarded,
        up_transitions: st.counters.up,
        down_transitions: st.counters.down,
        multihop: s.multihop,
        last_error: s.last_error.clone().unwrap_or_default(),
    }
}

pub(crate) fn route_to_pb(r: &RouteView) -> pb::Route {
    pb::Route {
        prefix: r.prefix.to_string(),
        paths: r
            .paths
            .iter()
            .map(|p| path_to_pb(p.best, p.from, p.path_id, &p.attrs, p.rejected))
            .collect(),
    }
}

pub(crate) fn path_to_pb(
    best: bool,
    from: Option<IpAddr>,
    path_id: u32,
    a: &Attrs,
    rejected: bool,
) -> pb::Path {
    pb::Path {
        best,
        from: from.map(|f| f.to_string()).unwrap_or_default(),
        path_id,
        next_hop: a.next_hop.map(|n| n.to_string()).unwrap_or_default(),
        next_hop_link_local: a.link_local.map(|n| n.to_string()).unwrap_or_default(),
        as_path: a
            .as_path
            .segments
            .iter()
            .map(|s| pb::AsSegment {
                r#type: s.kind.name().to_string(),
                asns: s.asns.clone(),
            })
            .collect(),
        origin: a.origin.map(|o| o.to_string()).unwrap_or_default(),
        med: a.med,
        local_pref: a.local_pref,
        communities: a.communities.iter().map(ToString::to_string).collect(),
        large_communities: a
            .large_communities
            .iter()
            .map(ToString::to_string)
            .collect(),
        extended_communities: a.ext_communities.iter().map(ToString::to_string).collect(),
        originator_id: a.originator_id.map(|o| o.to_string()).unwrap_or_default(),
        cluster_list: a.cluster_list.iter().map(ToString::to_string).collect(),
        atomic_aggregate: a.atomic_aggregate,
        rejected,
    }
}
