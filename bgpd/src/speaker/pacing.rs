//! Listings paced while routing is busy.
//!
//! A page of a whole-table listing (`ListRoutes`, the Adj-RIBs) costs the
//! RIB owner a few milliseconds, and the API and its client several times
//! that to encode and decode. Cut into pages, a listing no longer delays a
//! read behind it; but back-to-back listings during a full-table ingest
//! still took half of a two-core machine and made the ingest twice as slow
//! (docs/performance.md). So while the RIB owner is busy with routing, the
//! pages of all listings together are served at most one per
//! [`BUSY_PAGE_INTERVAL`]; when it is not, at once. Reads that are not
//! listings (a prefix lookup, ExplainRoute, the summary) are never paced.
//!
//! Busy means the owner spent at least [`BUSY_SHARE`] of the last
//! [`WINDOW`] on peer events and flushes, so a trickle of updates does not
//! count as busy and a listing on a quiet router runs at full speed.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// While routing is busy, listings get one page per this long: with pages
/// of about 4,000 routes at a million, some 4,000 routes a second. Encoding
/// and decoding a listed route costs the API and its client ~15 µs, so
/// this is a few percent of a core; a page every 250 ms still made a
/// full-table ingest 7-15% slower on two cores (docs/performance.md).
pub(super) const BUSY_PAGE_INTERVAL: Duration = Duration::from_secs(1);

/// The window over which the owner's routing work is measured.
pub(super) const WINDOW: Duration = Duration::from_millis(100);

/// The share of a window spent on routing from which the owner is busy.
pub(super) const BUSY_SHARE: f64 = 0.1;

/// Pages waiting for their turn, and what decides that turn.
#[derive(Debug)]
pub(super) struct Pacer<T> {
    waiting: VecDeque<T>,
    /// Where the current window started, and the routing work in it.
    window: Option<(Instant, Duration)>,
    /// The share of the window before the current one spent on routing.
    last_share: f64,
    /// When the last page was served while busy.
    last_page: Option<Instant>,
}

impl<T> Default for Pacer<T> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
            window: None,
            last_share: 0.0,
            last_page: None,
        }
    }
}

impl<T> Pacer<T> {
    /// Records `took` of routing work that ended at `now`.
    pub(super) fn worked(&mut self, now: Instant, took: Duration) {
        self.roll(now);
        let (_, work) = self.window.get_or_insert((now, Duration::ZERO));
        *work += took;
    }

    /// Starts a new window once the current one is over; a window with no
    /// work in it at all leaves a share of zero behind.
    fn roll(&mut self, now: Instant) {
        if let Some((start, work)) = self.window
            && now >= start + WINDOW
        {
            let idle_windows = (now - start).as_nanos() / WINDOW.as_nanos();
            self.last_share = if idle_windows > 1 {
                0.0
            } else {
                work.as_secs_f64() / WINDOW.as_secs_f64()
            };
            self.window = Some((now, Duration::ZERO));
        }
    }

    /// Whether routing is busy at `now`.
    pub(super) fn busy(&self, now: Instant) -> bool {
        match self.window {
            None => false,
            Some((start, work)) => {
                let elapsed = now.saturating_duration_since(start);
                if elapsed >= WINDOW * 2 {
                    false
                } else if elapsed >= WINDOW {
                    work.as_secs_f64() >= BUSY_SHARE * WINDOW.as_secs_f64()
                } else {
                    self.last_share >= BUSY_SHARE
                        || work.as_secs_f64() >= BUSY_SHARE * WINDOW.as_secs_f64()
                }
            }
        }
    }

    /// When the first waiting page may be served (`None`: none waits):
    /// at its turn, or when routing would stop being busy if no more work
    /// came, whichever is first. Never `now` unless [`Pacer::take`] would
    /// serve a page now, so a loop that waits for it does not spin.
    pub(super) fn due(&self, now: Instant) -> Option<Instant> {
        self.waiting.front()?;
        if !self.busy(now) {
            return Some(now);
        }
        let turn = self.last_page.map_or(now, |t| t + BUSY_PAGE_INTERVAL);
        Some(turn.min(self.quiet_at(now)).max(now))
    }

    /// When [`Pacer::busy`] turns false if no work comes after `now` (it
    /// is busy at `now`).
    fn quiet_at(&self, now: Instant) -> Instant {
        let Some((start, work)) = self.window else {
            return now;
        };
        let elapsed = now.saturating_duration_since(start);
        let this_busy = work.as_secs_f64() >= BUSY_SHARE * WINDOW.as_secs_f64();
        if elapsed < WINDOW && !this_busy {
            // Busy by the last window's share alone: until this one ends.
            start + WINDOW
        } else {
            start + WINDOW * 2
        }
    }

    /// A listing's page asks to be read: it is handed back to be served at
    /// once if its turn has come and no other waits, or kept.
    pub(super) fn offer(&mut self, page: T, now: Instant) -> Option<T> {
        if self.waiting.is_empty() && self.turn(now) {
            return Some(page);
        }
        self.waiting.push_back(page);
        None
    }

    /// The first waiting page, if its turn has come.
    pub(super) fn take(&mut self, now: Instant) -> Option<T> {
        if self.waiting.is_empty() || !self.turn(now) {
            return None;
        }
        self.waiting.pop_front()
    }

    /// Whether a page may be read now; if so, the turn is used.
    fn turn(&mut self, now: Instant) -> bool {
        if !self.busy(now) {
            return true;
        }
        if self.last_page.is_some_and(|t| now < t + BUSY_PAGE_INTERVAL) {
            return false;
        }
        self.last_page = Some(now);
        true
    }

    /// How many pages wait.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Routing that takes `share` of every window from `from` for `windows`
    /// windows, in slices of a millisecond.
    fn work(p: &mut Pacer<u32>, from: Instant, windows: u32, share: f64) -> Instant {
        let mut t = from;
        let slices = (WINDOW.as_millis() as f64 * share) as u32;
        for _ in 0..windows {
            for i in 0..WINDOW.as_millis() as u32 {
                t += MS;
                if i < slices {
                    p.worked(t, MS);
                }
            }
        }
        t
    }

    #[test]
    fn a_quiet_router_serves_every_page_at_once() {
        let mut p = Pacer::default();
        let t0 = Instant::now();
        let t = work(&mut p, t0, 5, 0.05);
        for i in 0..100 {
            assert_eq!(p.offer(i, t), Some(i), "page {i}");
        }
        assert_eq!(p.waiting(), 0);
        assert_eq!(p.due(t), None);
    }

    #[test]
    fn a_busy_router_serves_one_page_per_interval_in_order() {
        let mut p = Pacer::default();
        let t0 = Instant::now();
        let t = work(&mut p, t0, 3, 0.6);
        assert!(p.busy(t));
        assert_eq!(p.offer(1, t), Some(1), "the first page goes at once");
        assert_eq!(p.offer(2, t), None);
        assert_eq!(p.offer(3, t), None);
        assert_eq!(p.take(t + 10 * MS), None);
        // Routing stays busy: the next page waits for its turn.
        let now = work(&mut p, t, 2, 0.6);
        let due = p.due(now).expect("a page waits");
        assert!(due > now && due <= t + BUSY_PAGE_INTERVAL);
        assert_eq!(p.take(now), None);
        // Busy routing for 10 intervals serves one page per interval.
        let windows = (BUSY_PAGE_INTERVAL.as_millis() / WINDOW.as_millis()) as u32;
        let mut now = now;
        let mut served = vec![];
        for i in 4..40 {
            p.offer(i, now);
        }
        for _ in 0..10 * windows {
            now = work(&mut p, now, 1, 0.6);
            served.extend(p.take(now));
        }
        assert!(
            (9..=11).contains(&served.len()),
            "{} pages in 10 intervals of busy routing",
            served.len()
        );
        assert_eq!(served, (2..2 + served.len() as u32).collect::<Vec<_>>());
    }

    #[test]
    fn a_trickle_of_updates_is_not_busy() {
        let mut p = Pacer::default();
        let t = work(&mut p, Instant::now(), 5, BUSY_SHARE / 2.0);
        assert!(!p.busy(t));
        assert_eq!(p.offer(1, t), Some(1));
        assert_eq!(p.offer(2, t), Some(2));
    }

    #[test]
    fn pages_resume_at_full_speed_once_routing_quietens() {
        let mut p = Pacer::default();
        let t0 = Instant::now();
        let t = work(&mut p, t0, 3, 0.9);
        assert_eq!(p.offer(1, t), Some(1));
        for i in 2..10 {
            assert_eq!(p.offer(i, t), None);
        }
        // No work any more: within two windows every page goes.
        let due = p.due(t).expect("pages wait");
        assert!(due <= t + 2 * WINDOW);
        let later = t + 2 * WINDOW;
        assert!(!p.busy(later));
        let served: Vec<u32> = std::iter::from_fn(|| p.take(later)).collect();
        assert_eq!(served, (2..10).collect::<Vec<_>>());
    }
}
