//! Where the speaker's time comes from: the system in production, a clock
//! the caller moves when a recorded run is replayed, so that timers fire
//! at the same points of the input stream.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// The speaker's clock: deadlines (graceful restart timers, the selection
/// deferral) are instants of it, and the journal and peer table are
/// stamped with its wall time.
#[derive(Debug, Clone)]
pub(crate) enum Clock {
    /// The system's clocks (tokio's monotonic one, which tests may pause).
    System {
        /// When the speaker started, for the offsets recorded with inputs.
        start: Instant,
    },
    /// Time moves only when told to.
    Manual {
        /// The zero of the replayed run.
        start: Instant,
        /// Time since then.
        elapsed: Duration,
    },
}

impl Clock {
    /// The system clock, started now.
    pub(crate) fn system() -> Clock {
        Clock::System {
            start: Instant::now(),
        }
    }

    /// A manual clock at zero.
    pub(crate) fn manual() -> Clock {
        Clock::Manual {
            start: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }

    /// Now, on the monotonic clock.
    pub(crate) fn now(&self) -> Instant {
        match self {
            Clock::System { .. } => Instant::now(),
            Clock::Manual { start, elapsed } => *start + *elapsed,
        }
    }

    /// Now, as a date. A replayed run starts at the epoch, so what it
    /// stamps does not depend on when it is replayed.
    pub(crate) fn wall(&self) -> SystemTime {
        match self {
            Clock::System { .. } => SystemTime::now(),
            Clock::Manual { elapsed, .. } => SystemTime::UNIX_EPOCH + *elapsed,
        }
    }

    /// Time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        match self {
            Clock::System { start } => start.elapsed(),
            Clock::Manual { elapsed, .. } => *elapsed,
        }
    }

    /// Moves a manual clock to `at` after its start (never backwards: a
    /// hand-written stream out of order must not undo expired timers).
    pub(crate) fn advance_to(&mut self, at: Duration) {
        if let Clock::Manual { elapsed, .. } = self
            && at > *elapsed
        {
            *elapsed = at;
        }
    }
}
