//! The three objects a node reports, computed from the applied plan, the
//! peer table and the speaker's export decisions: its sessions, the Node's
//! condition, its BGPPeer entries and its Service advertisements.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use bgpd::speaker::{NeighborAddress, PeerStatus, Speaker};
use crds::status::{
    REASON_ESTABLISHED, REASON_NO_CONFIGURATION, REASON_NO_PEERS, REASON_SESSIONS_DOWN,
};
use k8s_openapi::jiff::Timestamp;
use planner::MESH_PREFIX;
use planner::advertise::{Intent, IntentKind};
use serde_json::{Value, json};

use super::*;

/// One session of this node, as the report shows it.
#[derive(Debug, Clone)]
pub(super) struct Session {
    /// The neighbour's name.
    pub(super) name: String,
    /// Its address (a range while no dynamic neighbour is connected).
    pub(super) address: String,
    /// The speaker's view; `None`: not (yet) in the speaker's table.
    pub(super) status: Option<PeerStatus>,
    /// A listen range with no neighbour connected (not counted as down).
    pub(super) idle_range: bool,
}

impl Session {
    pub(super) fn established(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.state == bgpd::fsm::State::Established)
    }

    /// Counted by readiness: not a waiting range, not disabled on purpose.
    fn counts(&self) -> bool {
        !self.idle_range && !self.status.as_ref().is_some_and(|s| s.disabled)
    }

    fn state(&self) -> &'static str {
        match &self.status {
            None if self.idle_range => "Active",
            None => "Idle",
            Some(s) => match s.state {
                bgpd::fsm::State::Idle => "Idle",
                bgpd::fsm::State::Connect => "Connect",
                bgpd::fsm::State::Active => "Active",
                bgpd::fsm::State::OpenSent => "OpenSent",
                bgpd::fsm::State::OpenConfirm => "OpenConfirm",
                bgpd::fsm::State::Established => "Established",
            },
        }
    }

    fn established_since(&self) -> Option<String> {
        let s = self.status.as_ref().filter(|_| self.established())?;
        time(s.since)
    }

    /// Its entry in BGPNodeStatus `peers`.
    pub(super) fn report(&self) -> Value {
        let mut v = json!({"name": self.name, "address": self.address, "state": self.state()});
        if let Some(t) = self.established_since() {
            v["establishedSince"] = json!(t);
        }
        if let Some(e) = self.status.as_ref().and_then(|s| s.last_error.clone()) {
            v["lastError"] = json!(e);
        }
        v
    }
}

/// A `metav1.Time` string (whole seconds, as the API server keeps them).
pub(super) fn time(t: SystemTime) -> Option<String> {
    let ts = Timestamp::try_from(t).ok()?;
    Timestamp::from_second(ts.as_second())
        .ok()
        .map(|t| t.to_string())
}

/// Every session of the plan, with the speaker's view of it: one per fixed
/// neighbour, one per dynamic neighbour connected from a range (or the range
/// itself while none is). API peers the plan does not know are added from
/// the speaker's table.
pub(super) fn sessions(applied: &Applied, peers: &[PeerStatus]) -> Vec<Session> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for n in &applied.neighbors {
        match &n.address {
            NeighborAddress::Address(a) => {
                let status = peers
                    .iter()
                    .find(|p| p.name == n.name && !p.dynamic && p.address == *a)
                    .cloned();
                seen.insert((n.name.clone(), a.to_string()));
                out.push(Session {
                    name: n.name.clone(),
                    address: a.to_string(),
                    status,
                    idle_range: false,
                });
            }
            NeighborAddress::Range(r) => {
                let connected: Vec<&PeerStatus> = peers
                    .iter()
                    .filter(|p| p.name == n.name && p.dynamic)
                    .collect();
                if connected.is_empty() {
                    out.push(Session {
                        name: n.name.clone(),
                        address: r.to_string(),
                        status: None,
                        idle_range: true,
                    });
                }
                for p in connected {
                    seen.insert((p.name.clone(), p.address.to_string()));
                    out.push(Session {
                        name: p.name.clone(),
                        address: p.address.to_string(),
                        status: Some(p.clone()),
                        idle_range: false,
                    });
                }
            }
        }
    }
    // Peers the speaker has that the plan does not name (an API peer added
    // since the plan was published).
    for p in peers {
        if seen.insert((p.name.clone(), p.address.to_string())) && !p.dynamic {
            out.push(Session {
                name: p.name.clone(),
                address: p.address.to_string(),
                status: Some(p.clone()),
                idle_range: false,
            });
        }
    }
    out.sort_by(|a, b| (&a.name, &a.address).cmp(&(&b.name, &b.address)));
    out
}

/// Whether this node's BGP is ready: (ok, reason, message).
pub(super) fn readiness(
    applied: &Applied,
    sessions: &[Session],
    running: bool,
) -> (bool, &'static str, String) {
    if !applied.configured {
        let why = applied
            .problems
            .iter()
            .find(|p| {
                p.object
                    .as_deref()
                    .is_none_or(|o| o.starts_with("BGPConfiguration/"))
            })
            .map(|p| match (&p.object, &p.field) {
                (Some(o), Some(f)) => format!("{o}: {f}: {}", p.message),
                (Some(o), None) => format!("{o}: {}", p.message),
                _ => p.message.clone(),
            })
            .unwrap_or_else(|| "no usable BGPConfiguration".into());
        return (false, REASON_NO_CONFIGURATION, why);
    }
    if !running {
        return (
            false,
            REASON_NO_CONFIGURATION,
            "the BGP speaker is not running (see the agent's log)".into(),
        );
    }
    let counted: Vec<&Session> = sessions.iter().filter(|s| s.counts()).collect();
    if counted.is_empty() {
        return (
            true,
            REASON_NO_PEERS,
            "no BGP session is configured for this node".into(),
        );
    }
    let down: Vec<&str> = counted
        .iter()
        .filter(|s| !s.established())
        .map(|s| s.name.as_str())
        .collect();
    if down.is_empty() {
        return (
            true,
            REASON_ESTABLISHED,
            format!("{0}/{0} sessions established", counted.len()),
        );
    }
    let mut names = down
        .iter()
        .take(MAX_NAMED)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if down.len() > MAX_NAMED {
        names.push_str(&format!(" and {} more", down.len() - MAX_NAMED));
    }
    (
        false,
        REASON_SESSIONS_DOWN,
        format!(
            "{} of {} sessions not established: {names}",
            down.len(),
            counted.len()
        ),
    )
}

/// This node's entries per BGPPeer: its sessions with the BGPPeers it
/// peers with, and an Idle entry with the problem for a BGPPeer that
/// selects this node but could not be used.
pub(super) fn peer_entries(
    node: &str,
    applied: &Applied,
    sessions: &[Session],
    bfd: &[bfd::runtime::PeerStatus],
) -> BTreeMap<String, Vec<Value>> {
    let snapshot = &applied.snapshot;
    let is_bgp_peer = |name: &str| {
        !name.starts_with(MESH_PREFIX) && snapshot.peers.iter().any(|p| p.name == name)
    };
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for s in sessions.iter().filter(|s| is_bgp_peer(&s.name)) {
        let mut e = json!({"node": node, "address": s.address, "state": s.state()});
        if let Some(t) = s.established_since() {
            e["establishedSince"] = json!(t);
        }
        if let Some(st) = s.status.as_ref().filter(|_| s.established()) {
            let sum = |f: fn(&bgpd::rib::PrefixCounts) -> u64| -> u64 {
                st.prefixes.iter().map(|(_, c)| f(c)).sum()
            };
            e["prefixesReceived"] = json!(sum(|c| c.received));
            e["prefixesAccepted"] = json!(sum(|c| c.accepted));
            e["prefixesAdvertised"] = json!(sum(|c| c.advertised));
        }
        if let Some(err) = s.status.as_ref().and_then(|st| st.last_error.clone()) {
            e["lastError"] = json!(err);
        }
        if let Some(b) = bfd.iter().find(|b| b.peer.to_string() == s.address) {
            let ms = |d: Option<std::time::Duration>| {
                d.map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
            };
            e["bfd"] = json!(crds::status::BfdNodeStatus {
                state: b.session.state.name().into(),
                diagnostic: b.session.diag.name().into(),
                remote_state: b.session.remote_state.name().into(),
                transmit_interval_ms: ms(b.session.tx_interval),
                detection_time_ms: ms(b.session.detection_time),
                local_discriminator: b.session.local_disc,
                remote_discriminator: b.session.remote_disc,
            });
        }
        let list = out.entry(s.name.clone()).or_default();
        if !list.iter().any(|x| x["address"] == e["address"]) {
            list.push(e);
        }
    }
    // BGPPeers that select this node but are not in the plan: say why.
    let me = snapshot.nodes.iter().find(|n| n.name == node);
    for p in &snapshot.peers {
        if out.contains_key(&p.name) || applied.neighbors.iter().any(|n| n.name == p.name) {
            continue;
        }
        let selected = match &p.spec.node_selector {
            None => true,
            Some(sel) => me.is_some_and(|n| sel.matches(&n.labels)),
        };
        if !selected {
            continue;
        }
        let address = match (p.spec.peer_ip, p.spec.listen_range) {
            (Some(ip), _) => ip.to_string(),
            (None, Some(r)) => r.to_string(),
            (None, None) => "none".to_string(),
        };
        let object = format!("BGPPeer/{}", p.name);
        let why = if !applied.configured {
            "not configured: no usable BGPConfiguration".to_string()
        } else {
            applied
                .problems
                .iter()
                .find(|pr| pr.object.as_deref() == Some(object.as_str()))
                .map(|pr| match &pr.field {
                    Some(f) => format!("{f}: {}", pr.message),
                    None => pr.message.clone(),
                })
                .unwrap_or_else(|| "not configured on this node".into())
        };
        out.insert(
            p.name.clone(),
            vec![json!({"node": node, "address": address, "state": "Idle", "lastError": why})],
        );
    }
    out
}

/// The BGPNodeStatus `services` entries: every Service IP the planner
/// considered, whether it is advertised, and to which sessions it is sent.
///
/// Who is sent a prefix comes from the speaker (`explain`: its own export
/// decision, with the policy the peer really has and the path it really
/// chose), not from re-evaluating policies here: what is reported is what
/// goes on the wire.
pub(super) async fn service_entries(
    applied: &Applied,
    sessions: &[Session],
    speaker: Option<&Speaker>,
) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut seen = HashSet::new();
    let mut intents: Vec<&Intent> = applied
        .intents
        .iter()
        .filter(|i| {
            i.service.is_some()
                && matches!(
                    i.kind,
                    IntentKind::LoadBalancerIp | IntentKind::ExternalIp | IntentKind::ClusterIp
                )
        })
        .collect();
    intents.sort_by(|a, b| (&a.service, a.prefix).cmp(&(&b.service, b.prefix)));
    for i in intents {
        let service = i.service.clone().unwrap_or_default();
        // One entry per Service and prefix (an external IP that is also its
        // LoadBalancer IP is one route).
        if !seen.insert((service.clone(), i.prefix)) {
            continue;
        }
        let kind = match i.kind {
            IntentKind::LoadBalancerIp => "LoadBalancerIP",
            IntentKind::ExternalIp => "ExternalIP",
            _ => "ClusterIP",
        };
        let mut e = json!({
            "service": service, "prefix": i.prefix.to_string(), "type": kind,
            "advertised": i.advertised, "reason": i.reason,
        });
        if i.advertised {
            let (sent, not_sent) = destinations(i, sessions, speaker).await;
            if !sent.is_empty() {
                e["peers"] = json!(sent);
            }
            if !not_sent.is_empty() {
                e["notSent"] = Value::Array(
                    not_sent
                        .into_iter()
                        .map(|(peer, reason)| json!({"peer": peer, "reason": reason}))
                        .collect(),
                );
            }
        }
        out.push(e);
    }
    out
}

/// The sessions an advertised prefix is sent to, and why not to the others.
pub(super) async fn destinations(
    intent: &Intent,
    sessions: &[Session],
    speaker: Option<&Speaker>,
) -> (Vec<String>, Vec<(String, String)>) {
    let explanation = match speaker {
        Some(s) => s.explain(intent.prefix).await.ok().flatten(),
        None => None,
    };
    let mut sent = Vec::new();
    let mut not_sent = Vec::new();
    for s in sessions.iter().filter(|s| !s.idle_range) {
        if s.status.as_ref().is_some_and(|st| st.disabled) {
            not_sent.push((s.name.clone(), "session disabled".to_string()));
            continue;
        }
        if !s.established() {
            not_sent.push((s.name.clone(), SESSION_DOWN.to_string()));
            continue;
        }
        let verdict = explanation.as_ref().map(|e| {
            e.peers
                .iter()
                .find(|(addr, name, _)| *name == s.name && addr.to_string() == s.address)
                .map(|(_, _, why)| why.clone())
        });
        match verdict {
            Some(Some(None)) => sent.push(s.name.clone()),
            Some(Some(Some(why))) => {
                not_sent.push((s.name.clone(), export_reason(intent, &s.name, &why)))
            }
            // Established, but not yet in the speaker's view of the route.
            Some(None) => not_sent.push((s.name.clone(), "not sent yet".to_string())),
            None => not_sent.push((s.name.clone(), "not in the routing table yet".to_string())),
        }
    }
    (sent, not_sent)
}

/// Why a prefix is not sent to `peer`, in the user's terms: export rules
/// that come from a BGPAdvertisement's `peers` are told apart from filters.
pub(super) fn export_reason(intent: &Intent, peer: &str, why: &str) -> String {
    if why == bgpd::rib::NotSent::ExportFilter.to_string() {
        if let Some(limited) = &intent.peers
            && !limited.iter().any(|p| p == peer)
        {
            return format!(
                "its BGPAdvertisement names other peers ({})",
                limited.join(", ")
            );
        }
        return "filtered by export policy".to_string();
    }
    why.to_string()
}

/// `BGPNodeStatus.status.overlay` from the overlay's view.
pub(super) fn overlay_report(o: &api::OverlayView) -> Value {
    let mut v = json!({
        "devices": o.devices.iter().map(|(name, mtu, endpoint)| json!({
            "name": name, "mtu": mtu, "endpoint": endpoint,
        })).collect::<Vec<_>>(),
        "nodes": o.nodes.iter().map(|n| json!({
            "node": n.node,
            "address": n.address,
            "adjacency": n.adjacency,
            "pools": n.pools.iter().map(|(pool, tunnel, reason)| {
                let mut p = json!({"pool": pool, "reason": reason});
                if let Some(t) = tunnel {
                    p["tunnel"] = json!(t);
                }
                p
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "errors": o.errors,
    });
    if let Some(m) = o.link_mtu {
        v["linkMTU"] = json!(m);
    }
    if let Some(m) = o.pod_mtu {
        v["podMTU"] = json!(m);
    }
    if !o.nat.is_empty() {
        v["natOutgoing"] = json!(o.nat);
    }
    v
}
