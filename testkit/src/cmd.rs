//! Commands, bounded polling, and the small checks every harness needs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Error;

/// Runs a program to completion; its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::new(format!("cannot run {program}"), e))?;
    if !out.status.success() {
        return Err(Error::new(
            format!("{program} {}", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `f` every `every` until it returns `Ok`, or fails with its last
/// error once `limit` has passed.
pub fn wait_for(
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// Polls `f` every 100 ms until it is `Ok` or `secs` pass; panics with
/// `what` and the last diagnostic on timeout. For tests.
pub fn wait_until(secs: u64, what: &str, f: impl FnMut() -> Result<(), String>) {
    if let Err(last) = wait_for(Duration::from_secs(secs), Duration::from_millis(100), f) {
        panic!("timed out after {secs}s waiting for {what}: {last}");
    }
}

/// Whether this process runs as root (namespaces need it).
pub fn is_root() -> bool {
    // Our own status, so no libc call is needed for geteuid.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The last `lines` lines of a log file (empty if it cannot be read), for
/// failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// [`run`], panicking with the command and its stderr on failure. For
/// tests.
pub fn must_run(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|e| panic!("{e}"))
}
