//! The listeners: bound and closed as the configuration says, their
//! accepted connections handed to the task, and their TCP-MD5 keys.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::config::{NeighborAddress, SpeakerConfig};
use super::handle::SpeakerError;
use super::task::SpeakerTask;
use crate::session;

impl SpeakerTask {
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
        &mut self,
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
        // Ranges whose key a listener refused stay refused until it takes
        // it; those without a key any more are no one's concern.
        self.md5_missing.retain(|r| after.contains_key(r));
        for (addr, _, l) in &self.listeners {
            let fits =
                |r: &IpNet| addr.ip().is_unspecified() || addr.is_ipv4() == r.addr().is_ipv4();
            for (range, key) in after.iter().filter(|(r, _)| fits(r)) {
                if before.get(range) == Some(key) && !fresh.contains(addr) {
                    continue;
                }
                match session::socket::listener_md5(l, *range, key) {
                    Ok(()) => self.md5_missing.retain(|r| r != range),
                    Err(e) => {
                        tracing::warn!(peer = %range, listener = %addr, error = %e, "cannot install TCP-MD5 key: the neighbour's connections are refused");
                        if !self.md5_missing.contains(range) {
                            self.md5_missing.push(*range);
                        }
                    }
                }
            }
            for range in before.keys().filter(|r| fits(r) && !after.contains_key(r)) {
                // An empty key deletes the entry; a listener bound afresh has none to delete.
                let _ = session::socket::listener_md5(l, *range, &[]);
            }
        }
    }

    /// GTSM on the listeners: when every neighbour has it, a listener drops
    /// connections from further away than the farthest allowed, before the
    /// handshake (each accepted connection gets its own neighbour's limit
    /// besides); with any neighbour without GTSM the listener cannot.
    pub(super) fn set_listener_min_ttl(&self) {
        let hops: Option<Vec<u8>> = self
            .core
            .config
            .neighbors
            .iter()
            .map(|n| n.ttl_security)
            .collect();
        let min_ttl = match hops.as_deref() {
            Some(h) if !h.is_empty() => {
                let farthest = h.iter().copied().max().unwrap_or(1);
                255u8.saturating_sub(farthest).saturating_add(1)
            }
            _ => 0,
        };
        for (addr, _, l) in &self.listeners {
            if let Err(e) = session::socket::listener_min_ttl(l, *addr, min_ttl) {
                tracing::warn!(listener = %addr, min_ttl, error = %e, "cannot set GTSM's minimum TTL on the listener");
            }
        }
    }
}
