//! Tests of the generated CRDs: structural schemas, CEL rules evaluated on
//! example objects, the documentation's examples, stable YAML.
//!
//! `openapi` below is a small stand-in for the API server's OpenAPI value
//! validation (types, required and unknown fields, enums, bounds, patterns,
//! formats): enough to show that the documented examples pass and that the
//! mistakes the schema is meant to catch are caught.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube::core::cel::Validator;
use serde_json::{Value, json};

use super::*;

/// The openAPIV3Schema of the CRD for `kind`.
fn schema_of(kind: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("every CRD has a schema");
    serde_json::to_value(schema).expect("schema serialises")
}

/// A petrel object of `kind` with `spec`.
fn object(kind: &str, spec: Value) -> Value {
    json!({"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x"}, "spec": spec})
}

/// Every problem the API server would report for `obj`: OpenAPI value
/// validation, then the CEL rules (with defaults applied, as it does).
fn problems(obj: &Value) -> Vec<String> {
    let kind = obj["kind"].as_str().expect("kind");
    let schema = schema_of(kind);
    let mut out = Vec::new();
    // metadata is the API server's business, not the CRD schema's.
    let mut body = obj.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
    }
    openapi::check(&schema, &body, "", &mut out);
    if let Err(errors) = Validator::new().validate(&schema, obj, None) {
        out.extend(errors.iter().map(|e| e.to_string()));
    }
    out
}

#[track_caller]
fn accepted(obj: Value) {
    let p = problems(&obj);
    assert!(p.is_empty(), "{obj} was refused: {p:#?}");
}

#[track_caller]
fn refused(obj: Value, expected: &str) {
    let p = problems(&obj);
    assert!(
        p.iter().any(|m| m.contains(expected)),
        "{obj}: expected a problem containing {expected:?}, got {p:#?}"
    );
}

mod openapi {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use serde_json::Value;

    fn number(v: &Value) -> Option<f64> {
        v.as_f64()
    }

    /// Appends to `errs` what is wrong with `v` under `schema`.
    pub fn check(schema: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
        let mut err = |m: String| errs.push(format!("{}: {m}", display(path)));
        if v.is_null() {
            if schema.get("nullable") != Some(&Value::Bool(true)) {
                err("must not be null".into());
            }
            return;
        }
        let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => {
                let Some(map) = v.as_object() else {
                    return err(format!("{v} is not an object"));
                };
                for r in schema["required"].as_array().into_iter().flatten() {
                    let r = r.as_str().unwrap_or_default();
                    if !map.contains_key(r) {
                        err(format!("{r} is required"));
                    }
                }
                for (k, val) in map {
                    let sub = format!("{path}.{k}");
                    if let Some(p) = schema.pointer(&format!("/properties/{k}")) {
                        check(p, val, &sub, errs);
                    } else if let Some(ap) = schema.get("additionalProperties") {
                        check(ap, val, &sub, errs);
                    } else if schema.get("x-kubernetes-preserve-unknown-fields")
                        != Some(&Value::Bool(true))
                    {
                        errs.push(format!("{}: unknown field", display(&sub)));
                    }
                }
                return;
            }
            Some("array") => {
                let Some(items) = v.as_array() else {
                    return err(format!("{v} is not an array"));
                };
                if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                    && (items.len() as u64) < min
                {
                    err(format!("needs at least {min} items"));
                }
                for (i, item) in items.iter().enumerate() {
                    check(&schema["items"], item, &format!("{path}[{i}]"), errs);
                }
                return;
            }
            Some("string") if !v.is_string() => return err(format!("{v} is not a string")),
            Some("integer") if !(v.is_i64() || v.is_u64()) => {
                return err(format!("{v} is not an integer"));
            }
            Some("boolean") if !v.is_boolean() => return err(format!("{v} is not a boolean")),
            None if int_or_string && !(v.is_string() || v.is_i64() || v.is_u64()) => {
                return err(format!("{v} is neither an integer nor a string"));
            }
            _ => {}
        }
        value_checks(schema, v, &mut err);
    }

    /// The checks that do not depend on the type: what `anyOf` and `not`
    /// branches hold.
    fn value_checks(schema: &Value, v: &Value, err: &mut dyn FnMut(String)) {
        if let Some(e) = schema.get("enum").and_then(Value::as_array)
            && !e.contains(v)
        {
            err(format!("{v} is not one of {e:?}"));
        }
        if let Some(n) = number(v) {
            if let Some(min) = schema.get("minimum").and_then(number)
                && n < min
            {
                err(format!("{v} is below {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(number)
                && n > max
            {
                err(format!("{v} is above {max}"));
            }
        }
        if let Some(s) = v.as_str() {
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                let re = regex::Regex::new(p).expect("the schema's patterns compile");
                if !re.is_match(s) {
                    err(format!("{s:?} does not match {p}"));
                }
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && s.chars().count() as u64 > max
            {
                err(format!("{s:?} is longer than {max}"));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && (s.chars().count() as u64) < min
            {
                err(format!("{s:?} is shorter than {min}"));
            }
            let format_ok = match schema.get("format").and_then(Value::as_str) {
                Some("cidr") => s.parse::<ipnet::IpNet>().is_ok(),
                Some("ipv4") => s.parse::<Ipv4Addr>().is_ok(),
                Some("ipv6") => s.parse::<Ipv6Addr>().is_ok(),
                _ => true,
            };
            if !format_ok {
                err(format!("{s:?} is not in format {}", schema["format"]));
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            let fits = any.iter().any(|branch| {
                let mut failed = false;
                value_checks(branch, v, &mut |_| failed = true);
                !failed
            });
            if !fits {
                err(format!("{v} fits none of {any:?}"));
            }
        }
        if let Some(not) = schema.get("not") {
            let mut failed = false;
            value_checks(not, v, &mut |_| failed = true);
            if !failed {
                err(format!("{v} must not match {not}"));
            }
        }
    }

    fn display(path: &str) -> &str {
        path.strip_prefix('.').unwrap_or(path)
    }
}

/// Walks a schema the way the API server's structural check does, naming
/// each violation by its path.
fn structural_violations(s: &Value, path: &str, inside_junctor: bool, out: &mut Vec<String>) {
    let Some(map) = s.as_object() else {
        out.push(format!("{path}: not an object"));
        return;
    };
    for forbidden in ["$ref", "definitions", "$defs", "oneOf", "allOf"] {
        if map.contains_key(forbidden) {
            out.push(format!("{path}: has {forbidden}"));
        }
    }
    if inside_junctor {
        for k in [
            "type",
            "description",
            "default",
            "nullable",
            "properties",
            "items",
            "additionalProperties",
        ] {
            if map.contains_key(k) {
                out.push(format!("{path}: {k} inside anyOf/not"));
            }
        }
    } else {
        let typed = map.get("type").and_then(Value::as_str).is_some();
        let int_or_string = map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if !typed && !int_or_string && !preserve {
            out.push(format!("{path}: no type"));
        }
        if typed && int_or_string {
            out.push(format!("{path}: int-or-string with a type"));
        }
        if map.get("additionalProperties") == Some(&Value::Bool(false)) {
            out.push(format!("{path}: additionalProperties false"));
        }
        if map.contains_key("properties") && map.contains_key("additionalProperties") {
            out.push(format!("{path}: both properties and additionalProperties"));
        }
        let t = map.get("type").and_then(Value::as_str);
        if map.contains_key("properties") && t != Some("object") {
            out.push(format!("{path}: properties on a non-object"));
        }
        if t == Some("array") && !map.contains_key("items") {
            out.push(format!("{path}: array without items"));
        }
    }
    for (k, v) in map {
        match k.as_str() {
            "properties" => {
                for (name, p) in v.as_object().into_iter().flatten() {
                    structural_violations(p, &format!("{path}.{name}"), false, out);
                }
            }
            "items" | "additionalProperties" if v.is_object() => {
                structural_violations(v, &format!("{path}.{k}"), false, out)
            }
            "anyOf" => {
                for (i, b) in v.as_array().into_iter().flatten().enumerate() {
                    structural_violations(b, &format!("{path}.anyOf[{i}]"), true, out);
                }
            }
            "not" => structural_violations(v, &format!("{path}.not"), true, out),
            _ => {}
        }
    }
}

/// CEL rules below lists without `maxItems`, with those lists: the API
/// server multiplies a rule's cost by the most items each enclosing list may
/// hold, and refuses a CRD whose estimate exceeds its budget.
fn rules_under_unbounded_lists(s: &Value, path: &str, unbounded: &[String], out: &mut Vec<String>) {
    if s.get("x-kubernetes-validations").is_some() && !unbounded.is_empty() {
        out.push(format!("{path} (under {unbounded:?})"));
    }
    for (k, v) in s.as_object().into_iter().flatten() {
        match k.as_str() {
            "properties" => {
                for (name, p) in v.as_object().into_iter().flatten() {
                    rules_under_unbounded_lists(p, &format!("{path}.{name}"), unbounded, out);
                }
            }
            "items" => {
                let mut above = unbounded.to_vec();
                if s.get("maxItems").is_none() {
                    above.push(path.to_string());
                }
                rules_under_unbounded_lists(v, &format!("{path}[]"), &above, out);
            }
            "additionalProperties" if v.is_object() => {
                rules_under_unbounded_lists(v, &format!("{path}{{}}"), unbounded, out)
            }
            _ => {}
        }
    }
}

#[test]
fn every_schema_is_structural() {
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref()),
        )
        .expect("serialises");
        let mut v = Vec::new();
        structural_violations(&schema, "", false, &mut v);
        assert!(v.is_empty(), "{name}: {v:#?}");
        assert_eq!(crd.spec.scope, "Cluster", "{name}");
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.versions[0].name, VERSION);
        // An IPAMBlock is state written whole by compare-and-swap; what
        // users read about pools is in IPPool.status.
        let has_status = crd.spec.versions[0]
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some());
        assert_eq!(
            has_status,
            name != "ipamblocks.petrel.dev",
            "{name}: status subresource"
        );
        assert!(
            !has_status
                || schema
                    .pointer("/properties/status/properties/conditions")
                    .is_some(),
            "{name}: status has no conditions"
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["petrel".to_string()][..]),
            "{name}"
        );
    }
}

#[test]
fn the_structural_check_can_fail() {
    let mut v = Vec::new();
    structural_violations(
        &json!({"type": "object", "properties": {"a": {"description": "untyped"},
            "b": {"type": "string", "anyOf": [{"type": "string"}]}}}),
        "",
        false,
        &mut v,
    );
    assert_eq!(v, [".a: no type", ".b.anyOf[0]: type inside anyOf/not"]);
}

#[test]
fn cel_rules_compile_and_no_rule_sits_under_an_unbounded_list() {
    for crd in crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&kind);
        let compiled = kube::core::cel::compile_schema(&schema);
        assert!(
            !compiled.has_errors(),
            "{kind}: {:?}",
            compiled.compilation_errors()
        );
        let mut found = Vec::new();
        rules_under_unbounded_lists(&schema, &kind, &[], &mut found);
        assert!(found.is_empty(), "{found:#?}");
    }
    let mut found = Vec::new();
    rules_under_unbounded_lists(
        &json!({"type": "array", "items": {"type": "object", "x-kubernetes-validations": [{"rule": "true"}]}}),
        "x",
        &[],
        &mut found,
    );
    assert_eq!(found, [r#"x[] (under ["x"])"#]);
}

#[test]
fn bgp_peers_need_exactly_one_address_and_compatible_ttl_settings() {
    accepted(object(
        "BGPPeer",
        json!({"peerIP": "10.0.0.1", "asNumber": 65000, "holdTime": "9s", "keepaliveTime": 3}),
    ));
    accepted(object(
        "BGPPeer",
        json!({"listenRange": "10.0.0.0/24", "asNumber": 65000}),
    ));
    let both = "set exactly one of peerIP or listenRange";
    refused(
        object(
            "BGPPeer",
            json!({"peerIP": "10.0.0.1", "listenRange": "10.0.0.0/24", "asNumber": 65000}),
        ),
        both,
    );
    refused(object("BGPPeer", json!({"asNumber": 65000})), both);
    refused(
        object(
            "BGPPeer",
            json!({"peerIP": "10.0.0.1", "asNumber": 65000, "ebgpMultihop": 2, "ttlSecurity": 1}),
        ),
        "ttlSecurity cannot be combined with ebgpMultihop",
    );
    refused(
        object(
            "BGPPeer",
            json!({"peerIP": "10.0.0.1", "asNumber": 65000,
                   "password": {"file": "x", "secretKeyRef": {"name": "s", "key": "k"}}}),
        ),
        "set exactly one of file or secretKeyRef",
    );
    refused(
        object(
            "BGPPeer",
            json!({"peerIP": "10.0.0.1", "asNumber": 65000,
                   "nodeSelector": {"matchExpressions": [{"key": "rack", "operator": "In"}]}}),
        ),
        "In and NotIn need at least one value",
    );
    accepted(object(
        "BGPPeer",
        json!({"peerIP": "10.0.0.1", "asNumber": 65000,
               "nodeSelector": {"matchExpressions": [{"key": "spot", "operator": "DoesNotExist"}]}}),
    ));
}

#[test]
fn bgp_peer_fields_are_bounded_by_the_schema() {
    let peer = |extra: Value| {
        let mut spec = json!({"peerIP": "10.0.0.1", "asNumber": 65000});
        for (k, v) in extra.as_object().expect("object") {
            spec[k] = v.clone();
        }
        object("BGPPeer", spec)
    };
    refused(peer(json!({"asNumber": 0})), "is below 1");
    refused(
        peer(json!({"asNumber": 4294967295u64})),
        "is above 4294967294",
    );
    refused(peer(json!({"asNumber": 23456})), "AS_TRANS");
    accepted(peer(json!({"asNumber": 4294967294u64})));
    for bad in [json!(1), json!(2), json!("2s"), json!(70000), json!("9x")] {
        refused(peer(json!({"holdTime": bad})), "holdTime");
    }
    for good in [
        json!(0),
        json!(3),
        json!("90s"),
        json!("1m30s"),
        json!(65535),
    ] {
        accepted(peer(json!({"holdTime": good})));
    }
    refused(peer(json!({"keepaliveTime": "0s"})), "keepaliveTime");
    refused(peer(json!({"peerIP": "10.0.0.300"})), "peerIP");
    accepted(peer(json!({"peerIP": "2001:db8::1"})));
    refused(peer(json!({"port": 0})), "port");
    refused(peer(json!({"ttlSecurity": 255})), "ttlSecurity");
    refused(peer(json!({"addPaths": {"send": 0}})), "addPaths.send");
    refused(peer(json!({"addPaths": {"send": "some"}})), "addPaths.send");
    accepted(peer(json!({"addPaths": {"send": "all", "receive": true}})));
    accepted(peer(json!({"addPaths": {"send": 8}})));
    refused(
        peer(json!({"maxPrefixes": {"ipv4": {"warningPercent": 80}}})),
        "limit is required",
    );
    refused(
        peer(json!({"maxPrefixes": {"ipv4": {"limit": 10, "action": "Shutdown"}}})),
        "action",
    );
    refused(peer(json!({"peerIp": "10.0.0.1"})), "peerIp: unknown field");
}

#[test]
fn configurations_filters_and_advertisements_are_checked() {
    refused(
        object("BGPConfiguration", json!({})),
        "asNumber is required",
    );
    refused(
        object(
            "BGPConfiguration",
            json!({"asNumber": 65001, "routerID": "0.0.0.0"}),
        ),
        "0.0.0.0 is not a valid BGP identifier",
    );
    refused(
        object(
            "BGPConfiguration",
            json!({"asNumber": 65001, "maximumPaths": 0}),
        ),
        "maximumPaths",
    );
    refused(
        object(
            "BGPConfiguration",
            json!({"asNumber": 65001, "gracefulRestart": {"restartTime": 5000}}),
        ),
        "restartTime",
    );
    refused(
        object(
            "BGPConfiguration",
            json!({"asNumber": 65001, "serviceClusterIPs": [{"cidr": "10.96.0.0/33"}]}),
        ),
        "serviceClusterIPs[0].cidr",
    );
    let rule = |r: Value| object("BGPFilter", json!({"import": [r]}));
    refused(
        rule(json!({"match": {"prefix": {"cidr": "10.0.0.0/8", "ge": 24, "le": 16}}})),
        "ge must not be above le",
    );
    refused(
        rule(json!({"match": {"asPathLength": {"min": 5, "max": 2}}})),
        "min must not be above max",
    );
    refused(
        rule(json!({"match": {"prefix": {"le": 24}}})),
        "cidr is required",
    );
    refused(rule(json!({"match": {"family": "ipv5"}})), "family");
    refused(rule(json!({"match": {"community": "65000"}})), "community");
    refused(
        rule(json!({"set": {"prepend": {"count": 11}}})),
        "prepend.count",
    );
    refused(rule(json!({"action": "Drop"})), "action");
    accepted(rule(
        json!({"match": {"community": "no-export"}, "action": "Accept"}),
    ));
    refused(
        object("BGPAdvertisement", json!({"peers": []})),
        "needs at least 1 items",
    );
    refused(
        object("BGPAdvertisement", json!({"aggregationLength": 33})),
        "aggregationLength",
    );
    refused(
        object("BGPAdvertisement", json!({"largeCommunities": ["1:2"]})),
        "largeCommunities[0]",
    );
}

#[test]
fn pools_are_checked() {
    accepted(object(
        "LoadBalancerPool",
        json!({"cidrs": ["192.0.2.0/24", "198.51.100.10-198.51.100.20", "2001:db8::/120"]}),
    ));
    refused(
        object("LoadBalancerPool", json!({"cidrs": []})),
        "cidrs needs at least one CIDR or range",
    );
    refused(object("LoadBalancerPool", json!({})), "cidrs is required");
    refused(
        object("LoadBalancerPool", json!({"cidrs": ["192.0.2.0/33"]})),
        "cidrs[0]",
    );
    refused(
        object(
            "LoadBalancerPool",
            json!({"cidrs": ["192.0.2.0/24"], "priority": -1}),
        ),
        "priority",
    );
    accepted(object(
        "IPPool",
        json!({"cidr": "10.244.0.0/16", "blockSize": 24,
               "encapsulation": {"type": "VXLAN", "mode": "CrossSubnet"}}),
    ));
    accepted(object(
        "IPPool",
        json!({"cidr": "10.244.0.0/16", "encapsulation": {"type": "None"}}),
    ));
    refused(
        object(
            "IPPool",
            json!({"cidr": "10.244.0.0/16", "encapsulation": {"type": "None", "mode": "Always"}}),
        ),
        "mode applies to a tunnel type",
    );
    refused(
        object(
            "IPPool",
            json!({"cidr": "10.244.0.0/16", "encapsulation": {"type": "GRE"}}),
        ),
        "encapsulation.type",
    );
    refused(
        object("IPPool", json!({"cidr": "10.244.0.0/16", "blockSize": 129})),
        "blockSize",
    );
    refused(
        object("IPPool", json!({"blockSize": 26})),
        "cidr is required",
    );
}

#[test]
fn defaults_in_the_schema_are_the_ones_the_code_applies() {
    let config = schema_of("BGPConfiguration");
    let spec = &config["properties"]["spec"]["properties"];
    assert_eq!(spec["nodeToNodeMeshEnabled"]["default"], json!(true));
    assert_eq!(spec["listenPort"]["default"], json!(179));
    assert_eq!(spec["maximumPaths"]["default"], json!(8));
    assert_eq!(spec["listenAddress"]["default"], json!("::"));
    let gr = &spec["gracefulRestart"]["properties"];
    assert_eq!(gr["restartTime"]["default"], json!(120));
    assert_eq!(gr["staleRoutesTime"]["default"], json!(360));
    let peer = schema_of("BGPPeer");
    let spec = &peer["properties"]["spec"]["properties"];
    assert_eq!(spec["holdTime"]["default"], json!(90));
    assert_eq!(spec["port"]["default"], json!(179));
    assert!(
        spec["keepaliveTime"].get("default").is_none(),
        "a third of hold"
    );
    let pool = schema_of("LoadBalancerPool");
    assert_eq!(
        pool["properties"]["spec"]["properties"]["autoAssign"]["default"],
        json!(true)
    );
}

#[test]
fn the_peer_column_shows_the_session_summary() {
    let crd = BGPPeer::crd();
    let columns: BTreeMap<String, String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.clone(), c.json_path.clone()))
        .collect();
    assert_eq!(columns["Peer"], ".spec.peerIP");
    assert_eq!(columns["Range"], ".spec.listenRange");
    assert_eq!(columns["ASN"], ".spec.asNumber");
    assert_eq!(columns["Sessions"], ".status.summary");
    let status = schema_of("BGPPeer");
    let nodes = &status["properties"]["status"]["properties"]["nodes"];
    assert_eq!(nodes["x-kubernetes-list-type"], json!("map"));
    assert_eq!(
        nodes["x-kubernetes-list-map-keys"],
        json!(["node", "address"])
    );
}

#[test]
fn node_status_lists_are_keyed_and_an_agents_report_passes_the_schema() {
    let schema = schema_of("BGPNodeStatus");
    let status = &schema["properties"]["status"]["properties"];
    for (list, keys) in [
        ("peers", json!(["name", "address"])),
        ("services", json!(["service", "prefix"])),
        ("conditions", json!(["type"])),
    ] {
        assert_eq!(
            status[list]["x-kubernetes-list-type"],
            json!("map"),
            "{list}"
        );
        assert_eq!(status[list]["x-kubernetes-list-map-keys"], keys, "{list}");
    }
    let columns: Vec<String> = BGPNodeStatus::crd().spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(columns, ["Ready", "Sessions", "Services", "Reason", "Age"]);
    let mut report = object("BGPNodeStatus", json!({}));
    report["status"] = json!({
        "conditions": [{"type": "Ready", "status": "False", "reason": "SessionsDown",
                        "message": "1 of 2 sessions down: tor (Active)",
                        "lastTransitionTime": "2025-01-01T00:00:00Z"}],
        "sessions": "1/2 established",
        "advertised": "1/2 advertised",
        "peers": [{"name": "tor", "address": "10.0.0.254", "state": "Active"},
                  {"name": "node-mesh-n2", "address": "10.0.0.2", "state": "Established",
                   "establishedSince": "2025-01-01T00:00:00Z"}],
        "services": [
            {"service": "shop/web", "prefix": "198.51.100.10/32", "type": "LoadBalancerIP",
             "advertised": true, "reason": "a ready endpoint on this node (traffic policy Local)",
             "peers": ["node-mesh-n2"], "notSent": [{"peer": "tor", "reason": "session down (Active)"}]},
            {"service": "shop/api", "prefix": "10.96.0.11/32", "type": "ClusterIP",
             "advertised": false, "reason": "no ready endpoint on this node (traffic policy Local)"}
        ]
    });
    accepted(report.clone());
    let back: BGPNodeStatus = round_trip(&report);
    assert_eq!(back.status.map(|s| s.services.len()), Some(2));
    assert_eq!(
        schema["properties"]["spec"]["properties"],
        Value::Null,
        "the spec is empty"
    );
}

/// The YAML blocks of a Markdown file, split into documents.
fn yaml_documents(markdown: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(markdown).unwrap_or_else(|e| panic!("{}: {e}", markdown.display()));
    let mut docs = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        match (&mut block, line.trim_start()) {
            (None, l) if l.starts_with("```yaml") => block = Some(String::new()),
            (Some(b), "```") => {
                for doc in b.split("\n---\n") {
                    let v: Value = serde_saphyr::from_str(doc)
                        .unwrap_or_else(|e| panic!("{}: {e}\n{doc}", markdown.display()));
                    docs.push(v);
                }
                block = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    docs
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Deserialises `v` as `T`, serialises it, and deserialises that again:
/// the same value both times.
fn round_trip<T>(v: &Value) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
    let again: T = serde_json::from_value(serde_json::to_value(&typed).expect("serialises"))
        .expect("reads its own output");
    assert_eq!(typed, again);
    typed
}

#[test]
fn the_documented_examples_round_trip_and_pass_the_schema() {
    let mut seen = BTreeMap::<String, usize>::new();
    for file in ["docs/standalone.md", "docs/kubernetes.md"] {
        for doc in yaml_documents(&repo_file(file)) {
            if doc["apiVersion"] != json!(API_VERSION) {
                continue;
            }
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            match kind.as_str() {
                "BGPConfiguration" => {
                    round_trip::<BGPConfiguration>(&doc);
                }
                "BGPPeer" => {
                    round_trip::<BGPPeer>(&doc);
                }
                "BGPFilter" => {
                    round_trip::<BGPFilter>(&doc);
                }
                "BGPAdvertisement" => {
                    round_trip::<BGPAdvertisement>(&doc);
                }
                "LoadBalancerPool" => {
                    let pool = round_trip::<LoadBalancerPool>(&doc);
                    assert_eq!(pool.spec.validate(), Ok(()), "{doc}");
                }
                "IPPool" => {
                    let pool = round_trip::<IPPool>(&doc);
                    assert_eq!(pool.spec.validate(), Ok(()), "{doc}");
                }
                other => panic!("{file}: unknown petrel kind {other}"),
            }
            accepted(doc);
            *seen.entry(kind).or_default() += 1;
        }
    }
    let kinds: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "BGPAdvertisement",
            "BGPConfiguration",
            "BGPFilter",
            "BGPPeer",
            "IPPool",
            "LoadBalancerPool"
        ],
        "every kind has a documented example"
    );
}

#[test]
fn the_yaml_is_stable_and_reads_back_as_the_same_crds() {
    let first = crds_yaml().expect("yaml");
    assert_eq!(first, crds_yaml().expect("yaml"));
    let docs: Vec<&str> = first.split("\n---\n").collect();
    assert_eq!(docs.len(), 9);
    let names: Vec<String> = crds()
        .iter()
        .map(|c| c.metadata.name.clone().unwrap_or_default())
        .collect();
    for (doc, crd) in docs.iter().zip(crds()) {
        let back: CustomResourceDefinition =
            serde_saphyr::from_str(doc.trim_start_matches("---\n")).expect("reads back");
        assert_eq!(back, crd);
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

/// Where the Helm chart keeps the CRDs, and how to bring them up to date.
const CHART_CRDS: &str = "charts/petrel/crds";
const REGENERATE: &str = "cargo run -p petrel -- crds --dir charts/petrel/crds";

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let dir = repo_file(CHART_CRDS);
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        expected.insert(format!("{name}.yaml"), crd_yaml(&crd).expect("yaml"));
    }
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run `{REGENERATE}`", dir.display()))
    {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        found.insert(
            name,
            std::fs::read_to_string(&path).expect("readable CRD file"),
        );
    }
    let stale: Vec<&String> = expected
        .keys()
        .filter(|k| found.get(*k) != expected.get(*k))
        .chain(found.keys().filter(|k| !expected.contains_key(*k)))
        .collect();
    assert!(
        stale.is_empty(),
        "{CHART_CRDS} does not match the crds crate ({stale:?} differ); regenerate with `{REGENERATE}`"
    );
}
