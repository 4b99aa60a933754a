//! The node's BFD sessions (the `bfd` crate's runtime), started once a
//! BGPPeer names a BFDProfile, and their state passed on to the speaker.

use bfd::State;
use bfd::runtime::{Bfd, Options, PeerSpec};
use bgpd::speaker::Speaker;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The runtime, once started, and the task that tells the speaker.
pub(crate) struct BfdGlue {
    running: Option<(Bfd, JoinHandle<()>)>,
    failed: bool,
    /// Where the sessions' status goes (metrics, the API, status).
    status: watch::Sender<crate::BfdStatus>,
}

impl BfdGlue {
    /// Nothing runs until a plan names a session.
    pub(crate) fn new(status: watch::Sender<crate::BfdStatus>) -> BfdGlue {
        BfdGlue {
            running: None,
            failed: false,
            status,
        }
    }

    /// Runs `specs` (starting the runtime the first time there are any).
    pub(crate) async fn apply(&mut self, specs: &[PeerSpec], speaker: &Speaker) {
        if self.running.is_none() {
            if specs.is_empty() || self.failed {
                return;
            }
            match Bfd::start(Options::default()).await {
                Ok(b) => {
                    let task = tokio::spawn(tell(b.clone(), speaker.clone(), self.status.clone()));
                    tracing::info!(sessions = specs.len(), "BFD started");
                    self.running = Some((b, task));
                }
                Err(e) => {
                    // BGP runs on without BFD; said once, not at every plan.
                    tracing::error!(error = %e, "cannot start BFD; peers run without it");
                    self.failed = true;
                    return;
                }
            }
        }
        if let Some((b, _)) = &self.running {
            b.set_sessions(specs.to_vec());
        }
    }

    /// Stops the sessions and the task. Each peer hears AdminDown, which
    /// RFC 5882 §3.2 says must not take its BGP session down: a SIGTERM is
    /// a restart, and graceful restart covers the routes (docs/bfd.md).
    pub(crate) async fn stop(self) {
        if let Some((b, task)) = self.running {
            task.abort();
            b.set_sessions(Vec::new());
            // Time for the runtime to send the AdminDown packets.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Tells the speaker each session's transitions to and from Up, and
/// passes the sessions' status on.
async fn tell(bfd: Bfd, speaker: Speaker, status: watch::Sender<crate::BfdStatus>) {
    let mut changes = bfd.subscribe();
    let mut published = bfd.subscribe_status();
    loop {
        let change = tokio::select! {
            c = changes.recv() => c,
            r = published.changed() => {
                if r.is_err() {
                    return;
                }
                let now = published.borrow_and_update().clone();
                status.send_replace(now);
                continue;
            }
        };
        match change {
            Ok(c) => {
                let up = c.to == State::Up;
                // The remote end going AdminDown is not a failure (RFC 5882
                // §3.2): a restarting petrel or an operator; BGP stays.
                let failed = c.from == State::Up && !up && c.remote != State::AdminDown;
                if (up || failed) && speaker.set_liveness(c.peer, up).is_err() {
                    return;
                }
            }
            Err(RecvError::Lagged(_)) => {
                // Changes were missed: say where every session is now.
                for s in bfd.status().iter() {
                    if speaker
                        .set_liveness(s.peer, s.session.state == State::Up)
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}
