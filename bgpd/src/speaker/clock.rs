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
    /// The system's clocks (tokio's monotonic one, which tests may pause),
    /// read once per input ([`Clock::tick`]): everything the core decides
    /// while taking one input sees the same instant, the one recorded with
    /// the input, so a replay decides the same.
    System {
        /// When the speaker started, for the offsets recorded with inputs.
        start: Instant,
        /// The instant of the input being taken.
        now: Instant,
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
        let start = Instant::now();
        Clock::System { start, now: start }
    }

    /// Reads the system clock for the next input (a manual clock moves only
    /// when told to).
    pub(crate) fn tick(&mut self) {
        if let Clock::System { now, .. } = self {
            *now = Instant::now();
        }
    }

    /// A manual clock at zero.
    pub(crate) fn manual() -> Clock {
        Clock::Manual {
            start: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }

    /// Now, on the monotonic clock: the instant of the current input.
    pub(crate) fn now(&self) -> Instant {
        match self {
            Clock::System { now, .. } => *now,
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

    /// Time from the start to the current input.
    pub(crate) fn elapsed(&self) -> Duration {
        match self {
            Clock::System { start, now } => now.saturating_duration_since(*start),
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
