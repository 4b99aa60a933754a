//! The event journal behind `WatchEvents`: peer state changes and best-path
//! changes, numbered, kept in a bounded buffer so a watcher that reconnects
//! with its last cursor misses nothing still buffered.
//!
//! ```text
//!  speaker task ──Record(batch)──► journal task ──broadcast──► watchers
//!                                   (ring buffer)  ◄─Subscribe(cursor)─
//! ```
//!
//! The speaker only hands over one batch per flush; numbering, buffering,
//! replay and fan-out happen in the journal's own task, so a slow or
//! reconnecting watcher never delays UPDATE processing.

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::fsm::State;
use crate::rib::Attrs;

/// Events kept for replay when no size is configured.
pub(crate) const DEFAULT_CAPACITY: usize = 65_536;

/// Live events a watcher may fall behind by before its stream ends with
/// [`WatchError::Lagged`] (it then resumes from the buffer).
const LIVE_CAPACITY: usize = 8_192;

/// Where a watcher is in the journal: the journal's epoch (new at every start
/// of the speaker, so a cursor from an earlier run is recognised) and the
/// event's number. Written `EPOCH-SEQ`, both in hexadecimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    /// Identifies one run of the speaker.
    pub epoch: u64,
    /// The event's number within the run, from 1.
    pub seq: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{:x}", self.epoch, self.seq)
    }
}

impl FromStr for Cursor {
    type Err = WatchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || WatchError::BadCursor(s.to_string());
        let (e, n) = s.split_once('-').ok_or_else(bad)?;
        Ok(Cursor {
            epoch: u64::from_str_radix(e, 16).map_err(|_| bad())?,
            seq: u64::from_str_radix(n, 16).map_err(|_| bad())?,
        })
    }
}

/// One journal entry.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// Its place in the journal; resume after it with this cursor.
    pub cursor: Cursor,
    /// When the speaker recorded it.
    pub time: SystemTime,
    /// What happened.
    pub kind: WatchEventKind,
}

/// What happened.
#[derive(Debug, Clone)]
pub enum WatchEventKind {
    /// A peer was configured, or a dynamic peer connected from a listen range.
    PeerAdded {
        /// Configuration name.
        name: String,
        /// Its address.
        address: IpAddr,
    },
    /// A peer was removed from the configuration (or a dynamic peer left).
    PeerRemoved {
        /// Configuration name.
        name: String,
        /// Its address.
        address: IpAddr,
    },
    /// A session changed state.
    PeerState {
        /// Configuration name.
        name: String,
        /// Its address.
        address: IpAddr,
        /// The state before.
        from: State,
        /// The state now.
        to: State,
        /// Why the last session or attempt ended, when it did.
        last_error: Option<String>,
    },
    /// A prefix's best path was computed again (after any change to its
    /// paths); `None` when no usable path is left.
    BestPath {
        /// The prefix.
        prefix: IpNet,
        /// The best path now.
        best: Option<BestPath>,
    },
}

/// A best path as the journal reports it.
#[derive(Debug, Clone)]
pub struct BestPath {
    /// The peer it came from; `None` when originated here.
    pub from: Option<IpAddr>,
    /// Its ADD-PATH identifier (0 without ADD-PATH).
    pub path_id: u32,
    /// Its attributes (shared with the RIB, not copied).
    pub attrs: Arc<Attrs>,
    /// Where the FIB forwards: the multipath set's next hops.
    pub next_hops: Vec<IpAddr>,
}

/// Why a watch cannot start or go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The cursor is not `EPOCH-SEQ` in hexadecimal.
    #[error("cursor {0:?} is not one this agent handed out (expected EPOCH-SEQ in hexadecimal)")]
    BadCursor(String),
    /// The cursor belongs to an earlier run of the speaker.
    #[error(
        "cursor {given} is from an earlier run of the agent (now {epoch:x}); list the current state again and watch from now"
    )]
    OtherRun {
        /// The cursor given.
        given: Cursor,
        /// This run's epoch.
        epoch: u64,
    },
    /// Events after the cursor were already dropped from the buffer.
    #[error(
        "events after cursor {given} are no longer buffered (the oldest kept is {oldest}); list the current state again and watch from now"
    )]
    Expired {
        /// The cursor given.
        given: Cursor,
        /// The oldest event still kept.
        oldest: Cursor,
    },
    /// The cursor is ahead of the journal.
    #[error("cursor {given} is ahead of the newest event ({newest})")]
    Ahead {
        /// The cursor given.
        given: Cursor,
        /// The newest event.
        newest: Cursor,
    },
    /// The watcher read too slowly and live events overtook it.
    #[error("the watcher fell behind after cursor {last}; resume from it")]
    Lagged {
        /// The last event delivered.
        last: Cursor,
    },
    /// The speaker stopped.
    #[error("the speaker is not running")]
    Stopped,
}

enum Msg {
    Record(Vec<(SystemTime, WatchEventKind)>),
    Subscribe(
        Option<Cursor>,
        oneshot::Sender<Result<Subscription, WatchError>>,
    ),
}

/// The speaker's side of the journal.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    tx: mpsc::UnboundedSender<Msg>,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Record(v) => write!(f, "Record({} events)", v.len()),
            Msg::Subscribe(c, _) => write!(f, "Subscribe({c:?})"),
        }
    }
}

impl Journal {
    /// Starts the journal task, keeping up to `capacity` events for replay.
    pub(crate) fn start(capacity: usize) -> Journal {
        let (tx, rx) = mpsc::unbounded_channel();
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()) << 32;
        tokio::spawn(run(rx, epoch, capacity.max(1)));
        Journal { tx }
    }

    /// Hands a batch to the journal (nothing when the batch is empty).
    pub(crate) fn record(&self, events: Vec<(SystemTime, WatchEventKind)>) {
        if !events.is_empty() {
            let _ = self.tx.send(Msg::Record(events));
        }
    }

    /// Starts a watch: everything after `after` (still buffered), then live
    /// events; with no cursor, live events only.
    pub(crate) async fn subscribe(&self, after: Option<Cursor>) -> Result<WatchStream, WatchError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Subscribe(after, tx))
            .map_err(|_| WatchError::Stopped)?;
        let s = rx.await.map_err(|_| WatchError::Stopped)??;
        Ok(WatchStream {
            replay: s.replay.into(),
            live: s.live,
            last: s.last,
            done: false,
        })
    }
}

struct Subscription {
    replay: Vec<Arc<WatchEvent>>,
    live: broadcast::Receiver<Arc<WatchEvent>>,
    last: Cursor,
}

/// A watcher's events: the buffered ones it asked for, then live ones.
#[derive(Debug)]
pub struct WatchStream {
    replay: VecDeque<Arc<WatchEvent>>,
    live: broadcast::Receiver<Arc<WatchEvent>>,
    last: Cursor,
    done: bool,
}

impl WatchStream {
    /// The next event; `None` once the speaker stopped. After an error the
    /// stream is over (resume with the error's cursor).
    pub async fn next(&mut self) -> Option<Result<Arc<WatchEvent>, WatchError>> {
        if self.done {
            return None;
        }
        if let Some(e) = self.replay.pop_front() {
            self.last = e.cursor;
            return Some(Ok(e));
        }
        loop {
            match self.live.recv().await {
                // Live events the replay already delivered are skipped.
                Ok(e) if e.cursor <= self.last => continue,
                Ok(e) => {
                    self.last = e.cursor;
                    return Some(Ok(e));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.done = true;
                    return Some(Err(WatchError::Lagged { last: self.last }));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Msg>, epoch: u64, capacity: usize) {
    let mut buffer: VecDeque<Arc<WatchEvent>> = VecDeque::with_capacity(capacity.min(4096));
    let mut next_seq: u64 = 1;
    let (live, _) = broadcast::channel(LIVE_CAPACITY);
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Record(batch) => {
                for (time, kind) in batch {
                    let e = Arc::new(WatchEvent {
                        cursor: Cursor {
                            epoch,
                            seq: next_seq,
                        },
                        time,
                        kind,
                    });
                    next_seq += 1;
                    if buffer.len() == capacity {
                        buffer.pop_front();
                    }
                    buffer.push_back(e.clone());
                    // No receiver is not an error: nobody watches.
                    let _ = live.send(e);
                }
            }
            Msg::Subscribe(after, reply) => {
                let newest = Cursor {
                    epoch,
                    seq: next_seq - 1,
                };
                let r = replay_after(&buffer, after, epoch, newest).map(|replay| Subscription {
                    replay,
                    // Subscribed in the same step as the replay is taken, so
                    // nothing falls between the two.
                    live: live.subscribe(),
                    last: after.unwrap_or(newest),
                });
                let _ = reply.send(r);
            }
        }
    }
}

fn replay_after(
    buffer: &VecDeque<Arc<WatchEvent>>,
    after: Option<Cursor>,
    epoch: u64,
    newest: Cursor,
) -> Result<Vec<Arc<WatchEvent>>, WatchError> {
    let Some(given) = after else {
        return Ok(Vec::new());
    };
    if given.epoch != epoch {
        return Err(WatchError::OtherRun { given, epoch });
    }
    if given.seq > newest.seq {
        return Err(WatchError::Ahead { given, newest });
    }
    let oldest = buffer.front().map_or(newest.seq + 1, |e| e.cursor.seq);
    // Resuming right before the oldest kept event loses nothing.
    if given.seq + 1 < oldest {
        return Err(WatchError::Expired {
            given,
            oldest: Cursor { epoch, seq: oldest },
        });
    }
    let skip = (given.seq + 1 - oldest) as usize;
    Ok(buffer.iter().skip(skip).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_event(n: u8) -> (SystemTime, WatchEventKind) {
        (
            SystemTime::now(),
            WatchEventKind::PeerAdded {
                name: format!("p{n}"),
                address: IpAddr::from([10, 0, 0, n]),
            },
        )
    }

    fn name(e: &WatchEvent) -> String {
        match &e.kind {
            WatchEventKind::PeerAdded { name, .. } => name.clone(),
            other => format!("{other:?}"),
        }
    }

    async fn next(s: &mut WatchStream) -> Arc<WatchEvent> {
        tokio::time::timeout(std::time::Duration::from_secs(5), s.next())
            .await
            .expect("an event within 5 s")
            .expect("stream open")
            .expect("no error")
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            epoch: 0xdead_beef,
            seq: 42,
        };
        assert_eq!(c.to_string(), "deadbeef-2a");
        assert_eq!("deadbeef-2a".parse::<Cursor>(), Ok(c));
        for bad in ["", "12", "x-1", "1-y", "1-2-3"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn a_watcher_that_resumes_misses_nothing_buffered() {
        let j = Journal::start(16);
        let mut first = j.subscribe(None).await.expect("subscribe");
        j.record((1..=3).map(peer_event).collect());
        let a = next(&mut first).await;
        assert_eq!(name(&a), "p1");
        // The watcher goes away after one event; three more happen.
        drop(first);
        j.record((4..=6).map(peer_event).collect());
        let mut again = j.subscribe(Some(a.cursor)).await.expect("resume");
        j.record(vec![peer_event(7)]);
        let got: Vec<String> = {
            let mut v = Vec::new();
            for _ in 0..6 {
                v.push(name(&*next(&mut again).await));
            }
            v
        };
        assert_eq!(got, ["p2", "p3", "p4", "p5", "p6", "p7"]);
    }

    #[tokio::test]
    async fn expired_foreign_and_future_cursors_are_refused() {
        let j = Journal::start(4);
        j.record((1..=10).map(peer_event).collect());
        let mut live = j.subscribe(None).await.expect("subscribe");
        j.record(vec![peer_event(11)]);
        let e = next(&mut live).await;
        let epoch = e.cursor.epoch;
        assert_eq!(e.cursor.seq, 11);
        // 8..=11 are kept: resuming after 7 loses nothing, after 6 it would.
        assert!(j.subscribe(Some(Cursor { epoch, seq: 7 })).await.is_ok());
        assert!(matches!(
            j.subscribe(Some(Cursor { epoch, seq: 6 })).await,
            Err(WatchError::Expired { .. })
        ));
        assert!(matches!(
            j.subscribe(Some(Cursor { epoch, seq: 12 })).await,
            Err(WatchError::Ahead { .. })
        ));
        assert!(matches!(
            j.subscribe(Some(Cursor {
                epoch: epoch ^ 1,
                seq: 3
            }))
            .await,
            Err(WatchError::OtherRun { .. })
        ));
    }

    #[tokio::test]
    async fn a_slow_watcher_is_told_where_to_resume() {
        let j = Journal::start(LIVE_CAPACITY * 2);
        let mut slow = j.subscribe(None).await.expect("subscribe");
        j.record(
            (0..LIVE_CAPACITY + 10)
                .map(|i| peer_event((i % 250) as u8))
                .collect(),
        );
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), slow.next())
            .await
            .expect("an answer");
        let Some(Err(WatchError::Lagged { last })) = first else {
            panic!("expected Lagged, got {first:?}");
        };
        // Resuming from there replays all of it from the buffer.
        let mut again = j.subscribe(Some(last)).await.expect("resume");
        let e = next(&mut again).await;
        assert_eq!(e.cursor.seq, 1);
        assert!(slow.next().await.is_none(), "a lagged stream is over");
    }
}
