//! The advertisement rules, through whole plans.

use super::*;
use crate::{Plan, plan as plan_all};
use bgpd::policy::Verdict;
use bgpd::rib::Attrs;
use model::files::load_text;
use std::path::Path;

const CLUSTER: &str = r#"
apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {name: default}
spec:
  asNumber: 64512
  nodeToNodeMeshEnabled: false
  serviceClusterIPs: [{cidr: 10.96.0.0/16}]
  serviceExternalIPs: [{cidr: 192.0.2.0/24}]
  serviceLoadBalancerIPs: [{cidr: 198.51.100.0/24}]
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor-a}
spec: {peerIP: 10.0.0.254, asNumber: 65000}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor-b}
spec: {peerIP: 10.0.0.253, asNumber: 65000}
---
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {rack: r1}}
spec: {podCIDRs: [10.244.1.0/24]}
status: {addresses: [{type: InternalIP, address: 10.0.0.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2, labels: {rack: r2}}
spec: {podCIDRs: [10.244.2.0/24]}
status: {addresses: [{type: InternalIP, address: 10.0.0.2}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {tier: front}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  externalIPs: [192.0.2.7, 203.0.113.9]
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
status: {loadBalancer: {ingress: [{ip: 198.51.100.10}, {hostname: lb.example}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-x, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
  - {addresses: [10.244.1.5], nodeName: n1}
  - {addresses: [10.244.2.5], conditions: {ready: false}, nodeName: n2}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {type: LoadBalancer, clusterIP: 10.96.0.11}
status: {loadBalancer: {ingress: [{ip: 198.51.100.11}, {ip: 203.0.113.11}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-x, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
endpoints:
  - {addresses: [10.244.2.6], conditions: {ready: true}, nodeName: n2}
"#;

fn planned(extra: &str, node: &str) -> (Plan, Vec<Problem>) {
    let mut snap = Snapshot::default();
    let mut problems = Vec::new();
    let text = format!("{CLUSTER}\n---\n{extra}");
    load_text(Path::new("t.yaml"), &text, &mut snap, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let (p, problems) = plan_all(&snap, node);
    (p.expect("planned"), problems)
}

fn intent<'a>(p: &'a Plan, prefix: &str) -> &'a Intent {
    p.intents
        .iter()
        .find(|i| i.prefix.to_string() == prefix)
        .unwrap_or_else(|| panic!("no intent for {prefix}: {:#?}", p.intents))
}

fn originated(p: &Plan) -> Vec<String> {
    p.speaker
        .originate
        .iter()
        .map(|r| r.prefix.to_string())
        .collect()
}

/// What the export policy of `peer` does with our route for `prefix`.
fn verdict(p: &Plan, peer: &str, prefix: &str) -> (Verdict, Option<Attrs>) {
    let n = p
        .speaker
        .neighbors
        .iter()
        .find(|n| n.name == peer)
        .expect("peer");
    let route = p
        .speaker
        .originate
        .iter()
        .find(|r| r.prefix.to_string() == prefix)
        .expect("originated");
    let attrs = Attrs {
        communities: route.communities.clone(),
        large_communities: route.large_communities.clone(),
        local_pref: route.local_pref,
        ..Attrs::default()
    };
    match &n.export_policy {
        None => (Verdict::Default, None),
        Some(pol) => {
            let e = pol.evaluate(&route.prefix, &attrs, p.speaker.asn);
            (e.verdict, e.attrs)
        }
    }
}

#[test]
fn local_policy_follows_ready_local_endpoints() {
    let (n1, _) = planned("", "n1");
    let (n2, _) = planned("", "n2");
    for ip in ["198.51.100.10/32", "10.96.0.10/32", "192.0.2.7/32"] {
        assert!(intent(&n1, ip).advertised, "{ip} on n1");
        assert!(originated(&n1).contains(&ip.to_string()));
        let i = intent(&n2, ip);
        assert!(!i.advertised, "{ip} on n2: its endpoint is not ready");
        assert!(
            i.reason.contains("no ready endpoint on this node"),
            "{}",
            i.reason
        );
        assert!(!originated(&n2).contains(&ip.to_string()));
    }
    // Ranges go out from every node; the pod CIDR from its own node only.
    for p in [&n1, &n2] {
        assert!(originated(p).contains(&"10.96.0.0/16".to_string()));
        assert!(originated(p).contains(&"192.0.2.0/24".to_string()));
    }
    assert_eq!(
        n1.blackholes,
        vec!["10.244.1.0/24".parse::<IpNet>().expect("p")]
    );
    assert!(!originated(&n1).contains(&"10.244.2.0/24".to_string()));
}

#[test]
fn cluster_policy_needs_an_endpoint_somewhere_and_a_configured_range() {
    let (n1, _) = planned("", "n1");
    let i = intent(&n1, "198.51.100.11/32");
    assert!(i.advertised, "Cluster policy: every node, {}", i.reason);
    let outside = intent(&n1, "203.0.113.11/32");
    assert!(!outside.advertised);
    assert!(
        outside.reason.contains("serviceLoadBalancerIPs"),
        "{}",
        outside.reason
    );
    let ext = intent(&n1, "203.0.113.9/32");
    assert!(!ext.advertised && ext.reason.contains("serviceExternalIPs"));
    // The api Service's only endpoint stops being ready: withdrawn everywhere.
    let mut snap = Snapshot::default();
    let mut problems = Vec::new();
    let text = CLUSTER.replace(
        "{addresses: [10.244.2.6], conditions: {ready: true}",
        "{addresses: [10.244.2.6], conditions: {ready: false}",
    );
    load_text(Path::new("t.yaml"), &text, &mut snap, &mut problems);
    let (p, _) = plan_all(&snap, "n1");
    let p = p.expect("planned");
    let i = intent(&p, "198.51.100.11/32");
    assert!(!i.advertised && i.reason.contains("no ready endpoint anywhere"));
    // Deleting a Service withdraws what it caused.
    snap.services.retain(|s| s.name != "web");
    let (p, _) = plan_all(&snap, "n1");
    let p = p.expect("planned");
    assert!(!originated(&p).contains(&"198.51.100.10/32".to_string()));
    assert!(!originated(&p).contains(&"10.96.0.10/32".to_string()));
}

#[test]
fn advertisements_add_attributes_limit_peers_and_aggregate() {
    let ads = r#"
apiVersion: petrel.dev/v1alpha1
kind: BGPAdvertisement
metadata: {name: to-a}
spec:
  serviceSelectors: [{matchLabels: {tier: front}}]
  cidrs: [198.51.100.0/24]
  peers: [tor-a]
  communities: ["65000:100", no-export]
  largeCommunities: ["65000:1:2"]
  localPref: 200
---
apiVersion: petrel.dev/v1alpha1
kind: BGPAdvertisement
metadata: {name: aggregate}
spec:
  cidrs: [198.51.100.11/32]
  aggregationLength: 24
"#;
    let (n1, problems) = planned(ads, "n1");
    assert!(problems.is_empty(), "{problems:?}");
    let vip = intent(&n1, "198.51.100.10/32");
    assert!(vip.advertised);
    assert_eq!(vip.peers, Some(vec!["tor-a".to_string()]));
    let (v, attrs) = verdict(&n1, "tor-a", "198.51.100.10/32");
    assert_eq!(v, Verdict::Default);
    let attrs = attrs.expect("attributes added");
    assert_eq!(
        attrs.communities,
        vec![Community::NO_EXPORT, Community(65000 << 16 | 100)]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(attrs.local_pref, Some(200));
    assert_eq!(attrs.large_communities.len(), 1);
    assert_eq!(
        verdict(&n1, "tor-b", "198.51.100.10/32").0,
        Verdict::Rejected
    );
    // Other routes are untouched by the advertisement's rules.
    assert_eq!(verdict(&n1, "tor-b", "10.244.1.0/24").0, Verdict::Default);
    // The api Service's IP is aggregated into its /24, to every peer.
    let agg = intent(&n1, "198.51.100.0/24");
    assert!(agg.advertised && agg.peers.is_none());
    assert!(originated(&n1).contains(&"198.51.100.0/24".to_string()));
    assert!(!originated(&n1).contains(&"198.51.100.11/32".to_string()));
}

#[test]
fn node_selectors_of_advertisements_pick_the_announcing_nodes() {
    let ads = r#"
apiVersion: petrel.dev/v1alpha1
kind: BGPAdvertisement
metadata: {name: rack2-only}
spec:
  cidrs: [198.51.100.11/32]
  nodeSelectors: [{matchExpressions: [{key: rack, operator: In, values: [r2]}]}]
"#;
    let (n1, _) = planned(ads, "n1");
    let (n2, _) = planned(ads, "n2");
    let i = intent(&n1, "198.51.100.11/32");
    assert!(
        !i.advertised && i.reason.contains("rack2-only"),
        "{}",
        i.reason
    );
    assert!(intent(&n2, "198.51.100.11/32").advertised);
}

#[test]
fn a_bad_advertisement_is_named_and_ignored() {
    let ads = r#"
apiVersion: petrel.dev/v1alpha1
kind: BGPAdvertisement
metadata: {name: typo}
spec: {peers: [tor-c], communities: ["65000:100"]}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPAdvertisement
metadata: {name: long}
spec: {aggregationLength: 33}
"#;
    let (n1, problems) = planned(ads, "n1");
    let fields: Vec<_> = problems.iter().filter_map(|p| p.field.as_deref()).collect();
    assert_eq!(
        fields,
        ["spec.aggregationLength", "spec.peers[0]"],
        "{problems:?}"
    );
    assert!(problems[1].message.contains("tor-c"));
    // Without a valid advertisement, the VIP goes to every peer as before.
    assert!(intent(&n1, "198.51.100.10/32").peers.is_none());
    assert_eq!(
        verdict(&n1, "tor-b", "198.51.100.10/32").0,
        Verdict::Default
    );
}

#[test]
fn the_mesh_peers_every_other_node_and_node_selectors_pick_peers() {
    let extra = r#"
apiVersion: v1
kind: Node
metadata: {name: n3, annotations: {petrel.dev/as-number: "65003"}}
status: {addresses: [{type: InternalIP, address: 10.0.0.3}]}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: rack1-tor}
spec:
  peerIP: 10.0.0.252
  asNumber: 65000
  nodeSelector: {matchLabels: {rack: r1}}
"#;
    let text = CLUSTER.replace(
        "nodeToNodeMeshEnabled: false",
        "nodeToNodeMeshEnabled: true",
    );
    let mut snap = Snapshot::default();
    let mut problems = Vec::new();
    load_text(
        Path::new("t.yaml"),
        &format!("{text}\n---\n{extra}"),
        &mut snap,
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:?}");
    let names = |node: &str| -> Vec<(String, String, u32)> {
        let (p, _) = plan_all(&snap, node);
        p.expect("planned")
            .speaker
            .neighbors
            .iter()
            .map(|n| (n.name.clone(), format!("{:?}", n.address), n.asn))
            .collect()
    };
    let n1 = names("n1");
    assert!(n1.iter().any(|(n, _, _)| n == "rack1-tor"));
    assert!(n1.contains(&("node-mesh-n2".into(), "Address(10.0.0.2)".into(), 64512)));
    // n3 has its own ASN: n1 peers with it as such.
    assert!(n1.contains(&("node-mesh-n3".into(), "Address(10.0.0.3)".into(), 65003)));
    let n2 = names("n2");
    assert!(!n2.iter().any(|(n, _, _)| n == "rack1-tor"), "{n2:?}");
    let (p3, _) = plan_all(&snap, "n3");
    assert_eq!(p3.expect("planned").speaker.asn, 65003);
    // Switched off: only the configured peers.
    let (p, _) = plan_all(&snap, "n1");
    assert_eq!(p.expect("planned").speaker.neighbors.len(), 5);
    let mut off = snap.clone();
    off.configurations[0].spec.node_to_node_mesh_enabled = Some(false);
    let (p, _) = plan_all(&off, "n1");
    assert_eq!(p.expect("planned").speaker.neighbors.len(), 3);
}

#[test]
fn mesh_routes_stay_in_the_mesh_and_api_peers_get_the_limits() {
    let ads = r#"
apiVersion: petrel.dev/v1alpha1
kind: BGPAdvertisement
metadata: {name: to-a}
spec: {cidrs: [198.51.100.10/32], peers: [tor-a], communities: [no-export]}
"#;
    let text = format!("{CLUSTER}\n---\n{ads}").replace(
        "nodeToNodeMeshEnabled: false",
        "nodeToNodeMeshEnabled: true",
    );
    let mut snap = Snapshot::default();
    let mut problems = Vec::new();
    load_text(Path::new("t.yaml"), &text, &mut snap, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let (p, _) = plan_all(&snap, "n1");
    let p = p.expect("planned");
    let marker = crate::mesh_marker(64512);
    let mesh = p
        .speaker
        .neighbors
        .iter()
        .find(|n| n.name == "node-mesh-n2")
        .expect("mesh peer");
    let learned = mesh
        .import_policy
        .as_ref()
        .expect("marks")
        .evaluate(
            &"10.244.2.0/24".parse().expect("p"),
            &Attrs::default(),
            64512,
        )
        .attrs
        .expect("marked");
    assert_eq!(learned.large_communities, vec![marker]);
    let tor = p
        .speaker
        .neighbors
        .iter()
        .find(|n| n.name == "tor-b")
        .expect("tor-b");
    let export = tor.export_policy.as_ref().expect("policy");
    let prefix: IpNet = "10.244.2.0/24".parse().expect("p");
    assert_eq!(
        export.evaluate(&prefix, &learned, 64512).verdict,
        Verdict::Rejected
    );
    assert_eq!(
        export.evaluate(&prefix, &Attrs::default(), 64512).verdict,
        Verdict::Default
    );
    // The VIP limited to tor-a: NO_EXPORT is added on the way to tor-a
    // (not on our own route, which would then go nowhere), and a peer
    // added later through the API gets the same limit as tor-b.
    let vip = p
        .speaker
        .originate
        .iter()
        .find(|r| r.prefix.to_string() == "198.51.100.10/32")
        .expect("originated");
    assert!(vip.communities.is_empty());
    let (v, attrs) = verdict(&p, "tor-a", "198.51.100.10/32");
    assert_eq!(v, Verdict::Default);
    assert_eq!(
        attrs.expect("added").communities,
        vec![Community::NO_EXPORT]
    );
    let api = bgpd::policy::Policy {
        name: "api".into(),
        rules: p.api_peer_rules.clone(),
    };
    assert_eq!(
        api.evaluate(&vip.prefix, &Attrs::default(), 64512).verdict,
        Verdict::Rejected
    );
    assert_eq!(
        api.evaluate(&prefix, &learned, 64512).verdict,
        Verdict::Rejected
    );
}
