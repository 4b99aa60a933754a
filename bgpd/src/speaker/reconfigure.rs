//! Applying a new configuration: only what changed is reset; policies
//! apply live. Listeners and their TCP-MD5 keys follow the configuration.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use super::config::{NeighborAddress, SpeakerConfig, rib_config};
use super::handle::SpeakerError;
use super::task::SpeakerTask;
use super::view::FibEvent;
use crate::rib::{FibChange, PeerId, Rib};
use crate::session::{self, PeerCommand};
use crate::wire::error::subcode;

impl SpeakerTask {
    pub(super) async fn configure(&mut self, new: SpeakerConfig) -> Result<(), SpeakerError> {
        let global_changed = new.asn != self.config.asn
            || new.router_id != self.config.router_id
            || new.decision != self.config.decision
            || new.cluster_id != self.config.cluster_id
            || new.maximum_paths != self.config.maximum_paths
            || new.local_ipv6 != self.config.local_ipv6
            || new.local_ipv4 != self.config.local_ipv4;
        let fresh = if new.listen != self.config.listen {
            self.rebind(&new.listen).await?
        } else {
            Vec::new()
        };
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
            if let Some(fib) = &self.fib
                && !gone.is_empty()
            {
                let _ = fib.send(FibEvent::Changes(gone));
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
            for p in self.peers.values() {
                let caps = self.capabilities(&p.config);
                let _ = p.handle.commands.send(PeerCommand::SetCapabilities(caps));
            }
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
                    // Only the policies: applied live, the session stays.
                    tracing::info!(peer = %p.address, name = %n.name, "policies changed; applying them without a reset");
                    let (import, export) = (n.import_policy.clone(), n.export_policy.clone());
                    if let Some(slot) = self.peers.get_mut(&id) {
                        slot.config = n.clone();
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
                    let _ = p.handle.commands.send(PeerCommand::Disable(None));
                }
            }
        }
        self.install_md5(&old, &new, &fresh);
        let local = new
            .originate
            .iter()
            .map(|r| (r.prefix, r.attrs()))
            .collect::<Vec<_>>();
        self.rib.set_local_routes(local);
        self.flush();
        Ok(())
    }

    /// Makes the listeners match `addrs`: unchanged ones are kept (re-binding
    /// them could race their own closing), others closed or opened. Returns the
    /// addresses bound afresh, which need every TCP-MD5 key.
    pub(super) async fn rebind(
        &mut self,
        addrs: &[SocketAddr],
    ) -> Result<Vec<SocketAddr>, SpeakerError> {
        let mut kept = Vec::new();
        for (addr, h, l) in std::mem::take(&mut self.listeners) {
            if addrs.contains(&addr) {
                kept.push((addr, h, l));
            } else {
                h.abort();
                // Wait until the task (and its hold on the socket) is gone.
                let _ = h.await;
            }
        }
        self.listeners = kept;
        let mut fresh = Vec::new();
        for addr in addrs {
            if self.listeners.iter().any(|(a, _, _)| a == addr) {
                continue;
            }
            let l = session::socket::listen(*addr).map_err(|source| SpeakerError::Listen {
                addr: *addr,
                source,
            })?;
            let l = std::sync::Arc::new(l);
            let tx = self.accepted_tx.clone();
            let l2 = l.clone();
            let h = tokio::spawn(async move {
                loop {
                    match l2.accept().await {
                        Ok((s, remote)) => {
                            if tx.send((s, remote)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
            self.listeners.push((*addr, h, l));
            fresh.push(*addr);
        }
        Ok(fresh)
    }

    /// Keys for incoming connections live on the listeners: install the new
    /// configuration's, and remove those of neighbours that lost theirs.
    pub(super) fn install_md5(
        &self,
        old: &SpeakerConfig,
        new: &SpeakerConfig,
        fresh: &[SocketAddr],
    ) {
        let keys = |c: &SpeakerConfig| -> HashMap<IpNet, Vec<u8>> {
            c.neighbors
                .iter()
                .filter_map(|n| {
                    let range = match n.address {
                        NeighborAddress::Address(a) => IpNet::from(a),
                        NeighborAddress::Range(r) => r,
                    };
                    let key = n.password.as_ref()?.as_bytes().to_vec();
                    Some((range, key))
                })
                .collect()
        };
        let (before, after) = (keys(old), keys(new));
        for (addr, _, l) in &self.listeners {
            let fits =
                |r: &IpNet| addr.ip().is_unspecified() || addr.is_ipv4() == r.addr().is_ipv4();
            for (range, key) in after.iter().filter(|(r, _)| fits(r)) {
                if before.get(range) == Some(key) && !fresh.contains(addr) {
                    continue;
                }
                if let Err(e) = session::socket::listener_md5(l, *range, key) {
                    tracing::warn!(peer = %range, listener = %addr, error = %e, "cannot install TCP-MD5 key");
                }
            }
            for range in before.keys().filter(|r| fits(r) && !after.contains_key(r)) {
                // An empty key deletes the entry; a listener bound afresh has none to delete.
                let _ = session::socket::listener_md5(l, *range, &[]);
            }
        }
    }
}
