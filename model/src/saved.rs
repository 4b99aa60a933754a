//! The last snapshot the API server gave, saved on the node: an agent
//! restarted while the API server cannot be reached starts from it, brings
//! its sessions up and advertises what it did before (graceful restart
//! covers the rest), instead of waiting with nothing.
//!
//! The file holds Secrets' passwords, so it is written 0600, through a
//! temporary file renamed into place (a crash mid-write leaves the last
//! complete file, never half of one).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::objects::Snapshot;
use crate::problem::Problem;
use crate::{KubeSource, Source};

/// The file's format; a file of another format is not read.
const FORMAT: u32 = 1;

/// What cannot be done with a saved snapshot, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    /// The file cannot be read (missing, unreadable).
    #[error("cannot read the saved snapshot {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a saved snapshot this agent understands.
    #[error("the saved snapshot {path} cannot be used: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file cannot be written.
    #[error("cannot save the snapshot to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedFile {
    format: u32,
    saved_at_unix_seconds: u64,
    snapshot: Snapshot,
}

/// Saves `snapshot` to `path` (0600, atomically).
pub fn save(path: &Path, snapshot: &Snapshot) -> Result<(), SavedError> {
    let write = |source| SavedError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = SavedFile {
        format: FORMAT,
        saved_at_unix_seconds: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        snapshot: snapshot.clone(),
    };
    let text = serde_json::to_vec(&file).map_err(|e| write(std::io::Error::other(e)))?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write)?;
    // `mode` applies to a new file only; a leftover one is made 0600 too.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(write)?;
    f.write_all(&text).map_err(write)?;
    f.sync_all().map_err(write)?;
    std::fs::rename(&tmp, path).map_err(write)?;
    // The rename itself survives a crash once the directory is synced.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write)?;
    }
    Ok(())
}

/// Whether two snapshots hold the same objects (the node's IPAM view, which
/// the agent fills in, aside): a resumed agent does not save again what it
/// read from its file.
pub fn same_objects(a: &Snapshot, b: &Snapshot) -> bool {
    let strip = |s: &Snapshot| Snapshot {
        local_ipam: Default::default(),
        ..s.clone()
    };
    strip(a) == strip(b)
}

/// Reads the snapshot saved at `path`, and when it was saved.
pub fn load(path: &Path) -> Result<(Snapshot, SystemTime), SavedError> {
    let text = std::fs::read(path).map_err(|source| SavedError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |reason: String| SavedError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let format = serde_json::from_slice::<serde_json::Value>(&text)
        .map_err(|e| invalid(format!("not JSON: {e}")))?
        .get("format")
        .and_then(serde_json::Value::as_u64);
    if format != Some(u64::from(FORMAT)) {
        return Err(invalid(format!(
            "format {format:?}, this agent reads format {FORMAT}"
        )));
    }
    let file: SavedFile = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
    let at = UNIX_EPOCH + Duration::from_secs(file.saved_at_unix_seconds);
    Ok((file.snapshot, at))
}

/// How long after every kind is listed the Secrets BGPPeers name may take
/// to be read before the API server's view is used without them (reading
/// one may not be allowed).
const SECRETS_LIMIT: Duration = Duration::from_secs(30);

/// The kube source started from a saved snapshot: the saved snapshot
/// first, then, once the API server has listed everything, its view.
/// Nothing partial in between: a kind not listed yet would withdraw
/// everything it holds.
pub struct Resumed {
    saved: Option<Snapshot>,
    live: KubeSource,
    listed_at: Option<std::time::Instant>,
    switched: bool,
    /// When the snapshot was saved, for the warnings.
    saved_at: String,
    warned: std::time::Instant,
}

/// How often an agent still planning from a saved snapshot says so.
const STILL_SAVED_EVERY: Duration = Duration::from_secs(30);

impl Resumed {
    /// `saved` (saved at `saved_at`) until `live` is ready.
    pub fn new(saved: Snapshot, saved_at: String, live: KubeSource) -> Resumed {
        Resumed {
            saved: Some(saved),
            live,
            listed_at: None,
            switched: false,
            saved_at,
            warned: std::time::Instant::now(),
        }
    }

    /// Whether the API server's view is complete enough to plan from.
    fn live_now(&mut self) -> bool {
        if self.switched {
            return true;
        }
        if self.warned.elapsed() >= STILL_SAVED_EVERY {
            self.warned = std::time::Instant::now();
            tracing::warn!(
                saved_at = %self.saved_at,
                missing = %self.live.missing().join(", "),
                "still planning from the saved snapshot: the API server has not listed everything yet (is it reachable, are the CRDs installed, may this account list them?)"
            );
        }
        if self.live.is_ready() {
            tracing::info!("the API server answers: planning from its objects again");
            self.switched = true;
        } else if self.live.is_listed() {
            let since = *self.listed_at.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= SECRETS_LIMIT {
                tracing::warn!(
                    "the Secrets BGPPeers name cannot be read; planning from the API server without them"
                );
                self.switched = true;
            }
        }
        self.switched
    }
}

impl Source for Resumed {
    fn poll(&mut self) -> Option<(Snapshot, Vec<Problem>)> {
        if let Some(saved) = self.saved.take() {
            return Some((saved, Vec::new()));
        }
        if !self.live_now() {
            return None;
        }
        self.live.poll()
    }

    fn changed(&mut self) -> BoxFuture<'_, ()> {
        if self.switched {
            return Source::changed(&mut self.live);
        }
        // The live source has not been read yet, so it always looks
        // changed: look at its readiness a few times a second instead.
        Box::pin(tokio::time::sleep(Duration::from_millis(200)))
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::objects::{Secret, Sensitive};

    #[test]
    fn a_saved_snapshot_reads_back_the_same_and_only_root_reads_it() {
        let dir = std::env::temp_dir().join(format!("petrel-saved-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("last-snapshot.json");
        let mut snap = Snapshot::default();
        let mut problems = Vec::new();
        crate::files::load_text(
            Path::new("objects.yaml"),
            "apiVersion: petrel.dev/v1alpha1\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: 65001}\n---\napiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: 192.0.2.1, asNumber: 65000, password: {secretKeyRef: {name: pw, key: tor}}}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {rack: a}}\nspec: {podCIDRs: [10.1.0.0/24]}\nstatus: {addresses: [{type: InternalIP, address: 192.0.2.10}]}\n",
            &mut snap,
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!((snap.peers.len(), snap.nodes.len()), (1, 1));
        snap.secrets.push(Secret {
            name: "pw".into(),
            data: [("tor".to_string(), b"s3cret".to_vec())].into(),
        });
        snap.files
            .insert("/etc/pw".into(), Ok(Sensitive("from a file".into())));
        snap.files.insert("/etc/gone".into(), Err("missing".into()));
        save(&path, &snap).expect("saved");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (back, at) = load(&path).expect("read back");
        assert_eq!(back, snap);
        assert!(at <= SystemTime::now());
        // Saved again over itself: still one complete file, no leftover.
        save(&path, &back).expect("saved again");
        assert_eq!(load(&path).expect("read").0, snap);
        assert!(!dir.join("last-snapshot.json.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_broken_or_foreign_file_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("petrel-saved-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("s.json");
        std::fs::write(&path, b"{\"format\": 1, \"snapsh").expect("written");
        let e = load(&path).expect_err("half a file").to_string();
        assert!(e.contains("s.json") && e.contains("not JSON"), "{e}");
        std::fs::write(&path, b"{\"format\": 9}").expect("written");
        let e = load(&path).expect_err("another format").to_string();
        assert!(e.contains("format Some(9)"), "{e}");
        let e = load(&dir.join("none.json"))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("none.json"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
