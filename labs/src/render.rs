//! What a topology becomes: the cluster's objects (YAML, as the agents'
//! source or the API server reads them), the route reflectors' objects and
//! configurations (FRR, BIRD), and a Graphviz picture.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;

use super::topology::*;

/// The cluster's objects, one file each: what every node agent reads from
/// `<statedir>/cluster`. Returns (file name, YAML).
pub fn cluster_objects(t: &Topology) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let c = &t.cluster;
    let cidrs = |v: &[Ipv4Net]| {
        v.iter()
            .map(|n| format!("{{cidr: {n}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    files.push((
        "bgpconfiguration.yaml".to_string(),
        format!(
            "apiVersion: petrel.dev/v1alpha1\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec:\n  asNumber: {}\n  nodeToNodeMeshEnabled: {}\n  serviceClusterIPs: [{}]\n  serviceLoadBalancerIPs: [{}]\n  ipamMode: {:?}\n",
            c.asn,
            c.node_to_node_mesh,
            cidrs(&c.service_cluster_ips),
            cidrs(&c.service_load_balancer_ips),
            c.ipam_mode,
        ),
    ));
    if let Some(pool) = c.pod_pool {
        let mut extra = String::new();
        if let Some(e) = c.encapsulation {
            let kind = match e.kind {
                TunnelType::Vxlan => "VXLAN",
                TunnelType::Ipip => "IPIP",
            };
            let _ = write!(
                extra,
                ", encapsulation: {{type: {kind}, mode: {:?}}}",
                e.mode
            );
        }
        if c.nat_outgoing {
            extra.push_str(", natOutgoing: true");
        }
        files.push((
            "ippool.yaml".to_string(),
            format!(
                "apiVersion: petrel.dev/v1alpha1\nkind: IPPool\nmetadata: {{name: {POD_POOL}}}\nspec: {{cidr: {pool}, blockSize: {}{extra}}}\n",
                t.block_size()
            ),
        ));
    }
    let add_paths = if t.router.kind == RouterKind::Petrel {
        // The reflector sends every path; the nodes take them all.
        ", addPaths: {receive: true}"
    } else {
        ""
    };
    files.push((
        format!("bgppeer-{}.yaml", t.router.name),
        format!(
            "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: {}}}\nspec: {{peerIP: {}, asNumber: {}{add_paths}}}\n",
            t.router.name,
            t.router.address,
            t.router_asn()
        ),
    ));
    for n in &t.nodes {
        let annotations = match n.asn {
            Some(a) => format!("\n  annotations: {{petrel.dev/as-number: \"{a}\"}}"),
            None => String::new(),
        };
        files.push((
            format!("node-{}.yaml", n.name),
            format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {}{annotations}\nspec: {{podCIDRs: [{}]}}\nstatus: {{addresses: [{{type: InternalIP, address: {}}}]}}\n",
                n.name, n.pod_cidr, n.address
            ),
        ));
    }
    for s in &t.services {
        files.push((format!("service-{}.yaml", s.name), service_yaml(s)));
    }
    // With petrel's IPAM the pods' addresses are known once the pods are
    // made: their EndpointSlices come then.
    if !t.petrel_ipam() {
        files.extend(endpoint_slices(t, &|n: &LabNode, i| Some(n.pod_ip(i))));
    }
    files
}

/// The Services' EndpointSlices, with `ip_of(node, i)` the address of pod
/// `i` of a node. Returns (file name, YAML).
pub fn endpoint_slices(
    t: &Topology,
    ip_of: &dyn Fn(&LabNode, u8) -> Option<Ipv4Addr>,
) -> Vec<(String, String)> {
    t.services
        .iter()
        .map(|s| {
            (
                format!("endpointslice-{}.yaml", s.name),
                endpoint_slice_yaml(t, &s.name, &s.endpoints, ip_of),
            )
        })
        .collect()
}

/// A Service object.
pub fn service_yaml(s: &Service) -> String {
    let kind = match s.kind {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    let policy = match s.external_traffic_policy {
        TrafficPolicy::Cluster => "Cluster",
        TrafficPolicy::Local => "Local",
    };
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {}, namespace: default}}\nspec: {{type: {kind}, clusterIP: {ip}, clusterIPs: [{ip}], externalTrafficPolicy: {policy}, ports: [{{port: 80, protocol: TCP}}]}}\n",
        s.name,
        ip = s.cluster_ip
    );
    if let Some(lb) = s.load_balancer_ip {
        let _ = writeln!(y, "status: {{loadBalancer: {{ingress: [{{ip: {lb}}}]}}}}");
    }
    y
}

/// The EndpointSlice of Service `service` with one ready endpoint, the first
/// pod, on each node of `nodes` (unknown names are skipped).
pub fn endpoint_slice_yaml(
    t: &Topology,
    service: &str,
    nodes: &[String],
    ip_of: &dyn Fn(&LabNode, u8) -> Option<Ipv4Addr>,
) -> String {
    let mut y = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-lab, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{port: 80, protocol: TCP}}]\nendpoints:"
    );
    let mut any = false;
    for n in nodes.iter().filter_map(|n| t.node(n)) {
        let Some(ip) = ip_of(n, 1) else { continue };
        any = true;
        let _ = write!(
            y,
            "\n  - {{addresses: [{ip}], conditions: {{ready: true}}, nodeName: {}}}",
            n.name
        );
    }
    if !any {
        y.push_str(" []");
    }
    y.push('\n');
    y
}

/// The route reflector's own objects (kind petrel): its identity and one
/// listen range for every node of the subnet.
pub fn reflector_objects(t: &Topology) -> Vec<(String, String)> {
    let mut files = vec![
        (
            "bgpconfiguration.yaml".to_string(),
            format!(
                "apiVersion: petrel.dev/v1alpha1\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {{asNumber: {}, routerID: {}}}\n",
                t.cluster.asn, t.router.address
            ),
        ),
        (
            "bgppeer-nodes.yaml".to_string(),
            format!(
                "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: nodes}}\nspec: {{listenRange: {}, asNumber: {}, routeReflectorClient: true, addPaths: {{send: all}}}}\n",
                t.subnet, t.cluster.asn
            ),
        ),
    ];
    // Each rack's nodes too.
    for r in &t.racks {
        files.push((
            format!("bgppeer-{}.yaml", r.name),
            format!(
                "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: {}}}\nspec: {{listenRange: {}, asNumber: {}, routeReflectorClient: true, addPaths: {{send: all}}}}\n",
                r.name, r.subnet, t.cluster.asn
            ),
        ));
    }
    files
}

/// FRR's integrated configuration for the ToR: eBGP (or iBGP) to every node,
/// ECMP across nodes in different ASes.
pub fn frr_config(t: &Topology, log: &Path) -> String {
    let r = &t.router;
    let mut c = format!(
        "frr defaults datacenter\nhostname {}\nlog file {}\n!\nrouter bgp {}\n bgp router-id {}\n no bgp ebgp-requires-policy\n bgp bestpath as-path multipath-relax\n",
        r.name,
        log.display(),
        t.router_asn(),
        r.address
    );
    for n in &t.nodes {
        let _ = writeln!(
            c,
            " neighbor {} remote-as {}\n neighbor {} description {}",
            n.address,
            n.asn.unwrap_or(t.cluster.asn),
            n.address,
            n.name
        );
    }
    c.push_str(" address-family ipv4 unicast\n  maximum-paths 8\n  maximum-paths ibgp 8\n");
    for n in &t.nodes {
        if t.session_kind(n) == "iBGP" {
            // Without it the nodes would not learn each other's routes.
            let _ = writeln!(c, "  neighbor {} route-reflector-client", n.address);
        }
    }
    c.push_str(" exit-address-family\n!\n");
    c
}

/// BIRD 2's configuration for the ToR: one BGP protocol per node, every best
/// path (merged into ECMP) into the namespace's kernel table.
pub fn bird_config(t: &Topology) -> String {
    let r = &t.router;
    let mut c = format!(
        "router id {};\nprotocol device {{ scan time 10; }}\nprotocol kernel {{\n  ipv4 {{ export all; }};\n  merge paths on;\n}}\ntemplate bgp node {{\n  local {} as {};\n  hold time 9;\n  # Next hops on the shared subnet, without an IGP (iBGP would resolve them recursively).\n  ipv4 {{ import all; export all; gateway direct; }};\n}}\n",
        r.address,
        r.address,
        t.router_asn()
    );
    for n in &t.nodes {
        let internal = if t.session_kind(n) == "iBGP" {
            // iBGP is multihop in BIRD unless told the neighbour is direct.
            "\n  direct;\n  rr client;"
        } else {
            ""
        };
        let _ = writeln!(
            c,
            "protocol bgp {} from node {{\n  neighbor {} as {};{internal}\n}}",
            bird_protocol(&n.name),
            n.address,
            n.asn.unwrap_or(t.cluster.asn)
        );
    }
    c
}

/// A node's BIRD protocol name (BIRD symbols take no `-`).
pub fn bird_protocol(node: &str) -> String {
    node.replace('-', "_")
}

/// Graphviz DOT of the topology.
pub fn dot(t: &Topology) -> String {
    let r = &t.router;
    let mut d = format!(
        "graph \"{}\" {{\n  graph [rankdir=TB, fontname=\"Helvetica\", labelloc=t, label=\"petrel lab {}: {} nodes, {} ({})\"];\n  node [fontname=\"Helvetica\", fontsize=11];\n  edge [fontname=\"Helvetica\", fontsize=10];\n",
        t.name,
        t.name,
        t.nodes.len(),
        r.kind.label(),
        if t.nodes.iter().all(|n| t.session_kind(n) == "iBGP") {
            "iBGP"
        } else {
            "eBGP"
        }
    );
    let _ = writeln!(
        d,
        "  router [shape=box, style=\"rounded,filled\", fillcolor=\"#dde8f5\", label=\"{} ({})\\nAS {}\\n{}/{}\\nnamespace {}-{}\"];",
        r.name,
        r.kind.label(),
        t.router_asn(),
        r.address,
        t.subnet.prefix_len(),
        t.name,
        r.name
    );
    let _ = writeln!(
        d,
        "  bridge [shape=box, style=dashed, label=\"bridge br0: {}\"];\n  router -- bridge;",
        t.subnet
    );
    for (i, n) in t.nodes.iter().enumerate() {
        let _ = writeln!(
            d,
            "  subgraph cluster_n{i} {{\n    label=\"{} (namespace {}-{})\"; style=rounded;",
            n.name, t.name, n.name
        );
        let _ = writeln!(
            d,
            "    n{i} [shape=box, style=filled, fillcolor=\"#f5ecd7\", label=\"petrel agent\\nAS {}\\neth0 {}\\npods {}\\nkube-ipvs0: Service IPs\"];",
            n.asn.unwrap_or(t.cluster.asn),
            n.address,
            match t.cluster.pod_pool {
                Some(pool) if t.petrel_ipam() => format!("from IPPool {pool}"),
                _ => n.pod_cidr.to_string(),
            }
        );
        for p in 1..=n.pods {
            let addr = if t.petrel_ipam() {
                "petrel-ipam".to_string()
            } else {
                format!("{}/32", n.pod_ip(p))
            };
            let _ = writeln!(
                d,
                "    n{i}p{p} [shape=ellipse, label=\"pod{p}\\neth0 {addr}\"];\n    n{i} -- n{i}p{p} [label=\"veth pod{p}\"];",
            );
        }
        d.push_str("  }\n");
        let _ = writeln!(
            d,
            "  bridge -- n{i} [label=\"port {}\\n{}\"];",
            n.name,
            t.session_kind(n)
        );
    }
    for (i, s) in t.services.iter().enumerate() {
        let mut label = format!("Service {}\\nClusterIP {}", s.name, s.cluster_ip);
        if let Some(lb) = s.load_balancer_ip {
            let _ = write!(label, "\\nLoadBalancer {lb}");
        }
        let _ = write!(
            label,
            "\\nexternalTrafficPolicy {:?}",
            s.external_traffic_policy
        );
        let _ = writeln!(
            d,
            "  s{i} [shape=note, style=filled, fillcolor=\"#e4f2e4\", label=\"{label}\"];"
        );
        for e in &s.endpoints {
            if let Some(j) = t.nodes.iter().position(|n| &n.name == e) {
                let _ = writeln!(d, "  s{i} -- n{j}p1 [style=dotted, label=\"endpoint\"];");
            }
        }
    }
    d.push_str("}\n");
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::tests::{err, tor};

    #[test]
    fn objects_carry_the_topology() {
        // tor-bird: ipamMode Kubernetes, the pods numbered in podCIDRs.
        let t = Topology::load(Some("tor-bird")).expect("tor-bird");
        let files = cluster_objects(&t);
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "bgpconfiguration.yaml",
                "bgppeer-tor.yaml",
                "node-node-1.yaml",
                "node-node-2.yaml",
                "node-node-3.yaml",
                "service-web.yaml",
                "endpointslice-web.yaml"
            ]
        );
        for (name, y) in &files {
            let v: serde_json::Value = serde_saphyr::from_str(y).expect(name);
            assert!(v["kind"].is_string(), "{name}");
        }
        assert!(files[2].1.contains("petrel.dev/as-number: \"65001\""));
        let slice: serde_json::Value = serde_saphyr::from_str(&files[6].1).expect("slice");
        assert_eq!(slice["endpoints"][1]["addresses"][0], "10.244.2.2");
        assert_eq!(slice["endpoints"][1]["nodeName"], "node-2");
        let empty: serde_json::Value =
            serde_saphyr::from_str(&endpoint_slice_yaml(&t, "web", &[], &|n, i| {
                Some(n.pod_ip(i))
            }))
            .expect("empty");
        assert_eq!(empty["endpoints"], serde_json::json!([]));
        // tor: ipamMode Petrel. An IPPool, and no EndpointSlice until the
        // pods have their addresses.
        let petrel = Topology::parse(&tor()).expect("tor");
        let files = cluster_objects(&petrel);
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"ippool.yaml") && !names.contains(&"endpointslice-web.yaml"));
        assert!(files[0].1.contains("ipamMode: Petrel"), "{}", files[0].1);
        let slices = endpoint_slices(&petrel, &|n, i| {
            (n.name == "node-1" && i == 1).then(|| Ipv4Addr::new(10, 250, 0, 5))
        });
        let slice: serde_json::Value = serde_saphyr::from_str(&slices[0].1).expect("slice");
        assert_eq!(slice["endpoints"].as_array().map(Vec::len), Some(1));
        assert_eq!(slice["endpoints"][0]["addresses"][0], "10.250.0.5");
        let e = err(&tor().replace(
            "  podPool: 10.250.0.0/16       # the IPPool; each node claims blocks of it\n",
            "",
        ));
        assert!(e.starts_with("cluster.podPool:"), "{e}");
        let e = err(&tor().replace("blockSize: 26", "blockSize: 31"));
        assert!(e.starts_with("cluster.blockSize:"), "{e}");
        let rr = Topology::load(Some("rr")).expect("rr");
        assert!(
            cluster_objects(&rr)
                .iter()
                .any(|(n, y)| n.starts_with("bgppeer-") && y.contains("addPaths: {receive: true}"))
        );
        assert!(
            reflector_objects(&rr)[1]
                .1
                .contains("listenRange: 192.168.100.0/24")
        );
    }
}
