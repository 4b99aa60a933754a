//! Which resources the server serves: the built-in kinds petrel uses, plus one entry per
//! registered CustomResourceDefinition; and the discovery documents built from them.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::FieldError;
use crate::schema::Schema;

/// One resource (a group + plural), served at one or more versions.
#[derive(Debug)]
pub(crate) struct Resource {
    pub group: String,
    /// Served versions, the preferred one first.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    /// Has the `/status` subresource.
    pub status: bool,
    /// Per-version schemas (custom resources only).
    pub schemas: HashMap<String, Schema>,
}

impl Resource {
    /// Storage key: objects are shared by all versions of a resource.
    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn is_crd(&self) -> bool {
        self.group == "apiextensions.k8s.io" && self.plural == "customresourcedefinitions"
    }
}

/// (group, plural, kind, namespaced, status subresource, short names) of a built-in kind.
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    bool,
    &'static [&'static str],
);

/// The built-in kinds, all served at v1.
const BUILTINS: [Builtin; 10] = [
    ("", "namespaces", "Namespace", false, true, &["ns"]),
    ("", "nodes", "Node", false, true, &["no"]),
    ("", "services", "Service", true, true, &["svc"]),
    ("", "secrets", "Secret", true, false, &[]),
    ("", "configmaps", "ConfigMap", true, false, &["cm"]),
    ("", "events", "Event", true, false, &["ev"]),
    ("events.k8s.io", "events", "Event", true, false, &["ev"]),
    (
        "discovery.k8s.io",
        "endpointslices",
        "EndpointSlice",
        true,
        false,
        &[],
    ),
    ("coordination.k8s.io", "leases", "Lease", true, false, &[]),
    (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        true,
        &["crd", "crds"],
    ),
];

pub(crate) fn builtins() -> Vec<Arc<Resource>> {
    BUILTINS
        .iter()
        .map(|(group, plural, kind, namespaced, status, short)| {
            Arc::new(Resource {
                group: group.to_string(),
                versions: vec!["v1".into()],
                plural: plural.to_string(),
                singular: kind.to_lowercase(),
                kind: kind.to_string(),
                short_names: short.iter().map(|s| s.to_string()).collect(),
                namespaced: *namespaced,
                status: *status,
                schemas: HashMap::new(),
            })
        })
        .collect()
}

/// Builds the resource a CRD defines, compiling its schemas (and so its CEL rules).
pub(crate) fn from_crd(crd: &Value) -> Result<Resource, Vec<FieldError>> {
    let spec = &crd["spec"];
    let mut errors = Vec::new();
    let text = |v: &Value, field: &str, errors: &mut Vec<FieldError>| {
        let s = v.as_str().unwrap_or_default().to_string();
        if s.is_empty() {
            errors.push(FieldError::required(field));
        }
        s
    };
    let group = text(&spec["group"], "spec.group", &mut errors);
    let plural = text(&spec["names"]["plural"], "spec.names.plural", &mut errors);
    let kind = text(&spec["names"]["kind"], "spec.names.kind", &mut errors);
    if !group.is_empty() && !group.contains('.') {
        errors.push(FieldError::invalid(
            "spec.group",
            &spec["group"],
            "should be a domain with at least one dot",
        ));
    }
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if name != format!("{plural}.{group}") {
        errors.push(FieldError::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => {
            errors.push(FieldError::unsupported(
                "spec.scope",
                &spec["scope"],
                &[json!("Cluster"), json!("Namespaced")],
            ));
            false
        }
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.iter().filter(|v| v["storage"] == true).count() != 1 {
        errors.push(FieldError::invalid(
            "spec.versions",
            &spec["versions"],
            "must have exactly one version marked as storage version",
        ));
    }
    let mut served = Vec::new();
    let mut schemas = HashMap::new();
    let mut status = false;
    for (i, v) in versions.iter().enumerate() {
        let vname = text(&v["name"], &format!("spec.versions[{i}].name"), &mut errors);
        status |= v["subresources"]["status"].is_object();
        if v["served"] != true {
            continue;
        }
        let at = format!("spec.versions[{i}].schema.openAPIV3Schema");
        match v["schema"].get("openAPIV3Schema").cloned() {
            Some(root) => match Schema::compile(root, &at) {
                Ok(schema) => _ = schemas.insert(vname.clone(), schema),
                Err(errs) => errors.extend(errs),
            },
            None => errors.push(FieldError::required(&at)),
        }
        served.push(vname);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let singular = spec["names"]["singular"]
        .as_str()
        .map_or_else(|| kind.to_lowercase(), String::from);
    let short_names = spec["names"]["shortNames"].as_array().into_iter().flatten();
    Ok(Resource {
        group,
        versions: served,
        plural,
        singular,
        kind,
        short_names: short_names
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        namespaced,
        status,
        schemas,
    })
}

/// The server-set part of a CRD's status once it is registered.
pub(crate) fn crd_status(crd: &Value) -> Value {
    let storage: Vec<&Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == true)
        .map(|v| &v["name"])
        .collect();
    let condition = |t: &str, reason: &str| json!({"type": t, "status": "True", "reason": reason, "message": "", "lastTransitionTime": crate::now()});
    json!({
        "acceptedNames": crd["spec"]["names"],
        "storedVersions": storage,
        "conditions": [condition("NamesAccepted", "NoConflicts"), condition("Established", "InitialNamesAccepted")],
    })
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/api/v1` or `/apis/GROUP/VERSION`: an APIResourceList.
pub(crate) fn resource_list(
    resources: &[Arc<Resource>],
    group: &str,
    version: &str,
) -> Option<Value> {
    let mut list = Vec::new();
    for r in resources
        .iter()
        .filter(|r| r.group == group && r.versions.iter().any(|v| v == version))
    {
        list.push(
            json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": VERBS, "shortNames": r.short_names}),
        );
        if r.status {
            list.push(
                json!({"name": format!("{}/status", r.plural), "singularName": "",
                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    (!list.is_empty())
        .then(|| json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list}))
}

/// One entry of `/apis` (also the answer at `/apis/GROUP`).
pub(crate) fn api_group(resources: &[Arc<Resource>], group: &str) -> Option<Value> {
    let mut versions: Vec<&String> = Vec::new();
    for r in resources.iter().filter(|r| r.group == group) {
        for v in &r.versions {
            if !versions.contains(&v) {
                versions.push(v);
            }
        }
    }
    let entry = |v: &String| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    let preferred = versions.first().map(|v| entry(v))?;
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": group,
        "versions": versions.into_iter().map(entry).collect::<Vec<_>>(), "preferredVersion": preferred}),
    )
}

/// `/apis`: an APIGroupList of every non-core group.
pub(crate) fn api_group_list(resources: &[Arc<Resource>]) -> Value {
    let mut names: Vec<&str> = Vec::new();
    for r in resources.iter().filter(|r| !r.group.is_empty()) {
        if !names.contains(&r.group.as_str()) {
            names.push(&r.group);
        }
    }
    let groups: Vec<Value> = names
        .into_iter()
        .filter_map(|g| api_group(resources, g))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}
