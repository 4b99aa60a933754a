//! The peer table: starting and stopping peer tasks, operator actions on a
//! peer, connections accepted for one, and the published status.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::config::{NeighborAddress, NeighborConfig};
use super::core::{Core, Output, PeerSlot};
use super::handle::{PeerControl, ResetKind, SpeakerError};
use super::view::PeerStatus;
use crate::fsm::{FsmConfig, State};
use crate::journal::WatchEventKind;
use crate::rib::PeerId;
use crate::session::{PeerCommand, PeerConfig, PeerStats, TransportOptions};
use crate::wire::AfiSafi;
use crate::wire::capability::Capability;
use crate::wire::error::subcode;

impl Core {
    /// Finds a peer by address or by a name that only it has.
    pub(super) fn find_peer(&self, peer: &str) -> Result<PeerId, SpeakerError> {
        if let Ok(addr) = peer.parse::<IpAddr>() {
            return self
                .peers
                .iter()
                .find(|(_, p)| p.address == addr.to_canonical())
                .map(|(id, _)| *id)
                .ok_or_else(|| SpeakerError::NoSuchPeer(peer.into()));
        }
        let named: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.config.name == peer)
            .map(|(id, _)| *id)
            .collect();
        match named.as_slice() {
            [id] => Ok(*id),
            [] => Err(SpeakerError::NoSuchPeer(peer.into())),
            many => Err(SpeakerError::Ambiguous(peer.into(), many.len())),
        }
    }

    /// Carries out an operator's action on a peer.
    pub(super) fn control(&mut self, peer: &str, what: PeerControl) -> Result<(), SpeakerError> {
        let id = self.find_peer(peer)?;
        let Some(p) = self.peers.get_mut(&id) else {
            return Err(SpeakerError::NoSuchPeer(peer.into()));
        };
        let address = p.address;
        match what {
            PeerControl::Disable(_) if p.dynamic => {
                return Err(SpeakerError::Dynamic(address));
            }
            PeerControl::Reset(_) if p.disabled => {
                return Err(SpeakerError::Disabled(address));
            }
            PeerControl::Disable(message) => {
                tracing::info!(peer = %address, ?message, "disabled through the API");
                p.disabled = true;
                self.out
                    .push(Output::Peer(id, PeerCommand::Disable(message)));
            }
            PeerControl::Enable => {
                tracing::info!(peer = %address, "enabled through the API");
                p.disabled = false;
                // A strict BFD link that is down keeps it down; BFD coming
                // Up starts it.
                if !p.bfd_held {
                    self.out.push(Output::Peer(id, PeerCommand::Enable));
                }
            }
            PeerControl::Reset(ResetKind::Hard) => {
                tracing::info!(peer = %address, "hard reset through the API");
                // Between speakers with RFC 8538's N bit, an Administrative
                // Reset would be a restart, the routes kept.
                let hard = p
                    .negotiated
                    .as_deref()
                    .is_some_and(crate::fsm::Negotiated::graceful_notification);
                self.out.push(Output::Peer(
                    id,
                    PeerCommand::Reset {
                        subcode: if hard {
                            subcode::cease::HARD_RESET
                        } else {
                            subcode::cease::ADMINISTRATIVE_RESET
                        },
                        restart_after: Some(Duration::from_secs(1)),
                    },
                ));
            }
            PeerControl::Reset(kind) => {
                let Some(n) = p.negotiated.as_deref().filter(|_| p.in_rib) else {
                    return Err(SpeakerError::NotEstablished(address));
                };
                let families = n.families.clone();
                if matches!(kind, ResetKind::SoftIn | ResetKind::SoftBoth) {
                    if !n.route_refresh {
                        return Err(SpeakerError::NoRouteRefresh(address));
                    }
                    for af in &families {
                        self.out.push(Output::Peer(id, PeerCommand::Refresh(*af)));
                    }
                }
                if matches!(kind, ResetKind::SoftOut | ResetKind::SoftBoth) {
                    for af in families {
                        let out = self.rib.refresh(id, af);
                        self.dispatch(out);
                    }
                }
                tracing::info!(peer = %address, ?kind, "soft reset through the API");
            }
        }
        Ok(())
    }

    /// Which peer a connection from `remote` goes to: a configured one, or
    /// a dynamic one started for it when a listen range covers it.
    pub(super) fn accept(&mut self, remote: IpAddr) -> Option<PeerId> {
        let ip = remote.to_canonical();
        if let Some((id, _)) = self.peers.iter().find(|(_, p)| p.address == ip) {
            return Some(*id);
        }
        let range = self.config.neighbors.iter().find(|n| match n.address {
            NeighborAddress::Range(r) => r.contains(&ip),
            NeighborAddress::Address(_) => false,
        });
        match range.cloned() {
            Some(n) => {
                let dynamic = self.peers.values().filter(|p| p.dynamic).count();
                if dynamic >= self.config.max_dynamic_neighbors {
                    self.refused.note(
                        self.clock.now(),
                        ip,
                        "the dynamic neighbour limit (maxDynamicNeighbors) is reached",
                    );
                    return None;
                }
                tracing::info!(peer = %ip, range = %n.address, "dynamic neighbour connected");
                Some(self.spawn(n, ip, true))
            }
            None => {
                self.refused
                    .note(self.clock.now(), ip, "not a configured neighbour");
                None
            }
        }
    }

    pub(super) fn spawn(&mut self, n: NeighborConfig, address: IpAddr, dynamic: bool) -> PeerId {
        let id = self.next_id;
        self.next_id += 1;
        let ebgp = n.asn != self.config.asn;
        let mut fsm = FsmConfig::new(self.config.asn, self.config.router_id, n.asn);
        fsm.hold_time = n.hold_time;
        fsm.keepalive_time = n.keepalive_time;
        fsm.passive = n.passive || dynamic;
        fsm.connect_retry = n.connect_retry;
        fsm.idle_hold_max = Duration::from_secs(60);
        fsm.capabilities = self.capabilities(&n);
        fsm.jitter_seed ^= u64::from(id).rotate_left(17);
        let transport = TransportOptions {
            ttl: match (ebgp, n.ebgp_multihop) {
                (true, None) => Some(1),
                (true, Some(h)) => Some(h),
                (false, _) => None,
            },
            ttl_security_hops: n.ttl_security,
            md5_key: n.password.as_ref().map(|p| p.as_bytes().to_vec()),
            source: n.source_address,
        };
        let config = PeerConfig {
            address,
            port: n.port,
            fsm,
            transport,
            send_hold: n.send_hold_time.map(|s| Duration::from_secs(s.into())),
        };
        let stats = Arc::new(PeerStats::default());
        self.out.push(Output::StartPeer {
            id,
            config,
            stats: stats.clone(),
        });
        self.peers_changed = true;
        self.journal_batch.push((
            self.clock.wall(),
            WatchEventKind::PeerAdded {
                name: n.name.clone(),
                address,
            },
        ));
        self.peers.insert(
            id,
            PeerSlot {
                config: n,
                address,
                dynamic,
                stats,
                state: State::Idle,
                since: self.clock.wall(),
                last_error: None,
                negotiated: None,
                local: None,
                in_rib: false,
                session: 0,
                limit_warned: Vec::new(),
                treated_as_withdrawn: [0; 2],
                disabled: false,
                bfd_held: false,
            },
        );
        self.hold_for_bfd(id);
        id
    }

    pub(super) fn stop_peer(&mut self, id: PeerId, sub: u8, message: Option<String>) {
        self.remove_peer(
            id,
            PeerCommand::Stop {
                subcode: sub,
                message,
            },
        );
    }

    /// Removes a peer, its session closed without a NOTIFICATION
    /// ([`PeerCommand::Close`]): this speaker restarts.
    pub(super) fn close_peer(&mut self, id: PeerId) {
        self.remove_peer(id, PeerCommand::Close);
    }

    /// Removes a peer and its routes; `end` ends its task.
    fn remove_peer(&mut self, id: PeerId, end: PeerCommand) {
        if let Some(p) = self.peers.remove(&id) {
            self.peers_changed = true;
            self.journal_batch.push((
                self.clock.wall(),
                WatchEventKind::PeerRemoved {
                    name: p.config.name,
                    address: p.address,
                },
            ));
            self.tell_peer(id, end);
            self.forget_restart(id);
            self.rib.peer_down(id);
        }
    }

    /// The peer table, sorted by address.
    pub(super) fn peer_status(&self) -> Vec<PeerStatus> {
        let mut v: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(id, p)| {
                let n = p.negotiated.as_deref();
                let caps = n
                    .map(|n| {
                        let mut c: Vec<String> = n.families.iter().map(|f| f.to_string()).collect();
                        if n.route_refresh {
                            c.push("route-refresh".into());
                        }
                        if n.enhanced_route_refresh {
                            c.push("enhanced-route-refresh".into());
                        }
                        if n.rx.four_octet_as {
                            c.push("four-octet-as".into());
                        }
                        if n.rx.add_path_ipv4 || n.rx.add_path_ipv6 {
                            c.push("add-path-receive".into());
                        }
                        if n.tx.add_path_ipv4 || n.tx.add_path_ipv6 {
                            c.push("add-path-send".into());
                        }
                        if n.rx.extended_message {
                            c.push("extended-message".into());
                        }
                        if n.peer_graceful_restart.is_some() {
                            c.push(if self.config.graceful_restart.enabled {
                                "graceful-restart".into()
                            } else {
                                "graceful-restart (peer)".into()
                            });
                        }
                        if n.peer_long_lived.is_some() {
                            let ours = self.config.graceful_restart.enabled
                                && !self.config.graceful_restart.long_lived_stale_time.is_zero();
                            c.push(if ours {
                                "long-lived-graceful-restart".into()
                            } else {
                                "long-lived-graceful-restart (peer)".into()
                            });
                        }
                        c
                    })
                    .unwrap_or_default();
                let families = n.map(|n| n.families.clone()).unwrap_or_default();
                let sum = |a: &[std::sync::atomic::AtomicU64; 6]| {
                    a.iter()
                        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
                        .sum()
                };
                PeerStatus {
                    name: p.config.name.clone(),
                    address: p.address,
                    asn: p.config.asn,
                    state: p.state,
                    since: p.since,
                    dynamic: p.dynamic,
                    last_error: p.last_error.clone(),
                    capabilities: caps,
                    hold_time: n.map(|n| n.hold_time),
                    peer_router_id: n.map(|n| n.peer_id),
                    local_address: p.local,
                    prefixes: families
                        .iter()
                        .map(|f| (*f, self.rib.counts(*id, *f)))
                        .collect(),
                    messages_received: sum(&p.stats.received),
                    messages_sent: sum(&p.stats.sent),
                    received_by_type: by_type(&p.stats.received),
                    sent_by_type: by_type(&p.stats.sent),
                    flaps: p.stats.flaps.load(Relaxed),
                    out_queued: p.stats.out_queued.load(Relaxed),
                    send_hold_expired: p.stats.send_hold_expired.load(Relaxed),
                    out_overflows: p.stats.out_overflows.load(Relaxed),
                    refreshes_answered: p.stats.refreshes_answered.load(Relaxed),
                    stale_routes: self.rib.stale_count(*id),
                    disabled: p.disabled,
                }
            })
            .collect();
        v.sort_by(|a, b| a.address.cmp(&b.address).then(a.name.cmp(&b.name)));
        v
    }
}

/// The ADD-PATH capability for a neighbour, if it asks for ADD-PATH at all.
pub(super) fn add_path_capability(n: &NeighborConfig) -> Option<Capability> {
    use crate::wire::capability::AddPathFamily;
    let mut bits = 0;
    if n.add_paths.receive {
        bits |= AddPathFamily::RECEIVE;
    }
    if n.add_paths.send.is_some() {
        bits |= AddPathFamily::SEND;
    }
    (bits != 0).then(|| {
        Capability::AddPath(
            n.families
                .iter()
                .filter(|af| **af == AfiSafi::IPV4_UNICAST || **af == AfiSafi::IPV6_UNICAST)
                .map(|af| AddPathFamily {
                    afi_safi: *af,
                    send_receive: bits,
                })
                .collect(),
        )
    })
}

pub(super) fn by_type(a: &[std::sync::atomic::AtomicU64; 6]) -> [u64; 6] {
    std::array::from_fn(|i| a[i].load(std::sync::atomic::Ordering::Relaxed))
}
