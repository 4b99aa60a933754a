//! What this node advertises for Services, and why it does not advertise what
//! it leaves out: Calico's rules for ClusterIPs and ExternalIPs, MetalLB's for
//! LoadBalancer IPs and `BGPAdvertisement`s.
//!
//! - A range in `serviceClusterIPs` or `serviceExternalIPs` goes out from
//!   every node, so traffic for any Service reaches some node.
//! - A Service with a `Local` traffic policy is also announced as a host route
//!   (/32 or /128) from exactly the nodes with a ready endpoint of it, so the
//!   more specific route steers traffic only to them.
//! - A LoadBalancer IP within `serviceLoadBalancerIPs` is a host route: from
//!   every node (`Cluster`) while the Service has a ready endpoint anywhere,
//!   or from the nodes with a ready local endpoint (`Local`).
//! - `BGPAdvertisement`s that select a Service IP decide where it goes and
//!   with what (communities, LOCAL_PREF, aggregation); one that names peers
//!   limits the IP to them. Per-peer differences become export rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use bgpd::policy::{Action, Match, Rule};
use bgpd::speaker::LocalRoute;
use bgpd::wire::attr::{Community, LargeCommunity};
use crds::{BgpAdvertisementSpec, BgpConfigurationSpec};
use ipnet::IpNet;

use super::{community, large_community};
use model::{EndpointSlice, FieldError, Named, Node, Problem, Service, Snapshot, TrafficPolicy};

/// Why a prefix is on this node's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IntentKind {
    /// One of the node's `spec.podCIDRs`.
    PodCidr,
    /// A range of `serviceClusterIPs`.
    ClusterIpRange,
    /// A range of `serviceExternalIPs`.
    ExternalIpRange,
    /// A Service's ClusterIP (`internalTrafficPolicy: Local`).
    ClusterIp,
    /// A Service's external IP.
    ExternalIp,
    /// A Service's LoadBalancer ingress IP.
    LoadBalancerIp,
    /// A route an API client added.
    ApiPath,
    /// A block of pod addresses affine to this node (petrel's IPAM).
    PodBlock,
    /// A pod address this node borrowed from another node's block.
    PodBorrowed,
}

/// A prefix this node should consider advertising, and the planner's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The prefix (after aggregation).
    pub prefix: IpNet,
    /// What it is.
    pub kind: IntentKind,
    /// The Service (`namespace/name`) it is for, or the API client.
    pub service: Option<String>,
    /// Whether this node originates it.
    pub advertised: bool,
    /// Why it is advertised, or why not.
    pub reason: String,
    /// The BGPPeers it is limited to by BGPAdvertisements; `None`: every peer.
    pub peers: Option<Vec<String>>,
}

/// Attributes that advertisements add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Extras {
    communities: BTreeSet<Community>,
    large_communities: BTreeSet<LargeCommunity>,
    local_pref: Option<u32>,
}

impl Extras {
    fn merge(&mut self, o: &Extras) {
        self.communities.extend(o.communities.iter().copied());
        self.large_communities
            .extend(o.large_communities.iter().copied());
        // Several advertisements for one prefix: the highest preference wins,
        // as the most specific intent is usually the preferred one.
        self.local_pref = self.local_pref.max(o.local_pref);
    }

    fn is_empty(&self) -> bool {
        self.communities.is_empty()
            && self.large_communities.is_empty()
            && self.local_pref.is_none()
    }
}

/// How one prefix goes out.
#[derive(Debug, Clone, Default)]
struct Reach {
    /// To every peer, with these attributes.
    everyone: Option<Extras>,
    /// To these peers, with these attributes (on top of `everyone`'s).
    named: BTreeMap<String, Extras>,
}

impl Reach {
    fn merge(&mut self, o: Reach) {
        if let Some(e) = o.everyone {
            self.everyone.get_or_insert_with(Extras::default).merge(&e);
        }
        for (p, e) in o.named {
            self.named.entry(p).or_default().merge(&e);
        }
    }
}

/// An advertisement checked once.
struct Advertisement<'a> {
    obj: &'a Named<BgpAdvertisementSpec>,
    extras: Extras,
    v4_len: u8,
    v6_len: u8,
}

/// What the Service part of the plan produced.
#[derive(Debug, Default)]
pub struct Advertised {
    /// Routes to originate, with the attributes every peer gets.
    pub routes: Vec<LocalRoute>,
    /// Export rules per BGPPeer name (and mesh peer name), to run before the
    /// peer's filters: the attributes advertisements add, and rejections where
    /// they limit a prefix to other peers.
    pub export_rules: BTreeMap<String, Vec<Rule>>,
    /// The rules for a peer not known here (added through the API later):
    /// what every peer gets, and rejections of limited prefixes.
    pub default_export_rules: Vec<Rule>,
    /// Every prefix considered, with the verdict.
    pub intents: Vec<Intent>,
}

/// This node's pod blocks and borrowed addresses (petrel's IPAM, as the
/// agent filled in `snapshot.local_ipam`): with `ipamMode: Petrel`, each
/// advertised to every peer unless its IPPool says `disableBGPExport`. A block routes as one prefix
/// (the agent blackholes it, so its unused addresses go nowhere); a borrowed
/// address as a host route, more specific than the lender's block.
fn pod_blocks(
    snapshot: &Snapshot,
    petrel_ipam: bool,
    reach: &mut BTreeMap<IpNet, Reach>,
    intents: &mut Vec<Intent>,
) {
    let pool_of = |p: &IpNet| {
        snapshot
            .ip_pools
            .iter()
            .find(|pool| pool.spec.cidr.is_some_and(|c| c.contains(p)))
    };
    let ipam = &snapshot.local_ipam;
    let entries = ipam
        .blocks
        .iter()
        .map(|b| {
            (
                *b,
                IntentKind::PodBlock,
                "this node's IPAM block (with a blackhole)".to_string(),
            )
        })
        .chain(ipam.borrowed.iter().map(|(addr, block)| {
            (
                *addr,
                IntentKind::PodBorrowed,
                format!("a pod address borrowed from block {block} of another node"),
            )
        }));
    for (prefix, kind, why) in entries {
        let (advertised, reason) = match pool_of(&prefix) {
            _ if !petrel_ipam => (
                false,
                "BGPConfiguration ipamMode is Kubernetes: pod addresses come from spec.podCIDRs"
                    .to_string(),
            ),
            Some(pool) if pool.spec.disable_bgp_export == Some(true) => {
                (false, format!("IPPool {} has disableBGPExport", pool.name))
            }
            _ => (true, why),
        };
        if advertised {
            reach.entry(prefix).or_default().merge(Reach {
                everyone: Some(Extras::default()),
                named: BTreeMap::new(),
            });
        }
        intents.push(Intent {
            prefix,
            kind,
            service: None,
            advertised,
            reason,
            peers: None,
        });
    }
}

/// Plans the Service advertisements of `node` (and its pod CIDRs), towards
/// the neighbours `peer_names`.
pub fn plan(
    snapshot: &Snapshot,
    config: &Named<BgpConfigurationSpec>,
    node_name: &str,
    node: Option<&Node>,
    peer_names: &[String],
    problems: &mut Vec<Problem>,
) -> Advertised {
    let mut out = Advertised::default();
    let mut reach: BTreeMap<IpNet, Reach> = BTreeMap::new();
    let everyone = || Reach {
        everyone: Some(Extras::default()),
        named: BTreeMap::new(),
    };
    let petrel_ipam = config.spec.ipam_mode == Some(crds::IpamMode::Petrel);
    if let Some(n) = node {
        for c in &n.pod_cidrs {
            let p = c.trunc();
            if !petrel_ipam {
                reach.entry(p).or_default().merge(everyone());
            }
            out.intents.push(Intent {
                prefix: p,
                kind: IntentKind::PodCidr,
                service: None,
                advertised: !petrel_ipam,
                reason: if petrel_ipam {
                    "BGPConfiguration ipamMode Petrel: pod addresses come from IPPools, not spec.podCIDRs".into()
                } else {
                    "this node's spec.podCIDRs (with a blackhole)".into()
                },
                peers: None,
            });
        }
    }
    pod_blocks(snapshot, petrel_ipam, &mut reach, &mut out.intents);
    let ranges = |v: &Option<Vec<crds::CidrSpec>>| -> Vec<IpNet> {
        v.iter().flatten().map(|c| c.cidr.trunc()).collect()
    };
    let cluster_ranges = ranges(&config.spec.service_cluster_ips);
    let external_ranges = ranges(&config.spec.service_external_ips);
    let lb_ranges = ranges(&config.spec.service_load_balancer_ips);
    for (list, kind, field) in [
        (
            &cluster_ranges,
            IntentKind::ClusterIpRange,
            "serviceClusterIPs",
        ),
        (
            &external_ranges,
            IntentKind::ExternalIpRange,
            "serviceExternalIPs",
        ),
    ] {
        for r in list {
            reach.entry(*r).or_default().merge(everyone());
            out.intents.push(Intent {
                prefix: *r,
                kind,
                service: None,
                advertised: true,
                reason: format!("BGPConfiguration {field}: from every node"),
                peers: None,
            });
        }
    }
    let advertisements = checked_advertisements(snapshot, problems);
    // Each Service's slices, found once rather than by a scan per Service IP.
    let mut slices_of: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in &snapshot.endpoint_slices {
        if let Some(name) = &s.service {
            slices_of
                .entry((s.namespace.as_str(), name.as_str()))
                .or_default()
                .push(s);
        }
    }
    let mut services: Vec<&Service> = snapshot.services.iter().collect();
    services.sort_by_key(|s| s.key());
    for svc in services {
        let candidates = service_candidates(svc, &cluster_ranges, &external_ranges, &lb_ranges);
        for (ip, kind, policy_local, in_range) in candidates {
            let mut intent = Intent {
                prefix: IpNet::from(ip),
                kind,
                service: Some(svc.key()),
                advertised: false,
                reason: String::new(),
                peers: None,
            };
            if let Some(field) = in_range.err() {
                intent.reason = format!("{ip} is outside BGPConfiguration {field}");
                out.intents.push(intent);
                continue;
            }
            let slices = slices_of.get(&(svc.namespace.as_str(), svc.name.as_str()));
            let slices = slices.map(Vec::as_slice).unwrap_or_default();
            let local = endpoints(slices, ip, Some(node_name));
            let anywhere = endpoints(slices, ip, None);
            if policy_local && !local {
                intent.reason = "no ready endpoint on this node (traffic policy Local)".into();
                out.intents.push(intent);
                continue;
            }
            if !policy_local && !anywhere {
                intent.reason = "the Service has no ready endpoint anywhere".into();
                out.intents.push(intent);
                continue;
            }
            let why = if policy_local {
                "a ready endpoint on this node (traffic policy Local)"
            } else {
                "from every node (traffic policy Cluster)"
            };
            // The advertisements that select this Service IP.
            let selecting: Vec<&Advertisement> = advertisements
                .iter()
                .filter(|a| selects_service(a.obj, svc, ip))
                .collect();
            if selecting.is_empty() {
                reach.entry(intent.prefix).or_default().merge(everyone());
                intent.advertised = true;
                intent.reason = why.into();
                out.intents.push(intent);
                continue;
            }
            let here: Vec<&&Advertisement> = selecting
                .iter()
                .filter(|a| selects_node(a.obj, node))
                .collect();
            if here.is_empty() {
                let names: Vec<&str> = selecting.iter().map(|a| a.obj.name.as_str()).collect();
                intent.reason = format!(
                    "BGPAdvertisement {} select the Service but not this node",
                    names.join(", ")
                );
                out.intents.push(intent);
                continue;
            }
            // Each advertisement may aggregate differently: one intent per prefix.
            let mut by_prefix: BTreeMap<IpNet, (Reach, Vec<&str>)> = BTreeMap::new();
            for a in here {
                let len = match ip {
                    IpAddr::V4(_) => a.v4_len,
                    IpAddr::V6(_) => a.v6_len,
                };
                let prefix = IpNet::new(ip, len)
                    .map(|n| n.trunc())
                    .unwrap_or(intent.prefix);
                let ranges = match kind {
                    IntentKind::ClusterIp => &cluster_ranges,
                    IntentKind::ExternalIp => &external_ranges,
                    _ => &lb_ranges,
                };
                if !ranges.iter().any(|r| r.contains(&prefix)) {
                    // Announcing more than the range would pull in traffic
                    // for addresses that are not ours.
                    out.intents.push(Intent {
                        prefix,
                        kind,
                        service: Some(svc.key()),
                        advertised: false,
                        reason: format!(
                            "BGPAdvertisement {}: {prefix} reaches beyond the configured range",
                            a.obj.name
                        ),
                        peers: None,
                    });
                    continue;
                }
                let r = match &a.obj.spec.peers {
                    None => Reach {
                        everyone: Some(a.extras.clone()),
                        named: BTreeMap::new(),
                    },
                    Some(peers) => Reach {
                        everyone: None,
                        named: peers
                            .iter()
                            .map(|p| (p.clone(), a.extras.clone()))
                            .collect(),
                    },
                };
                let e = by_prefix.entry(prefix).or_default();
                e.0.merge(r);
                e.1.push(&a.obj.name);
            }
            for (prefix, (r, names)) in by_prefix {
                let peers = r
                    .everyone
                    .is_none()
                    .then(|| r.named.keys().cloned().collect());
                reach.entry(prefix).or_default().merge(r);
                out.intents.push(Intent {
                    prefix,
                    kind,
                    service: Some(svc.key()),
                    advertised: true,
                    reason: format!("{why}; BGPAdvertisement {}", names.join(", ")),
                    peers,
                });
            }
        }
    }
    for (prefix, r) in reach {
        // The route itself carries nothing extra: advertisement attributes are
        // added on export, so a NO_EXPORT they attach applies where the route
        // arrives, not to our own export of it.
        out.routes.push(LocalRoute::from(prefix));
        for peer in peer_names {
            if let Some(rule) = peer_rule(prefix, &r, Some(peer)) {
                out.export_rules.entry(peer.clone()).or_default().push(rule);
            }
        }
        if let Some(rule) = peer_rule(prefix, &r, None) {
            out.default_export_rules.push(rule);
        }
    }
    out
}

/// The export rule for `prefix` towards `peer` (`None`: a peer no
/// advertisement names): the attributes to add, a rejection when the prefix
/// is limited to other peers, or nothing.
fn peer_rule(prefix: IpNet, r: &Reach, peer: Option<&String>) -> Option<Rule> {
    let named = peer.and_then(|p| r.named.get(p));
    let extras = match (&r.everyone, named) {
        (None, None) => {
            return Some(Rule {
                matches: vec![exact(prefix)],
                actions: vec![Action::Reject],
            });
        }
        (Some(e), None) | (None, Some(e)) => e.clone(),
        (Some(e), Some(n)) => {
            let mut all = e.clone();
            all.merge(n);
            all
        }
    };
    if extras.is_empty() {
        return None;
    }
    let mut actions = Vec::new();
    if !extras.communities.is_empty() {
        actions.push(Action::AddCommunities(
            extras.communities.into_iter().collect(),
        ));
    }
    if !extras.large_communities.is_empty() {
        actions.push(Action::AddLargeCommunities(
            extras.large_communities.into_iter().collect(),
        ));
    }
    if let Some(l) = extras.local_pref {
        actions.push(Action::SetLocalPref(l));
    }
    Some(Rule {
        matches: vec![exact(prefix)],
        actions,
    })
}

fn exact(prefix: IpNet) -> Match {
    Match::Prefix {
        net: prefix,
        ge: None,
        le: None,
    }
}

/// The Service IPs to consider: (ip, kind, traffic policy is Local, in a
/// configured range or the name of the field it is outside of).
fn service_candidates(
    svc: &Service,
    cluster_ranges: &[IpNet],
    external_ranges: &[IpNet],
    lb_ranges: &[IpNet],
) -> Vec<(IpAddr, IntentKind, bool, Result<(), &'static str>)> {
    let within = |ranges: &[IpNet], ip: &IpAddr| ranges.iter().any(|r| r.contains(ip));
    let mut out = Vec::new();
    let etp_local = svc.external_traffic_policy == TrafficPolicy::Local;
    // A Cluster-policy ClusterIP or external IP is covered by its range; only
    // Local ones need a host route (and LoadBalancer IPs always get one). A
    // ClusterIP follows either policy, as Calico does with
    // externalTrafficPolicy and Kubernetes defines internalTrafficPolicy.
    if svc.internal_traffic_policy == TrafficPolicy::Local || etp_local {
        for ip in &svc.cluster_ips {
            if within(cluster_ranges, ip) {
                out.push((*ip, IntentKind::ClusterIp, true, Ok(())));
            }
        }
    }
    for ip in &svc.external_ips {
        if !within(external_ranges, ip) {
            out.push((
                *ip,
                IntentKind::ExternalIp,
                etp_local,
                Err("serviceExternalIPs"),
            ));
        } else if etp_local {
            out.push((*ip, IntentKind::ExternalIp, true, Ok(())));
        }
    }
    if svc.service_type == "LoadBalancer" {
        for ip in &svc.load_balancer_ips {
            let range = if within(lb_ranges, ip) {
                Ok(())
            } else {
                Err("serviceLoadBalancerIPs")
            };
            out.push((*ip, IntentKind::LoadBalancerIp, etp_local, range));
        }
    }
    out
}

/// Whether a Service's `slices` have a ready endpoint of `ip`'s family (on
/// `node`, if given).
fn endpoints(slices: &[&EndpointSlice], ip: IpAddr, node: Option<&str>) -> bool {
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    slices
        .iter()
        .filter(|s| s.address_type == family)
        .flat_map(|s| &s.endpoints)
        .any(|e| {
            e.ready
                && !e.addresses.is_empty()
                && node.is_none_or(|n| e.node_name.as_deref() == Some(n))
        })
}

fn selects_service(a: &Named<BgpAdvertisementSpec>, svc: &Service, ip: IpAddr) -> bool {
    let by_labels = match &a.spec.service_selectors {
        None => true,
        Some(sel) => sel.iter().any(|s| s.matches(&svc.labels)),
    };
    let by_cidr = match &a.spec.cidrs {
        None => true,
        Some(c) => c.iter().any(|n| n.contains(&ip)),
    };
    by_labels && by_cidr
}

fn selects_node(a: &Named<BgpAdvertisementSpec>, node: Option<&Node>) -> bool {
    match (&a.spec.node_selectors, node) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(sel), Some(n)) => sel.iter().any(|s| s.matches(&n.labels)),
    }
}

/// Advertisements with their attributes parsed; a bad one is reported and
/// left out (its Services fall back to the others, or to no advertisement).
fn checked_advertisements<'a>(
    snapshot: &'a Snapshot,
    problems: &mut Vec<Problem>,
) -> Vec<Advertisement<'a>> {
    let mut out = Vec::new();
    let mut sorted: Vec<&Named<BgpAdvertisementSpec>> = snapshot.advertisements.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for obj in sorted {
        match check(obj, snapshot) {
            Ok(a) => out.push(a),
            Err(e) => problems.push(Problem {
                origin: obj.origin.to_string(),
                object: Some(format!("BGPAdvertisement/{}", obj.name)),
                field: Some(e.field),
                message: format!("{}; this advertisement is ignored", e.reason),
            }),
        }
    }
    out
}

fn check<'a>(
    obj: &'a Named<BgpAdvertisementSpec>,
    snapshot: &Snapshot,
) -> Result<Advertisement<'a>, FieldError> {
    let s = &obj.spec;
    let mut extras = Extras {
        local_pref: s.local_pref,
        ..Extras::default()
    };
    for (i, c) in s.communities.iter().flatten().enumerate() {
        extras.communities.insert(
            community(c).map_err(|e| FieldError::new(format!("spec.communities[{i}]"), e))?,
        );
    }
    for (i, c) in s.large_communities.iter().flatten().enumerate() {
        extras.large_communities.insert(
            large_community(c)
                .map_err(|e| FieldError::new(format!("spec.largeCommunities[{i}]"), e))?,
        );
    }
    let v4_len = s.aggregation_length.unwrap_or(32);
    if v4_len > 32 {
        return Err(FieldError::new(
            "spec.aggregationLength",
            format!("{v4_len} is longer than 32"),
        ));
    }
    let v6_len = s.aggregation_length_v6.unwrap_or(128);
    if v6_len > 128 {
        return Err(FieldError::new(
            "spec.aggregationLengthV6",
            format!("{v6_len} is longer than 128"),
        ));
    }
    for (field, empty) in [
        (
            "spec.serviceSelectors",
            s.service_selectors.as_ref().is_some_and(Vec::is_empty),
        ),
        (
            "spec.nodeSelectors",
            s.node_selectors.as_ref().is_some_and(Vec::is_empty),
        ),
        ("spec.cidrs", s.cidrs.as_ref().is_some_and(Vec::is_empty)),
    ] {
        if empty {
            return Err(FieldError::new(
                field,
                "is empty and would select nothing: omit it to select everything",
            ));
        }
    }
    for (field, sels) in [
        ("spec.serviceSelectors", &s.service_selectors),
        ("spec.nodeSelectors", &s.node_selectors),
    ] {
        for (i, sel) in sels.iter().flatten().enumerate() {
            sel.validate()
                .map_err(|e| FieldError::new(format!("{field}[{i}]"), e))?;
        }
    }
    if let Some(peers) = &s.peers {
        if peers.is_empty() {
            return Err(FieldError::new(
                "spec.peers",
                "is empty: omit it to advertise to every peer",
            ));
        }
        // A peer this node does not have may be another node's (nodeSelector);
        // only a name no BGPPeer has is a mistake.
        for (i, p) in peers.iter().enumerate() {
            if !snapshot.peers.iter().any(|b| b.name == *p) {
                return Err(FieldError::new(
                    format!("spec.peers[{i}]"),
                    format!("no BGPPeer is named {p:?}"),
                ));
            }
        }
    }
    Ok(Advertisement {
        obj,
        extras,
        v4_len,
        v6_len,
    })
}

#[cfg(test)]
mod tests;
