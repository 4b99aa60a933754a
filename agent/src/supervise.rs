//! Supervised tasks. The agent's long-running tasks (the FIB, the overlay,
//! the status writer, pod IPAM) are spawned through [`Supervisor::spawn`]:
//! when one ends by itself, with an error or a panic, that is logged and
//! recorded where `/readyz` reads it, so the node reports itself not ready
//! and says which task stopped and why, rather than running on without it.
//!
//! A panic ends only its task (the process is built to unwind): the BGP
//! sessions and the routes already in the kernel stay, which is the safer
//! choice for a router; a liveness probe that finds the speaker itself not
//! answering restarts the agent, and graceful restart covers that.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Tasks that stopped, by name, with why.
pub type Stopped = BTreeMap<&'static str, String>;

/// Spawns tasks and records the ones that stop.
#[derive(Debug, Clone)]
pub struct Supervisor {
    stopped: watch::Sender<Stopped>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            stopped: watch::channel(Stopped::new()).0,
        }
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

impl Supervisor {
    /// What `/readyz` watches.
    pub fn subscribe(&self) -> watch::Receiver<Stopped> {
        self.stopped.subscribe()
    }

    /// Runs `task` as `name`. Ending with `Ok` is the task's normal end
    /// (its inputs closed, the agent stopping); an error or a panic is
    /// recorded. Aborting the returned handle stops the task, recording
    /// nothing.
    pub fn spawn<F, E>(&self, name: &'static str, task: F) -> JoinHandle<()>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let stopped = self.stopped.clone();
        tokio::spawn(async move {
            let why = match AssertUnwindSafe(task).catch_unwind().await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(p) => format!("panicked: {}", panic_text(p.as_ref())),
            };
            tracing::error!(task = name, "task stopped: {why}");
            stopped.send_modify(|s| {
                s.insert(name, why);
            });
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_and_panics_are_recorded_and_a_normal_end_is_not() {
        let s = Supervisor::default();
        let ok = s.spawn("ok", async { Ok::<(), String>(()) });
        let err = s.spawn("err", async { Err::<(), _>("the kernel said no") });
        let boom = s.spawn("boom", async move {
            if std::hint::black_box(true) {
                panic!("index out of bounds");
            }
            Ok::<(), String>(())
        });
        for h in [ok, err, boom] {
            h.await.expect("the wrapper never panics");
        }
        let stopped = s.subscribe().borrow().clone();
        assert_eq!(
            stopped.get("err").map(String::as_str),
            Some("the kernel said no")
        );
        assert!(
            stopped["boom"].contains("index out of bounds"),
            "{stopped:?}"
        );
        assert!(!stopped.contains_key("ok"));
    }
}
