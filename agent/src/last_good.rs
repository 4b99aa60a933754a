//! Keeping the last valid version of a BGPPeer in force.
//!
//! An edit that makes a BGPPeer invalid (a field the API server let
//! through and the planner refuses, or a document that no longer parses)
//! would otherwise drop the peer, and its session with it. Instead the
//! version that was last valid is planned in its place, and the problem is
//! reported, saying so. A BGPPeer that is deleted goes: only one that is
//! named invalid is kept.

use std::collections::BTreeMap;

use crds::BgpPeerSpec;
use model::{Named, Problem, Snapshot};

/// The BGPPeers of the last plan, by name.
#[derive(Debug, Default)]
pub(crate) struct LastGood {
    peers: BTreeMap<String, Named<BgpPeerSpec>>,
}

/// What [`LastGood::restore`] put back: the names, to word their problems.
pub(crate) type Restored = Vec<String>;

fn peer_named(p: &Problem) -> Option<&str> {
    p.object.as_deref()?.strip_prefix("BGPPeer/")
}

impl LastGood {
    /// Puts back into `snapshot` the last valid version of every BGPPeer
    /// that `problems` name and that has one different from what the
    /// snapshot holds now.
    pub(crate) fn restore(&self, snapshot: &mut Snapshot, problems: &[Problem]) -> Restored {
        let mut restored = Vec::new();
        for name in problems.iter().filter_map(peer_named) {
            let Some(good) = self.peers.get(name) else {
                continue;
            };
            if restored.iter().any(|r| r == name) {
                continue;
            }
            match snapshot.peers.iter_mut().find(|p| p.name == name) {
                Some(now) if now.spec == good.spec => continue,
                Some(now) => *now = good.clone(),
                None => snapshot.peers.push(good.clone()),
            }
            restored.push(name.to_string());
        }
        restored
    }

    /// The problems of a plan made again after [`LastGood::restore`]:
    /// those of the first (`before`, the put-back peers' worded to say
    /// their last valid version stays in force), and any new in the second
    /// (`after`; about a put-back peer only if its last valid version no
    /// longer plans either).
    pub(crate) fn word(
        restored: &Restored,
        before: Vec<Problem>,
        after: Vec<Problem>,
    ) -> Vec<Problem> {
        let mut out: Vec<Problem> = before
            .into_iter()
            .map(|mut p| {
                if peer_named(&p).is_some_and(|n| restored.iter().any(|r| r == n)) {
                    p.message = format!(
                        "{}; the last valid version of this BGPPeer stays in force",
                        p.message.trim_end_matches("; this peer is skipped")
                    );
                }
                p
            })
            .collect();
        for p in after {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// Remembers the BGPPeers of `snapshot` that `problems` do not name.
    pub(crate) fn remember(&mut self, snapshot: &Snapshot, problems: &[Problem]) {
        let bad: Vec<&str> = problems.iter().filter_map(peer_named).collect();
        self.peers = snapshot
            .peers
            .iter()
            .filter(|p| !bad.contains(&p.name.as_str()))
            .map(|p| (p.name.clone(), p.clone()))
            .chain(
                // A peer still invalid keeps its last valid version.
                self.peers
                    .iter()
                    .filter(|(n, _)| bad.contains(&n.as_str()))
                    .map(|(n, p)| (n.clone(), p.clone())),
            )
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Origin;

    fn peer(name: &str, asn: u32) -> Named<BgpPeerSpec> {
        Named {
            name: name.into(),
            origin: Origin::api("BGPPeer", None, name),
            spec: BgpPeerSpec {
                as_number: Some(asn),
                ..BgpPeerSpec::default()
            },
        }
    }

    fn problem(name: &str) -> Problem {
        Problem {
            origin: "test".into(),
            object: Some(format!("BGPPeer/{name}")),
            field: Some("spec.keepaliveTime".into()),
            message: "too long; this peer is skipped".into(),
        }
    }

    #[test]
    fn an_invalid_peer_is_put_back_and_a_deleted_one_is_not() {
        let mut lg = LastGood::default();
        let good = Snapshot {
            peers: vec![peer("a", 1), peer("b", 2)],
            ..Snapshot::default()
        };
        lg.remember(&good, &[]);
        // a edited into something invalid; b deleted.
        let mut now = Snapshot {
            peers: vec![peer("a", 9)],
            ..Snapshot::default()
        };
        let restored = lg.restore(&mut now, &[problem("a")]);
        assert_eq!(restored, ["a"]);
        assert_eq!(now.peers, vec![peer("a", 1)]);
        let worded = LastGood::word(&restored, vec![problem("a")], Vec::new());
        assert!(
            worded[0].message.contains("last valid version"),
            "{worded:?}"
        );
        assert!(!worded[0].message.contains("skipped"), "{worded:?}");
        lg.remember(&now, &worded);
        // Still invalid next time: still the same last valid version.
        let mut again = Snapshot {
            peers: vec![peer("a", 9)],
            ..Snapshot::default()
        };
        assert_eq!(lg.restore(&mut again, &[problem("a")]), ["a"]);
        assert_eq!(again.peers, vec![peer("a", 1)]);
    }
}
