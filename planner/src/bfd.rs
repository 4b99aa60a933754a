//! BFD for BGPPeers that name a BFDProfile: the sessions this node runs,
//! and the coupling of each neighbour's BGP session to its BFD session.

use std::time::Duration;

use bfd::runtime::PeerSpec;
use bfd::{AuthType, Key, SessionConfig};
use bgpd::speaker::{BfdLink, NeighborAddress, NeighborConfig};
use crds::{BfdProfileSpec, BgpPeerSpec};
use model::{Named, Problem, Snapshot};

/// The default minimum TTL of multihop sessions: one router away.
const DEFAULT_MINIMUM_TTL: u8 = 254;

/// The sessions for `neighbors` (planned from `peers`) whose BGPPeer names
/// a BFDProfile, marking those neighbours as coupled to BFD. A profile
/// that is missing or invalid is a problem on the BGPPeer, and the peer
/// runs without BFD rather than not at all.
pub fn plan(
    snapshot: &Snapshot,
    peers: &[&Named<BgpPeerSpec>],
    neighbors: &mut [NeighborConfig],
    problems: &mut Vec<Problem>,
) -> Vec<PeerSpec> {
    let mut out = Vec::new();
    for p in peers {
        let Some(profile_name) = &p.spec.bfd_profile else {
            continue;
        };
        let Some(n) = neighbors.iter_mut().find(|n| n.name == p.name) else {
            continue;
        };
        let NeighborAddress::Address(peer) = n.address else {
            problems.push(problem(
                p,
                "spec.bfdProfile",
                "needs peerIP: BFD runs with one known neighbour, not a listen range; no BFD for this peer".into(),
            ));
            continue;
        };
        let Some(profile) = snapshot
            .bfd_profiles
            .iter()
            .find(|b| &b.name == profile_name)
        else {
            problems.push(problem(
                p,
                "spec.bfdProfile",
                format!("BFDProfile {profile_name:?} does not exist; the peer runs without BFD"),
            ));
            continue;
        };
        let config = match session_config(&profile.spec, snapshot) {
            Ok(c) => c,
            Err((field, why)) => {
                problems.push(Problem {
                    origin: profile.origin.to_string(),
                    object: Some(format!("BFDProfile/{}", profile.name)),
                    field: Some(field),
                    message: format!("{why}; peers that use it run without BFD"),
                });
                problems.push(problem(
                    p,
                    "spec.bfdProfile",
                    format!("BFDProfile {profile_name:?} is invalid; the peer runs without BFD"),
                ));
                continue;
            }
        };
        let multihop = n.ebgp_multihop.is_some_and(|ttl| ttl > 1);
        let minimum_ttl = profile
            .spec
            .minimum_ttl
            .and_then(|t| u8::try_from(t).ok())
            .unwrap_or(DEFAULT_MINIMUM_TTL);
        n.bfd = Some(BfdLink {
            strict: p.spec.bfd_strict.unwrap_or(false),
        });
        out.push(PeerSpec {
            peer,
            local: n.source_address,
            multihop,
            minimum_ttl,
            config,
        });
    }
    out
}

fn problem(p: &Named<BgpPeerSpec>, field: &str, message: String) -> Problem {
    Problem {
        origin: p.origin.to_string(),
        object: Some(format!("BGPPeer/{}", p.name)),
        field: Some(field.into()),
        message,
    }
}

/// A profile's timers and key, or the field that is wrong and why.
fn session_config(
    s: &BfdProfileSpec,
    snapshot: &Snapshot,
) -> Result<SessionConfig, (String, String)> {
    let interval = |field: &str, v: Option<u32>| -> Result<Duration, (String, String)> {
        let ms = v.unwrap_or(300);
        if !(10..=60_000).contains(&ms) {
            return Err((
                format!("spec.{field}"),
                format!("{ms} ms is outside 10 to 60000"),
            ));
        }
        Ok(Duration::from_millis(u64::from(ms)))
    };
    if s.echo_mode == Some(true) {
        return Err((
            "spec.echoMode".into(),
            "the Echo function is not supported (asynchronous mode only)".into(),
        ));
    }
    let mult = s.detect_multiplier.unwrap_or(3);
    if !(2..=255).contains(&mult) {
        return Err((
            "spec.detectMultiplier".into(),
            format!("{mult} is outside 2 to 255"),
        ));
    }
    if let Some(t) = s.minimum_ttl
        && !(1..=254).contains(&t)
    {
        return Err(("spec.minimumTtl".into(), format!("{t} is outside 1 to 254")));
    }
    let key = match &s.authentication {
        None => None,
        Some(a) => {
            let kind = match a.kind.as_deref().unwrap_or("keyed-sha1") {
                "keyed-sha1" => AuthType::KeyedSha1,
                "meticulous-keyed-sha1" => AuthType::MeticulousKeyedSha1,
                "keyed-md5" => AuthType::KeyedMd5,
                "meticulous-keyed-md5" => AuthType::MeticulousKeyedMd5,
                "simple-password" => AuthType::SimplePassword,
                other => {
                    return Err((
                        "spec.authentication.type".into(),
                        format!("{other:?} is not a BFD authentication type"),
                    ));
                }
            };
            let id = match a.key_id {
                Some(id) if id <= 255 => id as u8,
                Some(id) => {
                    return Err((
                        "spec.authentication.keyID".into(),
                        format!("{id} is outside 0 to 255"),
                    ));
                }
                None => return Err(("spec.authentication.keyID".into(), "is required".into())),
            };
            let Some(source) = &a.secret else {
                return Err(("spec.authentication.secret".into(), "is required".into()));
            };
            let secret = crate::peer::secret(source, snapshot, "spec.authentication.secret")
                .map_err(|e| (e.field, e.reason))?;
            let key = Key::new(kind, id, secret.as_bytes())
                .map_err(|e| ("spec.authentication.secret".to_string(), e.to_string()))?;
            Some(key)
        }
    };
    Ok(SessionConfig {
        desired_min_tx: interval("transmitInterval", s.transmit_interval)?,
        required_min_rx: interval("receiveInterval", s.receive_interval)?,
        detect_mult: mult as u8,
        passive: s.passive_mode.unwrap_or(false),
        key,
    })
}
