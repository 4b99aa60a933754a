//! Bringing a lab up: its network (the switch and its router, the racks
//! and the outside host, each node with its pods' links, all in network
//! namespaces), then its daemons and pods.

use std::net::Ipv4Addr;

use anyhow::Context;

use super::pods::{add_pod, publish_slices};
use super::render;
use super::{POD_GATEWAY, State, publish, start_agent, start_router, sys, topology};

/// Builds every part of the lab, saving the state after each thing created.
pub(crate) fn build(state: &mut State) -> anyhow::Result<()> {
    let t = state.topology.clone();
    let prefix_len = t.subnet.prefix_len();
    let sw = state.switch_ns();
    state.add_ns(&sw, true).context("the switch namespace")?;
    sys::ip(&sw, &["link", "add", "br0", "type", "bridge"])?;
    sys::ip(
        &sw,
        &[
            "addr",
            "add",
            &format!("{}/{prefix_len}", t.router.address),
            "dev",
            "br0",
        ],
    )?;
    sys::ip(&sw, &["link", "set", "br0", "up"])?;
    // More segments (racks): a bridge each, the router's address on it.
    for r in &t.racks {
        let br = format!("br-{}", r.name);
        sys::ip(&sw, &["link", "add", &br, "type", "bridge"])?;
        sys::ip(
            &sw,
            &[
                "addr",
                "add",
                &format!("{}/{}", r.address, r.subnet.prefix_len()),
                "dev",
                &br,
            ],
        )?;
        sys::ip(&sw, &["link", "set", &br, "up"])?;
    }
    // The outside host: beyond the router, routes back to the nodes'
    // subnets only (never to pods: what reaches it from a pod is the
    // node's address).
    if let Some(o) = &t.outside {
        let ns = state.outside_ns();
        state.add_ns(&ns, false).context("the outside namespace")?;
        let plen = o.subnet.prefix_len();
        sys::run(
            "ip",
            &[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", "outside",
                "netns", &sw,
            ],
        )?;
        sys::ip(
            &sw,
            &[
                "addr",
                "add",
                &format!("{}/{plen}", o.router_address),
                "dev",
                "outside",
            ],
        )?;
        sys::ip(&sw, &["link", "set", "outside", "up"])?;
        sys::ip(
            &ns,
            &[
                "addr",
                "add",
                &format!("{}/{plen}", o.address),
                "dev",
                "eth0",
            ],
        )?;
        sys::ip(&ns, &["link", "set", "eth0", "up"])?;
        for segment in std::iter::once(t.subnet).chain(t.racks.iter().map(|r| r.subnet)) {
            sys::ip(
                &ns,
                &[
                    "route",
                    "add",
                    &segment.to_string(),
                    "via",
                    &o.router_address.to_string(),
                ],
            )?;
        }
    }

    for n in &t.nodes {
        build_node(state, n, &sw).with_context(|| format!("node {}", n.name))?;
    }

    if state.kube.is_some() {
        publish(state).context("the cluster's objects in the API server")?;
    } else {
        let cluster = state.cluster_dir();
        std::fs::create_dir_all(&cluster)?;
        for (file, yaml) in render::cluster_objects(&t) {
            sys::write_atomic(&cluster.join(file), &yaml)?;
        }
    }

    start_router(state).with_context(|| format!("the router ({})", t.router.kind.label()))?;
    for n in &t.nodes {
        start_agent(state, &n.name).with_context(|| format!("the agent of {}", n.name))?;
    }
    if t.petrel_ipam() {
        for n in &t.nodes {
            for i in 1..=n.pods {
                add_pod(state, n, i).with_context(|| format!("pod {i} of {}", n.name))?;
            }
        }
        publish_slices(state).context("the EndpointSlices")?;
    }
    state.complete = true;
    state.save()
}

/// A node namespace on the bridge, its pods, and its Service addresses.
fn build_node(state: &mut State, n: &topology::LabNode, sw: &str) -> anyhow::Result<()> {
    let t = state.topology.clone();
    let (bridge, gateway, segment) = t
        .segment_of(n.address)
        .with_context(|| format!("{} is in no segment of the lab", n.address))?;
    let prefix_len = segment.prefix_len();
    let ns = state.node_ns(&n.name);
    state.add_ns(&ns, true)?;
    // The bridge side is named after the node, so `bridge link` reads well.
    sys::run(
        "ip",
        &[
            "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &n.name, "netns",
            sw,
        ],
    )?;
    sys::ip(sw, &["link", "set", &n.name, "master", &bridge, "up"])?;
    sys::ip(
        &ns,
        &[
            "addr",
            "add",
            &format!("{}/{prefix_len}", n.address),
            "dev",
            "eth0",
        ],
    )?;
    sys::ip(&ns, &["link", "set", "eth0", "up"])?;
    sys::ip(
        &ns,
        &["route", "add", "default", "via", &gateway.to_string()],
    )?;

    // kube-proxy in IPVS mode puts every Service IP on a dummy interface, so
    // the node that receives a packet for one answers it itself.
    let mut service_ips: Vec<Ipv4Addr> = Vec::new();
    for s in &t.services {
        service_ips.push(s.cluster_ip);
        service_ips.extend(s.load_balancer_ip);
    }
    if !service_ips.is_empty() {
        if sys::ip(&ns, &["link", "add", "kube-ipvs0", "type", "dummy"]).is_err() {
            // Kernels without the dummy module (some VMs and containers): a
            // bridge without ports holds local addresses just the same.
            sys::ip(&ns, &["link", "add", "kube-ipvs0", "type", "bridge"])?;
        }
        for ip in service_ips {
            sys::ip(
                &ns,
                &["addr", "add", &format!("{ip}/32"), "dev", "kube-ipvs0"],
            )?;
        }
        sys::ip(&ns, &["link", "set", "kube-ipvs0", "up"])?;
    }

    // With petrel's IPAM the pods are made later, by the CNI plugins, once
    // the agents run.
    let own_pods = if t.petrel_ipam() { 0 } else { n.pods };
    for i in 1..=own_pods {
        let pod = state.pod_ns(&n.name, i);
        state.add_ns(&pod, false)?;
        let host_if = format!("pod{i}");
        let ip = n.pod_ip(i).to_string();
        sys::run(
            "ip",
            &[
                "link", "add", "eth0", "netns", &pod, "type", "veth", "peer", "name", &host_if,
                "netns", &ns,
            ],
        )?;
        sys::ip(&pod, &["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        // Room for the pool's tunnel header, as the agent gives pods made by
        // the CNI plugins (--cni-conflist).
        let mtu = t.pod_mtu().to_string();
        sys::ip(&pod, &["link", "set", "eth0", "mtu", &mtu])?;
        sys::ip(&pod, &["link", "set", "eth0", "up"])?;
        sys::ip(
            &pod,
            &[
                "route",
                "add",
                "default",
                "via",
                POD_GATEWAY,
                "dev",
                "eth0",
                "onlink",
            ],
        )?;
        // What Calico does: the node answers ARP for the pod's gateway (proxy
        // ARP, without the default random delay) and routes the pod's /32 to its veth.
        sys::sysctl(
            &ns,
            &[
                &format!("net.ipv4.conf.{host_if}.proxy_arp=1"),
                &format!("net.ipv4.neigh.{host_if}.proxy_delay=0"),
            ],
        )?;
        sys::ip(&ns, &["link", "set", &host_if, "up"])?;
        sys::ip(
            &ns,
            &[
                "route",
                "add",
                &format!("{ip}/32"),
                "dev",
                &host_if,
                "scope",
                "link",
            ],
        )?;
    }
    Ok(())
}
