//! What the tests share: the harness is `testkit`'s; here only what names
//! this package's binary, and the YAML of one node.
#![allow(dead_code)]

// Each test binary uses some of these.
#[allow(unused_imports)]
pub use testkit::{KubeEnv, Lab, Petrel, must_run as run, wait_until};

/// A [`Lab`] that starts this package's `petrel` binary.
pub fn lab(name: &str) -> Lab {
    Lab::new(name).with_petrel(env!("CARGO_BIN_EXE_petrel"))
}

/// The YAML objects of one node: its BGPConfiguration, its Node (pod CIDRs
/// 10.244.1.0/24 and fd00:244:1::/64, the given InternalIPs) and `peers`.
pub fn petrel_yaml(asn: u32, router_id: &str, node_ips: &[&str], peers: &str) -> String {
    let addrs: Vec<String> = node_ips
        .iter()
        .map(|ip| format!("{{type: InternalIP, address: \"{ip}\"}}"))
        .collect();
    format!(
        r#"apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {{name: default}}
spec: {{asNumber: {asn}, routerID: {router_id}}}
---
apiVersion: v1
kind: Node
metadata: {{name: node-1}}
spec: {{podCIDRs: [10.244.1.0/24, "fd00:244:1::/64"]}}
status: {{addresses: [{}]}}
---
{peers}"#,
        addrs.join(", ")
    )
}
