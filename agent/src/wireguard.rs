//! WireGuard between nodes, for pools with `encapsulation: {type:
//! WireGuard}`: the node's key pair, its device, one peer per remote node
//! whose public key is known, and the routes to remote pods through the
//! device in a table of their own.
//!
//! - The private key lives in a file of the node's (mode 0600), made on
//!   first use; only the public key leaves it (the Node annotation
//!   [`crds::WIREGUARD_ANNOTATION`]). Replacing the file rotates the key:
//!   it is read again when it changes, and the new public key published.
//! - The device: the kernel's, made through rtnetlink and configured
//!   through generic netlink ([`route_sync::wireguard`]); or a userspace
//!   implementation (`wireguard-go`, `--wireguard-userspace`) started by
//!   the agent and configured through its UAPI socket. Both are told the
//!   same change ([`update`]), in their own encoding.
//! - Routing: remote pods' prefixes (the routes learned from each node, its
//!   pod CIDRs) `dev <wireguard>` in table [`WireGuardOptions::table`],
//!   looked up by the rule `not fwmark M lookup T` before the main table;
//!   the device marks its own encrypted packets with M, so they leave by
//!   the main table. With `wireguardEncryption: Required`, a node whose key
//!   is unknown gets `unreachable` routes there: no plaintext, ever.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ipnet::IpNet;
use route_sync::wireguard::{WgDevice, WgPeer, WgUpdate};
use route_sync::{Kernel, NextHop, Reconciler, Route, RouteKind, TunnelDevice, TunnelKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Persistent keepalive of every peer, in seconds: the usual value, and
/// what makes a peer written anew open its session at once.
const PERSISTENT_KEEPALIVE: u16 = 25;

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

/// What the device is told: our key, port and mark, and per peer (by
/// public key) its endpoint and allowed prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    private: [u8; 32],
    port: u16,
    fwmark: u32,
    peers: BTreeMap<[u8; 32], (IpAddr, Vec<IpNet>)>,
}

impl DeviceConfig {
    /// The configuration for these peers (those with a key).
    pub fn new(key: &KeyPair, port: u16, fwmark: u32, peers: &[Peer]) -> DeviceConfig {
        DeviceConfig {
            private: key.private,
            port,
            fwmark,
            peers: peers
                .iter()
                .filter_map(|p| {
                    let mut allowed: Vec<IpNet> = p.allowed.iter().map(IpNet::trunc).collect();
                    allowed.sort();
                    allowed.dedup();
                    Some((p.key?, (p.endpoint, allowed)))
                })
                .collect(),
        }
    }
}

/// What changes from `old` to `new`, `None` when nothing does. A new key,
/// port or mark (or no `old`) replaces everything; otherwise only the
/// peers that changed are written and those gone removed, so the others
/// keep their sessions.
pub fn update(old: Option<&DeviceConfig>, new: &DeviceConfig) -> Option<WgUpdate> {
    let whole =
        old.is_none_or(|o| (o.private, o.port, o.fwmark) != (new.private, new.port, new.fwmark));
    let peer = |k: &[u8; 32], (endpoint, allowed): &(IpAddr, Vec<IpNet>)| WgPeer {
        key: *k,
        remove: false,
        endpoint: Some(SocketAddr::new(*endpoint, new.port)),
        allowed: allowed.clone(),
        // A peer written anew (a new node, or a rotated key) gets a
        // keepalive at once: the handshake starts from this side too.
        keepalive: Some(PERSISTENT_KEEPALIVE),
    };
    let mut out = WgUpdate::default();
    match old.filter(|_| !whole) {
        None => {
            out.device = Some(WgDevice {
                private_key: new.private,
                port: new.port,
                fwmark: new.fwmark,
            });
            out.peers = new.peers.iter().map(|(k, v)| peer(k, v)).collect();
        }
        Some(old) => {
            for (k, v) in &new.peers {
                if old.peers.get(k) != Some(v) {
                    out.peers.push(peer(k, v));
                }
            }
            for k in old.peers.keys().filter(|k| !new.peers.contains_key(*k)) {
                out.peers.push(WgPeer {
                    key: *k,
                    remove: true,
                    endpoint: None,
                    allowed: Vec::new(),
                    keepalive: None,
                });
            }
            if out.peers.is_empty() {
                return None;
            }
        }
    }
    Some(out)
}

/// `update` as a UAPI `set` request (the userspace implementations'
/// protocol).
pub fn uapi_request(update: &WgUpdate) -> String {
    let mut out = String::from("set=1\n");
    if let Some(d) = &update.device {
        out.push_str(&format!(
            "private_key={}\nlisten_port={}\nfwmark={}\nreplace_peers=true\n",
            hex(&d.private_key),
            d.port,
            d.fwmark
        ));
    }
    for p in &update.peers {
        out.push_str(&format!("public_key={}\n", hex(&p.key)));
        if p.remove {
            out.push_str("remove=true\n");
            continue;
        }
        if let Some(e) = p.endpoint {
            out.push_str(&format!("endpoint={e}\n"));
        }
        if let Some(k) = p.keepalive {
            out.push_str(&format!("persistent_keepalive_interval={k}\n"));
        }
        out.push_str("replace_allowed_ips=true\n");
        for a in &p.allowed {
            out.push_str(&format!("allowed_ip={a}\n"));
        }
    }
    out.push('\n');
    out
}

/// What the WireGuard table says besides the peers under `Required`: the
/// WireGuard pools unreachable as a whole (what no more specific route
/// claims: a node whose key is unknown, a prefix learned through another
/// next hop, everything once the device is gone), and this node's own
/// blocks thrown back to the main table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailClosed {
    /// The WireGuard pools' CIDRs.
    pub pools: Vec<IpNet>,
    /// This node's own blocks (or pod CIDRs).
    pub own: Vec<IpNet>,
}

/// The routes of the WireGuard table: each keyed peer's prefixes through
/// the device (`ifindex`; `None`: there is no device); with `required`, the
/// other peers' prefixes unreachable, and [`FailClosed`] as it says.
pub fn table_routes(
    peers: &[Peer],
    ifindex: Option<u32>,
    table: u32,
    required: Option<&FailClosed>,
) -> Vec<Route> {
    let mut out = BTreeMap::new();
    let unreachable = |p: IpNet| {
        let mut r = Route::blackhole(p);
        r.kind = RouteKind::Unreachable;
        r
    };
    if let Some(f) = required {
        for p in &f.pools {
            out.insert(p.trunc(), unreachable(*p));
        }
        for p in &f.own {
            let mut r = Route::blackhole(*p);
            r.kind = RouteKind::Throw;
            out.insert(p.trunc(), r);
        }
    }

    for p in peers {
        for a in &p.allowed {
            let r = match (&p.key, ifindex, required.is_some()) {
                (Some(_), Some(i), _) => Route::unicast(
                    *a,
                    vec![NextHop {
                        gateway: None,
                        ifindex: Some(i),
                        weight: 1,
                        onlink: false,
                    }],
                ),
                (_, _, true) => unreachable(*a),
                (_, _, false) => continue,
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
    /// What the device was last told, successfully.
    configured: Option<DeviceConfig>,
    /// Whether something of ours may be in the kernel (an earlier pass's,
    /// or an earlier run's): swept once no pool uses WireGuard.
    swept: bool,
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
            // An earlier run may have left a table, a rule, a device.
            swept: true,
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
        required: Option<&FailClosed>,
        peers: &[Peer],
    ) -> Result<u32, String> {
        self.swept = true;
        let key = self.key()?;
        let name = self.opts.interface.clone();
        if self.opts.userspace.is_none() {
            self.kernel_device(kernel, mtu, address).await?;
        } else if kernel
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
        let config = DeviceConfig::new(&key, port, self.opts.fwmark, peers);
        if let Some(change) = update(self.configured.as_ref(), &config) {
            if self.opts.userspace.is_some() {
                uapi(&self.socket(), &uapi_request(&change)).await?;
            } else {
                route_sync::wireguard::set_device(&name, &change)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            tracing::info!(device = %name, peers = config.peers.len(), "WireGuard configured");
            self.configured = Some(config);
        }
        self.set_table(
            kernel,
            table_routes(peers, Some(index), self.opts.table, required),
        )
        .await?;
        Ok(index)
    }

    /// Without a device: the rule and `unreachable` routes for every
    /// peer's prefixes, so `Required` never falls back to plaintext.
    pub(crate) async fn fail_closed(
        &mut self,
        kernel: &Kernel,
        peers: &[Peer],
        required: &FailClosed,
    ) -> Result<(), String> {
        self.swept = true;
        self.set_table(
            kernel,
            table_routes(peers, None, self.opts.table, Some(required)),
        )
        .await
    }

    /// The rule in place, and the table's routes exactly `routes`.
    async fn set_table(&mut self, kernel: &Kernel, routes: Vec<Route>) -> Result<(), String> {
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
            r.set(routes);
        }
        Ok(())
    }

    /// With no pool using WireGuard: takes down what an earlier pass, or an
    /// earlier run of the agent, made (once; again only after a pass that
    /// made something).
    pub(crate) async fn sweep(&mut self, kernel: &Kernel) {
        if !self.swept {
            return;
        }
        self.swept = false;
        self.remove(kernel).await;
    }

    /// Takes everything down: table, rule, device.
    pub(crate) async fn remove(&mut self, kernel: &Kernel) {
        let r = match self.reconciler.take() {
            Some(r) => Some(r),
            // Routes left by an earlier run: a reconciler adopts them, and
            // its flush removes them.
            None => Reconciler::start(route_sync::Options {
                table: self.opts.table,
                protocol: self.protocol,
                ..route_sync::Options::default()
            })
            .await
            .ok(),
        };
        if let Some(r) = r {
            let _ = r.stop(true).await;
        }
        let _ = kernel
            .remove_fwmark_rule(self.opts.table, self.opts.fwmark)
            .await;
        if let Some(mut p) = self.process.take() {
            let _ = p.kill().await;
        }
        let _ = kernel.remove_link(&self.opts.interface).await;
        self.configured = None;
    }

    fn socket(&self) -> PathBuf {
        Path::new("/var/run/wireguard").join(format!("{}.sock", self.opts.interface))
    }

    /// The kernel's device, made if missing (or made again if a device of
    /// another kind has its name: a userspace one left behind); its
    /// configuration starts afresh when it is new.
    async fn kernel_device(
        &mut self,
        kernel: &Kernel,
        mtu: u32,
        address: Option<IpAddr>,
    ) -> Result<(), String> {
        let want = TunnelDevice {
            name: self.opts.interface.clone(),
            kind: TunnelKind::WireGuard,
            // WireGuard has no local address of its own: its endpoint is
            // the port, on every address.
            local: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            mac: None,
            mtu,
            address: address.map(IpNet::from),
        };
        let before = kernel.link_index(&want.name).await.ok().flatten();
        let (index, _) = kernel.ensure_tunnel(&want).await.map_err(|e| {
            format!(
                "{e} (does the kernel have the wireguard module? Without it, run the agent with --wireguard-userspace wireguard-go)"
            )
        })?;
        if before != Some(index) {
            // A device made (again) has no keys or peers yet.
            self.configured = None;
        }
        Ok(())
    }

    async fn start_device(&mut self) -> Result<(), String> {
        let Some(program) = self.opts.userspace.clone() else {
            return Err(format!(
                "{}: no userspace WireGuard to run",
                self.opts.interface
            ));
        };
        if let Some(mut p) = self.process.take() {
            let _ = p.kill().await;
        }
        // A socket left by an earlier run would look like the new one.
        let _ = std::fs::remove_file(self.socket());
        // Its messages go where the agent's go.
        let child = tokio::process::Command::new(&program)
            .arg("-f")
            .arg(&self.opts.interface)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
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

impl Drop for WireGuard {
    /// The userspace device goes with the agent (its process is killed), and
    /// so does its socket, which a killed `wireguard-go` leaves behind.
    fn drop(&mut self) {
        if let Some(p) = self.process.as_mut() {
            let _ = p.start_kill();
            let _ = std::fs::remove_file(self.socket());
        }
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

    fn uapi_update(old: Option<&DeviceConfig>, new: &DeviceConfig) -> Option<String> {
        update(old, new).map(|u| uapi_request(&u))
    }

    #[test]
    fn uapi_names_only_keyed_peers_and_sends_only_what_changed() {
        let key = KeyPair::from_private([7; 32]);
        let peers = [
            peer("a", Some([1; 32]), "10.80.3.0/24"),
            peer("b", None, "10.80.4.0/24"),
        ];
        let first = DeviceConfig::new(&key, 51820, 0x51820, &peers);
        let set = uapi_update(None, &first).expect("everything");
        assert!(set.starts_with("set=1\nprivate_key="), "{set}");
        assert!(
            set.contains("listen_port=51820\nfwmark=333856\nreplace_peers=true\n"),
            "{set}"
        );
        assert!(set.contains(&format!(
            "public_key={}\nendpoint=10.0.2.3:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.80.3.0/24\n",
            hex(&[1; 32])
        )));
        assert!(
            !set.contains("10.80.4.0"),
            "an unkeyed peer is no peer: {set}"
        );
        assert!(set.ends_with("\n\n"));
        assert_eq!(uapi_update(Some(&first), &first), None, "nothing to say");
        // Another peer's block: only that peer is written, no one replaced.
        let more = [
            peer("a", Some([1; 32]), "10.80.3.0/24"),
            peer("c", Some([3; 32]), "10.80.5.0/24"),
        ];
        let second = DeviceConfig::new(&key, 51820, 0x51820, &more);
        let set = uapi_update(Some(&first), &second).expect("a change");
        assert!(!set.contains("replace_peers"), "{set}");
        assert!(
            !set.contains(&hex(&[1; 32])),
            "an unchanged peer keeps its session: {set}"
        );
        assert!(set.contains(&hex(&[3; 32])), "{set}");
        let third = DeviceConfig::new(&key, 51820, 0x51820, &more[..1]);
        let set = uapi_update(Some(&second), &third).expect("a removal");
        assert!(
            set.contains(&format!("public_key={}\nremove=true\n", hex(&[3; 32]))),
            "{set}"
        );
        // A new key replaces everything.
        let rotated =
            DeviceConfig::new(&KeyPair::from_private([8; 32]), 51820, 0x51820, &more[..1]);
        assert!(
            uapi_update(Some(&third), &rotated)
                .expect("rotation")
                .contains("replace_peers=true")
        );
    }

    #[test]
    fn required_makes_the_pools_unreachable_but_for_keyed_peers_and_our_own_blocks() {
        let peers = [
            peer("a", Some([1; 32]), "10.80.3.0/24"),
            peer("b", None, "10.80.4.0/24"),
        ];
        let prefix = |s: &str| s.parse::<IpNet>().expect("prefix");
        let preferred = table_routes(&peers, Some(9), 51820, None);
        assert_eq!(preferred.len(), 1);
        assert_eq!(preferred[0].next_hops[0].ifindex, Some(9));
        let closed = FailClosed {
            pools: vec![prefix("10.80.0.0/16")],
            own: vec![prefix("10.80.1.0/24")],
        };
        let required = table_routes(&peers, Some(9), 51820, Some(&closed));
        let kind_of = |p: &str| {
            required
                .iter()
                .find(|r| r.prefix == prefix(p))
                .map(|r| r.kind)
        };
        assert_eq!(kind_of("10.80.3.0/24"), Some(RouteKind::Unicast));
        assert_eq!(kind_of("10.80.4.0/24"), Some(RouteKind::Unreachable));
        assert_eq!(kind_of("10.80.0.0/16"), Some(RouteKind::Unreachable));
        assert_eq!(kind_of("10.80.1.0/24"), Some(RouteKind::Throw));
        assert!(required.iter().all(|r| r.table == 51820));
        // No device: nothing goes through it, all stays closed.
        let gone = table_routes(&peers, None, 51820, Some(&closed));
        assert!(
            gone.iter().all(|r| r.kind != RouteKind::Unicast),
            "{gone:?}"
        );
    }
}
