//! Graceful restart on the RIB side: a peer's paths kept stale over its
//! restart (RFC 4724) and long-lived stale after it (RFC 9494), and route
//! selection deferred after our own restart.

use std::sync::Arc;

use ipnet::IpNet;

use super::decision::Source;
use super::encode::Outbound;
use super::{PeerId, Rib, family};
use crate::wire::AfiSafi;
use crate::wire::attr::Community;

impl Rib {
    /// Starts deferring route selection (RFC 4724 §4.1, after our own
    /// restart): paths are taken in and decided, but nothing is advertised and
    /// the FIB hears nothing until [`Rib::end_deferral`].
    pub fn defer(&mut self) {
        self.deferring = true;
    }

    /// Whether route selection is deferred.
    pub fn deferring(&self) -> bool {
        self.deferring
    }

    /// Ends the deferral: every Established peer gets its full table and
    /// End-of-RIB, and the FIB every prefix decided meanwhile.
    pub fn end_deferral(&mut self) -> Outbound {
        if !std::mem::take(&mut self.deferring) {
            return Outbound::default();
        }
        let dirty = self.dirty.take(usize::MAX);
        self.fib_dirty.extend(dirty);
        let prefixes: Vec<IpNet> = self.loc.keys().collect();
        for g in 0..self.groups.len() {
            self.groups[g].clear();
            if !self.groups[g].members.is_empty() {
                self.update_group(g, &prefixes);
            }
        }
        let ids = self.established_peers();
        Outbound {
            messages: ids
                .into_iter()
                .map(|id| (id, Arc::new(self.initial_table(id))))
                .collect(),
            garbage: Vec::new(),
        }
    }

    /// A session with a peer that negotiated graceful restart went down
    /// without a NOTIFICATION (RFC 4724 §4.2): its paths in `families` stay,
    /// marked stale, and keep forwarding until the peer announces them again,
    /// sends End-of-RIB, or [`Rib::drop_stale`] runs (restart or stale timer).
    /// Its other paths go at once. Returns how many entries were kept.
    pub fn peer_down_graceful(&mut self, id: PeerId, families: &[AfiSafi]) -> usize {
        if !self.peers.contains_key(&id) {
            return 0;
        }
        let accepted: Vec<(IpNet, u32)> = self
            .paths_of(id)
            .map(|(p, path)| (p, path.path_id))
            .collect();
        let Some(state) = self.peers.get_mut(&id) else {
            return 0;
        };
        let group = state.group;
        let was_up = std::mem::replace(&mut state.up, false);
        state.end_of_rib.clear();
        // Rejected entries carry no path: nothing to keep forwarding.
        let mut gone: Vec<(IpNet, u32)> = state.rejected.keys().collect();
        for key in accepted {
            if families.contains(&family(&key.0)) {
                state.stale.insert(key);
            } else {
                gone.push(key);
            }
        }
        let kept = state.stale.len();
        if was_up {
            let g = &mut self.groups[group];
            g.members.retain(|m| *m != id);
            if g.members.is_empty() {
                g.clear();
            }
        }
        for key in gone {
            self.forget(id, key);
        }
        if kept == 0 {
            self.peers.remove(&id);
        }
        kept
    }

    /// Removes a peer's stale entries (of one family, or all): End-of-RIB
    /// came, or the restart or stale timer ran out. Returns how many went.
    pub fn drop_stale(&mut self, id: PeerId, only: Option<AfiSafi>) -> usize {
        let Some(state) = self.peers.get_mut(&id) else {
            return 0;
        };
        let gone: Vec<(IpNet, u32)> = state
            .stale
            .iter()
            .filter(|k| only.is_none_or(|af| family(&k.0) == af))
            .copied()
            .collect();
        for key in &gone {
            state.stale.remove(key);
        }
        let done = !state.up && state.stale.is_empty();
        for key in &gone {
            self.forget(id, *key);
        }
        if done {
            self.peers.remove(&id);
        }
        gone.len()
    }

    /// The restart timer of a peer that negotiated long-lived graceful restart
    /// ran out (RFC 9494 §4.2): its stale paths in `families` turn long-lived
    /// stale: they carry LLGR_STALE, are least preferred, and go only to peers
    /// that negotiated LLGR. Paths marked NO_LLGR, and stale paths of other
    /// families, go now. Returns how many stay.
    pub fn enter_long_lived_stale(&mut self, id: PeerId, families: &[AfiSafi]) -> usize {
        let Some(state) = self.peers.get(&id) else {
            return 0;
        };
        let keys: Vec<(IpNet, u32)> = state.stale.iter().copied().collect();
        let mut kept = 0;
        for key in keys {
            let current = self.loc.get(&key.0).and_then(|d| {
                d.paths
                    .iter()
                    .find(|p| p.source() == Source::Peer(id) && p.path_id == key.1)
                    .map(|p| p.attrs.clone())
            });
            let Some(a) = current else {
                continue;
            };
            if !families.contains(&family(&key.0)) || a.has_community(Community::NO_LLGR) {
                if let Some(s) = self.peers.get_mut(&id) {
                    s.stale.remove(&key);
                }
                self.forget(id, key);
                continue;
            }
            kept += 1;
            if a.has_community(Community::LLGR_STALE) {
                continue;
            }
            let mut marked = (*a).clone();
            marked.communities.push(Community::LLGR_STALE);
            let marked = self.intern(marked);
            if let Some(p) = self.loc.get_mut(&key.0).and_then(|d| {
                d.paths
                    .iter_mut()
                    .find(|p| p.source() == Source::Peer(id) && p.path_id == key.1)
            }) {
                p.attrs = marked;
            }
            self.decide(key.0);
        }
        if kept == 0
            && self
                .peers
                .get(&id)
                .is_some_and(|s| !s.up && s.stale.is_empty())
        {
            self.peers.remove(&id);
        }
        kept
    }

    /// How many stale entries a peer has.
    pub fn stale_count(&self, id: PeerId) -> usize {
        self.peers.get(&id).map_or(0, |s| s.stale.len())
    }

    /// Whether a peer's session is down with its paths kept stale.
    pub fn is_restarting(&self, id: PeerId) -> bool {
        self.peers.get(&id).is_some_and(|s| !s.up)
    }
}
