//! `petrel decode`: MRT files through petrel's codec, as JSON lines.
//!
//! Every problem is reported on stderr as `FILE: offset N: what`, decoding goes
//! on with the next record, and the command fails at the end if anything was bad.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use bgpd::mrt::{self, MrtBody, MrtError, MrtRecord, SessionTracker};
use bgpd::wire::attr::{AttrSource, decode_attributes, encode_attributes};
use bgpd::wire::{AfiSafi, Message, WireContext};
use serde_json::{Value, json};

use crate::json;

/// Arguments of `petrel decode`.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// MRT files to read.
    #[arg(required = true)]
    files: Vec<std::path::PathBuf>,
    /// Re-encode every BGP message (and every RIB entry's attributes) and
    /// compare with the original bytes; a difference counts as an error.
    #[arg(long)]
    check: bool,
    /// Print counts per file instead of the records.
    #[arg(long)]
    summary: bool,
}

/// Counts for `--summary`.
#[derive(Debug, Default)]
struct Summary {
    records: u64,
    by_record_type: BTreeMap<String, u64>,
    by_message_type: BTreeMap<&'static str, u64>,
    prefixes_announced: u64,
    prefixes_withdrawn: u64,
    rib_entries: u64,
    checked: u64,
    bad: u64,
}

/// Runs the command; `Ok(false)` means some record was bad.
pub fn run(args: &DecodeArgs) -> anyhow::Result<bool> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut all_good = true;
    for path in &args.files {
        let summary = decode_file(path, args, &mut out)?;
        if args.summary {
            let v = json!({
                "file": path.display().to_string(),
                "records": summary.records,
                "record_types": summary.by_record_type,
                "bgp_messages": summary.by_message_type,
                "prefixes_announced": summary.prefixes_announced,
                "prefixes_withdrawn": summary.prefixes_withdrawn,
                "rib_entries": summary.rib_entries,
                "checked": if args.check { Some(summary.checked) } else { None },
                "bad": summary.bad,
            });
            writeln!(out, "{v}")?;
        }
        all_good &= summary.bad == 0;
    }
    out.flush()?;
    Ok(all_good)
}

fn decode_file(path: &Path, args: &DecodeArgs, out: &mut impl Write) -> anyhow::Result<Summary> {
    let reader = mrt::open_file(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut summary = Summary::default();
    let mut tracker = SessionTracker::new();
    let mut report = |summary: &mut Summary, offset: u64, what: &dyn std::fmt::Display| {
        summary.bad += 1;
        eprintln!("{}: offset {offset}: {what}", path.display());
    };
    for record in reader {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let offset = match &e {
                    MrtError::Io { offset, .. }
                    | MrtError::Truncated { offset, .. }
                    | MrtError::BadRecord { offset, .. } => *offset,
                };
                report(&mut summary, offset, &e);
                continue;
            }
        };
        summary.records += 1;
        *summary
            .by_record_type
            .entry(record.type_name())
            .or_default() += 1;
        let body = match record.parse() {
            Ok(b) => b,
            Err(e) => {
                report(&mut summary, record.offset, &e);
                continue;
            }
        };
        let mut v = json!({
            "offset": record.offset,
            "timestamp": record.timestamp,
            "type": record.type_name(),
        });
        if let Some(us) = record.microseconds {
            v["microseconds"] = json!(us);
        }
        let fields = match &body {
            MrtBody::Bgp4mpMessage(m) => {
                let decoded = tracker.decode(m);
                let mut f = json::peers(&m.peers);
                match &decoded.result {
                    Ok(d) => {
                        count_message(&mut summary, &d.message);
                        f.insert(
                            "message".into(),
                            json::message(&d.message, decoded.context.four_octet_as),
                        );
                        if decoded.guessed {
                            f.insert("context_guessed".into(), context_json(&decoded.context));
                        }
                        if !d.problems.is_empty() {
                            let problems: Vec<String> =
                                d.problems.iter().map(ToString::to_string).collect();
                            report(
                                &mut summary,
                                record.offset,
                                &format_args!("malformed UPDATE: {}", problems.join("; ")),
                            );
                            f.insert("problems".into(), json!(problems));
                        } else if args.check {
                            summary.checked += 1;
                            match d.message.to_bytes(&decoded.context) {
                                Ok(bytes) if bytes == m.message => {}
                                Ok(bytes) => report(
                                    &mut summary,
                                    record.offset,
                                    &format_args!(
                                        "re-encoded {} differs: got {}, want {}",
                                        d.message.type_name(),
                                        json::hex(&bytes),
                                        json::hex(&m.message)
                                    ),
                                ),
                                Err(e) => report(
                                    &mut summary,
                                    record.offset,
                                    &format_args!("re-encoding failed: {e}"),
                                ),
                            }
                        }
                    }
                    Err(e) => {
                        report(
                            &mut summary,
                            record.offset,
                            &format_args!("bad BGP message: {e}; NOTIFICATION {}", e.notification),
                        );
                        f.insert("error".into(), json!(e.to_string()));
                        f.insert("raw".into(), json!(json::hex(&m.message)));
                    }
                }
                f
            }
            MrtBody::Bgp4mpStateChange(s) => {
                // Back to Idle, Connect or Active: the next session renegotiates.
                if s.new_state <= 3 {
                    tracker.reset(&s.peers);
                }
                json::state_change(s)
            }
            MrtBody::PeerIndexTable(t) => json::peer_index(t),
            MrtBody::Rib(rib) => {
                let mut f = serde_json::Map::new();
                f.insert("sequence".into(), json!(rib.sequence));
                f.insert("afi_safi".into(), json!(rib.afi_safi.to_string()));
                f.insert("prefix".into(), json::rib_nlri(&rib.nlri));
                let mut entries = Vec::with_capacity(rib.entries.len());
                for e in &rib.entries {
                    summary.rib_entries += 1;
                    entries.push(rib_entry(
                        &record,
                        rib.afi_safi,
                        e,
                        args.check,
                        &mut summary,
                        &mut report,
                    ));
                }
                f.insert("entries".into(), Value::Array(entries));
                f
            }
            MrtBody::Unsupported => {
                let mut f = serde_json::Map::new();
                f.insert("unsupported".into(), json!(true));
                f
            }
        };
        if let Value::Object(m) = &mut v {
            m.extend(fields);
        }
        if !args.summary {
            writeln!(out, "{v}")?;
        }
    }
    Ok(summary)
}

fn rib_entry(
    record: &MrtRecord,
    af: AfiSafi,
    e: &mrt::RibEntry,
    check: bool,
    summary: &mut Summary,
    report: &mut impl FnMut(&mut Summary, u64, &dyn std::fmt::Display),
) -> Value {
    // RIB entries always carry 4-octet ASNs (RFC 6396 §4.3.4).
    let ctx = WireContext::modern();
    let mut v = json!({"peer_index": e.peer_index, "originated_time": e.originated_time});
    if let Some(id) = e.path_id {
        v["path_id"] = json!(id);
    }
    match decode_attributes(&e.attributes, &ctx, AttrSource::MrtRib(af)) {
        Ok(attrs) => {
            v["attributes"] = json::attributes(&attrs.attributes);
            if !attrs.problems.is_empty() {
                let problems: Vec<String> =
                    attrs.problems.iter().map(ToString::to_string).collect();
                report(
                    summary,
                    record.offset,
                    &format_args!(
                        "RIB entry for peer {}: {}",
                        e.peer_index,
                        problems.join("; ")
                    ),
                );
                v["problems"] = json!(problems);
            } else if check {
                summary.checked += 1;
                let mut bytes = Vec::new();
                match encode_attributes(&attrs.attributes, &ctx, &mut bytes) {
                    Ok(()) if bytes == e.attributes => {}
                    Ok(()) => report(
                        summary,
                        record.offset,
                        &format_args!(
                            "re-encoded attributes of RIB entry for peer {} differ",
                            e.peer_index
                        ),
                    ),
                    Err(err) => report(
                        summary,
                        record.offset,
                        &format_args!("re-encoding failed: {err}"),
                    ),
                }
            }
        }
        Err(err) => {
            report(
                summary,
                record.offset,
                &format_args!("RIB entry for peer {}: {err}", e.peer_index),
            );
            v["error"] = json!(err.to_string());
        }
    }
    v
}

fn count_message(summary: &mut Summary, m: &Message) {
    *summary.by_message_type.entry(m.type_name()).or_default() += 1;
    if let Message::Update(u) = m {
        summary.prefixes_announced += u.announced().count() as u64;
        summary.prefixes_withdrawn += u.withdrawn_all().count() as u64;
    }
}

fn context_json(ctx: &WireContext) -> Value {
    json!({
        "four_octet_as": ctx.four_octet_as,
        "add_path_ipv4": ctx.add_path_ipv4,
        "add_path_ipv6": ctx.add_path_ipv6,
    })
}
