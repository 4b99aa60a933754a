//! CRDs: registration, discovery, pruning, defaults, validation (OpenAPI and CEL), status.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::core::GroupVersionKind;
use kube::runtime::wait::{await_condition, conditions};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{api_error, server, within};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
enum Size {
    Small,
    Large,
}

/// A tiny CRD exercising the schema features petrel's own CRDs use.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug)]
#[kube(
    group = "test.petrel.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
#[kube(validation = Rule::new("self.spec.min <= self.spec.max").message("min must not exceed max"))]
struct WidgetSpec {
    size: Size,
    #[schemars(regex(pattern = r"^[a-z]+$"))]
    name: String,
    #[schemars(range(min = 1, max = 10))]
    #[serde(default = "three")]
    replicas: i32,
    min: i32,
    max: i32,
    #[x_kube(validation = Rule::new("self.startsWith('10.')").message("must be in 10/8"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cidr: Option<String>,
}

fn three() -> i32 {
    3
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
struct WidgetStatus {
    ready: bool,
}

fn widget(spec: Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "test.petrel.dev/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": spec}))
    .expect("widget deserializes")
}

async fn install(client: &kube::Client) -> Api<CustomResourceDefinition> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Widget::crd())
        .await
        .expect("CRD created");
    let established = await_condition(
        crds.clone(),
        "widgets.test.petrel.dev",
        conditions::is_crd_established(),
    );
    established.await.expect("CRD established");
    crds
}

#[tokio::test]
async fn custom_objects_are_pruned_defaulted_and_validated() {
    within(async {
        let (server, client) = server().await;
        let crds = install(&client).await;
        let gvk = GroupVersionKind::gvk("test.petrel.dev", "v1", "Widget");
        let (resource, caps) = kube::discovery::pinned_kind(&client, &gvk)
            .await
            .expect("discovered");
        assert_eq!(
            (resource.plural.as_str(), caps.scope),
            ("widgets", kube::discovery::Scope::Namespaced)
        );
        let dynamic: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            "default",
            &ApiResource::erase::<Widget>(&()),
        );

        let good = json!({"size": "Small", "name": "abc", "min": 1, "max": 2, "unknown": true});
        let stored = dynamic
            .create(&PostParams::default(), &widget(good))
            .await
            .expect("valid widget");
        assert_eq!(stored.data["spec"]["replicas"], 3, "default applied");
        assert!(
            stored.data["spec"].get("unknown").is_none(),
            "unknown field pruned"
        );
        let strict = PatchParams {
            field_validation: Some(kube::api::ValidationDirective::Strict),
            ..PatchParams::default()
        };
        let unknown = Patch::Merge(json!({"spec": {"unknown": true}}));
        assert_eq!(
            api_error(dynamic.patch("w", &strict, &unknown).await).0,
            400
        );

        for (spec, want) in [
            (
                json!({"size": "Huge", "name": "abc", "min": 1, "max": 2}),
                "spec.size: Unsupported value: \"Huge\"",
            ),
            (
                json!({"size": "Small", "name": "ABC", "min": 1, "max": 2}),
                "spec.name in body should match '^[a-z]+$'",
            ),
            (
                json!({"size": "Small", "name": "a", "min": 1, "max": 2, "replicas": 11}),
                "spec.replicas in body should be less than or equal to 10",
            ),
            (
                json!({"size": "Small", "name": "a", "min": 3, "max": 2}),
                "<nil>: Invalid value: \"object\": min must not exceed max",
            ),
            (
                json!({"size": "Small", "name": "a", "min": 1, "max": 2, "cidr": "192.168.0.0/16"}),
                "spec.cidr: Invalid value: \"192.168.0.0/16\": must be in 10/8",
            ),
            (
                json!({"size": "Small", "min": 1, "max": 2}),
                "spec.name: Required value",
            ),
        ] {
            let mut bad = widget(spec);
            bad.metadata.name = Some("bad".into());
            let (code, reason, message) =
                api_error(dynamic.create(&PostParams::default(), &bad).await);
            assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
            assert!(
                message.starts_with("Widget.test.petrel.dev \"bad\" is invalid: "),
                "{message}"
            );
            assert!(message.contains(want), "{message:?} lacks {want:?}");
        }
        let invalid_patch = Patch::Merge(json!({"spec": {"max": 0}}));
        assert_eq!(
            api_error(
                dynamic
                    .patch("w", &PatchParams::default(), &invalid_patch)
                    .await
            )
            .0,
            422
        );

        // The typed API: status only through /status.
        let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
        let status = Patch::Merge(json!({"status": {"ready": true}}));
        widgets
            .patch("w", &PatchParams::default(), &status)
            .await
            .expect("main patch");
        assert!(
            widgets
                .get("w")
                .await
                .expect("widget read")
                .status
                .is_none(),
            "main resource ignores status"
        );
        let w = widgets
            .patch_status("w", &PatchParams::default(), &status)
            .await
            .expect("status patch");
        assert_eq!(w.status.map(|s| s.ready), Some(true));
        assert_eq!(w.spec.size, Size::Small);
        assert_eq!(w.metadata.generation, Some(1));

        crds.delete("widgets.test.petrel.dev", &DeleteParams::default())
            .await
            .expect("CRD deleted");
        assert_eq!(api_error(widgets.list(&ListParams::default()).await).0, 404);
        assert!(server.object("widgets", "default", "w").is_none());
    })
    .await;
}

#[tokio::test]
async fn crds_outside_the_supported_subset_are_refused() {
    within(async {
        let (_server, client) = server().await;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut crd = serde_json::to_value(Widget::crd()).expect("CRD serializes");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"] =
            json!([{"rule": "self.spec.items.map(i, i.x).size() > 0"}]);
        let crd: CustomResourceDefinition = serde_json::from_value(crd).expect("CRD deserializes");
        let (code, _, message) = api_error(crds.create(&PostParams::default(), &crd).await);
        assert_eq!(code, 422);
        assert!(
            message.contains("x-kubernetes-validations[0].rule")
                && message.contains("compilation failed"),
            "{message}"
        );

        let discovery = kube::Discovery::new(client.clone())
            .run()
            .await
            .expect("discovery runs");
        assert!(
            discovery.has_group("coordination.k8s.io") && !discovery.has_group("test.petrel.dev")
        );
    })
    .await;
}

/// A CRD whose status has a list keyed by two fields, as `BGPPeer.status.nodes`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug)]
#[kube(
    group = "test.petrel.dev",
    version = "v1",
    kind = "Gadget",
    status = "GadgetStatus"
)]
struct GadgetSpec {
    size: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, KubeSchema)]
struct GadgetStatus {
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into(), "address".into()]))]
    entries: Vec<GadgetEntry>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
struct GadgetEntry {
    node: String,
    address: String,
    state: String,
}

#[tokio::test]
async fn status_apply_keeps_each_managers_items_of_a_map_list() {
    within(async {
        let (_server, client) = server().await;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.create(&PostParams::default(), &Gadget::crd())
            .await
            .expect("CRD created");
        await_condition(
            crds,
            "gadgets.test.petrel.dev",
            conditions::is_crd_established(),
        )
        .await
        .expect("CRD established");
        let gadgets: Api<Gadget> = Api::all(client.clone());
        gadgets
            .create(
                &PostParams::default(),
                &Gadget::new("g", GadgetSpec { size: 1 }),
            )
            .await
            .expect("created");
        let apply = |node: &str, states: &[&str]| {
            let entries: Vec<Value> = states
                .iter()
                .enumerate()
                .map(|(i, s)| json!({"node": node, "address": format!("10.0.0.{i}"), "state": s}))
                .collect();
            json!({"apiVersion": "test.petrel.dev/v1", "kind": "Gadget", "metadata": {"name": "g"},
                   "status": {"entries": entries}})
        };
        let entries = |g: Gadget| -> Vec<(String, String, String)> {
            let mut v: Vec<_> = g
                .status
                .unwrap_or_default()
                .entries
                .into_iter()
                .map(|e| (e.node, e.address, e.state))
                .collect();
            v.sort();
            v
        };
        for (node, states) in [("a", &["Active", "Idle"][..]), ("b", &["Connect"][..])] {
            gadgets
                .patch_status(
                    "g",
                    &PatchParams::apply(&format!("agent/{node}")),
                    &Patch::Apply(apply(node, states)),
                )
                .await
                .expect("each manager applies its own items");
        }
        // a drops one of its two entries and changes the other; b's is untouched.
        let g = gadgets
            .patch_status(
                "g",
                &PatchParams::apply("agent/a"),
                &Patch::Apply(apply("a", &["Established"])),
            )
            .await
            .expect("a applies again");
        let t = |n: &str, a: &str, s: &str| (n.to_string(), a.to_string(), s.to_string());
        assert_eq!(
            entries(g),
            [
                t("a", "10.0.0.0", "Established"),
                t("b", "10.0.0.0", "Connect")
            ]
        );
        // Someone else applying a's item with another state conflicts.
        let (code, _, message) = api_error(
            gadgets
                .patch_status(
                    "g",
                    &PatchParams::apply("intruder"),
                    &Patch::Apply(apply("a", &["Idle"])),
                )
                .await,
        );
        assert_eq!(code, 409);
        assert!(message.contains("agent/a"), "{message}");
    })
    .await;
}
