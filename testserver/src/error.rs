//! Errors: the crate's own [`Error`], and [`ApiError`], which is what a client sees as a
//! Kubernetes `Status` object.

use serde_json::{Value, json};

/// Errors of the test server itself (starting it, building a client for it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or serving the listening socket failed.
    #[error("test API server socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kube client could not be built for the server's URL.
    #[error("kube client for the test API server: {0}")]
    Kube(#[from] kube::Error),
    /// The server's URL did not parse as a URI (cannot happen for a bound socket address).
    #[error("test API server URL {0:?} is not a valid URI")]
    Url(String),
}

/// One failing field of a 422 Invalid answer, in the form kube-apiserver reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldError {
    pub field: String,
    /// The `StatusCause.reason`, e.g. `FieldValueRequired`.
    pub reason: &'static str,
    /// The text after `field: `, e.g. `Required value`.
    pub message: String,
}

impl FieldError {
    pub fn required(field: &str) -> Self {
        Self {
            field: field.to_string(),
            reason: "FieldValueRequired",
            message: "Required value".into(),
        }
    }

    pub fn invalid(field: &str, value: &Value, detail: impl std::fmt::Display) -> Self {
        Self {
            field: field.to_string(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {detail}", short(value)),
        }
    }

    pub fn unsupported(field: &str, value: &Value, allowed: &[Value]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        Self {
            field: field.to_string(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {value}: supported values: {}",
                allowed.join(", ")
            ),
        }
    }
}

/// kube-apiserver prints objects and arrays by their type name, scalars as JSON.
fn short(value: &Value) -> String {
    match value {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        v => v.to_string(),
    }
}

/// A failed API request, answered as a `Status` object with `code`, `reason` and `details`
/// so that kube-rs turns it into `kube::Error::Api`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// The machine-readable `Status.reason` (`NotFound`, `Conflict`, `Invalid`, ...).
    pub reason: &'static str,
    /// The human-readable `Status.message`.
    pub message: String,
    /// `Status.details`, when the reason has any.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            details: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// 404 for a URL that names no resource at all.
    pub(crate) fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        )
    }

    pub(crate) fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let what = qualified(group, plural);
        Self::new(404, "NotFound", format!("{what} \"{name}\" not found"))
            .with_details(group, plural, name)
    }

    pub(crate) fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let what = qualified(group, plural);
        Self::new(
            409,
            "AlreadyExists",
            format!("{what} \"{name}\" already exists"),
        )
        .with_details(group, plural, name)
    }

    pub(crate) fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let what = qualified(group, plural);
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {what} \"{name}\": {why}"),
        )
        .with_details(group, plural, name)
    }

    /// 409 for a server-side apply that would take fields other managers own.
    pub(crate) fn apply_conflict(
        group: &str,
        plural: &str,
        name: &str,
        conflicts: &[(String, String)],
    ) -> Self {
        let list: Vec<String> = conflicts
            .iter()
            .map(|(m, f)| format!("conflict with \"{m}\": {f}"))
            .collect();
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": f}))
            .collect();
        let mut err = Self::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict(s): {}",
                conflicts.len(),
                list.join(", ")
            ),
        )
        .with_details(group, plural, name);
        if let Some(d) = err.details.as_mut() {
            d["causes"] = json!(causes);
        }
        err
    }

    pub(crate) fn gone(message: String) -> Self {
        Self::new(410, "Expired", message)
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    pub(crate) fn method_not_allowed(verb: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {verb}"),
        )
    }

    /// 422 for a patch that cannot be applied (a failed JSON-patch `test`, a missing path).
    pub(crate) fn invalid_patch(message: String) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {message}"),
        )
    }

    /// 403, as RBAC answers: `User "..." cannot patch resource "x/status" ...`.
    pub(crate) fn forbidden(
        verb: &str,
        group: &str,
        plural: &str,
        sub: Option<&str>,
        name: &str,
    ) -> Self {
        let resource = match sub {
            Some(s) => format!("{plural}/{s}"),
            None => plural.to_string(),
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: User \"system:anonymous\" cannot {verb} resource \"{resource}\" in API group \"{group}\" (TestServer::forbid_writes)",
                qualified(group, plural)
            ),
        )
        .with_details(group, plural, name)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into())
    }

    /// 422 Invalid: `Kind.group "name" is invalid: field: message[, ...]`.
    pub(crate) fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let what = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut parts: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        let list = if parts.len() == 1 {
            parts.remove(0)
        } else {
            format!("[{}]", parts.join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field}))
            .collect();
        Self {
            code: 422,
            reason: "Invalid",
            message: format!("{what} \"{name}\" is invalid: {list}"),
            details: Some(json!({"name": name, "group": group, "kind": kind, "causes": causes})),
        }
    }

    fn with_details(mut self, group: &str, plural: &str, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": group, "kind": plural}));
        self
    }

    /// The `Status` object as sent on the wire (also inside watch ERROR events).
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}
