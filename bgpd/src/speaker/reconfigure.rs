//! Applying a new configuration: only what changed is reset; policies
//! apply live.

use std::net::IpAddr;

use super::config::{NeighborAddress, SpeakerConfig, rib_config};
use super::core::{Core, Output};
use super::view::FibEvent;
use crate::rib::{FibChange, PeerId, Rib};
use crate::session::PeerCommand;
use crate::wire::error::subcode;

impl Core {
    /// Applies a new configuration (the task has rebound the listeners).
    pub(super) fn configure(&mut self, new: SpeakerConfig) {
        let global_changed = new.asn != self.config.asn
            || new.router_id != self.config.router_id
            || new.decision != self.config.decision
            || new.cluster_id != self.config.cluster_id
            || new.maximum_paths != self.config.maximum_paths
            || new.local_ipv6 != self.config.local_ipv6
            || new.local_ipv4 != self.config.local_ipv4;
        if global_changed {
            let ids: Vec<PeerId> = self.peers.keys().copied().collect();
            for id in ids {
                self.stop_peer(id, subcode::cease::OTHER_CONFIGURATION_CHANGE, None);
            }
            // The new RIB starts empty: tell the FIB side every old prefix is
            // gone (what is learned again comes back), and keep what is known
            // about next-hop reachability.
            let gone: Vec<FibChange> = self
                .rib
                .iter()
                .map(|(p, _)| FibChange {
                    prefix: p,
                    next_hops: None,
                })
                .collect();
            if self.fib && !gone.is_empty() {
                self.out.push(Output::Fib(FibEvent::Changes(gone)));
            }
            let unreachable: Vec<IpAddr> = self.rib.unreachable_next_hops().collect();
            let deferring = self.rib.deferring();
            self.rib = Rib::new(rib_config(&new));
            if deferring {
                self.rib.defer();
            }
            for nh in unreachable {
                self.rib.set_next_hop_reachable(nh, false);
            }
        }
        // From here on, new peers are built with the new identity.
        let old = std::mem::replace(&mut self.config, new.clone());
        if old.graceful_restart != new.graceful_restart {
            // Offered from the next session on; established ones keep theirs.
            self.offer_capabilities_again();
        }
        // Peers disabled through the API stay disabled across a reset.
        let disabled: Vec<String> = self
            .peers
            .values()
            .filter(|p| p.disabled && !p.dynamic)
            .map(|p| p.config.name.clone())
            .collect();
        // Peers: stop removed and changed ones, start new and changed ones.
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            let p = &self.peers[&id];
            let still = new.neighbors.iter().find(|n| n.name == p.config.name);
            match still {
                None => self.stop_peer(id, subcode::cease::PEER_DECONFIGURED, None),
                Some(n) if n.differs_beyond_policies(&p.config) => {
                    tracing::info!(peer = %p.address, name = %n.name, "neighbour settings changed; resetting its session");
                    self.stop_peer(id, subcode::cease::OTHER_CONFIGURATION_CHANGE, None)
                }
                Some(n) if *n != p.config => {
                    // Only the policies (or the BFD link): applied live,
                    // the session stays.
                    tracing::info!(peer = %p.address, name = %n.name, "policies or BFD link changed; applying them without a reset");
                    let (import, export) = (n.import_policy.clone(), n.export_policy.clone());
                    let bfd_changed = p.config.bfd != n.bfd;
                    if let Some(slot) = self.peers.get_mut(&id) {
                        slot.config = n.clone();
                    }
                    if bfd_changed {
                        self.bfd_link_changed(id);
                    }
                    let out = self.rib.set_policies(id, import, export);
                    self.dispatch(out);
                }
                Some(_) => {}
            }
        }
        for n in &new.neighbors {
            if let NeighborAddress::Address(a) = n.address
                && !self
                    .peers
                    .values()
                    .any(|p| p.config.name == n.name && !p.dynamic)
            {
                let id = self.spawn(n.clone(), a, false);
                if disabled.contains(&n.name)
                    && let Some(p) = self.peers.get_mut(&id)
                {
                    p.disabled = true;
                    self.out.push(Output::Peer(id, PeerCommand::Disable(None)));
                }
            }
        }
        let local = new
            .originate
            .iter()
            .map(|r| (r.prefix, r.attrs()))
            .collect::<Vec<_>>();
        self.rib.set_local_routes(local);
        self.flush();
    }
}
