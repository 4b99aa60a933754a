//! Export: what a group is sent for a prefix (the protocol's rules, route
//! reflection, the export policy, ADD-PATH), or why nothing.

use foldhash::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::decision::{DEFAULT_LOCAL_PREF, Path, PathContext, Source};
use super::groups::{OutEntry, SelfNextHop};
use super::{Attrs, PeerId, Rib, family};
use crate::attrs::prepend;
use crate::policy::Verdict;
use crate::wire::AfiSafi;
use crate::wire::attr::{Community, Origin};

/// Exported attribute sets computed in one pass over a group, keyed by the
/// best path's attribute set (its address), whether the route is our own and
/// the family, and for reflected routes the ORIGINATOR_ID to set: a million
/// prefixes sharing a few sets cost a few
/// transformations, and equal exports share one `Arc` (so comparing old and
/// new exports is a pointer comparison).
pub(super) type ExportMemo =
    HashMap<(usize, bool, bool, Option<Ipv4Addr>), (Arc<Attrs>, Arc<Attrs>)>;

/// Why a peer is not sent a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// There is no usable path.
    NoRoute,
    /// The route came from this peer.
    ItsOwn,
    /// The family is not negotiated with the peer.
    Family,
    /// The route carries NO_ADVERTISE.
    NoAdvertise,
    /// NO_EXPORT or NO_EXPORT_SUBCONFED, and the peer is external.
    NoExport,
    /// Internal route, internal peer, and neither is a reflector client.
    NotReflected,
    /// Long-lived stale, and the peer did not negotiate LLGR.
    LongLivedStale,
    /// An export rule rejected it.
    ExportFilter,
    /// Learned from an external peer, the peer is external, and no export
    /// rule accepted it (no transit).
    NoTransit,
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotSent::NoRoute => "no usable path",
            NotSent::ItsOwn => "the route came from this peer",
            NotSent::Family => "the family is not negotiated with this peer",
            NotSent::NoAdvertise => "the route carries NO_ADVERTISE",
            NotSent::NoExport => "NO_EXPORT towards an external peer",
            NotSent::NotReflected => {
                "internal route to an internal peer, and neither is a reflector client"
            }
            NotSent::LongLivedStale => "long-lived stale, and the peer did not negotiate LLGR",
            NotSent::ExportFilter => "rejected by an export rule",
            NotSent::NoTransit => {
                "from one external peer to another, and no export rule accepted it"
            }
        })
    }
}

/// What a group's export of a prefix starts from.
struct ExportSource {
    /// The best path's attributes.
    attrs: Arc<Attrs>,
    /// The route is our own.
    local: bool,
    /// The peer it came from.
    source: Option<PeerId>,
    /// For a reflected route, the ORIGINATOR_ID it carries out.
    reflected: Option<Ipv4Addr>,
}

impl Rib {
    /// What a group must advertise for a prefix, if anything. Exported
    /// attribute sets are interned and remembered in `memo` for the pass.
    pub(super) fn export_for_group(
        &mut self,
        group: usize,
        prefix: &IpNet,
        memo: &mut ExportMemo,
    ) -> Option<OutEntry> {
        let best = self.best(prefix)?.clone();
        self.export_path(group, prefix, &best, memo).ok()
    }

    /// What a group is sent for one path of a prefix, or why nothing.
    pub(super) fn export_path(
        &mut self,
        group: usize,
        prefix: &IpNet,
        path: &Path,
        memo: &mut ExportMemo,
    ) -> Result<OutEntry, NotSent> {
        let ExportSource {
            attrs: a,
            local,
            source,
            reflected,
        } = self.export_source(group, prefix, path)?;
        let key = (
            Arc::as_ptr(&a) as usize,
            local,
            matches!(prefix, IpNet::V6(_)),
            reflected,
        );
        let attrs = match memo.get(&key) {
            Some((_, out)) => out.clone(),
            None => {
                let out = self.exported_attrs(group, prefix, &a, local, reflected);
                let out = self.intern(out);
                // The memo holds the source set too, so its address (the
                // key) cannot be reused by another set during the pass.
                memo.insert(key, (a, out.clone()));
                out
            }
        };
        // Routes from one external peer to another only when a rule says so.
        let g = &self.groups[group].key;
        let g_ebgp = g.ebgp;
        let transit = g.ebgp && self.context().ebgp(path) && source.is_some() && !g.transit;
        let Some(policy) = g.export_policy.clone() else {
            return if transit {
                Err(NotSent::NoTransit)
            } else {
                Ok(OutEntry { attrs, source })
            };
        };
        let ev = policy.evaluate(prefix, &attrs, self.config.local_asn);
        match ev.verdict {
            Verdict::Rejected => return Err(NotSent::ExportFilter),
            Verdict::Default if transit => return Err(NotSent::NoTransit),
            _ => {}
        }
        let mut changed = ev.attrs;
        if ev.next_hop_self
            && let Some(nh) = self.group_next_hop(group)
        {
            let a = changed.get_or_insert_with(|| (*attrs).clone());
            match prefix {
                IpNet::V4(_) => a.next_hop = Some(nh.for_ipv4()),
                IpNet::V6(_) => {
                    a.next_hop = Some(IpAddr::V6(nh.for_ipv6()));
                    a.link_local = nh.link_local;
                }
            }
        }
        if let Some(c) = changed.as_mut()
            && g_ebgp
        {
            // RFC 4271 §5.1.5: never to an external peer, whatever a rule set.
            c.local_pref = None;
        }
        let attrs = match changed {
            Some(c) => self.intern(c),
            None => attrs,
        };
        Ok(OutEntry { attrs, source })
    }

    /// Our next hop towards a group's members.
    fn group_next_hop(&self, group: usize) -> Option<SelfNextHop> {
        let g = &self.groups[group];
        g.key.next_hop.or_else(|| {
            let m = g.members.first().and_then(|m| self.peers.get(m))?;
            Some(SelfNextHop::of(&m.info))
        })
    }

    /// Where a group's export of a prefix starts from, if it gets it at all.
    fn export_source(
        &self,
        group: usize,
        prefix: &IpNet,
        best: &Path,
    ) -> Result<ExportSource, NotSent> {
        let key = &self.groups[group].key;
        let af = match prefix {
            IpNet::V4(_) => AfiSafi::IPV4_UNICAST,
            IpNet::V6(_) => AfiSafi::IPV6_UNICAST,
        };
        if !key.families.contains(&af) {
            return Err(NotSent::Family);
        }
        let a = &best.attrs;
        if a.has_community(Community::NO_ADVERTISE) {
            return Err(NotSent::NoAdvertise);
        }
        // Long-lived stale routes only to peers that know what they are.
        if !key.long_lived && a.has_community(Community::LLGR_STALE) {
            return Err(NotSent::LongLivedStale);
        }
        if key.ebgp
            && (a.has_community(Community::NO_EXPORT)
                || a.has_community(Community::NO_EXPORT_SUBCONFED))
        {
            return Err(NotSent::NoExport);
        }
        let source_peer = match best.source() {
            Source::Peer(p) => Some(p),
            Source::Local => None,
        };
        // Internal routes reach internal peers only by reflection (RFC 4456
        // §6): a client's routes go to every internal peer, a non-client's to
        // clients only.
        let mut reflected = None;
        let cx = self.context();
        if !key.ebgp
            && !cx.ebgp(best)
            && let Some(src) = source_peer
        {
            let from_client = self.peers.get(&src).is_some_and(|s| s.info.rr_client);
            if !(from_client || key.rr_client) {
                return Err(NotSent::NotReflected);
            }
            reflected = Some(a.originator_id.unwrap_or_else(|| cx.router_id(best)));
        }
        Ok(ExportSource {
            attrs: a.clone(),
            local: best.source() == Source::Local,
            source: source_peer,
            reflected,
        })
    }

    /// The attributes a group is sent for a best path with attributes `a`.
    fn exported_attrs(
        &self,
        group: usize,
        prefix: &IpNet,
        a: &Attrs,
        local: bool,
        reflected: Option<Ipv4Addr>,
    ) -> Attrs {
        let key = &self.groups[group].key;
        let mut out = a.clone();
        if let Some(originator) = reflected {
            out.originator_id = Some(originator);
            out.cluster_list.insert(0, self.config.cluster_id);
        }
        if key.ebgp {
            prepend(&mut out.as_path, self.config.local_asn);
            out.local_pref = None;
            if !local {
                // RFC 4271 §5.1.4: a received MED is not passed to another AS.
                out.med = None;
            }
            out.originator_id = None;
            out.cluster_list.clear();
        } else {
            out.local_pref = Some(a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
        }
        if out.origin.is_none() {
            out.origin = Some(Origin::Igp);
        }
        // The next hop: ours towards external peers, with next-hop-self, and
        // for our own routes; otherwise unchanged.
        let own = key.next_hop.or_else(|| {
            local.then(|| {
                let m = self.groups[group]
                    .members
                    .first()
                    .and_then(|m| self.peers.get(m));
                m.map(|p| SelfNextHop::of(&p.info))
            })?
        });
        if let Some(nh) = own {
            match prefix {
                IpNet::V4(_) => out.next_hop = Some(nh.for_ipv4()),
                IpNet::V6(_) => {
                    out.next_hop = Some(IpAddr::V6(nh.for_ipv6()));
                    out.link_local = nh.link_local;
                }
            }
        }
        if !key.ebgp {
            // Link-local next hops mean nothing beyond the link.
            if matches!(prefix, IpNet::V6(_)) && key.next_hop.is_none() && !local {
                out.link_local = None;
            }
        }
        out
    }

    /// The paths an ADD-PATH group gets for a prefix, best first, each with
    /// our path ID: up to `limit` in families where the peers receive
    /// several, else the best one.
    pub(super) fn export_paths(
        &mut self,
        g: usize,
        prefix: &IpNet,
        limit: usize,
        memo: &mut ExportMemo,
    ) -> Vec<(u32, OutEntry)> {
        let Some(d) = self.loc.get(prefix) else {
            return Vec::new();
        };
        let limit = if self.groups[g].tx.add_path(family(prefix)) {
            limit
        } else {
            1
        };
        let mut order: Vec<usize> = {
            let cx = self.context();
            (0..d.paths.len())
                .filter(|&i| cx.reachable(&d.paths[i]))
                .collect()
        };
        // The best path first, then the rest by a total order that follows
        // the decision steps (`compare` itself is not transitive: MED counts
        // only within one neighbouring AS, and sorting needs a total order).
        let best = d.best_index();
        let cx = self.context();
        order.sort_by_cached_key(|&i| {
            let p = &d.paths[i];
            let a = &p.attrs;
            (
                Some(i) != best,
                a.has_community(Community::LLGR_STALE),
                std::cmp::Reverse(a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)),
                p.source() != Source::Local,
                a.as_path.path_length(),
                a.origin,
                a.med.unwrap_or(0),
                !cx.ebgp(p),
                a.originator_id.unwrap_or_else(|| cx.router_id(p)),
                a.cluster_list.len(),
                self.peer_address(p),
                p.path_id,
            )
        });
        let paths: Vec<Path> = order.iter().map(|&i| d.paths[i].clone()).collect();
        let mut out = Vec::new();
        for path in &paths {
            if out.len() >= limit {
                break;
            }
            if let Ok(e) = self.export_path(g, prefix, path, memo) {
                // Without ADD-PATH in this family there is one path and no
                // ID on the wire: keep it under 0, so a new best path
                // replaces the old one instead of a withdrawal and an
                // announcement.
                let id = if limit == 1 && !self.groups[g].tx.add_path(family(prefix)) {
                    0
                } else {
                    self.out_path_id(path.source(), path.path_id)
                };
                out.push((id, e));
            }
        }
        out
    }

    /// Our ADD-PATH ID for paths from a source.
    fn out_path_id(&mut self, source: Source, path_id: u32) -> u32 {
        if let Some(id) = self.out_path_ids.get(&(source, path_id)) {
            return *id;
        }
        let id = self.next_out_path_id;
        // 0 means "no ADD-PATH" in the groups; skip it when wrapping.
        self.next_out_path_id = self.next_out_path_id.checked_add(1).unwrap_or(1);
        self.out_path_ids.insert((source, path_id), id);
        id
    }
}
