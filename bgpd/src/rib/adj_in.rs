//! What enters the Loc-RIB: peers' UPDATEs (through the inbound checks and
//! the import policy, with the Adj-RIB-In kept for policy changes), and the
//! routes we originate.

use foldhash::HashMap;
use std::sync::Arc;

use ipnet::IpNet;

use super::decision::{Path, Source};
use super::encode::Outbound;
use super::peers::PeerInfo;
use super::{Attrs, PeerId, Rib, af_index};
use crate::policy::{Policy, Verdict};
use crate::prefixmap::PARTS;
use crate::wire::{Nlri, Update};

/// One path of a peer's Adj-RIB-In.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdjInEntry {
    /// The prefix.
    pub prefix: IpNet,
    /// The ADD-PATH identifier (0 without ADD-PATH).
    pub path_id: u32,
    /// The attributes, when known.
    pub attrs: Option<Arc<Attrs>>,
    /// Rejected on import.
    pub rejected: bool,
}

impl Rib {
    /// Drops one received entry of a peer and its path.
    pub(super) fn forget(&mut self, id: PeerId, key: (IpNet, u32)) {
        let had_path = self.remove_path(key.0, Source::Peer(id), key.1);
        if let Some(s) = self.peers.get_mut(&id) {
            s.adj_in.remove(&key);
            let i = af_index(&key.0);
            if s.rejected.remove(&key).is_some() {
                s.received_count[i] -= 1;
                s.rejected_count[i] -= 1;
            } else if had_path {
                s.received_count[i] -= 1;
            }
        }
    }

    /// Removes a path; whether there was one.
    pub(super) fn remove_path(&mut self, prefix: IpNet, source: Source, path_id: u32) -> bool {
        let Some(d) = self.loc.get_mut(&prefix) else {
            return false;
        };
        let before = d.paths.len();
        d.paths
            .retain(|p| !(p.source() == source && p.path_id == path_id));
        self.paths -= before - d.paths.len();
        let removed = d.paths.len() != before;
        if removed {
            self.decide(prefix);
        }
        removed
    }

    /// A peer's paths in the Loc-RIB (what it sent and we accepted), by
    /// prefix: a pass over the whole table.
    pub(super) fn paths_of(&self, id: PeerId) -> impl Iterator<Item = (IpNet, &Path)> + '_ {
        let source = Source::Peer(id);
        self.loc.iter().flat_map(move |(prefix, d)| {
            d.paths
                .iter()
                .filter(move |p| p.source() == source)
                .map(move |p| (prefix, p))
        })
    }

    /// Processes an UPDATE from an Established peer. `treat_as_withdraw` comes
    /// from RFC 7606 problems found while decoding.
    pub fn update(&mut self, id: PeerId, update: &Update, treat_as_withdraw: bool) {
        let Some(state) = self.peers.get_mut(&id) else {
            return;
        };
        if let Some(af) = update.as_end_of_rib() {
            state.end_of_rib.insert(af);
            // What the peer did not announce again before End-of-RIB is gone.
            self.drop_stale(id, Some(af));
            return;
        }
        let info = state.info.clone();
        let ebgp = info.asn != self.config.local_asn;
        let restarting = !state.stale.is_empty();
        for n in update.withdrawn_all() {
            let key = (n.prefix.trunc(), n.path_id.unwrap_or(0));
            if restarting && let Some(s) = self.peers.get_mut(&id) {
                s.stale.remove(&key);
            }
            self.forget(id, key);
        }
        let announced: Vec<Nlri> = update.announced().copied().collect();
        if announced.is_empty() {
            return;
        }
        let mut attrs = Attrs::from_update(&update.attributes, info.rx.four_octet_as);
        if ebgp {
            // RFC 7606 §7.5: LOCAL_PREF from an external peer is discarded.
            attrs.local_pref = None;
        }
        let reject = treat_as_withdraw || self.rejects(&info, &attrs);
        let attrs = self.intern(attrs);
        for n in announced {
            let key = (n.prefix.trunc(), n.path_id.unwrap_or(0));
            if restarting && let Some(s) = self.peers.get_mut(&id) {
                s.stale.remove(&key);
            }
            let accepted = if reject {
                // What the peer sent now replaces what it sent before, also
                // in the kept Adj-RIB-In: a new policy must not revive it.
                if let Some(s) = self.peers.get_mut(&id) {
                    s.adj_in.remove(&key);
                }
                None
            } else if let Some(policy) = &info.import_policy {
                if let Some(s) = self.peers.get_mut(&id) {
                    s.adj_in.insert(key, attrs.clone());
                }
                self.import(policy, key.0, &attrs)
            } else {
                Some(attrs.clone())
            };
            self.set_received(id, key, accepted);
        }
    }

    /// Runs an import policy on a route: its attributes, or `None` if rejected.
    pub(super) fn import(
        &mut self,
        policy: &Policy,
        prefix: IpNet,
        attrs: &Arc<Attrs>,
    ) -> Option<Arc<Attrs>> {
        let ev = policy.evaluate(&prefix, attrs, self.config.local_asn);
        match (ev.verdict, ev.attrs) {
            (Verdict::Rejected, _) => None,
            (_, Some(changed)) => Some(self.intern(changed)),
            (_, None) => Some(attrs.clone()),
        }
    }

    /// Records what a peer sent for one key (`None`: rejected) and updates
    /// the candidate paths.
    fn set_received(&mut self, id: PeerId, key: (IpNet, u32), attrs: Option<Arc<Attrs>>) {
        let reject = attrs.is_none();
        let had_path = self.loc.get(&key.0).is_some_and(|d| {
            d.paths
                .iter()
                .any(|p| p.source() == Source::Peer(id) && p.path_id == key.1)
        });
        if let Some(s) = self.peers.get_mut(&id) {
            let i = af_index(&key.0);
            let was_rejected = if reject {
                s.rejected.insert(key, ()).is_some()
            } else {
                s.rejected.remove(&key).is_some()
            };
            if !was_rejected && !had_path {
                s.received_count[i] += 1;
            }
            match (was_rejected, reject) {
                (true, false) => s.rejected_count[i] -= 1,
                (false, true) => s.rejected_count[i] += 1,
                _ => {}
            }
        }
        let Some(attrs) = attrs else {
            self.remove_path(key.0, Source::Peer(id), key.1);
            return;
        };
        let path = Path::new(Source::Peer(id), key.1, attrs);
        let d = self.loc.get_or_default(key.0);
        match d
            .paths
            .iter_mut()
            .find(|p| p.source == path.source && p.path_id == path.path_id)
        {
            Some(p) if Arc::ptr_eq(&p.attrs, &path.attrs) => return,
            Some(p) => *p = path,
            None => {
                d.push(path);
                self.paths += 1;
            }
        }
        self.decide(key.0);
    }

    /// Changes a peer's policies, live: a new import policy runs on what the
    /// peer sent (kept, so the peer is not asked again); a new export policy
    /// moves the peer to another update group, and the returned messages
    /// bring it from what it had to what it gets now. The session stays up.
    pub fn set_policies(
        &mut self,
        id: PeerId,
        import: Option<Arc<Policy>>,
        export: Option<Arc<Policy>>,
    ) -> Outbound {
        let Some(state) = self.peers.get_mut(&id) else {
            return Outbound::default();
        };
        if state.info.import_policy != import {
            if state.info.import_policy.is_none() {
                // No policy ran so far: what the peer sent is what we have.
                let kept: Vec<((IpNet, u32), Arc<Attrs>)> = self
                    .paths_of(id)
                    .map(|(prefix, p)| ((prefix, p.path_id), p.attrs.clone()))
                    .collect();
                if let Some(s) = self.peers.get_mut(&id) {
                    s.adj_in.extend(kept);
                }
            }
            let Some(state) = self.peers.get_mut(&id) else {
                return Outbound::default();
            };
            state.info.import_policy = import.clone();
            // Stale entries (a restarting peer's) keep their state until the
            // peer announces them again or they are swept.
            let entries: Vec<((IpNet, u32), Arc<Attrs>)> = state
                .adj_in
                .iter()
                .filter(|(k, _)| !state.stale.contains(k))
                .map(|(k, a)| (k, a.clone()))
                .collect();
            if import.is_none()
                && let Some(s) = self.peers.get_mut(&id)
            {
                s.adj_in.clear();
            }
            for (key, raw) in entries {
                let accepted = match &import {
                    Some(p) => self.import(p, key.0, &raw),
                    None => Some(raw),
                };
                self.set_received(id, key, accepted);
            }
        }
        let same_export = self
            .peers
            .get(&id)
            .is_some_and(|s| s.info.export_policy == export);
        if same_export {
            return Outbound::default();
        }
        if let Some(s) = self.peers.get_mut(&id) {
            s.info.export_policy = export;
        }
        self.regroup(id)
    }

    /// Inbound checks that make a path unusable (RFC 4271 §9.1.2, RFC 4456 §8).
    fn rejects(&self, info: &PeerInfo, a: &Attrs) -> bool {
        let ebgp = info.asn != self.config.local_asn;
        if a.as_path.contains(self.config.local_asn) {
            return true;
        }
        if ebgp
            && self.config.enforce_first_as
            && a.as_path.segments.first().and_then(|s| s.asns.first()) != Some(&info.asn)
        {
            return true;
        }
        if !ebgp
            && (a.originator_id == Some(self.config.router_id)
                || a.cluster_list.contains(&self.config.cluster_id))
        {
            // Our own route reflected back, or a reflection loop (RFC 4456 §8).
            return true;
        }
        a.next_hop.is_none() || a.origin.is_none()
    }

    /// Replaces the set of locally originated routes.
    pub fn set_local_routes(&mut self, routes: impl IntoIterator<Item = (IpNet, Attrs)>) {
        let new: HashMap<IpNet, Attrs> = routes.into_iter().map(|(p, a)| (p.trunc(), a)).collect();
        let old: Vec<IpNet> = self.local_routes.keys().copied().collect();
        for p in old {
            if !new.contains_key(&p) {
                self.local_routes.remove(&p);
                self.remove_path(p, Source::Local, 0);
            }
        }
        for (p, a) in new {
            if self.local_routes.get(&p).is_some_and(|x| **x == a) {
                continue;
            }
            let attrs = self.intern(a);
            self.local_routes.insert(p, attrs.clone());
            let path = Path::new(Source::Local, 0, attrs);
            let d = self.loc.get_or_default(p);
            let before = d.paths.len();
            d.paths.retain(|x| !x.is_local());
            d.push(path);
            self.paths = self.paths + d.paths.len() - before;
            self.decide(p);
        }
    }

    /// What a peer sent us (its Adj-RIB-In), sorted: per prefix and path ID,
    /// the attributes the path competes with (after the import policy), or,
    /// for a path rejected on import (loop, invalid, filtered), `rejected`
    /// with the attributes as sent when the peer's import policy keeps them.
    #[cfg(test)]
    pub fn adj_rib_in(&self, id: PeerId) -> Vec<AdjInEntry> {
        let mut out = Vec::new();
        let mut part = Some(0);
        while let Some(p) = part {
            let (entries, _, next) = self.adj_rib_in_part(id, p);
            out.extend(entries);
            part = next;
        }
        out.sort_by_key(|e| (e.prefix, e.path_id));
        out
    }

    /// One part of a peer's Adj-RIB-In ([`Rib::adj_rib_in`]), sorted, and
    /// the part to read next: a listing a part at a time
    /// ([`crate::prefixmap::PrefixMap::part`]), so no single call walks a
    /// whole table. Parts below [`PARTS`] are the Loc-RIB's (the paths the
    /// peer's routes compete with); the next [`PARTS`] are its rejected
    /// paths', which can be as many. A prefix with both (ADD-PATH) is
    /// listed in each phase. Also how many entries the part held (what
    /// reading it cost, however few were the peer's).
    pub fn adj_rib_in_part(
        &self,
        id: PeerId,
        part: usize,
    ) -> (Vec<AdjInEntry>, usize, Option<usize>) {
        let Some(st) = self.peers.get(&id) else {
            return (Vec::new(), 0, None);
        };
        let scanned;
        let (mut out, next): (Vec<AdjInEntry>, _) = if part < PARTS {
            let source = Source::Peer(id);
            let (dests, next) = self.loc.part(part);
            scanned = dests.len();
            let out = dests
                .into_iter()
                .flat_map(|(prefix, d)| {
                    d.paths
                        .iter()
                        .filter(move |p| p.source() == source)
                        .map(move |p| AdjInEntry {
                            prefix,
                            path_id: p.path_id,
                            attrs: Some(p.attrs.clone()),
                            rejected: false,
                        })
                })
                .collect();
            (out, Some(next.unwrap_or(PARTS)))
        } else {
            let (keys, next) = st.rejected.part(part - PARTS);
            scanned = keys.len();
            let out = keys
                .into_iter()
                .map(|((prefix, path_id), _)| AdjInEntry {
                    prefix,
                    path_id,
                    attrs: st.adj_in.get(&(prefix, path_id)).cloned(),
                    rejected: true,
                })
                .collect();
            (out, next.map(|n| n + PARTS))
        };
        out.sort_by_key(|e| (e.prefix, e.path_id));
        (out, scanned, next)
    }
}
