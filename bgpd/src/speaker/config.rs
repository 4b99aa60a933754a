//! What the speaker is told to do: the speaker's and each neighbour's
//! settings, the routes it originates, graceful restart settings.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use super::forms;
use crate::policy::Policy;
use crate::rib::{Attrs, DecisionOptions, RibConfig};
use crate::session::BGP_PORT;
use crate::wire::AfiSafi;
use crate::wire::attr::{Community, LargeCommunity, Origin};

/// Who a neighbour entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum NeighborAddress {
    /// One peer at this address.
    Address(IpAddr),
    /// Any peer connecting from this range (dynamic neighbours); passive.
    Range(IpNet),
}

impl fmt::Display for NeighborAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NeighborAddress::Address(a) => write!(f, "{a}"),
            NeighborAddress::Range(r) => write!(f, "{r}"),
        }
    }
}

/// One configured neighbour.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NeighborConfig {
    /// A name for logs and status (the configuration object's name).
    pub name: String,
    /// Address or range.
    pub address: NeighborAddress,
    /// TCP port of the peer.
    pub port: u16,
    /// The peer's ASN.
    pub asn: u32,
    /// Hold time to propose (0 or ≥ 3).
    pub hold_time: u16,
    /// Keepalive interval; default a third of the hold time.
    pub keepalive_time: Option<u16>,
    /// RFC 9687 SendHoldTime, seconds; default 8 minutes or twice the
    /// negotiated hold time if longer.
    #[serde(default)]
    pub send_hold_time: Option<u16>,
    /// Only accept connections.
    pub passive: bool,
    /// eBGP multihop: TTL for an external peer that is not directly connected.
    pub ebgp_multihop: Option<u8>,
    /// GTSM: accept packets that crossed at most this many hops (RFC 5082).
    pub ttl_security: Option<u8>,
    /// Source address for outgoing connections.
    pub source_address: Option<IpAddr>,
    /// TCP-MD5 password (never written into a recording: a replay needs no
    /// socket, so no key).
    #[serde(skip_serializing, default)]
    pub password: Option<Password>,
    /// Time between connection attempts.
    pub connect_retry: Duration,
    /// Families to offer.
    #[serde(with = "forms::families")]
    pub families: Vec<AfiSafi>,
    /// Set ourselves as next hop towards an internal peer.
    pub next_hop_self: bool,
    /// Reflect routes to this internal peer (we are its route reflector).
    pub route_reflector_client: bool,
    /// Limits on the prefixes accepted from the peer, per family.
    pub max_prefixes: Vec<MaxPrefixes>,
    /// ADD-PATH (RFC 7911) in the families offered.
    pub add_paths: AddPaths,
    /// Runs on what the peer sends. Changing it keeps the session.
    #[serde(with = "forms::policy")]
    pub import_policy: Option<std::sync::Arc<Policy>>,
    /// Runs on what the peer is sent; routes from one external peer reach
    /// another only when a rule of it accepts them. Changing it keeps the
    /// session.
    #[serde(with = "forms::policy")]
    pub export_policy: Option<std::sync::Arc<Policy>>,
    /// BFD runs with this neighbour (elsewhere: its state comes in through
    /// [`Speaker::set_liveness`](super::Speaker::set_liveness)). Changing
    /// it keeps the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdLink>,
}

/// How a neighbour's BGP session follows its BFD session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BfdLink {
    /// Keep BGP down while BFD is not Up; otherwise BGP comes up on its own
    /// and only a BFD Down ends it.
    pub strict: bool,
}

impl NeighborConfig {
    /// Whether two configurations differ in more than their policies (which
    /// apply without a session reset).
    pub(super) fn differs_beyond_policies(&self, other: &NeighborConfig) -> bool {
        let strip = |n: &NeighborConfig| NeighborConfig {
            import_policy: None,
            export_policy: None,
            bfd: None,
            ..n.clone()
        };
        strip(self) != strip(other)
    }
}

/// ADD-PATH settings of a neighbour (RFC 7911).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AddPaths {
    /// Accept several paths per prefix from the peer.
    pub receive: bool,
    /// Send up to this many paths per prefix (`usize::MAX`: all of them)
    /// where the peer accepts several.
    pub send: Option<usize>,
}

/// A limit on the prefixes accepted from a peer in one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MaxPrefixes {
    /// The family.
    #[serde(with = "forms::family")]
    pub family: AfiSafi,
    /// The most accepted prefixes.
    pub limit: u64,
    /// Warn once the count reaches this percentage of the limit.
    pub warning_percent: u8,
    /// What to do beyond the limit.
    pub action: MaxPrefixesAction,
    /// Count every prefix the peer sends, also those rejected on import
    /// (kept as rejected) and those in UPDATEs treated as withdrawn, not
    /// only those accepted (FRR's `force`): a peer cannot then make us
    /// keep, or parse, without bound what it is refused.
    #[serde(default)]
    pub force: bool,
}

/// What happens when a peer sends more prefixes than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MaxPrefixesAction {
    /// Log a warning and keep the session.
    Log,
    /// End the session with Cease / Maximum Number of Prefixes Reached and
    /// start it again after this long.
    Restart(Duration),
}

impl NeighborConfig {
    /// A neighbour with the usual defaults: hold time 90 s, connect retry 5 s,
    /// IPv4 and IPv6 unicast.
    pub fn new(name: impl Into<String>, address: NeighborAddress, asn: u32) -> Self {
        NeighborConfig {
            name: name.into(),
            address,
            port: BGP_PORT,
            asn,
            hold_time: 90,
            keepalive_time: None,
            send_hold_time: None,
            passive: false,
            ebgp_multihop: None,
            ttl_security: None,
            source_address: None,
            password: None,
            connect_retry: Duration::from_secs(5),
            families: vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
            next_hop_self: false,
            route_reflector_client: false,
            max_prefixes: Vec::new(),
            add_paths: AddPaths::default(),
            import_policy: None,
            export_policy: None,
            bfd: None,
        }
    }
}

/// The whole speaker configuration; [`Speaker::configure`](super::Speaker::configure) applies a new one
/// and resets only what changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpeakerConfig {
    /// Our ASN.
    pub asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Where to listen. Empty: do not listen.
    pub listen: Vec<SocketAddr>,
    /// Neighbours.
    pub neighbors: Vec<NeighborConfig>,
    /// Routes we originate.
    pub originate: Vec<LocalRoute>,
    /// An IPv4 address to use as next hop for IPv4 routes on IPv6 sessions.
    pub local_ipv4: Option<Ipv4Addr>,
    /// An IPv6 address to use as next hop for IPv6 routes on IPv4 sessions.
    pub local_ipv6: Option<Ipv6Addr>,
    /// Decision options.
    #[serde(with = "forms::decision")]
    pub decision: DecisionOptions,
    /// Graceful restart, both roles.
    pub graceful_restart: GracefulRestartConfig,
    /// Route reflection cluster ID; default the router ID.
    pub cluster_id: Option<Ipv4Addr>,
    /// The most next hops of a route installed in the FIB (ECMP); default 8.
    pub maximum_paths: usize,
    /// The most dynamic neighbours (from listen ranges) at once; a
    /// connection beyond it is refused. Default 100.
    #[serde(default = "default_max_dynamic")]
    pub max_dynamic_neighbors: usize,
}

fn default_max_dynamic() -> usize {
    100
}

/// A route this speaker originates (ORIGIN IGP, our next hop), with the
/// attributes every peer is sent it with; per-peer differences are export
/// policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LocalRoute {
    /// The prefix (host bits are cleared).
    pub prefix: IpNet,
    /// Communities to attach.
    #[serde(with = "forms::communities")]
    pub communities: Vec<Community>,
    /// Large communities to attach.
    #[serde(with = "forms::large_communities")]
    pub large_communities: Vec<LargeCommunity>,
    /// LOCAL_PREF (sent to internal peers only).
    pub local_pref: Option<u32>,
}

impl From<IpNet> for LocalRoute {
    fn from(prefix: IpNet) -> Self {
        LocalRoute {
            prefix,
            communities: Vec::new(),
            large_communities: Vec::new(),
            local_pref: None,
        }
    }
}

impl LocalRoute {
    /// The path attributes of the route as the RIB holds it.
    pub(super) fn attrs(&self) -> Attrs {
        let mut communities = self.communities.clone();
        communities.sort();
        communities.dedup();
        let mut large_communities = self.large_communities.clone();
        large_communities.sort();
        large_communities.dedup();
        Attrs {
            origin: Some(Origin::Igp),
            local_pref: self.local_pref,
            communities,
            large_communities,
            ..Attrs::default()
        }
    }
}

/// Graceful restart settings (RFC 4724).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GracefulRestartConfig {
    /// Advertise the capability, and keep the routes of peers that advertise
    /// it while they restart (the helper role).
    pub enabled: bool,
    /// The Restart Time we advertise: how long peers keep our routes after
    /// our session drops, waiting for us to come back (at most 4095 s).
    pub restart_time: u16,
    /// How long the stale routes of a peer that came back wait for its
    /// End-of-RIB before they go.
    pub stale_routes_time: Duration,
    /// After our own restart, the longest route selection waits for every
    /// peer's End-of-RIB; it also bounds the initial convergence the FIB
    /// waits for before it removes routes nobody announced again.
    pub selection_deferral: Duration,
    /// Long-lived graceful restart (RFC 9494): how long a restarting peer's
    /// routes stay, as least preferred, after its restart time (at most this
    /// and what the peer asks for). Zero: LLGR is not offered.
    pub long_lived_stale_time: Duration,
}

impl Default for GracefulRestartConfig {
    fn default() -> Self {
        GracefulRestartConfig {
            enabled: true,
            restart_time: 120,
            stale_routes_time: Duration::from_secs(360),
            selection_deferral: Duration::from_secs(120),
            long_lived_stale_time: Duration::ZERO,
        }
    }
}

/// What the speaker is told at start about the previous run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestartState {
    /// This is a restart: a previous instance ran and its forwarding state is
    /// known (the R bit is advertised and route selection is deferred until
    /// the peers sent their tables).
    pub restarted: bool,
    /// The forwarding state survived the restart (the kernel kept our
    /// routes): the F bit of every family.
    pub forwarding_preserved: bool,
}

impl SpeakerConfig {
    /// A speaker listening dual-stack on port 179, with no neighbours yet.
    pub fn new(asn: u32, router_id: Ipv4Addr) -> Self {
        SpeakerConfig {
            asn,
            router_id,
            listen: vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), BGP_PORT)],
            neighbors: Vec::new(),
            originate: Vec::new(),
            local_ipv4: None,
            local_ipv6: None,
            decision: DecisionOptions::default(),
            graceful_restart: GracefulRestartConfig::default(),
            cluster_id: None,
            maximum_paths: 8,
            max_dynamic_neighbors: default_max_dynamic(),
        }
    }
}

pub(super) fn rib_config(c: &SpeakerConfig) -> RibConfig {
    RibConfig {
        local_asn: c.asn,
        router_id: c.router_id,
        decision: c.decision,
        enforce_first_as: true,
        cluster_id: c.cluster_id.unwrap_or(c.router_id),
        maximum_paths: c.maximum_paths.max(1),
    }
}

/// A TCP-MD5 password: used and compared, never printed (its `Debug` is
/// `"***"`), so no log line or debug dump of a configuration shows it.
#[derive(Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// The password's octets, as TCP-MD5 takes them.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Its length in octets.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Password {
    fn from(text: String) -> Password {
        Password(text)
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}
