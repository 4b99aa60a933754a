//! Installs the plugin and a network configuration on a host: what the
//! chart's init container runs (`petrel cni install`), and what an operator
//! of a host without a cluster can run once.
//!
//! Both files are written next to their place and renamed over it, so a
//! runtime reading the directory at that moment sees the old file or the
//! new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

/// The plugin's file name in the CNI bin directory (the `type` in the
/// network configuration).
pub const PLUGIN: &str = "petrel-ipam";

/// What to install.
#[derive(Debug, Clone)]
pub struct Install {
    /// The plugin binary to copy.
    pub plugin: PathBuf,
    /// The host's CNI bin directory (`/opt/cni/bin`).
    pub bin_dir: PathBuf,
    /// The host's CNI configuration directory (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// The configuration's file name (`10-petrel.conflist`: runtimes take
    /// the first in lexical order).
    pub conf_name: String,
    /// The network's name.
    pub network: String,
    /// The main plugin that runs `petrel-ipam` (`ptp` or `bridge`).
    pub main_plugin: String,
    /// The agent's socket, as the plugin on the host sees it.
    pub socket: PathBuf,
    /// The pods' MTU (`None`: the main plugin's default).
    pub mtu: Option<u32>,
}

/// Why the installation failed: the path and the error.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct InstallError {
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename, with `mode`.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(at(dir))?;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".petrel-tmp");
    let tmp = dir.join(name);
    let mut f = std::fs::File::create(&tmp).map_err(at(&tmp))?;
    f.write_all(bytes).map_err(at(&tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(at(&tmp))?;
    f.sync_all().map_err(at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(at(path))
}

/// The network configuration list.
pub fn conflist(i: &Install) -> serde_json::Value {
    let mut main = json!({
        "type": i.main_plugin,
        "ipam": {"type": PLUGIN, "socket": i.socket},
    });
    if let Some(mtu) = i.mtu {
        main["mtu"] = json!(mtu);
    }
    if i.main_plugin == "bridge" {
        // The bridge holds each block's gateway and routes for the pods.
        main["bridge"] = json!("petrel0");
        main["isGateway"] = json!(true);
    }
    json!({
        "cniVersion": "1.0.0",
        "name": i.network,
        "plugins": [main, {"type": "portmap", "capabilities": {"portMappings": true}}],
    })
}

/// Copies the plugin and writes the configuration; the two paths written.
pub fn install(i: &Install) -> Result<(PathBuf, PathBuf), InstallError> {
    let bytes = std::fs::read(&i.plugin).map_err(at(&i.plugin))?;
    let bin = i.bin_dir.join(PLUGIN);
    replace(&bin, &bytes, 0o755)?;
    let conf = i.conf_dir.join(&i.conf_name);
    let text = serde_json::to_vec_pretty(&conflist(i)).unwrap_or_default();
    replace(&conf, &text, 0o644)?;
    Ok((bin, conf))
}

/// Sets the pods' MTU in a network configuration list already installed:
/// the `mtu` of each plugin that makes the pod's interface (one with an
/// `ipam` section). Nothing is written when it says that already; the file
/// is replaced whole, as [`install`] writes it. Whether it was written.
pub fn set_mtu(path: &Path, mtu: u32) -> Result<bool, InstallError> {
    let bytes = std::fs::read(path).map_err(at(path))?;
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| InstallError {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    let mut changed = false;
    if let Some(plugins) = v
        .get_mut("plugins")
        .and_then(serde_json::Value::as_array_mut)
    {
        for p in plugins.iter_mut().filter(|p| p.get("ipam").is_some()) {
            if p["mtu"] != json!(mtu) {
                p["mtu"] = json!(mtu);
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(false);
    }
    let text = serde_json::to_vec_pretty(&v).unwrap_or_default();
    replace(path, &text, 0o644).map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mtu_is_set_on_the_plugin_that_makes_the_interface() {
        let d = std::env::temp_dir().join(format!("petrel-cni-mtu-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        let path = d.join("10-petrel.conflist");
        let i = Install {
            plugin: d.join("p"),
            bin_dir: d.clone(),
            conf_dir: d.clone(),
            conf_name: "10-petrel.conflist".into(),
            network: "n".into(),
            main_plugin: "ptp".into(),
            socket: "/run/petrel/ipam.sock".into(),
            mtu: None,
        };
        std::fs::write(&path, serde_json::to_vec(&conflist(&i)).expect("json")).expect("write");
        assert!(set_mtu(&path, 1450).expect("set"));
        assert!(!set_mtu(&path, 1450).expect("again"), "nothing to write");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(v["plugins"][0]["mtu"], 1450);
        assert!(
            v["plugins"][1].get("mtu").is_none(),
            "portmap makes no interface"
        );
        std::fs::write(&path, b"{not json").expect("write");
        let e = set_mtu(&path, 1450).expect_err("broken file");
        assert!(e.to_string().contains("10-petrel.conflist"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn installs_atomically_and_again_over_itself() {
        let d = std::env::temp_dir().join(format!("petrel-cni-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        let plugin = d.join("src-plugin");
        std::fs::write(&plugin, b"#!/bin/true\n").expect("plugin");
        let i = Install {
            plugin,
            bin_dir: d.join("opt/cni/bin"),
            conf_dir: d.join("etc/cni/net.d"),
            conf_name: "10-petrel.conflist".into(),
            network: "k8s-pod-network".into(),
            main_plugin: "ptp".into(),
            socket: "/run/petrel/ipam.sock".into(),
            mtu: Some(1450),
        };
        for _ in 0..2 {
            let (bin, conf) = install(&i).expect("installed");
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&bin).expect("bin").permissions().mode();
            assert_eq!(mode & 0o777, 0o755);
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&conf).expect("conf")).expect("json");
            assert_eq!(v["plugins"][0]["type"], "ptp");
            assert_eq!(v["plugins"][0]["ipam"]["type"], "petrel-ipam");
            assert_eq!(v["plugins"][0]["mtu"], 1450);
        }
        let leftovers: Vec<_> = std::fs::read_dir(d.join("etc/cni/net.d"))
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".petrel-tmp"))
            .collect();
        assert!(leftovers.is_empty());
        let e = install(&Install {
            plugin: d.join("missing"),
            ..i
        })
        .expect_err("no plugin");
        assert!(e.to_string().contains("missing"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
