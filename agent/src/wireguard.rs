//! WireGuard between nodes, for pools with `encapsulation: {type:
//! WireGuard}`: the node's key pair, its device, one peer per remote node
//! whose public key is known, and the routes to remote pods through the
//! device in a table of their own.
//!
//! - The private key lives in a file of the node's (mode 0600), made on
//!   first use; only the public key leaves it (the Node annotation
//!   [`crds::WIREGUARD_ANNOTATION`]). Replacing the file rotates the key:
//!   it is read again when it changes, and the new public key published.
//! - The device: a userspace implementation (`wireguard-go`) started by the
//!   agent and configured through its UAPI socket. The kernel's own
//!   WireGuard is configured through generic netlink, which this agent
//!   does not speak yet: without `--wireguard-userspace` the device is not
//!   made, and status says so.
//! - Routing: remote pods' prefixes (the routes learned from each node, its
//!   pod CIDRs) `dev <wireguard>` in table [`WireGuardOptions::table`],
//!   looked up by the rule `not fwmark M lookup T` before the main table;
//!   the device marks its own encrypted packets with M, so they leave by
//!   the main table. With `wireguardEncryption: Required`, a node whose key
//!   is unknown gets `unreachable` routes there: no plaintext, ever.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ipnet::IpNet;
use route_sync::{Kernel, NextHop, Reconciler, Route, RouteKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Settings of WireGuard on this node.
#[derive(Debug, Clone)]
pub struct WireGuardOptions {
    /// The private key's file (made, mode 0600, if missing).
    pub key_file: PathBuf,
    /// The device's name (unique per host: userspace implementations keep
    /// their sockets in `/var/run/wireguard`, shared by every namespace).
    pub interface: String,
    /// A userspace implementation to run for the device (`wireguard-go`);
    /// `None`: the kernel's.
    pub userspace: Option<PathBuf>,
    /// The routing table of the routes through the device.
    pub table: u32,
    /// The firewall mark of the device's own packets.
    pub fwmark: u32,
}

impl Default for WireGuardOptions {
    fn default() -> Self {
        WireGuardOptions {
            key_file: PathBuf::from("/var/lib/petrel/wireguard.key"),
            interface: "wg.petrel".into(),
            userspace: None,
            table: 51820,
            fwmark: 0x51820,
        }
    }
}

/// The rule's priority: before the main table (32766) and the local
/// table's usual place is left alone (0).
const RULE_PRIORITY: u32 = 99;

/// A node's key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    private: [u8; 32],
    /// The public key.
    pub public: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair {{ public: {} }}", encode(&self.public))
    }
}

/// A key in base64, as `wg` writes it.
pub fn encode(key: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

impl KeyPair {
    fn from_private(private: [u8; 32]) -> KeyPair {
        let secret = x25519_dalek::StaticSecret::from(private);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        KeyPair { private, public }
    }
}

/// Reads the private key from `path` (base64, as `wg genkey` writes it), or
/// makes one there (mode 0600) if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<KeyPair, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| format!("{}: not a base64 key: {e}", path.display()))?;
            let private = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                format!("{}: a key is 32 bytes, not {}", path.display(), bytes.len())
            })?;
            let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o077);
            if mode.is_ok_and(|m| m != 0) {
                tracing::warn!(file = %path.display(), "the WireGuard private key is readable by others; chmod 600 it");
            }
            Ok(KeyPair::from_private(private))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut private = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut private))
                .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
            // Clamped, as `wg genkey` does.
            private[0] &= 248;
            private[31] = (private[31] & 127) | 64;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            writeln!(f, "{}", encode(&private))
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::info!(file = %path.display(), "WireGuard key pair made");
            Ok(KeyPair::from_private(private))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// One remote node as a WireGuard peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node.
    pub node: String,
    /// Its public key, if it published one.
    pub key: Option<[u8; 32]>,
    /// Its underlay address.
    pub endpoint: IpAddr,
    /// The pod prefixes behind it.
    pub allowed: Vec<IpNet>,
}

/// The UAPI `set` request that makes the device say this: our key, port
/// and mark, exactly these peers (the others removed).
pub fn uapi_set(key: &KeyPair, port: u16, fwmark: u32, peers: &[Peer]) -> String {
    let mut out = format!(
        "set=1\nprivate_key={}\nlisten_port={port}\nfwmark={fwmark}\nreplace_peers=true\n",
        hex(&key.private)
    );
    for p in peers {
        let Some(k) = &p.key else { continue };
        let endpoint = match p.endpoint {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        };
        out.push_str(&format!(
            "public_key={}\nendpoint={endpoint}\nreplace_allowed_ips=true\n",
            hex(k)
        ));
        for a in &p.allowed {
            out.push_str(&format!("allowed_ip={}\n", a.trunc()));
        }
    }
    out.push('\n');
    out
}

/// The routes of the WireGuard table: each keyed peer's prefixes through
/// the device; with `required`, the unkeyed peers' prefixes unreachable.
pub fn table_routes(peers: &[Peer], ifindex: u32, table: u32, required: bool) -> Vec<Route> {
    let mut out = BTreeMap::new();
    for p in peers {
        for a in &p.allowed {
            let r = match (&p.key, required) {
                (Some(_), _) => Route::unicast(
                    *a,
                    vec![NextHop {
                        gateway: None,
                        ifindex: Some(ifindex),
                        weight: 1,
                        onlink: false,
                    }],
                ),
                (None, true) => {
                    let mut r = Route::blackhole(*a);
                    r.kind = RouteKind::Unreachable;
                    r
                }
                (None, false) => continue,
            };
            out.insert(a.trunc(), r);
        }
    }
    out.into_values()
        .map(|mut r| {
            r.table = table;
            r.normalize();
            r
        })
        .collect()
}

/// The WireGuard side of the overlay task.
pub(crate) struct WireGuard {
    opts: WireGuardOptions,
    protocol: u8,
    key: Option<(KeyPair, Option<SystemTime>)>,
    process: Option<tokio::process::Child>,
    reconciler: Option<Reconciler>,
    /// The last UAPI request that succeeded.
    configured: Option<String>,
}

impl WireGuard {
    pub(crate) fn new(opts: WireGuardOptions, protocol: u8) -> WireGuard {
        WireGuard {
            opts,
            protocol,
            key: None,
            process: None,
            reconciler: None,
            configured: None,
        }
    }

    /// The public key, once loaded.
    pub(crate) fn public_key(&self) -> Option<[u8; 32]> {
        self.key.as_ref().map(|(k, _)| k.public)
    }

    /// The device's name.
    pub(crate) fn interface(&self) -> &str {
        &self.opts.interface
    }

    /// The key, read again when its file changed.
    fn key(&mut self) -> Result<KeyPair, String> {
        let mtime = std::fs::metadata(&self.opts.key_file)
            .and_then(|m| m.modified())
            .ok();
        if let Some((k, seen)) = &self.key
            && mtime.is_some()
            && *seen == mtime
        {
            return Ok(k.clone());
        }
        let k = load_or_create(&self.opts.key_file)?;
        if self
            .key
            .as_ref()
            .is_some_and(|(old, _)| old.public != k.public)
        {
            tracing::info!(public = %encode(&k.public), "WireGuard key rotated");
            self.configured = None;
        }
        let mtime = std::fs::metadata(&self.opts.key_file)
            .and_then(|m| m.modified())
            .ok();
        self.key = Some((k.clone(), mtime));
        Ok(k)
    }

    /// Makes the device, its peers, the rule and the table say this; the
    /// device's index.
    pub(crate) async fn reconcile(
        &mut self,
        kernel: &Kernel,
        port: u16,
        mtu: u32,
        address: Option<IpAddr>,
        required: bool,
        peers: &[Peer],
    ) -> Result<u32, String> {
        let key = self.key()?;
        let name = self.opts.interface.clone();
        if kernel
            .link_index(&name)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            self.configured = None;
            self.start_device().await?;
        }
        let Some((index, _)) = kernel
            .configure_link(&name, mtu, address.map(IpNet::from))
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err(format!("{name}: the device went away"));
        };
        let request = uapi_set(&key, port, self.opts.fwmark, peers);
        if self.configured.as_ref() != Some(&request) {
            uapi(&self.socket(), &request).await?;
            tracing::info!(device = %name, peers = peers.iter().filter(|p| p.key.is_some()).count(), "WireGuard configured");
            self.configured = Some(request);
        }
        kernel
            .ensure_fwmark_rule(self.opts.table, self.opts.fwmark, RULE_PRIORITY)
            .await
            .map_err(|e| e.to_string())?;
        if self.reconciler.is_none() {
            let r = Reconciler::start(route_sync::Options {
                table: self.opts.table,
                protocol: self.protocol,
                ..route_sync::Options::default()
            })
            .await
            .map_err(|e| e.to_string())?;
            self.reconciler = Some(r);
        }
        if let Some(r) = &self.reconciler {
            r.set(table_routes(peers, index, self.opts.table, required));
        }
        Ok(index)
    }

    /// Without a device: the rule and `unreachable` routes for every
    /// peer's prefixes, so `Required` never falls back to plaintext.
    pub(crate) async fn fail_closed(
        &mut self,
        kernel: &Kernel,
        peers: &[Peer],
    ) -> Result<(), String> {
        kernel
            .ensure_fwmark_rule(self.opts.table, self.opts.fwmark, RULE_PRIORITY)
            .await
            .map_err(|e| e.to_string())?;
        if self.reconciler.is_none() {
            let r = Reconciler::start(route_sync::Options {
                table: self.opts.table,
                protocol: self.protocol,
                ..route_sync::Options::default()
            })
            .await
            .map_err(|e| e.to_string())?;
            self.reconciler = Some(r);
        }
        if let Some(r) = &self.reconciler {
            r.set(table_routes(peers, 0, self.opts.table, true));
        }
        Ok(())
    }

    /// Takes everything down: table, rule, device.
    pub(crate) async fn remove(&mut self, kernel: &Kernel) {
        if let Some(r) = self.reconciler.take() {
            let _ = r.stop(true).await;
        }
        let _ = kernel.remove_rules(self.opts.table).await;
        if let Some(mut p) = self.process.take() {
            let _ = p.kill().await;
        }
        let _ = kernel.remove_link(&self.opts.interface).await;
        self.configured = None;
    }

    fn socket(&self) -> PathBuf {
        Path::new("/var/run/wireguard").join(format!("{}.sock", self.opts.interface))
    }

    async fn start_device(&mut self) -> Result<(), String> {
        let Some(program) = self.opts.userspace.clone() else {
            return Err(format!(
                "{}: the kernel's WireGuard is configured through generic netlink, which this agent does not speak yet; run it with --wireguard-userspace wireguard-go",
                self.opts.interface
            ));
        };
        if let Some(mut p) = self.process.take() {
            let _ = p.kill().await;
        }
        let child = tokio::process::Command::new(&program)
            .arg("-f")
            .arg(&self.opts.interface)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        self.process = Some(child);
        // Its UAPI socket appears once the device is up.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.socket().exists() {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{} did not make {} within 10 s",
                    program.display(),
                    self.socket().display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(device = %self.opts.interface, program = %program.display(), "userspace WireGuard started");
        Ok(())
    }
}

/// One UAPI exchange: `request`, then the answer's `errno`.
async fn uapi(socket: &Path, request: &str) -> Result<(), String> {
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.ends_with(b"\n\n") {
                return Ok(());
            }
        }
    })
    .await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("{}: {e}", socket.display())),
        Err(_) => return Err(format!("{}: no answer within 5 s", socket.display())),
    }
    let text = String::from_utf8_lossy(&answer);
    match text.lines().find_map(|l| l.strip_prefix("errno=")) {
        Some("0") => Ok(()),
        Some(e) => Err(format!("WireGuard refused its configuration (errno {e})")),
        None => Err(format!("WireGuard's answer has no errno: {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_key_is_private_to_the_node_and_read_back_the_same() {
        let dir = std::env::temp_dir().join(format!("petrel-wg-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("wg.key");
        let k = load_or_create(&path).expect("made");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&path).expect("read"), k);
        std::fs::write(&path, "not a key\n").expect("write");
        assert!(load_or_create(&path).expect_err("bad").contains("base64"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_public_key_is_x25519_of_the_private_one() {
        // RFC 7748 section 6.1, Alice's key pair.
        let private: [u8; 32] = [
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2,
            0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5,
            0x1d, 0xb9, 0x2c, 0x2a,
        ];
        let public = KeyPair::from_private(private).public;
        assert_eq!(
            hex(&public),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    fn peer(node: &str, key: Option<[u8; 32]>, allowed: &str) -> Peer {
        Peer {
            node: node.into(),
            key,
            endpoint: "10.0.2.3".parse().expect("ip"),
            allowed: vec![allowed.parse().expect("prefix")],
        }
    }

    #[test]
    fn uapi_names_only_keyed_peers_and_required_drops_the_rest() {
        let key = KeyPair::from_private([7; 32]);
        let peers = [
            peer("a", Some([1; 32]), "10.80.3.0/24"),
            peer("b", None, "10.80.4.0/24"),
        ];
        let set = uapi_set(&key, 51820, 0x51820, &peers);
        assert!(set.starts_with("set=1\nprivate_key="), "{set}");
        assert!(
            set.contains("listen_port=51820\nfwmark=333856\nreplace_peers=true\n"),
            "{set}"
        );
        assert!(set.contains(&format!(
            "public_key={}\nendpoint=10.0.2.3:51820\n",
            hex(&[1; 32])
        )));
        assert!(set.contains("allowed_ip=10.80.3.0/24\n"), "{set}");
        assert!(
            !set.contains("10.80.4.0"),
            "an unkeyed peer is no peer: {set}"
        );
        assert!(set.ends_with("\n\n"));
        let preferred = table_routes(&peers, 9, 51820, false);
        assert_eq!(preferred.len(), 1);
        assert_eq!(preferred[0].next_hops[0].ifindex, Some(9));
        let required = table_routes(&peers, 9, 51820, true);
        assert_eq!(required.len(), 2);
        assert!(required.iter().any(|r| r.kind == RouteKind::Unreachable
            && r.prefix == "10.80.4.0/24".parse::<IpNet>().expect("prefix")));
        assert!(required.iter().all(|r| r.table == 51820));
    }
}
