//! Serde forms of the types the configuration and the recorded inputs
//! borrow from the codec, the RIB and the policy modules, which do not
//! depend on serde themselves. Each form converts both ways without loss.

use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::policy::{Action, Match, Policy, Rule};
use crate::rib::DecisionOptions;
use crate::wire::AfiSafi;
use crate::wire::attr::{Community, LargeCommunity};

/// A family as text: `ipv4-unicast`, `ipv6-unicast`, or `afi/safi`.
pub(crate) fn family_text(af: AfiSafi) -> String {
    match af {
        AfiSafi::IPV4_UNICAST | AfiSafi::IPV6_UNICAST => af.to_string(),
        _ => format!("{}/{}", af.afi, af.safi),
    }
}

/// Reads [`family_text`].
pub(crate) fn parse_family(s: &str) -> Option<AfiSafi> {
    match s {
        "ipv4-unicast" => Some(AfiSafi::IPV4_UNICAST),
        "ipv6-unicast" => Some(AfiSafi::IPV6_UNICAST),
        _ => {
            let (afi, safi) = s.split_once('/')?;
            Some(AfiSafi::new(afi.parse().ok()?, safi.parse().ok()?))
        }
    }
}

/// One family.
pub(crate) mod family {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(af: &AfiSafi, s: S) -> Result<S::Ok, S::Error> {
        family_text(*af).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AfiSafi, D::Error> {
        let text = String::deserialize(d)?;
        parse_family(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a family: {text:?}")))
    }
}

/// A list of families.
pub(crate) mod families {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[AfiSafi], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|af| family_text(*af))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AfiSafi>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| {
                parse_family(t)
                    .ok_or_else(|| serde::de::Error::custom(format!("not a family: {t:?}")))
            })
            .collect()
    }
}

/// Decision options.
pub(crate) mod decision {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Form {
        always_compare_med: bool,
        deterministic_med: bool,
    }

    pub(crate) fn serialize<S: Serializer>(o: &DecisionOptions, s: S) -> Result<S::Ok, S::Error> {
        Form {
            always_compare_med: o.always_compare_med,
            deterministic_med: o.deterministic_med,
        }
        .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<DecisionOptions, D::Error> {
        let f = Form::deserialize(d)?;
        Ok(DecisionOptions {
            always_compare_med: f.always_compare_med,
            deterministic_med: f.deterministic_med,
        })
    }
}

/// Communities, as their 32-bit values.
pub(crate) mod communities {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[Community], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(|c| c.0).collect::<Vec<_>>().serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Community>, D::Error> {
        Ok(Vec::<u32>::deserialize(d)?
            .into_iter()
            .map(Community)
            .collect())
    }
}

fn large_to(c: &LargeCommunity) -> [u32; 3] {
    [c.global_admin, c.local_data1, c.local_data2]
}

fn large_from([global_admin, local_data1, local_data2]: [u32; 3]) -> LargeCommunity {
    LargeCommunity {
        global_admin,
        local_data1,
        local_data2,
    }
}

/// Large communities, as three numbers each.
pub(crate) mod large_communities {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[LargeCommunity], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(large_to).collect::<Vec<_>>().serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<LargeCommunity>, D::Error> {
        Ok(Vec::<[u32; 3]>::deserialize(d)?
            .into_iter()
            .map(large_from)
            .collect())
    }
}

#[derive(Serialize, Deserialize)]
struct PolicyForm {
    name: String,
    rules: Vec<RuleForm>,
}

#[derive(Serialize, Deserialize)]
struct RuleForm {
    #[serde(default)]
    matches: Vec<MatchForm>,
    #[serde(default)]
    actions: Vec<ActionForm>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum MatchForm {
    Prefix {
        net: IpNet,
        ge: Option<u8>,
        le: Option<u8>,
    },
    Family(String),
    Community(u32),
    LargeCommunity([u32; 3]),
    AsPathContains(u32),
    OriginAs(u32),
    AsPathLength {
        min: Option<u32>,
        max: Option<u32>,
    },
    NextHop(IpNet),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ActionForm {
    Accept,
    Reject,
    SetLocalPref(u32),
    SetMed(u32),
    AddCommunities(Vec<u32>),
    RemoveCommunities(Vec<u32>),
    AddLargeCommunities(Vec<[u32; 3]>),
    RemoveLargeCommunities(Vec<[u32; 3]>),
    Prepend { asn: Option<u32>, count: u8 },
    NextHopSelf,
}

fn policy_to(p: &Policy) -> PolicyForm {
    let comms = |v: &[Community]| v.iter().map(|c| c.0).collect();
    let larges = |v: &[LargeCommunity]| v.iter().map(large_to).collect();
    PolicyForm {
        name: p.name.clone(),
        rules: p
            .rules
            .iter()
            .map(|r| RuleForm {
                matches: r
                    .matches
                    .iter()
                    .map(|m| match m {
                        Match::Prefix { net, ge, le } => MatchForm::Prefix {
                            net: *net,
                            ge: *ge,
                            le: *le,
                        },
                        Match::Family(af) => MatchForm::Family(family_text(*af)),
                        Match::Community(c) => MatchForm::Community(c.0),
                        Match::LargeCommunity(c) => MatchForm::LargeCommunity(large_to(c)),
                        Match::AsPathContains(a) => MatchForm::AsPathContains(*a),
                        Match::OriginAs(a) => MatchForm::OriginAs(*a),
                        Match::AsPathLength { min, max } => MatchForm::AsPathLength {
                            min: *min,
                            max: *max,
                        },
                        Match::NextHop(n) => MatchForm::NextHop(*n),
                    })
                    .collect(),
                actions: r
                    .actions
                    .iter()
                    .map(|a| match a {
                        Action::Accept => ActionForm::Accept,
                        Action::Reject => ActionForm::Reject,
                        Action::SetLocalPref(v) => ActionForm::SetLocalPref(*v),
                        Action::SetMed(v) => ActionForm::SetMed(*v),
                        Action::AddCommunities(v) => ActionForm::AddCommunities(comms(v)),
                        Action::RemoveCommunities(v) => ActionForm::RemoveCommunities(comms(v)),
                        Action::AddLargeCommunities(v) => {
                            ActionForm::AddLargeCommunities(larges(v))
                        }
                        Action::RemoveLargeCommunities(v) => {
                            ActionForm::RemoveLargeCommunities(larges(v))
                        }
                        Action::Prepend { asn, count } => ActionForm::Prepend {
                            asn: *asn,
                            count: *count,
                        },
                        Action::NextHopSelf => ActionForm::NextHopSelf,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn policy_from(p: PolicyForm) -> Result<Policy, String> {
    let comms = |v: Vec<u32>| v.into_iter().map(Community).collect();
    let larges = |v: Vec<[u32; 3]>| v.into_iter().map(large_from).collect();
    let mut rules = Vec::with_capacity(p.rules.len());
    for r in p.rules {
        let mut matches = Vec::with_capacity(r.matches.len());
        for m in r.matches {
            matches.push(match m {
                MatchForm::Prefix { net, ge, le } => Match::Prefix { net, ge, le },
                MatchForm::Family(t) => {
                    Match::Family(parse_family(&t).ok_or(format!("not a family: {t:?}"))?)
                }
                MatchForm::Community(c) => Match::Community(Community(c)),
                MatchForm::LargeCommunity(c) => Match::LargeCommunity(large_from(c)),
                MatchForm::AsPathContains(a) => Match::AsPathContains(a),
                MatchForm::OriginAs(a) => Match::OriginAs(a),
                MatchForm::AsPathLength { min, max } => Match::AsPathLength { min, max },
                MatchForm::NextHop(n) => Match::NextHop(n),
            });
        }
        let actions = r
            .actions
            .into_iter()
            .map(|a| match a {
                ActionForm::Accept => Action::Accept,
                ActionForm::Reject => Action::Reject,
                ActionForm::SetLocalPref(v) => Action::SetLocalPref(v),
                ActionForm::SetMed(v) => Action::SetMed(v),
                ActionForm::AddCommunities(v) => Action::AddCommunities(comms(v)),
                ActionForm::RemoveCommunities(v) => Action::RemoveCommunities(comms(v)),
                ActionForm::AddLargeCommunities(v) => Action::AddLargeCommunities(larges(v)),
                ActionForm::RemoveLargeCommunities(v) => Action::RemoveLargeCommunities(larges(v)),
                ActionForm::Prepend { asn, count } => Action::Prepend { asn, count },
                ActionForm::NextHopSelf => Action::NextHopSelf,
            })
            .collect();
        rules.push(Rule { matches, actions });
    }
    Ok(Policy {
        name: p.name,
        rules,
    })
}

/// An optional policy (import or export).
pub(crate) mod policy {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        p: &Option<Arc<Policy>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        p.as_deref().map(policy_to).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Arc<Policy>>, D::Error> {
        Option::<PolicyForm>::deserialize(d)?
            .map(|f| policy_from(f).map(Arc::new))
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}
