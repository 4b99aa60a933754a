//! The `status` of petrel's kinds: what petrel did with an object, or why it
//! could not, in the standard `metav1.Condition` shape.
//!
//! Every kind has a `Ready` condition. When an object is invalid, its reason
//! is [`REASON_INVALID`] and its message names the field and the fix, in the
//! same words the agent logs (`spec.holdTime: 2s is not allowed: ...`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The condition every kind has: whether petrel uses the object as written.
pub const CONDITION_READY: &str = "Ready";
/// `Ready` reason: the object is valid and in use.
pub const REASON_VALID: &str = "Valid";
/// `Ready` reason: a field is wrong; the message names it.
pub const REASON_INVALID: &str = "InvalidField";
/// `Ready` reason: the object refers to something missing (a BGPFilter, a
/// Secret); the message names it.
pub const REASON_MISSING_REFERENCE: &str = "MissingReference";
/// `Ready` reason: valid, but another object is used instead (a second
/// BGPConfiguration besides `default`).
pub const REASON_NOT_USED: &str = "NotUsed";

/// The Node condition each agent keeps on its own Node: whether every BGP
/// session the node should have is Established.
pub const NODE_CONDITION_BGP_READY: &str = "PetrelBGPReady";
/// `PetrelBGPReady` / `BGPNodeStatus` `Ready` reason: every session is up.
pub const REASON_ESTABLISHED: &str = "AllEstablished";
/// Reason: the node has no session to have (no peer selects it, no mesh).
pub const REASON_NO_PEERS: &str = "NoPeers";
/// Reason: some sessions are not Established; the message names them.
pub const REASON_SESSIONS_DOWN: &str = "SessionsDown";
/// Reason: there is no usable BGPConfiguration, so no speaker runs.
pub const REASON_NO_CONFIGURATION: &str = "NoConfiguration";

/// The field manager of an agent's status writes: one per node, so agents
/// never overwrite each other's entries, and the controller can give up a
/// deleted node's entries in its name.
pub fn agent_field_manager(node: &str) -> String {
    format!("petrel-agent/{node}")
}

/// The status of the kinds that only report conditions (`BGPConfiguration`,
/// `BGPFilter`, `BGPAdvertisement`, `IPPool`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionsStatus {
    /// `Ready`, and others as petrel learns to report them. One entry per
    /// type, so writers can apply theirs without touching the others'.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A BGP session's state (RFC 4271 section 8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SessionState {
    /// Not trying, or waiting before the next try.
    Idle,
    /// Connecting.
    Connect,
    /// Waiting for the peer to connect.
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for KEEPALIVE.
    OpenConfirm,
    /// Up: routes are exchanged.
    Established,
}

/// `BGPPeer.status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeerStatus {
    /// `Ready`: the peer's spec is valid and its references exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// `ESTABLISHED/TOTAL established` over `nodes` ("2/3 established"),
    /// for `kubectl get bgppeers`. Written by the controller, the one writer
    /// that sees every node's entry.
    pub summary: Option<String>,
    /// One entry per session: per node that peers with this peer, and for a
    /// `listenRange` per neighbour connected from the range. Each agent
    /// applies its own node's entries (keyed by node and address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into(), "address".into()]))]
    pub nodes: Vec<BgpPeerNodeStatus>,
}

impl BgpPeerStatus {
    /// The summary of `nodes`: `"2/3 established"`, or `"no sessions"`.
    pub fn summarize(&self) -> String {
        if self.nodes.is_empty() {
            return "no sessions".into();
        }
        let up = self
            .nodes
            .iter()
            .filter(|n| n.state == SessionState::Established)
            .count();
        format!("{up}/{} established", self.nodes.len())
    }
}

/// One session of a `BGPPeer`, as the node running it sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeerNodeStatus {
    /// The node's name.
    pub node: String,
    /// The neighbour's address: `peerIP`, a neighbour connected from a
    /// `listenRange`, or the range itself while none is.
    pub address: String,
    /// The session's state.
    pub state: SessionState,
    /// When the session last reached Established (absent while it is not).
    pub established_since: Option<Time>,
    /// Prefixes the peer sent that are held (before import policy).
    pub prefixes_received: Option<u64>,
    /// Of those, the ones import policy accepted.
    pub prefixes_accepted: Option<u64>,
    /// Prefixes sent to the peer.
    pub prefixes_advertised: Option<u64>,
    /// The last error: a NOTIFICATION sent or received, a connection
    /// failure, a configuration problem for this node.
    pub last_error: Option<String>,
    /// The BFD session with the peer, when the BGPPeer names a BFDProfile.
    pub bfd: Option<BfdNodeStatus>,
}

/// A node's BFD session with a peer (RFC 5880), as `BGPPeer.status.nodes[].bfd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BfdNodeStatus {
    /// `up`, `init`, `down` or `admin-down`.
    pub state: String,
    /// Why the session last left Up (`none` if it never did).
    pub diagnostic: String,
    /// The peer's state, as it last said.
    pub remote_state: String,
    /// The interval this node sends at, in milliseconds (0: none).
    pub transmit_interval_ms: u32,
    /// How long the peer may stay silent, in milliseconds (0 until heard).
    pub detection_time_ms: u32,
    /// This node's discriminator and the peer's (0 until heard).
    pub local_discriminator: u32,
    /// The peer's discriminator.
    pub remote_discriminator: u32,
}

/// A condition of type `type_`, stamped `now`.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Puts `new` into `conditions`, replacing the one of its type. The
/// transition time stays as it was when the status did not change, as
/// Kubernetes' own `meta.SetStatusCondition` does, so it says since when a
/// condition holds rather than when it was last written. Returns whether
/// anything changed (writers skip the API call when nothing did).
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(old) => {
            let transition = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            let updated = Condition {
                last_transition_time: transition,
                ..new
            };
            if *old == updated {
                false
            } else {
                *old = updated;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("in range"))
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let mut cs = Vec::new();
        assert!(set_condition(
            &mut cs,
            condition(CONDITION_READY, true, REASON_VALID, "ok", Some(1), at(10))
        ));
        assert!(
            !set_condition(
                &mut cs,
                condition(CONDITION_READY, true, REASON_VALID, "ok", Some(1), at(20))
            ),
            "the same condition again is no change"
        );
        assert_eq!(cs[0].last_transition_time, at(10));
        assert!(set_condition(
            &mut cs,
            condition(CONDITION_READY, true, REASON_VALID, "ok", Some(2), at(30))
        ));
        assert_eq!(cs[0].observed_generation, Some(2));
        assert_eq!(cs[0].last_transition_time, at(10), "status unchanged");
        assert!(set_condition(
            &mut cs,
            condition(
                CONDITION_READY,
                false,
                REASON_INVALID,
                "spec.holdTime: 2s is not allowed",
                Some(3),
                at(40)
            )
        ));
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].status, "False");
        assert_eq!(cs[0].last_transition_time, at(40));
    }

    #[test]
    fn the_peer_summary_counts_established_sessions() {
        let entry = |node: &str, state| BgpPeerNodeStatus {
            node: node.into(),
            address: "10.0.0.1".into(),
            state,
            established_since: None,
            prefixes_received: None,
            prefixes_accepted: None,
            prefixes_advertised: None,
            last_error: None,
            bfd: None,
        };
        let mut s = BgpPeerStatus::default();
        assert_eq!(s.summarize(), "no sessions");
        s.nodes = vec![
            entry("a", SessionState::Established),
            entry("b", SessionState::Active),
            entry("c", SessionState::Established),
        ];
        assert_eq!(s.summarize(), "2/3 established");
    }
}
