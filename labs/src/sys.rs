//! What the lab asks of the system: `ip`, `sysctl`, detached processes and
//! their identity (pid plus start time, so a reused pid is never killed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

pub use testkit::netns::{ip, sysctl};
pub use testkit::{is_root, run, wait_for};

/// Runs a program and returns its stdout and stderr whatever its status (for
/// printing diagnostics).
pub fn output(program: &str, args: &[&str]) -> String {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        }
        Err(e) => format!("cannot run {program}: {e}\n"),
    }
}

/// The namespaces that exist.
pub fn namespaces() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Where a program is: itself if it is a path, else the first match in PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A process the lab started, identified by pid and start time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    /// What it is, e.g. `agent node-1`, `bgpd`.
    pub label: String,
    /// The namespace it runs in.
    pub ns: String,
    /// Its pid.
    pub pid: u32,
    /// Its start time (clock ticks after boot, /proc/PID/stat field 22).
    pub start: u64,
    /// The command line it was started with (to start it again).
    pub argv: Vec<String>,
    /// Its log.
    pub log: PathBuf,
}

/// (state, start time) of a pid, from /proc/PID/stat.
fn stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    // Field 3 is the state; the start time is field 22, 19 after it.
    let start = f.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl Proc {
    /// Starts `argv` inside `ns` (empty: the host's namespace), detached: its own session (setsid), so it
    /// outlives the command that started it and ignores its terminal; output
    /// to `log`.
    pub fn spawn(label: &str, ns: &str, argv: &[String], log: &Path) -> anyhow::Result<Proc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        // setsid(1) execs without forking when it is not a process group
        // leader, which a freshly spawned child is not, and `ip netns exec`
        // execs too: the pid we get is the daemon's.
        // An empty namespace: the host's own.
        let netns: &[&str] = if ns.is_empty() {
            &[]
        } else {
            &["ip", "netns", "exec", ns]
        };
        let child = Command::new("setsid")
            .args(netns)
            .args(argv)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {label}"))?;
        let pid = child.id();
        let Some((_, start)) = stat(pid) else {
            bail!("{label} exited at once; see {}", log.display());
        };
        Ok(Proc {
            label: label.to_string(),
            ns: ns.to_string(),
            pid,
            start,
            argv: argv.to_vec(),
            log: log.to_path_buf(),
        })
    }

    /// Whether it still runs (same pid and start time, not a zombie).
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((state, start)) if start == self.start && state != 'Z')
    }

    /// Sends a signal if the process is still the one we started.
    pub fn signal(&self, sig: &str) {
        if self.alive() {
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), &self.pid.to_string()])
                .output();
        }
    }

    /// SIGTERM, then SIGKILL if it has not gone after `grace`.
    pub fn stop(&self, grace: Duration) {
        self.signal("TERM");
        let deadline = Instant::now() + grace;
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    /// SIGKILL, and a bounded wait until it is gone.
    pub fn kill(&self) {
        self.signal("KILL");
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        testkit::log_tail(&self.log, lines)
    }
}

/// Writes a file atomically (a temporary file renamed over it): agents poll
/// the directory and must never read half a file.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot file without the .yaml extension: the agents skip it.
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
