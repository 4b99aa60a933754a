//! Pod IPAM's blocks in a real API server: every write is a
//! compare-and-swap on `resourceVersion`, every delete carries
//! preconditions, and the API server — not petrel — decides which of several
//! racing writers wins. Runs on the test's own kube-apiserver (or the
//! cluster `PETREL_TEST_KUBECONFIG` names).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipam::pod::{
    Allocated, Block, BlockStore, DriveError, Exhausted, Family, Holder, Pool, Release, Settings,
    StoreError, allocate, release, release_blocks,
};
use ipam_store::KubeBlocks;
use ipnet::IpNet;
use kube::api::{Api, DeleteParams, ListParams};
use testkit::KubeEnv;

fn pool(name: &str, cidr: &str, block_prefix: u8, strict: bool) -> Pool {
    Pool {
        name: name.to_string(),
        cidr: cidr.parse().expect("cidr"),
        block_prefix,
        selects_node: true,
        disabled: false,
        strict_affinity: strict,
        workloads: true,
    }
}

fn holder(handle: String, node: &str) -> Holder {
    Holder {
        handle,
        pod: None,
        node: node.to_string(),
    }
}

/// Deletes the blocks of `pools` (on an external cluster they would outlive
/// the test).
async fn remove_blocks(client: &kube::Client, pools: &[&str]) {
    let api: Api<crds::IPAMBlock> = Api::all(client.clone());
    let list = api.list(&ListParams::default()).await.expect("list");
    for b in list.items {
        if pools.contains(&b.spec.pool.as_str()) {
            let name = b.metadata.name.unwrap_or_default();
            let _ = api.delete(&name, &DeleteParams::default()).await;
        }
    }
}

/// The blocks of `pool` as the API server has them, by CIDR.
async fn stored(store: &KubeBlocks, pool: &str) -> BTreeMap<IpNet, Block> {
    store
        .list()
        .await
        .expect("list")
        .into_iter()
        .filter(|(b, _)| b.pool == pool)
        .map(|(b, _)| (b.cidr, b))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_allocations_on_three_nodes_are_distinct_and_recorded() {
    let mut env = KubeEnv::start("kube-ipam-concurrent").await;
    env.install_crds().await;
    let client = env.client();
    let name = env.name("pods");
    // 16 blocks of 15 (the first address of each is its gateway): 200
    // addresses fill 14 of them.
    let pools = Arc::new(vec![pool(&name, "10.250.0.0/24", 28, false)]);
    let nodes = ["n1", "n2", "n3"];

    // Each node writes through its own client, with four requests of its
    // own in flight at once: the API server sees conflicting replaces of
    // one block (a node's own) and creates of one name (a claim).
    let in_flight: Vec<Arc<tokio::sync::Semaphore>> = (0..3)
        .map(|_| Arc::new(tokio::sync::Semaphore::new(4)))
        .collect();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let node = nodes[i % 3];
        let store = KubeBlocks::new(client.clone());
        let pools = pools.clone();
        let turn = in_flight[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            let _turn = turn.acquire().await.expect("semaphore");
            let h = holder(format!("c{i}/eth0"), node);
            allocate(&store, Family::V4, &pools, &h, 100, Settings::default())
                .await
                .map(|a| (h, a))
        }));
    }
    let mut got: Vec<(Holder, Allocated)> = Vec::new();
    for t in tasks {
        got.push(t.await.expect("task").expect("an address"));
    }
    let distinct: BTreeSet<IpAddr> = got.iter().map(|(_, a)| a.addr).collect();
    assert_eq!(distinct.len(), 200, "an address was handed out twice");

    // What the API server holds is exactly what was handed out: each
    // address once, under its holder, in the block the answer named.
    let store = KubeBlocks::new(client.clone());
    let blocks = stored(&store, &name).await;
    let mut recorded = BTreeMap::new();
    for b in blocks.values() {
        for a in &b.allocations {
            let prev =
                recorded.insert(b.address(a.ordinal), (a.holder.clone(), b.cidr, a.sequence));
            assert!(prev.is_none(), "{} recorded twice", b.address(a.ordinal));
        }
    }
    assert_eq!(recorded.len(), 200);
    for (h, a) in &got {
        assert_eq!(
            recorded.get(&a.addr),
            Some(&(h.clone(), a.block, a.sequence)),
            "{} as recorded",
            a.addr
        );
        let owner = blocks[&a.block].node.as_deref();
        assert_eq!(a.borrowed, owner != Some(h.node.as_str()));
    }
    // Each node has blocks of its own; addresses pack into them.
    for node in nodes {
        let own = blocks
            .values()
            .filter(|b| b.node.as_deref() == Some(node))
            .count();
        assert!(own >= 4, "{node} has {own} blocks");
    }
    assert!(
        blocks.len() <= 15,
        "{} blocks for 200 addresses",
        blocks.len()
    );

    // A repeated ADD for an attachment gets its address again.
    let (h, first) = &got[17];
    let again = allocate(&store, Family::V4, &pools, h, 200, Settings::default())
        .await
        .expect("again");
    assert_eq!(again.addr, first.addr);

    // Everything given back, twice over (DEL is idempotent), concurrently.
    let mut tasks = Vec::new();
    for (h, _) in got.iter().chain(got.iter()) {
        let store = KubeBlocks::new(client.clone());
        let handle = h.handle.clone();
        tasks.push(tokio::spawn(async move {
            release(&store, Release::Handle(&handle), 300, Settings::default()).await
        }));
    }
    let mut freed = 0;
    for t in tasks {
        freed += t.await.expect("task").expect("released").len();
    }
    assert_eq!(freed, 200, "each address given back once");
    let blocks = stored(&store, &name).await;
    assert!(blocks.values().all(|b| b.allocations.is_empty()));

    // Empty blocks go after the grace period, each node keeping one.
    for node in nodes {
        release_blocks(&store, node, 1000, 60)
            .await
            .expect("released blocks");
    }
    let blocks = stored(&store, &name).await;
    let kept: Vec<Option<&str>> = blocks.values().map(|b| b.node.as_deref()).collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
    for node in nodes {
        assert!(kept.contains(&Some(node)), "{node} kept no block: {kept:?}");
    }
    remove_blocks(&client, &[&name]).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_race_for_the_last_free_block() {
    let mut env = KubeEnv::start("kube-ipam-race").await;
    env.install_crds().await;
    let client = env.client();
    let strict = env.name("strict");
    let lenient = env.name("lenient");
    for (name, cidr, is_strict) in [
        (&strict, "10.251.0.0/27", true),
        (&lenient, "10.251.1.0/27", false),
    ] {
        // Two blocks of 15; n1 fills the first.
        let pools = vec![pool(name, cidr, 28, is_strict)];
        let store = KubeBlocks::new(client.clone());
        for i in 0..15 {
            let h = holder(format!("{name}-n1-{i}/eth0"), "n1");
            allocate(&store, Family::V4, &pools, &h, 0, Settings::default())
                .await
                .expect("n1's first block");
        }
        // n2 and n3 want an address at the same moment: both go for the
        // one free block, and the API server lets one create it.
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for node in ["n2", "n3"] {
            let store = KubeBlocks::new(client.clone());
            let pools = pools.clone();
            let barrier = barrier.clone();
            let h = holder(format!("{name}-{node}/eth0"), node);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                allocate(&store, Family::V4, &pools, &h, 0, Settings::default()).await
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task"));
        }
        let blocks = stored(&store, name).await;
        let ours: Vec<&Block> = blocks.values().collect();
        assert_eq!(ours.len(), 2, "two blocks, each made once");
        let winners: Vec<&Allocated> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|a| !a.borrowed)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "one node claims the last block: {results:?}"
        );
        let loser = results
            .iter()
            .find(|r| !matches!(r, Ok(a) if !a.borrowed))
            .expect("a loser");
        if is_strict {
            match loser {
                Err(DriveError::Exhausted(e @ Exhausted::Full { .. })) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(name.as_str()) && msg.contains("strictAffinity"),
                        "{msg}"
                    );
                }
                other => panic!("under strictAffinity the loser gets no address: {other:?}"),
            }
        } else {
            let a = loser.as_ref().expect("the loser borrows");
            assert!(a.borrowed);
            assert_eq!(
                a.block, winners[0].block,
                "borrowed from the winner's block"
            );
        }
    }
    remove_blocks(&client, &[&strict, &lenient]).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_writes_and_deletes_are_refused_by_the_api_server() {
    let mut env = KubeEnv::start("kube-ipam-stale").await;
    env.install_crds().await;
    let client = env.client();
    let name = env.name("stale");
    let store = KubeBlocks::new(client.clone());
    let mut b = Block::new("10.252.0.0/28".parse().expect("cidr"), &name, "n1", 0);
    store.create(&b).await.expect("created");
    assert_eq!(store.create(&b).await, Err(StoreError::Conflict(b.cidr)));
    let old = store
        .list()
        .await
        .expect("list")
        .into_iter()
        .find(|(x, _)| x.cidr == b.cidr)
        .expect("listed")
        .1;
    b.assign(holder("a/eth0".into(), "n1"), 1, 0).expect("room");
    store
        .update(&b, &old)
        .await
        .expect("replace at the version read");
    // The version read before that replace is stale now.
    assert_eq!(
        store.update(&b, &old).await,
        Err(StoreError::Conflict(b.cidr))
    );
    assert_eq!(
        store.delete(b.cidr, &old).await,
        Err(StoreError::Conflict(b.cidr))
    );
    // Deleted and made again under the same name: the old uid no longer
    // matches, even where the resourceVersion were to.
    let current = store
        .list()
        .await
        .expect("list")
        .into_iter()
        .find(|(x, _)| x.cidr == b.cidr)
        .expect("listed")
        .1;
    store
        .delete(b.cidr, &current)
        .await
        .expect("deleted at its version");
    store.create(&b).await.expect("made again");
    let (rv_now, _) = store
        .list()
        .await
        .expect("list")
        .into_iter()
        .find(|(x, _)| x.cidr == b.cidr)
        .expect("listed")
        .1
        .split_once('/')
        .map(|(r, u)| (r.to_string(), u.to_string()))
        .expect("rv/uid");
    let old_uid = current.split_once('/').expect("rv/uid").1;
    assert_eq!(
        store.delete(b.cidr, &format!("{rv_now}/{old_uid}")).await,
        Err(StoreError::Conflict(b.cidr)),
        "a delete for the earlier object must not remove the new one"
    );
    assert_eq!(stored(&store, &name).await.len(), 1);
    remove_blocks(&client, &[&name]).await;
    env.cleanup().await;
}
