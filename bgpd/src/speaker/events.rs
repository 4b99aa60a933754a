//! What each peer event does to the peer table and the RIB.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;

use super::config::MaxPrefixesAction;
use crate::fsm::{DownReason, Negotiated, State};
use crate::journal::WatchEventKind;
use crate::rib::{PeerId, PeerInfo};
use crate::session::PeerCommand;
use crate::wire::error::subcode;
use crate::wire::{AfiSafi, Update};

use super::core::{Core, Output, PeerInput};

impl Core {
    /// Enforces a peer's prefix limits (checked after each of its UPDATEs).
    pub(super) fn check_prefix_limits(&mut self, id: PeerId) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.config.max_prefixes.is_empty() || !p.in_rib {
            return;
        }
        for m in &p.config.max_prefixes {
            let counts = self.rib.counts(id, m.family);
            let accepted = if m.force {
                let taw = match m.family {
                    AfiSafi::IPV4_UNICAST => p.treated_as_withdrawn[0],
                    AfiSafi::IPV6_UNICAST => p.treated_as_withdrawn[1],
                    _ => 0,
                };
                counts.received + taw
            } else {
                counts.accepted
            };
            let over = accepted > m.limit;
            let warn_at = m.limit * u64::from(m.warning_percent) / 100;
            if !over && accepted < warn_at {
                continue;
            }
            if p.limit_warned.contains(&(m.family, over)) {
                continue;
            }
            p.limit_warned.push((m.family, over));
            if !over {
                tracing::warn!(peer = %p.address, family = %m.family, accepted, limit = m.limit, "prefix count reached the warning threshold");
                continue;
            }
            match m.action {
                MaxPrefixesAction::Log => {
                    tracing::warn!(peer = %p.address, family = %m.family, accepted, limit = m.limit, "prefix limit exceeded (action: log)");
                }
                MaxPrefixesAction::Restart(after) => {
                    tracing::warn!(peer = %p.address, family = %m.family, accepted, limit = m.limit, restart_after = ?after, "prefix limit exceeded: ending the session");
                    // No further check until the session is gone.
                    p.in_rib = false;
                    self.out.push(Output::Peer(
                        id,
                        PeerCommand::Reset {
                            subcode: subcode::cease::MAX_PREFIXES,
                            restart_after: Some(after),
                        },
                    ));
                    return;
                }
            }
        }
    }

    /// Applies one event of peer `id`.
    pub(super) fn event(&mut self, id: PeerId, ev: PeerInput) {
        match ev {
            PeerInput::State(s) => self.on_state(id, s),
            PeerInput::Up {
                session,
                negotiated,
                local,
                remote,
                link_local,
            } => self.on_up(id, session, negotiated, (local, remote), link_local),
            PeerInput::Down {
                reason,
                established,
            } => self.on_down(id, reason, established),
            PeerInput::Update {
                update,
                treat_as_withdraw,
            } => {
                if treat_as_withdraw && let Some(p) = self.peers.get_mut(&id) {
                    let [v4, v6] = update_prefixes(&update);
                    p.treated_as_withdrawn[0] += v4;
                    p.treated_as_withdrawn[1] += v6;
                }
                self.rib.update(id, &update, treat_as_withdraw);
                self.check_prefix_limits(id);
            }
            PeerInput::RouteRefresh(af) => self.on_refresh_request(id, af),
            PeerInput::Stopped => {
                self.forget_restart(id);
                self.forget_refreshes(id);
                self.rib.peer_down(id);
            }
            PeerInput::Crashed(why) => self.on_crash(id, &why),
        }
    }

    /// The peer's task panicked: its session is gone without a word, so
    /// its routes go at once (no graceful restart: nothing says the peer
    /// restarted), and the peer starts again in a task of its own (a
    /// dynamic one waits for the peer to connect again).
    fn on_crash(&mut self, id: PeerId, why: &str) {
        let Some(p) = self.peers.remove(&id) else {
            return;
        };
        self.peers_changed = true;
        self.forget_restart(id);
        self.forget_refreshes(id);
        self.rib.peer_down(id);
        self.out.push(Output::Forget(id));
        if p.dynamic {
            return;
        }
        let new = self.spawn(p.config.clone(), p.address, false);
        if let Some(q) = self.peers.get_mut(&new) {
            q.last_error = Some(format!("the session's task failed ({why}); started again"));
            let flaps = p.stats.flaps.load(Relaxed) + 1;
            q.stats.flaps.store(flaps, Relaxed);
            if p.disabled {
                q.disabled = true;
                self.out.push(Output::Peer(new, PeerCommand::Disable(None)));
            }
        }
    }

    /// The session's machine changed state.
    fn on_state(&mut self, id: PeerId, s: State) {
        if let Some(p) = self.peers.get_mut(&id) {
            let from = std::mem::replace(&mut p.state, s);
            p.since = self.clock.wall();
            if from != s {
                self.peers_changed = true;
                self.journal_batch.push((
                    p.since,
                    WatchEventKind::PeerState {
                        name: p.config.name.clone(),
                        address: p.address,
                        from,
                        to: s,
                        last_error: p.last_error.clone(),
                    },
                ));
            }
        }
    }

    /// The session is Established: the peer enters the RIB and is sent its
    /// table.
    fn on_up(
        &mut self,
        id: PeerId,
        session: u64,
        negotiated: Box<Negotiated>,
        (local, remote): (SocketAddr, SocketAddr),
        link_local: Option<Ipv6Addr>,
    ) {
        let Some(p) = self.peers.get(&id) else {
            return;
        };
        let info = PeerInfo {
            address: remote.ip(),
            local_address: local.ip(),
            local_ipv4: self.config.local_ipv4,
            local_ipv6: self.config.local_ipv6,
            local_link_local: link_local,
            asn: negotiated.peer_asn,
            router_id: negotiated.peer_id,
            next_hop_self: p.config.next_hop_self,
            rr_client: p.config.route_reflector_client,
            add_path_send: p.config.add_paths.send,
            import_policy: p.config.import_policy.clone(),
            export_policy: p.config.export_policy.clone(),
            transit: false,
            long_lived: self.long_lived_with(&negotiated),
            families: negotiated.families.clone(),
            rx: negotiated.rx,
            tx: negotiated.tx,
        };
        self.peer_back(id, &negotiated, remote.ip());
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.session = session;
        p.negotiated = Some(negotiated);
        p.local = Some(local);
        p.last_error = None;
        p.in_rib = true;
        p.limit_warned.clear();
        p.treated_as_withdrawn = [0; 2];
        let out = self.rib.peer_up(id, info);
        self.dispatch(out);
        self.arm_stale_timer(id);
    }

    /// The session (or an attempt) ended: the peer's routes go, or stay
    /// stale while it restarts.
    fn on_down(&mut self, id: PeerId, reason: DownReason, established: bool) {
        self.forget_refreshes(id);
        let graceful = self.graceful_plan(id, &reason, established);
        if let Some(p) = self.peers.get_mut(&id) {
            p.last_error = Some(reason.to_string());
            p.negotiated = None;
            p.local = None;
            p.in_rib = false;
            if matches!(reason, DownReason::ManualStop) {
                p.last_error = Some(if p.disabled {
                    "disabled through the API".into()
                } else {
                    "stopped by configuration".into()
                });
            }
        }
        // An attempt that never got Established (a collision, an OPEN
        // refused) changes nothing in the RIB: above all, a restarting
        // peer's stale routes and timers stay.
        if established {
            match graceful {
                Some(plan) => self.keep_stale(id, plan),
                None => {
                    self.forget_restart(id);
                    self.rib.peer_down(id);
                }
            }
        }
        // A dynamic peer exists only while its session does (a lost
        // collision is not the end: the other connection carries on).
        if !matches!(reason, DownReason::Collision)
            && self.peers.get(&id).is_some_and(|p| p.dynamic)
        {
            self.stop_peer(id, subcode::cease::PEER_DECONFIGURED, None);
        }
    }
}

/// The prefixes an UPDATE announces, IPv4 and IPv6.
fn update_prefixes(u: &Update) -> [u64; 2] {
    let mut n = [0u64; 2];
    for nlri in u.announced() {
        n[usize::from(nlri.prefix.addr().is_ipv6())] += 1;
    }
    n
}
