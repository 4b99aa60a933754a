//! Real routing daemons in network namespaces: how each is started, where
//! its files go, and how we know it is up. Who owns the processes is the
//! caller's business ([`Spawn`]): a test's [`crate::Lab`] keeps them as
//! children and kills them on drop; `petrel lab` records them detached.
//!
//! Each daemon's processes are labelled `DAEMON-NS` (`zebra-ns1`,
//! `bgpd-ns1`, `bird-ns1`, `gobgpd-ns1`, `exabgp-ns1`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::cmd::{run, wait_for};

/// Starts processes inside namespaces and keeps them, by label, for the
/// caller to stop.
pub trait Spawn {
    /// Starts `argv` (`argv[0]` the program) inside `ns` with output to
    /// `log`, remembered as `label`.
    fn spawn(&mut self, label: &str, ns: &str, argv: &[String], log: &Path) -> Result<(), Error>;
}

fn strings(argv: &[&str]) -> Vec<String> {
    argv.iter().map(|s| s.to_string()).collect()
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::new(format!("write {}", path.display()), e))
}

fn mkdir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::new(format!("create {}", dir.display()), e))
}

/// FRR's run directory for namespace `ns` (`zebra -N NS` puts its sockets
/// there): the caller removes it when done.
pub fn frr_run_dir(ns: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/frr/{ns}"))
}

/// Starts FRR (zebra, then bgpd) in `ns` with an integrated configuration
/// written to `dir/frr.conf`, and waits until bgpd answers vtysh. Returns
/// FRR's run directory ([`frr_run_dir`]).
pub fn start_frr(s: &mut impl Spawn, ns: &str, dir: &Path, config: &str) -> Result<PathBuf, Error> {
    let run_dir = frr_run_dir(ns);
    mkdir(&run_dir)?;
    mkdir(dir)?;
    write(&dir.join("frr.conf"), config)?;
    run(
        "chown",
        &[
            "-R",
            "frr:frr",
            &run_dir.display().to_string(),
            &dir.display().to_string(),
        ],
    )?;
    let pid = dir.join("zebra.pid").display().to_string();
    s.spawn(
        &format!("zebra-{ns}"),
        ns,
        &strings(&["/usr/lib/frr/zebra", "-N", ns, "-i", &pid]),
        &dir.join("zebra.log"),
    )?;
    let zserv = run_dir.join("zserv.api");
    wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        zserv
            .exists()
            .then_some(())
            .ok_or_else(|| format!("zebra has not opened {}", zserv.display()))
    })
    .map_err(|e| Error::new(format!("start zebra in {ns}"), e))?;
    start_frr_bgpd(s, ns, dir)?;
    Ok(run_dir)
}

/// (Re)starts FRR's bgpd in `ns` from `dir/frr.conf` (zebra must be
/// running) and waits until it answers vtysh.
pub fn start_frr_bgpd(s: &mut impl Spawn, ns: &str, dir: &Path) -> Result<(), Error> {
    let conf = dir.join("frr.conf").display().to_string();
    let pid = dir.join("bgpd.pid").display().to_string();
    s.spawn(
        &format!("bgpd-{ns}"),
        ns,
        &strings(&["/usr/lib/frr/bgpd", "-N", ns, "-f", &conf, "-i", &pid]),
        &dir.join("bgpd.log"),
    )?;
    wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        run("vtysh", &["-N", ns, "-c", "show bgp summary json"])
            .map(drop)
            .map_err(|e| format!("bgpd does not answer vtysh: {e}"))
    })
    .map_err(|e| Error::new(format!("start bgpd in {ns}"), e))
}

/// Starts FRR's bfdd in `ns` from `dir/frr.conf` (zebra must be running;
/// bgpd asks it for the sessions its `neighbor ... bfd` lines name).
pub fn start_frr_bfdd(s: &mut impl Spawn, ns: &str, dir: &Path) -> Result<(), Error> {
    let conf = dir.join("frr.conf").display().to_string();
    let pid = dir.join("bfdd.pid").display().to_string();
    s.spawn(
        &format!("bfdd-{ns}"),
        ns,
        &strings(&["/usr/lib/frr/bfdd", "-N", ns, "-f", &conf, "-i", &pid]),
        &dir.join("bfdd.log"),
    )?;
    wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        run("vtysh", &["-N", ns, "-c", "show bfd peers json"])
            .map(drop)
            .map_err(|e| format!("bfdd does not answer vtysh: {e}"))
    })
    .map_err(|e| Error::new(format!("start bfdd in {ns}"), e))
}

/// Starts BIRD 2 in `ns` with `config` (written to `dir/bird.conf`) and
/// waits for its control socket, which it returns.
pub fn start_bird(
    s: &mut impl Spawn,
    ns: &str,
    dir: &Path,
    config: &str,
) -> Result<PathBuf, Error> {
    mkdir(dir)?;
    let conf = dir.join("bird.conf");
    write(&conf, config)?;
    let sock = dir.join("bird.ctl");
    let (c, k, p) = (
        conf.display().to_string(),
        sock.display().to_string(),
        dir.join("bird.pid").display().to_string(),
    );
    s.spawn(
        &format!("bird-{ns}"),
        ns,
        &strings(&["bird", "-f", "-c", &c, "-s", &k, "-P", &p]),
        &dir.join("bird.log"),
    )?;
    wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        sock.exists()
            .then_some(())
            .ok_or_else(|| format!("BIRD has not opened {}", sock.display()))
    })
    .map_err(|e| Error::new(format!("start BIRD in {ns}"), e))?;
    Ok(sock)
}

/// The GoBGP API address inside each namespace.
const GOBGP_API: &str = "127.0.0.1:50051";

/// `ip` arguments that run the `gobgp` client against the daemon in `ns`.
fn gobgp_args(ns: &str) -> Vec<&str> {
    vec![
        "netns",
        "exec",
        ns,
        "gobgp",
        "-u",
        "127.0.0.1",
        "-p",
        "50051",
    ]
}

/// Starts gobgpd in `ns` with a TOML configuration (written to
/// `dir/gobgpd.toml`) and waits until its API answers.
pub fn start_gobgp(s: &mut impl Spawn, ns: &str, dir: &Path, config: &str) -> Result<(), Error> {
    mkdir(dir)?;
    let conf = dir.join("gobgpd.toml");
    write(&conf, config)?;
    let c = conf.display().to_string();
    s.spawn(
        &format!("gobgpd-{ns}"),
        ns,
        &strings(&["gobgpd", "-f", &c, "-t", "toml", "--api-hosts", GOBGP_API]),
        &dir.join("gobgpd.log"),
    )?;
    wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
                "50051",
                "global",
            ],
        )
        .map(drop)
        .map_err(|e| e.to_string())
    })
    .map_err(|e| Error::new(format!("start gobgpd in {ns}"), e))
}

/// `vtysh -N NS -c CMD`'s output (empty if it cannot run).
pub fn vtysh(ns: &str, cmd: &str) -> String {
    Command::new("vtysh")
        .args(["-N", ns, "-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `birdc -s SOCK CMD`'s output (empty if it cannot run).
pub fn birdc(sock: &Path, cmd: &str) -> String {
    Command::new("birdc")
        .arg("-s")
        .arg(sock)
        .args(cmd.split_whitespace())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `gobgp ARGS` inside `ns`: its stdout and stderr.
pub fn gobgp_cli(ns: &str, args: &[&str]) -> String {
    Command::new("ip")
        .args(gobgp_args(ns))
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_default()
}
