//! One CNI request against the node's blocks: the allocation the agent
//! does for `petrel-ipam`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use cni::wire::{Assigned, Failure, Reply, Request, code};
use ipam::pod::{
    BlockStore, DriveError, Family, Holder, Pool, Release, Settings, Step, allocate_many,
    next_step, release,
};
use ipnet::IpNet;

/// The IPv6 gateway of every pod: link-local, on the host side of each
/// pod's link.
const GATEWAY_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// What a request is answered with and against.
pub(crate) struct Context<'a, S> {
    pub(crate) store: &'a S,
    pub(crate) node: &'a str,
    /// `None`: the agent has not read its configuration yet.
    pub(crate) pools: Option<&'a super::PoolsView>,
    pub(crate) now: u64,
    pub(crate) settings: Settings,
}

fn fail(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Reply {
    Reply::Error(Failure {
        code,
        msg: msg.into(),
        details: details.into(),
    })
}

fn drive_failure(e: &DriveError) -> Failure {
    let code = match e {
        // Nothing to hand out is not cured by asking again soon.
        DriveError::Exhausted(_) | DriveError::Release(_) => code::INTERNAL,
        DriveError::Store(_) | DriveError::Contended(_) => code::TRY_AGAIN,
    };
    Failure {
        code,
        msg: e.to_string(),
        details: String::new(),
    }
}

/// The families a pod on this node gets an address of: those with a pool
/// that serves the node (selects it, is not disabled, allows workloads). A
/// node with IPv4 pools only gets no IPv6 address, and that is no error.
fn families(pools: &[Pool]) -> Vec<Family> {
    let mut f: Vec<Family> = pools
        .iter()
        .filter(|p| p.selects_node && !p.disabled && p.allows_use)
        .map(|p| Family::of(&p.cidr))
        .collect();
    f.sort();
    f.dedup();
    f
}

/// Why no pool serves the node: none exists, or each is left out and why.
fn no_pool(node: &str, pools: &[Pool]) -> (String, String) {
    let Some(first) = pools.first() else {
        return (
            format!("no IPPool exists: node {node} has no address to give"),
            "create an IPPool (petrel.dev/v1alpha1)".into(),
        );
    };
    let step = next_step(
        node,
        Family::of(&first.cidr),
        pools,
        &Default::default(),
        0,
        0,
        &BTreeSet::new(),
    );
    match step {
        Step::Exhausted(e) => (e.to_string(), String::new()),
        _ => (format!("no IPPool serves node {node}"), String::new()),
    }
}

/// The pools to hand out from, or why there are none to use: the agent is
/// starting, or the cluster's IPAM mode is not petrel's.
fn usable<'a, S>(cx: &Context<'a, S>) -> Result<&'a [Pool], Failure> {
    match cx.pools {
        None => Err(Failure {
            code: code::TRY_AGAIN,
            msg: format!("the petrel agent on {} is starting", cx.node),
            details: "it has not read its IPPools yet".into(),
        }),
        Some(v) if !v.petrel => Err(Failure {
            code: code::INTERNAL,
            msg: "BGPConfiguration ipamMode is Kubernetes: pod addresses come from the nodes' spec.podCIDRs (host-local), not from petrel-ipam".into(),
            details: "set ipamMode: Petrel in the BGPConfiguration to hand out addresses from IPPools".into(),
        }),
        Some(v) => Ok(&v.pools),
    }
}

/// Answers a burst of ADDs together: one read and one write per block
/// touched per family, rather than one of each per ADD. The replies, in
/// order.
pub(crate) async fn add_many<S: BlockStore>(
    cx: &Context<'_, S>,
    adds: Vec<(cni::wire::Attachment, Option<String>)>,
) -> Vec<Reply> {
    let pools = match usable(cx) {
        Ok(p) => p,
        Err(f) => return adds.iter().map(|_| Reply::Error(f.clone())).collect(),
    };
    let fams = families(pools);
    if fams.is_empty() {
        let (msg, details) = no_pool(cx.node, pools);
        return adds
            .iter()
            .map(|_| fail(code::INTERNAL, msg.clone(), details.clone()))
            .collect();
    }
    let holders: Vec<Holder> = adds
        .into_iter()
        .map(|(attachment, pod)| Holder {
            handle: attachment.handle(),
            pod,
            node: cx.node.to_string(),
        })
        .collect();
    // Per holder: what it got, and why it failed if it did.
    let mut got: Vec<(Vec<Assigned>, Option<Failure>)> = vec![(Vec::new(), None); holders.len()];
    for family in fams {
        let results = allocate_many(cx.store, family, pools, &holders, cx.now, cx.settings).await;
        for ((list, failed), r) in got.iter_mut().zip(results) {
            match r {
                // Failed in another family: nothing more for it.
                _ if failed.is_some() => {}
                // The block's prefix, and for IPv4 its first address as
                // the gateway: main plugins (`ptp`, `bridge`) need an IPv4
                // gateway inside the address's prefix to route through it,
                // and `ptp` removes the prefix's connected route, which a
                // /32 does not have. IPv6 routes through a link-local
                // gateway (on-link everywhere), not the block's first
                // address, which is its Subnet-Router anycast address.
                Ok(a) => list.push(Assigned {
                    address: IpNet::new(a.addr, a.block.prefix_len())
                        .unwrap_or(IpNet::from(a.addr)),
                    gateway: match a.block {
                        IpNet::V4(b) => IpAddr::V4(b.network()),
                        IpNet::V6(_) => IpAddr::V6(GATEWAY_V6),
                    },
                }),
                Err(e) => *failed = Some(drive_failure(&e)),
            }
        }
    }
    let mut replies = Vec::with_capacity(holders.len());
    for (h, (addresses, failed)) in holders.iter().zip(got) {
        match failed {
            None => replies.push(Reply::Addresses { addresses }),
            Some(f) => {
                // All families or none: what another family got goes back,
                // so a retried ADD starts clean.
                if !addresses.is_empty() {
                    let _ =
                        release(cx.store, Release::Handle(&h.handle), cx.now, cx.settings).await;
                }
                replies.push(Reply::Error(f));
            }
        }
    }
    replies
}

/// Answers `request`.
pub(crate) async fn handle<S: BlockStore>(cx: &Context<'_, S>, request: Request) -> Reply {
    match request {
        Request::Add { attachment, pod } => add_many(cx, vec![(attachment, pod)])
            .await
            .pop()
            .unwrap_or_else(|| fail(code::INTERNAL, "no answer", "")),
        Request::Del { attachment } => {
            match release(
                cx.store,
                Release::Handle(&attachment.handle()),
                cx.now,
                cx.settings,
            )
            .await
            {
                Ok(released) => Reply::Done { released },
                Err(e) => Reply::Error(drive_failure(&e)),
            }
        }
        Request::Check {
            attachment,
            addresses,
        } => {
            let blocks = match cx.store.list().await {
                Ok(b) => b,
                Err(e) => return Reply::Error(drive_failure(&DriveError::Store(e))),
            };
            let handle = attachment.handle();
            let held: BTreeSet<IpAddr> = blocks
                .iter()
                .flat_map(|(b, _)| b.held_by(&handle).collect::<Vec<_>>())
                .collect();
            let wanted: BTreeSet<IpAddr> = addresses.into_iter().collect();
            if held == wanted {
                Reply::Done { released: vec![] }
            } else {
                fail(
                    code::INTERNAL,
                    format!("attachment {handle} holds other addresses than its result says"),
                    format!("recorded {held:?}, the result has {wanted:?}"),
                )
            }
        }
        Request::Gc { valid } => {
            let keep: BTreeSet<String> = valid.iter().map(cni::wire::Attachment::handle).collect();
            let blocks = match cx.store.list().await {
                Ok(b) => b,
                Err(e) => return Reply::Error(drive_failure(&DriveError::Store(e))),
            };
            let mut released = Vec::new();
            for (b, _) in &blocks {
                for a in &b.allocations {
                    // Only this node's attachments: the runtime knows no
                    // other node's, nor the node's tunnel address.
                    if a.holder.node != cx.node
                        || a.holder.is_tunnel()
                        || keep.contains(&a.holder.handle)
                    {
                        continue;
                    }
                    let what = Release::Address {
                        addr: b.address(a.ordinal),
                        sequence: a.sequence,
                    };
                    match release(cx.store, what, cx.now, cx.settings).await {
                        Ok(done) => released.extend(done),
                        // Given back or handed out again meanwhile: not ours
                        // to free any more.
                        Err(DriveError::Release(_)) => {}
                        Err(e) => return Reply::Error(drive_failure(&e)),
                    }
                }
            }
            Reply::Done { released }
        }
        Request::Status => {
            let pools = match usable(cx) {
                Ok(p) => p,
                Err(f) => return Reply::Error(f),
            };
            let blocks = match cx.store.list().await {
                Ok(l) => l.into_iter().map(|(b, _)| (b.cidr, b)).collect(),
                Err(e) => return Reply::Error(drive_failure(&DriveError::Store(e))),
            };
            let fams = families(pools);
            if fams.is_empty() {
                let (msg, details) = no_pool(cx.node, pools);
                return fail(code::NOT_AVAILABLE, msg, details);
            }
            for family in fams {
                let step = next_step(
                    cx.node,
                    family,
                    pools,
                    &blocks,
                    cx.now,
                    cx.settings.cooldown,
                    &BTreeSet::new(),
                );
                if let Step::Exhausted(e) = step {
                    return fail(code::NOT_AVAILABLE, e.to_string(), "");
                }
            }
            Reply::Done { released: vec![] }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::wire::Attachment;
    use ipam_store::FileBlocks;

    fn pool(name: &str, cidr: &str, selects_node: bool) -> Pool {
        Pool {
            name: name.into(),
            cidr: cidr.parse().expect("cidr"),
            block_prefix: if cidr.contains(':') { 122 } else { 28 },
            selects_node,
            disabled: false,
            strict_affinity: false,
            allows_use: true,
        }
    }

    fn add(id: &str) -> Request {
        Request::Add {
            attachment: Attachment {
                container_id: id.into(),
                if_name: "eth0".into(),
            },
            pod: None,
        }
    }

    #[tokio::test]
    async fn a_family_whose_pools_leave_the_node_out_gives_no_address_and_no_error() {
        let dir = std::env::temp_dir().join(format!("petrel-agent-ipam-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = FileBlocks::new(dir.join("state.json"));
        let view = |pools: Vec<Pool>| super::super::PoolsView {
            petrel: true,
            pools,
            tunnel: None,
        };
        let both = view(vec![
            pool("v4", "10.0.0.0/24", true),
            pool("v6-elsewhere", "fd00::/120", false),
        ]);
        let cx = Context {
            store: &store,
            node: "n1",
            pools: Some(&both),
            now: 0,
            settings: Settings::default(),
        };
        match handle(&cx, add("a")).await {
            Reply::Addresses { addresses } => {
                assert_eq!(addresses.len(), 1);
                let a = addresses[0].address;
                // The block's prefix, its first address the gateway, and
                // the first address after it handed out.
                assert_eq!(a.prefix_len(), 28);
                assert_eq!(addresses[0].gateway, a.network());
                assert_eq!(
                    u32::from(
                        a.addr()
                            .to_string()
                            .parse::<std::net::Ipv4Addr>()
                            .expect("v4")
                    ) & 15,
                    1
                );
            }
            other => panic!("{other:?}"),
        }
        // No pool serves the node: the error says which and why.
        let none = view(vec![pool("v4-elsewhere", "10.1.0.0/24", false)]);
        let cx = Context {
            pools: Some(&none),
            ..cx
        };
        match handle(&cx, add("b")).await {
            Reply::Error(f) => {
                assert!(f.msg.contains("v4-elsewhere (nodeSelector)"), "{}", f.msg)
            }
            other => panic!("{other:?}"),
        }
        match handle(&cx, Request::Status).await {
            Reply::Error(f) => assert_eq!(f.code, code::NOT_AVAILABLE),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
