//! A small lab for interop tests: network namespaces joined by veth pairs,
//! real routing daemons in them, and `petrel agent`. Everything a [`Lab`]
//! creates is removed when it is dropped, also when a test panics.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a command and returns its output; panics with its stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `f` every 100 ms until it is true or `secs` pass; panics with `what`
/// and the last diagnostic on timeout.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while Instant::now() < deadline {
        match f() {
            Ok(()) => return,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {secs}s waiting for {what}: {last}");
}

/// The YAML objects of one node: its BGPConfiguration, its Node (pod CIDRs
/// 10.244.1.0/24 and fd00:244:1::/64, the given InternalIPs) and `peers`.
pub fn petrel_yaml(asn: u32, router_id: &str, node_ips: &[&str], peers: &str) -> String {
    let addrs: Vec<String> = node_ips
        .iter()
        .map(|ip| format!("{{type: InternalIP, address: \"{ip}\"}}"))
        .collect();
    format!(
        r#"apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {{name: default}}
spec: {{asNumber: {asn}, routerID: {router_id}}}
---
apiVersion: v1
kind: Node
metadata: {{name: node-1}}
spec: {{podCIDRs: [10.244.1.0/24, "fd00:244:1::/64"]}}
status: {{addresses: [{}]}}
---
{peers}"#,
        addrs.join(", ")
    )
}

/// A running petrel agent.
pub struct Petrel {
    /// Its API socket.
    pub socket: PathBuf,
    /// Its configuration directory.
    pub dir: PathBuf,
    /// Its log.
    pub log: PathBuf,
    /// The namespace it runs in.
    pub ns: String,
}

impl Petrel {
    /// `petrel peers -o json`.
    pub fn peers(&self) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(["peers", "-o", "json", "--socket"])
            .arg(&self.socket)
            .output()
            .expect("petrel peers runs");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The peer entry for an address.
    pub fn peer(&self, address: &str) -> Option<Value> {
        self.peers()
            .as_array()?
            .iter()
            .find(|p| p["address"] == address)
            .cloned()
    }

    /// `petrel rib -o json [ARGS]`.
    pub fn rib(&self, args: &[&str]) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(["rib", "-o", "json", "--socket"])
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("petrel rib runs");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The best path of a prefix, if petrel has one.
    pub fn best(&self, prefix: &str) -> Option<Value> {
        let rib = self.rib(&[prefix]);
        rib.as_array()?
            .iter()
            .find(|r| r["prefix"] == prefix)?
            .get("paths")?
            .as_array()?
            .iter()
            .find(|p| p["best"] == true)
            .cloned()
    }

    /// Waits for the session with `address` to be Established.
    pub fn wait_established(&self, address: &str, secs: u64) {
        wait_until(
            secs,
            &format!("petrel's session with {address}"),
            || match self.peer(address) {
                Some(p) if p["state"] == "Established" => Ok(()),
                Some(p) => Err(format!(
                    "state {} last error {}",
                    p["state"], p["last_error"]
                )),
                None => Err(format!("no peer {address}; log:\n{}", self.log_tail())),
            },
        );
    }

    /// Waits for petrel to hold a best path for `prefix`.
    pub fn wait_route(&self, prefix: &str, secs: u64) -> Value {
        let mut found = None;
        wait_until(secs, &format!("{prefix} in petrel's RIB"), || {
            match self.best(prefix) {
                Some(p) => {
                    found = Some(p);
                    Ok(())
                }
                None => Err(self.rib(&[]).to_string()),
            }
        });
        found.expect("set when Ok")
    }

    /// Replaces the configuration file (the agent picks it up without a restart).
    pub fn reconfigure(&self, yaml: &str) {
        let tmp = self.dir.join(".petrel.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, self.dir.join("petrel.yaml")).expect("replace config");
    }

    /// `ip -j route show proto 201` (both families) in the agent's namespace.
    pub fn kernel_routes(&self) -> Vec<Value> {
        let mut all = Vec::new();
        for fam in ["-4", "-6"] {
            let o = Command::new("ip")
                .args(["-n", &self.ns, "-j", fam, "route", "show", "proto", "201"])
                .output()
                .expect("ip route");
            if let Ok(Value::Array(v)) = serde_json::from_slice(&o.stdout) {
                all.extend(v);
            }
        }
        all
    }

    /// The kernel route petrel installed for `dst`, if any.
    pub fn kernel_route(&self, dst: &str) -> Option<Value> {
        self.kernel_routes().into_iter().find(|r| r["dst"] == dst)
    }

    /// The end of the agent's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Network namespaces, processes and files of one test.
pub struct Lab {
    /// Short unique tag, used in names.
    pub tag: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    dirs: Vec<PathBuf>,
    /// Scratch directory of this lab.
    pub root: PathBuf,
}

impl Lab {
    /// A new, empty lab. Requires root.
    pub fn new(name: &str) -> Lab {
        assert!(
            unsafe_free_is_root(),
            "interop tests need root (network namespaces); run them as CI does, via .ci/run"
        );
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{name}{}{n}", std::process::id() % 10000);
        let root = std::env::temp_dir().join(format!("petrel-lab-{tag}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("lab dir");
        Lab {
            tag,
            namespaces: Vec::new(),
            children: Vec::new(),
            dirs: vec![root.clone()],
            root,
        }
    }

    /// Creates a namespace (loopback up) and returns its name.
    pub fn ns(&mut self, short: &str) -> String {
        let name = format!("pt{}{short}", self.tag);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        self.namespaces.push(name.clone());
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// Joins two namespaces with a veth pair named `ifname` on both sides and
    /// gives each side its addresses (CIDR strings).
    pub fn link(&mut self, a: &str, b: &str, ifname: &str, addrs_a: &[&str], addrs_b: &[&str]) {
        run(
            "ip",
            &[
                "link", "add", ifname, "netns", a, "type", "veth", "peer", "name", ifname, "netns",
                b,
            ],
        );
        for (ns, addrs) in [(a, addrs_a), (b, addrs_b)] {
            for addr in addrs {
                let mut args = vec!["-n", ns, "addr", "add", addr, "dev", ifname];
                if addr.contains(':') {
                    // Skip duplicate address detection so IPv6 works at once.
                    args.push("nodad");
                }
                run("ip", &args);
            }
            run("ip", &["-n", ns, "link", "set", ifname, "up"]);
        }
    }

    /// Starts a process inside a namespace, keeping it for cleanup; output
    /// goes to `log`.
    pub fn spawn(
        &mut self,
        ns: &str,
        label: &str,
        program: &str,
        args: &[&str],
        log: &Path,
    ) -> u32 {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let pid = child.id();
        self.children.push((label.to_string(), child));
        pid
    }

    /// Stops a process started with [`Lab::spawn`] (SIGKILL), by label.
    pub fn kill(&mut self, label: &str) {
        for (l, c) in &mut self.children {
            if l == label {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.children.retain(|(l, _)| l != label);
    }

    /// Stops a process with SIGTERM and waits (bounded) for it to exit.
    pub fn terminate(&mut self, label: &str) {
        for (l, c) in &mut self.children {
            if l == label {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .output();
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.children.retain(|(l, _)| l != label);
    }

    /// Starts `petrel agent` in `ns` with one YAML file.
    pub fn petrel(&mut self, ns: &str, node: &str, yaml: &str) -> Petrel {
        self.petrel_with(ns, node, yaml, &[])
    }

    /// Starts `petrel agent` in `ns` with one YAML file and extra arguments.
    pub fn petrel_with(&mut self, ns: &str, node: &str, yaml: &str, extra: &[&str]) -> Petrel {
        let dir = self.root.join(format!("petrel-{ns}"));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("petrel.yaml"), yaml).expect("config");
        let socket = self.root.join(format!("{ns}.sock"));
        let log = self.root.join(format!("petrel-{ns}.log"));
        let src = format!("files:{}", dir.display());
        let sock = socket.display().to_string();
        // A short initial hold, so tests see the first complete sync too.
        let mut args = vec![
            "agent",
            "--source",
            &src,
            "--node",
            node,
            "--api-socket",
            &sock,
            "--poll-ms",
            "200",
            "--fib-initial-delay",
            "2",
        ];
        args.extend_from_slice(extra);
        self.spawn(
            ns,
            &format!("petrel-{ns}"),
            env!("CARGO_BIN_EXE_petrel"),
            &args,
            &log,
        );
        Petrel {
            socket,
            dir,
            log,
            ns: ns.to_string(),
        }
    }

    /// Starts FRR (zebra and bgpd) in `ns` with an integrated configuration.
    pub fn frr(&mut self, ns: &str, config: &str) {
        let run_dir = PathBuf::from(format!("/var/run/frr/{ns}"));
        std::fs::create_dir_all(&run_dir).expect("FRR run dir");
        self.dirs.push(run_dir.clone());
        let dir = self.root.join(format!("frr-{ns}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("frr.conf");
        std::fs::write(&conf, config).expect("frr.conf");
        run(
            "chown",
            &[
                "-R",
                "frr:frr",
                &run_dir.display().to_string(),
                &dir.display().to_string(),
            ],
        );
        let zlog = dir.join("zebra.log");
        self.spawn(
            ns,
            &format!("zebra-{ns}"),
            "/usr/lib/frr/zebra",
            &["-N", ns, "-i", &dir.join("zebra.pid").display().to_string()],
            &zlog,
        );
        wait_until(10, "zebra's socket", || {
            run_dir
                .join("zserv.api")
                .exists()
                .then_some(())
                .ok_or_else(|| "not yet".into())
        });
        self.start_frr_bgpd(ns);
    }

    /// (Re)starts FRR's bgpd in `ns` (zebra must be running).
    pub fn start_frr_bgpd(&mut self, ns: &str) {
        let dir = self.root.join(format!("frr-{ns}"));
        let conf = dir.join("frr.conf").display().to_string();
        let pid = dir.join("bgpd.pid").display().to_string();
        self.spawn(
            ns,
            &format!("bgpd-{ns}"),
            "/usr/lib/frr/bgpd",
            &["-N", ns, "-f", &conf, "-i", &pid],
            &dir.join("bgpd.log"),
        );
        wait_until(10, "bgpd's vty", || {
            let out = Command::new("vtysh")
                .args(["-N", ns, "-c", "show bgp summary json"])
                .output();
            match out {
                Ok(o) if o.status.success() => Ok(()),
                _ => Err("vtysh cannot reach bgpd yet".into()),
            }
        });
    }

    /// Starts BIRD 2 in `ns`; returns its control socket.
    pub fn bird(&mut self, ns: &str, config: &str) -> PathBuf {
        let dir = self.root.join(format!("bird-{ns}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, config).expect("bird.conf");
        let sock = dir.join("bird.ctl");
        let (c, s, p) = (
            conf.display().to_string(),
            sock.display().to_string(),
            dir.join("bird.pid").display().to_string(),
        );
        self.spawn(
            ns,
            &format!("bird-{ns}"),
            "bird",
            &["-f", "-c", &c, "-s", &s, "-P", &p],
            &dir.join("bird.log"),
        );
        wait_until(10, "BIRD's control socket", || {
            sock.exists().then_some(()).ok_or_else(|| "not yet".into())
        });
        sock
    }

    /// Starts gobgpd in `ns` with a TOML configuration.
    pub fn gobgp(&mut self, ns: &str, config: &str) {
        let dir = self.root.join(format!("gobgp-{ns}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("gobgpd.toml");
        std::fs::write(&conf, config).expect("gobgpd.toml");
        let c = conf.display().to_string();
        self.spawn(
            ns,
            &format!("gobgpd-{ns}"),
            "gobgpd",
            &["-f", &c, "-t", "toml", "--api-hosts", "127.0.0.1:50051"],
            &dir.join("gobgpd.log"),
        );
        wait_until(10, "GoBGP's API", || {
            let o = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "gobgp",
                    "-u",
                    "127.0.0.1",
                    "-p",
                    "50051",
                    "global",
                ])
                .output();
            match o {
                Ok(o) if o.status.success() => Ok(()),
                _ => Err("not yet".into()),
            }
        });
    }

    /// Starts ExaBGP in `ns`; `config` is its configuration file.
    pub fn exabgp(&mut self, ns: &str, config: &str) -> PathBuf {
        let dir = self.root.join(format!("exabgp-{ns}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("exabgp.conf");
        std::fs::write(&conf, config).expect("exabgp.conf");
        let c = conf.display().to_string();
        let log = dir.join("exabgp.log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "exabgp", &c])
            .env("exabgp.daemon.user", "root")
            .env("exabgp.daemon.drop", "false")
            .env("exabgp.log.destination", "stdout")
            .env("exabgp.api.cli", "false")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start exabgp");
        self.children.push((format!("exabgp-{ns}"), child));
        dir
    }

    /// `vtysh -N NS -c CMD`.
    pub fn vtysh(&self, ns: &str, cmd: &str) -> String {
        let o = Command::new("vtysh")
            .args(["-N", ns, "-c", cmd])
            .output()
            .expect("vtysh");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `vtysh ... json` parsed.
    pub fn vtysh_json(&self, ns: &str, cmd: &str) -> Value {
        serde_json::from_str(&self.vtysh(ns, cmd)).unwrap_or(Value::Null)
    }

    /// `birdc -s SOCK CMD`.
    pub fn birdc(&self, sock: &Path, cmd: &str) -> String {
        let o = Command::new("birdc")
            .arg("-s")
            .arg(sock)
            .args(cmd.split_whitespace())
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `gobgp ARGS` inside `ns`.
    pub fn gobgp_cli(&self, ns: &str, args: &[&str]) -> String {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
                "50051",
            ])
            .args(args)
            .output()
            .expect("gobgp");
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    }
}

fn unsafe_free_is_root() -> bool {
    // Reading our own status avoids a libc dependency for geteuid.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Daemons that forked away from us (none should) die with their namespace's pids.
        for ns in &self.namespaces {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).output();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        if std::env::var_os("PETREL_KEEP_LAB").is_none() {
            for d in &self.dirs {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}
