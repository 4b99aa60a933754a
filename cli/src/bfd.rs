//! `petrel bfd`, and the BFD lines and objects of `petrel peers`: each
//! peer's BFD session as the agent reports it.

use std::fmt::Write as _;
use std::path::Path;

use proto::v1 as pb;
use serde_json::{Value, json};

use crate::client::{Format, duration, fetch_peers, print_data};

/// A BFD session as JSON.
pub(crate) fn bfd_json(b: &pb::BfdSession) -> Value {
    json!({
        "state": b.state,
        "remote_state": b.remote_state,
        "diagnostic": b.diagnostic,
        "remote_diagnostic": b.remote_diagnostic,
        "local_discriminator": b.local_discriminator,
        "remote_discriminator": b.remote_discriminator,
        "transmit_interval_ms": b.transmit_interval_ms,
        "detection_time_ms": b.detection_time_ms,
        "remote_detect_multiplier": b.remote_detect_multiplier,
        "up_seconds": b.up_seconds,
        "packets_sent": b.packets_sent,
        "packets_received": b.packets_received,
        "packets_discarded": b.packets_discarded,
        "up_transitions": b.up_transitions,
        "down_transitions": b.down_transitions,
        "multihop": b.multihop,
        "last_error": (!b.last_error.is_empty()).then_some(&b.last_error),
    })
}

/// One line on a BFD session: state, timers, why it last went down.
pub(crate) fn bfd_line(b: &pb::BfdSession) -> String {
    let mut s = format!(
        "{} ({}), tx {} ms, detect {} ms",
        b.state,
        if b.multihop { "multihop" } else { "single hop" },
        b.transmit_interval_ms,
        b.detection_time_ms
    );
    if b.diagnostic != "none" {
        let _ = write!(s, ", last down: {}", b.diagnostic);
    }
    s
}

/// `petrel bfd`: the peers' BFD sessions.
pub fn bfd_table(peers: &[pb::Peer]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<10}  {:<10}  {:>9}  {:>9}  {:>10}  {:>10}  {:>8}  DIAGNOSTIC",
        "PEER", "STATE", "REMOTE", "TX ms", "DETECT ms", "LOCAL DISC", "REMOTE DISC", "UP"
    );
    for p in peers {
        let Some(b) = &p.bfd else { continue };
        let _ = writeln!(
            out,
            "{:<24} {:<10}  {:<10}  {:>9}  {:>9}  {:>10}  {:>10}  {:>8}  {}",
            p.address,
            b.state,
            b.remote_state,
            b.transmit_interval_ms,
            b.detection_time_ms,
            b.local_discriminator,
            b.remote_discriminator,
            duration(b.up_seconds),
            b.diagnostic
        );
        if !b.last_error.is_empty() {
            let _ = writeln!(out, "    last error: {}", b.last_error);
        }
    }
    out
}

/// `petrel bfd`: every peer with BFD, and its session.
pub async fn bfd(socket: &Path, output: Format) -> anyhow::Result<()> {
    let peers: Vec<pb::Peer> = fetch_peers(socket)
        .await?
        .into_iter()
        .filter(|p| p.bfd.is_some())
        .collect();
    match output {
        Format::Table => print!("{}", bfd_table(&peers)),
        Format::Json | Format::Yaml => {
            let list: Vec<Value> = peers
                .iter()
                .map(|p| {
                    let mut v = p.bfd.as_ref().map(bfd_json).unwrap_or(Value::Null);
                    if let Value::Object(m) = &mut v {
                        m.insert("peer".into(), json!(p.address));
                        m.insert("name".into(), json!(p.name));
                    }
                    v
                })
                .collect();
            print_data(&Value::Array(list), output)?
        }
    }
    Ok(())
}
