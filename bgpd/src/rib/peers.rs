//! The peer table: what the RIB knows of each peer, sessions coming up and
//! going down, and the per-peer counters.

use foldhash::{HashSet, HashSetExt};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::decision::Source;
use super::encode::Outbound;
use super::{Attrs, PeerId, Rib};
use crate::policy::Policy;
use crate::prefixmap::PrefixMap;
use crate::wire::{AfiSafi, WireContext};

/// A peer as the RIB sees it once its session is Established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerInfo {
    /// The peer's address.
    pub address: IpAddr,
    /// Our address on the session: the next hop we put in towards it.
    pub local_address: IpAddr,
    /// An IPv4 address of ours to use as next hop for IPv4 routes when the
    /// session runs over IPv6.
    pub local_ipv4: Option<Ipv4Addr>,
    /// An IPv6 address of ours to use as next hop for IPv6 routes when the
    /// session runs over IPv4.
    pub local_ipv6: Option<Ipv6Addr>,
    /// Our IPv6 link-local address on the shared link, sent beside the global one.
    pub local_link_local: Option<Ipv6Addr>,
    /// The peer's ASN.
    pub asn: u32,
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    /// Always put our own address as next hop (also towards internal peers).
    pub next_hop_self: bool,
    /// We are the route reflector of this internal peer (RFC 4456).
    pub rr_client: bool,
    /// ADD-PATH send (RFC 7911): how many paths per prefix to send in the
    /// families where the peer agreed to receive several (`usize::MAX`: all).
    pub add_path_send: Option<usize>,
    /// Runs on what the peer sends, before the decision process.
    pub import_policy: Option<Arc<Policy>>,
    /// Runs on what the peer is sent.
    pub export_policy: Option<Arc<Policy>>,
    /// Long-lived graceful restart (RFC 9494) was negotiated: the peer may be
    /// sent routes that are long-lived stale (with LLGR_STALE); others are not.
    pub long_lived: bool,
    /// An external peer gets routes learned from other external peers even
    /// when no export rule accepted them (false: only when one did, so a node
    /// does not become a transit between its upstreams).
    pub transit: bool,
    /// Families negotiated.
    pub families: Vec<AfiSafi>,
    /// Layout of what we receive.
    pub rx: WireContext,
    /// Layout of what we send.
    pub tx: WireContext,
}

/// Counters per peer and family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefixCounts {
    /// Prefixes the peer currently announces to us.
    pub received: u64,
    /// Of those, the ones accepted (no loop, valid).
    pub accepted: u64,
    /// Prefixes we currently advertise to the peer.
    pub advertised: u64,
}

/// What the RIB keeps of a peer, Established or restarting.
#[derive(Debug)]
pub(super) struct PeerState {
    pub(super) info: PeerInfo,
    pub(super) group: usize,
    /// Prefixes (and path ids) the peer announced to us that were rejected
    /// (loops, bad first AS, import policy). What it announced and we
    /// accepted is its paths in the Loc-RIB, found there: a per-peer index
    /// of them cost 48 MB for a full table.
    pub(super) rejected: PrefixMap<(IpNet, u32), ()>,
    /// Received and rejected counts per family (IPv4, IPv6), kept as they
    /// change so status reads cost nothing.
    pub(super) received_count: [u64; 2],
    pub(super) rejected_count: [u64; 2],
    pub(super) end_of_rib: HashSet<AfiSafi>,
    /// Whether the session is Established (false: kept only for its stale
    /// paths during a graceful restart).
    pub(super) up: bool,
    /// Received entries kept over a graceful restart that the peer has not
    /// announced again since (RFC 4724 §4.2).
    pub(super) stale: HashSet<(IpNet, u32)>,
    /// While the peer has an import policy: what it sent, before the policy
    /// (the Adj-RIB-In), so a new policy applies without asking it again.
    pub(super) adj_in: PrefixMap<(IpNet, u32), Arc<Attrs>>,
}

impl Rib {
    /// A session came up: the peer joins its update group and will get the
    /// full table (then End-of-RIB) at the next `Rib::flush`.
    pub fn peer_up(&mut self, id: PeerId, info: PeerInfo) -> Outbound {
        // A peer back from a graceful restart keeps its stale entries until
        // it announces them again or sends End-of-RIB.
        let kept = match self.peers.get(&id) {
            Some(s) if !s.up => self.peers.remove(&id),
            _ => {
                self.peer_down(id);
                None
            }
        };
        let (group, fresh) = self.join_group(id, &info);
        let mut state = PeerState {
            info,
            group,
            rejected: PrefixMap::new(),
            received_count: [0; 2],
            rejected_count: [0; 2],
            end_of_rib: HashSet::new(),
            up: true,
            stale: HashSet::new(),
            adj_in: PrefixMap::new(),
        };
        if let Some(k) = kept {
            state.rejected = k.rejected;
            state.received_count = k.received_count;
            state.rejected_count = k.rejected_count;
            state.stale = k.stale;
            state.adj_in = k.adj_in;
        }
        self.peers.insert(id, state);
        if self.deferring {
            // Everything goes out when the deferral ends (Rib::end_deferral).
            return Outbound::default();
        }
        let mut out = Outbound::default();
        if fresh {
            out = self.fill_group(group, id);
        }
        out.messages.push((id, Arc::new(self.initial_table(id))));
        out
    }

    /// The peers with an Established session, in id order.
    pub(super) fn established_peers(&self) -> Vec<PeerId> {
        let mut ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.up)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// A session went down: its paths go and its group membership ends.
    pub fn peer_down(&mut self, id: PeerId) {
        let Some(state) = self.peers.remove(&id) else {
            return;
        };
        let g = &mut self.groups[state.group];
        g.members.retain(|m| *m != id);
        if g.members.is_empty() {
            g.clear();
        }
        // Its rejected entries carry no path: nothing more to remove.
        let keys: Vec<(IpNet, u32)> = self
            .paths_of(id)
            .map(|(p, path)| (p, path.path_id))
            .collect();
        for (prefix, path_id) in keys {
            self.remove_path(prefix, Source::Peer(id), path_id);
        }
        // Its paths are gone: their ADD-PATH IDs need not be remembered
        // (fresh IDs are never reused, so nothing can be confused).
        self.out_path_ids.retain(|(s, _), _| *s != Source::Peer(id));
    }

    /// Prefix counts for a peer and family.
    pub fn counts(&self, id: PeerId, af: AfiSafi) -> PrefixCounts {
        let Some(s) = self.peers.get(&id) else {
            return PrefixCounts::default();
        };
        let i = match af {
            AfiSafi::IPV4_UNICAST => 0,
            AfiSafi::IPV6_UNICAST => 1,
            _ => return PrefixCounts::default(),
        };
        let received = s.received_count[i];
        let rejected = s.rejected_count[i];
        // A peer that is down (restarting) is in no group: it is sent nothing.
        let advertised = if s.up {
            let g = &self.groups[s.group];
            let own = g.by_source.get(&id).map_or(0, |c| c[i]);
            g.count[i].saturating_sub(own)
        } else {
            0
        };
        PrefixCounts {
            received,
            accepted: received - rejected,
            advertised,
        }
    }

    /// Whether the peer sent End-of-RIB for a family.
    pub fn end_of_rib_received(&self, id: PeerId, af: AfiSafi) -> bool {
        self.peers
            .get(&id)
            .is_some_and(|s| s.end_of_rib.contains(&af))
    }
}
