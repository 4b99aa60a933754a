//! Route policy: ordered rules that match routes and change or decide them.
//!
//! Import policies run on what a peer sends, before the decision process (the
//! RIB keeps what the peer sent, so a new policy applies without asking the
//! peer again). Export policies run on what a group of peers is sent, after
//! the protocol's own export rules. Pure functions of the route: no IO, no
//! state.
//!
//! Evaluation: rules run in order. A rule applies when all its matches hold
//! (a rule without matches always applies); its actions then run in order.
//! `Accept` and `Reject` end the evaluation; other actions change the route
//! and evaluation goes on with the next rule. A route that no `Accept` or
//! `Reject` decided gets the default: accepted, except that routes learned
//! over eBGP are not passed to eBGP peers (no transit) unless a rule accepted
//! them explicitly.

use ipnet::IpNet;

use crate::attrs::{Attrs, prepend};
use crate::wire::AfiSafi;
use crate::wire::attr::{Community, LargeCommunity, SegmentType};

/// A named, ordered list of rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Policy {
    /// Where it came from (BGPFilter names), for logs and status.
    pub name: String,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

/// One rule: when every match holds, the actions run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Rule {
    /// All must hold; none means always.
    pub matches: Vec<Match>,
    /// Run in order when the rule applies.
    pub actions: Vec<Action>,
}

/// A condition on a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// The prefix lies within `net` and its length is in `ge..=le`. Without
    /// `ge` and `le` the length must equal `net`'s; `ge` alone means up to the
    /// family's longest, `le` alone from `net`'s length.
    Prefix {
        /// The covering network.
        net: IpNet,
        /// Shortest length.
        ge: Option<u8>,
        /// Longest length.
        le: Option<u8>,
    },
    /// The route's family.
    Family(AfiSafi),
    /// The route carries this community.
    Community(Community),
    /// The route carries this large community.
    LargeCommunity(LargeCommunity),
    /// The AS path contains this ASN anywhere.
    AsPathContains(u32),
    /// The route originated in this AS (the last ASN of the path; an empty
    /// path is our own AS's, which never matches).
    OriginAs(u32),
    /// The AS path length (RFC 4271 counting: a set counts one) is within
    /// these bounds.
    AsPathLength {
        /// Shortest.
        min: Option<u32>,
        /// Longest.
        max: Option<u32>,
    },
    /// The next hop lies within this network.
    NextHop(IpNet),
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Take the route, as changed so far; stop.
    Accept,
    /// Drop the route; stop.
    Reject,
    /// Set LOCAL_PREF.
    SetLocalPref(u32),
    /// Set MULTI_EXIT_DISC.
    SetMed(u32),
    /// Add communities (once each).
    AddCommunities(Vec<Community>),
    /// Remove communities.
    RemoveCommunities(Vec<Community>),
    /// Add large communities (once each).
    AddLargeCommunities(Vec<LargeCommunity>),
    /// Remove large communities.
    RemoveLargeCommunities(Vec<LargeCommunity>),
    /// Prepend an ASN (our own when `None`) this many times.
    Prepend {
        /// The ASN.
        asn: Option<u32>,
        /// How often.
        count: u8,
    },
    /// Export only: our own address as next hop towards the peer.
    NextHopSelf,
}

/// How evaluation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A rule accepted the route.
    Accepted,
    /// A rule rejected the route.
    Rejected,
    /// No rule decided: the default applies.
    Default,
}

/// The result of running a policy on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// How it ended.
    pub verdict: Verdict,
    /// The changed attributes, if any action changed them.
    pub attrs: Option<Attrs>,
    /// A `NextHopSelf` action ran.
    pub next_hop_self: bool,
}

impl Match {
    fn holds(&self, prefix: &IpNet, a: &Attrs) -> bool {
        match self {
            Match::Prefix { net, ge, le } => {
                let len = prefix.prefix_len();
                let (lo, hi) = match (ge, le) {
                    (None, None) => (net.prefix_len(), net.prefix_len()),
                    (Some(g), None) => (*g, prefix.max_prefix_len()),
                    (None, Some(l)) => (net.prefix_len(), *l),
                    (Some(g), Some(l)) => (*g, *l),
                };
                net.contains(prefix) && (lo..=hi).contains(&len)
            }
            Match::Family(af) => {
                let mine = match prefix {
                    IpNet::V4(_) => AfiSafi::IPV4_UNICAST,
                    IpNet::V6(_) => AfiSafi::IPV6_UNICAST,
                };
                mine == *af
            }
            Match::Community(c) => a.communities.contains(c),
            Match::LargeCommunity(c) => a.large_communities.contains(c),
            Match::AsPathContains(asn) => a.as_path.contains(*asn),
            Match::OriginAs(asn) => origin_as(a) == Some(*asn),
            Match::AsPathLength { min, max } => {
                let n = a.as_path.path_length() as u32;
                min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m)
            }
            Match::NextHop(net) => a.next_hop.is_some_and(|nh| net.contains(&nh)),
        }
    }
}

/// The ASN a route originated in: the last ASN of the last sequence segment.
fn origin_as(a: &Attrs) -> Option<u32> {
    let last = a.as_path.segments.last()?;
    match last.kind {
        SegmentType::Sequence | SegmentType::ConfedSequence => last.asns.last().copied(),
        // An AS_SET at the end (aggregation): no single origin.
        _ => None,
    }
}

impl Policy {
    /// Runs the rules on a route. `local_asn` is what `Prepend` without an
    /// ASN uses.
    pub fn evaluate(&self, prefix: &IpNet, attrs: &Attrs, local_asn: u32) -> Evaluation {
        let mut changed: Option<Attrs> = None;
        let mut next_hop_self = false;
        for rule in &self.rules {
            let current = changed.as_ref().unwrap_or(attrs);
            if !rule.matches.iter().all(|m| m.holds(prefix, current)) {
                continue;
            }
            for action in &rule.actions {
                let verdict = match action {
                    Action::Accept => Some(Verdict::Accepted),
                    Action::Reject => Some(Verdict::Rejected),
                    _ => None,
                };
                if let Some(verdict) = verdict {
                    return Evaluation {
                        verdict,
                        attrs: changed.filter(|c| c != attrs),
                        next_hop_self,
                    };
                }
                if *action == Action::NextHopSelf {
                    next_hop_self = true;
                    continue;
                }
                // Copied only when something is about to change.
                let a = changed.get_or_insert_with(|| attrs.clone());
                match action {
                    Action::Accept | Action::Reject | Action::NextHopSelf => {}
                    Action::SetLocalPref(v) => a.local_pref = Some(*v),
                    Action::SetMed(v) => a.med = Some(*v),
                    Action::AddCommunities(cs) => {
                        for c in cs {
                            if !a.communities.contains(c) {
                                a.communities.push(*c);
                            }
                        }
                    }
                    Action::RemoveCommunities(cs) => a.communities.retain(|c| !cs.contains(c)),
                    Action::AddLargeCommunities(cs) => {
                        for c in cs {
                            if !a.large_communities.contains(c) {
                                a.large_communities.push(*c);
                            }
                        }
                    }
                    Action::RemoveLargeCommunities(cs) => {
                        a.large_communities.retain(|c| !cs.contains(c))
                    }
                    Action::Prepend { asn, count } => {
                        let asn = asn.unwrap_or(local_asn);
                        for _ in 0..*count {
                            prepend(&mut a.as_path, asn);
                        }
                    }
                }
            }
        }
        Evaluation {
            verdict: Verdict::Default,
            attrs: changed.filter(|c| c != attrs),
            next_hop_self,
        }
    }
}
