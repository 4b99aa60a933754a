//! The harness's events: one JSON object per line on standard output,
//! stamped `"t"` with CLOCK_MONOTONIC seconds, the clock Python's
//! `time.monotonic()` reads and the harness compares with its own.

use std::io::Write;

use serde_json::{Map, Value};

/// CLOCK_MONOTONIC in seconds.
pub fn now() -> f64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as f64 + ts.tv_nsec() as f64 * 1e-9,
        // CLOCK_MONOTONIC cannot fail on Linux; a zero stamp would be noticed.
        Err(_) => 0.0,
    }
}

/// Writes event `ev` with `fields` and the current time, and flushes: the
/// harness reads events as they come.
pub fn emit(ev: &str, fields: Value) {
    let mut obj = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    obj.insert("ev".into(), Value::from(ev));
    obj.insert("t".into(), Value::from(now()));
    let mut out = std::io::stdout().lock();
    // A closed stdout means the harness is gone; nothing left to tell.
    let _ = writeln!(out, "{}", Value::Object(obj));
    let _ = out.flush();
}
