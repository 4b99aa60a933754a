//! The four PATCH flavours kube clients send.
//!
//! - `application/json-patch+json`: RFC 6902, exact (the `json-patch` crate).
//! - `application/merge-patch+json`: RFC 7386, exact.
//! - `application/strategic-merge-patch+json`: simplified to a merge patch in which lists of
//!   objects are merged item by item on a key instead of replaced: `type` for `conditions` and
//!   `addresses`, `port` for `ports`, otherwise `name`, and only when every item of both lists
//!   has that key. Patch directives (`$patch`, `$retainKeys`, `$deleteFromPrimitiveList`) are
//!   not understood.
//! - `application/apply-patch+yaml` (server-side apply): simplified. Lists merge like the
//!   strategic merge above; ownership is tracked per leaf field with lists owned as a whole;
//!   only `Apply` managers own fields (updates by PUT/PATCH record no manager), so conflicts
//!   arise only between two appliers that set the same field to different values. Fields a
//!   manager applied before and omits now are removed unless another manager owns them.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// Which PATCH flavour a request's `Content-Type` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies a JSON, merge or strategic-merge patch to a copy of `target`.
pub(crate) fn patch(kind: PatchType, target: &Value, body: &Value) -> Result<Value, ApiError> {
    let mut doc = target.clone();
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(body.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut doc, &ops)
                .map_err(|e| ApiError::invalid_patch(e.to_string()))?;
        }
        _ => merge(&mut doc, body, kind != PatchType::Merge, ""),
    }
    Ok(doc)
}

/// RFC 7386 merge; with `keyed`, lists of objects are merged per item (see the module doc).
pub(crate) fn merge(base: &mut Value, patch: &Value, keyed: bool, field: &str) {
    match patch {
        Value::Object(p) => {
            if !base.is_object() {
                *base = json!({});
            }
            for (k, v) in p {
                if v.is_null() {
                    base.as_object_mut().map(|b| b.remove(k));
                } else {
                    let slot = base
                        .as_object_mut()
                        .map(|b| b.entry(k.clone()).or_insert(Value::Null));
                    slot.into_iter().for_each(|slot| merge(slot, v, keyed, k));
                }
            }
        }
        Value::Array(items) if keyed => {
            let key = match field {
                "conditions" | "addresses" => "type",
                "ports" => "port",
                _ => "name",
            };
            let keyed_list = |l: &[Value]| l.iter().all(|i| i.get(key).is_some());
            match base.as_array_mut() {
                Some(existing) if keyed_list(existing) && keyed_list(items) => {
                    for item in items {
                        match existing.iter_mut().find(|e| e.get(key) == item.get(key)) {
                            Some(e) => merge(e, item, keyed, ""),
                            None => existing.push(item.clone()),
                        }
                    }
                }
                _ => *base = patch.clone(),
            }
        }
        _ => *base = patch.clone(),
    }
}

type Path = Vec<String>;

/// An SSA conflict: another manager owns `path` with a different value.
#[derive(Debug)]
pub(crate) struct Conflict {
    pub manager: String,
    pub path: String,
}

/// Which part of the object an apply may own (the main resource or `/status`).
pub(crate) type Scope<'a> = &'a dyn Fn(&[String]) -> bool;

/// What one server-side apply needs besides the objects.
pub(crate) struct ApplyRequest<'a> {
    pub manager: &'a str,
    pub force: bool,
    pub subresource: Option<&'a str>,
    pub api_version: &'a str,
    pub now: &'a str,
    pub scope: Scope<'a>,
}

/// Server-side apply of `config` onto `live` (absent on create). Returns the merged object
/// with `metadata.managedFields` updated, or the conflicts when not forced.
pub(crate) fn apply(
    live: Option<&Value>,
    config: &Value,
    req: &ApplyRequest,
) -> Result<Value, Vec<Conflict>> {
    let mut object = live.cloned().unwrap_or_else(|| json!({}));
    let mut ours = BTreeSet::new();
    leaf_paths(config, &mut Vec::new(), &mut ours);
    ours.retain(|p| owned_field(p) && (req.scope)(p));

    let entries: Vec<Value> = object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let same_sub = |e: &Value| e["subresource"].as_str() == req.subresource;
    let is_apply = |e: &Value| e["operation"] == "Apply" && same_sub(e);
    let mut previous = BTreeSet::new();
    let mut others: Vec<(Value, BTreeSet<Path>)> = Vec::new();
    let mut kept = Vec::new();
    for entry in entries {
        if !is_apply(&entry) {
            kept.push(entry);
        } else if entry["manager"] == req.manager {
            from_fields_v1(&entry["fieldsV1"], &mut Vec::new(), &mut previous);
        } else {
            let mut set = BTreeSet::new();
            from_fields_v1(&entry["fieldsV1"], &mut Vec::new(), &mut set);
            others.push((entry, set));
        }
    }

    let mut conflicts = Vec::new();
    for (entry, set) in &mut others {
        let clashing: Vec<Path> = set
            .intersection(&ours)
            .filter(|p| get(&object, p) != get(config, p))
            .cloned()
            .collect();
        for p in clashing {
            if req.force {
                set.remove(&p);
            } else {
                let manager = entry["manager"].as_str().unwrap_or_default().to_string();
                conflicts.push(Conflict {
                    manager,
                    path: format!(".{}", p.join(".")),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    for stale in previous.difference(&ours) {
        if !others.iter().any(|(_, set)| set.contains(stale)) {
            remove(&mut object, stale);
        }
    }
    merge(&mut object, config, true, "");

    for (mut entry, set) in others.into_iter().filter(|(_, set)| !set.is_empty()) {
        entry["fieldsV1"] = to_fields_v1(&set);
        kept.push(entry);
    }
    let mut mine = json!({"manager": req.manager, "operation": "Apply", "apiVersion": req.api_version,
        "time": req.now, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&ours)});
    if let Some(sub) = req.subresource {
        mine["subresource"] = json!(sub);
    }
    kept.push(mine);
    object["metadata"]["managedFields"] = Value::Array(kept);
    Ok(object)
}

/// Identity and server-set fields are never owned.
fn owned_field(p: &[String]) -> bool {
    match p {
        [top] => top != "apiVersion" && top != "kind",
        [m, f, ..] if m == "metadata" => ![
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
        ]
        .contains(&f.as_str()),
        _ => true,
    }
}

fn leaf_paths(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaf_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => _ = out.insert(prefix.clone()),
    }
}

fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for key in path {
            let child = node.entry(format!("f:{key}")).or_insert_with(|| json!({}));
            let Some(map) = child.as_object_mut() else {
                break;
            };
            node = map;
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(m) = v.as_object() else { return };
    if m.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
    for (k, child) in m {
        if let Some(key) = k.strip_prefix("f:") {
            prefix.push(key.to_string());
            from_fields_v1(child, prefix, out);
            prefix.pop();
        }
    }
}

fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |node, key| node.get(key))
}

fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let parent = parents.iter().try_fold(v, |node, key| node.get_mut(key));
    if let Some(Value::Object(m)) = parent {
        m.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merge_keys_conditions_by_type() {
        let base = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "X", "status": "True"}]}});
        let body = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let merged = patch(PatchType::Strategic, &base, &body).expect("patch applies");
        assert_eq!(merged["status"]["conditions"][0]["status"], "True");
        assert_eq!(merged["status"]["conditions"][1]["type"], "X");
        let plain = patch(PatchType::Merge, &base, &body).expect("patch applies");
        assert_eq!(
            plain["status"]["conditions"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn apply_tracks_owners_and_conflicts() {
        let all: Scope = &|_| true;
        let req = |manager, force| ApplyRequest {
            manager,
            force,
            subresource: None,
            api_version: "v1",
            now: "t",
            scope: all,
        };
        let a =
            apply(None, &json!({"spec": {"x": 1, "y": 2}}), &req("a", false)).expect("first apply");
        let b =
            apply(Some(&a), &json!({"spec": {"z": 3}}), &req("b", false)).expect("disjoint apply");
        let err =
            apply(Some(&b), &json!({"spec": {"x": 9}}), &req("b", false)).expect_err("x is a's");
        assert_eq!(
            (err[0].manager.as_str(), err[0].path.as_str()),
            ("a", ".spec.x")
        );
        let forced = apply(
            Some(&b),
            &json!({"spec": {"x": 9, "z": 3}}),
            &req("b", true),
        )
        .expect("forced");
        // a applies again without y: y goes, x stays because b took it over.
        let again =
            apply(Some(&forced), &json!({"spec": {}}), &req("a", false)).expect("a shrinks");
        assert_eq!(again["spec"], json!({"x": 9, "z": 3}));
    }
}
