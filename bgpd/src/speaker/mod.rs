//! The speaker: one task that owns the RIB and the peer registry, fed by the
//! peer tasks and the listeners, driven by a typed handle.
//!
//! ```text
//!  Speaker (handle) ──Command──► speaker task ◄──(id, PeerEvent)── peer tasks
//!  listeners ──Accepted(stream)──►    │ owns the core, the peer tasks'
//!                                     │ handles, listeners, FIB, journal
//!                           Input ──► core ──► Output (PeerCommand::Send...)
//! ```
//!
//! No lock guards routing state: the task owns it, and queries (peers, routes)
//! are answered by the task itself between events.
//!
//! The task is split in two so that a run can be replayed: the core
//! (`core`) holds the state and makes every decision, without IO, one typed
//! input at a time, on an injected clock; the task (`task`) does the IO and
//! decides when to take what (commands first, batches, flush slices). Every
//! input has a serde form, written as a JSON line when the speaker is started with
//! `Speaker::start_recording` (`petrel agent --record-speaker DIR`) ([`record`]); [`replay`] feeds such a recording to the
//! core without sockets and compares what it does with golden files.
//!
//! Files, one concept each:
//! - `config`: what the speaker is told to do ([`SpeakerConfig`] and its parts).
//! - `view`: what it tells its callers ([`PeerStatus`], [`RouteView`], ...).
//! - `handle`: the [`Speaker`] handle and the commands it sends the task.
//! - `task`: the IO side: the run loop (command priority, batching, flush
//!   slices), peer tasks, the FIB subscriber, the journal, the peer table.
//! - `listeners`: listening sockets and their TCP-MD5 keys.
//! - `core`: the state, the inputs it takes and the outputs it leaves.
//! - `clock`: the system clock, or a manual one for replays.
//! - `events`: what each peer event does.
//! - `peers`: the peer table: starting and stopping peers, operator actions,
//!   accepted connections, status.
//! - `reconfigure`: applying a new configuration.
//! - `liveness`: what BFD's view of a neighbour does to its session.
//! - `graceful`: graceful restart, both roles: the capability offered,
//!   stale and long-lived stale routes and their timers, selection deferral
//!   after our own restart, and the initial convergence.
//! - `pacing`: listings served a page at a time, slowly while routing is
//!   busy.
//! - `queries`: read-only answers (routes, Adj-RIBs, explanations).
//! - [`record`]: the serde form of the inputs, and the recorder.
//! - [`replay`]: replaying a recording, golden files.
//! - `forms`: serde forms of the codec's, RIB's and policy's types that
//!   the configuration and the inputs carry.

mod clock;
mod config;
mod core;
mod events;
mod forms;
mod graceful;
mod handle;
mod listeners;
mod liveness;
mod pacing;
mod peers;
mod queries;
mod reconfigure;
pub mod record;
mod refresh;
pub mod replay;
mod task;
mod view;

pub use config::{
    AddPaths, BfdLink, GracefulRestartConfig, LocalRoute, MaxPrefixes, MaxPrefixesAction,
    NeighborAddress, NeighborConfig, Password, RestartState, SpeakerConfig,
};
pub use handle::{ResetKind, Speaker, SpeakerError};
pub use view::{
    AdjRibSide, CandidateView, FibEvent, FibQuery, PathView, PeerStatus, RouteExplanation,
    RouteFilter, RouteView, RoutesPage, SpeakerSummary,
};
