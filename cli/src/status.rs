//! `petrel status`: the agent's view of itself (identity, peers counted,
//! what it advertises and why, the overlay), as a table or JSON.

use std::fmt::Write as _;
use std::path::Path;

use proto::v1 as pb;
use serde_json::{Value, json};

use crate::Format;
use crate::client::{duration, peers_json, peers_table, print_data};

/// Fetches the agent's status.
pub async fn fetch_status(socket: &Path) -> anyhow::Result<pb::Status> {
    let mut client = pb::agent_service_client::AgentServiceClient::new(api::connect(socket).await?);
    Ok(client
        .get_status(pb::GetStatusRequest {})
        .await?
        .into_inner())
}

fn intent_kind_name(k: i32) -> &'static str {
    match pb::IntentKind::try_from(k) {
        Ok(pb::IntentKind::PodCidr) => "pod CIDR",
        Ok(pb::IntentKind::ClusterIpRange) => "ClusterIP range",
        Ok(pb::IntentKind::ExternalIpRange) => "external IP range",
        Ok(pb::IntentKind::ClusterIp) => "ClusterIP",
        Ok(pb::IntentKind::ExternalIp) => "external IP",
        Ok(pb::IntentKind::LoadBalancerIp) => "LoadBalancer IP",
        Ok(pb::IntentKind::ApiPath) => "API path",
        Ok(pb::IntentKind::PodBlock) => "pod block",
        Ok(pb::IntentKind::PodBorrowed) => "borrowed pod address",
        _ => "unknown",
    }
}

/// The status as JSON.
pub fn status_json(s: &pb::Status) -> Value {
    json!({
        "version": s.version,
        "node": s.node,
        "asn": s.asn,
        "router_id": s.router_id,
        "uptime_seconds": s.uptime_seconds,
        "peers_configured": s.peers_configured,
        "peers_established": s.peers_established,
        "rib_prefixes": s.rib_prefixes,
        "peers": peers_json(&s.peers),
        "advertisements": s.intents.iter().map(|i| json!({
            "prefix": i.prefix,
            "kind": intent_kind_name(i.kind),
            "service": (!i.service.is_empty()).then_some(&i.service),
            "advertised": i.advertised,
            "reason": i.reason,
            "limited_to": (!i.limited_to.is_empty()).then_some(&i.limited_to),
            "peers": i.peers.iter().map(|p| json!({
                "peer": p.peer,
                "name": p.name,
                "sent": p.sent,
                "why_not": (!p.why_not.is_empty()).then_some(&p.why_not),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "overlay": s.overlay.as_ref().map(|o| json!({
            "link_mtu": o.link_mtu,
            "pod_mtu": o.pod_mtu,
            "devices": o.devices.iter().map(|d| json!({
                "name": d.name, "mtu": d.mtu, "endpoint": d.endpoint,
            })).collect::<Vec<_>>(),
            "nodes": o.nodes.iter().map(|n| json!({
                "node": n.node,
                "address": n.address,
                "adjacency": n.adjacency,
                "pools": n.pools.iter().map(|p| json!({
                    "pool": p.pool,
                    "tunnel": (!p.tunnel.is_empty()).then_some(&p.tunnel),
                    "reason": p.reason,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "nat": o.nat,
            "errors": o.errors,
        })),
    })
}

/// The overlay part of the status for people: devices and MTU, then per
/// remote node and pool the tunnel taken and why.
fn overlay_table(o: &pb::Overlay) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\noverlay: link MTU {}, pod MTU {}; natOutgoing: {}",
        o.link_mtu, o.pod_mtu, o.nat
    );
    for d in &o.devices {
        let _ = writeln!(
            out,
            "  device {} MTU {} endpoint {}",
            d.name, d.mtu, d.endpoint
        );
    }
    for e in &o.errors {
        let _ = writeln!(out, "  error: {e}");
    }
    if o.nodes.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<16} {:<26} {:<26} {:<12} {:<8} WHY",
        "NODE", "ADDRESS", "ADJACENCY", "POOL", "TUNNEL"
    );
    for n in &o.nodes {
        for p in &n.pools {
            let tunnel = if p.tunnel.is_empty() {
                "none"
            } else {
                &p.tunnel
            };
            let _ = writeln!(
                out,
                "{:<16} {:<26} {:<26} {:<12} {:<8} {}",
                n.node, n.address, n.adjacency, p.pool, tunnel, p.reason
            );
        }
    }
    out
}

/// The status for people: identity, peers, then every prefix this node
/// should advertise, whether it does, and to whom or why not.
pub fn status_table(s: &pb::Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}  AS {}  router ID {}  up {}  petrel {}",
        s.node,
        s.asn,
        s.router_id,
        duration(s.uptime_seconds),
        s.version
    );
    let _ = writeln!(
        out,
        "peers: {} of {} established; {} prefixes in the RIB\n",
        s.peers_established, s.peers_configured, s.rib_prefixes
    );
    out.push_str(&peers_table(&s.peers));
    let _ = writeln!(
        out,
        "\n{:<22} {:<18} {:<24} {:<4} WHY / TO WHOM",
        "PREFIX", "KIND", "SERVICE", "ADV"
    );
    for i in &s.intents {
        let service = if i.service.is_empty() {
            "-"
        } else {
            &i.service
        };
        let adv = if i.advertised { "yes" } else { "no" };
        let _ = writeln!(
            out,
            "{:<22} {:<18} {:<24} {:<4} {}",
            i.prefix,
            intent_kind_name(i.kind),
            service,
            adv,
            i.reason
        );
        if !i.limited_to.is_empty() {
            let _ = writeln!(out, "    only to: {}", i.limited_to.join(", "));
        }
        for p in &i.peers {
            let who = if p.name.is_empty() || p.name == p.peer {
                p.peer.clone()
            } else {
                format!("{} ({})", p.peer, p.name)
            };
            if p.sent {
                let _ = writeln!(out, "    -> {who}: sent");
            } else {
                let _ = writeln!(out, "    -> {who}: not sent: {}", p.why_not);
            }
        }
    }
    if let Some(o) = &s.overlay {
        out.push_str(&overlay_table(o));
    }
    out
}

/// `petrel status`: this node's identity, peers, and every prefix it should
/// advertise, and whether it does.
pub async fn status(socket: &Path, output: Format) -> anyhow::Result<()> {
    let status = fetch_status(socket).await?;
    match output {
        Format::Table => print!("{}", status_table(&status)),
        Format::Json | Format::Yaml => print_data(&status_json(&status), output)?,
    }
    Ok(())
}
