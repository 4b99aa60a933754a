//! `petrel-ipam` under a CNI 1.1 runtime: cnitool (libcni) running ptp
//! v1.10 (both from the Go module proxy, built by `testenv/cni/build.sh`),
//! which delegate to `petrel-ipam` for addresses, STATUS and GC. Debian's
//! plugins (1.1.1) stop at CNI 1.0; these pass the 1.1 verbs through.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::guard::KillOnDrop as Agent;
use testkit::netns::Netns;

const NETWORK: &str = "petrel-tool";

/// A directory and libcni's cached results of this network, removed at the
/// end.
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        if let Ok(dir) = std::fs::read_dir("/var/lib/cni/results") {
            for e in dir.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{NETWORK}-"))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// cnitool and ptp v1.10, built (or found cached) by testenv/cni/build.sh.
fn tools() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testenv/cni/build.sh");
    let mut c = Command::new("bash");
    c.arg(&script);
    if std::env::var_os("GO").is_none() && Path::new("/usr/local/go/bin/go").exists() {
        c.env("GO", "/usr/local/go/bin/go");
    }
    let out = c.output().expect("build.sh runs");
    assert!(
        out.status.success(),
        "testenv/cni/build.sh failed (it needs Go and the module proxy):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn cnitool(tools: &Path, dir: &Path, node: &Netns, verb: &str, pod: Option<&Netns>) -> Output {
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_petrel-ipam"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let netns = pod.map_or("/var/run/netns/none".to_string(), |p| {
        format!("/var/run/netns/{}", p.name())
    });
    Command::new("ip")
        .args(["netns", "exec", node.name()])
        .arg(tools.join("cnitool"))
        .args([verb, NETWORK, &netns])
        .env("NETCONFPATH", dir.join("net.d"))
        .env(
            "CNI_PATH",
            format!("{}:{}", tools.display(), plugin_dir.display()),
        )
        .env("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=tool")
        .stdin(Stdio::null())
        .output()
        .expect("cnitool runs")
}

fn address(out: &Output) -> IpAddr {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.parse::<ipnet::IpNet>().ok())
        .map(|n| n.addr())
        .unwrap_or_else(|| {
            panic!(
                "no address: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn allocations(dir: &Path) -> usize {
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir.join("ipam.json")).unwrap_or_default())
            .unwrap_or(Value::Null);
    v["blocks"]
        .as_object()
        .map(|b| {
            b.values()
                .map(|x| x["spec"]["allocations"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn cnitool_and_ptp_1_1_drive_add_check_status_gc_and_del() {
    let node = Netns::new("ct").expect("node");
    let dir = std::env::temp_dir().join(format!("petrel-cni-tool-{}", node.name()));
    let _cleanup = Cleanup(dir.clone());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).expect("dir");
    std::fs::create_dir_all(dir.join("net.d")).expect("dir");
    let tools = tools();
    // Two blocks of four, strict: four addresses in all (first and last of
    // each block kept out).
    std::fs::write(
        dir.join("src/objects.yaml"),
        "apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, ipamMode: Petrel}
---
apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {name: tiny}
spec: {cidr: 10.75.0.0/29, blockSize: 30, strictAffinity: true}
",
    )
    .expect("objects");
    std::fs::write(
        dir.join("net.d/10-petrel.conflist"),
        json!({
            "cniVersion": "1.1.0", "name": NETWORK,
            "plugins": [{"type": "ptp",
                         "ipam": {"type": "petrel-ipam", "socket": dir.join("ipam.sock")}}],
        })
        .to_string(),
    )
    .expect("conflist");
    let log = std::fs::File::create(dir.join("agent.log")).expect("log");
    let _agent = Agent(
        Command::new("ip")
            .args(["netns", "exec", node.name()])
            .arg(env!("CARGO_BIN_EXE_petrel"))
            .args([
                "agent",
                "--node",
                "n1",
                "--no-fib",
                "--metrics-address",
                "off",
            ])
            .arg("--source")
            .arg(format!("files:{}", dir.join("src").display()))
            .arg("--api-socket")
            .arg(dir.join("api.sock"))
            .arg("--ipam-socket")
            .arg(dir.join("ipam.sock"))
            .arg("--ipam-state")
            .arg(dir.join("ipam.json"))
            .args(["--ipam-cooldown", "0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts"),
    );

    // STATUS through libcni: ready once the agent has read its pools.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cnitool(&tools, &dir, &node, "status", None);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "STATUS never succeeded: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let pods: Vec<Netns> = (0..5).map(|_| Netns::new("cq").expect("pod")).collect();
    let a = address(&cnitool(&tools, &dir, &node, "add", Some(&pods[0])));
    let b = address(&cnitool(&tools, &dir, &node, "add", Some(&pods[1])));
    assert_ne!(a, b);
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            pods[0].name(),
            "ping",
            "-c",
            "1",
            "-W",
            "2",
        ])
        .arg(b.to_string())
        .stdout(Stdio::null())
        .status()
        .expect("ping");
    assert!(ping.success(), "pod 0 cannot reach pod 1 at {b}");
    let out = cnitool(&tools, &dir, &node, "check", Some(&pods[0]));
    assert!(
        out.status.success(),
        "CHECK: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Exhausted: STATUS says so, naming the pool; the next ADD fails.
    for p in &pods[2..4] {
        address(&cnitool(&tools, &dir, &node, "add", Some(p)));
    }
    let out = cnitool(&tools, &dir, &node, "status", None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "STATUS with no address left succeeded"
    );
    assert!(err.contains("tiny") && err.contains("exhausted"), "{err}");
    let out = cnitool(&tools, &dir, &node, "add", Some(&pods[4]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tiny"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(allocations(&dir), 4);

    // GC with no valid attachment (cnitool passes none): all given back.
    let out = cnitool(&tools, &dir, &node, "gc", None);
    assert!(
        out.status.success(),
        "GC: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(allocations(&dir), 0);
    assert!(
        cnitool(&tools, &dir, &node, "status", None)
            .status
            .success()
    );
    // DEL after GC: nothing held, still fine.
    let out = cnitool(&tools, &dir, &node, "del", Some(&pods[0]));
    assert!(
        out.status.success(),
        "DEL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
