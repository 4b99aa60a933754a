//! The Secrets BGPPeers name (`password.secretKeyRef`), read one by one by
//! name and never listed or watched: the agent needs no right to see the
//! other Secrets of its namespace, and the chart can name the only ones it
//! may read (RBAC `resourceNames`). Each is read again every
//! [`REREAD`] and at once when a BGPPeer names a new one, so a changed
//! password takes effect within that time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often each named Secret is read again.
pub const REREAD: Duration = Duration::from_secs(30);

/// What the reader task shares with the source.
pub(crate) struct NamedSecrets {
    /// The names BGPPeers use now.
    wanted: watch::Sender<BTreeSet<String>>,
    /// What was read, by name (a Secret that does not exist is absent).
    have: Arc<Mutex<BTreeMap<String, Arc<Secret>>>>,
    /// The names the last completed round read.
    read: watch::Receiver<BTreeSet<String>>,
}

impl NamedSecrets {
    /// Starts the reader for Secrets of `api`'s namespace; a change of what
    /// it read bumps `generation`.
    pub(crate) fn start(
        api: Api<Secret>,
        generation: Arc<watch::Sender<u64>>,
    ) -> (NamedSecrets, JoinHandle<()>) {
        let (wanted, mut wanted_rx) = watch::channel(BTreeSet::<String>::new());
        let (read_tx, read) = watch::channel(BTreeSet::<String>::new());
        let have: Arc<Mutex<BTreeMap<String, Arc<Secret>>>> = Arc::default();
        let shared = Arc::clone(&have);
        let task = tokio::spawn(async move {
            // Logged once per name and error, not every round.
            let mut failing: BTreeMap<String, String> = BTreeMap::new();
            loop {
                let names = wanted_rx.borrow_and_update().clone();
                let mut changed = false;
                for name in &names {
                    match api.get_opt(name).await {
                        Ok(found) => {
                            failing.remove(name);
                            let mut have = shared.lock().unwrap_or_else(|e| e.into_inner());
                            let now = found.map(Arc::new);
                            if have.get(name).map(|s| &s.data) != now.as_ref().map(|s| &s.data) {
                                changed = true;
                                match now {
                                    Some(s) => have.insert(name.clone(), s),
                                    None => have.remove(name),
                                };
                            }
                        }
                        // Kept as last read: a failed read is not a deletion.
                        Err(e) => {
                            let text = e.to_string();
                            if failing.get(name) != Some(&text) {
                                tracing::warn!(secret = %name, error = %text, "cannot read a Secret a BGPPeer names (may the agent get it?)");
                                failing.insert(name.clone(), text);
                            }
                        }
                    }
                }
                {
                    let mut have = shared.lock().unwrap_or_else(|e| e.into_inner());
                    let before = have.len();
                    have.retain(|n, _| names.contains(n));
                    changed |= have.len() != before;
                }
                if changed {
                    generation.send_modify(|g| *g += 1);
                }
                read_tx.send_replace(names);
                tokio::select! {
                    r = wanted_rx.changed() => if r.is_err() { return },
                    () = tokio::time::sleep(REREAD) => {}
                }
            }
        });
        (NamedSecrets { wanted, have, read }, task)
    }

    /// Asks for these names from now on.
    pub(crate) fn want(&self, names: BTreeSet<String>) {
        self.wanted.send_if_modified(|w| {
            let differs = *w != names;
            if differs {
                *w = names;
            }
            differs
        });
    }

    /// Whether a round has read every name wanted now.
    pub(crate) fn is_read(&self) -> bool {
        let wanted = self.wanted.borrow();
        self.read.borrow().is_superset(&wanted)
    }

    /// The Secrets read, of the names wanted now.
    pub(crate) fn current(&self) -> Vec<Arc<Secret>> {
        let wanted = self.wanted.borrow().clone();
        let have = self.have.lock().unwrap_or_else(|e| e.into_inner());
        have.iter()
            .filter(|(n, _)| wanted.contains(*n))
            .map(|(_, s)| Arc::clone(s))
            .collect()
    }
}
