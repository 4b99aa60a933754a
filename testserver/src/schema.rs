//! Structural-schema handling for custom objects, in kube-apiserver's order: prune unknown
//! fields and drop `null`s of non-nullable fields, apply defaults, then validate (OpenAPI
//! keywords and `x-kubernetes-validations` CEL rules).
//!
//! Simplified: `oneOf`/`anyOf` report one summary error; a rule's `reason` is not used (every
//! failure is `FieldValueInvalid`); `multipleOf`, `uniqueItems`,
//! `minProperties`/`maxProperties`, list-type uniqueness and CEL cost limits are not checked;
//! formats other than `int32`, `int64`, `ipv4`, `ipv6` and `cidr` are accepted unchecked;
//! defaults are not validated when the CRD is created; `oldSelf` is correlated through object
//! fields only (not through list items), and a rule mentioning `oldSelf` is a transition rule
//! (skipped on create).

use std::collections::HashMap;

use regex::Regex;
use serde_json::{Map, Value, json};

use crate::cel::{self, Expr};
use crate::error::FieldError;

/// One CRD version's `openAPIV3Schema`, with its CEL rules and patterns compiled.
#[derive(Debug)]
pub(crate) struct Schema {
    root: Value,
    rules: HashMap<String, Expr>,
    patterns: HashMap<String, Regex>,
}

/// Top-level fields every object has, which the schema neither prunes nor validates here.
const ROOT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

impl Schema {
    /// Compiles every rule and pattern, so that a CRD using anything unsupported is refused
    /// when it is created. `at` is the field path of the schema, for error messages.
    pub fn compile(root: Value, at: &str) -> Result<Self, Vec<FieldError>> {
        let mut schema = Self {
            root: Value::Null,
            rules: HashMap::new(),
            patterns: HashMap::new(),
        };
        let mut errors = Vec::new();
        walk(&root, at, &mut |s, path| {
            if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                match Regex::new(p) {
                    Ok(re) => _ = schema.patterns.insert(p.to_string(), re),
                    Err(e) => errors.push(FieldError::invalid(
                        &format!("{path}.pattern"),
                        &json!(p),
                        e,
                    )),
                }
            }
            let rules = s.get("x-kubernetes-validations").and_then(Value::as_array);
            for (i, rule) in rules.into_iter().flatten().enumerate() {
                for key in ["rule", "messageExpression"] {
                    let Some(src) = rule.get(key).and_then(Value::as_str) else {
                        continue;
                    };
                    match cel::parse(src) {
                        Ok(expr) => _ = schema.rules.insert(src.to_string(), expr),
                        Err(e) => errors.push(FieldError::invalid(
                            &format!("{path}.x-kubernetes-validations[{i}].{key}"),
                            &json!(src),
                            format!("compilation failed: {e}"),
                        )),
                    }
                }
            }
        });
        schema.root = root;
        if errors.is_empty() {
            Ok(schema)
        } else {
            Err(errors)
        }
    }

    /// Prunes unknown fields and applies defaults; returns the paths of pruned fields (for
    /// `fieldValidation=Strict`).
    pub fn normalize(&self, object: &mut Value) -> Vec<String> {
        let mut pruned = Vec::new();
        normalize(object, &self.root, "", &mut pruned);
        pruned
    }

    /// The keys of the list at `path` when the schema makes it a map list
    /// (`x-kubernetes-list-type: map`); `None` for other lists and unknown paths. An item
    /// element of the path (`k:{...}`) steps into the items of the list above it.
    pub fn list_map_keys(&self, path: &[String]) -> Option<Vec<String>> {
        let mut s = &self.root;
        for element in path {
            s = if element.starts_with("k:") {
                s.get("items")?
            } else {
                s["properties"]
                    .get(element)
                    .or(s.get("additionalProperties").filter(|a| a.is_object()))?
            };
        }
        if s["x-kubernetes-list-type"] != "map" {
            return None;
        }
        let keys: Vec<String> = s["x-kubernetes-list-map-keys"]
            .as_array()?
            .iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect();
        (!keys.is_empty()).then_some(keys)
    }

    /// Validates a normalized object; `old` is the stored object on updates (for `oldSelf`).
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        self.check(object, &self.root, "", old, &mut errors);
        errors
    }

    fn check(
        &self,
        v: &Value,
        s: &Value,
        path: &str,
        old: Option<&Value>,
        errors: &mut Vec<FieldError>,
    ) {
        let at = if path.is_empty() { "<nil>" } else { path };
        if v.is_null() && s["nullable"] == true {
            return;
        }
        let int_or_string = s["x-kubernetes-int-or-string"] == true;
        if let Some(t) = s["type"].as_str().filter(|_| !int_or_string) {
            let ok = match t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                _ => true,
            };
            if !ok {
                let actual = type_name(v);
                errors.push(FieldError::invalid(
                    at,
                    &json!(actual),
                    format!("{at} in body must be of type {t}: \"{actual}\""),
                ));
                return;
            }
        } else if int_or_string && !(v.is_i64() || v.is_u64() || v.is_string()) {
            errors.push(FieldError::invalid(
                at,
                v,
                format!("{at} in body must be of type integer or string"),
            ));
            return;
        }
        if let Some(allowed) = s["enum"].as_array()
            && !allowed.contains(v)
        {
            errors.push(FieldError::unsupported(at, v, allowed));
        }
        let mut fail = |detail: String| {
            errors.push(FieldError::invalid(at, v, format!("{at} in body {detail}")))
        };
        if let Some(n) = v.as_f64() {
            let excl = |k: &str| s[k] == true;
            if let Some(min) = s["minimum"].as_f64() {
                if excl("exclusiveMinimum") && n <= min {
                    fail(format!("should be greater than {min}"));
                } else if n < min {
                    fail(format!("should be greater than or equal to {min}"));
                }
            }
            if let Some(max) = s["maximum"].as_f64() {
                if excl("exclusiveMaximum") && n >= max {
                    fail(format!("should be less than {max}"));
                } else if n > max {
                    fail(format!("should be less than or equal to {max}"));
                }
            }
            if s["format"] == "int32" && (n < f64::from(i32::MIN) || n > f64::from(i32::MAX)) {
                fail("must be of type int32".into());
            }
        }
        if let Some(text) = v.as_str() {
            let len = text.chars().count() as u64;
            if let Some(min) = s["minLength"].as_u64().filter(|m| len < *m) {
                fail(format!("should be at least {min} chars long"));
            }
            if let Some(max) = s["maxLength"].as_u64().filter(|m| len > *m) {
                fail(format!("should be at most {max} chars long"));
            }
            if let Some(re) = s["pattern"].as_str().and_then(|p| self.patterns.get(p))
                && !re.is_match(text)
            {
                fail(format!("should match '{}'", re.as_str()));
            }
            let format_ok = match s["format"].as_str().unwrap_or_default() {
                "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
                "ipv6" => text.parse::<std::net::Ipv6Addr>().is_ok(),
                "cidr" => is_cidr(text),
                _ => true,
            };
            if !format_ok {
                fail(format!(
                    "must be of type {}: {v}",
                    s["format"].as_str().unwrap_or_default()
                ));
            }
        }
        if let Some(items) = v.as_array() {
            let n = items.len() as u64;
            if let Some(min) = s["minItems"].as_u64().filter(|m| n < *m) {
                fail(format!("should have at least {min} items"));
            }
            if let Some(max) = s["maxItems"].as_u64().filter(|m| n > *m) {
                errors.push(FieldError {
                    field: at.into(),
                    reason: "FieldValueTooMany",
                    message: format!("Too many: {n}: must have at most {max} items"),
                });
            }
            for (i, item) in items.iter().enumerate() {
                self.check(item, &s["items"], &format!("{path}[{i}]"), None, errors);
            }
        }
        if let Some(fields) = v.as_object() {
            for req in s["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !fields.contains_key(req) {
                    errors.push(FieldError::required(&join(path, req)));
                }
            }
            for (k, child) in fields {
                if path.is_empty() && ROOT_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                let child_schema = s["properties"]
                    .get(k)
                    .or(s.get("additionalProperties").filter(|a| a.is_object()));
                if let Some(cs) = child_schema {
                    self.check(
                        child,
                        cs,
                        &join(path, k),
                        old.and_then(|o| o.get(k)),
                        errors,
                    );
                }
            }
        }
        for sub in s["allOf"].as_array().into_iter().flatten() {
            self.check(v, sub, path, old, errors);
        }
        for (key, want_one) in [("anyOf", false), ("oneOf", true)] {
            let Some(branches) = s[key].as_array() else {
                continue;
            };
            let valid = branches
                .iter()
                .filter(|b| {
                    let mut scratch = Vec::new();
                    self.check(v, b, path, old, &mut scratch);
                    scratch.is_empty()
                })
                .count();
            if valid == 0 || (want_one && valid > 1) {
                let which = if want_one {
                    "one and only one schema (oneOf)"
                } else {
                    "at least one schema (anyOf)"
                };
                errors.push(FieldError::invalid(
                    at,
                    v,
                    format!("must validate {which}; {valid} matched"),
                ));
            }
        }
        if s.get("not").is_some_and(Value::is_object) {
            let mut scratch = Vec::new();
            self.check(v, &s["not"], path, old, &mut scratch);
            if scratch.is_empty() {
                errors.push(FieldError::invalid(
                    at,
                    v,
                    "must not validate the schema (not)".to_string(),
                ));
            }
        }
        self.check_rules(v, s, at, old, errors);
    }

    fn check_rules(
        &self,
        v: &Value,
        s: &Value,
        at: &str,
        old: Option<&Value>,
        errors: &mut Vec<FieldError>,
    ) {
        for rule in s["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let src = rule["rule"].as_str().unwrap_or_default();
            let Some(expr) = self.rules.get(src) else {
                continue;
            };
            // Transition rules only run on updates, where the old value exists.
            if src.contains("oldSelf") && old.is_none() {
                continue;
            }
            let mut env = vec![("self".to_string(), v.clone())];
            env.extend(old.map(|o| ("oldSelf".to_string(), o.clone())));
            let field = match rule["fieldPath"].as_str() {
                Some(fp) if at != "<nil>" => format!("{at}{fp}"),
                Some(fp) => fp.trim_start_matches('.').to_string(),
                None => at.to_string(),
            };
            let message = match cel::eval(expr, &mut env) {
                Ok(Value::Bool(true)) => continue,
                Ok(Value::Bool(false)) => {
                    let from_expr = rule["messageExpression"]
                        .as_str()
                        .and_then(|m| self.rules.get(m));
                    match from_expr.map(|m| cel::eval(m, &mut env)) {
                        Some(Ok(Value::String(m))) => m,
                        _ => rule["message"]
                            .as_str()
                            .map_or_else(|| format!("failed rule: {src}"), String::from),
                    }
                }
                Ok(other) => format!("rule {src:?} evaluated to {other}, not a bool"),
                Err(e) => format!("rule {src:?} could not be evaluated: {e}"),
            };
            errors.push(FieldError::invalid(&field, v, message));
        }
    }
}

fn normalize(v: &mut Value, s: &Value, path: &str, pruned: &mut Vec<String>) {
    match v {
        Value::Object(fields) => {
            let preserve = s["x-kubernetes-preserve-unknown-fields"] == true
                || s["additionalProperties"] == true;
            let keys: Vec<String> = fields.keys().cloned().collect();
            for k in keys {
                if path.is_empty() && ROOT_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                let child_schema = s["properties"]
                    .get(&k)
                    .or(s.get("additionalProperties").filter(|a| a.is_object()));
                match child_schema {
                    None if preserve => {}
                    None => {
                        fields.remove(&k);
                        pruned.push(join(path, &k));
                    }
                    // kube-apiserver drops nulls of non-nullable fields, so defaults can apply.
                    Some(cs) if fields[&k].is_null() && cs["nullable"] != true => {
                        _ = fields.remove(&k)
                    }
                    Some(cs) => normalize(&mut fields[&k], cs, &join(path, &k), pruned),
                }
            }
            apply_defaults(fields, s, path, pruned);
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                normalize(item, &s["items"], &format!("{path}[{i}]"), pruned);
            }
        }
        _ => {}
    }
}

fn apply_defaults(
    fields: &mut Map<String, Value>,
    s: &Value,
    path: &str,
    pruned: &mut Vec<String>,
) {
    let Some(props) = s["properties"].as_object() else {
        return;
    };
    for (k, ps) in props {
        if let (false, Some(default)) = (fields.contains_key(k), ps.get("default")) {
            let mut value = default.clone();
            normalize(&mut value, ps, &join(path, k), pruned);
            fields.insert(k.clone(), value);
        }
    }
}

/// Calls `f` on every schema node below `s` (with its path), `s` included.
fn walk(s: &Value, path: &str, f: &mut impl FnMut(&Value, &str)) {
    f(s, path);
    for (k, child) in s["properties"].as_object().into_iter().flatten() {
        walk(child, &format!("{path}.properties[{k}]"), f);
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = s.get(key).filter(|c| c.is_object()) {
            walk(child, &format!("{path}.{key}"), f);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for (i, child) in s[key].as_array().into_iter().flatten().enumerate() {
            walk(child, &format!("{path}.{key}[{i}]"), f);
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_cidr(text: &str) -> bool {
    let Some((addr, len)) = text.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::compile(
            json!({"type": "object", "properties": {"spec": {
                "type": "object", "required": ["size"],
                "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}],
                "properties": {
                    "size": {"type": "string", "enum": ["small", "large"]},
                    "min": {"type": "integer", "format": "int32", "default": 1},
                    "max": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5},
                    "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                    "cidr": {"type": "string", "format": "cidr"},
                    "port": {"x-kubernetes-int-or-string": true},
                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "tags": {"type": "array", "maxItems": 1, "items": {"type": "string"}},
                    "note": {"type": "string", "nullable": true}
                }}}}),
            "spec.versions[0].schema.openAPIV3Schema",
        )
        .expect("schema compiles")
    }

    #[test]
    fn prunes_defaults_and_keeps_preserved() {
        let mut obj = json!({"kind": "W", "metadata": {"name": "a"}, "spec": {
            "size": "small", "unknown": 1, "max": null, "note": null, "extra": {"anything": [1]}}});
        let pruned = schema().normalize(&mut obj);
        assert_eq!(pruned, vec!["spec.unknown".to_string()]);
        assert_eq!(
            obj["spec"],
            json!({"size": "small", "min": 1, "max": 5, "note": null, "extra": {"anything": [1]}})
        );
        assert!(schema().validate(&obj, None).is_empty());
    }

    #[test]
    fn reports_each_failing_field() {
        let obj = json!({"spec": {"min": 12, "max": 11, "name": "ABCDEF", "cidr": "10.0.0.0/33",
            "port": true, "tags": ["a", "b"]}});
        let errors: Vec<String> = schema()
            .validate(&obj, None)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        for want in [
            "spec.size: Required value",
            "spec.max: Invalid value: 11: spec.max in body should be less than or equal to 10",
            "spec.name: Invalid value: \"ABCDEF\": spec.name in body should be at most 5 chars long",
            "spec.name: Invalid value: \"ABCDEF\": spec.name in body should match '^[a-z]+$'",
            "spec.cidr: Invalid value: \"10.0.0.0/33\": spec.cidr in body must be of type cidr: \"10.0.0.0/33\"",
            "spec.port: Invalid value: true: spec.port in body must be of type integer or string",
            "spec.tags: Too many: 2: must have at most 1 items",
            "spec: Invalid value: \"object\": min must not exceed max",
        ] {
            assert!(
                errors.iter().any(|e| e == want),
                "missing {want:?} in {errors:#?}"
            );
        }
        let enum_err = schema().validate(&json!({"spec": {"size": "huge"}}), None);
        assert_eq!(
            enum_err[0].message,
            "Unsupported value: \"huge\": supported values: \"small\", \"large\""
        );
    }

    #[test]
    fn unsupported_rules_fail_compilation() {
        let bad = json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.x.map(y, y) == []"}]});
        let errors = Schema::compile(bad, "s").expect_err("map() is outside the subset");
        assert_eq!(errors[0].field, "s.x-kubernetes-validations[0].rule");
    }

    #[test]
    fn not_refuses_what_its_schema_accepts() {
        let s = Schema::compile(
            json!({"type": "object", "properties": {"hold": {
                "x-kubernetes-int-or-string": true, "not": {"enum": [1, 2, "2s"]}}}}),
            "s",
        )
        .expect("compiles");
        assert!(s.validate(&json!({"hold": 3}), None).is_empty());
        for bad in [json!(1), json!("2s")] {
            let errors = s.validate(&json!({"hold": bad}), None);
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert_eq!(errors[0].field, "hold");
        }
    }
}
