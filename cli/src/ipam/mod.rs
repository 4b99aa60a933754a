//! `petrel ipam show | check | release`: the pod address blocks, in a
//! cluster (IPAMBlock objects, through KUBECONFIG or the in-cluster
//! configuration) or on a host (`--state FILE`).

mod check;
mod show;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ipam::pod::{Block, BlockStore, DriveError, Release, Settings, release};
use ipam_store::{FileBlocks, KubeBlocks};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

pub use check::{Finding, Inputs, Report, check};

use crate::Format;

/// Where the blocks are.
#[derive(Debug, Clone, clap::Args)]
pub struct Where {
    /// The state file of a host without a cluster (`petrel agent --source
    /// files:DIR --ipam-state FILE`); without it, the cluster's IPAMBlocks.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// With `--state`: the agents' source directory, for the IPPools and
    /// the Nodes' addresses. In a cluster they come from the API server.
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
}

enum Store {
    Kube(Box<KubeBlocks>, kube::Client),
    File(FileBlocks),
}

impl Store {
    async fn open(w: &Where) -> anyhow::Result<Store> {
        Ok(match &w.state {
            Some(f) => Store::File(FileBlocks::new(f)),
            None => {
                let client = kube::Client::try_default().await.context(
                    "cannot reach the Kubernetes API server (KUBECONFIG or in-cluster); --state FILE for a host without a cluster",
                )?;
                Store::Kube(Box::new(KubeBlocks::new(client.clone())), client)
            }
        })
    }

    async fn list(&self) -> anyhow::Result<Vec<(Block, String)>> {
        let listed = match self {
            Store::Kube(s, _) => s.list().await,
            Store::File(s) => s.list().await,
        };
        listed.context("reading the blocks")
    }

    async fn release(&self, addr: IpAddr, sequence: u64) -> Result<Vec<IpAddr>, DriveError> {
        let what = Release::Address { addr, sequence };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match self {
            Store::Kube(s, _) => release(s.as_ref(), what, now, Settings::default()).await,
            Store::File(s) => release(s, what, now, Settings::default()).await,
        }
    }

    fn client(&self) -> Option<&kube::Client> {
        match self {
            Store::Kube(_, c) => Some(c),
            Store::File(_) => None,
        }
    }
}

/// IPPools' CIDRs by name (in a cluster).
async fn pools(client: &kube::Client) -> BTreeMap<String, IpNet> {
    let api: Api<crds::IPPool> = Api::all(client.clone());
    match api.list(&ListParams::default()).await {
        Ok(l) => l
            .items
            .into_iter()
            .filter_map(|p| Some((p.metadata.name?, p.spec.cidr?)))
            .collect(),
        // A view without CIDRs is still a view.
        Err(_) => BTreeMap::new(),
    }
}

/// `petrel ipam show`.
pub async fn show(w: &Where, output: Format) -> anyhow::Result<()> {
    let store = Store::open(w).await?;
    let blocks: Vec<Block> = store.list().await?.into_iter().map(|(b, _)| b).collect();
    let pools = match (store.client(), &w.source) {
        (Some(c), _) => pools(c).await,
        (None, Some(dir)) => model::files::load_dir(dir)
            .0
            .ip_pools
            .into_iter()
            .filter_map(|p| Some((p.name, p.spec.cidr?)))
            .collect(),
        (None, None) => BTreeMap::new(),
    };
    let v = show::view(&blocks, &pools);
    match output {
        Format::Json => crate::client::print_data(&v, output),
        _ => {
            print!("{}", show::table(&v));
            Ok(())
        }
    }
}

/// What `petrel ipam check` reads besides the blocks.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The node this runs on: its kernel routes and its agent's RIB are
    /// checked too.
    #[arg(long)]
    pub node: Option<String>,
    /// The agent's API socket on this node (its RIB).
    #[arg(long, default_value = api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Write the report (JSON) here, for `petrel ipam release --from-report`.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// This node's host routes to addresses of `within`, with their interface.
async fn kernel_routes(within: &[IpNet]) -> anyhow::Result<Vec<(IpAddr, String)>> {
    let kernel = route_sync::Kernel::connect(0).context("reading the kernel's routes")?;
    let routes = kernel
        .dump(0)
        .await
        .context("reading the kernel's routes")?;
    let mut names = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        for e in dir.flatten() {
            if let Ok(i) = std::fs::read_to_string(e.path().join("ifindex"))
                && let Ok(i) = i.trim().parse::<u32>()
            {
                names.insert(i, e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    Ok(routes
        .into_iter()
        .filter_map(|k| {
            let r = k.route;
            let host = r.prefix.prefix_len() == r.prefix.max_prefix_len();
            let [hop] = r.next_hops.as_slice() else {
                return None;
            };
            let oif = hop.ifindex?;
            (host
                && hop.gateway.is_none()
                && r.kind == route_sync::RouteKind::Unicast
                && within.iter().any(|p| p.contains(&r.prefix.addr())))
            .then(|| {
                let dev = names
                    .get(&oif)
                    .cloned()
                    .unwrap_or_else(|| format!("if{oif}"));
                (r.prefix.addr(), dev)
            })
        })
        .collect())
}

/// This node's tunnel addresses (in `blocks`) that one of its interfaces
/// carries.
async fn tunnel_on_interface(
    blocks: &[(Block, String)],
    node: &str,
) -> anyhow::Result<BTreeSet<IpAddr>> {
    let kernel = route_sync::Kernel::connect(0).context("reading the kernel's addresses")?;
    let tunnel = ipam::pod::Holder::tunnel(node);
    let mut on = BTreeSet::new();
    for addr in blocks.iter().flat_map(|(b, _)| b.held_by(&tunnel.handle)) {
        if kernel
            .interface_with(addr)
            .await
            .context("reading the kernel's addresses")?
            .is_some()
        {
            on.insert(addr);
        }
    }
    Ok(on)
}

/// The agent's RIB: prefix and next hop of every best path.
async fn rib(socket: &Path) -> anyhow::Result<Vec<(IpNet, Option<IpAddr>)>> {
    let routes =
        crate::client::fetch_routes(socket, proto::v1::ListRoutesRequest::default()).await?;
    Ok(routes
        .into_iter()
        .filter_map(|r| {
            let prefix: IpNet = r.prefix.parse().ok()?;
            let best = r.paths.iter().find(|p| p.best)?;
            Some((prefix, best.next_hop.parse().ok()))
        })
        .collect())
}

/// `petrel ipam check`: prints the findings; exit status 1 when there is
/// any.
pub async fn run_check(w: &Where, args: &CheckArgs, output: Format) -> anyhow::Result<bool> {
    let store = Store::open(w).await?;
    let blocks = store.list().await?;
    let mut inputs = Inputs {
        node: args.node.clone(),
        blocks,
        ..Inputs::default()
    };
    if let Some(client) = store.client() {
        let pods: Api<Pod> = Api::all(client.clone());
        let list = pods
            .list(&ListParams::default())
            .await
            .context("listing Pods")?;
        inputs.pods = Some(
            list.items
                .into_iter()
                .filter_map(|p| {
                    let key = format!("{}/{}", p.metadata.namespace?, p.metadata.name?);
                    Some((key, p.spec.and_then(|s| s.node_name)))
                })
                .collect(),
        );
        let nodes: Api<Node> = Api::all(client.clone());
        for n in nodes
            .list(&ListParams::default())
            .await
            .context("listing Nodes")?
            .items
        {
            let name = n.metadata.name.unwrap_or_default();
            for a in n.status.and_then(|s| s.addresses).unwrap_or_default() {
                if let Ok(ip) = a.address.parse() {
                    inputs.node_ips.insert(ip, name.clone());
                }
            }
        }
    }
    if let Some(dir) = &w.source {
        let (snapshot, _) = model::files::load_dir(dir);
        for n in snapshot.nodes {
            for ip in n.internal_ips {
                inputs.node_ips.insert(ip, n.name.clone());
            }
        }
    }
    if let Some(node) = &args.node {
        let mut within: Vec<IpNet> = match (store.client(), &w.source) {
            (Some(c), _) => pools(c).await.into_values().collect(),
            (None, Some(dir)) => model::files::load_dir(dir)
                .0
                .ip_pools
                .into_iter()
                .filter_map(|p| p.spec.cidr)
                .collect(),
            (None, None) => Vec::new(),
        };
        within.extend(inputs.blocks.iter().map(|(b, _)| b.cidr));
        inputs.kernel = Some(kernel_routes(&within).await?);
        inputs.tunnel_on_interface = Some(tunnel_on_interface(&inputs.blocks, node).await?);
        match rib(&args.socket).await {
            Ok(r) => inputs.rib = Some(r),
            Err(e) => eprintln!("petrel: the RIB is not checked: {e:#}"),
        }
    }
    let report = check(&inputs);
    if let Some(path) = &args.report {
        let text = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    match output {
        Format::Json => crate::client::print_data(&serde_json::to_value(&report)?, output)?,
        _ => {
            for f in &report.findings {
                println!("{f}");
            }
            for s in &report.skipped {
                println!("not checked: {s}");
            }
            if report.findings.is_empty() {
                println!("no inconsistency found in {} blocks", report.versions.len());
            }
        }
    }
    Ok(report.findings.is_empty())
}

/// `petrel ipam release --from-report FILE`: gives back the addresses a
/// report found allocated but unused, if no block they are in changed
/// since the report was made.
pub async fn release_from_report(w: &Where, report: &Path, dry_run: bool) -> anyhow::Result<()> {
    let text = std::fs::read(report).with_context(|| format!("reading {}", report.display()))?;
    let report: Report = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not a report of `petrel ipam check`",
            report.display()
        )
    })?;
    let store = Store::open(w).await?;
    let now: BTreeMap<IpNet, String> = store
        .list()
        .await?
        .into_iter()
        .map(|(b, v)| (b.cidr, v))
        .collect();
    let wanted: Vec<(IpAddr, u64, IpNet)> = report
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::AllocatedUnused {
                address,
                sequence,
                block,
                ..
            } => Some((*address, *sequence, *block)),
            _ => None,
        })
        .collect();
    let stale: Vec<String> = wanted
        .iter()
        .map(|(_, _, b)| b)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|b| report.versions.get(b) != now.get(b))
        .map(|b| {
            format!(
                "{b} (version {} then, {} now)",
                report.versions.get(b).map_or("none", String::as_str),
                now.get(b).map_or("deleted", String::as_str)
            )
        })
        .collect();
    if !stale.is_empty() {
        bail!(
            "the report is stale: {} changed since it was made; run `petrel ipam check --report FILE` again",
            stale.join(", ")
        );
    }
    for f in &report.findings {
        if !matches!(f, Finding::AllocatedUnused { .. }) {
            println!("not released (fix by hand): {f}");
        }
    }
    for (addr, sequence, block) in wanted {
        if dry_run {
            println!("would give back {addr} (block {block}, sequence {sequence})");
            continue;
        }
        match store.release(addr, sequence).await {
            Ok(_) => println!("gave back {addr} (block {block})"),
            Err(e) => println!("did not give back {addr}: {e}"),
        }
    }
    Ok(())
}
