//! JSON rendering of decoded BGP messages and MRT records, for `petrel decode`.
//!
//! Prefixes are CIDR strings (an object with `path_id` when ADD-PATH is in use),
//! attributes are keyed by their IANA names, AS paths are lists of segments of
//! numbers.

use bgpd::mrt::{Bgp4mpPeers, PeerIndexTable, RibNlri, StateChange, state_name};
use bgpd::wire::attr::{self, AttrValue, MpNlri, NextHop, PathAttribute};
use bgpd::wire::capability::Capability;
use bgpd::wire::open::OptionalParameter;
use bgpd::wire::route_refresh::RefreshSubtype;
use bgpd::wire::{AsPath, Message, Nlri};
use serde_json::{Map, Value, json};

/// Lower-case hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn nlri(n: &Nlri) -> Value {
    match n.path_id {
        None => json!(n.prefix.to_string()),
        Some(id) => json!({"prefix": n.prefix.to_string(), "path_id": id}),
    }
}

fn nlri_list(list: &[Nlri]) -> Value {
    Value::Array(list.iter().map(nlri).collect())
}

fn mp_nlri(m: &MpNlri) -> Value {
    match m {
        MpNlri::Prefixes(p) => nlri_list(p),
        MpNlri::Opaque(b) => json!({"opaque": hex(b)}),
    }
}

fn as_path(p: &AsPath) -> Value {
    Value::Array(
        p.segments
            .iter()
            .map(|s| json!({"type": s.kind.name(), "asns": s.asns}))
            .collect(),
    )
}

fn next_hop(nh: &NextHop) -> Value {
    match nh {
        NextHop::Ipv4(a) => json!(a.to_string()),
        NextHop::Ipv6 {
            global,
            link_local: None,
        } => json!(global.to_string()),
        NextHop::Ipv6 {
            global,
            link_local: Some(ll),
        } => json!({"global": global.to_string(), "link_local": ll.to_string()}),
        NextHop::Opaque(b) => json!({"opaque": hex(b)}),
    }
}

fn strings<T: ToString>(items: &[T]) -> Value {
    Value::Array(items.iter().map(|x| json!(x.to_string())).collect())
}

fn attribute_value(a: &PathAttribute) -> Value {
    match &a.value {
        AttrValue::Origin(o) => json!(o.to_string()),
        AttrValue::AsPath(p) | AttrValue::As4Path(p) => as_path(p),
        AttrValue::NextHop(a) | AttrValue::OriginatorId(a) => json!(a.to_string()),
        AttrValue::Med(v) | AttrValue::LocalPref(v) => json!(v),
        AttrValue::AtomicAggregate => json!(true),
        AttrValue::Aggregator(g) | AttrValue::As4Aggregator(g) => {
            json!({"asn": g.asn, "address": g.address.to_string()})
        }
        AttrValue::Communities(c) => strings(c),
        AttrValue::ClusterList(c) => strings(c),
        AttrValue::ExtendedCommunities(c) => strings(c),
        AttrValue::LargeCommunities(c) => strings(c),
        AttrValue::MpReach(m) => json!({
            "afi_safi": m.afi_safi.to_string(),
            "next_hop": next_hop(&m.next_hop),
            "nlri": mp_nlri(&m.nlri),
        }),
        AttrValue::MpUnreach(m) => json!({
            "afi_safi": m.afi_safi.to_string(),
            "withdrawn": mp_nlri(&m.withdrawn),
        }),
        AttrValue::MrtNextHop(nh) => json!({"next_hop": next_hop(nh)}),
        AttrValue::Unknown { type_code, data } => json!({
            "type_code": type_code,
            "flags": format!("{:#04x}", a.flags),
            "partial": a.is_partial(),
            "value": hex(data),
        }),
    }
}

/// Attributes as an object keyed by name (unknown ones as `ATTR_<code>`).
pub fn attributes(attrs: &[PathAttribute]) -> Value {
    let mut m = Map::new();
    for a in attrs {
        let code = a.type_code();
        let name = match (&a.value, attr::type_name(code)) {
            (AttrValue::Unknown { .. }, _) | (_, None) => format!("ATTR_{code}"),
            (_, Some(n)) => n.to_string(),
        };
        m.insert(name, attribute_value(a));
    }
    Value::Object(m)
}

fn capability(c: &Capability) -> Value {
    let mut v = json!({"name": c.name(), "code": c.code()});
    let extra = match c {
        Capability::Multiprotocol(af) => json!({"afi_safi": af.to_string()}),
        Capability::FourOctetAs(asn) => json!({"asn": asn}),
        Capability::GracefulRestart(gr) => json!({
            "restart_state": gr.restart_state(),
            "notification": gr.notification(),
            "restart_time": gr.restart_time,
            "families": gr.families.iter().map(|f| json!({
                "afi_safi": f.afi_safi.to_string(),
                "forwarding_preserved": f.forwarding_preserved(),
            })).collect::<Vec<_>>(),
        }),
        Capability::LongLivedGracefulRestart(fams) => json!({
            "families": fams.iter().map(|f| json!({
                "afi_safi": f.afi_safi.to_string(),
                "forwarding_preserved": f.flags & 0x80 != 0,
                "stale_time": f.stale_time,
            })).collect::<Vec<_>>(),
        }),
        Capability::AddPath(fams) => json!({
            "families": fams.iter().map(|f| json!({
                "afi_safi": f.afi_safi.to_string(),
                "send": f.send(),
                "receive": f.receive(),
            })).collect::<Vec<_>>(),
        }),
        Capability::ExtendedNextHop(fams) => json!({
            "families": fams.iter().map(|f| json!({
                "nlri_afi": f.nlri_afi, "nlri_safi": f.nlri_safi, "next_hop_afi": f.next_hop_afi,
            })).collect::<Vec<_>>(),
        }),
        Capability::Fqdn { hostname, domain } => json!({
            "hostname": String::from_utf8_lossy(hostname),
            "domain": String::from_utf8_lossy(domain),
        }),
        Capability::Unknown { data, .. } => json!({"value": hex(data)}),
        Capability::RouteRefresh
        | Capability::EnhancedRouteRefresh
        | Capability::ExtendedMessage => json!({}),
    };
    if let (Value::Object(base), Value::Object(more)) = (&mut v, extra) {
        base.extend(more);
    }
    v
}

/// A BGP message.
pub fn message(m: &Message, four_octet_as: bool) -> Value {
    match m {
        Message::Open(o) => {
            let mut caps = Vec::new();
            let mut unknown = Vec::new();
            for p in &o.params {
                match p {
                    OptionalParameter::Capabilities(cs) => caps.extend(cs.iter().map(capability)),
                    OptionalParameter::Unknown { param_type, data } => {
                        unknown.push(json!({"type": param_type, "value": hex(data)}))
                    }
                }
            }
            let mut v = json!({
                "type": "OPEN",
                "version": o.version,
                "my_as": o.my_as,
                "asn": o.asn(),
                "hold_time": o.hold_time,
                "bgp_id": o.bgp_id.to_string(),
                "capabilities": caps,
            });
            if !unknown.is_empty() {
                v["unknown_parameters"] = Value::Array(unknown);
            }
            v
        }
        Message::Update(u) => {
            let mut v = json!({
                "type": "UPDATE",
                "withdrawn": nlri_list(&u.withdrawn),
                "attributes": attributes(&u.attributes),
                "nlri": nlri_list(&u.nlri),
            });
            if let Some(af) = u.as_end_of_rib() {
                v["end_of_rib"] = json!(af.to_string());
            }
            // Show the merged 4-octet path when AS4_PATH took part (RFC 6793).
            if !four_octet_as && u.attribute(attr::type_code::AS4_PATH).is_some() {
                let eff = attr::effective_path(&u.attributes, false);
                v["effective_as_path"] = as_path(&eff.as_path);
            }
            v
        }
        Message::Notification(n) => {
            let mut v = json!({
                "type": "NOTIFICATION",
                "code": n.code,
                "subcode": n.subcode,
                "description": n.describe(),
                "data": hex(&n.data),
            });
            if let Some(text) = n.shutdown_communication() {
                v["shutdown_communication"] = json!(text);
            }
            v
        }
        Message::Keepalive => json!({"type": "KEEPALIVE"}),
        Message::RouteRefresh(r) => json!({
            "type": "ROUTE-REFRESH",
            "afi_safi": r.afi_safi.to_string(),
            "subtype": match r.subtype {
                RefreshSubtype::Request => "request".to_string(),
                RefreshSubtype::BeginOfRefresh => "BoRR".to_string(),
                RefreshSubtype::EndOfRefresh => "EoRR".to_string(),
                RefreshSubtype::Reserved(v) => format!("reserved-{v}"),
            },
            "orf": hex(&r.orf),
        }),
    }
}

/// The session fields of a BGP4MP record.
pub fn peers(p: &Bgp4mpPeers) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("peer_as".into(), json!(p.peer_as));
    m.insert("peer_ip".into(), json!(p.peer_ip.to_string()));
    m.insert("local_as".into(), json!(p.local_as));
    m.insert("local_ip".into(), json!(p.local_ip.to_string()));
    m.insert("interface_index".into(), json!(p.interface_index));
    m
}

/// A STATE_CHANGE record's fields.
pub fn state_change(s: &StateChange) -> Map<String, Value> {
    let mut m = peers(&s.peers);
    m.insert("old_state".into(), json!(state_name(s.old_state)));
    m.insert("new_state".into(), json!(state_name(s.new_state)));
    m
}

/// A PEER_INDEX_TABLE's fields.
pub fn peer_index(t: &PeerIndexTable) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("collector_id".into(), json!(t.collector_id.to_string()));
    m.insert("view_name".into(), json!(t.view_name));
    m.insert(
        "peers".into(),
        Value::Array(
            t.peers
                .iter()
                .enumerate()
                .map(|(i, p)| json!({"index": i, "bgp_id": p.bgp_id.to_string(), "ip": p.ip.to_string(), "asn": p.asn}))
                .collect(),
        ),
    );
    m
}

/// A RIB record's NLRI.
pub fn rib_nlri(n: &RibNlri) -> Value {
    match n {
        RibNlri::Prefix(p) => json!(p.to_string()),
        RibNlri::Opaque(b) => json!({"opaque": hex(b)}),
    }
}
