//! What BFD's view of a neighbour does to its BGP session (RFC 5882):
//! BFD Down ends the session at once with Cease / BFD Down (RFC 9384), and
//! a strict neighbour stays down until BFD is Up again.

use std::net::IpAddr;
use std::time::Duration;

use super::core::{Core, Output};
use crate::fsm::State;
use crate::rib::PeerId;
use crate::session::PeerCommand;
use crate::wire::error::subcode;

/// How soon a neighbour that is not strict may try again after a BFD Down:
/// its connection attempts fail on their own while the path is down.
const RETRY_AFTER_BFD_DOWN: Duration = Duration::from_secs(1);

impl Core {
    /// BFD says the neighbour at `address` is (not) alive.
    pub(super) fn liveness(&mut self, address: IpAddr, up: bool) {
        let was_up = if up {
            !self.bfd_up.insert(address)
        } else {
            self.bfd_up.remove(&address)
        };
        let ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.address == address && p.config.bfd.is_some() && !p.dynamic)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            let strict = p.config.bfd.is_some_and(|b| b.strict);
            if up {
                if p.bfd_held {
                    tracing::info!(peer = %address, "BFD is up: the held session may start");
                    p.bfd_held = false;
                    if !p.disabled {
                        self.out.push(Output::Peer(id, PeerCommand::Enable));
                    }
                }
                continue;
            }
            if !was_up && !strict {
                continue;
            }
            let live = !matches!(p.state, State::Idle | State::Connect | State::Active);
            if live {
                tracing::warn!(peer = %address, state = ?p.state, "BFD is down: ending the BGP session (Cease, BFD Down)");
                p.last_error = Some("BFD down: session ended (Cease, BFD Down)".into());
                self.peers_changed = true;
            }
            if strict {
                p.bfd_held = true;
            }
            if live || strict {
                self.out.push(Output::Peer(
                    id,
                    PeerCommand::Reset {
                        subcode: subcode::cease::BFD_DOWN,
                        restart_after: (!strict).then_some(RETRY_AFTER_BFD_DOWN),
                    },
                ));
            }
        }
    }

    /// A neighbour's BFD link changed in the configuration: no longer strict
    /// (or no BFD at all) lets a held session start; newly strict holds it
    /// unless BFD is Up.
    pub(super) fn bfd_link_changed(&mut self, id: PeerId) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let strict = p.config.bfd.is_some_and(|b| b.strict);
        if !strict && p.bfd_held {
            p.bfd_held = false;
            if !p.disabled {
                self.out.push(Output::Peer(id, PeerCommand::Enable));
            }
        } else if strict
            && !p.bfd_held
            && matches!(p.state, State::Idle | State::Connect | State::Active)
        {
            // A session already up is not torn down for a setting: BFD
            // going down ends it, as for any BFD link.
            self.hold_for_bfd(id);
        }
    }

    /// A new strict neighbour whose BFD is not Up yet starts held.
    pub(super) fn hold_for_bfd(&mut self, id: PeerId) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.config.bfd.is_some_and(|b| b.strict) && !self.bfd_up.contains(&p.address) {
            p.bfd_held = true;
            self.out.push(Output::Peer(
                id,
                PeerCommand::Reset {
                    subcode: subcode::cease::BFD_DOWN,
                    restart_after: None,
                },
            ));
        }
    }
}
