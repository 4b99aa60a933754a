//! What is wrong with an object: [`FieldError`] names the field and the
//! reason, [`Problem`] adds where the object came from and which it is.

use std::fmt;

/// One field of an object that petrel cannot use, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field's path (`spec.asNumber`, `status.addresses[0].address`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// A field and what is wrong with it.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Something wrong with one object or file: where it was read, which object,
/// which field, and why. The object is skipped; the others still count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub origin: String,
    /// Which object (`Kind/name`), if known.
    pub object: Option<String>,
    /// Which field (`spec.asNumber`), if one.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A field of `object` (read at `origin`) that cannot be used.
    pub fn field(origin: impl fmt::Display, object: impl Into<String>, e: FieldError) -> Problem {
        Problem {
            origin: origin.to_string(),
            object: Some(object.into()),
            field: Some(e.field),
            message: e.reason,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}
