//! Blocks in one local JSON file, for a host or a lab without a cluster.
//!
//! Every change takes an exclusive lock on `<file>.lock`, reads the file,
//! checks the version the caller read, writes `<file>.tmp`, syncs it and
//! renames it over the file: a crash leaves the old state or the new, never
//! half of one, and several agents or CNI plugins on one host see each
//! other's writes in order. Reads take the lock shared.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crds::{IpamBlockSpec, block_name};
use ipam::pod::{Block, BlockStore, StoreError};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::convert::{from_spec, to_spec};

/// The state file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// The version the next write gets.
    next: u64,
    /// Blocks by name ([`block_name`]).
    blocks: BTreeMap<String, Stored>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    version: u64,
    spec: IpamBlockSpec,
}

/// The blocks of one host, in a file.
#[derive(Debug, Clone)]
pub struct FileBlocks {
    path: PathBuf,
}

impl FileBlocks {
    /// Blocks kept in `path` (it and its directory are made when first
    /// needed).
    pub fn new(path: impl Into<PathBuf>) -> FileBlocks {
        FileBlocks { path: path.into() }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sibling(&self, ext: &str) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(ext);
        PathBuf::from(name)
    }

    fn lock(&self, exclusive: bool) -> Result<File, StoreError> {
        let lock_path = self.sibling(".lock");
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io(&lock_path, e))?;
        if exclusive { f.lock() } else { f.lock_shared() }.map_err(|e| io(&lock_path, e))?;
        Ok(f)
    }

    fn read(&self) -> Result<State, StoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::Other(format!("IPAM state file {}: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io(&self.path, e)),
        }
    }

    fn write(&self, state: &State) -> Result<(), StoreError> {
        let tmp = self.sibling(".tmp");
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| StoreError::Other(format!("IPAM state: {e}")))?;
        let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| io(&tmp, e))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io(&self.path, e))
    }

    /// Under the exclusive lock: reads the state, lets `change` alter it
    /// (or refuse), writes it back.
    fn change(
        &self,
        change: impl FnOnce(&mut State) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let _lock = self.lock(true)?;
        let mut state = self.read()?;
        change(&mut state)?;
        state.next += 1;
        self.write(&state)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(FileBlocks) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(me))
            .await
            .map_err(|e| StoreError::Other(format!("IPAM state file: {e}")))?
    }
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Other(format!("{}: {e}", path.display()))
}

fn version(v: &str) -> Option<u64> {
    v.parse().ok()
}

impl BlockStore for FileBlocks {
    async fn list(&self) -> Result<Vec<(Block, String)>, StoreError> {
        self.blocking(|me| {
            let _lock = me.lock(false)?;
            let state = me.read()?;
            let mut out = Vec::with_capacity(state.blocks.len());
            for (name, s) in state.blocks {
                match from_spec(&s.spec) {
                    Ok(b) => out.push((b, s.version.to_string())),
                    Err(e) => tracing::warn!(
                        file = %me.path.display(),
                        block = %name,
                        "IPAM block skipped: {e}"
                    ),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn create(&self, block: &Block) -> Result<(), StoreError> {
        let spec = to_spec(block);
        let cidr = block.cidr;
        self.blocking(move |me| {
            me.change(|state| {
                let name = block_name(&cidr);
                if state.blocks.contains_key(&name) {
                    return Err(StoreError::Conflict(cidr));
                }
                let version = state.next;
                state.blocks.insert(name, Stored { version, spec });
                Ok(())
            })
        })
        .await
    }

    async fn update(&self, block: &Block, expected: &str) -> Result<(), StoreError> {
        let spec = to_spec(block);
        let cidr = block.cidr;
        let expected = version(expected);
        self.blocking(move |me| {
            me.change(|state| {
                let version = state.next;
                match state.blocks.get_mut(&block_name(&cidr)) {
                    Some(s) if Some(s.version) == expected => {
                        *s = Stored { version, spec };
                        Ok(())
                    }
                    _ => Err(StoreError::Conflict(cidr)),
                }
            })
        })
        .await
    }

    async fn delete(&self, cidr: IpNet, expected: &str) -> Result<(), StoreError> {
        let expected = version(expected);
        self.blocking(move |me| {
            me.change(|state| {
                let name = block_name(&cidr);
                match state.blocks.get(&name) {
                    Some(s) if Some(s.version) == expected => {
                        state.blocks.remove(&name);
                        Ok(())
                    }
                    _ => Err(StoreError::Conflict(cidr)),
                }
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::pod::{Family, Holder, Pool, Settings, allocate, release};

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("petrel-ipam-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }

    fn pool() -> Pool {
        Pool {
            name: "pods".into(),
            cidr: "10.244.0.0/24".parse().expect("cidr"),
            block_prefix: 28,
            selects_node: true,
            disabled: false,
            strict_affinity: false,
            allows_use: true,
        }
    }

    fn holder(i: usize) -> Holder {
        Holder {
            handle: format!("c{i}/eth0"),
            pod: None,
            node: "host".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_through_the_file_never_share_an_address() {
        let d = dir("concurrent");
        let path = d.0.join("state.json");
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = FileBlocks::new(&path);
            tasks.push(tokio::spawn(async move {
                allocate(
                    &store,
                    Family::V4,
                    &[pool()],
                    &holder(i),
                    10,
                    Settings::default(),
                )
                .await
            }));
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in tasks {
            let got = t.await.expect("task").expect("allocated");
            assert!(seen.insert(got.addr), "{} handed out twice", got.addr);
        }
        assert_eq!(seen.len(), 64);
        // Read back by another handle on the file: the same 64, in 5 blocks
        // of 15 (each block's first address is its gateway).
        let listed = FileBlocks::new(&path).list().await.expect("list");
        assert_eq!(listed.len(), 5);
        let held: usize = listed.iter().map(|(b, _)| b.allocations.len()).sum();
        assert_eq!(held, 64);
        // Idempotent DEL, then the address is free again.
        let store = FileBlocks::new(&path);
        let freed = release(
            &store,
            ipam::pod::Release::Handle("c7/eth0"),
            20,
            Settings::default(),
        )
        .await
        .expect("released");
        assert_eq!(freed.len(), 1);
        let again = release(
            &store,
            ipam::pod::Release::Handle("c7/eth0"),
            21,
            Settings::default(),
        )
        .await
        .expect("nothing to release is fine");
        assert!(again.is_empty());
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[tokio::test]
    async fn a_broken_state_file_is_an_error_naming_it() {
        let d = dir("broken");
        let path = d.0.join("state.json");
        std::fs::write(&path, b"{ not json").expect("write");
        let e = FileBlocks::new(&path).list().await.expect_err("broken");
        assert!(e.to_string().contains("state.json"), "{e}");
    }

    #[tokio::test]
    async fn stale_versions_are_refused() {
        let d = dir("stale");
        let store = FileBlocks::new(d.0.join("state.json"));
        let b = Block::new("10.0.0.0/28".parse().expect("cidr"), "p", "n", 0);
        store.create(&b).await.expect("created");
        assert_eq!(store.create(&b).await, Err(StoreError::Conflict(b.cidr)));
        let (_, v) = store.list().await.expect("list").remove(0);
        store.update(&b, &v).await.expect("first update");
        assert_eq!(
            store.update(&b, &v).await,
            Err(StoreError::Conflict(b.cidr))
        );
        assert_eq!(
            store.delete(b.cidr, &v).await,
            Err(StoreError::Conflict(b.cidr))
        );
        let (_, v) = store.list().await.expect("list").remove(0);
        store.delete(b.cidr, &v).await.expect("deleted");
        assert!(store.list().await.expect("list").is_empty());
    }
}
