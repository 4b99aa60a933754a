//! Label and field selectors, as given in `labelSelector` / `fieldSelector` query parameters.

use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A parsed label selector plus field selector; an object matches when every requirement does.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    labels: Vec<(String, Op)>,
    /// (`metadata.name` or `metadata.namespace`, equal?, value).
    fields: Vec<(String, bool, String)>,
}

impl Selector {
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, ApiError> {
        let mut selector = Self::default();
        for req in split_top_level(labels.unwrap_or_default()) {
            selector.labels.push(parse_label_requirement(&req)?);
        }
        for req in fields
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            let (key, eq, value) = if let Some((k, v)) = req.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {req:?}"
                )));
            };
            let key = key.trim();
            if key != "metadata.name" && key != "metadata.namespace" {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {key} (this test server knows metadata.name and metadata.namespace)"
                )));
            }
            selector
                .fields
                .push((key.to_string(), eq, value.trim().to_string()));
        }
        Ok(selector)
    }

    pub fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        let labels_ok = self.labels.iter().all(|(key, op)| {
            let value = meta["labels"].get(key).and_then(Value::as_str);
            match op {
                Op::Eq(v) => value == Some(v),
                Op::NotEq(v) => value != Some(v),
                Op::In(vs) => value.is_some_and(|x| vs.iter().any(|v| v == x)),
                Op::NotIn(vs) => value.is_none_or(|x| vs.iter().all(|v| v != x)),
                Op::Exists => value.is_some(),
                Op::NotExists => value.is_none(),
            }
        });
        labels_ok
            && self.fields.iter().all(|(key, eq, v)| {
                let field = key.trim_start_matches("metadata.");
                (meta[field].as_str().unwrap_or_default() == v) == *eq
            })
    }
}

/// Splits on commas that are not inside `(...)`, so `a in (x,y),b` is two requirements.
fn split_top_level(s: &str) -> Vec<String> {
    let (mut parts, mut current, mut depth) = (Vec::new(), String::new(), 0u32);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_label_requirement(req: &str) -> Result<(String, Op), ApiError> {
    let bad = || ApiError::bad_request(format!("unable to parse requirement: {req:?}"));
    if let Some(key) = req.strip_prefix('!') {
        return Ok((key.trim().to_string(), Op::NotExists));
    }
    for (word, not) in [(" notin ", true), (" in ", false)] {
        if let Some((key, rest)) = req.split_once(word) {
            let list = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(bad)?;
            let values = list.split(',').map(|v| v.trim().to_string()).collect();
            let key = key.trim().to_string();
            return Ok((
                key,
                if not {
                    Op::NotIn(values)
                } else {
                    Op::In(values)
                },
            ));
        }
    }
    let (key, op) = if let Some((k, v)) = req.split_once("!=") {
        (k, Op::NotEq(v.trim().into()))
    } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
        (k, Op::Eq(v.trim().into()))
    } else {
        (req, Op::Exists)
    };
    let key = key.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((key.to_string(), op))
}
