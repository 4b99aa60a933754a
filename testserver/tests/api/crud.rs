//! Verbs on built-in kinds: CRUD, concurrency, patches, server-side apply, lists, deletes.

use std::collections::HashSet;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use testserver::Verb;

use super::{api_error, server, within};

fn obj<K: DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("test object deserializes")
}

#[tokio::test]
async fn crud_on_built_in_kinds() {
    within(async {
        let (server, client) = server().await;
        let nodes: Api<Node> = Api::all(client.clone());
        let node = nodes
            .create(&PostParams::default(), &obj(json!({"metadata": {"name": "n1", "labels": {"a": "b"}},
                "spec": {"podCIDR": "10.0.1.0/24"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}})))
            .await
            .expect("node created");
        assert!(node.uid().is_some() && node.creation_timestamp().is_some());
        assert_eq!(node.meta().generation, Some(1));
        // A Node keeps the status it was created with (the kubelet registers that way).
        assert!(node.status.as_ref().and_then(|s| s.addresses.as_ref()).is_some());
        assert_eq!(nodes.get("n1").await.expect("node read").spec, node.spec);
        assert_eq!(nodes.list(&ListParams::default()).await.expect("nodes listed").items.len(), 1);

        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let svc = obj(json!({"metadata": {"generateName": "web-"}, "spec": {"ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}}));
        let svc = services.create(&PostParams::default(), &svc).await.expect("service created");
        assert!(svc.name_any().starts_with("web-") && svc.name_any().len() == 9, "{}", svc.name_any());
        assert_eq!(svc.namespace().as_deref(), Some("default"));
        assert!(svc.status.is_none(), "a Service's status is dropped on create");

        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        let slice = obj(json!({"metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.1.5"], "nodeName": "n1"}]}));
        slices.create(&PostParams::default(), &slice).await.expect("slice created");
        let lp = ListParams::default().labels("kubernetes.io/service-name=web");
        assert_eq!(slices.list(&lp).await.expect("slices listed").items.len(), 1);

        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let mut lease: Lease = obj(json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}}));
        lease = leases.create(&PostParams::default(), &lease).await.expect("lease created");
        lease.spec.as_mut().expect("lease has a spec").lease_duration_seconds = Some(40);
        let replaced = leases.replace("n1", &PostParams::default(), &lease).await.expect("lease replaced");
        assert_eq!(replaced.meta().generation, Some(2), "a spec change bumps generation");
        assert!(replaced.resource_version() > lease.resource_version());

        nodes.delete("n1", &DeleteParams::default()).await.expect("node deleted");
        let (code, reason, message) = api_error(nodes.get("n1").await);
        assert_eq!((code, reason.as_str(), message.as_str()), (404, "NotFound", "nodes \"n1\" not found"));
        assert!(server.object("nodes", "", "n1").is_none());
        assert!(server.object("Lease", "kube-node-lease", "n1").is_some());
    })
    .await;
}

#[tokio::test]
async fn write_errors_are_kubernetes_statuses() {
    within(async {
        let (server, client) = server().await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let cm: ConfigMap = obj(json!({"metadata": {"name": "c"}, "data": {"k": "v"}}));
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("configmap created");
        assert_eq!(
            api_error(cms.create(&PostParams::default(), &cm).await).1,
            "AlreadyExists"
        );
        let bad: ConfigMap = obj(json!({"metadata": {"name": "Not_Valid"}}));
        let (code, _, message) = api_error(cms.create(&PostParams::default(), &bad).await);
        assert_eq!(code, 422);
        assert!(
            message.starts_with("ConfigMap \"Not_Valid\" is invalid: metadata.name: Invalid value"),
            "{message}"
        );
        let nameless: ConfigMap = obj(json!({"metadata": {}}));
        assert_eq!(
            api_error(cms.create(&PostParams::default(), &nameless).await).0,
            422
        );
        let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "missing");
        let (code, _, message) = api_error(elsewhere.create(&PostParams::default(), &cm).await);
        assert_eq!(
            (code, message.as_str()),
            (404, "namespaces \"missing\" not found")
        );

        // Optimistic concurrency: the second writer from the same version loses.
        let current = cms.get("c").await.expect("configmap read");
        cms.replace("c", &PostParams::default(), &current)
            .await
            .expect("no-op replace");
        let mut changed = current.clone();
        changed.data = Some([("k".to_string(), "w".to_string())].into());
        cms.replace("c", &PostParams::default(), &changed)
            .await
            .expect("first replace");
        let (code, reason, message) =
            api_error(cms.replace("c", &PostParams::default(), &changed).await);
        assert_eq!((code, reason.as_str()), (409, "Conflict"));
        assert!(
            message.contains("the object has been modified"),
            "{message}"
        );

        server.inject_failures(1);
        assert_eq!(api_error(cms.get("c").await).0, 500);
        cms.get("c").await.expect("only one failure was injected");
        assert_eq!(server.request_count(Verb::Update, "configmaps", None), 3);
        assert_eq!(server.request_count(Verb::Get, "configmaps", None), 3);
    })
    .await;
}

/// kube's `Patch::Json` needs its `jsonpatch` feature, so this sends one by hand.
async fn json_patch(client: &kube::Client, ops: Value) -> Result<Node, kube::Error> {
    let request = axum::http::Request::patch("/api/v1/nodes/n1")
        .header("content-type", "application/json-patch+json")
        .body(ops.to_string().into_bytes())
        .expect("request builds");
    client.request(request).await
}

#[tokio::test]
async fn patches_and_the_status_subresource() {
    within(async {
        let (_server, client) = server().await;
        let nodes: Api<Node> = Api::all(client.clone());
        let node = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.1.0/24"}, "status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "NetworkUnavailable", "status": "True"}]}});
        nodes.create(&PostParams::default(), &obj(node)).await.expect("node created");
        let pp = PatchParams::default();

        let merged = nodes.patch("n1", &pp, &Patch::Merge(json!({"metadata": {"labels": {"a": "1"}}}))).await;
        assert_eq!(merged.expect("merge patch").labels().get("a").map(String::as_str), Some("1"));
        let ops = json!([{"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}},
            {"op": "test", "path": "/spec/podCIDR", "value": "10.0.1.0/24"}]);
        let patched = json_patch(&client, ops).await.expect("json patch");
        assert_eq!(patched.annotations().get("x").map(String::as_str), Some("y"));
        let failing = json!([{"op": "test", "path": "/spec/podCIDR", "value": "other"}]);
        assert_eq!(api_error(json_patch(&client, failing).await).0, 422);

        // Strategic merge on /status merges conditions by type.
        let sm = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let node = nodes.patch_status("n1", &pp, &Patch::Strategic(sm)).await.expect("strategic status patch");
        let conditions = node.status.and_then(|s| s.conditions).expect("conditions kept");
        let ready = conditions.iter().find(|c| c.type_ == "Ready").expect("Ready condition");
        assert_eq!((conditions.len(), ready.status.as_str()), (2, "True"));
        assert_eq!(node.metadata.generation, Some(1), "status writes do not bump generation");

        // The main resource ignores status; /status ignores everything else.
        let both = json!({"spec": {"podCIDR": "10.0.9.0/24"}, "status": {"conditions": []}});
        let node = nodes.patch("n1", &pp, &Patch::Merge(&both)).await.expect("main patch");
        assert_eq!(node.status.and_then(|s| s.conditions).map(|c| c.len()), Some(2));
        assert_eq!(node.metadata.generation, Some(2));
        let node = nodes.patch_status("n1", &pp, &Patch::Merge(&both)).await.expect("status patch");
        assert_eq!(node.spec.and_then(|s| s.pod_cidr).as_deref(), Some("10.0.9.0/24"));
        assert_eq!(node.status.and_then(|s| s.conditions).map(|c| c.len()), Some(0));

        // A resourceVersion in a merge patch is a precondition.
        let stale = json!({"metadata": {"resourceVersion": "1", "labels": {"b": "2"}}});
        assert_eq!(api_error(nodes.patch("n1", &pp, &Patch::Merge(stale)).await).0, 409);
    })
    .await;
}

#[tokio::test]
async fn server_side_apply_owns_fields() {
    within(async {
        let (server, client) = server().await;
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let config = |ip: &str| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80}], "externalIPs": [ip]}})
        };
        let alice = PatchParams::apply("alice");
        let created = services
            .patch("s", &alice, &Patch::Apply(config("192.0.2.1")))
            .await
            .expect("apply creates");
        assert_eq!(created.managed_fields().len(), 1);
        assert_eq!(server.request_count(Verb::Patch, "services", None), 1);

        let (code, reason, message) = api_error(
            services
                .patch(
                    "s",
                    &PatchParams::apply("bob"),
                    &Patch::Apply(config("192.0.2.2")),
                )
                .await,
        );
        assert_eq!((code, reason.as_str()), (409, "Conflict"));
        assert!(
            message.contains("conflict with \"alice\": .spec.externalIPs"),
            "{message}"
        );
        let forced = services
            .patch(
                "s",
                &PatchParams::apply("bob").force(),
                &Patch::Apply(config("192.0.2.2")),
            )
            .await;
        let forced = forced.expect("forced apply");
        assert_eq!(
            forced.spec.and_then(|s| s.external_ips),
            Some(vec!["192.0.2.2".to_string()])
        );
        let managers: HashSet<String> = forced
            .metadata
            .managed_fields
            .into_iter()
            .flatten()
            .filter_map(|m| m.manager)
            .collect();
        assert_eq!(
            managers,
            HashSet::from(["alice".to_string(), "bob".to_string()])
        );

        let status = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}});
        let svc = services
            .patch_status("s", &PatchParams::apply("lb"), &Patch::Apply(status))
            .await
            .expect("status apply");
        let ingress = svc
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .expect("ingress set");
        assert_eq!(ingress[0].ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(
            api_error(
                services
                    .patch("s", &PatchParams::default(), &Patch::Apply(json!({})))
                    .await
            )
            .0,
            422
        );
    })
    .await;
}

#[tokio::test]
async fn lists_filter_and_page() {
    within(async {
        let (_server, client) = server().await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        for (i, tier) in ["web", "web", "db", "cache", "db"].iter().enumerate() {
            let cm = obj(json!({"metadata": {"name": format!("cm{i}"), "labels": {"tier": tier, "n": i.to_string()}}}));
            cms.create(&PostParams::default(), &cm).await.expect("configmap created");
        }
        let system: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
        system.create(&PostParams::default(), &obj(json!({"metadata": {"name": "other"}}))).await.expect("created");
        let names = |list: kube::core::ObjectList<ConfigMap>| list.items.iter().map(|c| c.name_any()).collect::<Vec<_>>();
        for (selector, want) in [
            ("tier=web", vec!["cm0", "cm1"]),
            ("tier in (db,cache),n!=4", vec!["cm2", "cm3"]),
            ("tier notin (web),!missing", vec!["cm2", "cm3", "cm4"]),
            ("tier,n==1", vec!["cm1"]),
        ] {
            let listed = cms.list(&ListParams::default().labels(selector)).await.expect("labelled list");
            assert_eq!(names(listed), want, "{selector}");
        }
        let by_name = cms.list(&ListParams::default().fields("metadata.name=cm3")).await.expect("field list");
        assert_eq!(names(by_name), ["cm3"]);
        assert_eq!(api_error(cms.list(&ListParams::default().fields("data.k=v")).await).0, 400);

        let mut seen = Vec::new();
        let mut lp = ListParams::default().limit(2);
        loop {
            let page = cms.list(&lp).await.expect("page");
            let token = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            seen.extend(names(page));
            let Some(token) = token else { break };
            lp = lp.continue_token(&token);
            assert!(seen.len() <= 5, "paging ends");
        }
        assert_eq!(seen, ["cm0", "cm1", "cm2", "cm3", "cm4"]);
        let metadata = cms.list_metadata(&ListParams::default().labels("tier=web")).await;
        let metadata = metadata.expect("metadata-only list");
        assert_eq!(metadata.items.iter().map(|m| m.name_any()).collect::<Vec<_>>(), ["cm0", "cm1"]);
        let all: Api<ConfigMap> = Api::all(client.clone());
        assert_eq!(all.list(&ListParams::default()).await.expect("all namespaces").items.len(), 6);

        let deleted = cms.delete_collection(&DeleteParams::default(), &ListParams::default().labels("tier=db")).await;
        assert!(deleted.expect("collection deleted").is_left());
        assert_eq!(cms.list(&ListParams::default()).await.expect("list").items.len(), 3);
    })
    .await;
}

#[tokio::test]
async fn deletes_honour_preconditions_and_finalizers() {
    within(async {
        let (_server, client) = server().await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let cm = obj(json!({"metadata": {"name": "f", "finalizers": ["petrel.dev/cleanup"]}}));
        let cm: ConfigMap = cms
            .create(&PostParams::default(), &cm)
            .await
            .expect("created");
        let wrong = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some("nope".into()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let (code, _, message) = api_error(cms.delete("f", &wrong).await);
        assert!(
            code == 409 && message.contains("Precondition failed: UID in precondition: nope"),
            "{message}"
        );

        let right = DeleteParams {
            preconditions: Some(Preconditions {
                uid: cm.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        cms.delete("f", &right).await.expect("delete accepted");
        let terminating = cms
            .get("f")
            .await
            .expect("still there while finalizers remain");
        assert!(terminating.metadata.deletion_timestamp.is_some());
        let done = json!({"metadata": {"finalizers": null}});
        cms.patch("f", &PatchParams::default(), &Patch::Merge(done))
            .await
            .expect("finalizer removed");
        assert_eq!(api_error(cms.get("f").await).0, 404);
    })
    .await;
}

#[tokio::test]
async fn concurrent_creates_get_unique_versions() {
    within(async {
        let (_server, client) = server().await;
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
                tokio::spawn(async move {
                    let cm = obj(json!({"metadata": {"name": format!("c{i}")}}));
                    cms.create(&PostParams::default(), &cm)
                        .await
                        .expect("concurrent create")
                })
            })
            .collect();
        let mut versions = HashSet::new();
        let mut uids = HashSet::new();
        for task in tasks {
            let cm: ConfigMap = task.await.expect("task finished");
            versions.insert(cm.resource_version().expect("has a resourceVersion"));
            uids.insert(cm.uid().expect("has a uid"));
        }
        assert_eq!((versions.len(), uids.len()), (20, 20));
    })
    .await;
}

#[tokio::test]
async fn lease_race_has_one_winner() {
    within(async {
        let (server, _) = server().await;
        let lease = obj::<Lease>(json!({"metadata": {"name": "petrel-controller"}, "spec": {}}));
        let leases: Api<Lease> = Api::namespaced(server.client().expect("client"), "default");
        leases
            .create(&PostParams::default(), &lease)
            .await
            .expect("lease created");
        let contenders: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|who| {
                let leases: Api<Lease> =
                    Api::namespaced(server.client().expect("client"), "default");
                tokio::spawn(async move {
                    let mut lease = leases.get("petrel-controller").await.expect("lease read");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    lease.spec.get_or_insert_default().holder_identity = Some(who.to_string());
                    leases
                        .replace("petrel-controller", &PostParams::default(), &lease)
                        .await
                        .map(|_| who)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for c in contenders {
            match c.await.expect("contender finished") {
                Ok(who) => winners.push(who),
                Err(e) => assert_eq!(api_error::<()>(Err(e)).0, 409),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one contender takes the lease");
        let holder = leases
            .get("petrel-controller")
            .await
            .expect("lease read")
            .spec
            .and_then(|s| s.holder_identity);
        assert_eq!(holder.as_deref(), Some(winners[0]));
    })
    .await;
}

#[tokio::test]
async fn kubeconfig_and_shutdown() {
    within(async {
        let (server, client) = server().await;
        let path = std::env::temp_dir().join(format!("testserver-kubeconfig-{}", std::process::id()));
        server.write_kubeconfig(&path).expect("kubeconfig written");
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig parses");
        _ = std::fs::remove_file(&path);
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.expect("config loads");
        assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), server.url());
        assert_eq!(config.default_namespace, "default");

        let nodes: Api<Node> = Api::all(client);
        nodes.list(&ListParams::default()).await.expect("served before shutdown");
        server.shutdown().await;
        assert!(matches!(nodes.list(&ListParams::default()).await, Err(e) if !matches!(e, kube::Error::Api(_))));
    })
    .await;
}

#[tokio::test]
async fn forbidden_writes_answer_403_and_reads_still_work() {
    within(async {
        let (server, client) = server().await;
        let nodes: Api<Node> = Api::all(client.clone());
        nodes
            .create(
                &PostParams::default(),
                &obj(json!({"metadata": {"name": "n1"}})),
            )
            .await
            .expect("node created");
        server.forbid_writes("nodes", Some("status"));
        let status = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"conditions": [{"type": "X", "status": "True"}]}});
        let (code, reason, message) = api_error(
            nodes
                .patch_status(
                    "n1",
                    &PatchParams::apply("a"),
                    &Patch::Apply(status.clone()),
                )
                .await,
        );
        assert_eq!((code, reason.as_str()), (403, "Forbidden"));
        assert!(message.contains("nodes/status"), "{message}");
        nodes.get("n1").await.expect("reads are allowed");
        nodes
            .patch(
                "n1",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
            )
            .await
            .expect("the main resource is not forbidden");
        server.allow_writes();
        nodes
            .patch_status("n1", &PatchParams::apply("a"), &Patch::Apply(status))
            .await
            .expect("allowed again");
    })
    .await;
}
