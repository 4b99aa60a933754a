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
        allows_use: true,
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
    // 16 blocks of 14 (the first address of each is its gateway, the last
    // its broadcast address): 200 addresses fill 15 of them.
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
        blocks.len() <= 16,
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
        // Two blocks of 14; n1 fills the first.
        let pools = vec![pool(name, cidr, 28, is_strict)];
        let store = KubeBlocks::new(client.clone());
        for i in 0..14 {
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

/// A controller collecting leaked addresses, as the chart's controller
/// account; killed at the end.
struct Collector(std::process::Child);
impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_gives_back_what_pods_and_nodes_left_behind() {
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;
    use std::time::{Duration, Instant};

    let mut env = KubeEnv::start("kube-ipam-gc").await;
    env.install_crds().await;
    let ns = env.namespace("gc").await;
    let chart = env
        .install_chart(
            "petrel",
            &ns,
            json!({}),
            &[
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ],
        )
        .await;
    let account = chart.name("ServiceAccount", "controller");
    let kubeconfig = env.token(&ns, &account, None).await;
    let client = env.client();
    let n1 = env.name("n1");
    let n2 = env.name("n2");
    for node in [&n1, &n2] {
        env.create_json(
            "nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
        )
        .await;
    }
    env.ready_pod(&ns, "live", json!({}), &n1, "10.253.0.1")
        .await;
    env.ready_pod(&ns, "moved", json!({}), &n2, "10.253.0.2")
        .await;
    env.ready_pod(&ns, "on-n2", json!({}), &n2, "10.253.0.3")
        .await;

    let name = env.name("gc");
    let pools = vec![pool(&name, "10.253.0.0/26", 28, false)];
    let store = KubeBlocks::new(client.clone());
    let mut held = BTreeMap::new();
    for (handle, pod, node) in [
        ("live", Some("live"), &n1),
        ("gone", Some("gone"), &n1),
        ("moved", Some("moved"), &n1),
        ("nameless", None, &n1),
        ("on-n2", Some("on-n2"), &n2),
    ] {
        let h = Holder {
            handle: format!("{handle}/eth0"),
            pod: pod.map(|p| format!("{ns}/{p}")),
            node: node.to_string(),
        };
        let a = allocate(&store, Family::V4, &pools, &h, 0, Settings::default())
            .await
            .expect("address");
        held.insert(handle, a.addr);
    }
    let log = env.dir().join("controller.log");
    let _collector = Collector(
        std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(["controller", "--metrics-address", "off", "--ipam-gc"])
            .args(["--ipam-gc-grace", "3s", "--ipam-gc-interval", "1s"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("controller starts"),
    );
    let holders = |blocks: &BTreeMap<IpNet, Block>| -> BTreeSet<String> {
        blocks
            .values()
            .flat_map(|b| b.allocations.iter().map(|a| a.holder.handle.clone()))
            .collect()
    };
    let wait = |want: BTreeSet<&'static str>, what: &'static str| {
        let store = store.clone();
        let name = name.clone();
        let log = log.clone();
        async move {
            let want: BTreeSet<String> = want.iter().map(|h| format!("{h}/eth0")).collect();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let now = holders(&stored(&store, &name).await);
                if now == want {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: holders {now:?}, want {want:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    // The gone pod's and the moved pod's addresses go after the grace
    // period; the live pod keeps its address, and one without a recorded
    // pod is not judged by pods.
    let t0 = Instant::now();
    wait(["live", "nameless", "on-n2"].into(), "pods gone").await;
    assert!(
        t0.elapsed() >= Duration::from_secs(3),
        "released before the grace period"
    );

    // A node deleted: its addresses at once, its block with them.
    let n2_block = stored(&store, &name)
        .await
        .into_values()
        .find(|b| b.node.as_deref() == Some(n2.as_str()))
        .expect("n2's block")
        .cidr;
    Api::<Node>::all(client.clone())
        .delete(&n2, &DeleteParams::default())
        .await
        .expect("node deleted");
    wait(["live", "nameless"].into(), "node gone").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored(&store, &name).await.contains_key(&n2_block) {
        assert!(
            Instant::now() < deadline,
            "n2's empty block was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Each candidate and each release is an Event on its block.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let list = events.list(&ListParams::default()).await.expect("events");
    let reasons: Vec<(String, String)> = list
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("IPAMBlock"))
        .map(|e| {
            (
                e.reason.clone().unwrap_or_default(),
                e.note.clone().unwrap_or_default(),
            )
        })
        .collect();
    for (reason, about) in [
        ("PodAddressLeaked", held["gone"]),
        ("PodAddressReleased", held["gone"]),
        ("PodAddressReleased", held["moved"]),
        ("PodAddressReleased", held["on-n2"]),
    ] {
        assert!(
            reasons
                .iter()
                .any(|(r, n)| r == reason && n.starts_with(&format!("{about} "))),
            "no {reason} Event for {about}: {reasons:#?}"
        );
    }
    assert!(
        !reasons
            .iter()
            .any(|(_, n)| n.starts_with(&format!("{} ", held["live"]))),
        "the live pod's address was reported: {reasons:#?}"
    );
    remove_blocks(&client, &[&name]).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_status_counts_what_is_used_and_says_why_a_pool_is_not() {
    use serde_json::json;
    use std::time::{Duration, Instant};

    let mut env = KubeEnv::start("kube-ipam-status").await;
    env.install_crds().await;
    let client = env.client();
    let node = env.name("n1");
    env.create_json(
        "nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"zone": "a"}}}),
    )
    .await;
    env.create_json(
        "bgpconfigurations",
        json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "BGPConfiguration",
               "metadata": {"name": "default"}, "spec": {"asNumber": 64512, "ipamMode": "Petrel"}}),
    )
    .await;
    let (used, elsewhere, off) = (env.name("used"), env.name("elsewhere"), env.name("off"));
    for (name, spec) in [
        (&used, json!({"cidr": "10.240.0.0/24", "blockSize": 28})),
        (
            &elsewhere,
            json!({"cidr": "10.240.1.0/24", "nodeSelector": {"matchLabels": {"zone": "b"}}}),
        ),
        (&off, json!({"cidr": "10.240.2.0/24", "disabled": true})),
    ] {
        env.create_json(
            "ippools",
            json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "IPPool",
                   "metadata": {"name": name}, "spec": spec}),
        )
        .await;
    }
    // Three addresses for the node, one of its block lent to another.
    let store = KubeBlocks::new(client.clone());
    let pools = vec![pool(&used, "10.240.0.0/24", 28, false)];
    for (h, n) in [
        ("a", node.as_str()),
        ("b", node.as_str()),
        ("c", node.as_str()),
    ] {
        allocate(
            &store,
            Family::V4,
            &pools,
            &holder(format!("{h}/eth0"), n),
            0,
            Settings::default(),
        )
        .await
        .expect("address");
    }
    let mut b = stored(&store, &used)
        .await
        .into_values()
        .next()
        .expect("block");
    let version = store
        .list()
        .await
        .expect("list")
        .into_iter()
        .find(|(x, _)| x.cidr == b.cidr)
        .expect("listed")
        .1;
    b.assign(holder("d/eth0".into(), "other-node"), 0, 0)
        .expect("room");
    store.update(&b, &version).await.expect("lent");

    let log = env.dir().join("controller.log");
    let _controller = Collector(
        std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(["controller", "--metrics-address", "off"])
            .env("KUBECONFIG", env.kubeconfig())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("controller starts"),
    );
    let api: Api<crds::IPPool> = Api::all(client.clone());
    let status_of = |name: String, want: &'static str| {
        let api = api.clone();
        let log = log.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let p = api.get(&name).await.expect("pool");
                let s = p.status.clone().unwrap_or_default();
                let reason = s
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Used")
                    .map(|c| c.reason.clone());
                if reason.as_deref() == Some(want) {
                    return s;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name}: Used is {reason:?}, want {want}: {s:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let s = status_of(used.clone(), "InUse").await;
    assert_eq!(s.blocks.as_deref(), Some("16"));
    assert_eq!(s.claimed_blocks, Some(1));
    assert_eq!(s.free_blocks.as_deref(), Some("15"));
    assert_eq!(s.used_addresses, Some(4));
    // 14 a block (the first is the gateway, the last the broadcast
    // address): 10 left in the claimed one.
    assert_eq!(s.free_addresses.as_deref(), Some("220"));
    assert_eq!(s.borrowed_addresses, Some(1));
    assert_eq!(s.nodes, Some(1));
    // The conditions task's Ready stands beside it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api
        .get(&used)
        .await
        .expect("pool")
        .status
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready"))
    {
        assert!(Instant::now() < deadline, "no Ready condition beside Used");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    status_of(elsewhere.clone(), "NoNodeSelected").await;
    status_of(off.clone(), "Disabled").await;
    // Back to the nodes' podCIDRs: no pool is used, and each says why.
    let configs: Api<crds::BGPConfiguration> = Api::all(client.clone());
    configs
        .patch(
            "default",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"ipamMode": "Kubernetes"}})),
        )
        .await
        .expect("mode changed");
    let s = status_of(used.clone(), "IpamModeKubernetes").await;
    let c = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Used")
        .expect("Used");
    assert_eq!(c.status, "False");
    remove_blocks(&client, &[&used]).await;
    env.cleanup().await;
}
