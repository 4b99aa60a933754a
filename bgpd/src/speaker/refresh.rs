//! Answering ROUTE-REFRESH requests (RFC 2918, RFC 7313). Each answer is a
//! walk of the table for the peer's family, so a peer that asks again and
//! again is answered at most once per [`REFRESH_INTERVAL`] and family: the
//! requests that come meanwhile are merged into one answer at the end of
//! the interval.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::core::Core;
use crate::rib::PeerId;
use crate::wire::AfiSafi;

/// The shortest time between two answers to one peer for one family.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// When each peer and family was last answered, and the answers merged
/// requests wait for.
#[derive(Debug, Default)]
pub(crate) struct Refreshes {
    last: HashMap<(PeerId, AfiSafi), Instant>,
    due: HashMap<(PeerId, AfiSafi), Instant>,
}

impl Core {
    /// A peer asked for our routes of `af` again.
    pub(super) fn on_refresh_request(&mut self, id: PeerId, af: AfiSafi) {
        let now = self.clock.now();
        match self.refreshes.last.get(&(id, af)) {
            Some(t) if now < *t + REFRESH_INTERVAL => {
                let at = *t + REFRESH_INTERVAL;
                self.refreshes.due.entry((id, af)).or_insert(at);
            }
            _ => self.answer_refresh(id, af, now),
        }
    }

    fn answer_refresh(&mut self, id: PeerId, af: AfiSafi, now: Instant) {
        self.refreshes.last.insert((id, af), now);
        let out = self.rib.refresh(id, af);
        self.dispatch(out);
        if let Some(p) = self.peers.get(&id) {
            p.stats.refreshes_answered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Answers the merged requests whose interval is over.
    pub(super) fn answer_due_refreshes(&mut self) {
        let now = self.clock.now();
        let due: Vec<(PeerId, AfiSafi)> = self
            .refreshes
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| *k)
            .collect();
        for (id, af) in due {
            self.refreshes.due.remove(&(id, af));
            self.answer_refresh(id, af, now);
        }
    }

    /// When the next merged answer is due.
    pub(super) fn next_refresh(&self) -> Option<Instant> {
        self.refreshes.due.values().min().copied()
    }

    /// Forgets a peer's requests: its session is gone (a new one starts
    /// with the whole table anyway).
    pub(super) fn forget_refreshes(&mut self, id: PeerId) {
        self.refreshes.last.retain(|(p, _), _| *p != id);
        self.refreshes.due.retain(|(p, _), _| *p != id);
    }
}
