//! The Helm chart on a real control plane: rendered by Helm's own engine
//! (`charts/render.py`), every object created on the test's API server.
//!
//! - The workloads are accepted, and kube-controller-manager runs them as
//!   far as it can without a kubelet or scheduler: the DaemonSet controller
//!   makes one agent Pod per Linux node (none on a Windows node), placed by
//!   kube-scheduler; the Deployment's ReplicaSet makes its two controller
//!   Pods.
//! - RBAC, as `kubectl auth can-i --as=system:serviceaccount:...` answers:
//!   each account may do what its work needs and no more (no Secrets
//!   outside the release namespace, no spec writes).
//! - The ValidatingAdmissionPolicy: an agent's token (bound to its Pod,
//!   so naming its node) may write its own node's state and is refused, with
//!   the policy's message, for any other node's; a token naming no node is
//!   refused; nobody else is affected.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::KubeEnv;

/// Creates Nodes named `names` with `kubernetes.io/os` = `os`, the
/// test's node labels, and room for the chart's Pods (the scheduler places
/// them by their requests).
async fn nodes(env: &mut KubeEnv, names: &[&str], os: &str) {
    let room = json!({"cpu": "4", "memory": "8Gi", "pods": "110"});
    let mut labels = env.node_labels();
    labels["kubernetes.io/os"] = os.into();
    for n in names {
        env.create_json(
            "nodes",
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": n, "labels": labels},
                   "status": {"capacity": room, "allocatable": room}}),
        )
        .await;
    }
}

fn petrel_api(client: &kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("petrel.dev", "v1alpha1", kind),
        plural,
    );
    Api::all_with(client.clone(), &ar)
}

async fn client_of(kubeconfig: &Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .expect("kubeconfig usable");
    kube::Client::try_from(config).expect("client")
}

/// `kubectl auth can-i ARGS --as=USER`: the API server's answer.
fn can_i(env: &KubeEnv, user: &str, args: &[&str]) -> bool {
    let out = env
        .kubectl()
        .args(["auth", "can-i"])
        .args(args)
        .arg(format!("--as={user}"))
        .output()
        .expect("kubectl runs");
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match answer.as_str() {
        "yes" => true,
        "no" => false,
        _ => panic!(
            "kubectl auth can-i {args:?} --as={user}: {answer:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_workloads_run_and_its_accounts_may_do_their_work_and_no_more() {
    let mut env = KubeEnv::start("kube-chart").await;
    env.install_crds().await;
    let ns = env.namespace("petrel-system").await;
    let (l1, l2, w1) = (env.name("linux-1"), env.name("linux-2"), env.name("win-1"));
    nodes(&mut env, &[&l1, &l2], "linux").await;
    nodes(&mut env, &[&w1], "windows").await;
    let chart = env
        .install_chart(
            "petrel",
            &ns,
            json!({"admissionPolicy": {"enabled": true}, "metricsService": {"enabled": true},
                   "agent": {"passwordSecrets": ["bgp-passwords"]}}),
            &[],
        )
        .await;
    let kinds: Vec<&str> = chart
        .objects
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    for kind in [
        "DaemonSet",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ValidatingAdmissionPolicy",
    ] {
        assert!(
            kinds.contains(&kind),
            "the chart rendered no {kind}: {kinds:?}"
        );
    }

    // The DaemonSet controller puts one agent on each Linux node.
    env.agent_tokens(&chart, &[&l1, &l2]).await;
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let selector = |component: &str| {
        ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
            chart.release
        ))
    };
    let agents = pods.list(&selector("agent")).await.expect("Pods listed");
    let mut on: Vec<String> = agents
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    on.sort();
    assert_eq!(on, vec![l1.clone(), l2.clone()], "agent Pods by node");
    // The ReplicaSet controller makes the controller's two Pods.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = pods
            .list(&selector("controller"))
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        if n == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} controller Pods after 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let agent = chart.user("agent");
    let controller = chart.user("controller");
    let all = "--all-namespaces";
    // (user, can-i arguments, the answer), in the order of the roles.
    let table: &[(&str, &[&str], bool)] = &[
        (&agent, &["watch", "nodes"], true),
        (&agent, &["watch", "services", all], true),
        (
            &agent,
            &["watch", "endpointslices.discovery.k8s.io", all],
            true,
        ),
        (&agent, &["watch", "bgppeers.petrel.dev"], true),
        (&agent, &["patch", "nodes", "--subresource=status"], true),
        // Its VXLAN endpoint annotations (the policy keeps it to its own
        // Node and to petrel.dev/ annotations).
        (&agent, &["patch", "nodes"], true),
        (&agent, &["update", "nodes"], false),
        (&agent, &["delete", "nodes"], false),
        (
            &agent,
            &["patch", "bgppeers.petrel.dev", "--subresource=status"],
            true,
        ),
        (&agent, &["patch", "bgppeers.petrel.dev"], false),
        (&agent, &["create", "bgpnodestatuses.petrel.dev"], true),
        (&agent, &["delete", "bgpnodestatuses.petrel.dev"], false),
        (
            &agent,
            &["patch", "services", "--subresource=status", all],
            false,
        ),
        // Its BGP passwords, by name; no other Secret, even beside them,
        // and none listed or watched.
        (&agent, &["get", "secrets/bgp-passwords", "-n", &ns], true),
        (&agent, &["get", "secrets/unrelated", "-n", &ns], false),
        (&agent, &["list", "secrets", "-n", &ns], false),
        (&agent, &["watch", "secrets", "-n", &ns], false),
        (&agent, &["get", "secrets", "-n", "default"], false),
        (&agent, &["get", "secrets", "-n", "kube-system"], false),
        (&agent, &["list", "secrets", all], false),
        (&agent, &["create", "secrets", "-n", &ns], false),
        (&agent, &["get", "loadbalancerpools.petrel.dev"], false),
        (
            &agent,
            &["create", "leases.coordination.k8s.io", "-n", &ns],
            false,
        ),
        (&agent, &["create", "pods", "-n", &ns], false),
        (&agent, &["create", "ipamblocks.petrel.dev"], true),
        (&agent, &["update", "ipamblocks.petrel.dev"], true),
        (&agent, &["delete", "ipamblocks.petrel.dev"], true),
        (&agent, &["patch", "ipamblocks.petrel.dev"], false),
        (&controller, &["create", "ipamblocks.petrel.dev"], false),
        (&controller, &["delete", "ipamblocks.petrel.dev"], true),
        (&controller, &["watch", "pods", all], true),
        (&controller, &["delete", "pods", all], false),
        (&controller, &["watch", "services", all], true),
        (
            &controller,
            &["patch", "services", "--subresource=status", all],
            true,
        ),
        (&controller, &["patch", "services", all], false),
        (&controller, &["watch", "namespaces"], true),
        (
            &controller,
            &["watch", "loadbalancerpools.petrel.dev"],
            true,
        ),
        (
            &controller,
            &[
                "patch",
                "loadbalancerpools.petrel.dev",
                "--subresource=status",
            ],
            true,
        ),
        (
            &controller,
            &["patch", "loadbalancerpools.petrel.dev"],
            false,
        ),
        (&controller, &["create", "ippools.petrel.dev"], false),
        (
            &controller,
            &["create", "leases.coordination.k8s.io", "-n", &ns],
            true,
        ),
        (
            &controller,
            &["update", "leases.coordination.k8s.io", "-n", &ns],
            true,
        ),
        (
            &controller,
            &["create", "leases.coordination.k8s.io", "-n", "default"],
            false,
        ),
        (
            &controller,
            &["create", "events.events.k8s.io", "-n", "default"],
            true,
        ),
        (&controller, &["get", "secrets", "-n", &ns], false),
        (&controller, &["list", "secrets", all], false),
        (
            &controller,
            &["patch", "nodes", "--subresource=status"],
            false,
        ),
        // IPAM garbage collection: which nodes exist.
        (&controller, &["watch", "nodes"], true),
    ];
    let wrong: Vec<String> = table
        .iter()
        .filter(|(user, args, want)| can_i(&env, user, args) != *want)
        .map(|(user, args, want)| format!("{user} {args:?}: expected {want}"))
        .collect();
    assert!(wrong.is_empty(), "RBAC differs:\n{}", wrong.join("\n"));
    env.cleanup().await;
}

/// Patches `name`'s status with `patch` through `api`; the refusal's
/// message, if any.
async fn status_patch(api: &Api<DynamicObject>, name: &str, patch: Value) -> Result<(), String> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_policy_keeps_each_agent_to_its_own_nodes_state() {
    let mut env = KubeEnv::start("kube-policy").await;
    env.install_crds().await;
    let ns = env.namespace("petrel-system").await;
    let (n1, n2) = (env.name("n1"), env.name("n2"));
    nodes(&mut env, &[&n1, &n2], "linux").await;
    let chart = env
        .install_chart(
            "petrel",
            &ns,
            json!({"admissionPolicy": {"enabled": true}, "controller": {"enabled": false}}),
            &[],
        )
        .await;
    let tokens = env.agent_tokens(&chart, &[&n1]).await;
    let own = client_of(&tokens[0].1).await;
    let nameless = env
        .token(&ns, &chart.name("ServiceAccount", "agent"), None)
        .await;
    let nameless = client_of(&nameless).await;
    let admin = env.client();
    let node_api = |c: &kube::Client| -> Api<DynamicObject> {
        Api::all_with(
            c.clone(),
            &ApiResource::erase::<k8s_openapi::api::core::v1::Node>(&()),
        )
    };
    let ready = |status: &str| {
        json!({"status": {"conditions": [{
            "type": "PetrelBGPReady", "status": status, "reason": "Test",
            "message": "", "lastHeartbeatTime": null,
            "lastTransitionTime": "2026-12-04T00:00:00Z"}]}})
    };

    // The policy takes effect as the API server's informers see it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match status_patch(&node_api(&own), &n2, ready("True")).await {
            Err(e) => break e,
            Ok(()) => {
                assert!(
                    Instant::now() < deadline,
                    "the agent of {n1} still writes {n2}'s status 30 s after the policy"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(
        refused.contains("a petrel agent may change only its own Node and its status"),
        "{refused}"
    );
    // Its Node's petrel.dev/ annotations, and nothing else of any Node.
    let annotate = |key: &str, value: &str| json!({"metadata": {"annotations": {key: value}}});
    let pp = kube::api::PatchParams::default();
    node_api(&own)
        .patch(
            &n1,
            &pp,
            &Patch::Merge(annotate("petrel.dev/vxlan-tunnel-addr", "10.80.1.0")),
        )
        .await
        .expect("an agent annotates its own Node under petrel.dev/");
    for (node, key, why) in [
        (
            &n2,
            "petrel.dev/vxlan-tunnel-addr",
            "a petrel agent may change only its own Node and its status",
        ),
        (
            &n1,
            "example.com/other",
            "on its Node a petrel agent may change only the annotations it publishes",
        ),
        (
            &n1,
            "petrel.dev/as-number",
            "on its Node a petrel agent may change only the annotations it publishes",
        ),
    ] {
        let e = node_api(&own)
            .patch(node, &pp, &Patch::Merge(annotate(key, "x")))
            .await
            .expect_err("refused")
            .to_string();
        assert!(e.contains(why), "{node} {key}: {e}");
    }
    let e = node_api(&own)
        .patch(
            &n1,
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"role": "x"}}})),
        )
        .await
        .expect_err("labels refused")
        .to_string();
    assert!(e.contains("only the annotations it publishes"), "{e}");
    let e = node_api(&own)
        .patch(
            &n1,
            &pp,
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold"]}})),
        )
        .await
        .expect_err("finalizers refused")
        .to_string();
    assert!(e.contains("only the annotations it publishes"), "{e}");
    status_patch(&node_api(&own), &n1, ready("True"))
        .await
        .expect("an agent writes its own Node's status");
    let e = status_patch(&node_api(&nameless), &n1, ready("False"))
        .await
        .expect_err("a token naming no node is refused");
    assert!(e.contains("the agent's token names no node"), "{e}");
    // The admin (anyone but the agent) is not the policy's concern.
    status_patch(&node_api(&admin), &n2, ready("False"))
        .await
        .expect("the admin writes any Node's status");

    // BGPNodeStatus: its own node's only.
    let reports = petrel_api(&own, "BGPNodeStatus", "bgpnodestatuses");
    let report = |node: &str| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPNodeStatus",
            "metadata": {"name": node}, "spec": {}
        }))
        .expect("BGPNodeStatus")
    };
    reports
        .create(&PostParams::default(), &report(&n1))
        .await
        .expect("an agent creates its own node's BGPNodeStatus");
    let e = reports
        .create(&PostParams::default(), &report(&n2))
        .await
        .expect_err("another node's BGPNodeStatus is refused")
        .to_string();
    assert!(
        e.contains("a petrel agent may write only its own node's BGPNodeStatus"),
        "{e}"
    );

    // BGPPeer status.nodes: its own node's entries only; another node's
    // must stay as they were.
    let peers_admin = petrel_api(&admin, "BGPPeer", "bgppeers");
    let peer: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPPeer",
        "metadata": {"name": env.name("tor")},
        "spec": {"peerIP": "192.0.2.1", "asNumber": 65000}
    }))
    .expect("BGPPeer");
    let peer = env
        .create_json("bgppeers", serde_json::to_value(peer).expect("json"))
        .await;
    let name = peer.metadata.name.expect("named");
    let entry =
        |node: &str, state: &str| json!({"node": node, "address": "192.0.2.1", "state": state});
    status_patch(
        &peers_admin,
        &name,
        json!({"status": {"nodes": [entry(&n2, "Established")]}}),
    )
    .await
    .expect("the admin writes the peer's status");
    let peers = petrel_api(&own, "BGPPeer", "bgppeers");
    status_patch(
        &peers,
        &name,
        json!({"status": {"nodes": [entry(&n2, "Established"), entry(&n1, "Active")]}}),
    )
    .await
    .expect("an agent adds its own entry, keeping the others");
    let e = status_patch(
        &peers,
        &name,
        json!({"status": {"nodes": [entry(&n2, "Idle"), entry(&n1, "Established")]}}),
    )
    .await
    .expect_err("changing another node's entry is refused");
    assert!(
        e.contains("a petrel agent may change only its own node's entries in BGPPeer status.nodes"),
        "{e}"
    );
    let e = status_patch(
        &peers,
        &name,
        json!({"status": {"nodes": [entry(&n1, "Established")]}}),
    )
    .await
    .expect_err("dropping another node's entry is refused");
    assert!(e.contains("only its own node's entries"), "{e}");
    let kept = peers_admin.get(&name).await.expect("peer read");
    assert_eq!(
        kept.data["status"]["nodes"],
        json!([entry(&n2, "Established"), entry(&n1, "Active")])
    );
    env.cleanup().await;
}
