//! Update groups: peers with the same outbound treatment share one
//! Adj-RIB-Out, one computation and one encoding of every change; a peer
//! whose treatment changes moves to another group.

use foldhash::{HashMap, HashMapExt};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::decision::Source;
use super::encode::{Outbound, encode_changes};
use super::export::ExportMemo;
use super::peers::PeerInfo;
use super::{Attrs, PeerId, Rib, af_index};
use crate::policy::Policy;
use crate::prefixmap::PrefixMap;
use crate::wire::{AfiSafi, WireContext};

/// What outbound treatment a group of peers shares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct GroupKey {
    pub(super) ebgp: bool,
    /// Route reflector clients get routes from other internal peers.
    pub(super) rr_client: bool,
    /// Paths per prefix in ADD-PATH families (`None`: the best path only).
    pub(super) add_path_send: Option<usize>,
    pub(super) export_policy: Option<Arc<Policy>>,
    pub(super) transit: bool,
    pub(super) long_lived: bool,
    /// The next hop we set (external peers or next-hop-self), else `None`.
    pub(super) next_hop: Option<SelfNextHop>,
    pub(super) tx: WireContextKey,
    pub(super) families: Vec<AfiSafi>,
}

/// The parts of a [`WireContext`] that change the encoding, as a group key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct WireContextKey(bool, bool, bool, bool);

impl From<WireContext> for WireContextKey {
    fn from(c: WireContext) -> Self {
        WireContextKey(
            c.four_octet_as,
            c.extended_message,
            c.add_path_ipv4,
            c.add_path_ipv6,
        )
    }
}

/// The addresses we put as next hop: the session's own, and one of the
/// other family for routes of that family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct SelfNextHop {
    pub(super) session: IpAddr,
    pub(super) ipv4: Option<Ipv4Addr>,
    pub(super) ipv6: Option<Ipv6Addr>,
    pub(super) link_local: Option<Ipv6Addr>,
}

impl SelfNextHop {
    /// Ours towards this peer.
    pub(super) fn of(info: &PeerInfo) -> Self {
        SelfNextHop {
            session: info.local_address,
            ipv4: info.local_ipv4,
            ipv6: info.local_ipv6,
            link_local: info.local_link_local,
        }
    }

    /// The next hop for an IPv4 route: the session address if it is IPv4,
    /// else our IPv4 address, else (RFC 8950) the IPv6 session address.
    pub(super) fn for_ipv4(&self) -> IpAddr {
        match self.session {
            IpAddr::V4(_) => self.session,
            IpAddr::V6(_) => self.ipv4.map(IpAddr::V4).unwrap_or(self.session),
        }
    }

    /// The next hop for an IPv6 route: the session address if it is IPv6,
    /// else our IPv6 address, else the IPv4-mapped session address.
    pub(super) fn for_ipv6(&self) -> Ipv6Addr {
        match self.session {
            IpAddr::V6(a) => a,
            IpAddr::V4(a) => self.ipv6.unwrap_or(a.to_ipv6_mapped()),
        }
    }
}

/// What a group advertised for a prefix: the exported attributes and the peer
/// the route came from. That peer's view leaves the route out: it is either
/// not sent the route or sent it with its own ORIGINATOR_ID and drops it
/// (`own_view_needed` in encode.rs), so it never holds it from us.
#[derive(Debug, Clone)]
pub(super) struct OutEntry {
    pub(super) attrs: Arc<Attrs>,
    pub(super) source: Option<PeerId>,
}

/// An update group: the peers that share one outbound treatment, and what
/// they are sent.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) key: GroupKey,
    pub(super) tx: WireContext,
    pub(super) members: Vec<PeerId>,
    pub(super) adj_out: PrefixMap<IpNet, OutEntry>,
    /// ADD-PATH groups: every path advertised per prefix, by our path ID.
    pub(super) adj_paths: PrefixMap<IpNet, Vec<(u32, OutEntry)>>,
    /// Prefixes advertised per family, and per family the prefixes whose
    /// every path comes from one source peer (which never holds them from
    /// us): advertised counts without a scan.
    pub(super) count: [u64; 2],
    pub(super) by_source: HashMap<PeerId, [u64; 2]>,
}

/// A prefix and one of our path IDs (0 without ADD-PATH).
pub(super) type PathKey = (IpNet, u32);

/// A change of what a group advertises: one path (ID 0 without ADD-PATH).
#[derive(Debug, Clone)]
pub(super) struct Change {
    pub(super) prefix: IpNet,
    pub(super) path_id: u32,
    pub(super) old: Option<OutEntry>,
    pub(super) new: Option<OutEntry>,
}

/// The peer all of a prefix's advertised paths come from, if one.
fn sole_source(entries: &[(u32, OutEntry)]) -> Option<PeerId> {
    let first = entries.first()?.1.source?;
    entries
        .iter()
        .all(|(_, e)| e.source == Some(first))
        .then_some(first)
}

impl Group {
    /// Sets what the group advertises for a prefix, keeping the counters.
    pub(super) fn put(&mut self, prefix: IpNet, entry: Option<OutEntry>) -> Option<OutEntry> {
        let i = af_index(&prefix);
        if let Some(e) = &entry {
            self.count[i] += 1;
            if let Some(src) = e.source {
                self.by_source.entry(src).or_default()[i] += 1;
            }
        }
        let old = match entry {
            Some(e) => self.adj_out.insert(prefix, e),
            None => self.adj_out.remove(&prefix),
        };
        if let Some(o) = &old {
            self.count[i] -= 1;
            if let Some(src) = o.source
                && let Some(c) = self.by_source.get_mut(&src)
            {
                c[i] -= 1;
            }
        }
        old
    }

    /// Sets the paths an ADD-PATH group advertises for a prefix, keeping the
    /// counters, and records what changed.
    fn put_paths(&mut self, prefix: IpNet, new: Vec<(u32, OutEntry)>, changes: &mut Vec<Change>) {
        let i = af_index(&prefix);
        let old = if new.is_empty() {
            self.adj_paths.remove(&prefix).unwrap_or_default()
        } else {
            self.adj_paths
                .insert(prefix, new.clone())
                .unwrap_or_default()
        };
        for (entries, sign) in [(&old, -1i64), (&new, 1)] {
            if entries.is_empty() {
                continue;
            }
            let apply = |c: &mut u64| *c = c.wrapping_add_signed(sign);
            apply(&mut self.count[i]);
            if let Some(src) = sole_source(entries) {
                apply(&mut self.by_source.entry(src).or_default()[i]);
            }
        }
        for (id, o) in &old {
            match new.iter().find(|(n, _)| n == id) {
                Some((_, n)) if Arc::ptr_eq(&o.attrs, &n.attrs) && o.source == n.source => {}
                Some((_, n)) => changes.push(Change {
                    prefix,
                    path_id: *id,
                    old: Some(o.clone()),
                    new: Some(n.clone()),
                }),
                None => changes.push(Change {
                    prefix,
                    path_id: *id,
                    old: Some(o.clone()),
                    new: None,
                }),
            }
        }
        for (id, n) in &new {
            if !old.iter().any(|(o, _)| o == id) {
                changes.push(Change {
                    prefix,
                    path_id: *id,
                    old: None,
                    new: Some(n.clone()),
                });
            }
        }
    }

    /// Forgets what the group advertised: its last member left, or it is
    /// about to be filled again (a deferral ended).
    pub(super) fn clear(&mut self) {
        self.adj_out.clear();
        self.adj_paths.clear();
        self.count = [0; 2];
        self.by_source.clear();
    }
}

/// One path a peer is sent: prefix, path ID (0 without ADD-PATH) and
/// attributes.
pub type OutPath = (IpNet, u32, Arc<Attrs>);

impl Rib {
    /// Adds a peer to the update group for its treatment (creating one if
    /// needed); returns the group and whether its Adj-RIB-Out must be filled
    /// from the Loc-RIB: a new group, or one that had a single member (which
    /// keeps nothing that came from that member).
    pub(super) fn join_group(&mut self, id: PeerId, info: &PeerInfo) -> (usize, bool) {
        let ebgp = info.asn != self.config.local_asn;
        let key = GroupKey {
            ebgp,
            rr_client: !ebgp && info.rr_client,
            add_path_send: info
                .add_path_send
                .filter(|_| info.tx.add_path_ipv4 || info.tx.add_path_ipv6),
            export_policy: info.export_policy.clone(),
            transit: info.transit,
            long_lived: info.long_lived,
            next_hop: (ebgp || info.next_hop_self).then(|| SelfNextHop::of(info)),
            tx: info.tx.into(),
            families: info.families.clone(),
        };
        let group = match self
            .groups
            .iter()
            .position(|g| g.key == key && !g.members.is_empty())
        {
            Some(g) => g,
            None => {
                let g = Group {
                    key,
                    tx: info.tx,
                    members: Vec::new(),
                    adj_out: PrefixMap::new(),
                    adj_paths: PrefixMap::new(),
                    count: [0; 2],
                    by_source: HashMap::new(),
                };
                // Reuse an empty slot so indices stay small.
                match self.groups.iter().position(|g| g.members.is_empty()) {
                    Some(i) => {
                        self.groups[i] = g;
                        i
                    }
                    None => {
                        self.groups.push(g);
                        self.groups.len() - 1
                    }
                }
            }
        };
        let fill = self.groups[group].members.len() <= 1;
        self.groups[group].members.push(id);
        (group, fill)
    }

    /// Fills a group's Adj-RIB-Out from the Loc-RIB after `joiner` joined
    /// it: a new group, or one whose single member kept nothing of its own.
    /// Whatever this changes for the members already there (prefixes the
    /// last flush has not seen yet) is returned for them.
    pub(super) fn fill_group(&mut self, group: usize, joiner: PeerId) -> Outbound {
        let prefixes: Vec<IpNet> = self.loc.keys().collect();
        let changes = self.update_group(group, &prefixes);
        let mut out = Outbound::default();
        if changes.is_empty() {
            return out;
        }
        let g = &self.groups[group];
        for &m in g.members.iter().filter(|m| **m != joiner) {
            if let Some(state) = self.peers.get(&m) {
                let msgs = encode_changes(&g.key, &g.tx, &state.info, &changes, Some(m));
                if !msgs.is_empty() {
                    out.messages.push((m, Arc::new(msgs)));
                }
            }
        }
        out
    }

    /// Moves a peer to the update group its (changed) treatment calls for,
    /// and returns the messages that take it from the old group's view to the
    /// new one's: announcements, changes and withdrawals, nothing else.
    pub(super) fn regroup(&mut self, id: PeerId) -> Outbound {
        let Some(state) = self.peers.get(&id) else {
            return Outbound::default();
        };
        if !state.up {
            return Outbound::default();
        }
        let old_group = state.group;
        // While selection is deferred nothing was sent yet: only the
        // membership moves, and the deferral's end fills every group.
        let before = (!self.deferring).then(|| self.view(old_group, id));
        let info = state.info.clone();
        let g = &mut self.groups[old_group];
        g.members.retain(|m| *m != id);
        if g.members.is_empty() {
            g.clear();
        }
        // Join the group of the new treatment (a new one is filled).
        let (group, fresh) = self.join_group(id, &info);
        if let Some(s) = self.peers.get_mut(&id) {
            s.group = group;
        }
        let Some(before) = before else {
            return Outbound::default();
        };
        let mut out = Outbound::default();
        if fresh {
            out = self.fill_group(group, id);
        }
        let Some(state) = self.peers.get(&id) else {
            return Outbound::default();
        };
        let after = self.view(group, id);
        let mut changes = Vec::new();
        for (k, old) in &before {
            let new = after.get(k);
            let same = new.is_some_and(|n| Arc::ptr_eq(&n.attrs, &old.attrs));
            if !same {
                changes.push(Change {
                    prefix: k.0,
                    path_id: k.1,
                    old: Some(old.clone()),
                    new: new.cloned(),
                });
            }
        }
        for (k, new) in &after {
            if !before.contains_key(k) {
                changes.push(Change {
                    prefix: k.0,
                    path_id: k.1,
                    old: None,
                    new: Some(new.clone()),
                });
            }
        }
        let g = &self.groups[group];
        let msgs = encode_changes(&g.key, &g.tx, &state.info, &changes, Some(id));
        out.messages.push((id, Arc::new(msgs)));
        out
    }

    /// What a group sends one of its members, by prefix and path ID.
    pub(super) fn view(&self, group: usize, viewer: PeerId) -> HashMap<PathKey, OutEntry> {
        let g = &self.groups[group];
        let mut v = HashMap::new();
        for (p, e) in g.adj_out.iter() {
            if e.source != Some(viewer) {
                v.insert((p, 0), e.clone());
            }
        }
        for (p, paths) in g.adj_paths.iter() {
            for (path_id, e) in paths {
                if e.source != Some(viewer) {
                    v.insert((p, *path_id), e.clone());
                }
            }
        }
        v
    }

    /// Brings a group's Adj-RIB-Out up to date for some prefixes and returns
    /// what changed.
    pub(super) fn update_group(&mut self, g: usize, prefixes: &[IpNet]) -> Vec<Change> {
        let mut memo = ExportMemo::new();
        let mut changes = Vec::new();
        // A group of one (most external peers: each has its own next hop)
        // does not keep what came from that one peer: it is never sent back.
        // A second member joining refills the group (`join_group`).
        let sole = match self.groups[g].members.as_slice() {
            [m] => Some(*m),
            _ => None,
        };
        let wanted = |e: &OutEntry| sole.is_none() || e.source != sole;
        if let Some(limit) = self.groups[g].key.add_path_send {
            for p in prefixes {
                let mut new = self.export_paths(g, p, limit, &mut memo);
                new.retain(|(_, e)| wanted(e));
                self.groups[g].put_paths(*p, new, &mut changes);
            }
            return changes;
        }
        for p in prefixes {
            // The sole member's own best path would be filtered out below:
            // skip exporting it (policy, attribute rewrite, interning), which
            // for the peer a full table comes from is every prefix.
            let own =
                sole.is_some_and(|m| self.best(p).is_some_and(|b| b.source() == Source::Peer(m)));
            let new = if own {
                None
            } else {
                self.export_for_group(g, p, &mut memo).filter(|e| wanted(e))
            };
            let old = self.groups[g].put(*p, new.clone());
            let same = match (&old, &new) {
                (Some(o), Some(n)) => Arc::ptr_eq(&o.attrs, &n.attrs) && o.source == n.source,
                (None, None) => true,
                _ => false,
            };
            if !same {
                changes.push(Change {
                    prefix: *p,
                    path_id: 0,
                    old,
                    new,
                });
            }
        }
        changes
    }

    /// One part of what a peer is sent (its Adj-RIB-Out), sorted: per
    /// prefix and path ID (0 without ADD-PATH), the attributes its update
    /// group exports, before the per-session next hop; and the part to read
    /// next ([`crate::prefixmap::PrefixMap::part`]); and how many entries
    /// the part held (what reading it cost).
    pub fn adj_rib_out_part(
        &self,
        id: PeerId,
        part: usize,
    ) -> (Vec<OutPath>, usize, Option<usize>) {
        let Some(g) = self.peers.get(&id).and_then(|st| self.groups.get(st.group)) else {
            return (Vec::new(), 0, None);
        };
        let scanned;
        // A peer never holds its own route from us (it is not sent, or sent
        // back with its ORIGINATOR_ID and dropped), so its view leaves it out.
        let (mut out, next): (Vec<OutPath>, _) = if g.key.add_path_send.is_none() {
            let (entries, next) = g.adj_out.part(part);
            scanned = entries.len();
            let out = entries
                .into_iter()
                .filter(|(_, e)| e.source != Some(id))
                .map(|(p, e)| (p, 0, e.attrs.clone()))
                .collect();
            (out, next)
        } else {
            let (entries, next) = g.adj_paths.part(part);
            scanned = entries.len();
            let out = entries
                .into_iter()
                .flat_map(|(p, paths)| {
                    paths
                        .iter()
                        .filter(|(_, e)| e.source != Some(id))
                        .map(move |(pid, e)| (p, *pid, e.attrs.clone()))
                })
                .collect();
            (out, next)
        };
        out.sort_by_key(|(p, id, _)| (*p, *id));
        (out, scanned, next)
    }
}
