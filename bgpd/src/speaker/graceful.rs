//! Graceful restart (RFC 4724) and long-lived graceful restart (RFC 9494),
//! both roles, in one place: the capabilities offered; as helper, the stale
//! routes of a restarting peer and their timers; as the restarting side,
//! the deferral of route selection; and the initial convergence the FIB
//! waits for ([`FibEvent::Converged`]).

use std::net::IpAddr;
use std::time::Duration;

use super::config::NeighborConfig;
use super::core::{Core, Output};
use super::peers::add_path_capability;
use super::view::FibEvent;
use crate::fsm::{DownReason, Negotiated};
use crate::rib::PeerId;
use crate::session::PeerCommand;
use crate::wire::AfiSafi;
use crate::wire::capability::{Capability, GrFamily, GracefulRestart, LlgrFamily};

impl Core {
    /// Bookkeeping after a batch of peer events: stale timers of peers whose
    /// End-of-RIB swept their stale routes, the end of a deferral, and the
    /// initial convergence.
    pub(super) fn after_events(&mut self) {
        self.stale_timers
            .retain(|id, _| self.rib.stale_count(*id) > 0);
        if self.deferral_until.is_some() && self.configured_peers_ready(true) {
            tracing::info!("deferral over: every graceful restart peer sent its table");
            self.end_deferral();
        }
        if !self.converged && self.configured_peers_ready(false) {
            tracing::info!("initial convergence: every configured peer sent its table");
            self.end_deferral();
            // The FIB hears this batch's changes before it hears that the
            // tables are complete.
            self.flush();
            self.converged = true;
            if self.fib {
                self.out.push(Output::Fib(FibEvent::Converged));
            }
        }
    }

    /// Whether every configured peer is Established and has sent End-of-RIB
    /// for every family. For the selection deferral (`deferral`), peers that
    /// did not offer graceful restart or are restarting themselves (R bit) are
    /// not waited for once up (RFC 4724 §4.1); for the FIB's convergence they
    /// are, since routes they have not sent yet must not be removed.
    pub(super) fn configured_peers_ready(&self, deferral: bool) -> bool {
        self.peers
            .iter()
            .filter(|(_, p)| !p.dynamic)
            .all(|(id, p)| {
                let Some(n) = p.negotiated.as_deref() else {
                    return false;
                };
                let exempt = match &n.peer_graceful_restart {
                    Some(gr) => gr.restart_state(),
                    None => true,
                };
                (deferral && exempt)
                    || n.families
                        .iter()
                        .all(|af| self.rib.end_of_rib_received(*id, *af))
            })
    }

    /// Ends a deferred route selection (tables and End-of-RIB go out, the FIB
    /// hears the best paths) and stops offering the R bit.
    pub(super) fn end_deferral(&mut self) {
        self.deferral_until = None;
        if self.rib.deferring() {
            let out = self.rib.end_deferral();
            self.dispatch(out);
            self.flush();
        }
        if self.restart.restarted {
            self.restart.restarted = false;
            self.offer_capabilities_again();
        }
    }

    /// After our own restart (with graceful restart on), route selection
    /// waits for the peers' tables, at most the selection deferral time
    /// (RFC 4724 §4.1).
    pub(super) fn defer_after_restart(&mut self) {
        if !(self.restart.restarted && self.config.graceful_restart.enabled) {
            return;
        }
        let deferral = self.config.graceful_restart.selection_deferral;
        self.rib.defer();
        self.deferral_until = Some(self.clock.now() + deferral);
        tracing::info!(
            ?deferral,
            forwarding_preserved = self.restart.forwarding_preserved,
            "restarted: route selection deferred until the peers sent their tables"
        );
    }

    /// Every peer task offers its capabilities as they are now from its
    /// next OPEN on (established sessions keep theirs).
    pub(super) fn offer_capabilities_again(&mut self) {
        let caps: Vec<_> = self
            .peers
            .iter()
            .map(|(id, p)| (*id, self.capabilities(&p.config)))
            .collect();
        for (id, caps) in caps {
            self.tell_peer(id, PeerCommand::SetCapabilities(caps));
        }
    }

    /// The capabilities offered to a neighbour.
    pub(super) fn capabilities(&self, n: &NeighborConfig) -> Vec<Capability> {
        let gr = &self.config.graceful_restart;
        n.families
            .iter()
            .map(|af| Capability::Multiprotocol(*af))
            .chain([Capability::RouteRefresh, Capability::EnhancedRouteRefresh])
            .chain(add_path_capability(n))
            .chain(
                (gr.enabled && !gr.long_lived_stale_time.is_zero()).then(|| {
                    let stale = gr.long_lived_stale_time.as_secs().min(0xFF_FFFF) as u32;
                    Capability::LongLivedGracefulRestart(
                        n.families
                            .iter()
                            .map(|af| LlgrFamily {
                                afi_safi: *af,
                                flags: if self.restart.forwarding_preserved {
                                    GrFamily::FORWARDING_PRESERVED
                                } else {
                                    0
                                },
                                stale_time: stale,
                            })
                            .collect(),
                    )
                }),
            )
            .chain(gr.enabled.then(|| {
                Capability::GracefulRestart(GracefulRestart {
                    // N: a NOTIFICATION other than Hard Reset is a restart
                    // too (RFC 8538), so a hold timer expiry or our own
                    // restart on SIGTERM keeps routes where both agree.
                    flags: GracefulRestart::NOTIFICATION
                        | if self.restart.restarted {
                            GracefulRestart::RESTART_STATE
                        } else {
                            0
                        },
                    restart_time: gr.restart_time.min(4095),
                    families: n
                        .families
                        .iter()
                        .map(|af| GrFamily {
                            afi_safi: *af,
                            flags: if self.restart.forwarding_preserved {
                                GrFamily::FORWARDING_PRESERVED
                            } else {
                                0
                            },
                        })
                        .collect(),
                })
            }))
            .collect()
    }

    /// Ends every session as this speaker stops. With graceful restart,
    /// stopping is restarting: a peer that helps keeps our routes until we
    /// are back, so a restarted agent withdraws nothing. It is told with
    /// the NOTIFICATION RFC 8538 keeps routes for (Cease / Administrative
    /// Reset) when both set the N bit, else by the connection closing with
    /// no NOTIFICATION (RFC 4724). Peers without graceful restart get Cease
    /// / Administrative Shutdown, and drop our routes at once.
    pub(super) fn shut_down(&mut self) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            let how = self.peers.get(&id).and_then(|p| {
                let n = p.negotiated.as_deref()?;
                n.peer_graceful_restart.as_ref()?;
                self.config
                    .graceful_restart
                    .enabled
                    .then(|| n.graceful_notification())
            });
            match how {
                Some(true) => self.stop_peer(
                    id,
                    crate::wire::error::subcode::cease::ADMINISTRATIVE_RESET,
                    None,
                ),
                Some(false) => self.close_peer(id),
                None => self.stop_peer(
                    id,
                    crate::wire::error::subcode::cease::ADMINISTRATIVE_SHUTDOWN,
                    Some("petrel is shutting down".into()),
                ),
            }
        }
    }

    /// Whether long-lived stale routes apply to a session: we offer LLGR and
    /// the peer does too.
    pub(super) fn long_lived_with(&self, n: &Negotiated) -> bool {
        !self.config.graceful_restart.long_lived_stale_time.is_zero() && n.peer_long_lived.is_some()
    }

    /// A restarting peer is back: families whose forwarding state it did not
    /// keep (no F bit) lose their stale routes now; the others wait for
    /// End-of-RIB, bounded by the stale timer.
    pub(super) fn peer_back(&mut self, id: PeerId, negotiated: &Negotiated, remote: IpAddr) {
        if let Some(gr) = &negotiated.peer_graceful_restart {
            tracing::debug!(
                peer = %remote,
                restarting = gr.restart_state(),
                restart_time = gr.restart_time,
                families = ?gr.families,
                "the peer offers graceful restart"
            );
        }
        if !self.rib.is_restarting(id) {
            return;
        }
        let llgr_kept = negotiated
            .peer_long_lived
            .iter()
            .flatten()
            .filter(|f| f.flags & GrFamily::FORWARDING_PRESERVED != 0)
            .map(|f| f.afi_safi);
        let kept: Vec<AfiSafi> = negotiated
            .peer_graceful_restart
            .iter()
            .flat_map(|gr| gr.families.iter())
            .filter(|f| f.forwarding_preserved())
            .map(|f| f.afi_safi)
            .chain(llgr_kept)
            .filter(|af| negotiated.families.contains(af))
            .collect();
        self.pending_llgr.remove(&id);
        for af in [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST] {
            if !kept.contains(&af) {
                self.rib.drop_stale(id, Some(af));
            }
        }
        tracing::info!(peer = %remote, stale = self.rib.stale_count(id), "graceful restart: peer back; stale routes wait for its End-of-RIB");
    }

    /// After a peer came up: the stale routes left from its previous
    /// session wait for its End-of-RIB at most the stale routes time.
    pub(super) fn arm_stale_timer(&mut self, id: PeerId) {
        if self.rib.stale_count(id) > 0 {
            let t = self.clock.now() + self.config.graceful_restart.stale_routes_time;
            self.stale_timers.insert(id, t);
        } else {
            self.stale_timers.remove(&id);
        }
    }

    /// Whether an ending session keeps the peer's routes while it restarts
    /// (RFC 4724 §4.2: it ended without a NOTIFICATION, with a peer that
    /// offered graceful restart; RFC 8538: or with one that is not a Hard
    /// Reset, when both set the N bit), and how: which families, for how
    /// long.
    pub(super) fn graceful_plan(
        &self,
        id: PeerId,
        reason: &DownReason,
        established: bool,
    ) -> Option<GracefulPlan> {
        let n = self.peers.get(&id)?.negotiated.as_deref()?;
        let gr = n.peer_graceful_restart.as_ref()?;
        if !(self.config.graceful_restart.enabled && established && is_restart(reason, n)) {
            return None;
        }
        let mut families: Vec<AfiSafi> = gr
            .families
            .iter()
            .map(|f| f.afi_safi)
            .filter(|af| n.families.contains(af))
            .collect();
        let llgr = n
            .peer_long_lived
            .as_ref()
            .filter(|_| !self.config.graceful_restart.long_lived_stale_time.is_zero())
            .map(|fams| {
                let families: Vec<AfiSafi> = fams
                    .iter()
                    .map(|f| f.afi_safi)
                    .filter(|af| n.families.contains(af))
                    .collect();
                let asked = fams.iter().map(|f| f.stale_time).max().unwrap_or(0);
                let time = Duration::from_secs(asked.into())
                    .min(self.config.graceful_restart.long_lived_stale_time);
                (families, time)
            })
            .filter(|(f, t)| !f.is_empty() && !t.is_zero());
        if gr.restart_time == 0 && llgr.is_none() {
            return None;
        }
        if let Some((f, _)) = &llgr {
            for af in f {
                if !families.contains(af) {
                    families.push(*af);
                }
            }
        }
        Some(GracefulPlan {
            families,
            restart_time: gr.restart_time,
            llgr,
        })
    }

    /// Keeps a restarting peer's routes, stale, and arms the timer that
    /// ends them (or turns them long-lived stale).
    pub(super) fn keep_stale(&mut self, id: PeerId, plan: GracefulPlan) {
        let GracefulPlan {
            families,
            restart_time,
            llgr,
        } = plan;
        self.pending_llgr.remove(&id);
        let mut kept = self.rib.peer_down_graceful(id, &families);
        let now = self.clock.now();
        match llgr {
            // No restart time: straight to the long-lived phase.
            Some((f, t)) if restart_time == 0 => {
                kept = self.rib.enter_long_lived_stale(id, &f);
                if kept > 0 {
                    self.stale_timers.insert(id, now + t);
                }
            }
            llgr => {
                if kept > 0 {
                    self.stale_timers
                        .insert(id, now + Duration::from_secs(restart_time.into()));
                    if let Some(l) = llgr {
                        self.pending_llgr.insert(id, l);
                    }
                }
            }
        }
        tracing::info!(peer = ?self.peers.get(&id).map(|p| p.address), routes = kept, restart_time, "graceful restart: keeping the peer's routes while it restarts");
    }

    /// Forgets a peer's restart: its timers go (its routes are going too).
    pub(super) fn forget_restart(&mut self, id: PeerId) {
        self.stale_timers.remove(&id);
        self.pending_llgr.remove(&id);
    }

    /// The earliest deadline: the end of the selection deferral, a stale
    /// timer, or a merged ROUTE-REFRESH answer.
    pub(super) fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.deferral_until
            .into_iter()
            .chain(self.stale_timers.values().min().copied())
            .chain(self.next_refresh())
            .min()
    }

    /// Runs the graceful restart timers that are due: the end of the
    /// selection deferral, stale routes that time out or turn long-lived.
    pub(super) fn expire_timers(&mut self) {
        let now = self.clock.now();
        if self.deferral_until.is_some_and(|t| t <= now) {
            tracing::info!("selection deferral timer expired before every peer sent its table");
            self.end_deferral();
        }
        let due: Vec<PeerId> = self
            .stale_timers
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.stale_timers.remove(&id);
            let peer = self.peers.get(&id).map(|p| p.address);
            if let Some((families, stale_time)) = self.pending_llgr.remove(&id) {
                let kept = self.rib.enter_long_lived_stale(id, &families);
                if kept > 0 {
                    self.stale_timers.insert(id, now + stale_time);
                }
                tracing::info!(
                    ?peer,
                    routes = kept,
                    ?stale_time,
                    "long-lived graceful restart: the peer's routes are now long-lived stale"
                );
                continue;
            }
            let n = self.rib.drop_stale(id, None);
            tracing::info!(
                ?peer,
                routes = n,
                "graceful restart: the peer's stale routes timed out"
            );
        }
        self.flush();
    }
}

/// How a restarting peer's routes are kept: the families, its restart time
/// (seconds), and the long-lived phase that follows (families, stale time).
pub(super) struct GracefulPlan {
    families: Vec<AfiSafi>,
    restart_time: u16,
    llgr: Option<(Vec<AfiSafi>, Duration)>,
}

/// Whether a session that ended for `reason` is a restart, whose routes are
/// kept: a lost connection (RFC 4724), or between speakers that both set
/// the N bit, a NOTIFICATION that is not a Hard Reset (RFC 8538 §4).
pub(super) fn is_restart(reason: &DownReason, n: &Negotiated) -> bool {
    match reason {
        DownReason::ConnectionLost => true,
        _ if !n.graceful_notification() => false,
        // The receiver's rule: anything but a Hard Reset.
        DownReason::NotificationReceived(m) => {
            !(m.code == crate::wire::error::code::CEASE
                && m.subcode == crate::wire::error::subcode::cease::HARD_RESET)
        }
        // What we sent as a Hard Reset (the FSM wraps the hard Ceases).
        DownReason::NotificationSent(m) => !m.is_hard(),
        DownReason::AutomaticStop(sub) => !crate::wire::notification::is_hard_cease(*sub),
        DownReason::ManualStop | DownReason::Collision => false,
    }
}
