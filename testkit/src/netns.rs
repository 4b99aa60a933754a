//! Network namespaces and veth links, through iproute2.

use std::future::Future;
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

use crate::Error;
use crate::cmd::run;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique, short name for a namespace of this process (`prefix`, the pid,
/// a counter): namespace names are global, and tests run in parallel.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `ip -n NS ARGS`.
pub fn ip(ns: &str, args: &[&str]) -> Result<(), Error> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all).map(drop)
}

/// Sets sysctls (`key=value`) inside a namespace.
pub fn sysctl(ns: &str, settings: &[&str]) -> Result<(), Error> {
    let mut args = vec!["netns", "exec", ns, "sysctl", "-q", "-w"];
    args.extend_from_slice(settings);
    run("ip", &args).map(drop)
}

/// Creates namespace `name` (removing a leftover of that name first) with
/// its loopback up.
pub fn create(name: &str) -> Result<(), Error> {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
    run("ip", &["netns", "add", name])?;
    ip(name, &["link", "set", "lo", "up"])
}

/// Kills every process left in namespace `name`, then deletes it. Errors
/// are ignored: whatever is already gone is fine.
pub fn destroy(name: &str) {
    if let Ok(o) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).output();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// Joins namespaces `a` and `b` with a veth pair named `ifname` on both
/// sides, gives each side its addresses (CIDR strings) and brings both up.
pub fn veth(
    a: &str,
    b: &str,
    ifname: &str,
    addrs_a: &[&str],
    addrs_b: &[&str],
) -> Result<(), Error> {
    run(
        "ip",
        &[
            "link", "add", ifname, "netns", a, "type", "veth", "peer", "name", ifname, "netns", b,
        ],
    )?;
    for (ns, addrs) in [(a, addrs_a), (b, addrs_b)] {
        for addr in addrs {
            let mut args = vec!["addr", "add", addr, "dev", ifname];
            if addr.contains(':') {
                // No duplicate address detection, so IPv6 works at once.
                args.push("nodad");
            }
            ip(ns, &args)?;
        }
        ip(ns, &["link", "set", ifname, "up"])?;
    }
    Ok(())
}

/// A veth pair from the host's namespace (`NAMEh`, address `host_cidr`) to
/// namespace `ns` (`NAMEn`, address `ns_cidr`), both up: processes in `ns`
/// reach a listener on the host side's address (a forwarder to an API
/// server, for instance). Deleting `ns` deletes the pair; a pair of that
/// name left over from an earlier run is replaced.
pub fn host_link(name: &str, ns: &str, host_cidr: &str, ns_cidr: &str) -> Result<(), Error> {
    let host = format!("{name}h");
    let inner = format!("{name}n");
    let _ = Command::new("ip").args(["link", "del", &host]).output();
    run(
        "ip",
        &[
            "link", "add", &host, "type", "veth", "peer", "name", &inner, "netns", ns,
        ],
    )?;
    run("ip", &["addr", "add", host_cidr, "dev", &host])?;
    run("ip", &["link", "set", &host, "up"])?;
    ip(ns, &["addr", "add", ns_cidr, "dev", &inner])?;
    ip(ns, &["link", "set", &inner, "up"])
}

/// A namespace of its own, deleted (with what runs in it) when dropped,
/// also when a test panics.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace named after `prefix` (loopback up).
    pub fn new(prefix: &str) -> Result<Netns, Error> {
        let name = unique_name(prefix);
        create(&name)?;
        Ok(Netns { name })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<(), Error> {
        ip(&self.name, args)
    }

    /// `ip -j [-6] route show EXTRA` inside it, parsed (`-6` first in
    /// `extra` for IPv6).
    pub fn routes(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["-n", &self.name, "-j"];
        let v6 = extra.first() == Some(&"-6");
        if v6 {
            args.push("-6");
        }
        args.extend(["route", "show"]);
        args.extend(extra.iter().skip(usize::from(v6)));
        run("ip", &args)
            .ok()
            .and_then(|out| serde_json::from_str(&out).ok())
            .unwrap_or_default()
    }

    /// The route to `dst` among [`Netns::routes`]`(extra)`.
    pub fn route(&self, dst: &str, extra: &[&str]) -> Option<Value> {
        self.routes(extra).into_iter().find(|r| r["dst"] == dst)
    }

    /// Runs an async body on a thread (with a runtime of its own) that lives
    /// in this namespace, and returns its result; a panic in it is the
    /// caller's.
    pub fn block_on<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Pin<Box<dyn Future<Output = T>>> + Send + 'static,
    ) -> Result<T, Error> {
        let path = format!("/run/netns/{}", self.name);
        let name = self.name.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).map_err(|e| Error::new(&path, e))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::new(format!("enter {name}"), e))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::new("start a runtime", e))?;
            Ok(rt.block_on(f()))
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}
