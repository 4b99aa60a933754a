//! What can go wrong starting the API or reaching it: the step, and why
//! (with every cause, as the operator needs them).

use std::error::Error as StdError;
use std::fmt;

/// An API server that cannot start, or an agent the client cannot reach.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A step failed for a reason below it (a file, a socket, TLS).
    #[error("{what}: {}", Chain(source.as_ref()))]
    Failed {
        /// What was being done, naming the file, address or flag.
        what: String,
        /// Why.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// Something the caller must give is missing.
    #[error("{0}")]
    Missing(String),
}

impl ApiError {
    /// `what` failed because of `source`.
    pub(crate) fn failed(
        what: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> ApiError {
        ApiError::Failed {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// An error and its causes, `: `-separated: transport errors say little
/// at the top ("transport error") and what matters below.
struct Chain<'a>(&'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}
