//! Two agents reading the same cluster objects: the node-to-node mesh comes up
//! by itself, each node's pod CIDR and a LoadBalancer IP with
//! `externalTrafficPolicy: Local` reach the other node's kernel, and when the
//! endpoint moves, the VIP moves with it over the same sessions (incremental
//! UPDATEs, no reset). `petrel status` says what is advertised, to whom, and
//! why not.

mod common;

use std::process::Command;

use common::{Petrel, wait_until};
use serde_json::Value;

/// The whole cluster as both nodes see it; `endpoint_node` hosts the only
/// ready endpoint of the Service.
fn cluster(endpoint_node: &str) -> String {
    format!(
        r#"apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {{name: default}}
spec:
  asNumber: 64512
  serviceLoadBalancerIPs: [{{cidr: 198.51.100.0/24}}]
---
apiVersion: v1
kind: Node
metadata: {{name: n1}}
spec: {{podCIDRs: [10.244.1.0/24]}}
status: {{addresses: [{{type: InternalIP, address: 10.30.0.1}}]}}
---
apiVersion: v1
kind: Node
metadata: {{name: n2}}
spec: {{podCIDRs: [10.244.2.0/24]}}
status: {{addresses: [{{type: InternalIP, address: 10.30.0.2}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec: {{type: LoadBalancer, clusterIP: 10.96.0.10, externalTrafficPolicy: Local}}
status: {{loadBalancer: {{ingress: [{{ip: 198.51.100.10}}]}}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
endpoints:
  - {{addresses: [10.244.9.9], conditions: {{ready: true}}, nodeName: {endpoint_node}}}
"#
    )
}

fn status(p: &Petrel, format: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["status", "-o", format, "--socket"])
        .arg(&p.socket)
        .output()
        .expect("petrel status runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn vip(p: &Petrel) -> Value {
    let (_, text) = status(p, "json");
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v["advertisements"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|i| i["prefix"] == "198.51.100.10/32")
                .cloned()
        })
        .unwrap_or(Value::Null)
}

fn via(p: &Petrel, dst: &str) -> Option<String> {
    p.kernel_route(dst)
        .and_then(|r| r["gateway"].as_str().map(str::to_string))
}

#[test]
fn the_mesh_carries_pod_cidrs_and_a_local_vip_that_follows_its_endpoint() {
    let mut lab = common::lab("mesh");
    let a = lab.ns("a");
    let b = lab.ns("b");
    lab.link(&a, &b, "eth0", &["10.30.0.1/24"], &["10.30.0.2/24"]);
    let n1 = lab.petrel(&a, "n1", &cluster("n1"));
    let n2 = lab.petrel(&b, "n2", &cluster("n1"));
    n1.wait_established("10.30.0.2", 30);
    n2.wait_established("10.30.0.1", 30);
    assert_eq!(
        n1.peer("10.30.0.2").expect("mesh peer")["name"],
        "node-mesh-n2"
    );

    wait_until(20, "pod CIDRs and the VIP in the kernels", || {
        match (
            via(&n2, "10.244.1.0/24"),
            via(&n1, "10.244.2.0/24"),
            via(&n2, "198.51.100.10"),
        ) {
            (Some(x), Some(y), Some(z)) if x == "10.30.0.1" && y == "10.30.0.2" && z == x => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // Each node blackholes its own block and has no BGP route for the VIP it
    // announces itself.
    let own = n1.kernel_route("10.244.1.0/24").expect("blackhole");
    assert_eq!(own["type"], "blackhole", "{own}");
    assert!(n1.kernel_route("198.51.100.10").is_none());

    // Status: where it is advertised, to whom, and why not elsewhere.
    let here = vip(&n1);
    assert_eq!(here["advertised"], true, "{here}");
    assert_eq!(here["kind"], "LoadBalancer IP");
    assert_eq!(here["service"], "shop/web");
    assert_eq!(here["peers"][0]["name"], "node-mesh-n2");
    assert_eq!(here["peers"][0]["sent"], true, "{here}");
    let there = vip(&n2);
    assert_eq!(there["advertised"], false, "{there}");
    assert!(
        there["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no ready endpoint on this node")),
        "{there}"
    );
    let (ok, table) = status(&n2, "table");
    assert!(ok);
    assert!(
        table.contains("node n2  AS 64512  router ID 10.30.0.2"),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("198.51.100.10/32")
            && l.contains("LoadBalancer IP")
            && l.contains("shop/web")
            && l.contains(" no ")),
        "{table}"
    );
    assert!(table.contains("10.244.2.0/24"), "{table}");
    let (ok, yaml) = status(&n1, "yaml");
    assert!(ok);
    assert!(yaml.contains("advertisements:"), "{yaml}");
    assert!(yaml.contains("198.51.100.10/32"), "{yaml}");

    // The endpoint moves to n2: the VIP follows, over the same sessions.
    n1.reconfigure(&cluster("n2"));
    n2.reconfigure(&cluster("n2"));
    wait_until(10, "the VIP to move to n2", || {
        match (via(&n1, "198.51.100.10"), via(&n2, "198.51.100.10")) {
            (Some(g), None) if g == "10.30.0.2" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    for (p, addr) in [(&n1, "10.30.0.2"), (&n2, "10.30.0.1")] {
        let peer = p.peer(addr).expect("peer");
        assert_eq!(peer["state"], "Established");
        assert_eq!(peer["flaps"], 0, "no session reset: {peer}");
    }
    assert_eq!(vip(&n2)["advertised"], true);

    // An agent that is not running: status fails with a clear message.
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["status", "--socket", "/nonexistent/petrel.sock"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `petrel agent` running?"));
}
