//! The four PATCH flavours kube clients send.
//!
//! - `application/json-patch+json`: RFC 6902, exact (the `json-patch` crate).
//! - `application/merge-patch+json`: RFC 7386, exact.
//! - `application/strategic-merge-patch+json`: simplified to a merge patch in which lists of
//!   objects are merged item by item on a key instead of replaced: `type` for `conditions` and
//!   `addresses`, `port` for `ports`, otherwise `name`, and only when every item of both lists
//!   has that key. Patch directives (`$patch`, `$retainKeys`, `$deleteFromPrimitiveList`) are
//!   not understood.
//! - `application/apply-patch+yaml` (server-side apply): simplified. Ownership is tracked per
//!   leaf field. A list is either granular or atomic: a custom resource's list is granular
//!   when its schema says `x-kubernetes-list-type: map` (items merged and owned one by one,
//!   matched on `x-kubernetes-list-map-keys`, recorded as `k:{...}` in `managedFields` as
//!   kube-apiserver does), atomic otherwise; a built-in kind's list of objects is granular on
//!   the strategic-merge key above. Atomic lists are replaced and owned as a whole; `set`
//!   lists are atomic too. Only `Apply` managers own fields (updates by PUT/PATCH record no
//!   manager), so conflicts arise only between two appliers that set the same field to
//!   different values. Fields and list items a manager applied before and omits now are
//!   removed unless another manager owns them (or something inside them).

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

/// The keys of the list at a field path when its items are merged and owned one by one
/// (`x-kubernetes-list-type: map`); `None` for an atomic list. Item elements of the path
/// (`k:{...}`) stand for "an item of the list above".
pub(crate) type ListKeys<'a> = &'a dyn Fn(&[String]) -> Option<Vec<String>>;

/// The list keys of a built-in kind, which has no schema here: the strategic-merge key
/// (see the module doc), used when every item has it.
pub(crate) fn builtin_list_keys(path: &[String]) -> Option<Vec<String>> {
    let field = path.last()?;
    if field.starts_with("k:") {
        return None;
    }
    let key = match field.as_str() {
        "conditions" | "addresses" => "type",
        "ports" => "port",
        _ => "name",
    };
    Some(vec![key.to_string()])
}

/// What one server-side apply needs besides the objects.
pub(crate) struct ApplyRequest<'a> {
    pub manager: &'a str,
    pub force: bool,
    pub subresource: Option<&'a str>,
    pub api_version: &'a str,
    pub now: &'a str,
    pub scope: Scope<'a>,
    pub list_keys: ListKeys<'a>,
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
    leaf_paths(config, &mut Vec::new(), &mut ours, req.list_keys);
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
    // What this manager no longer applies goes, with the list items it leaves empty of
    // owners; what someone still owns (or owns something inside) stays. Whole items first,
    // so their keys are still there to find them by.
    let owned = |p: &Path| {
        ours.iter()
            .chain(others.iter().flat_map(|(_, set)| set.iter()))
            .any(|q| q.starts_with(p))
    };
    let mut gone: BTreeSet<Path> = BTreeSet::new();
    for stale in previous.difference(&ours) {
        gone.insert(stale.clone());
        for (i, element) in stale.iter().enumerate() {
            if element.starts_with("k:") {
                gone.insert(stale[..=i].to_vec());
            }
        }
    }
    let mut gone: Vec<Path> = gone.into_iter().filter(|p| !owned(p)).collect();
    gone.sort_by_key(Vec::len);
    let mut removed: Vec<Path> = Vec::new();
    for p in gone {
        if !removed.iter().any(|r| p.starts_with(r)) {
            remove(&mut object, &p);
            removed.push(p);
        }
    }
    apply_merge(&mut object, config, &mut Vec::new(), req.list_keys);

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

/// The item elements (`k:{...}`) of a granular list's items, or `None` when the list at
/// `path` is atomic (or an item lacks a key, or two items share one).
fn item_elements(items: &[Value], path: &[String], list_keys: ListKeys) -> Option<Vec<String>> {
    let keys = list_keys(path)?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let e = item_element(item, &keys)?;
        if out.contains(&e) {
            return None;
        }
        out.push(e);
    }
    Some(out)
}

/// `k:{"key":value,...}` of one item, keys sorted by name (kube-apiserver's form).
fn item_element(item: &Value, keys: &[String]) -> Option<String> {
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let mut m = Map::new();
    for k in sorted {
        m.insert(k.clone(), item.as_object()?.get(k)?.clone());
    }
    Some(format!("k:{}", Value::Object(m)))
}

/// Whether `item` is the one an item element (`k:{...}`) names.
fn is_item(item: &Value, element: &str) -> bool {
    let Some(Ok(Value::Object(keys))) = element
        .strip_prefix("k:")
        .map(serde_json::from_str::<Value>)
    else {
        return false;
    };
    keys.iter().all(|(k, v)| item.get(k) == Some(v))
}

fn leaf_paths(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>, list_keys: ListKeys) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaf_paths(child, prefix, out, list_keys);
                prefix.pop();
            }
        }
        Value::Array(items) => match item_elements(items, prefix, list_keys) {
            // A granular list: each item's fields are owned; an empty one owns nothing.
            Some(elements) => {
                for (item, element) in items.iter().zip(elements) {
                    prefix.push(element);
                    leaf_paths(item, prefix, out, list_keys);
                    prefix.pop();
                }
            }
            None => _ = out.insert(prefix.clone()),
        },
        _ => _ = out.insert(prefix.clone()),
    }
}

/// Server-side apply's merge: like [`merge`], with granular lists merged item by item on
/// their keys and atomic lists replaced.
fn apply_merge(base: &mut Value, patch: &Value, path: &mut Path, list_keys: ListKeys) {
    match patch {
        Value::Object(p) => {
            if !base.is_object() {
                *base = json!({});
            }
            for (k, v) in p {
                if v.is_null() {
                    base.as_object_mut().map(|b| b.remove(k));
                    continue;
                }
                path.push(k.clone());
                if let Some(slot) = base
                    .as_object_mut()
                    .map(|b| b.entry(k.clone()).or_insert(Value::Null))
                {
                    apply_merge(slot, v, path, list_keys);
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            let granular = item_elements(items, path, list_keys).zip(
                base.as_array()
                    .and_then(|existing| item_elements(existing, path, list_keys)),
            );
            let (Some((elements, _)), Some(existing)) = (granular, base.as_array_mut()) else {
                *base = patch.clone();
                return;
            };
            for (item, element) in items.iter().zip(elements) {
                path.push(element.clone());
                match existing.iter_mut().find(|e| is_item(e, &element)) {
                    Some(e) => apply_merge(e, item, path, list_keys),
                    None => existing.push(item.clone()),
                }
                path.pop();
            }
        }
        _ => *base = patch.clone(),
    }
}

fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for key in path {
            let name = if key.starts_with("k:") {
                key.clone()
            } else {
                format!("f:{key}")
            };
            let child = node.entry(name).or_insert_with(|| json!({}));
            let Some(map) = child.as_object_mut() else {
                break;
            };
            // An item is recorded as itself (".") and its fields, as kube-apiserver does.
            if key.starts_with("k:") {
                map.entry(".").or_insert_with(|| json!({}));
            }
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
        let element = match k.strip_prefix("f:") {
            Some(key) => key.to_string(),
            None if k.starts_with("k:") => k.clone(),
            None => continue,
        };
        prefix.push(element);
        from_fields_v1(child, prefix, out);
        prefix.pop();
    }
}

fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |node, key| match node {
        Value::Array(items) => items.iter().find(|i| is_item(i, key)),
        _ => node.get(key),
    })
}

fn get_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |node, key| match node {
        Value::Array(items) => items.iter_mut().find(|i| is_item(i, key)),
        _ => node.get_mut(key),
    })
}

fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    match get_mut(v, parents) {
        Some(Value::Object(m)) => _ = m.remove(last),
        Some(Value::Array(items)) => items.retain(|i| !is_item(i, last)),
        _ => {}
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
            list_keys: &builtin_list_keys,
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

    #[test]
    fn apply_owns_items_of_keyed_lists_one_by_one() {
        let all: Scope = &|_| true;
        // As a CRD's `x-kubernetes-list-type: map` with two keys; other lists atomic.
        let keys: ListKeys = &|p: &[String]| {
            (p == ["status", "nodes"]).then(|| vec!["node".to_string(), "address".to_string()])
        };
        let req = |manager| ApplyRequest {
            manager,
            force: false,
            subresource: Some("status"),
            api_version: "v1",
            now: "t",
            scope: all,
            list_keys: keys,
        };
        let entry =
            |node: &str, state: &str| json!({"node": node, "address": "10.0.0.1", "state": state});
        let nodes = |v: &Value| -> Vec<(String, String)> {
            v["status"]["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    (
                        e["node"].as_str().unwrap_or_default().to_string(),
                        e["state"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        };
        let live = json!({"metadata": {"name": "tor"}, "spec": {"x": 1}});
        let a = apply(
            Some(&live),
            &json!({"status": {"nodes": [entry("a", "Active")]}}),
            &req("agent/a"),
        )
        .expect("a applies");
        let b = apply(
            Some(&a),
            &json!({"status": {"nodes": [entry("b", "Connect")]}}),
            &req("agent/b"),
        )
        .expect("b applies its own entry: no conflict with a's");
        assert_eq!(
            nodes(&b),
            [
                ("a".into(), "Active".into()),
                ("b".into(), "Connect".into())
            ]
        );
        let fields = &b["metadata"]["managedFields"];
        let text = fields.to_string();
        assert!(
            text.contains(r#"k:{\"address\":\"10.0.0.1\",\"node\":\"b\"}"#),
            "items recorded by key: {text}"
        );
        // a's entry changes; b's stays.
        let a2 = apply(
            Some(&b),
            &json!({"status": {"nodes": [entry("a", "Established")]}}),
            &req("agent/a"),
        )
        .expect("a updates");
        assert_eq!(
            nodes(&a2),
            [
                ("a".into(), "Established".into()),
                ("b".into(), "Connect".into())
            ]
        );
        // A third writer with the same key as a's and another value conflicts.
        let clash = apply(
            Some(&a2),
            &json!({"status": {"nodes": [entry("a", "Idle")]}}),
            &req("intruder"),
        )
        .expect_err("a owns that item's state");
        assert_eq!(clash[0].manager, "agent/a");
        // a applies none: its item goes, b's stays, the rest of the object too.
        let a3 = apply(
            Some(&a2),
            &json!({"status": {"nodes": []}}),
            &req("agent/a"),
        )
        .expect("a empties");
        assert_eq!(nodes(&a3), [("b".into(), "Connect".into())]);
        assert_eq!(a3["spec"], json!({"x": 1}));
        // An empty status applied by a (owning `status` as an empty leaf) then dropped
        // again does not take b's entries with it.
        let a4 = apply(Some(&a3), &json!({"status": {}}), &req("agent/a")).expect("a applies {}");
        let a5 = apply(
            Some(&a4),
            &json!({"status": {"nodes": [entry("a", "Active")]}}),
            &req("agent/a"),
        )
        .expect("a applies again");
        assert_eq!(
            nodes(&a5),
            [
                ("b".into(), "Connect".into()),
                ("a".into(), "Active".into())
            ]
        );
        // Lists without keys stay atomic.
        let atomic = apply(
            Some(&a5),
            &json!({"status": {"other": [{"node": "x"}]}}),
            &req("agent/a"),
        )
        .expect("atomic list");
        assert!(
            apply(
                Some(&atomic),
                &json!({"status": {"other": [{"node": "y"}]}}),
                &req("agent/b")
            )
            .is_err(),
            "a whole atomic list belongs to its applier"
        );
    }
}
