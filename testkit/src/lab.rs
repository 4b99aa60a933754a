//! [`Lab`]: the network namespaces, processes and files of one test, all
//! removed when it is dropped (also when the test panics), and [`Petrel`],
//! a `petrel agent` running in one of them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Error;
use crate::cmd::{is_root, log_tail, must_run, wait_until};
use crate::daemons::{self, Spawn};
use crate::netns;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running petrel agent.
#[derive(Debug, Clone)]
pub struct Petrel {
    /// The `petrel` binary.
    pub bin: PathBuf,
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
    /// `petrel ARGS -o json --socket SOCKET`, parsed (`Null` if it fails).
    fn json(&self, command: &str, args: &[&str]) -> Value {
        Command::new(&self.bin)
            .args([command, "-o", "json", "--socket"])
            .arg(&self.socket)
            .args(args)
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or(Value::Null)
    }

    /// `petrel peers -o json`.
    pub fn peers(&self) -> Value {
        self.json("peers", &[])
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
        self.json("rib", args)
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
        found.unwrap_or(Value::Null)
    }

    /// Replaces the configuration file (the agent picks it up without a
    /// restart).
    pub fn reconfigure(&self, yaml: &str) {
        let tmp = self.dir.join(".petrel.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, self.dir.join("petrel.yaml")).expect("replace config");
    }

    /// `ip -j route show proto 201` (both families) in the agent's namespace.
    pub fn kernel_routes(&self) -> Vec<Value> {
        let mut all = Vec::new();
        for fam in ["-4", "-6"] {
            if let Ok(out) = crate::run(
                "ip",
                &["-n", &self.ns, "-j", fam, "route", "show", "proto", "201"],
            ) && let Ok(Value::Array(v)) = serde_json::from_str(&out)
            {
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
        log_tail(&self.log, 20)
    }
}

/// Network namespaces, processes and files of one test.
#[derive(Debug)]
pub struct Lab {
    /// Short unique tag, used in names.
    pub tag: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    dirs: Vec<PathBuf>,
    /// Scratch directory of this lab.
    pub root: PathBuf,
    petrel: Option<PathBuf>,
}

impl Spawn for Lab {
    fn spawn(&mut self, label: &str, ns: &str, argv: &[String], log: &Path) -> Result<(), Error> {
        let Some((program, args)) = argv.split_first() else {
            return Err(Error::new(format!("start {label}"), "no program given"));
        };
        let file = std::fs::File::create(log)
            .map_err(|e| Error::new(format!("create {}", log.display()), e))?;
        let out = file
            .try_clone()
            .map_err(|e| Error::new(format!("open {}", log.display()), e))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(file)
            .spawn()
            .map_err(|e| Error::new(format!("start {program}"), e))?;
        self.children.push((label.to_string(), child));
        Ok(())
    }
}

impl Lab {
    /// A new, empty lab. Requires root.
    pub fn new(name: &str) -> Lab {
        assert!(
            is_root(),
            "these tests need root (network namespaces); run them as CI does, via .ci/run"
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
            petrel: None,
        }
    }

    /// The `petrel` binary [`Lab::petrel`] starts (a test passes
    /// `env!("CARGO_BIN_EXE_petrel")`).
    pub fn with_petrel(mut self, bin: impl Into<PathBuf>) -> Lab {
        self.petrel = Some(bin.into());
        self
    }

    /// Creates a namespace (loopback up) and returns its name.
    pub fn ns(&mut self, short: &str) -> String {
        let name = format!("pt{}{short}", self.tag);
        netns::create(&name).unwrap_or_else(|e| panic!("{e}"));
        self.namespaces.push(name.clone());
        name
    }

    /// Joins two namespaces with a veth pair named `ifname` on both sides and
    /// gives each side its addresses (CIDR strings).
    pub fn link(&mut self, a: &str, b: &str, ifname: &str, addrs_a: &[&str], addrs_b: &[&str]) {
        netns::veth(a, b, ifname, addrs_a, addrs_b).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts a process inside a namespace, keeping it for cleanup; output
    /// goes to `log`. Returns its pid.
    pub fn spawn(
        &mut self,
        ns: &str,
        label: &str,
        program: &str,
        args: &[&str],
        log: &Path,
    ) -> u32 {
        let mut argv = vec![program.to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        Spawn::spawn(self, label, ns, &argv, log).unwrap_or_else(|e| panic!("{e}"));
        self.children.last().map(|(_, c)| c.id()).unwrap_or(0)
    }

    /// Keeps a process the test started itself, for cleanup.
    pub fn adopt(&mut self, label: &str, child: Child) {
        self.children.push((label.to_string(), child));
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

    /// Starts `petrel agent` in `ns` with one YAML file and extra arguments;
    /// its label is `petrel-NS`.
    pub fn petrel_with(&mut self, ns: &str, node: &str, yaml: &str, extra: &[&str]) -> Petrel {
        let bin = self
            .petrel
            .clone()
            .expect("Lab::with_petrel names the petrel binary");
        let dir = self.root.join(format!("petrel-{ns}"));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("petrel.yaml"), yaml).expect("config");
        let socket = self.root.join(format!("{ns}.sock"));
        let log = self.root.join(format!("petrel-{ns}.log"));
        let src = format!("files:{}", dir.display());
        let sock = socket.display().to_string();
        let bin_text = bin.display().to_string();
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
        self.spawn(ns, &format!("petrel-{ns}"), &bin_text, &args, &log);
        Petrel {
            bin,
            socket,
            dir,
            log,
            ns: ns.to_string(),
        }
    }

    /// Starts FRR (zebra and bgpd) in `ns` with an integrated configuration.
    pub fn frr(&mut self, ns: &str, config: &str) {
        let dir = self.root.join(format!("frr-{ns}"));
        // Remembered before starting: removed on drop even if FRR fails.
        self.dirs.push(daemons::frr_run_dir(ns));
        daemons::start_frr(self, ns, &dir, config).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts FRR's bfdd in `ns` beside the zebra and bgpd [`Lab::frr`]
    /// started, from the same configuration.
    pub fn start_frr_bfdd(&mut self, ns: &str) {
        let dir = self.root.join(format!("frr-{ns}"));
        daemons::start_frr_bfdd(self, ns, &dir).unwrap_or_else(|e| panic!("{e}"));
    }

    /// (Re)starts FRR's bgpd in `ns` (zebra must be running).
    pub fn start_frr_bgpd(&mut self, ns: &str) {
        let dir = self.root.join(format!("frr-{ns}"));
        daemons::start_frr_bgpd(self, ns, &dir).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts BIRD 2 in `ns`; returns its control socket.
    pub fn bird(&mut self, ns: &str, config: &str) -> PathBuf {
        let dir = self.root.join(format!("bird-{ns}"));
        daemons::start_bird(self, ns, &dir, config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts gobgpd in `ns` with a TOML configuration.
    pub fn gobgp(&mut self, ns: &str, config: &str) {
        let dir = self.root.join(format!("gobgp-{ns}"));
        daemons::start_gobgp(self, ns, &dir, config).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts ExaBGP in `ns`; `config` is its configuration file. Returns
    /// its directory (its log is `exabgp.log` there).
    pub fn exabgp(&mut self, ns: &str, config: &str) -> PathBuf {
        let dir = self.root.join(format!("exabgp-{ns}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("exabgp.conf");
        std::fs::write(&conf, config).expect("exabgp.conf");
        let log = dir.join("exabgp.log");
        // ExaBGP reads its settings from the environment.
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "exabgp"])
            .arg(&conf)
            .env("exabgp.daemon.user", "root")
            .env("exabgp.daemon.drop", "false")
            .env("exabgp.log.destination", "stdout")
            .env("exabgp.api.cli", "false")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start exabgp");
        self.adopt(&format!("exabgp-{ns}"), child);
        dir
    }

    /// `vtysh -N NS -c CMD`.
    pub fn vtysh(&self, ns: &str, cmd: &str) -> String {
        daemons::vtysh(ns, cmd)
    }

    /// `vtysh ... json` parsed.
    pub fn vtysh_json(&self, ns: &str, cmd: &str) -> Value {
        serde_json::from_str(&self.vtysh(ns, cmd)).unwrap_or(Value::Null)
    }

    /// `birdc -s SOCK CMD`.
    pub fn birdc(&self, sock: &Path, cmd: &str) -> String {
        daemons::birdc(sock, cmd)
    }

    /// `gobgp ARGS` inside `ns`.
    pub fn gobgp_cli(&self, ns: &str, args: &[&str]) -> String {
        daemons::gobgp_cli(ns, args)
    }

    /// `ip -n NS ARGS`, panicking on failure.
    pub fn ip(&self, ns: &str, args: &[&str]) {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        must_run("ip", &all);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Daemons that forked away from us (none should) die with their
        // namespace's processes.
        for ns in &self.namespaces {
            netns::destroy(ns);
        }
        if std::env::var_os("PETREL_KEEP_LAB").is_none() {
            for d in &self.dirs {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}
