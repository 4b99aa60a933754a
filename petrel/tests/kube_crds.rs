//! The petrel CRDs as an API server enforces them: bad objects are refused
//! with the field and the reason, good ones are stored with the schema's
//! defaults filled in, and the status subresource keeps spec and status
//! apart. Runs on a real kube-apiserver (the test's own control plane, or
//! the cluster `PETREL_TEST_KUBECONFIG` names), whose CEL engine judges the
//! rules.

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use testkit::KubeEnv;

fn api(client: &kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("petrel.dev", "v1alpha1", kind),
        plural,
    );
    Api::all_with(client.clone(), &ar)
}

fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "petrel.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("object")
}

/// Creating `spec` fails with 422 and a message holding every one of `want`.
async fn refused(api: &Api<DynamicObject>, kind: &str, name: &str, spec: Value, want: &[&str]) {
    match api
        .create(&PostParams::default(), &object(kind, name, spec.clone()))
        .await
    {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{kind} {spec}: {e:?}");
            for w in want {
                assert!(
                    e.message.contains(w),
                    "{kind} {spec}: the message does not say {w:?}: {}",
                    e.message
                );
            }
        }
        Ok(_) => {
            // Never leave it behind, even while failing.
            let _ = api.delete(name, &Default::default()).await;
            panic!("{kind} {spec} was accepted");
        }
        Err(e) => panic!("{kind} {spec}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_bad_objects_and_fills_in_defaults() {
    let mut env = KubeEnv::start("kube-crds").await;
    env.install_crds().await;
    let client = env.client();
    let peers = api(&client, "BGPPeer", "bgppeers");
    let name = env.name("peer");

    // Schema: formats, ranges, enums.
    refused(
        &peers,
        "BGPPeer",
        &name,
        json!({"peerIP": "10.0.0.300", "asNumber": 65000}),
        &["spec.peerIP"],
    )
    .await;
    refused(
        &peers,
        "BGPPeer",
        &name,
        json!({"peerIP": "10.0.0.1", "asNumber": 0}),
        &["spec.asNumber"],
    )
    .await;
    refused(
        &peers,
        "BGPPeer",
        &name,
        json!({"peerIP": "10.0.0.1", "asNumber": 65000, "holdTime": 2}),
        &["spec.holdTime"],
    )
    .await;
    // CEL: field combinations.
    refused(
        &peers,
        "BGPPeer",
        &name,
        json!({"peerIP": "10.0.0.1", "listenRange": "10.0.0.0/24", "asNumber": 65000}),
        &["exactly one of peerIP or listenRange"],
    )
    .await;
    refused(
        &peers,
        "BGPPeer",
        &name,
        json!({"peerIP": "10.0.0.1", "asNumber": 65000, "ebgpMultihop": 2, "ttlSecurity": 1}),
        &["ttlSecurity cannot be combined with ebgpMultihop"],
    )
    .await;
    let pools = api(&client, "LoadBalancerPool", "loadbalancerpools");
    refused(
        &pools,
        "LoadBalancerPool",
        &env.name("pool"),
        json!({"cidrs": []}),
        &["cidrs needs at least one CIDR or range"],
    )
    .await;
    refused(
        &pools,
        "LoadBalancerPool",
        &env.name("pool"),
        json!({"cidrs": ["192.0.2.0/33"]}),
        &["cidrs[0]"],
    )
    .await;

    // A good one is stored with the defaults.
    let made = env
        .create_json(
            "bgppeers",
            json!({
                "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPPeer",
                "metadata": {"name": name},
                "spec": {"peerIP": "10.0.0.1", "asNumber": 65000}
            }),
        )
        .await;
    assert_eq!(made.data["spec"]["holdTime"], json!(90), "{:?}", made.data);
    assert_eq!(made.data["spec"]["port"], json!(179));
    let pool = env
        .create_json(
            "loadbalancerpools",
            json!({
                "apiVersion": "petrel.dev/v1alpha1", "kind": "LoadBalancerPool",
                "metadata": {"name": env.name("pool")},
                "spec": {"cidrs": ["192.0.2.0/24", "2001:db8::/120"]}
            }),
        )
        .await;
    assert_eq!(pool.data["spec"]["autoAssign"], json!(true));

    // Status goes through its subresource only: a spec write keeps it, a
    // status write keeps the spec.
    peers
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"summary": "0/1 established"}})),
        )
        .await
        .expect("status written");
    let after = peers
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"asNumber": 65001}, "status": {"summary": "forged"}})),
        )
        .await
        .expect("spec written");
    assert_eq!(after.data["spec"]["asNumber"], json!(65001));
    assert_eq!(after.data["status"]["summary"], json!("0/1 established"));
    env.cleanup().await;
}
