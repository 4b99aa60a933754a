//! petrel's resource types (group `petrel.dev`, version `v1alpha1`).
//!
//! Today these are the `spec` types the standalone agent reads from YAML files
//! (`BGPConfiguration`, `BGPPeer`, `BGPFilter`, `BGPAdvertisement`).
//! The Kubernetes issue adds the `CustomResource` derive, schemas and status;
//! the field names and meanings here are the ones the CRDs will have.
//!
//! Unknown fields are rejected, so a misspelt field is an error that names it
//! rather than a setting silently ignored.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

/// The API group.
pub const GROUP: &str = "petrel.dev";
/// The API version within the group.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of petrel objects.
pub const API_VERSION: &str = "petrel.dev/v1alpha1";
/// Node annotation giving that node its own ASN (instead of
/// `BGPConfiguration.spec.asNumber`), for designs with an AS per node.
pub const AS_NUMBER_ANNOTATION: &str = "petrel.dev/as-number";

/// `BGPConfiguration.spec`: the node's BGP identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpConfigurationSpec {
    /// Our ASN (1..=4294967294). Required.
    pub as_number: Option<u32>,
    /// BGP identifier; defaults to the node's IPv4 InternalIP.
    #[serde(rename = "routerID", default)]
    pub router_id: Option<Ipv4Addr>,
    /// Address to listen on; default `::` (dual-stack).
    pub listen_address: Option<IpAddr>,
    /// Port to listen on; default 179.
    pub listen_port: Option<u16>,
    /// Graceful restart (RFC 4724); on by default.
    pub graceful_restart: Option<GracefulRestartSpec>,
    /// Cluster ID when reflecting routes; default the router ID.
    #[serde(rename = "routeReflectorClusterID", default)]
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
    /// The most next hops (ECMP) a learned route is installed with: paths
    /// equal to the best one in LOCAL_PREF, AS_PATH length, ORIGIN, MED and
    /// eBGP/iBGP; 1 to 256, default 8.
    pub maximum_paths: Option<u32>,
    /// Every node peers over iBGP with every other node (their first
    /// InternalIP of the session's family); default true. Switch it off when
    /// nodes peer with route reflectors or ToR switches instead.
    pub node_to_node_mesh_enabled: Option<bool>,
    /// Service ClusterIP ranges to advertise: each range from every node, and
    /// a host route for each Service with `internalTrafficPolicy: Local` from
    /// the nodes that have a ready endpoint of it.
    #[serde(rename = "serviceClusterIPs", default)]
    pub service_cluster_ips: Option<Vec<CidrSpec>>,
    /// Service `spec.externalIPs` ranges to advertise: each range from every
    /// node, and a host route for each external IP of a Service with
    /// `externalTrafficPolicy: Local` from the nodes with a ready endpoint.
    #[serde(rename = "serviceExternalIPs", default)]
    pub service_external_ips: Option<Vec<CidrSpec>>,
    /// LoadBalancer ingress ranges: a host route for each LoadBalancer IP in
    /// them, from every node (`externalTrafficPolicy: Cluster`) or from the
    /// nodes with a ready endpoint (`Local`).
    #[serde(rename = "serviceLoadBalancerIPs", default)]
    pub service_load_balancer_ips: Option<Vec<CidrSpec>>,
}

/// One entry of a list of ranges (`{cidr: 10.96.0.0/16}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CidrSpec {
    /// The range.
    pub cidr: IpNet,
}

/// A Kubernetes label selector (`metav1.LabelSelector`): every `matchLabels`
/// pair and every expression must hold; an empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    pub match_labels: Option<std::collections::BTreeMap<String, String>>,
    /// Further conditions.
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// One condition of a [`LabelSelector`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,
    /// The values for `In` and `NotIn`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// The operator of a [`LabelSelectorRequirement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    /// The label has one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        let pairs = self
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        pairs
            && self.match_expressions.iter().flatten().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => !value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// Problems a selector has that Kubernetes would refuse.
    pub fn validate(&self) -> Result<(), String> {
        for (i, r) in self.match_expressions.iter().flatten().enumerate() {
            match r.operator {
                SelectorOperator::In | SelectorOperator::NotIn if r.values.is_empty() => {
                    return Err(format!(
                        "matchExpressions[{i}]: {:?} needs at least one value",
                        r.operator
                    ));
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist
                    if !r.values.is_empty() =>
                {
                    return Err(format!(
                        "matchExpressions[{i}]: {:?} takes no values",
                        r.operator
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `BGPAdvertisement.spec` (MetalLB's semantics): how the Service IPs it
/// selects are advertised. A Service IP that no advertisement selects is
/// advertised to every peer with no extra attributes; once one selects it,
/// the advertisements that select it decide to which peers it goes, and with
/// what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpAdvertisementSpec {
    /// Services whose labels match any of these; none: every Service.
    pub service_selectors: Option<Vec<LabelSelector>>,
    /// Service IPs within any of these ranges; none: every range.
    pub cidrs: Option<Vec<IpNet>>,
    /// BGPPeer names to advertise to; none: every peer.
    pub peers: Option<Vec<String>>,
    /// Nodes whose labels match any of these advertise; none: every node.
    pub node_selectors: Option<Vec<LabelSelector>>,
    /// Communities to attach, `ASN:VALUE` or a well-known name (`no-export`,
    /// `no-advertise`).
    pub communities: Option<Vec<String>>,
    /// Large communities to attach, `ASN:DATA1:DATA2`.
    pub large_communities: Option<Vec<String>>,
    /// LOCAL_PREF towards internal peers.
    pub local_pref: Option<u32>,
    /// Advertise the IPv4 range of this length that covers each IP instead
    /// of the /32 (0 to 32; default 32).
    pub aggregation_length: Option<u8>,
    /// The same for IPv6 (0 to 128; default 128).
    #[serde(rename = "aggregationLengthV6", default)]
    pub aggregation_length_v6: Option<u8>,
}

/// `BGPConfiguration.spec.gracefulRestart`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GracefulRestartSpec {
    /// Advertise graceful restart and keep restarting peers' routes; default true.
    pub enabled: Option<bool>,
    /// How long peers keep our routes while we restart (the advertised
    /// Restart Time, at most `4095s`); default `120s`.
    pub restart_time: Option<Seconds>,
    /// How long a peer that came back from a restart has to send End-of-RIB
    /// before its stale routes go; default `360s`.
    pub stale_routes_time: Option<Seconds>,
    /// After our own restart, the longest wait for every peer's End-of-RIB
    /// before best paths are chosen, advertised and installed; default `120s`.
    pub selection_deferral_time: Option<Seconds>,
    /// Long-lived graceful restart (RFC 9494): how long a restarting peer's
    /// routes stay, least preferred, after its restart time (at most this and
    /// what the peer asks for); `0` (the default) does not offer it.
    pub long_lived_stale_time: Option<Seconds>,
}

/// `BGPPeer.spec`: one neighbour, or a range of dynamic neighbours.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    /// The peer's address. Either this or `listenRange` is required.
    #[serde(rename = "peerIP", default)]
    pub peer_ip: Option<IpAddr>,
    /// Accept sessions from any address in this range (dynamic neighbours).
    pub listen_range: Option<IpNet>,
    /// The peer's ASN. Required.
    pub as_number: Option<u32>,
    /// The peer's TCP port; default 179.
    pub port: Option<u16>,
    /// Hold time to propose: `0` or at least `3s`; default `90s`.
    pub hold_time: Option<Seconds>,
    /// Keepalive interval; default a third of the hold time.
    pub keepalive_time: Option<Seconds>,
    /// Only accept connections from the peer.
    pub passive: Option<bool>,
    /// TTL for an external peer that is not directly connected.
    pub ebgp_multihop: Option<u8>,
    /// GTSM (RFC 5082): the most hops the peer may be away.
    pub ttl_security: Option<u8>,
    /// Source address for the session.
    pub source_address: Option<IpAddr>,
    /// TCP-MD5 password.
    pub password: Option<PasswordSource>,
    /// Put our address as next hop towards an internal peer.
    pub next_hop_self: Option<bool>,
    /// We are this internal peer's route reflector (RFC 4456): it gets the
    /// routes of our other internal peers, and its routes go to all of them.
    /// With `listenRange`, every node that connects from the range is a client.
    pub route_reflector_client: Option<bool>,
    /// Limits on the prefixes accepted from the peer, per family.
    pub max_prefixes: Option<MaxPrefixesSpec>,
    /// ADD-PATH (RFC 7911): several paths per prefix.
    pub add_paths: Option<AddPathsSpec>,
    /// BGPFilter names, applied in order: their import rules to what the
    /// peer sends, their export rules to what it is sent. Routes learned from
    /// one external peer reach another only when an export rule accepts them.
    pub filters: Option<Vec<String>>,
    /// Only nodes whose labels match peer with this peer; none: every node.
    pub node_selector: Option<LabelSelector>,
}

/// `BGPFilter.spec`: ordered rules for routes received (`import`) and sent
/// (`export`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpFilterSpec {
    /// Rules for what peers send.
    pub import: Option<Vec<FilterRuleSpec>>,
    /// Rules for what peers are sent.
    pub export: Option<Vec<FilterRuleSpec>>,
}

/// One rule: when every condition in `match` holds, `set` changes the route
/// and `action` decides it (`Continue`, the default, goes on to the next rule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterRuleSpec {
    /// Conditions, all of which must hold; none: every route.
    #[serde(rename = "match")]
    pub matches: Option<FilterMatchSpec>,
    /// Changes.
    pub set: Option<FilterSetSpec>,
    /// `Accept`, `Reject` or `Continue` (default).
    pub action: Option<FilterAction>,
}

/// Conditions of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterMatchSpec {
    /// The prefix lies within `cidr`, with a length from `ge` to `le`
    /// (neither: exactly `cidr`'s length).
    pub prefix: Option<PrefixMatchSpec>,
    /// `ipv4` or `ipv6`.
    pub family: Option<String>,
    /// A community the route carries, `ASN:VALUE`.
    pub community: Option<String>,
    /// A large community the route carries, `ASN:DATA1:DATA2`.
    pub large_community: Option<String>,
    /// An ASN anywhere in the AS path.
    pub as_path_contains: Option<u32>,
    /// The ASN the route originated in.
    #[serde(rename = "originAS", default)]
    pub origin_as: Option<u32>,
    /// Bounds on the AS path length.
    pub as_path_length: Option<LengthSpec>,
    /// The next hop lies within this CIDR.
    pub next_hop: Option<IpNet>,
}

/// `match.prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixMatchSpec {
    /// The covering CIDR. Required.
    pub cidr: Option<IpNet>,
    /// Shortest length matched.
    pub ge: Option<u8>,
    /// Longest length matched.
    pub le: Option<u8>,
}

/// `match.asPathLength`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LengthSpec {
    /// At least.
    pub min: Option<u32>,
    /// At most.
    pub max: Option<u32>,
}

/// Changes a rule makes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterSetSpec {
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// MULTI_EXIT_DISC.
    #[serde(rename = "med", default)]
    pub med: Option<u32>,
    /// Communities to add, `ASN:VALUE`.
    pub add_communities: Option<Vec<String>>,
    /// Communities to remove.
    pub remove_communities: Option<Vec<String>>,
    /// Large communities to add, `ASN:DATA1:DATA2`.
    pub add_large_communities: Option<Vec<String>>,
    /// Large communities to remove.
    pub remove_large_communities: Option<Vec<String>>,
    /// Prepend our ASN (or `asn`) `count` times.
    pub prepend: Option<PrependSpec>,
    /// Export only: our own address as next hop.
    pub next_hop_self: Option<bool>,
}

/// `set.prepend`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrependSpec {
    /// The ASN; default ours.
    pub asn: Option<u32>,
    /// How often (1 to 10). Required.
    pub count: Option<u8>,
}

/// What a rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterAction {
    /// Take the route; stop.
    Accept,
    /// Drop the route; stop.
    Reject,
    /// Go on to the next rule.
    Continue,
}

/// `BGPPeer.spec.addPaths`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddPathsSpec {
    /// Accept several paths per prefix from the peer; default false.
    pub receive: Option<bool>,
    /// Send several paths per prefix: a number (1 to 255) or `all`.
    pub send: Option<AddPathSendSpec>,
}

/// How many paths to send: a count or `all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AddPathSendSpec {
    /// At most this many.
    Count(u32),
    /// A keyword; only `all` is valid.
    Keyword(String),
}

/// `BGPPeer.spec.maxPrefixes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaxPrefixesSpec {
    /// IPv4 unicast.
    pub ipv4: Option<MaxPrefixSpec>,
    /// IPv6 unicast.
    pub ipv6: Option<MaxPrefixSpec>,
}

/// One family's prefix limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaxPrefixSpec {
    /// The most prefixes accepted. Required.
    pub limit: Option<u32>,
    /// Warn at this percentage of the limit; default 75.
    pub warning_percent: Option<u8>,
    /// `Restart` (default): Cease / Maximum Number of Prefixes Reached, then
    /// a new session after `restartAfter`; `Log`: only warn.
    pub action: Option<MaxPrefixAction>,
    /// How long the session stays down with `Restart`; default `60s`.
    pub restart_after: Option<Seconds>,
}

/// What happens beyond a prefix limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaxPrefixAction {
    /// Only warn.
    Log,
    /// End the session and start again later.
    Restart,
}

/// Where a password comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordSource {
    /// A file holding the password (trailing newline ignored).
    pub file: Option<String>,
    /// A key of a `v1` Secret.
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A reference to a key of a Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key within it.
    pub key: String,
}

/// A duration in whole seconds, written as a number (`90`) or in Kubernetes
/// style (`"90s"`, `"1m30s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Seconds(pub u32);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

impl Seconds {
    /// Parses `90`, `90s`, `2m`, `1m30s`, `1h`.
    pub fn parse(s: &str) -> Result<Seconds, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u32>() {
            return Ok(Seconds(n));
        }
        let mut total: u64 = 0;
        let mut num = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                _ => {
                    return Err(format!(
                        "unknown unit {c:?} in duration {s:?} (use s, m or h)"
                    ));
                }
            };
            let n: u64 = num
                .parse()
                .map_err(|_| format!("missing number before {c:?} in {s:?}"))?;
            total += n * unit;
            num.clear();
        }
        if !num.is_empty() {
            return Err(format!("duration {s:?} ends without a unit"));
        }
        u32::try_from(total)
            .map(Seconds)
            .map_err(|_| format!("duration {s:?} is too long"))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Seconds(n)),
            Raw::Text(t) => Seconds::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_both_styles() {
        assert_eq!(Seconds::parse("90"), Ok(Seconds(90)));
        assert_eq!(Seconds::parse("90s"), Ok(Seconds(90)));
        assert_eq!(Seconds::parse("1m30s"), Ok(Seconds(90)));
        assert_eq!(Seconds::parse("1h"), Ok(Seconds(3600)));
        assert!(Seconds::parse("10x").is_err());
        assert!(Seconds::parse("10m5").is_err());
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = serde_json::from_value::<BgpPeerSpec>(
            serde_json::json!({"peerIp": "10.0.0.1", "asNumber": 1}),
        )
        .expect_err("misspelt field");
        assert!(e.to_string().contains("unknown field `peerIp`"), "{e}");
    }

    #[test]
    fn label_selectors_match_as_kubernetes_does() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"rack": "r1"},
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a", "b"]},
                {"key": "spot", "operator": "DoesNotExist"},
                {"key": "tier", "operator": "NotIn", "values": ["edge"]}
            ]
        }))
        .expect("selector");
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert!(sel.matches(&labels(&[("rack", "r1"), ("zone", "a")])));
        assert!(!sel.matches(&labels(&[("rack", "r2"), ("zone", "a")])));
        assert!(!sel.matches(&labels(&[("rack", "r1"), ("zone", "c")])));
        assert!(!sel.matches(&labels(&[("rack", "r1"), ("zone", "a"), ("spot", "")])));
        assert!(!sel.matches(&labels(&[("rack", "r1"), ("zone", "a"), ("tier", "edge")])));
        assert!(LabelSelector::default().matches(&labels(&[])));
        let bad: LabelSelector = serde_json::from_value(
            serde_json::json!({"matchExpressions": [{"key": "k", "operator": "In"}]}),
        )
        .expect("parses");
        assert!(
            bad.validate()
                .expect_err("no values")
                .contains("matchExpressions[0]")
        );
    }
}
