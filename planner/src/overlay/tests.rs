use super::*;
use crds::{BgpConfigurationSpec, EncapsulationSpec, IpPoolSpec};
use model::{Named, Node, Origin};

fn named<T>(name: &str, spec: T) -> Named<T> {
    Named {
        name: name.into(),
        origin: Origin::api("X", None, name),
        spec,
    }
}

fn pool(
    name: &str,
    cidr: &str,
    kind: EncapsulationType,
    m: Option<EncapsulationMode>,
) -> Named<IpPoolSpec> {
    named(
        name,
        IpPoolSpec {
            cidr: Some(cidr.parse().expect("valid")),
            encapsulation: Some(EncapsulationSpec { kind, mode: m }),
            nat_outgoing: Some(true),
            ..IpPoolSpec::default()
        },
    )
}

fn node(name: &str, ip: &str, cidr: &str) -> Node {
    Node {
        name: name.into(),
        internal_ips: vec![ip.parse().expect("valid")],
        pod_cidrs: vec![cidr.parse().expect("valid")],
        ..Node::default()
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        configurations: vec![named(
            "default",
            BgpConfigurationSpec {
                as_number: Some(64512),
                ..BgpConfigurationSpec::default()
            },
        )],
        ip_pools: vec![pool(
            "pods",
            "10.244.0.0/16",
            EncapsulationType::Vxlan,
            Some(EncapsulationMode::CrossSubnet),
        )],
        nodes: vec![
            node("a", "192.0.2.1", "10.244.1.0/24"),
            node("b", "198.51.100.1", "10.244.2.0/24"),
        ],
        ..Snapshot::default()
    }
}

#[test]
fn vxlan_endpoints_come_from_the_pod_cidr_and_the_node_name() {
    let p = plan(&snapshot(), "a");
    assert_eq!(p.vni, 4096);
    assert_eq!(p.port, 4789);
    let local = p.vxlan[0].expect("an IPv4 VTEP");
    assert_eq!(
        local.address,
        "10.244.1.0".parse::<IpAddr>().expect("valid")
    );
    assert_eq!(local.mac, vtep_mac("a", false));
    assert!(p.vxlan[1].is_none(), "no IPv6 pool, no IPv6 VTEP");
    assert_eq!(p.remotes.len(), 1);
    let b = &p.remotes[0];
    let v = b.vtep(false).expect("b's derived VTEP");
    assert_eq!(v.address, "10.244.2.0".parse::<IpAddr>().expect("valid"));
    assert_eq!(v.mac, vtep_mac("b", false));
    // What another agent computes for itself is what we derive for it.
    assert_eq!(
        plan(&snapshot(), "b").vxlan[0].map(|l| l.address),
        Some(v.address)
    );
}

#[test]
fn a_published_endpoint_wins_and_petrel_ipam_derives_none() {
    let mut s = snapshot();
    s.configurations[0].spec.ipam_mode = Some(IpamMode::Petrel);
    let p = plan(&s, "a");
    assert!(p.vxlan[0].is_none(), "no block yet: no IPv4 VTEP");
    assert!(
        p.remotes[0].vtep(false).is_none(),
        "blocks are not on the Node"
    );
    let published = Vtep {
        address: "10.9.9.9".parse().expect("valid"),
        mac: [2, 0, 0, 0, 0, 1],
    };
    s.nodes[1].vteps.push(published);
    s.local_ipam.blocks = vec!["10.244.7.64/26".parse().expect("valid")];
    let p = plan(&s, "a");
    assert_eq!(p.remotes[0].vtep(false), Some(published));
    assert!(
        p.vxlan[0].is_none(),
        "a block is not a tunnel address: the endpoint waits for one"
    );
    s.local_ipam.tunnel = Some("10.244.7.70".parse().expect("valid"));
    let p = plan(&s, "a");
    assert_eq!(
        p.vxlan[0].map(|l| l.address),
        Some("10.244.7.70".parse().expect("valid"))
    );
}

#[test]
fn a_tunnel_address_is_wanted_while_an_ipv4_pool_tunnels() {
    let mut s = snapshot();
    assert!(tunnel_address_wanted(&s, "a"));
    for p in &mut s.ip_pools {
        if let Some(e) = p.spec.encapsulation.as_mut() {
            e.mode = Some(crds::EncapsulationMode::Never);
        }
    }
    assert!(!tunnel_address_wanted(&s, "a"), "Never: no tunnel");
    let mut s = snapshot();
    s.nodes.retain(|n| n.name != "a");
    assert!(
        !tunnel_address_wanted(&s, "a"),
        "a node without an IPv4 address tunnels nothing"
    );
}

#[test]
fn cross_subnet_follows_adjacency_not_prefixes() {
    let p = plan(&snapshot(), "a");
    let pool = &p.pools[0];
    let direct = decide(pool, Adjacency::Direct);
    assert_eq!(direct.tunnel, None, "{}", direct.reason);
    assert!(direct.reason.contains("directly connected"));
    let routed = decide(
        pool,
        Adjacency::Routed("192.0.2.254".parse().expect("valid")),
    );
    assert_eq!(routed.tunnel, Some(Tunnel::Vxlan));
    assert!(routed.reason.contains("192.0.2.254"), "{}", routed.reason);
    assert_eq!(decide(pool, Adjacency::Unreachable).tunnel, None);
    let mut always = pool.clone();
    always.tunnel = Some((Tunnel::Vxlan, Mode::Always));
    assert_eq!(
        decide(&always, Adjacency::Direct).tunnel,
        Some(Tunnel::Vxlan)
    );
}

#[test]
fn never_and_ipip_on_ipv6_are_no_tunnel() {
    let mut s = snapshot();
    s.ip_pools = vec![
        pool(
            "n",
            "10.1.0.0/16",
            EncapsulationType::Vxlan,
            Some(EncapsulationMode::Never),
        ),
        pool("v6", "fd00::/48", EncapsulationType::Ipip, None),
        pool("i", "10.2.0.0/16", EncapsulationType::Ipip, None),
    ];
    let p = plan(&s, "a");
    assert_eq!(p.pools[0].tunnel, None);
    assert_eq!(p.pools[1].tunnel, None);
    assert_eq!(p.pools[2].tunnel, Some((Tunnel::Ipip, Mode::Always)));
    s.ip_pools = vec![
        pool(
            "w",
            "10.3.0.0/16",
            EncapsulationType::WireGuard,
            Some(EncapsulationMode::CrossSubnet),
        ),
        pool("w6", "fd01::/48", EncapsulationType::WireGuard, None),
    ];
    let p = plan(&s, "a");
    assert_eq!(
        p.pools[0].tunnel,
        Some((Tunnel::WireGuard, Mode::Always)),
        "encrypted to every node"
    );
    assert_eq!(p.pools[1].tunnel, None, "WireGuard pools are IPv4 only");
    assert_eq!(
        decide(&p.pools[0], Adjacency::Direct).tunnel,
        Some(Tunnel::WireGuard)
    );
    assert!(p.vxlan.iter().all(Option::is_none));
}

#[test]
fn mtu_subtracts_the_largest_overhead_once() {
    let mut s = snapshot();
    let p = plan(&s, "a");
    assert_eq!(pod_mtu(1500, &p), 1450);
    assert_eq!(pod_mtu(9000, &p), 8950);
    assert_eq!(tunnel_mtu(1500, Tunnel::Vxlan, true), 1430);
    s.ip_pools
        .push(pool("i", "10.2.0.0/16", EncapsulationType::Ipip, None));
    assert_eq!(
        pod_mtu(1500, &plan(&s, "a")),
        1450,
        "IPIP's 20 is inside VXLAN's 50"
    );
    s.ip_pools
        .push(pool("w", "10.3.0.0/16", EncapsulationType::WireGuard, None));
    assert_eq!(pod_mtu(1500, &plan(&s, "a")), 1440);
    s.ip_pools.clear();
    assert_eq!(pod_mtu(1500, &plan(&s, "a")), 1500);
}

#[test]
fn ipv6_endpoints_are_link_local_from_the_mac() {
    let mac = [0x0e, 0x12, 0x34, 0x56, 0x78, 0x9a];
    assert_eq!(
        link_local(mac),
        "fe80::c12:34ff:fe56:789a"
            .parse::<Ipv6Addr>()
            .expect("valid")
    );
    let m = vtep_mac("node-1", false);
    assert_eq!(m[0] & 0x03, 0x02, "locally administered unicast");
    assert_ne!(m, vtep_mac("node-1", true));
    assert_ne!(m, vtep_mac("node-2", false));
}
