//! The outbound side of a connection.
//!
//! A writer task per connection takes what the peer task queues and writes
//! it, so a peer that stops reading (a zero TCP window) stalls only its
//! writer: the peer task goes on with its timers and commands. The queue
//! of UPDATEs is bounded ([`MAX_QUEUED`]): a peer that falls that far
//! behind is reset (Cease, Out of Resources) rather than holding memory
//! without end. And the send hold timer (RFC 9687) ends a connection that
//! has moved no byte for SendHoldTime while something waits to be sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Internal, PeerStats};

/// The most bytes of UPDATEs a connection may have waiting: several full
/// tables' worth of encoded routes (a million IPv4 prefixes encode to
/// ~20 MB), so only a peer that stopped reading reaches it.
pub(crate) const MAX_QUEUED: usize = 128 << 20;

/// How long a closed connection may still write what it was given (a
/// NOTIFICATION behind the last UPDATEs) before it is cut.
const LINGER: Duration = Duration::from_secs(5);

/// RFC 9687's default SendHoldTime: 8 minutes, or twice the negotiated
/// hold time if that is longer.
pub(crate) fn default_send_hold(negotiated_hold: Option<u16>) -> Duration {
    let twice = Duration::from_secs(2 * u64::from(negotiated_hold.unwrap_or(0)));
    twice.max(Duration::from_secs(8 * 60))
}

/// What the peer task and the writer share.
#[derive(Debug, Default)]
struct Shared {
    /// Bytes queued and not yet written.
    queued: AtomicUsize,
    /// When the writer last moved bytes, in milliseconds since the
    /// connection's start.
    progress_ms: AtomicU64,
}

/// The writer of one connection, as the peer task sees it.
pub(crate) struct Outbound {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
    start: Instant,
    /// When the queue last went from empty to not empty.
    pending_since: Instant,
}

/// Why bytes were not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// [`MAX_QUEUED`] would be passed.
    Full,
    /// The writer is gone (the connection failed).
    Closed,
}

impl Outbound {
    /// Starts the writer of connection `generation`; a write error is
    /// reported to `internal` as the connection closing.
    pub(crate) fn start(
        writer: OwnedWriteHalf,
        generation: u64,
        internal: mpsc::UnboundedSender<Internal>,
        stats: Arc<PeerStats>,
    ) -> Outbound {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let start = Instant::now();
        let task = tokio::spawn(write_queued(
            writer,
            rx,
            Arc::clone(&shared),
            stats,
            start,
            generation,
            internal,
        ));
        Outbound {
            tx,
            task,
            shared,
            start,
            pending_since: start,
        }
    }

    /// Queues `bytes`; `bounded`: refused if the queue would pass
    /// [`MAX_QUEUED`] (UPDATEs; the few control messages always go).
    pub(crate) fn queue(
        &mut self,
        bytes: Vec<u8>,
        bounded: bool,
        stats: &PeerStats,
    ) -> Result<(), Refused> {
        let before = self.shared.queued.load(Ordering::Acquire);
        if bounded && before + bytes.len() > MAX_QUEUED {
            return Err(Refused::Full);
        }
        let len = bytes.len();
        self.shared.queued.fetch_add(len, Ordering::AcqRel);
        stats.out_queued.fetch_add(len as u64, Ordering::Relaxed);
        if before == 0 {
            self.pending_since = Instant::now();
        }
        self.tx.send(bytes).map_err(|_| {
            self.shared.queued.fetch_sub(len, Ordering::AcqRel);
            stats.out_queued.fetch_sub(len as u64, Ordering::Relaxed);
            Refused::Closed
        })
    }

    /// When the send hold timer expires: SendHoldTime `hold` after the
    /// later of the last byte written and the queue filling; `None` while
    /// nothing waits.
    pub(crate) fn send_hold_deadline(&self, hold: Duration) -> Option<Instant> {
        if self.shared.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let progress =
            self.start + Duration::from_millis(self.shared.progress_ms.load(Ordering::Acquire));
        Some(progress.max(self.pending_since) + hold)
    }

    /// Closes the connection's sending side: what is queued is still
    /// written for [`LINGER`], then the writer is cut, whether or not the
    /// peer read it.
    pub(crate) fn close(self) {
        drop(self.tx);
        let task = self.task;
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            task.abort();
        });
    }
}

/// On the writer's end (done or cut), what it did not write no longer
/// counts as queued.
struct Unqueue {
    shared: Arc<Shared>,
    stats: Arc<PeerStats>,
}

impl Drop for Unqueue {
    fn drop(&mut self) {
        let left = self.shared.queued.swap(0, Ordering::AcqRel);
        self.stats
            .out_queued
            .fetch_sub(left as u64, Ordering::Relaxed);
    }
}

/// Writes what is queued, in order, recording each step forward; shuts the
/// connection down once the queue is closed and written.
async fn write_queued(
    mut writer: OwnedWriteHalf,
    queue: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
    stats: Arc<PeerStats>,
    start: Instant,
    generation: u64,
    internal: mpsc::UnboundedSender<Internal>,
) {
    let _unqueue = Unqueue {
        shared: Arc::clone(&shared),
        stats: Arc::clone(&stats),
    };
    // Declared after the guard, so dropped before it: once the queue is
    // closed, bytes the peer task queues are refused (and not counted),
    // and the guard then uncounts whatever is left.
    let mut rx = queue;
    while let Some(buf) = rx.recv().await {
        let mut at = 0;
        while at < buf.len() {
            match writer.write(&buf[at..]).await {
                Ok(0) | Err(_) => {
                    let _ = internal.send(Internal::Closed(generation));
                    return;
                }
                Ok(n) => {
                    at += n;
                    shared.queued.fetch_sub(n, Ordering::AcqRel);
                    stats.out_queued.fetch_sub(n as u64, Ordering::Relaxed);
                    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                    shared.progress_ms.store(ms, Ordering::Release);
                }
            }
        }
    }
    let _ = writer.shutdown().await;
}
