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

/// The families some pool of `pools` could serve: those with a pool of
/// the family at all (a node with IPv4 pools only gets no IPv6 address,
/// and that is no error).
fn families(pools: &[Pool]) -> Vec<Family> {
    let mut f: Vec<Family> = pools.iter().map(|p| Family::of(&p.cidr)).collect();
    f.sort();
    f.dedup();
    f
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
        return adds
            .iter()
            .map(|_| {
                fail(
                    code::INTERNAL,
                    format!("no IPPool exists: node {} has no address to give", cx.node),
                    "create an IPPool (petrel.dev/v1alpha1)",
                )
            })
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
                    // other node's.
                    if a.holder.node != cx.node || keep.contains(&a.holder.handle) {
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
                return fail(
                    code::NOT_AVAILABLE,
                    format!("no IPPool exists: node {} has no address to give", cx.node),
                    "",
                );
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
