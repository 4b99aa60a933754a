//! The node's tunnel address (its VXLAN endpoint, IPIP and WireGuard
//! source): allocated from a pool that allows `Tunnel` while the overlay
//! needs one, given back when it no longer does.
//!
//! It is an ordinary allocation in a block, held by
//! [`ipam::pod::Holder::tunnel`]: no pod, a handle no CNI attachment has.
//! So it survives the agent's restart (found again by its handle), the
//! runtime's CNI GC never frees it, the controller's GC frees it only when
//! its node is gone, and `petrel ipam check` judges it by its node.

use std::net::Ipv4Addr;

use ipam::pod::{BlockStore, DriveError, Family, Holder, Release, Settings, allocate, release};

use super::PoolsView;

/// What the worker remembers between passes: the last failure, logged
/// once rather than every pass.
#[derive(Debug, Default)]
pub(super) struct TunnelAddress {
    failing: Option<String>,
}

impl TunnelAddress {
    /// Allocates or gives back the tunnel address as `pools` says, knowing
    /// the node `held` one (as last read); whether anything changed.
    pub(super) async fn tend<S: BlockStore>(
        &mut self,
        store: &S,
        node: &str,
        pools: Option<&PoolsView>,
        held: Option<Ipv4Addr>,
        settings: Settings,
    ) -> bool {
        let Some(view) = pools else {
            // No snapshot yet: nothing is known to be wanted or not.
            return false;
        };
        let holder = Holder::tunnel(node);
        let now = super::now();
        match (&view.tunnel, held) {
            (Some(tiers), None) => {
                let mut last = None;
                for tier in tiers {
                    match allocate(store, Family::V4, tier, &holder, now, settings).await {
                        Ok(a) => {
                            tracing::info!(address = %a.addr, block = %a.block, "tunnel address allocated");
                            self.failing = None;
                            return true;
                        }
                        // This tier has nothing: the next one may.
                        Err(e @ DriveError::Exhausted(_)) => last = Some(e.to_string()),
                        Err(e) => {
                            last = Some(e.to_string());
                            break;
                        }
                    }
                }
                let why = last.unwrap_or_else(|| {
                    "no IPv4 IPPool allows Tunnel (allowedUses) and selects this node".into()
                });
                if self.failing.as_ref() != Some(&why) {
                    tracing::warn!("no tunnel address for the overlay: {why}");
                    self.failing = Some(why);
                }
                false
            }
            (None, Some(address)) => {
                match release(store, Release::Handle(&holder.handle), now, settings).await {
                    Ok(_) => {
                        tracing::info!(%address, "tunnel address given back: no pool tunnels");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(%address, "giving back the tunnel address: {e}");
                        false
                    }
                }
            }
            _ => {
                self.failing = None;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_ipam::handle::{Context, handle};
    use cni::wire::{Reply, Request};
    use ipam::pod::Pool;
    use ipam_store::FileBlocks;
    use testkit::guard::TempDir;

    fn pool(name: &str, cidr: &str) -> Pool {
        Pool {
            name: name.into(),
            cidr: cidr.parse().expect("cidr"),
            block_prefix: 28,
            selects_node: true,
            disabled: false,
            strict_affinity: false,
            allows_use: true,
        }
    }

    async fn held(store: &FileBlocks, node: &str) -> Option<Ipv4Addr> {
        let blocks = store.list().await.expect("blocks");
        super::super::local_view(node, &blocks).tunnel
    }

    #[tokio::test]
    async fn held_while_wanted_kept_from_cni_gc_given_back_when_not() {
        let dir = tempfile_dir("tunnel");
        let store = FileBlocks::new(dir.0.join("state.json"));
        let settings = Settings::default();
        let wanted = PoolsView {
            petrel: true,
            pools: vec![pool("pods", "10.1.0.0/24")],
            tunnel: Some(vec![
                vec![pool("tunnels", "10.9.0.0/24")],
                vec![pool("pods", "10.1.0.0/24")],
            ]),
        };
        let mut t = TunnelAddress::default();
        assert!(t.tend(&store, "n1", Some(&wanted), None, settings).await);
        let address = held(&store, "n1").await.expect("allocated");
        assert!(
            "10.9.0.0/24"
                .parse::<ipnet::Ipv4Net>()
                .expect("net")
                .contains(&address),
            "the first tier's pool: {address}"
        );
        assert!(
            !t.tend(&store, "n1", Some(&wanted), Some(address), settings)
                .await,
            "held already: nothing to do"
        );

        // The runtime's GC lists the attachments it knows: never this.
        let cx = Context {
            store: &store,
            node: "n1",
            pools: Some(&wanted),
            now: super::super::now(),
            settings,
        };
        match handle(&cx, Request::Gc { valid: Vec::new() }).await {
            Reply::Done { released } => assert!(released.is_empty(), "{released:?}"),
            other => panic!("GC: {other:?}"),
        }
        assert_eq!(held(&store, "n1").await, Some(address));

        // A restarted worker finds it again rather than taking another.
        let mut again = TunnelAddress::default();
        let found = held(&store, "n1").await;
        assert!(
            !again
                .tend(&store, "n1", Some(&wanted), found, settings)
                .await
        );

        let unwanted = PoolsView {
            tunnel: None,
            ..wanted.clone()
        };
        assert!(
            t.tend(&store, "n1", Some(&unwanted), Some(address), settings)
                .await
        );
        assert_eq!(held(&store, "n1").await, None);
    }

    #[tokio::test]
    async fn an_exhausted_tier_falls_through_to_the_next() {
        let dir = tempfile_dir("tiers");
        let store = FileBlocks::new(dir.0.join("state.json"));
        let mut off = pool("tunnels", "10.9.0.0/24");
        off.selects_node = false;
        let view = PoolsView {
            petrel: true,
            pools: Vec::new(),
            tunnel: Some(vec![vec![off], vec![pool("pods", "10.1.0.0/24")]]),
        };
        let mut t = TunnelAddress::default();
        assert!(
            t.tend(&store, "n1", Some(&view), None, Settings::default())
                .await
        );
        let address = held(&store, "n1").await.expect("allocated");
        assert_eq!(address.octets()[..2], [10, 1], "{address}");
    }

    fn tempfile_dir(what: &str) -> TempDir {
        TempDir(std::env::temp_dir().join(format!(
            "petrel-tunnel-address-{what}-{}",
            std::process::id()
        )))
    }
}
