//! Flushing and UPDATE encoding: the prefixes whose export may have
//! changed, the messages a flush sends per peer, whole tables for new peers
//! and route refresh, and attribute sets put on the wire.

use foldhash::{HashMap, HashMapExt, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::groups::{Change, GroupKey, OutEntry, PathKey};
use super::interned::SWEEP_STEP;
use super::peers::{PeerInfo, PeerState};
use super::{Attrs, PeerId, Rib, family};
use crate::wire::attr::{AttrValue, NextHop, Origin, PathAttribute};
use crate::wire::update::UpdatePacker;
use crate::wire::{AfiSafi, EncodeError, Nlri, Update, WireContext};

/// A set of prefixes that remembers the order they were added in.
#[derive(Debug, Default)]
pub(super) struct DirtyQueue {
    pub(super) members: HashSet<IpNet>,
    pub(super) order: std::collections::VecDeque<IpNet>,
}

impl DirtyQueue {
    /// Queues a prefix; one already queued keeps its place.
    pub(super) fn insert(&mut self, prefix: IpNet) {
        if self.members.insert(prefix) {
            self.order.push_back(prefix);
        }
    }

    /// The first `max` prefixes added, taken out.
    pub(super) fn take(&mut self, max: usize) -> Vec<IpNet> {
        let n = max.min(self.order.len());
        let taken: Vec<IpNet> = self.order.drain(..n).collect();
        if self.order.is_empty() {
            self.members.clear();
        } else {
            for p in &taken {
                self.members.remove(p);
            }
        }
        taken
    }

    /// Whether nothing waits for a flush.
    pub(super) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Encoded messages, in order, shared by every peer they go to: a group's
/// members get one encoding, not a copy each.
pub type Messages = Arc<Vec<Vec<u8>>>;

/// What a flush sends, and what it freed.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    /// (peer, messages) pairs.
    pub messages: Vec<(PeerId, Messages)>,
    /// Attribute sets the flush found unused, freed when this is dropped.
    /// After a full table's withdrawal that is a quarter million of them,
    /// ~450 ms of freeing: the owner may hand them to another thread.
    pub garbage: Vec<Arc<Attrs>>,
}

impl Rib {
    /// A peer's initial table, then End-of-RIB per family.
    pub(super) fn initial_table(&self, id: PeerId) -> Vec<Vec<u8>> {
        let Some(state) = self.peers.get(&id) else {
            return Vec::new();
        };
        let mut msgs = self.table_messages(id, None);
        let tx = self.groups[state.group].tx;
        for af in &state.info.families {
            let eor = crate::wire::Message::Update(Update::end_of_rib(*af));
            if let Ok(b) = eor.to_bytes(&tx) {
                msgs.push(b);
            }
        }
        msgs
    }

    /// Everything a peer's group advertises (that did not come from the peer),
    /// encoded, optionally for one family only.
    fn table_messages(&self, id: PeerId, only: Option<AfiSafi>) -> Vec<Vec<u8>> {
        let Some(state) = self.peers.get(&id) else {
            return Vec::new();
        };
        let g = &self.groups[state.group];
        let mut by_attrs: HashMap<Arc<Attrs>, Vec<(IpNet, u32)>> = HashMap::new();
        let wanted =
            |p: &IpNet, e: &OutEntry| e.source != Some(id) && only.is_none_or(|af| family(p) == af);
        for (p, e) in g.adj_out.iter() {
            if wanted(&p, e) {
                by_attrs.entry(e.attrs.clone()).or_default().push((p, 0));
            }
        }
        for (p, paths) in g.adj_paths.iter() {
            for (path_id, e) in paths {
                if wanted(&p, e) {
                    by_attrs
                        .entry(e.attrs.clone())
                        .or_default()
                        .push((p, *path_id));
                }
            }
        }
        let mut msgs = Vec::new();
        for (attrs, prefixes) in by_attrs {
            encode_announce(&g.key, &g.tx, &state.info, &attrs, &prefixes, &mut msgs);
        }
        msgs
    }

    /// The peer asked for a family again (route refresh): resend what we advertise.
    pub fn refresh(&self, id: PeerId, af: AfiSafi) -> Outbound {
        if self.deferring {
            return Outbound::default();
        }
        Outbound {
            messages: vec![(id, Arc::new(self.table_messages(id, Some(af))))],
            garbage: Vec::new(),
        }
    }

    /// Computes what changed since the last flush and encodes it per peer.
    #[cfg(test)]
    pub fn flush(&mut self) -> Outbound {
        self.flush_some(usize::MAX)
    }

    /// Whether changes wait for a flush (never while selection is deferred),
    /// or a garbage sweep for more flush calls.
    pub fn has_pending(&self) -> bool {
        !self.deferring && (!self.dirty.is_empty() || self.sweep.is_some())
    }

    /// Changed prefixes waiting for a flush.
    pub fn pending_len(&self) -> usize {
        self.dirty.order.len()
    }

    /// `Rib::flush` for at most `max` of the changed prefixes; the rest
    /// wait for the next call. A full table's batch can take the owner
    /// hundreds of milliseconds to flush in one go; in slices, it can
    /// answer reads between them.
    pub fn flush_some(&mut self, max: usize) -> Outbound {
        let mut out = Outbound::default();
        if self.deferring {
            return out;
        }
        let dirty = self.dirty.take(max);
        if dirty.is_empty() {
            out.garbage = self.sweep_some(SWEEP_STEP);
            return out;
        }
        self.fib_dirty.extend(dirty.iter().copied());
        for g in 0..self.groups.len() {
            if self.groups[g].members.is_empty() {
                continue;
            }
            let changes = self.update_group(g, &dirty);
            if changes.is_empty() {
                continue;
            }
            let group = &self.groups[g];
            let special = own_view_needed(&changes, &self.peers);
            let mut shared: Option<Messages> = None;
            for &m in &group.members {
                let Some(state) = self.peers.get(&m) else {
                    continue;
                };
                let viewer = special.contains(&m).then_some(m);
                let msgs = if viewer.is_none() {
                    shared
                        .get_or_insert_with(|| {
                            Arc::new(encode_changes(
                                &group.key,
                                &group.tx,
                                &state.info,
                                &changes,
                                None,
                            ))
                        })
                        .clone()
                } else {
                    Arc::new(encode_changes(
                        &group.key,
                        &group.tx,
                        &state.info,
                        &changes,
                        viewer,
                    ))
                };
                if !msgs.is_empty() {
                    out.messages.push((m, msgs));
                }
            }
        }
        // Once the whole batch is out: the sets no longer referenced are
        // known only then. A sweep goes on a bounded step per flush.
        if self.sweep.is_none()
            && self.dirty.is_empty()
            && self.interned.len() > 4096
            && self.interned.len() > 2 * self.loc.len()
        {
            self.sweep = Some(0);
        }
        out.garbage = self.sweep_some(SWEEP_STEP);
        out
    }
}

/// The members of a group that must get an encoding of their own for
/// `changes`; all others share one.
///
/// A member that is the source of a change would otherwise get its own route
/// back. That is harmless, as FRR's update groups rely on, when the route
/// carries the member's own router ID as ORIGINATOR_ID: RFC 4456 §8 has the
/// member drop it, and its own routes were never in its view, so there is
/// nothing of ours for the drop to disturb. A withdrawal of the member's own
/// route, which it never had from us, is ignored the same way. So a
/// reflector whose every client is the source of something in a flush still
/// encodes once, not once per client.
///
/// A member stays apart when its route would come back without its
/// ORIGINATOR_ID (an eBGP member, a route already reflected once), and when
/// its route replaces a path it did get from us: that path must go, and a
/// receiver that ignores the looped route rather than treating it as a
/// withdrawal would keep it.
fn own_view_needed(changes: &[Change], peers: &HashMap<PeerId, PeerState>) -> HashSet<PeerId> {
    let mut special = HashSet::default();
    for c in changes {
        let Some(new) = c.new.as_ref() else { continue };
        let Some(src) = new.source else { continue };
        let drops_it = peers
            .get(&src)
            .is_some_and(|p| new.attrs.originator_id == Some(p.info.router_id));
        let replaces_anothers = c.old.as_ref().is_some_and(|o| o.source != Some(src));
        if !drops_it || replaces_anothers {
            special.insert(src);
        }
    }
    special
}

/// The attribute list to send for exported attributes (IPv4 next hop in
/// NEXT_HOP; IPv6 next hops go into MP_REACH_NLRI, built by the packer).
fn wire_attributes(a: &Attrs, v4: bool, tx: &WireContext) -> Vec<PathAttribute> {
    let mut v = Vec::with_capacity(8);
    v.push(PathAttribute::new(AttrValue::Origin(
        a.origin.unwrap_or(Origin::Igp),
    )));
    v.push(PathAttribute::new(AttrValue::AsPath(a.as_path.clone())));
    if v4 && let Some(IpAddr::V4(nh)) = a.next_hop {
        v.push(PathAttribute::new(AttrValue::NextHop(nh)));
    }
    if let Some(m) = a.med {
        v.push(PathAttribute::new(AttrValue::Med(m)));
    }
    if let Some(l) = a.local_pref {
        v.push(PathAttribute::new(AttrValue::LocalPref(l)));
    }
    if a.atomic_aggregate {
        v.push(PathAttribute::new(AttrValue::AtomicAggregate));
    }
    if let Some(g) = a.aggregator {
        v.push(PathAttribute::new(AttrValue::Aggregator(g)));
    }
    if !a.communities.is_empty() {
        v.push(PathAttribute::new(AttrValue::Communities(
            a.communities.clone(),
        )));
    }
    if let Some(o) = a.originator_id {
        v.push(PathAttribute::new(AttrValue::OriginatorId(o)));
    }
    if !a.cluster_list.is_empty() {
        v.push(PathAttribute::new(AttrValue::ClusterList(
            a.cluster_list.clone(),
        )));
    }
    if !a.ext_communities.is_empty() {
        v.push(PathAttribute::new(AttrValue::ExtendedCommunities(
            a.ext_communities.clone(),
        )));
    }
    if !tx.four_octet_as
        && a.as_path
            .segments
            .iter()
            .any(|s| s.asns.iter().any(|&x| x > 0xFFFF))
    {
        // RFC 6793 §4.2.2: towards a 2-octet speaker, the real path rides in AS4_PATH.
        v.push(PathAttribute::new(AttrValue::As4Path(a.as_path.clone())));
        if let Some(g) = a.aggregator.filter(|g| g.asn > 0xFFFF) {
            v.push(PathAttribute::new(AttrValue::As4Aggregator(g)));
        }
    }
    if !a.large_communities.is_empty() {
        v.push(PathAttribute::new(AttrValue::LargeCommunities(
            a.large_communities.clone(),
        )));
    }
    v.extend(a.other.iter().cloned());
    v
}

/// An NLRI as a peer with this layout reads it: with our path ID in ADD-PATH
/// families.
fn out_nlri(tx: &WireContext, prefix: IpNet, path_id: u32) -> Nlri {
    Nlri {
        path_id: tx.add_path(family(&prefix)).then_some(path_id),
        prefix,
    }
}

/// Encodes the announcements of prefixes sharing one exported attribute set,
/// IPv4 and IPv6 apart: their next hops take different places on the wire.
fn encode_announce(
    _key: &GroupKey,
    tx: &WireContext,
    _info: &PeerInfo,
    attrs: &Attrs,
    prefixes: &[(IpNet, u32)],
    out: &mut Vec<Vec<u8>>,
) {
    let packer = UpdatePacker::new(tx);
    let (v4, v6): (Vec<PathKey>, Vec<PathKey>) = prefixes
        .iter()
        .partition(|(p, _)| matches!(p, IpNet::V4(_)));
    let nlri = |ps: &[(IpNet, u32)]| -> Vec<Nlri> {
        ps.iter().map(|(p, id)| out_nlri(tx, *p, *id)).collect()
    };
    let report = |r: Result<(), EncodeError>| {
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot encode an UPDATE; routes not sent");
        }
    };
    if !v4.is_empty() {
        let wire = wire_attributes(attrs, true, tx);
        match attrs.next_hop {
            Some(IpAddr::V6(g)) => {
                // RFC 8950: IPv4 routes with an IPv6 next hop.
                let nh = NextHop::Ipv6 {
                    global: g,
                    link_local: attrs.link_local,
                };
                report(packer.announce(AfiSafi::IPV4_UNICAST, &wire, Some(&nh), &nlri(&v4), out));
            }
            _ => report(packer.announce(AfiSafi::IPV4_UNICAST, &wire, None, &nlri(&v4), out)),
        }
    }
    if !v6.is_empty() {
        let wire = wire_attributes(attrs, false, tx);
        let global = match attrs.next_hop {
            Some(IpAddr::V6(g)) => g,
            Some(IpAddr::V4(a)) => a.to_ipv6_mapped(),
            None => Ipv6Addr::UNSPECIFIED,
        };
        let nh = NextHop::Ipv6 {
            global,
            link_local: attrs.link_local,
        };
        report(packer.announce(AfiSafi::IPV6_UNICAST, &wire, Some(&nh), &nlri(&v6), out));
    }
}

/// Encodes a batch of changes as one member (`viewer`, or any non-source member
/// when `None`) must see them.
pub(super) fn encode_changes(
    key: &GroupKey,
    tx: &WireContext,
    info: &PeerInfo,
    changes: &[Change],
    viewer: Option<PeerId>,
) -> Vec<Vec<u8>> {
    fn visible(e: &Option<OutEntry>, viewer: Option<PeerId>) -> Option<&OutEntry> {
        e.as_ref()
            .filter(|e| viewer.is_none() || e.source != viewer)
    }
    let mut announce: HashMap<Arc<Attrs>, Vec<(IpNet, u32)>> = HashMap::new();
    let mut withdraw: Vec<(IpNet, u32)> = Vec::new();
    for c in changes {
        match (visible(&c.old, viewer), visible(&c.new, viewer)) {
            (_, Some(n)) => announce
                .entry(n.attrs.clone())
                .or_default()
                .push((c.prefix, c.path_id)),
            (Some(_), None) => withdraw.push((c.prefix, c.path_id)),
            (None, None) => {}
        }
    }
    let mut out = Vec::new();
    let packer = UpdatePacker::new(tx);
    for af in [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST] {
        let w: Vec<Nlri> = withdraw
            .iter()
            .filter(|(p, _)| family(p) == af)
            .map(|(p, id)| out_nlri(tx, *p, *id))
            .collect();
        if !w.is_empty()
            && let Err(e) = packer.withdraw(af, &w, &mut out)
        {
            tracing::error!(error = %e, "cannot encode a withdrawal");
        }
    }
    for (attrs, prefixes) in announce {
        encode_announce(key, tx, info, &attrs, &prefixes, &mut out);
    }
    out
}
