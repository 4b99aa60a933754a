//! `petrel status`, `peers`, `peer`, `route`, `rib`, `explain` and `watch`:
//! the operator's view of a running agent, over its API.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use proto::v1 as pb;
use serde_json::{Value, json};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
    /// YAML, the same data as JSON.
    Yaml,
}

/// Prints data as JSON or YAML (for `Table`, JSON: tables are per command).
pub fn print_data(v: &Value, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Yaml => print!("{}", serde_saphyr::to_string(v)?),
        Format::Json | Format::Table => println!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(())
}

fn state_name(s: i32) -> &'static str {
    match pb::SessionState::try_from(s) {
        Ok(pb::SessionState::Idle) => "Idle",
        Ok(pb::SessionState::Connect) => "Connect",
        Ok(pb::SessionState::Active) => "Active",
        Ok(pb::SessionState::OpenSent) => "OpenSent",
        Ok(pb::SessionState::OpenConfirm) => "OpenConfirm",
        Ok(pb::SessionState::Established) => "Established",
        _ => "unknown",
    }
}

/// `1d2h3m4s` style.
pub(crate) fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if d > 0 {
        let _ = write!(out, "{d}d");
    }
    if d > 0 || h > 0 {
        let _ = write!(out, "{h}h");
    }
    if d > 0 || h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}s");
    out
}

/// Fetches every peer.
pub async fn fetch_peers(socket: &Path) -> anyhow::Result<Vec<pb::Peer>> {
    let mut client = pb::peer_service_client::PeerServiceClient::new(api::connect(socket).await?);
    let mut stream = client
        .list_peers(pb::ListPeersRequest {})
        .await?
        .into_inner();
    let mut peers = Vec::new();
    while let Some(p) = stream.message().await? {
        peers.push(p);
    }
    Ok(peers)
}

/// What `petrel peer` does.
#[derive(Debug, clap::Subcommand)]
pub enum PeerAction {
    /// Show one peer (`-o json` for everything).
    Show {
        /// The peer's address or BGPPeer name.
        peer: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Reset the session: hard by default (it comes back by itself).
    Reset {
        /// The peer's address or BGPPeer name.
        peer: String,
        /// A soft reset instead: ask for the peer's routes again (`in`), send
        /// ours again (`out`), or both.
        #[arg(long, value_parser = ["in", "out", "both"])]
        soft: Option<String>,
    },
    /// Take the session down and keep it down (Cease / Administrative Shutdown).
    Disable {
        /// The peer's address or BGPPeer name.
        peer: String,
        /// Shutdown communication for the peer's operators (RFC 8203).
        #[arg(long, short)]
        message: Option<String>,
    },
    /// Let a disabled peer connect again.
    Enable {
        /// The peer's address or BGPPeer name.
        peer: String,
    },
    /// Add a peer through the API, kept apart from the configuration (a
    /// reload never removes it; an agent restart does).
    Add(PeerSettings),
    /// Change a peer added with `peer add`.
    Update(PeerSettings),
    /// Remove a peer added with `peer add`.
    Del {
        /// Its name or address.
        peer: String,
    },
}

/// The settings of `petrel peer add|update`.
#[derive(Debug, clap::Args)]
pub struct PeerSettings {
    /// A name, unique among peers.
    pub name: String,
    /// The peer's address.
    #[arg(long)]
    pub address: String,
    /// The peer's ASN.
    #[arg(long)]
    pub asn: u32,
    /// The peer's TCP port (default 179).
    #[arg(long)]
    pub port: Option<u16>,
    /// Hold time in seconds (default 90).
    #[arg(long)]
    pub hold_time: Option<u32>,
    /// Keepalive interval in seconds (default a third of the hold time).
    #[arg(long)]
    pub keepalive: Option<u32>,
    /// Only accept connections from the peer.
    #[arg(long)]
    pub passive: bool,
    /// TTL for an external peer that is not directly connected.
    #[arg(long)]
    pub ebgp_multihop: Option<u8>,
    /// Source address of the session.
    #[arg(long)]
    pub source_address: Option<String>,
    /// TCP-MD5 password, read from this file, or from standard input with
    /// `-` (never given on the command line, where `ps` shows it); one
    /// trailing newline is dropped.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<std::path::PathBuf>,
    /// Our address as next hop towards an internal peer.
    #[arg(long)]
    pub next_hop_self: bool,
    /// Reflect routes to this internal peer (route reflector client).
    #[arg(long)]
    pub rr_client: bool,
    /// BGPFilter names from the configuration, in order (repeatable).
    #[arg(long = "filter")]
    pub filters: Vec<String>,
}

/// A password from `path` (`-`: standard input), without its trailing
/// newline.
fn read_password(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the password from standard input")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the password from {}", path.display()))?;
    }
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

impl PeerSettings {
    fn to_pb(&self) -> anyhow::Result<pb::AddPeerRequest> {
        let password = match &self.password_file {
            Some(p) => read_password(p)?,
            None => String::new(),
        };
        Ok(pb::AddPeerRequest {
            peer: Some(pb::PeerSpec {
                name: self.name.clone(),
                address: self.address.clone(),
                asn: self.asn,
                port: self.port.map(u32::from).unwrap_or(0),
                hold_time_seconds: self.hold_time,
                keepalive_seconds: self.keepalive,
                passive: self.passive,
                ebgp_multihop: self.ebgp_multihop.map(u32::from).unwrap_or(0),
                source_address: self.source_address.clone().unwrap_or_default(),
                password,
                next_hop_self: self.next_hop_self,
                route_reflector_client: self.rr_client,
                filters: self.filters.clone(),
            }),
        })
    }
}

/// What `petrel route` does.
#[derive(Debug, clap::Subcommand)]
pub enum RouteAction {
    /// Originate a route (kept per client, apart from the configuration).
    Add {
        /// The prefix (or an address, for a host route).
        prefix: String,
        /// Who owns the route; `route del` with the same client withdraws it.
        #[arg(long, default_value = "cli")]
        client: String,
        /// A community, `ASN:VALUE` or no-export / no-advertise (repeatable).
        #[arg(long = "community")]
        communities: Vec<String>,
        /// A large community, `ASN:DATA1:DATA2` (repeatable).
        #[arg(long = "large-community")]
        large_communities: Vec<String>,
        /// LOCAL_PREF towards internal peers.
        #[arg(long)]
        local_pref: Option<u32>,
    },
    /// Withdraw a route added with `route add`, or all of a client's.
    Del {
        /// The prefix; omit it with `--all`.
        #[arg(required_unless_present = "all")]
        prefix: Option<String>,
        /// Every route of the client.
        #[arg(long, conflicts_with = "prefix")]
        all: bool,
        /// The client that added it.
        #[arg(long, default_value = "cli")]
        client: String,
    },
}

/// Runs `petrel route ...`.
pub async fn route_action(socket: &Path, action: RouteAction) -> anyhow::Result<()> {
    let mut client = pb::rib_service_client::RibServiceClient::new(api::connect(socket).await?);
    let refused = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    match action {
        RouteAction::Add {
            prefix,
            client: owner,
            communities,
            large_communities,
            local_pref,
        } => {
            client
                .add_path(pb::AddPathRequest {
                    client: owner,
                    prefix,
                    communities,
                    large_communities,
                    local_pref,
                })
                .await
                .map_err(refused)?;
        }
        RouteAction::Del {
            prefix,
            all: _,
            client: owner,
        } => {
            let r = client
                .delete_path(pb::DeletePathRequest {
                    client: owner,
                    prefix: prefix.unwrap_or_default(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            println!("{} route(s) withdrawn", r.withdrawn);
        }
    }
    Ok(())
}

/// Runs `petrel peer ...`. API refusals come back as errors with the
/// server's message (exit status 1).
pub async fn peer_action(socket: &Path, action: PeerAction) -> anyhow::Result<()> {
    let mut client = pb::peer_service_client::PeerServiceClient::new(api::connect(socket).await?);
    let refused = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    let peer_ref = |peer: &str| pb::PeerRef { peer: peer.into() };
    match action {
        PeerAction::Show { peer, output } => {
            let p = client
                .get_peer(peer_ref(&peer))
                .await
                .map_err(refused)?
                .into_inner();
            match output {
                Format::Table => print!("{}", peers_table(std::slice::from_ref(&p))),
                Format::Json | Format::Yaml => {
                    print_data(&peers_json(std::slice::from_ref(&p))[0], output)?
                }
            }
        }
        PeerAction::Reset { peer, soft } => {
            let kind = match soft.as_deref() {
                None => pb::ResetKind::Hard,
                Some("in") => pb::ResetKind::SoftIn,
                Some("out") => pb::ResetKind::SoftOut,
                _ => pb::ResetKind::SoftBoth,
            };
            client
                .reset_peer(pb::ResetPeerRequest {
                    peer: Some(peer_ref(&peer)),
                    kind: kind.into(),
                })
                .await
                .map_err(refused)?;
        }
        PeerAction::Disable { peer, message } => {
            client
                .disable_peer(pb::DisablePeerRequest {
                    peer: Some(peer_ref(&peer)),
                    message: message.unwrap_or_default(),
                })
                .await
                .map_err(refused)?;
        }
        PeerAction::Enable { peer } => {
            client.enable_peer(peer_ref(&peer)).await.map_err(refused)?;
        }
        PeerAction::Add(settings) => {
            client.add_peer(settings.to_pb()?).await.map_err(refused)?;
        }
        PeerAction::Update(settings) => {
            client
                .update_peer(settings.to_pb()?)
                .await
                .map_err(refused)?;
        }
        PeerAction::Del { peer } => {
            client.delete_peer(peer_ref(&peer)).await.map_err(refused)?;
        }
    }
    Ok(())
}

/// Peers as JSON values.
pub fn peers_json(peers: &[pb::Peer]) -> Value {
    Value::Array(
        peers
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "address": p.address,
                    "asn": p.asn,
                    "state": state_name(p.state),
                    "state_seconds": p.state_seconds,
                    "dynamic": p.dynamic,
                    "last_error": (!p.last_error.is_empty()).then_some(&p.last_error),
                    "capabilities": p.capabilities,
                    "hold_time": (p.hold_time > 0).then_some(p.hold_time),
                    "peer_router_id": (!p.peer_router_id.is_empty()).then_some(&p.peer_router_id),
                    "local_address": (!p.local_address.is_empty()).then_some(&p.local_address),
                    "prefixes": p.prefixes.iter().map(|c| (c.afi_safi.clone(), json!({
                        "received": c.received, "accepted": c.accepted, "advertised": c.advertised,
                    }))).collect::<serde_json::Map<String, Value>>(),
                    "messages_received": p.messages_received,
                    "messages_sent": p.messages_sent,
                    "flaps": p.flaps,
                    "stale_routes": p.stale_routes,
                    "disabled": p.disabled,
                    "bfd": p.bfd.as_ref().map(crate::bfd::bfd_json),
                })
            })
            .collect(),
    )
}

/// Peers as a table.
pub fn peers_table(peers: &[pb::Peer]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>10}  {:<11}  {:>10}  PREFIXES rcvd/accepted/advertised",
        "PEER", "ASN", "STATE", "FOR"
    );
    for p in peers {
        let prefixes: Vec<String> = p
            .prefixes
            .iter()
            .map(|c| {
                format!(
                    "{} {}/{}/{}",
                    c.afi_safi, c.received, c.accepted, c.advertised
                )
            })
            .collect();
        let name = if p.name.is_empty() || p.name == p.address {
            p.address.clone()
        } else {
            format!("{} ({})", p.address, p.name)
        };
        let _ = writeln!(
            out,
            "{:<24} {:>10}  {:<11}  {:>10}  {}",
            name,
            p.asn,
            state_name(p.state),
            duration(p.state_seconds),
            prefixes.join(", ")
        );
        if !p.capabilities.is_empty() {
            let _ = writeln!(out, "    capabilities: {}", p.capabilities.join(", "));
        }
        if let Some(b) = &p.bfd {
            let _ = writeln!(out, "    bfd: {}", crate::bfd::bfd_line(b));
        }
        if !p.last_error.is_empty() {
            let _ = writeln!(out, "    last error: {}", p.last_error);
        }
    }
    out
}

/// Fetches routes.
pub async fn fetch_routes(
    socket: &Path,
    req: pb::ListRoutesRequest,
) -> anyhow::Result<Vec<pb::Route>> {
    let mut client = pb::rib_service_client::RibServiceClient::new(api::connect(socket).await?);
    let mut stream = client.list_routes(req).await?.into_inner();
    let mut routes = Vec::new();
    while let Some(r) = stream.message().await? {
        routes.push(r);
    }
    sort_by_prefix(&mut routes);
    Ok(routes)
}

/// Routes in prefix order (the API streams a large table page by page,
/// each page in order).
fn sort_by_prefix(routes: &mut [pb::Route]) {
    routes.sort_by_cached_key(|r| r.prefix.parse::<ipnet::IpNet>().ok());
}

/// Fetches one peer's Adj-RIB-In (`received`) or Adj-RIB-Out, keeping one
/// family if asked.
pub async fn fetch_adj_rib(
    socket: &Path,
    peer: &str,
    received: bool,
    family: pb::Family,
) -> anyhow::Result<Vec<pb::Route>> {
    let mut client = pb::rib_service_client::RibServiceClient::new(api::connect(socket).await?);
    let req = pb::AdjRibRequest { peer: peer.into() };
    let refused = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    let mut stream = if received {
        client.list_adj_rib_in(req).await
    } else {
        client.list_adj_rib_out(req).await
    }
    .map_err(refused)?
    .into_inner();
    let mut routes = Vec::new();
    while let Some(r) = stream.message().await.map_err(refused)? {
        let v6 = r.prefix.contains(':');
        let keep = match family {
            pb::Family::Ipv4Unicast => !v6,
            pb::Family::Ipv6Unicast => v6,
            _ => true,
        };
        if keep {
            routes.push(r);
        }
    }
    sort_by_prefix(&mut routes);
    // A prefix with accepted and rejected paths (ADD-PATH) comes twice.
    routes.dedup_by(|later, first| {
        let same = later.prefix == first.prefix;
        if same {
            first.paths.append(&mut later.paths);
        }
        same
    });
    Ok(routes)
}

fn as_path_text(p: &pb::Path) -> String {
    p.as_path
        .iter()
        .map(|s| {
            let asns: Vec<String> = s.asns.iter().map(u32::to_string).collect();
            match s.r#type.as_str() {
                "AS_SET" => format!("{{{}}}", asns.join(" ")),
                "AS_CONFED_SEQUENCE" => format!("({})", asns.join(" ")),
                "AS_CONFED_SET" => format!("[{}]", asns.join(" ")),
                _ => asns.join(" "),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn path_json(p: &pb::Path) -> Value {
    json!({
        "best": p.best,
        "from": if p.from.is_empty() { "local" } else { p.from.as_str() },
        "path_id": p.path_id,
        "next_hop": (!p.next_hop.is_empty()).then_some(&p.next_hop),
        "next_hop_link_local": (!p.next_hop_link_local.is_empty()).then_some(&p.next_hop_link_local),
        "as_path": p.as_path.iter().map(|s| json!({"type": s.r#type, "asns": s.asns})).collect::<Vec<_>>(),
        "origin": p.origin,
        "med": p.med,
        "local_pref": p.local_pref,
        "communities": p.communities,
        "large_communities": p.large_communities,
        "extended_communities": p.extended_communities,
        "originator_id": (!p.originator_id.is_empty()).then_some(&p.originator_id),
        "cluster_list": p.cluster_list,
        "atomic_aggregate": p.atomic_aggregate,
        "rejected": p.rejected,
    })
}

/// Routes as JSON values.
pub fn routes_json(routes: &[pb::Route]) -> Value {
    Value::Array(
        routes
            .iter()
            .map(|r| {
                json!({
                    "prefix": r.prefix,
                    "paths": r.paths.iter().map(path_json).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// Runs `petrel explain PREFIX`.
pub async fn explain(socket: &Path, prefix: &str, output: Format) -> anyhow::Result<()> {
    let mut client = pb::rib_service_client::RibServiceClient::new(api::connect(socket).await?);
    let e = client
        .explain_route(pb::ExplainRouteRequest {
            prefix: prefix.into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let paths: Vec<pb::Path> = e.candidates.iter().filter_map(|c| c.path.clone()).collect();
    let route = pb::Route {
        prefix: e.prefix.clone(),
        paths,
    };
    match output {
        Format::Json | Format::Yaml => {
            let mut v = routes_json(std::slice::from_ref(&route));
            if let Some(paths) = v[0]["paths"].as_array_mut() {
                for (p, c) in paths.iter_mut().zip(&e.candidates) {
                    p["lost_because"] =
                        json!((!c.lost_because.is_empty()).then_some(&c.lost_because));
                    p["multipath"] = json!(c.multipath);
                }
            }
            v[0]["peers"] = json!(
                e.peers
                    .iter()
                    .map(|a| json!({
                        "peer": a.peer, "name": a.name, "sent": a.sent,
                        "why_not": (!a.why_not.is_empty()).then_some(&a.why_not),
                    }))
                    .collect::<Vec<_>>()
            );
            print_data(&v[0], output)?;
        }
        Format::Table => {
            let mut out = String::new();
            let _ = writeln!(out, "{}", e.prefix);
            for c in &e.candidates {
                let Some(p) = &c.path else { continue };
                let from = if p.from.is_empty() { "local" } else { &p.from };
                let verdict = if c.lost_because.is_empty() {
                    "best".to_string()
                } else {
                    format!("lost: {}", c.lost_because)
                };
                let mp = if c.multipath { ", multipath" } else { "" };
                let _ = writeln!(
                    out,
                    "  from {from:<24} via {:<24} {verdict}{mp}",
                    p.next_hop
                );
            }
            let _ = writeln!(out, "sent to:");
            for a in &e.peers {
                let what = if a.sent {
                    "yes".to_string()
                } else {
                    format!("no: {}", a.why_not)
                };
                let _ = writeln!(out, "  {:<24} {:<16} {what}", a.peer, a.name);
            }
            print!("{out}");
        }
    }
    Ok(())
}

/// Routes as a table: the best path marked `*>`, alternatives `* ` below it.
pub fn routes_table(routes: &[pb::Route]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "   {:<28} {:<24} {:<18} {:>7} {:>7}  AS PATH",
        "PREFIX", "NEXT HOP", "FROM", "LOCPRF", "MED"
    );
    for r in routes {
        for (i, p) in r.paths.iter().enumerate() {
            let mark = if p.best { "*>" } else { "* " };
            let prefix = if i == 0 { r.prefix.as_str() } else { "" };
            if p.rejected {
                let _ = writeln!(
                    out,
                    "x  {prefix:<28} rejected on import (loop, invalid or filtered)"
                );
                continue;
            }
            let origin = match p.origin.as_str() {
                "IGP" => "i",
                "EGP" => "e",
                _ => "?",
            };
            let _ = writeln!(
                out,
                "{mark} {:<28} {:<24} {:<18} {:>7} {:>7}  {} {}",
                prefix,
                if p.next_hop.is_empty() {
                    "-"
                } else {
                    &p.next_hop
                },
                if p.from.is_empty() { "local" } else { &p.from },
                p.local_pref.map(|l| l.to_string()).unwrap_or_default(),
                p.med.map(|m| m.to_string()).unwrap_or_default(),
                as_path_text(p),
                origin
            );
        }
    }
    out
}

/// What `petrel watch` asks for.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Only these kinds of events (repeatable; default all).
    #[arg(long = "type", value_enum)]
    pub types: Vec<WatchType>,
    /// Best-path events only for this prefix and the prefixes inside it.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Start after this cursor (the last one a previous watch printed):
    /// events still buffered are shown first.
    #[arg(long)]
    pub resume: Option<String>,
    /// Stop after this many events (default: run until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    /// Output format: a line per event, or one JSON object per line
    /// (`json`), or YAML documents.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Format,
}

/// Event kinds for `petrel watch --type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchType {
    /// Peers added, removed, changing state.
    Peer,
    /// Best-path changes.
    BestPath,
}

/// An event as JSON.
pub fn event_json(e: &pb::Event) -> Value {
    use pb::event::Event as E;
    let mut v = match &e.event {
        Some(E::PeerAdded(p)) => {
            json!({"type": "peer-added", "name": p.name, "address": p.address})
        }
        Some(E::PeerRemoved(p)) => {
            json!({"type": "peer-removed", "name": p.name, "address": p.address})
        }
        Some(E::PeerState(p)) => json!({
            "type": "peer-state",
            "name": p.name,
            "address": p.address,
            "from": state_name(p.from),
            "to": state_name(p.to),
            "last_error": (!p.last_error.is_empty()).then_some(&p.last_error),
        }),
        Some(E::BestPath(b)) => json!({
            "type": "best-path",
            "prefix": b.prefix,
            "best": b.best.as_ref().map(path_json),
            "next_hops": b.next_hops,
        }),
        None => json!({"type": "unknown"}),
    };
    if let Value::Object(m) = &mut v {
        m.insert("cursor".into(), json!(e.cursor));
        m.insert("time_unix_ms".into(), json!(e.time_unix_ms));
    }
    v
}

/// An event as one line for people.
pub fn event_line(e: &pb::Event) -> String {
    use pb::event::Event as E;
    let what = match &e.event {
        Some(E::PeerAdded(p)) => format!("peer {} ({}) added", p.name, p.address),
        Some(E::PeerRemoved(p)) => format!("peer {} ({}) removed", p.name, p.address),
        Some(E::PeerState(p)) => {
            let mut s = format!(
                "peer {} ({}) {} -> {}",
                p.name,
                p.address,
                state_name(p.from),
                state_name(p.to)
            );
            if !p.last_error.is_empty() && p.to != pb::SessionState::Established as i32 {
                let _ = write!(s, ": {}", p.last_error);
            }
            s
        }
        Some(E::BestPath(b)) => match &b.best {
            None => format!("{} withdrawn", b.prefix),
            Some(p) => {
                let from = if p.from.is_empty() {
                    "local"
                } else {
                    p.from.as_str()
                };
                let mut s = format!("{} best from {from}", b.prefix);
                if !b.next_hops.is_empty() {
                    let _ = write!(s, " via {}", b.next_hops.join(", "));
                }
                let path = as_path_text(p);
                if !path.is_empty() {
                    let _ = write!(s, " as-path {path}");
                }
                s
            }
        },
        None => "unknown event".into(),
    };
    format!("{}  {}  {what}", time_text(e.time_unix_ms), e.cursor)
}

/// `HH:MM:SS.mmm` in UTC.
fn time_text(ms: u64) -> String {
    let day_ms = ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

/// `petrel watch`: prints events as they come. A watcher that falls behind
/// resumes by itself from its last cursor; any other end is an error that
/// says how to resume.
pub async fn watch(socket: &Path, args: WatchArgs) -> anyhow::Result<()> {
    let mut client = pb::watch_service_client::WatchServiceClient::new(api::connect(socket).await?);
    let mut request = pb::WatchEventsRequest {
        resume_after: args.resume.clone().unwrap_or_default(),
        types: args
            .types
            .iter()
            .map(|t| match t {
                WatchType::Peer => pb::EventType::Peer as i32,
                WatchType::BestPath => pb::EventType::BestPath as i32,
            })
            .collect(),
        prefix: args.prefix.clone().unwrap_or_default(),
    };
    let mut printed: u64 = 0;
    if args.count == Some(0) {
        return Ok(());
    }
    // Bounded: each round either prints events or ends; resumes happen only
    // after a lag, which needs 8192 new events.
    loop {
        let mut stream = client
            .watch_events(request.clone())
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner();
        loop {
            match stream.message().await {
                Ok(Some(e)) => {
                    match args.output {
                        Format::Table => println!("{}", event_line(&e)),
                        Format::Json => println!("{}", serde_json::to_string(&event_json(&e))?),
                        Format::Yaml => {
                            print!("---\n{}", serde_saphyr::to_string(&event_json(&e))?)
                        }
                    }
                    request.resume_after = e.cursor;
                    printed += 1;
                    if args.count.is_some_and(|n| printed >= n) {
                        return Ok(());
                    }
                }
                Ok(None) => anyhow::bail!(
                    "the agent ended the watch; resume with --resume {}",
                    request.resume_after
                ),
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    // The agent says where this watch was, also when nothing
                    // passed the filters yet: resume exactly there.
                    if let Some(c) = s
                        .metadata()
                        .get(api::RESUME_CURSOR)
                        .and_then(|v| v.to_str().ok())
                    {
                        request.resume_after = c.to_string();
                    }
                    if request.resume_after.is_empty() {
                        anyhow::bail!("{}", s.message());
                    }
                    tracing::debug!("fell behind; resuming from {}", request.resume_after);
                    break;
                }
                Err(s) if request.resume_after.is_empty() => anyhow::bail!("{}", s.message()),
                Err(s) => anyhow::bail!(
                    "{}; resume with --resume {}",
                    s.message(),
                    request.resume_after
                ),
            }
        }
    }
}

/// `petrel peers`: every peer and its session.
pub async fn peers(socket: &Path, output: Format) -> anyhow::Result<()> {
    let peers = fetch_peers(socket).await?;
    match output {
        Format::Table => print!("{}", peers_table(&peers)),
        Format::Json | Format::Yaml => print_data(&peers_json(&peers), output)?,
    }
    Ok(())
}

/// What `petrel rib` shows.
#[derive(Debug, Clone, clap::Args)]
pub struct RibArgs {
    /// IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// IPv6 only.
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Only this prefix (or address).
    pub prefix: Option<String>,
    /// With PREFIX: also the more specific prefixes inside it.
    #[arg(long, requires = "prefix")]
    pub longer: bool,
    /// What this peer sent us (its Adj-RIB-In), instead of the Loc-RIB.
    #[arg(long, value_name = "PEER", conflicts_with_all = ["advertised_to", "prefix"])]
    pub received_from: Option<String>,
    /// What we send this peer (its Adj-RIB-Out), instead of the Loc-RIB.
    #[arg(long, value_name = "PEER", conflicts_with = "prefix")]
    pub advertised_to: Option<String>,
    /// Only the table's size (prefixes, paths, attribute sets), from
    /// counters: cheap enough to poll while a full table comes in.
    #[arg(long, conflicts_with_all = ["prefix", "received_from", "advertised_to", "ipv4", "ipv6"])]
    pub summary: bool,
}

/// `petrel rib`: best paths and alternatives, or one peer's Adj-RIB-In or
/// -Out.
pub async fn rib(socket: &Path, args: RibArgs, output: Format) -> anyhow::Result<()> {
    if args.summary {
        return crate::rib_summary::show(socket, output).await;
    }
    if let Some(p) = &args.prefix {
        api::parse_prefix(p).map_err(anyhow::Error::msg)?;
    }
    let family = match (args.ipv4, args.ipv6) {
        (true, _) => pb::Family::Ipv4Unicast,
        (_, true) => pb::Family::Ipv6Unicast,
        _ => pb::Family::Unspecified,
    };
    let routes = match (args.received_from, args.advertised_to) {
        (Some(peer), _) => fetch_adj_rib(socket, &peer, true, family).await?,
        (_, Some(peer)) => fetch_adj_rib(socket, &peer, false, family).await?,
        _ => {
            fetch_routes(
                socket,
                pb::ListRoutesRequest {
                    family: family as i32,
                    prefix: args.prefix.unwrap_or_default(),
                    longer: args.longer,
                },
            )
            .await?
        }
    };
    match output {
        Format::Table => print!("{}", routes_table(&routes)),
        Format::Json | Format::Yaml => print_data(&routes_json(&routes), output)?,
    }
    Ok(())
}
