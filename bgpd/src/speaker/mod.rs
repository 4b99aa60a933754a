//! The speaker: one task that owns the RIB and the peer registry, fed by the
//! peer tasks and the listeners, driven by a typed handle.
//!
//! ```text
//!  Speaker (handle) ──Command──► speaker task ◄──(id, PeerEvent)── peer tasks
//!  listeners ──Accepted(stream)──►    │  owns Rib, peers, config
//!                                     └──PeerCommand::Send──► peer tasks
//! ```
//!
//! No lock guards routing state: the task owns it, and queries (peers, routes)
//! are answered by the task itself between events.
//!
//! Files, one concept each:
//! - `config`: what the speaker is told to do ([`SpeakerConfig`] and its parts).
//! - `view`: what it tells its callers ([`PeerStatus`], [`RouteView`], ...).
//! - `handle`: the [`Speaker`] handle and the commands it sends the task.
//! - `task`: the task's state and run loop: batching, command priority,
//!   flushing.
//! - `events`: what each peer event does.
//! - `peers`: the peer table: spawning, stopping, operator actions, status.
//! - `reconfigure`: applying a new configuration, listeners and TCP-MD5 keys.
//! - `graceful`: graceful restart, both roles: the capability offered,
//!   stale and long-lived stale routes and their timers, selection deferral
//!   after our own restart, and the initial convergence.
//! - `queries`: read-only answers (routes, Adj-RIBs, explanations).

mod clock;
mod config;
mod core;
mod events;
mod forms;
mod graceful;
mod handle;
mod listeners;
mod peers;
mod queries;
mod reconfigure;
pub mod record;
pub mod replay;
mod task;
mod view;

pub use config::{
    AddPaths, GracefulRestartConfig, LocalRoute, MaxPrefixes, MaxPrefixesAction, NeighborAddress,
    NeighborConfig, RestartState, SpeakerConfig,
};
pub use handle::{ResetKind, Speaker, SpeakerError};
pub use view::{
    AdjRibSide, CandidateView, FibEvent, FibQuery, PathView, PeerStatus, RouteExplanation,
    RouteFilter, RouteView, SpeakerSummary,
};
