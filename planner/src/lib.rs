//! The planner: a pure function from a [`Snapshot`] to what the speaker must
//! do. Level-triggered: it always starts from the whole snapshot, so applying
//! its output twice changes nothing.
//!
//! It derives the speaker's identity, its neighbours (configured BGPPeers
//! that select this node, and the node-to-node mesh), the prefixes this node
//! originates (its pod CIDRs, and Service IPs: [`advertise`]) with the export
//! rules BGPAdvertisements imply, and the blackholes to install. Invalid
//! objects are reported with the field that is wrong and left out; the rest is
//! planned.

pub mod advertise;
pub mod bfd;
mod filters;
pub mod overlay;
mod peer;

pub use filters::{community, large_community, policies};
pub use peer::neighbor;
use peer::valid_asn;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bgpd::session::BGP_PORT;
use bgpd::speaker::{NeighborAddress, NeighborConfig, SpeakerConfig};
use std::sync::Arc;

use bgpd::policy::{Action as PolicyAction, Match, Policy, Rule};
use bgpd::wire::attr::LargeCommunity;
use crds::BgpPeerSpec;

use advertise::Intent;
use ipnet::IpNet;
use model::{Named, Problem, Snapshot};

/// Everything the agent does for one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The speaker's configuration: identity, neighbours, originated routes.
    pub speaker: SpeakerConfig,
    /// Prefixes that get a blackhole route (the pod CIDRs: traffic for a pod
    /// address nobody has ends here instead of bouncing off the default).
    pub blackholes: Vec<IpNet>,
    /// Every prefix this node considered advertising, with the verdict.
    pub intents: Vec<Intent>,
    /// Export rules for peers added later through the API, which no
    /// BGPAdvertisement names: what advertisements give every peer, the
    /// rejection of prefixes they limit to other peers, and of mesh routes.
    pub api_peer_rules: Vec<Rule>,
    /// The BFD sessions this node runs, for BGPPeers with a BFDProfile.
    pub bfd: Vec<::bfd::runtime::PeerSpec>,
}

/// The large community marking routes learned over the node-to-node mesh
/// (our ASN, "petr", 1); it never leaves the node, as marked routes are not
/// exported to anyone the mesh does not already reach.
pub fn mesh_marker(asn: u32) -> LargeCommunity {
    LargeCommunity {
        global_admin: asn,
        local_data1: 0x7065_7472,
        local_data2: 1,
    }
}

fn reject_marked(marker: LargeCommunity) -> Rule {
    Rule {
        matches: vec![Match::LargeCommunity(marker)],
        actions: vec![PolicyAction::Reject],
    }
}

/// Runs `rules` before a neighbour's own export policy (its filters).
pub fn prepend_export(n: &mut NeighborConfig, rules: Vec<Rule>) {
    if rules.is_empty() {
        return;
    }
    let mut all = rules;
    let mut name = "advertisements".to_string();
    if let Some(p) = &n.export_policy {
        all.extend(p.rules.iter().cloned());
        name = format!("{name},{}", p.name);
    }
    n.export_policy = Some(Arc::new(Policy { name, rules: all }));
}

/// The prefix of mesh neighbours' names, followed by the node's name.
pub const MESH_PREFIX: &str = "node-mesh-";

/// The IPAM mode of the BGPConfiguration [`plan`] uses (the one named
/// `default`, else the first): where pods' addresses come from.
pub fn ipam_mode(snapshot: &Snapshot) -> crds::IpamMode {
    configuration(snapshot)
        .and_then(|c| c.spec.ipam_mode)
        .unwrap_or_default()
}

/// The BGPConfiguration [`plan`] uses: the one named `default`, else the
/// first.
pub fn configuration(snapshot: &Snapshot) -> Option<&Named<crds::BgpConfigurationSpec>> {
    snapshot
        .configurations
        .iter()
        .find(|c| c.name == "default")
        .or(snapshot.configurations.first())
}

/// The plan for `node`, and what was wrong on the way. `None` when there is
/// no usable BGPConfiguration.
pub fn plan(snapshot: &Snapshot, node: &str) -> (Option<Plan>, Vec<Problem>) {
    let mut problems = Vec::new();
    let node_obj = snapshot.nodes.iter().find(|n| n.name == node);
    let config = match snapshot.configurations.as_slice() {
        [] => {
            problems.push(Problem {
                origin: snapshot.source.clone(),
                object: None,
                field: None,
                message: "no BGPConfiguration object: the speaker waits for one".into(),
            });
            return (None, problems);
        }
        [only] => only,
        many => {
            // Several: the one named "default" wins, as in Calico.
            let chosen = many
                .iter()
                .find(|c| c.name == "default")
                .unwrap_or(&many[0]);
            for c in many.iter().filter(|c| c.name != chosen.name) {
                problems.push(Problem {
                    origin: c.origin.to_string(),
                    object: Some(format!("BGPConfiguration/{}", c.name)),
                    field: None,
                    message: format!("ignored: BGPConfiguration/{} is used", chosen.name),
                });
            }
            chosen
        }
    };
    let bad = |field: &str, message: String| Problem {
        origin: config.origin.to_string(),
        object: Some(format!("BGPConfiguration/{}", config.name)),
        field: Some(field.into()),
        message,
    };
    let node_asn = node_obj.and_then(|n| n.as_number);
    if let Some(a) = node_asn.filter(|a| !valid_asn(*a)) {
        problems.push(Problem {
            origin: snapshot.source.clone(),
            object: Some(format!("Node/{node}")),
            field: Some(format!(
                "metadata.annotations.{}",
                crds::AS_NUMBER_ANNOTATION
            )),
            message: format!("{a} is not a usable ASN; using spec.asNumber"),
        });
    }
    let asn = match node_asn.filter(|a| valid_asn(*a)).or(config.spec.as_number) {
        Some(a) if valid_asn(a) => a,
        Some(a) => {
            problems.push(bad(
                "spec.asNumber",
                format!("{a} is not a usable ASN (1..=4294967294, not 23456)"),
            ));
            return (None, problems);
        }
        None => {
            problems.push(bad("spec.asNumber", "is required".into()));
            return (None, problems);
        }
    };
    let node_v4 = node_obj.and_then(|n| {
        n.internal_ips.iter().find_map(|ip| match ip {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
    });
    let Some(router_id) = config.spec.router_id.or(node_v4) else {
        problems.push(bad(
            "spec.routerID",
            format!("is not set and node {node:?} has no IPv4 InternalIP to take it from"),
        ));
        return (None, problems);
    };
    if router_id.is_unspecified() {
        problems.push(bad(
            "spec.routerID",
            "0.0.0.0 is not a valid BGP identifier".into(),
        ));
        return (None, problems);
    }
    let mut out = SpeakerConfig::new(asn, router_id);
    let listen_ip = config
        .spec
        .listen_address
        .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    out.listen = vec![SocketAddr::new(
        listen_ip,
        config.spec.listen_port.unwrap_or(BGP_PORT),
    )];
    if let Some(id) = config.spec.route_reflector_cluster_id {
        if id.is_unspecified() {
            problems.push(bad(
                "spec.routeReflectorClusterID",
                "0.0.0.0 is not a cluster ID; using the router ID".into(),
            ));
        } else {
            out.cluster_id = Some(id);
        }
    }
    match config.spec.maximum_paths {
        Some(m) if (1..=256).contains(&m) => out.maximum_paths = m as usize,
        Some(m) => problems.push(bad(
            "spec.maximumPaths",
            format!("{m} is not 1 to 256; using 8"),
        )),
        None => {}
    }
    match config.spec.max_dynamic_neighbors {
        Some(m) if (1..=100_000).contains(&m) => out.max_dynamic_neighbors = m as usize,
        Some(m) => problems.push(bad(
            "spec.maxDynamicNeighbors",
            format!("{m} is not 1 to 100000; using 100"),
        )),
        None => {}
    }
    if let Some(gr) = &config.spec.graceful_restart {
        let d = &mut out.graceful_restart;
        d.enabled = gr.enabled.unwrap_or(true);
        match gr.restart_time {
            Some(t) if t.0 > 4095 => problems.push(bad(
                "spec.gracefulRestart.restartTime",
                format!("{t} is more than the 4095s the capability can carry; using 4095s"),
            )),
            _ => {}
        }
        if let Some(t) = gr.restart_time {
            d.restart_time = t.0.min(4095) as u16;
        }
        if let Some(t) = gr.stale_routes_time {
            d.stale_routes_time = Duration::from_secs(t.0.into());
        }
        if let Some(t) = gr.selection_deferral_time {
            d.selection_deferral = Duration::from_secs(t.0.into());
        }
        match gr.long_lived_stale_time {
            Some(t) if t.0 > 0xFF_FFFF => problems.push(bad(
                "spec.gracefulRestart.longLivedStaleTime",
                format!(
                    "{t} is more than the 16777215s the capability can carry; LLGR is not offered"
                ),
            )),
            Some(t) => d.long_lived_stale_time = Duration::from_secs(t.0.into()),
            None => {}
        }
    }
    if node_obj.is_none() {
        problems.push(Problem {
            origin: snapshot.source.clone(),
            object: Some(format!("Node/{node}")),
            field: None,
            message: "not found: no pod CIDRs are originated, no mesh, no local endpoints".into(),
        });
    }
    out.local_ipv4 = node_v4;
    out.local_ipv6 = node_obj.and_then(|n| {
        n.internal_ips.iter().find_map(|ip| match ip {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
    });
    let mut peers: Vec<&Named<BgpPeerSpec>> = snapshot.peers.iter().collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    for p in &peers {
        if let Some(sel) = &p.spec.node_selector {
            if let Err(e) = sel.validate() {
                problems.push(Problem {
                    origin: p.origin.to_string(),
                    object: Some(format!("BGPPeer/{}", p.name)),
                    field: Some("spec.nodeSelector".into()),
                    message: format!("{e}; this peer is skipped"),
                });
                continue;
            }
            // Not this node's peer: nothing to report.
            if !node_obj.is_some_and(|n| sel.matches(&n.labels)) {
                continue;
            }
        }
        match neighbor(p, snapshot, asn, router_id) {
            Ok(n) => out.neighbors.push(n),
            Err(e) => problems.push(Problem {
                origin: p.origin.to_string(),
                object: Some(format!("BGPPeer/{}", p.name)),
                field: Some(e.field),
                message: format!("{}; this peer is skipped", e.reason),
            }),
        }
    }
    let bfd = bfd::plan(snapshot, &peers, &mut out.neighbors, &mut problems);
    // Whether this node has mesh peers (the mesh rules cost nothing otherwise).
    let mut mesh_on = false;
    if config.spec.node_to_node_mesh_enabled.unwrap_or(true)
        && let Some(me) = node_obj
    {
        let meshed = mesh(snapshot, me, config.spec.as_number);
        if config.spec.router_id.is_some() && !meshed.is_empty() {
            problems.push(bad(
                "spec.routerID",
                "is the same for every node, and the node-to-node mesh needs each node's own \
                 (internal peers refuse their own identifier): leave it unset to take each \
                 node's IPv4 InternalIP"
                    .into(),
            ));
        }
        mesh_on = !meshed.is_empty();
        out.neighbors.extend(meshed);
    }
    let names: Vec<String> = out.neighbors.iter().map(|n| n.name.clone()).collect();
    let ads = advertise::plan(snapshot, config, node, node_obj, &names, &mut problems);
    out.originate = ads.routes;
    // What a node learns over the mesh is the other nodes' business: it is
    // marked on the way in and never passed on to other peers (ToRs, route
    // reflectors), as in Calico, so a node without an endpoint does not
    // attract traffic for another node's Local Service.
    let marker = mesh_marker(asn);
    let mut api_peer_rules = ads.default_export_rules.clone();
    if mesh_on {
        api_peer_rules.insert(0, reject_marked(marker));
    }
    for n in &mut out.neighbors {
        let mut rules = ads.export_rules.get(&n.name).cloned().unwrap_or_default();
        if n.name.starts_with(MESH_PREFIX) {
            n.import_policy = Some(Arc::new(Policy {
                name: "node-mesh".into(),
                rules: vec![Rule {
                    matches: Vec::new(),
                    actions: vec![PolicyAction::AddLargeCommunities(vec![marker])],
                }],
            }));
        } else if mesh_on {
            rules.insert(0, reject_marked(marker));
        }
        prepend_export(n, rules);
    }
    // The node's pod CIDRs or, with petrel's IPAM, its blocks: an address
    // no pod holds goes nowhere, rather than back out of the default route.
    let blackholes: Vec<IpNet> = if config.spec.ipam_mode == Some(crds::IpamMode::Petrel) {
        snapshot
            .local_ipam
            .blocks
            .iter()
            .map(IpNet::trunc)
            .collect()
    } else {
        node_obj
            .map(|n| n.pod_cidrs.iter().map(|c| c.trunc()).collect())
            .unwrap_or_default()
    };
    (
        Some(Plan {
            speaker: out,
            blackholes,
            intents: ads.intents,
            api_peer_rules,
            bfd,
        }),
        problems,
    )
}

/// The node-to-node mesh: an iBGP session (eBGP where nodes have ASNs of
/// their own) with every other node, over the first InternalIP of a family
/// both have, IPv4 first.
fn mesh(snapshot: &Snapshot, me: &model::Node, cluster_asn: Option<u32>) -> Vec<NeighborConfig> {
    let mut others: Vec<&model::Node> = snapshot
        .nodes
        .iter()
        .filter(|n| n.name != me.name)
        .collect();
    others.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::new();
    for other in others {
        let pick = |v4: bool| -> Option<(IpAddr, IpAddr)> {
            let mine = me.internal_ips.iter().find(|ip| ip.is_ipv4() == v4)?;
            let theirs = other.internal_ips.iter().find(|ip| ip.is_ipv4() == v4)?;
            Some((*mine, *theirs))
        };
        let Some((source, address)) = pick(true).or_else(|| pick(false)) else {
            continue;
        };
        let Some(peer_asn) = other.as_number.filter(|a| valid_asn(*a)).or(cluster_asn) else {
            continue;
        };
        let mut n = NeighborConfig::new(
            format!("{MESH_PREFIX}{}", other.name),
            NeighborAddress::Address(address),
            peer_asn,
        );
        n.source_address = Some(source);
        n.connect_retry = Duration::from_secs(5);
        out.push(n);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use bgpd::speaker::MaxPrefixesAction;
    use bgpd::wire::AfiSafi;

    use super::*;
    use model::files::load_text;
    use std::path::Path;

    fn snapshot(text: &str) -> Snapshot {
        let mut s = Snapshot::default();
        let mut p = Vec::new();
        load_text(Path::new("t.yaml"), text, &mut s, &mut p);
        assert!(p.is_empty(), "{p:?}");
        s
    }

    const BASE: &str = r#"
apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 65001}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDRs: [10.244.1.0/24]}
status: {addresses: [{type: InternalIP, address: 10.0.0.1}]}
"#;

    #[test]
    fn bfd_profiles_become_sessions_and_a_missing_or_bad_one_is_reported_not_fatal() {
        let text = format!(
            "{BASE}---
apiVersion: petrel.dev/v1alpha1
kind: BFDProfile
metadata: {{name: fast}}
spec: {{receiveInterval: 100, transmitInterval: 50, detectMultiplier: 4, passiveMode: true, minimumTtl: 250}}
---
apiVersion: petrel.dev/v1alpha1
kind: BFDProfile
metadata: {{name: echo}}
spec: {{echoMode: true}}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {{name: tor}}
spec: {{peerIP: 10.0.0.254, asNumber: 65000, bfdProfile: fast, bfdStrict: true}}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {{name: far}}
spec: {{peerIP: 10.9.0.1, asNumber: 65009, ebgpMultihop: 3, bfdProfile: fast}}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {{name: gone}}
spec: {{peerIP: 10.0.0.253, asNumber: 65000, bfdProfile: deleted}}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {{name: bad}}
spec: {{peerIP: 10.0.0.252, asNumber: 65000, bfdProfile: echo}}
"
        );
        let (c, problems) = plan(&snapshot(&text), "n1");
        let c = c.expect("planned");
        // Every peer runs; the two without a usable profile run without BFD.
        assert_eq!(c.speaker.neighbors.len(), 4);
        let n = |name: &str| {
            c.speaker
                .neighbors
                .iter()
                .find(|n| n.name == name)
                .expect("neighbour")
        };
        assert_eq!(n("tor").bfd, Some(bgpd::speaker::BfdLink { strict: true }));
        assert_eq!(n("far").bfd, Some(bgpd::speaker::BfdLink { strict: false }));
        assert_eq!(n("gone").bfd, None);
        assert_eq!(n("bad").bfd, None);
        assert_eq!(c.bfd.len(), 2);
        let tor = c
            .bfd
            .iter()
            .find(|s| s.peer.to_string() == "10.0.0.254")
            .expect("tor");
        assert!(!tor.multihop);
        assert_eq!(tor.config.required_min_rx, Duration::from_millis(100));
        assert_eq!(tor.config.desired_min_tx, Duration::from_millis(50));
        assert_eq!(tor.config.detect_mult, 4);
        assert!(tor.config.passive);
        let far = c
            .bfd
            .iter()
            .find(|s| s.peer.to_string() == "10.9.0.1")
            .expect("far");
        assert!(far.multihop);
        assert_eq!(far.minimum_ttl, 250);
        let said = |object: &str, field: &str, text: &str| {
            problems.iter().any(|p| {
                p.object.as_deref() == Some(object)
                    && p.field.as_deref() == Some(field)
                    && p.message.contains(text)
            })
        };
        assert!(
            said("BGPPeer/gone", "spec.bfdProfile", "does not exist"),
            "{problems:?}"
        );
        assert!(
            said("BFDProfile/echo", "spec.echoMode", "not supported"),
            "{problems:?}"
        );
        assert!(
            said("BGPPeer/bad", "spec.bfdProfile", "invalid"),
            "{problems:?}"
        );
    }

    #[test]
    fn router_id_and_pod_cidrs_come_from_the_node() {
        let (c, p) = plan(&snapshot(BASE), "n1");
        assert!(p.is_empty(), "{p:?}");
        let c = c.expect("planned").speaker;
        assert_eq!(c.router_id, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            c.originate,
            vec![bgpd::speaker::LocalRoute::from(
                "10.244.1.0/24".parse::<ipnet::IpNet>().expect("p")
            )]
        );
        assert_eq!(c.listen[0].port(), 179);
    }

    #[test]
    fn ipam_blocks_are_originated_and_blackholed_borrowed_addresses_originated() {
        let text = format!(
            "{BASE}---
apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {{name: pods}}
spec: {{cidr: 10.250.0.0/16}}
---
apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {{name: quiet}}
spec: {{cidr: 10.251.0.0/16, disableBGPExport: true}}
"
        );
        let mut s = snapshot(&text.replace(
            "spec: {asNumber: 65001}",
            "spec: {asNumber: 65001, ipamMode: Petrel}",
        ));
        let net = |t: &str| t.parse::<ipnet::IpNet>().expect("net");
        s.local_ipam = model::LocalIpam {
            blocks: vec![net("10.250.0.64/26"), net("10.251.0.0/26")],
            borrowed: vec![(net("10.250.0.130/32"), net("10.250.0.128/26"))],
            tunnel: None,
        };
        let (c, p) = plan(&s, "n1");
        assert!(p.is_empty(), "{p:?}");
        let c = c.expect("planned");
        let originated: Vec<ipnet::IpNet> = c.speaker.originate.iter().map(|r| r.prefix).collect();
        assert!(originated.contains(&net("10.250.0.64/26")));
        assert!(originated.contains(&net("10.250.0.130/32")));
        assert!(
            !originated.contains(&net("10.251.0.0/26")),
            "disableBGPExport"
        );
        // Every block of the node is blackholed, exported or not; a
        // borrowed address is not (its pod's host route serves it).
        assert_eq!(
            c.blackholes,
            vec![net("10.250.0.64/26"), net("10.251.0.0/26")]
        );
        // The node's spec.podCIDRs are not used with petrel's IPAM.
        assert!(!originated.contains(&net("10.244.1.0/24")));
        let pod_cidr = c
            .intents
            .iter()
            .find(|i| i.prefix == net("10.244.1.0/24"))
            .expect("intent");
        assert!(!pod_cidr.advertised);
        assert!(
            pod_cidr.reason.contains("ipamMode Petrel"),
            "{}",
            pod_cidr.reason
        );
        // In Kubernetes mode (the default), the other way round.
        let mut k = snapshot(&text);
        k.local_ipam = s.local_ipam.clone();
        let k = plan(&k, "n1").0.expect("planned");
        assert_eq!(k.blackholes, vec![net("10.244.1.0/24")]);
        let kept: Vec<ipnet::IpNet> = k.speaker.originate.iter().map(|r| r.prefix).collect();
        assert!(!kept.contains(&net("10.250.0.64/26")));
        let quiet = c
            .intents
            .iter()
            .find(|i| i.prefix == net("10.251.0.0/26"))
            .expect("intent");
        assert!(!quiet.advertised);
        assert_eq!(quiet.reason, "IPPool quiet has disableBGPExport");
        let borrowed = c
            .intents
            .iter()
            .find(|i| i.kind == crate::advertise::IntentKind::PodBorrowed)
            .expect("intent");
        assert!(
            borrowed.reason.contains("10.250.0.128/26"),
            "{}",
            borrowed.reason
        );
    }

    #[test]
    fn graceful_restart_settings_with_defaults_and_the_4095s_limit() {
        let (c, p) = plan(&snapshot(BASE), "n1");
        assert!(p.is_empty(), "{p:?}");
        let gr = c.expect("planned").speaker.graceful_restart;
        assert!(gr.enabled);
        assert_eq!(gr.restart_time, 120);
        assert_eq!(gr.stale_routes_time, Duration::from_secs(360));
        assert_eq!(gr.selection_deferral, Duration::from_secs(120));

        let text = BASE.replace(
            "spec: {asNumber: 65001}",
            "spec: {asNumber: 65001, gracefulRestart: {restartTime: 2h, staleRoutesTime: 1m, selectionDeferralTime: 30s}}",
        );
        let (c, p) = plan(&snapshot(&text), "n1");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            p[0].field.as_deref(),
            Some("spec.gracefulRestart.restartTime")
        );
        let gr = c.expect("planned").speaker.graceful_restart;
        assert_eq!(gr.restart_time, 4095);
        assert_eq!(gr.stale_routes_time, Duration::from_secs(60));
        assert_eq!(gr.selection_deferral, Duration::from_secs(30));

        let off = BASE.replace(
            "spec: {asNumber: 65001}",
            "spec: {asNumber: 65001, gracefulRestart: {enabled: false}}",
        );
        let (c, _) = plan(&snapshot(&off), "n1");
        assert!(!c.expect("planned").speaker.graceful_restart.enabled);
    }

    #[test]
    fn reflection_and_multipath_settings() {
        let text = format!(
            "{}\n---\n{}",
            BASE.replace(
                "spec: {asNumber: 65001}",
                "spec: {asNumber: 65001, routeReflectorClusterID: 10.255.0.1, maximumPaths: 300}",
            ),
            r#"apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: client}
spec: {listenRange: 10.0.0.0/24, asNumber: 65001, routeReflectorClient: true}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 10.0.0.254, asNumber: 65000, routeReflectorClient: true}
"#
        );
        let (c, p) = plan(&snapshot(&text), "n1");
        let c = c.expect("planned").speaker;
        assert_eq!(c.cluster_id, Some(Ipv4Addr::new(10, 255, 0, 1)));
        assert_eq!(c.maximum_paths, 8, "out of range: the default stays");
        let fields: Vec<&str> = p.iter().filter_map(|p| p.field.as_deref()).collect();
        assert_eq!(
            fields,
            ["spec.maximumPaths", "spec.routeReflectorClient"],
            "{p:?}"
        );
        assert_eq!(c.neighbors.len(), 1);
        assert!(c.neighbors[0].route_reflector_client);
    }

    #[test]
    fn prefix_limits_per_family_with_defaults_and_errors_named() {
        let text = format!(
            "{BASE}\n---\n{}",
            r#"apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: ok}
spec: {peerIP: 10.0.0.254, asNumber: 65000, maxPrefixes: {ipv4: {limit: 100}, ipv6: {limit: 10, action: Log}}}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: nolimit}
spec: {peerIP: 10.0.0.253, asNumber: 65000, maxPrefixes: {ipv4: {warningPercent: 50}}}
"#
        );
        let (c, p) = plan(&snapshot(&text), "n1");
        let c = c.expect("planned").speaker;
        assert_eq!(c.neighbors.len(), 1);
        let mp = &c.neighbors[0].max_prefixes;
        assert_eq!(mp.len(), 2);
        assert_eq!(mp[0].limit, 100);
        assert_eq!(mp[0].warning_percent, 75);
        assert_eq!(
            mp[0].action,
            MaxPrefixesAction::Restart(Duration::from_secs(60))
        );
        assert_eq!(mp[1].family, AfiSafi::IPV6_UNICAST);
        assert_eq!(mp[1].action, MaxPrefixesAction::Log);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field.as_deref(), Some("spec.maxPrefixes.ipv4.limit"));
    }

    #[test]
    fn add_paths_take_a_count_or_all() {
        let peer = |name: &str, ip: &str, send: &str| {
            format!(
                "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: {name}}}\nspec: {{peerIP: {ip}, asNumber: 65001, addPaths: {{receive: true, send: {send}}}}}\n"
            )
        };
        let text = format!(
            "{BASE}\n---\n{}---\n{}---\n{}",
            peer("a", "10.0.0.2", "all"),
            peer("b", "10.0.0.3", "2"),
            peer("c", "10.0.0.4", "most"),
        );
        let (c, p) = plan(&snapshot(&text), "n1");
        let c = c.expect("planned").speaker;
        let sends: Vec<Option<usize>> = c.neighbors.iter().map(|n| n.add_paths.send).collect();
        assert_eq!(sends, vec![Some(usize::MAX), Some(2)]);
        assert!(c.neighbors.iter().all(|n| n.add_paths.receive));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field.as_deref(), Some("spec.addPaths.send"));
        assert!(p[0].message.contains("\"most\""), "{}", p[0].message);
    }

    #[test]
    fn filters_become_policies_and_mistakes_are_named() {
        let text = format!(
            "{BASE}\n---\n{}",
            r#"apiVersion: petrel.dev/v1alpha1
kind: BGPFilter
metadata: {name: f1}
spec:
  import:
  - match: {prefix: {cidr: 10.0.0.0/8, le: 24}, community: "65000:1"}
    set: {localPref: 200}
    action: Accept
  export:
  - match: {originAS: 65010}
    action: Reject
---
apiVersion: petrel.dev/v1alpha1
kind: BGPFilter
metadata: {name: bad}
spec:
  export:
  - match: {community: "65000:x"}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: ok}
spec: {peerIP: 10.0.0.254, asNumber: 65000, filters: [f1]}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: missing}
spec: {peerIP: 10.0.0.253, asNumber: 65000, filters: [nope]}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: broken}
spec: {peerIP: 10.0.0.252, asNumber: 65000, filters: [f1, bad]}
"#
        );
        let (c, p) = plan(&snapshot(&text), "n1");
        let c = c.expect("planned").speaker;
        assert_eq!(c.neighbors.len(), 1);
        let n = &c.neighbors[0];
        let import = n.import_policy.as_ref().expect("import");
        assert_eq!(import.rules.len(), 1);
        assert_eq!(import.rules[0].matches.len(), 2);
        assert_eq!(
            import.rules[0].actions,
            vec![PolicyAction::SetLocalPref(200), PolicyAction::Accept]
        );
        assert_eq!(
            n.export_policy.as_ref().expect("export").rules[0].matches,
            vec![Match::OriginAs(65010)]
        );
        assert_eq!(p.len(), 2, "{p:?}");
        // Peers are planned in name order: broken, then missing.
        assert!(
            p[0].message.contains("spec.export[0].match.community"),
            "{p:?}"
        );
        assert!(p[1].message.contains("\"nope\" does not exist"), "{p:?}");
    }

    #[test]
    fn invalid_peers_are_skipped_with_the_field_named() {
        let text = format!(
            "{BASE}\n---\n{}",
            r#"apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: ok}
spec: {peerIP: 10.0.0.254, asNumber: 65000, holdTime: 9s, sendHoldTime: 4m}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: hold}
spec: {peerIP: 10.0.0.253, asNumber: 65000, holdTime: 2}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: send-hold}
spec: {peerIP: 10.0.0.250, asNumber: 65000, sendHoldTime: 2s}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: both}
spec: {peerIP: 10.0.0.252, asNumber: 65000, ebgpMultihop: 2, ttlSecurity: 1}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: secret}
spec: {peerIP: 10.0.0.251, asNumber: 65000, password: {secretKeyRef: {name: nope, key: k}}}
"#
        );
        let (c, p) = plan(&snapshot(&text), "n1");
        let c = c.expect("planned").speaker;
        assert_eq!(c.neighbors.len(), 1);
        assert_eq!(c.neighbors[0].hold_time, 9);
        assert_eq!(c.neighbors[0].send_hold_time, Some(240));
        let mut fields: Vec<&str> = p.iter().filter_map(|p| p.field.as_deref()).collect();
        fields.sort();
        assert_eq!(
            fields,
            vec![
                "spec.holdTime",
                "spec.password.secretKeyRef.name",
                "spec.sendHoldTime",
                "spec.ttlSecurity",
            ]
        );
        assert!(p.iter().all(|p| p.message.contains("skipped")));
    }

    #[test]
    fn no_configuration_means_no_speaker() {
        let (c, p) = plan(&Snapshot::default(), "n1");
        assert!(c.is_none());
        assert!(p[0].message.contains("no BGPConfiguration"));
    }

    #[test]
    fn missing_router_id_is_reported() {
        let text = "apiVersion: petrel.dev/v1alpha1\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: 65001}\n";
        let (c, p) = plan(&snapshot(text), "n1");
        assert!(c.is_none());
        assert_eq!(
            p.last().and_then(|p| p.field.as_deref()),
            Some("spec.routerID")
        );
    }
}
