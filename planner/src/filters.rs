//! BGPFilters as the speaker's policies, and communities as objects write
//! them.

use std::sync::Arc;

use bgpd::policy::{Action as PolicyAction, Match, Policy, Rule};
use bgpd::wire::AfiSafi;
use bgpd::wire::attr::{Community, LargeCommunity};
use crds::{FilterAction, FilterRuleSpec};
use model::{FieldError, Snapshot};

/// The import and export policies of a peer's filters, in order.
#[allow(clippy::type_complexity)]
pub fn policies(
    names: &[String],
    snapshot: &Snapshot,
) -> Result<(Option<Arc<Policy>>, Option<Arc<Policy>>), String> {
    let mut import = Vec::new();
    let mut export = Vec::new();
    for name in names {
        let Some(f) = snapshot.filters.iter().find(|f| f.name == *name) else {
            return Err(format!("BGPFilter {name:?} does not exist"));
        };
        for (dir, rules, out) in [
            ("import", &f.spec.import, &mut import),
            ("export", &f.spec.export, &mut export),
        ] {
            for (i, r) in rules.iter().flatten().enumerate() {
                let rule = rule(r).map_err(|e| {
                    format!(
                        "BGPFilter {name:?}: spec.{dir}[{i}].{}: {}",
                        e.field, e.reason
                    )
                })?;
                out.push(rule);
            }
        }
    }
    let make = |rules: Vec<Rule>| {
        (!rules.is_empty()).then(|| {
            Arc::new(Policy {
                name: names.join(","),
                rules,
            })
        })
    };
    Ok((make(import), make(export)))
}

/// A community as written in objects: `ASN:VALUE`, `no-export` or
/// `no-advertise`.
pub fn community(s: &str) -> Result<Community, String> {
    match s {
        "no-export" => return Ok(Community::NO_EXPORT),
        "no-advertise" => return Ok(Community::NO_ADVERTISE),
        _ => {}
    }
    let (a, v) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not ASN:VALUE"))?;
    let a: u16 = a
        .parse()
        .map_err(|_| format!("{s:?}: {a:?} is not 0 to 65535"))?;
    let v: u16 = v
        .parse()
        .map_err(|_| format!("{s:?}: {v:?} is not 0 to 65535"))?;
    Ok(Community((u32::from(a) << 16) | u32::from(v)))
}

/// A large community as written in objects: `ASN:DATA1:DATA2`.
pub fn large_community(s: &str) -> Result<LargeCommunity, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let n = |x: &str| {
        x.parse::<u32>()
            .map_err(|_| format!("{s:?}: {x:?} is not a 32-bit number"))
    };
    match parts.as_slice() {
        [a, b, c] => Ok(LargeCommunity {
            global_admin: n(a)?,
            local_data1: n(b)?,
            local_data2: n(c)?,
        }),
        _ => Err(format!("{s:?} is not ASN:DATA1:DATA2")),
    }
}

/// One filter rule as policy, or the field that is wrong and why.
fn rule(r: &FilterRuleSpec) -> Result<Rule, FieldError> {
    let bad = |f: &str, m: String| FieldError::new(f, m);
    let mut out = Rule::default();
    if let Some(m) = &r.matches {
        if let Some(p) = &m.prefix {
            let cidr = p
                .cidr
                .ok_or_else(|| bad("match.prefix.cidr", "is required".into()))?
                .trunc();
            let max = cidr.max_prefix_len();
            let lo = p.ge.unwrap_or(cidr.prefix_len());
            let hi = p.le.unwrap_or(if p.ge.is_some() {
                max
            } else {
                cidr.prefix_len()
            });
            if lo < cidr.prefix_len() || hi > max || lo > hi {
                return Err(bad(
                    "match.prefix",
                    format!(
                        "ge {lo} / le {hi} do not fit {cidr} (need {} <= ge <= le <= {max})",
                        cidr.prefix_len()
                    ),
                ));
            }
            out.matches.push(Match::Prefix {
                net: cidr,
                ge: p.ge,
                le: p.le,
            });
        }
        if let Some(f) = &m.family {
            out.matches.push(Match::Family(match f.as_str() {
                "ipv4" => AfiSafi::IPV4_UNICAST,
                "ipv6" => AfiSafi::IPV6_UNICAST,
                other => {
                    return Err(bad(
                        "match.family",
                        format!("{other:?} is not ipv4 or ipv6"),
                    ));
                }
            }));
        }
        if let Some(c) = &m.community {
            out.matches.push(Match::Community(
                community(c).map_err(|e| bad("match.community", e))?,
            ));
        }
        if let Some(c) = &m.large_community {
            out.matches.push(Match::LargeCommunity(
                large_community(c).map_err(|e| bad("match.largeCommunity", e))?,
            ));
        }
        if let Some(a) = m.as_path_contains {
            out.matches.push(Match::AsPathContains(a));
        }
        if let Some(a) = m.origin_as {
            out.matches.push(Match::OriginAs(a));
        }
        if let Some(l) = &m.as_path_length {
            if let (Some(lo), Some(hi)) = (l.min, l.max)
                && lo > hi
            {
                return Err(bad(
                    "match.asPathLength",
                    format!("min {lo} is above max {hi}"),
                ));
            }
            out.matches.push(Match::AsPathLength {
                min: l.min,
                max: l.max,
            });
        }
        if let Some(nh) = m.next_hop {
            out.matches.push(Match::NextHop(nh.trunc()));
        }
    }
    if let Some(set) = &r.set {
        if let Some(v) = set.local_pref {
            out.actions.push(PolicyAction::SetLocalPref(v));
        }
        if let Some(v) = set.med {
            out.actions.push(PolicyAction::SetMed(v));
        }
        let communities =
            |field: &str, v: &Option<Vec<String>>| -> Result<Vec<Community>, FieldError> {
                v.iter()
                    .flatten()
                    .map(|c| community(c).map_err(|e| bad(field, e)))
                    .collect()
            };
        let larges =
            |field: &str, v: &Option<Vec<String>>| -> Result<Vec<LargeCommunity>, FieldError> {
                v.iter()
                    .flatten()
                    .map(|c| large_community(c).map_err(|e| bad(field, e)))
                    .collect()
            };
        let add = communities("set.addCommunities", &set.add_communities)?;
        if !add.is_empty() {
            out.actions.push(PolicyAction::AddCommunities(add));
        }
        let remove = communities("set.removeCommunities", &set.remove_communities)?;
        if !remove.is_empty() {
            out.actions.push(PolicyAction::RemoveCommunities(remove));
        }
        let add = larges("set.addLargeCommunities", &set.add_large_communities)?;
        if !add.is_empty() {
            out.actions.push(PolicyAction::AddLargeCommunities(add));
        }
        let remove = larges("set.removeLargeCommunities", &set.remove_large_communities)?;
        if !remove.is_empty() {
            out.actions
                .push(PolicyAction::RemoveLargeCommunities(remove));
        }
        if let Some(p) = &set.prepend {
            let count = p
                .count
                .ok_or_else(|| bad("set.prepend.count", "is required".into()))?;
            if !(1..=10).contains(&count) {
                return Err(bad("set.prepend.count", format!("{count} is not 1 to 10")));
            }
            out.actions
                .push(PolicyAction::Prepend { asn: p.asn, count });
        }
        if set.next_hop_self == Some(true) {
            out.actions.push(PolicyAction::NextHopSelf);
        }
    }
    match r.action.unwrap_or(FilterAction::Continue) {
        FilterAction::Accept => out.actions.push(PolicyAction::Accept),
        FilterAction::Reject => out.actions.push(PolicyAction::Reject),
        FilterAction::Continue => {}
    }
    Ok(out)
}
