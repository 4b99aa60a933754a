//! The desired state petrel works from, typed, and where it comes from.
//!
//! - [`objects`]: what petrel needs of each object (Nodes, Services,
//!   EndpointSlices, Secrets, the `petrel.dev` kinds) and the [`Snapshot`] of
//!   all of them at one moment.
//! - [`problem`]: what is wrong with an object ([`FieldError`], [`Problem`]).
//! - [`parse`]: one object, as JSON, into the snapshot; both sources use it.
//! - [`files`]: the file source, a directory of YAML objects.
//! - [`kube`]: the kube source, reflectors on the API server.
//!
//! Both sources implement [`Source`]. A source also reads what objects refer
//! to outside themselves (password files), so the planner reads nothing.

use std::collections::BTreeMap;
use std::path::Path;

use futures::future::BoxFuture;

pub mod files;
pub mod kube;
mod kube_parsed;
mod kube_secrets;
pub mod objects;
pub mod parse;
pub mod problem;
pub mod saved;

pub use files::FileSource;
pub use kube::KubeSource;
pub use objects::{
    Endpoint, EndpointSlice, LocalIpam, Named, Node, Origin, Secret, Sensitive, Service, Snapshot,
    TrafficPolicy, Vtep, format_mac, parse_mac,
};
pub use parse::add_object;
pub use problem::{FieldError, Problem};

/// Where desired state comes from.
pub trait Source: Send {
    /// A new snapshot, and what was wrong in it, when the desired state
    /// changed since the last one.
    fn poll(&mut self) -> Option<(Snapshot, Vec<Problem>)>;

    /// Waits for a reason to look again: a change, or the poll interval.
    fn changed(&mut self) -> BoxFuture<'_, ()>;
}

/// Reads the files the snapshot's objects name (`BGPPeer.spec.password.file`,
/// `BFDProfile.spec.authentication.secret.file`),
/// relative paths from `base`, into [`Snapshot::files`].
pub fn read_referenced_files(snap: &mut Snapshot, base: &Path) {
    let mut named: Vec<String> = snap
        .peers
        .iter()
        .filter_map(|p| p.spec.password.as_ref()?.file.clone())
        .collect();
    named.extend(snap.bfd_profiles.iter().filter_map(|p| {
        p.spec
            .authentication
            .as_ref()?
            .secret
            .as_ref()?
            .file
            .clone()
    }));
    snap.files = read_files(named, base);
}

/// Reads `files` (relative paths from `base`): each one's text, or why it
/// cannot be read.
pub fn read_files(
    files: impl IntoIterator<Item = String>,
    base: &Path,
) -> BTreeMap<String, Result<Sensitive, String>> {
    files
        .into_iter()
        .map(|f| {
            let path = base.join(&f);
            let text = std::fs::read_to_string(&path)
                .map(|t| Sensitive(t.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| format!("cannot read {}: {e}", path.display()));
            (f, text)
        })
        .collect()
}
