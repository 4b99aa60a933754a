use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;

use ipnet::IpNet;

use super::*;

/// Runs a future that never waits (the in-memory store never does).
fn run<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the in-memory store never waits"),
    }
}

/// Blocks in memory, versioned like the API server's objects. `intrude`:
/// before the next write, another writer's change lands first (the write
/// then conflicts).
#[derive(Default)]
struct Memory {
    blocks: Mutex<BTreeMap<IpNet, (Block, u64)>>,
    next: Mutex<u64>,
    intrude: Mutex<Vec<Block>>,
}

impl Memory {
    fn bump(&self) -> u64 {
        let mut n = self.next.lock().expect("lock");
        *n += 1;
        *n
    }

    fn land_intruder(&self) {
        let intruders: Vec<Block> = self.intrude.lock().expect("lock").drain(..).collect();
        for b in intruders {
            let v = self.bump();
            self.blocks.lock().expect("lock").insert(b.cidr, (b, v));
        }
    }

    fn all(&self) -> BTreeMap<IpNet, Block> {
        self.blocks
            .lock()
            .expect("lock")
            .iter()
            .map(|(c, (b, _))| (*c, b.clone()))
            .collect()
    }
}

impl BlockStore for Memory {
    async fn list(&self) -> Result<Vec<(Block, String)>, StoreError> {
        Ok(self
            .blocks
            .lock()
            .expect("lock")
            .values()
            .map(|(b, v)| (b.clone(), v.to_string()))
            .collect())
    }

    async fn create(&self, block: &Block) -> Result<(), StoreError> {
        self.land_intruder();
        let v = self.bump();
        let mut blocks = self.blocks.lock().expect("lock");
        if blocks.contains_key(&block.cidr) {
            return Err(StoreError::Conflict(block.cidr));
        }
        blocks.insert(block.cidr, (block.clone(), v));
        Ok(())
    }

    async fn update(&self, block: &Block, version: &str) -> Result<(), StoreError> {
        self.land_intruder();
        let v = self.bump();
        let mut blocks = self.blocks.lock().expect("lock");
        match blocks.get(&block.cidr) {
            Some((_, have)) if have.to_string() == version => {
                blocks.insert(block.cidr, (block.clone(), v));
                Ok(())
            }
            _ => Err(StoreError::Conflict(block.cidr)),
        }
    }

    async fn delete(&self, cidr: IpNet, version: &str) -> Result<(), StoreError> {
        self.land_intruder();
        let mut blocks = self.blocks.lock().expect("lock");
        match blocks.get(&cidr) {
            Some((_, have)) if have.to_string() == version => {
                blocks.remove(&cidr);
                Ok(())
            }
            _ => Err(StoreError::Conflict(cidr)),
        }
    }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("CIDR")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn pool(name: &str, cidr: &str, block: u8) -> Pool {
    Pool {
        name: name.into(),
        cidr: net(cidr),
        block_prefix: block,
        selects_node: true,
        disabled: false,
        strict_affinity: false,
        allows_use: true,
    }
}

fn holder(handle: &str, node: &str) -> Holder {
    Holder {
        handle: handle.into(),
        pod: Some(format!("default/{handle}")),
        node: node.into(),
    }
}

fn alloc(
    store: &Memory,
    pools: &[Pool],
    handle: &str,
    node: &str,
    now: u64,
) -> Result<Allocated, DriveError> {
    run(allocate(
        store,
        Family::V4,
        pools,
        &holder(handle, node),
        now,
        Settings::default(),
    ))
}

#[test]
fn a_node_claims_a_block_and_fills_it_in_order_before_claiming_another() {
    let store = Memory::default();
    let pools = [pool("p", "10.244.0.0/24", 30)];
    let first = alloc(&store, &pools, "a", "n1", 0).expect("an address");
    assert!(!first.borrowed);
    let block = first.block;
    let mut got = vec![first.addr];
    // Four addresses, the first the gateway and the last the broadcast
    // address: two to hand out.
    let a = alloc(&store, &pools, "b", "n1", 0).expect("an address");
    assert_eq!(
        a.block, block,
        "from the node's own block while it has room"
    );
    got.push(a.addr);
    let base = match block {
        IpNet::V4(n) => u32::from(n.network()),
        IpNet::V6(_) => unreachable!(),
    };
    let want: Vec<IpAddr> = (1..3)
        .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(base + i)))
        .collect();
    assert_eq!(got, want, "fresh addresses in order, after the gateway");
    let fourth = alloc(&store, &pools, "e", "n1", 0).expect("an address");
    assert_ne!(
        fourth.block, block,
        "a full block makes the node claim another"
    );
    let blocks = store.all();
    assert_eq!(blocks.len(), 2);
    assert!(blocks.values().all(|b| b.node.as_deref() == Some("n1")));
    // Sequence numbers rise with every change of a block.
    assert_eq!(
        blocks[&block]
            .allocations
            .iter()
            .map(|a| a.sequence)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
}

#[test]
fn with_no_block_left_a_node_borrows_unless_the_pool_is_strict() {
    let store = Memory::default();
    // Two blocks of four: n1 takes one, n2 the other.
    let mut pools = vec![pool("p", "10.244.0.0/29", 30)];
    let a = alloc(&store, &pools, "a", "n1", 0).expect("n1's first");
    let b = alloc(&store, &pools, "b", "n2", 0).expect("n2's first");
    assert_ne!(a.block, b.block);
    alloc(&store, &pools, "b2", "n2", 0).expect("n2 fills its block");
    // n2's block is full and none is free: it borrows from n1's.
    let borrowed = alloc(&store, &pools, "b5", "n2", 0).expect("borrowed");
    assert!(borrowed.borrowed);
    assert_eq!(borrowed.block, a.block);
    let blocks = store.all();
    let lent: Vec<(IpAddr, String)> = blocks[&a.block]
        .borrowed()
        .map(|(addr, h)| (addr, h.node.clone()))
        .collect();
    assert_eq!(lent, vec![(borrowed.addr, "n2".to_string())]);

    pools[0].strict_affinity = true;
    let err = alloc(&store, &pools, "b6", "n2", 0).expect_err("strict: no borrowing");
    assert_eq!(
        err.to_string(),
        "IPv4 pools p are exhausted for node n2: its block is full, no free block left, and strictAffinity forbids borrowing"
    );
    // A node with no block at all, strict pool.
    let err = alloc(&store, &pools, "c", "n3", 0).expect_err("nothing for n3");
    assert!(err.to_string().contains("it has no block full"), "{err}");
}

#[test]
fn no_pool_names_the_pools_left_out_and_why() {
    let store = Memory::default();
    let mut off = pool("off", "10.1.0.0/24", 26);
    off.disabled = true;
    let mut elsewhere = pool("elsewhere", "10.2.0.0/24", 26);
    elsewhere.selects_node = false;
    let v6 = pool("six", "fd00::/64", 122);
    let err = alloc(&store, &[off, elsewhere, v6], "a", "n1", 0).expect_err("no pool");
    assert_eq!(
        err.to_string(),
        "no IPv4 IPPool serves node n1: off (disabled), elsewhere (nodeSelector)"
    );
}

#[test]
fn ipv6_blocks_come_from_a_huge_pool() {
    let store = Memory::default();
    let pools = [pool("six", "fd00:10::/64", 122)];
    let a = run(allocate(
        &store,
        Family::V6,
        &pools,
        &holder("a", "n1"),
        0,
        Settings::default(),
    ))
    .expect("an IPv6 address");
    assert_eq!(a.block.prefix_len(), 122);
    assert!(pools[0].cidr.contains(&a.addr));
    assert_eq!(store.all()[&a.block].size(), 64);
}

#[test]
fn a_release_by_handle_is_idempotent_and_a_stale_one_is_refused() {
    let store = Memory::default();
    let pools = [pool("p", "10.244.0.0/30", 30)];
    let a = alloc(&store, &pools, "a", "n1", 0).expect("a");
    let freed = run(release(
        &store,
        Release::Handle("a"),
        10,
        Settings::default(),
    ))
    .expect("DEL");
    assert_eq!(freed, vec![a.addr]);
    let again = run(release(
        &store,
        Release::Handle("a"),
        11,
        Settings::default(),
    ))
    .expect("DEL again");
    assert!(again.is_empty(), "a second DEL finds nothing and is fine");

    // Fill the block so the released address is handed out again.
    alloc(&store, &pools, "b", "n1", 20).expect("fresh ones first");
    let e = alloc(&store, &pools, "e", "n1", 20).expect("the released one, reused");
    assert_eq!(e.addr, a.addr);
    assert_ne!(e.sequence, a.sequence);
    // A garbage collector that decided on `a`'s address before it was
    // reused must not free `e`'s.
    let err = run(release(
        &store,
        Release::Address {
            addr: a.addr,
            sequence: a.sequence,
        },
        30,
        Settings::default(),
    ))
    .expect_err("stale release");
    assert!(
        matches!(err, DriveError::Release(ReleaseError::Reused { .. })),
        "{err}"
    );
    assert_eq!(
        store.all()[&e.block]
            .holder(e.addr)
            .map(|h| h.holder.handle.as_str()),
        Some("e")
    );
}

#[test]
fn given_back_addresses_cool_down_and_are_reused_oldest_first() {
    let cidr = net("10.244.0.0/29");
    let mut b = Block::new(cidr, "p", "n1", 0);
    let mut addrs = Vec::new();
    assert_eq!(b.gateway(), ip("10.244.0.0"));
    // Six: neither the first (the gateway) nor the last (the broadcast).
    for h in ["a", "b", "c", "d", "e", "f"] {
        addrs.push(b.assign(holder(h, "n1"), 0, 60).expect("fresh").0);
    }
    assert!(
        !addrs.contains(&b.gateway()) && !addrs.contains(&ip("10.244.0.7")),
        "the gateway and the broadcast address are never handed out"
    );
    assert!(b.assign(holder("x", "n1"), 0, 60).is_none(), "full");
    b.release(addrs[2], None, 100).expect("c back at 100");
    b.release(addrs[0], None, 110).expect("a back at 110");
    assert_eq!(b.available(150, 60), 0, "both still cooling");
    assert!(b.assign(holder("x", "n1"), 150, 60).is_none());
    assert_eq!(b.available(165, 60), 1);
    assert_eq!(
        b.assign(holder("x", "n1"), 165, 60).map(|a| a.0),
        Some(addrs[2])
    );
    assert!(
        b.assign(holder("y", "n1"), 165, 60).is_none(),
        "a cools until 170"
    );
    assert_eq!(
        b.assign(holder("y", "n1"), 170, 60).map(|a| a.0),
        Some(addrs[0])
    );
    assert!(matches!(
        b.release(ip("10.9.9.9"), None, 200),
        Err(ReleaseError::NotInBlock { .. })
    ));
    assert!(matches!(
        b.release(addrs[1], Some(999), 200),
        Err(ReleaseError::Reused { found: 2, .. })
    ));
}

#[test]
fn empty_blocks_go_after_the_grace_period_but_never_the_last() {
    let mut blocks = BTreeMap::new();
    let mut add = |cidr: &str, node: &str, pool: &str, held: bool, since: u64| {
        let mut b = Block::new(net(cidr), pool, node, since);
        if held {
            b.assign(holder("h", node), since, 0);
        }
        blocks.insert(b.cidr, b);
    };
    add("10.0.0.0/26", "n1", "p", true, 0);
    add("10.0.0.64/26", "n1", "p", false, 100);
    add("10.0.0.128/26", "n1", "p", false, 250);
    add("10.0.1.0/26", "n1", "q", false, 0);
    add("10.0.2.0/26", "n2", "p", false, 0);
    // At 300 with a grace of 100: .64 went empty at 100 (gone), .128 at
    // 250 (not yet); pool q's only block stays; n2's are not n1's to give.
    assert_eq!(
        releasable("n1", &blocks, 300, 100),
        vec![net("10.0.0.64/26")]
    );
    // All of a node's blocks idle: the lowest stays.
    assert_eq!(releasable("n2", &blocks, 300, 100), Vec::<IpNet>::new());
}

#[test]
fn a_lost_race_for_a_block_ends_in_another() {
    let store = Memory::default();
    let pools = [pool("p", "10.244.0.0/24", 26)];
    // Where n1 would claim first, n2 gets there just before.
    let first = match next_step(
        "n1",
        Family::V4,
        &pools,
        &BTreeMap::new(),
        0,
        0,
        &BTreeSet::new(),
    ) {
        Step::Claim { cidr, .. } => cidr,
        other => panic!("{other:?}"),
    };
    let mut theirs = Block::new(first, "p", "n2", 0);
    theirs.assign(holder("z", "n2"), 0, 0);
    store.intrude.lock().expect("lock").push(theirs);
    let a = alloc(&store, &pools, "a", "n1", 0).expect("an address anyway");
    assert_ne!(a.block, first);
    assert!(!a.borrowed);
    let blocks = store.all();
    assert_eq!(blocks[&first].node.as_deref(), Some("n2"));
    assert_eq!(blocks[&a.block].node.as_deref(), Some("n1"));
}

#[test]
fn a_repeated_add_gets_the_address_it_has() {
    let store = Memory::default();
    let pools = [pool("p", "10.244.0.0/24", 26)];
    let a = alloc(&store, &pools, "a", "n1", 0).expect("a");
    let again = alloc(&store, &pools, "a", "n1", 5).expect("a again");
    assert_eq!(again, a);
    assert_eq!(store.all()[&a.block].used(), 1);
}

#[test]
fn a_conflicting_write_is_retried_and_loses_nothing() {
    let store = Memory::default();
    let pools = [pool("p", "10.244.0.0/24", 26)];
    let a = alloc(&store, &pools, "a", "n1", 0).expect("a");
    // Another writer (n1's own earlier request, say) changes the block
    // between our read and our write.
    let mut changed = store.all()[&a.block].clone();
    let (other, _) = changed.assign(holder("other", "n1"), 0, 0).expect("room");
    store.intrude.lock().expect("lock").push(changed);
    let b = alloc(&store, &pools, "b", "n1", 0).expect("b after a retry");
    let block = &store.all()[&a.block];
    let held: BTreeSet<IpAddr> = block
        .allocations
        .iter()
        .map(|x| block.address(x.ordinal))
        .collect();
    assert_eq!(held, BTreeSet::from([a.addr, other, b.addr]));
}

#[test]
fn an_empty_block_that_gets_an_address_while_being_given_up_stays() {
    let store = Memory::default();
    let pools = [pool("p", "10.244.0.0/24", 30)];
    // Two blocks of two for n1, then all given back at 10.
    let got: Vec<Allocated> = (0..4)
        .map(|i| alloc(&store, &pools, &format!("h{i}"), "n1", 0).expect("room"))
        .collect();
    for i in 0..4 {
        run(release(
            &store,
            Release::Handle(&format!("h{i}")),
            10,
            Settings::default(),
        ))
        .expect("released");
    }
    assert_eq!(store.all().len(), 2);
    // Not yet past the grace period: nothing goes.
    assert_eq!(run(release_blocks(&store, "n1", 50, 60)), Ok(vec![]));
    // Past it, but the block gets an address between the read and the
    // delete: the delete names a stale version and the block stays.
    let second = got[3].block;
    let mut changed = store.all()[&second].clone();
    changed.assign(holder("late", "n1"), 80, 0).expect("room");
    store.intrude.lock().expect("lock").push(changed);
    assert_eq!(run(release_blocks(&store, "n1", 80, 60)), Ok(vec![]));
    assert_eq!(store.all()[&second].used(), 1);
    // Empty again: it goes, and the node's last block stays.
    run(release(
        &store,
        Release::Handle("late"),
        90,
        Settings::default(),
    ))
    .expect("released");
    assert_eq!(run(release_blocks(&store, "n1", 200, 60)), Ok(vec![second]));
    assert_eq!(store.all().len(), 1);
    assert_eq!(run(release_blocks(&store, "n1", 300, 60)), Ok(vec![]));
}

#[test]
fn a_burst_is_handed_out_in_one_write_per_block_and_survives_a_conflict() {
    let store = Memory::default();
    let pools = [pool("p", "10.244.0.0/27", 29)];
    // n2 holds one block already.
    alloc(&store, &pools, "other", "n2", 0).expect("n2");
    let holders: Vec<Holder> = (0..19).map(|i| holder(&format!("h{i}"), "n1")).collect();
    // Another writer changes n2's block between the read and the writes;
    // n1 borrows from it only after its own three blocks are full.
    let mut changed = store.all().values().next().expect("n2's block").clone();
    changed.assign(holder("late", "n2"), 0, 0).expect("room");
    store.intrude.lock().expect("lock").push(changed);
    let got = run(allocate_many(
        &store,
        Family::V4,
        &pools,
        &holders,
        0,
        Settings::default(),
    ));
    // 3 blocks of 6 for n1, then one address borrowed from n2's block
    // (which has 6 - 2 free).
    let ok: Vec<&Allocated> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 19, "{got:?}");
    let distinct: BTreeSet<IpAddr> = ok.iter().map(|a| a.addr).collect();
    assert_eq!(distinct.len(), 19);
    assert_eq!(ok.iter().filter(|a| a.borrowed).count(), 1);
    // In order: the earlier holder the lower address of its block.
    assert!(ok[0].addr < ok[1].addr);
    let blocks = store.all();
    let recorded: usize = blocks.values().map(|b| b.allocations.len()).sum();
    assert_eq!(recorded, 19 + 2, "the burst, n2's first and the intruder's");
    // Again: each holder has its address already.
    let again = run(allocate_many(
        &store,
        Family::V4,
        &pools,
        &holders,
        0,
        Settings::default(),
    ));
    for (a, b) in got.iter().zip(&again) {
        assert_eq!(a.as_ref().map(|x| x.addr), b.as_ref().map(|x| x.addr));
    }
    // The same attachment twice in one burst (a runtime's retry queued
    // behind the first): one address, given to both answers.
    let twice = vec![holder("t", "n1"), holder("t", "n1")];
    let got2 = run(allocate_many(
        &store,
        Family::V4,
        &pools,
        &twice,
        0,
        Settings::default(),
    ));
    assert_eq!(
        got2[0].as_ref().map(|a| a.addr),
        got2[1].as_ref().map(|a| a.addr)
    );
    let held_t: usize = store
        .all()
        .values()
        .flat_map(|b| b.allocations.iter())
        .filter(|a| a.holder.handle == "t")
        .count();
    assert_eq!(held_t, 1);
    // A burst larger than what is left: the rest are told why.
    let more: Vec<Holder> = (0..6).map(|i| holder(&format!("m{i}"), "n1")).collect();
    let got = run(allocate_many(
        &store,
        Family::V4,
        &pools,
        &more,
        0,
        Settings::default(),
    ));
    assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 2);
    assert!(matches!(got[5], Err(DriveError::Exhausted(_))));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Alloc { node: u8, handle: u8 },
        Del { handle: u8 },
        Tick(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3, 0u8..40).prop_map(|(node, handle)| Op::Alloc { node, handle }),
            2 => (0u8..40).prop_map(|handle| Op::Del { handle }),
            1 => (1u8..30).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// Whatever the order of ADDs and DELs across three nodes: no
        /// address is held twice, a handle's addresses are its own, every
        /// block's counts add up, and an ADD fails only when the pool
        /// really has nothing available.
        #[test]
        fn addresses_are_never_handed_out_twice(ops in proptest::collection::vec(op(), 1..120), strict in any::<bool>()) {
            let store = Memory::default();
            let mut p = pool("p", "10.244.0.0/27", 29);
            p.strict_affinity = strict;
            let pools = [p];
            let settings = Settings { cooldown: 20, max_attempts: 100 };
            let mut now = 0u64;
            let mut held: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Tick(s) => now += u64::from(s),
                    Op::Alloc { node, handle } => {
                        let h = format!("h{handle}");
                        let r = run(allocate(&store, Family::V4, &pools, &holder(&h, &format!("n{node}")), now, settings));
                        match r {
                            Ok(a) => match held.get(&h) {
                                // A repeated ADD gets the address it has.
                                Some(had) => prop_assert_eq!(had, &vec![a.addr]),
                                None => {
                                    held.insert(h, vec![a.addr]);
                                }
                            },
                            Err(DriveError::Exhausted(_)) => {
                                let blocks = store.all();
                                let mine = blocks.values().any(|b| b.node.as_deref() == Some(&format!("n{node}")) && b.available(now, 20) > 0);
                                let free_block = blocks.len() < 4;
                                let lendable = !strict && blocks.values().any(|b| b.available(now, 20) > 0);
                                prop_assert!(!mine && !free_block && !lendable, "refused with room: {blocks:?}");
                            }
                            Err(e) => prop_assert!(false, "{e}"),
                        }
                    }
                    Op::Del { handle } => {
                        let h = format!("h{handle}");
                        let mut freed = run(release(&store, Release::Handle(&h), now, settings)).expect("DEL");
                        let mut had = held.remove(&h).unwrap_or_default();
                        freed.sort();
                        had.sort();
                        prop_assert_eq!(freed, had);
                    }
                }
                let blocks = store.all();
                let mut seen = BTreeSet::new();
                for b in blocks.values() {
                    prop_assert!(b.allocations.windows(2).all(|w| w[0].ordinal < w[1].ordinal));
                    let used = b.used();
                    let cooling = u32::try_from(b.released.len()).expect("small");
                    // Ordinal 0 is the gateway.
                    prop_assert_eq!(used + cooling + (b.size() - b.fresh), b.size() - 1);
                    for a in &b.allocations {
                        prop_assert!(seen.insert(b.address(a.ordinal)), "held twice");
                        let addr = b.address(a.ordinal);
                        prop_assert!(held.get(&a.holder.handle).is_some_and(|v| v.contains(&addr)));
                    }
                }
                let total: usize = held.values().map(Vec::len).sum();
                prop_assert_eq!(total, seen.len());
            }
        }
    }
}
