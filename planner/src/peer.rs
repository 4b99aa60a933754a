//! One BGPPeer as a neighbour of this node's speaker: its address, ASN,
//! timers, transport, limits and password, or the field that is wrong.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bgpd::session::sockopt::MD5_MAX_KEY_LEN;
use bgpd::speaker::{MaxPrefixes, MaxPrefixesAction, NeighborAddress, NeighborConfig};
use bgpd::wire::AfiSafi;
use crds::{AddPathSendSpec, BgpPeerSpec, MaxPrefixAction, PasswordSource, Seconds};
use model::{FieldError, Named, Snapshot};

use crate::filters::policies;

/// Usable ASNs: not 0, not AS_TRANS, not the last one (RFC 7300).
pub(crate) fn valid_asn(a: u32) -> bool {
    a != 0 && a != 23456 && a != u32::MAX
}

/// One BGPPeer as a neighbour of a speaker with `local_asn` and `router_id`,
/// or the field that is wrong and why.
pub fn neighbor(
    p: &Named<BgpPeerSpec>,
    snapshot: &Snapshot,
    local_asn: u32,
    router_id: Ipv4Addr,
) -> Result<NeighborConfig, FieldError> {
    let s = &p.spec;
    let err = |f: &str, m: String| Err(FieldError::new(f, m));
    let address = match (s.peer_ip, s.listen_range) {
        (Some(ip), None) => {
            if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(router_id) {
                return err("spec.peerIP", format!("{ip} cannot be a BGP peer"));
            }
            NeighborAddress::Address(ip)
        }
        (None, Some(range)) => NeighborAddress::Range(range.trunc()),
        (Some(_), Some(_)) => {
            return err("spec", "set either peerIP or listenRange, not both".into());
        }
        (None, None) => {
            return err(
                "spec.peerIP",
                "is required (or listenRange for dynamic neighbours)".into(),
            );
        }
    };
    let asn = match s.as_number {
        Some(a) if valid_asn(a) => a,
        Some(a) => {
            return err(
                "spec.asNumber",
                format!("{a} is not a usable ASN (1..=4294967294, not 23456)"),
            );
        }
        None => return err("spec.asNumber", "is required".into()),
    };
    let mut n = NeighborConfig::new(p.name.clone(), address, asn);
    if let Some(port) = s.port {
        if port == 0 {
            return err("spec.port", "0 is not a port".into());
        }
        n.port = port;
    }
    if let Some(h) = s.hold_time {
        if h.0 == 1 || h.0 == 2 || h.0 > 65535 {
            return err(
                "spec.holdTime",
                format!("{h} is not allowed: 0 (no keepalives) or 3s to 65535s"),
            );
        }
        n.hold_time = h.0 as u16;
    }
    if let Some(k) = s.keepalive_time {
        if k.0 == 0 || (n.hold_time > 0 && k.0 > u32::from(n.hold_time) / 3) {
            return err(
                "spec.keepaliveTime",
                format!(
                    "{k} must be at least 1s and at most a third of the hold time ({}s)",
                    n.hold_time
                ),
            );
        }
        n.keepalive_time = Some(k.0 as u16);
    }
    if let Some(h) = s.send_hold_time {
        if h.0 < 3 || h.0 > 65535 {
            return err(
                "spec.sendHoldTime",
                format!("{h} is not allowed: 3s to 65535s"),
            );
        }
        n.send_hold_time = Some(h.0 as u16);
    }
    n.passive = s.passive.unwrap_or(false) || matches!(n.address, NeighborAddress::Range(_));
    n.next_hop_self = s.next_hop_self.unwrap_or(false);
    n.route_reflector_client = s.route_reflector_client.unwrap_or(false);
    if let Some(names) = &s.filters {
        let (import, export) =
            policies(names, snapshot).map_err(|m| FieldError::new("spec.filters", m))?;
        n.import_policy = import;
        n.export_policy = export;
    }
    if let Some(ap) = &s.add_paths {
        n.add_paths.receive = ap.receive.unwrap_or(false);
        n.add_paths.send = match &ap.send {
            None => None,
            Some(AddPathSendSpec::Count(c)) if (1..=255).contains(c) => Some(*c as usize),
            Some(AddPathSendSpec::Keyword(k)) if k == "all" => Some(usize::MAX),
            Some(other) => {
                let given = match other {
                    AddPathSendSpec::Count(c) => c.to_string(),
                    AddPathSendSpec::Keyword(k) => format!("{k:?}"),
                };
                return err(
                    "spec.addPaths.send",
                    format!("{given} is not a number of paths (1 to 255) or \"all\""),
                );
            }
        };
    }
    if let Some(mp) = &s.max_prefixes {
        for (name, family, spec) in [
            ("ipv4", AfiSafi::IPV4_UNICAST, &mp.ipv4),
            ("ipv6", AfiSafi::IPV6_UNICAST, &mp.ipv6),
        ] {
            let Some(spec) = spec else { continue };
            let field = |f: &str| format!("spec.maxPrefixes.{name}.{f}");
            let limit = match spec.limit {
                Some(l) if l > 0 => l,
                Some(_) => return err(&field("limit"), "must be at least 1".into()),
                None => return err(&field("limit"), "is required".into()),
            };
            let warning_percent = spec.warning_percent.unwrap_or(75);
            if !(1..=100).contains(&warning_percent) {
                return err(
                    &field("warningPercent"),
                    format!("{warning_percent} is not 1 to 100"),
                );
            }
            let restart_after = spec.restart_after.unwrap_or(Seconds(60));
            if restart_after.0 == 0 {
                return err(&field("restartAfter"), "must be at least 1s".into());
            }
            n.max_prefixes.push(MaxPrefixes {
                family,
                limit: limit.into(),
                warning_percent,
                action: match spec.action.unwrap_or(MaxPrefixAction::Restart) {
                    MaxPrefixAction::Log => MaxPrefixesAction::Log,
                    MaxPrefixAction::Restart => {
                        MaxPrefixesAction::Restart(Duration::from_secs(restart_after.0.into()))
                    }
                },
                force: spec.force.unwrap_or(false),
            });
        }
    }
    if n.route_reflector_client && asn != local_asn {
        return err(
            "spec.routeReflectorClient",
            format!(
                "applies to internal peers only; this peer's ASN {asn} is not ours ({local_asn})"
            ),
        );
    }
    match (s.ebgp_multihop, s.ttl_security) {
        (Some(_), Some(_)) => {
            return err(
                "spec.ttlSecurity",
                "cannot be combined with ebgpMultihop (GTSM fixes the TTL at 255)".into(),
            );
        }
        (Some(0), _) => return err("spec.ebgpMultihop", "must be 1 to 255".into()),
        (Some(h), None) if asn == local_asn => {
            return err(
                "spec.ebgpMultihop",
                format!("{h} given for an internal peer (same ASN)"),
            );
        }
        (_, Some(h)) if h == 0 || h == 255 => {
            return err("spec.ttlSecurity", "must be 1 to 254 hops".into());
        }
        _ => {}
    }
    n.ebgp_multihop = s.ebgp_multihop;
    n.ttl_security = s.ttl_security;
    n.source_address = s.source_address;
    if let Some(pw) = &s.password {
        let secret = password(pw, snapshot)?;
        if secret.is_empty() || secret.len() > MD5_MAX_KEY_LEN {
            return err(
                "spec.password",
                format!(
                    "is {} octets; TCP-MD5 keys are 1 to {MD5_MAX_KEY_LEN}",
                    secret.len()
                ),
            );
        }
        n.password = Some(secret.into());
    }
    n.connect_retry = Duration::from_secs(5);
    Ok(n)
}

fn password(pw: &PasswordSource, snapshot: &Snapshot) -> Result<String, FieldError> {
    secret(pw, snapshot, "spec.password")
}

/// The text a [`PasswordSource`] at `field` names: a file the source read,
/// or a Secret's key.
pub(crate) fn secret(
    pw: &PasswordSource,
    snapshot: &Snapshot,
    field: &str,
) -> Result<String, FieldError> {
    let at = |f: &str| format!("{field}.{f}");
    match (&pw.file, &pw.secret_key_ref) {
        // The source read the file (the planner reads none).
        (Some(f), None) => match snapshot.files.get(f) {
            Some(Ok(text)) => Ok(text.to_string()),
            Some(Err(why)) => Err(FieldError::new(at("file"), why.clone())),
            None => Err(FieldError::new(
                at("file"),
                format!("{f} was not read by the source"),
            )),
        },
        (None, Some(r)) => {
            let secret = snapshot
                .secrets
                .iter()
                .find(|s| s.name == r.name)
                .ok_or_else(|| {
                    FieldError::new(
                        at("secretKeyRef.name"),
                        format!("no Secret named {:?}", r.name),
                    )
                })?;
            let value = secret.data.get(&r.key).ok_or_else(|| {
                FieldError::new(
                    at("secretKeyRef.key"),
                    format!("Secret {:?} has no key {:?}", r.name, r.key),
                )
            })?;
            String::from_utf8(value.clone())
                .map_err(|_| FieldError::new(at("secretKeyRef"), "the secret is not UTF-8"))
        }
        _ => Err(FieldError::new(
            field,
            "set exactly one of file or secretKeyRef",
        )),
    }
}
