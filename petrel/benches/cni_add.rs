//! CNI ADD latency (a benchmark, not a test): `petrel-ipam` asking a petrel
//! agent, beside Debian's `host-local` doing the same work in the same run.
//!
//! Each round starts C plugin processes at once (C = 1, 10, 100), as a
//! runtime starting C pods does, and takes each process's wall time from
//! spawn to exit; rounds repeat until `PETREL_CNI_ADDS` (default 300) ADDs
//! are done per C, then everything is DELeted (not timed). petrel runs
//! twice: standalone (blocks in a state file) and against the real API
//! server (IPAMBlock objects, a control plane of its own from
//! `testkit::KubeEnv`; skipped with `PETREL_CNI_KUBE=0`).
//!
//! `cargo bench -p petrel --bench cni_add` (root is not needed: no
//! namespaces; the plugins only hand out addresses). Figures go to stdout;
//! docs/performance.md keeps them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One IPAM plugin and its configuration.
struct Plugin {
    name: &'static str,
    bin: PathBuf,
    conf: Value,
}

impl Plugin {
    /// Starts `command` for container `id`; stdin is written at once.
    fn spawn(&self, command: &str, id: &str) -> Child {
        let mut child = Command::new(&self.bin)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", "/var/run/netns/none")
            .env("CNI_PATH", "/usr/lib/cni")
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={id}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.bin.display()));
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(self.conf.to_string().as_bytes())
            .expect("config written");
        child
    }

    /// C processes at once, `total` in all: each one's wall time.
    fn round(&self, tag: &str, concurrency: usize, total: usize) -> Vec<Duration> {
        let mut times = Vec::with_capacity(total);
        let mut n = 0;
        while n < total {
            let wave = concurrency.min(total - n);
            let started: Vec<(Instant, Child)> = (0..wave)
                .map(|i| {
                    (
                        Instant::now(),
                        self.spawn("ADD", &format!("{tag}-{}", n + i)),
                    )
                })
                .collect();
            for (t0, child) in started {
                let out = child.wait_with_output().expect("plugin ends");
                times.push(t0.elapsed());
                assert!(
                    out.status.success(),
                    "{} ADD failed: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            n += wave;
        }
        // Back to empty for the next round, untimed, a few at a time.
        for chunk in (0..total).collect::<Vec<_>>().chunks(20) {
            let dels: Vec<Child> = chunk
                .iter()
                .map(|i| self.spawn("DEL", &format!("{tag}-{i}")))
                .collect();
            for d in dels {
                let _ = d.wait_with_output();
            }
        }
        times
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Waits until `petrel-ipam` gets an answer from the agent behind `conf`.
fn wait_agent(plugin: &Plugin) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = plugin
            .spawn("STATUS", "probe")
            .wait_with_output()
            .expect("status");
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent is not serving: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent(dir: &Path, source: &str, kubeconfig: Option<&Path>) -> Proc {
    let mut c = Command::new(env!("CARGO_BIN_EXE_petrel"));
    c.args([
        "agent",
        "--node",
        "bench-node",
        "--no-fib",
        "--metrics-address",
        "off",
    ])
    .args(["--source", source])
    .arg("--api-socket")
    .arg(dir.join("api.sock"))
    .arg("--ipam-socket")
    .arg(dir.join("ipam.sock"))
    .arg("--ipam-state")
    .arg(dir.join("ipam.json"))
    .args(["--ipam-cooldown", "0"])
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.join(format!("agent-{}.log", source.len()))).expect("log"));
    if let Some(k) = kubeconfig {
        c.env("KUBECONFIG", k);
    }
    Proc(c.spawn().expect("agent starts"))
}

/// The agent speaks BGP too: on a port of its own on loopback, so that it
/// needs no namespace and meets nobody.
const POOL: &str = "apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {name: bench}
spec: {cidr: 10.90.0.0/16, blockSize: 26}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, ipamMode: Petrel, listenAddress: 127.0.0.1, listenPort: 17901}
";

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    assert!(
        Path::new(HOST_LOCAL).exists(),
        "{HOST_LOCAL} is missing: install Debian's containernetworking-plugins"
    );
    let total = size("PETREL_CNI_ADDS", 300);
    let dir = std::env::temp_dir().join(format!("petrel-cni-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).expect("dir");
    std::fs::write(dir.join("src/pool.yaml"), POOL).expect("pool");

    let host_local = Plugin {
        name: "host-local",
        bin: PathBuf::from(HOST_LOCAL),
        conf: json!({
            "cniVersion": "1.0.0", "name": "bench",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.91.0.0/16"}]],
                     "dataDir": dir.join("host-local")},
        }),
    };
    let petrel = Plugin {
        name: "petrel-ipam (state file)",
        bin: PathBuf::from(env!("CARGO_BIN_EXE_petrel-ipam")),
        conf: json!({
            "cniVersion": "1.1.0", "name": "bench",
            "ipam": {"type": "petrel-ipam", "socket": dir.join("ipam.sock")},
        }),
    };
    let mut plugins: Vec<(Plugin, Option<Proc>)> = vec![(host_local, None)];
    let files = agent(&dir, &format!("files:{}", dir.join("src").display()), None);
    wait_agent(&petrel);
    plugins.push((petrel, Some(files)));

    // The cluster case: the agent's blocks are IPAMBlocks in a real API
    // server of the benchmark's own.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut env = None;
    if std::env::var("PETREL_CNI_KUBE").as_deref() != Ok("0") {
        let mut e = rt.block_on(testkit::KubeEnv::start("cni-bench"));
        rt.block_on(e.install_crds());
        rt.block_on(e.create_json(
            "bgpconfigurations",
            json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "BGPConfiguration",
                   "metadata": {"name": "default"},
                   "spec": {"asNumber": 64512, "ipamMode": "Petrel",
                            "listenAddress": "127.0.0.1", "listenPort": 17902}}),
        ));
        rt.block_on(e.create_json(
            "ippools",
            json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "IPPool",
                   "metadata": {"name": "bench"},
                   "spec": {"cidr": "10.92.0.0/16", "blockSize": 26}}),
        ));
        let kdir = dir.join("kube");
        std::fs::create_dir_all(&kdir).expect("dir");
        let proc = agent(&kdir, "kube", Some(e.kubeconfig()));
        let plugin = Plugin {
            name: "petrel-ipam (API server)",
            bin: PathBuf::from(env!("CARGO_BIN_EXE_petrel-ipam")),
            conf: json!({
                "cniVersion": "1.1.0", "name": "bench",
                "ipam": {"type": "petrel-ipam", "socket": kdir.join("ipam.sock")},
            }),
        };
        wait_agent(&plugin);
        plugins.push((plugin, Some(proc)));
        env = Some(e);
    }

    println!("CNI ADD latency, {total} ADDs per concurrency, ms (p50 / p99 / max)");
    println!("| plugin | C=1 | C=10 | C=100 |");
    println!("| --- | --- | --- | --- |");
    for (p, _) in &plugins {
        let mut cells = Vec::new();
        for c in [1usize, 10, 100] {
            let mut t = p.round(&format!("c{c}"), c, total);
            t.sort();
            cells.push(format!(
                "{:.1} / {:.1} / {:.1}",
                ms(percentile(&t, 0.5)),
                ms(percentile(&t, 0.99)),
                ms(*t.last().expect("times"))
            ));
        }
        println!("| {} | {} |", p.name, cells.join(" | "));
    }
    drop(plugins);
    if let Some(mut e) = env {
        rt.block_on(e.cleanup());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
