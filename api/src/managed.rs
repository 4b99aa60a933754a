//! Peers and routes added through the API (`PeerService.AddPeer`,
//! `RibService.AddPath`), kept apart from the configuration so that a reload
//! of the source never removes them. They live in memory: an agent restart
//! forgets them, as it forgets any API client's session.
//!
//! The API changes them under a short mutex (never held across an await and
//! never touched by UPDATE processing) and wakes the agent, which merges them
//! into the next plan it applies.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bgpd::speaker::LocalRoute;
use crds::BgpPeerSpec;
use ipnet::IpNet;
use model::{Named, Origin, Problem, Snapshot};
use planner::Plan;
use planner::advertise::{Intent, IntentKind};
use tokio::sync::watch;

/// A peer added through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedPeer {
    /// Its settings, as a BGPPeer spec.
    pub spec: BgpPeerSpec,
    /// Its TCP-MD5 password (a BGPPeer would name a Secret instead).
    pub password: Option<bgpd::speaker::Password>,
}

/// What API clients added.
#[derive(Debug, Default, Clone)]
pub struct Managed {
    /// Peers by name.
    pub peers: BTreeMap<String, ManagedPeer>,
    /// Routes per client, by prefix.
    pub paths: BTreeMap<String, BTreeMap<IpNet, LocalRoute>>,
}

/// The shared state and the agent's wake-up.
#[derive(Debug, Clone)]
pub struct ManagedHandle {
    state: Arc<Mutex<Managed>>,
    changed: watch::Sender<u64>,
}

impl ManagedHandle {
    /// Empty state, and the receiver the agent waits on.
    pub fn new() -> (ManagedHandle, watch::Receiver<u64>) {
        let (changed, rx) = watch::channel(0);
        (
            ManagedHandle {
                state: Arc::new(Mutex::new(Managed::default())),
                changed,
            },
            rx,
        )
    }

    /// The state, to read or change; call [`ManagedHandle::notify`] after a
    /// change.
    pub fn lock(&self) -> MutexGuard<'_, Managed> {
        // A panic while holding the lock leaves plain data behind; it stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the agent to apply the state.
    pub fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> Managed {
        self.lock().clone()
    }
}

/// The origin of objects added through the API.
pub fn api_origin() -> Origin {
    Origin {
        file: "api".into(),
        document: 0,
    }
}

/// Adds the API's peers and routes to a plan. A peer whose name or address a
/// configured peer has, or a route the node already originates, yields to
/// the configuration and is reported.
pub fn merge(plan: &mut Plan, managed: &Managed, snapshot: &Snapshot) -> Vec<Problem> {
    let mut problems = Vec::new();
    let asn = plan.speaker.asn;
    let router_id = plan.speaker.router_id;
    for (name, peer) in &managed.peers {
        let spec = &peer.spec;
        let named = Named {
            name: name.clone(),
            origin: api_origin(),
            spec: spec.clone(),
        };
        let clash = plan.speaker.neighbors.iter().find(|n| {
            n.name == *name
                || matches!((&n.address, spec.peer_ip),
                    (bgpd::speaker::NeighborAddress::Address(a), Some(b)) if *a == b)
        });
        let problem = |message: String| Problem {
            origin: "API".into(),
            object: Some(format!("peer {name}")),
            field: None,
            message,
        };
        if let Some(c) = clash {
            problems.push(problem(format!(
                "peer {} already has this name or address; this one is not used",
                c.name
            )));
            continue;
        }
        match planner::neighbor(&named, snapshot, asn, router_id) {
            Ok(mut n) => {
                n.password = peer.password.clone();
                // Advertisements' limits and attributes, and the mesh rule,
                // hold for API peers as for configured ones.
                planner::prepend_export(&mut n, plan.api_peer_rules.clone());
                plan.speaker.neighbors.push(n);
            }
            Err(e) => {
                problems.push(problem(format!("{e}; not used")));
            }
        }
    }
    for (client, routes) in &managed.paths {
        for (prefix, route) in routes {
            if plan.speaker.originate.iter().any(|r| r.prefix == *prefix) {
                problems.push(Problem {
                    origin: "API".into(),
                    object: Some(format!("path {prefix} of client {client}")),
                    field: None,
                    message: "the node originates this prefix already; the API's is not used"
                        .into(),
                });
                continue;
            }
            plan.speaker.originate.push(route.clone());
            plan.intents.push(Intent {
                prefix: *prefix,
                kind: IntentKind::ApiPath,
                service: Some(client.clone()),
                advertised: true,
                reason: format!("added through the API by {client}"),
                peers: None,
            });
        }
    }
    problems
}
