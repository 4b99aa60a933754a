//! Replaying a recorded speaker without sockets, and golden files.
//!
//! A recording is a directory with `config.json` ([`StartRecord`]) and
//! `events.jsonl` (one [`Recorded`] input a line), from a running speaker
//! (`petrel agent --record-speaker DIR`) or written by a test. [`replay`] feeds the
//! inputs to the speaker's core on a manual clock and writes down what it
//! does as text: the UPDATEs each peer is sent (decoded), the FIB's changes,
//! the peers' states and the commands their tasks get, and the final RIB.
//! [`check_golden`] compares that with the files under `output/`; with
//! `PETREL_GOLDEN_UPDATE=1` it writes them instead.
//!
//! The text is deterministic: lines name the input that caused them
//! (`#index @ms`), and where the order of one input's effects is not
//! meaningful (several peers, the prefixes of one message or of one FIB
//! batch) it is sorted. Messages to one peer keep the order they are sent
//! in.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::clock::Clock;
use super::core::{Core, Output, Reply};
use super::record::{RecordError, Recorded, StartRecord};
use super::view::{FibEvent, RouteFilter, RouteView};
use crate::journal::WatchEventKind;
use crate::rib::{Attrs, PeerId};
use crate::session::PeerCommand;
use crate::wire::{Message, WireContext};

/// The environment variable that makes [`check_golden`] rewrite the golden
/// files instead of comparing with them.
pub const GOLDEN_ENV: &str = "PETREL_GOLDEN_UPDATE";

/// What a replay wrote down, by file name under `output/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    /// File name → content.
    pub files: BTreeMap<String, String>,
    /// The Loc-RIB at the end, as [`super::Speaker::routes`] lists it.
    pub routes: Vec<RouteView>,
}

/// Why a golden check failed.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    /// The recording could not be read or replayed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A golden file is missing.
    #[error("{0}: missing (run with {GOLDEN_ENV}=1 to write it)")]
    Missing(PathBuf),
    /// The output differs from the golden file.
    #[error(
        "{path}:{line}: the replay differs from the golden file\n  golden: {golden}\n  now:    {now}\n(run with {GOLDEN_ENV}=1 to accept the new output)"
    )]
    Differs {
        /// The golden file.
        path: PathBuf,
        /// The first line that differs (1-based).
        line: usize,
        /// That line in the golden file.
        golden: String,
        /// That line now.
        now: String,
    },
    /// The golden files were written ([`GOLDEN_ENV`]): nothing was
    /// compared, so this is not a pass.
    #[error("{0}: golden files written; review the diff and run again without {GOLDEN_ENV}")]
    Updated(PathBuf),
}

/// The latest input time a replay takes.
const MAX_AT: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// Reads a recording directory.
pub fn load(dir: &Path) -> Result<(StartRecord, Vec<Recorded>), RecordError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| RecordError::Io { path, source })
    };
    let cfg_path = dir.join("config.json");
    let start: StartRecord =
        serde_json::from_str(&read("config.json")?).map_err(|source| RecordError::Json {
            path: cfg_path,
            line: 0,
            source,
        })?;
    let ev_path = dir.join("events.jsonl");
    let mut inputs = Vec::new();
    for (i, line) in read("events.jsonl")?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec: Recorded = serde_json::from_str(line).map_err(|source| RecordError::Json {
            path: ev_path.clone(),
            line: i + 1,
            source,
        })?;
        // The manual clock adds this to an instant: a century is past any
        // real recording and far from overflowing.
        if rec.at() > MAX_AT {
            return Err(RecordError::TooLate {
                path: ev_path.clone(),
                line: i + 1,
                at: rec.at(),
            });
        }
        inputs.push(rec);
    }
    Ok((start, inputs))
}

/// Writes a recording directory (for streams a test builds).
pub fn save(dir: &Path, start: &StartRecord, inputs: &[Recorded]) -> Result<(), RecordError> {
    let io = |path: PathBuf| move |source| RecordError::Io { path, source };
    std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
    let json = |path: &Path, e| RecordError::Json {
        path: path.to_path_buf(),
        line: 0,
        source: e,
    };
    let cfg_path = dir.join("config.json");
    let cfg = serde_json::to_string_pretty(start).map_err(|e| json(&cfg_path, e))?;
    std::fs::write(&cfg_path, cfg + "\n").map_err(io(cfg_path.clone()))?;
    let ev_path = dir.join("events.jsonl");
    let mut text = String::new();
    for r in inputs {
        text += &serde_json::to_string(r).map_err(|e| json(&ev_path, e))?;
        text.push('\n');
    }
    std::fs::write(&ev_path, text).map_err(io(ev_path.clone()))
}

/// Replays inputs from the start they were recorded from.
pub fn replay(start: &StartRecord, inputs: &[Recorded]) -> Result<Outputs, RecordError> {
    let mut core = Core::new(&start.config, start.restart, Clock::manual());
    let mut log = Log::default();
    for (i, rec) in inputs.iter().enumerate() {
        core.clock.advance_to(rec.at());
        let input = rec.input.to_input(&core)?;
        let tag = format!("#{i} @{}ms", rec.at_ms);
        let reply = core.input(input);
        log.reply(&tag, &reply);
        let outputs: Vec<Output> = core.take_outputs().collect();
        log.outputs(&core, &tag, outputs);
    }
    Ok(log.finish(&core))
}

/// Replays the recording in `dir` and compares the outputs with the golden
/// files in `dir/output/`, or writes them when [`GOLDEN_ENV`] is set (and
/// then answers [`GoldenError::Updated`], so a run that regenerates never
/// passes as one that compared).
pub fn check_golden(dir: &Path) -> Result<(), GoldenError> {
    let (start, inputs) = load(dir)?;
    let outputs = replay(&start, &inputs)?;
    let out_dir = dir.join("output");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GoldenError::Record(RecordError::Io { path, source })
    };
    if std::env::var_os(GOLDEN_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        std::fs::create_dir_all(&out_dir).map_err(io(&out_dir))?;
        for (name, text) in &outputs.files {
            let path = out_dir.join(name);
            std::fs::write(&path, text).map_err(io(&path))?;
        }
        return Err(GoldenError::Updated(out_dir));
    }
    for (name, text) in &outputs.files {
        let path = out_dir.join(name);
        let golden = match std::fs::read_to_string(&path) {
            Ok(g) => g,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(GoldenError::Missing(path));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        if golden == *text {
            continue;
        }
        let (mut g, mut n) = (golden.lines(), text.lines());
        let mut line = 1;
        loop {
            match (g.next(), n.next()) {
                (Some(a), Some(b)) if a == b => line += 1,
                (a, b) => {
                    return Err(GoldenError::Differs {
                        path,
                        line,
                        golden: a.unwrap_or("(end of file)").to_string(),
                        now: b.unwrap_or("(end of file)").to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The text being written down.
#[derive(Default)]
struct Log {
    /// Per peer, what it is sent, in order.
    updates: BTreeMap<PeerId, Vec<String>>,
    fib: Vec<String>,
    /// Peer states, peer table changes and commands to peer tasks.
    peers: Vec<String>,
}

impl Log {
    fn reply(&mut self, tag: &str, reply: &Reply) {
        match reply {
            Reply::Done => {}
            Reply::Control(Ok(())) => self.peers.push(format!("{tag} control: done")),
            Reply::Control(Err(e)) => self.peers.push(format!("{tag} control: refused: {e}")),
            Reply::Accept(Some(id)) => self.peers.push(format!("{tag} accept: to peer {id}")),
            Reply::Accept(None) => self.peers.push(format!("{tag} accept: closed")),
        }
    }

    fn outputs(&mut self, core: &Core, tag: &str, outputs: Vec<Output>) {
        let mut peers = Vec::new();
        let mut fib = Vec::new();
        let mut sent: BTreeMap<PeerId, Vec<String>> = BTreeMap::new();
        for o in outputs {
            match o {
                Output::StartPeer { id, config, .. } => peers.push(format!(
                    "peer {id}: start task for {}:{} AS{} passive={} offering [{}]",
                    config.address,
                    config.port,
                    config.fsm.peer_asn,
                    config.fsm.passive,
                    capability_names(&config.fsm.capabilities)
                )),
                Output::Peer(id, PeerCommand::Send { session, messages }) => {
                    let ctx = core
                        .peers
                        .get(&id)
                        .and_then(|p| p.negotiated.as_deref())
                        .map_or(WireContext::modern(), |n| n.tx);
                    sent.entry(id).or_default().extend(
                        messages
                            .iter()
                            .map(|m| format!("session {session}: {}", render_message(m, &ctx))),
                    );
                }
                Output::Peer(id, c) => peers.push(format!("peer {id}: {}", render_command(&c))),
                Output::Forget(id) => peers.push(format!("peer {id}: task gone")),
                Output::Fib(FibEvent::Changes(changes)) => {
                    let mut lines: Vec<String> = changes
                        .iter()
                        .map(|c| match &c.next_hops {
                            Some(nh) => format!(
                                "{} via {}",
                                c.prefix,
                                nh.iter()
                                    .map(|a| a.to_string())
                                    .collect::<Vec<_>>()
                                    .join(",")
                            ),
                            None => format!("{} removed", c.prefix),
                        })
                        .collect();
                    lines.sort();
                    fib.extend(lines);
                }
                Output::Fib(FibEvent::Converged) => fib.push("converged".into()),
                Output::Journal(batch) => {
                    for (_, ev) in batch {
                        match ev {
                            WatchEventKind::PeerAdded { name, address } => {
                                peers.push(format!("peer {name} ({address}) added"))
                            }
                            WatchEventKind::PeerRemoved { name, address } => {
                                peers.push(format!("peer {name} ({address}) removed"))
                            }
                            WatchEventKind::PeerState {
                                name,
                                address,
                                from,
                                to,
                                last_error,
                            } => peers.push(format!(
                                "peer {name} ({address}) {from} -> {to}{}",
                                last_error
                                    .map(|e| format!(" (last error: {e})"))
                                    .unwrap_or_default()
                            )),
                            WatchEventKind::BestPath { .. } => {}
                        }
                    }
                }
                Output::Garbage(_) => {}
            }
        }
        // Which peer hears first within one input follows the order of
        // hash maps: not meaningful.
        peers.sort();
        self.peers
            .extend(peers.into_iter().map(|l| format!("{tag} {l}")));
        self.fib
            .extend(fib.into_iter().map(|l| format!("{tag} {l}")));
        for (id, mut lines) in sent {
            // Within one input, the UPDATEs of different attribute sets go
            // out in the order of a hash map: not meaningful, so sorted;
            // End-of-RIB stays after the table it ends.
            lines.sort_by(|a, b| (a.contains("End-of-RIB"), a).cmp(&(b.contains("End-of-RIB"), b)));
            self.updates
                .entry(id)
                .or_default()
                .extend(lines.into_iter().map(|l| format!("{tag} {l}")));
        }
    }

    fn finish(self, core: &Core) -> Outputs {
        let mut files = BTreeMap::new();
        let mut updates = String::new();
        for (id, lines) in &self.updates {
            let name = core
                .peers
                .get(id)
                .map(|p| format!("{} ({})", p.config.name, p.address))
                .unwrap_or_default();
            let _ = writeln!(updates, "== peer {id} {name}");
            for l in lines {
                let _ = writeln!(updates, "{l}");
            }
        }
        files.insert("updates.txt".to_string(), updates);
        files.insert("fib.txt".to_string(), lines(&self.fib));
        let mut peers = lines(&self.peers);
        let _ = writeln!(peers, "== at the end");
        for p in core.peer_status() {
            let prefixes: Vec<String> = p
                .prefixes
                .iter()
                .map(|(f, c)| format!("{f} {c:?}"))
                .collect();
            let _ = writeln!(
                peers,
                "{} ({}) AS{} {} stale={} disabled={} last_error={:?} capabilities=[{}] prefixes=[{}]",
                p.name,
                p.address,
                p.asn,
                p.state,
                p.stale_routes,
                p.disabled,
                p.last_error,
                p.capabilities.join(" "),
                prefixes.join("; ")
            );
        }
        files.insert("peers.txt".to_string(), peers);
        let mut rib = String::new();
        let _ = writeln!(
            rib,
            "== Loc-RIB (converged={}, deferring={})",
            core.converged,
            core.rib.deferring()
        );
        let routes = core.routes(&RouteFilter::default());
        for r in &routes {
            for p in &r.paths {
                let from = p.from.map_or("local".to_string(), |a| a.to_string());
                let _ = writeln!(
                    rib,
                    "{} {} from {from} id {}: {}",
                    r.prefix,
                    if p.best { "best" } else { "    " },
                    p.path_id,
                    render_attrs(&p.attrs)
                );
            }
        }
        files.insert("rib.txt".to_string(), rib);
        Outputs { files, routes }
    }
}

fn lines(v: &[String]) -> String {
    let mut s = String::new();
    for l in v {
        s += l;
        s.push('\n');
    }
    s
}

fn capability_names(caps: &[crate::wire::Capability]) -> String {
    caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(" ")
}

fn render_command(c: &PeerCommand) -> String {
    match c {
        PeerCommand::SetCapabilities(caps) => {
            format!("offer capabilities [{}]", capability_names(caps))
        }
        PeerCommand::Incoming(_) => "incoming connection".into(),
        PeerCommand::Send { session, messages } => {
            format!("send {} messages on session {session}", messages.len())
        }
        PeerCommand::Refresh(af) => format!("ask for a refresh of {af}"),
        PeerCommand::Reset {
            subcode,
            restart_after,
        } => format!("reset (cease subcode {subcode}, back after {restart_after:?})"),
        PeerCommand::Disable(m) => format!("disable ({m:?})"),
        PeerCommand::Enable => "enable".into(),
        PeerCommand::Close => "close without a NOTIFICATION (restart)".into(),
        PeerCommand::Stop { subcode, message } => {
            format!("stop (cease subcode {subcode}, {message:?})")
        }
    }
}

/// One message as a line: End-of-RIB, withdrawals, or announcements with
/// their attributes, prefixes sorted.
fn render_message(bytes: &[u8], ctx: &WireContext) -> String {
    let update = match Message::decode(bytes, ctx) {
        Ok(d) => match d.message {
            Message::Update(u) => u,
            other => return format!("{} message", other.type_name()),
        },
        Err(e) => return format!("undecodable message: {e}"),
    };
    if let Some(af) = update.as_end_of_rib() {
        return format!("End-of-RIB {af}");
    }
    let mut parts = Vec::new();
    let mut withdrawn: Vec<String> = update.withdrawn_all().map(|n| n.to_string()).collect();
    withdrawn.sort();
    if !withdrawn.is_empty() {
        parts.push(format!("withdraw {}", withdrawn.join(" ")));
    }
    let mut announced: Vec<String> = update.announced().map(|n| n.to_string()).collect();
    announced.sort();
    if !announced.is_empty() {
        let attrs = Attrs::from_update(&update.attributes, ctx.four_octet_as);
        parts.push(format!(
            "announce {} {{{}}}",
            announced.join(" "),
            render_attrs(&attrs)
        ));
    }
    parts.join("; ")
}

fn render_attrs(a: &Attrs) -> String {
    let mut v = Vec::new();
    if let Some(o) = a.origin {
        v.push(format!("origin {o}"));
    }
    v.push(format!("as-path [{}]", a.as_path));
    if let Some(nh) = a.next_hop {
        v.push(format!("next-hop {nh}"));
    }
    if let Some(ll) = a.link_local {
        v.push(format!("link-local {ll}"));
    }
    if let Some(m) = a.med {
        v.push(format!("med {m}"));
    }
    if let Some(lp) = a.local_pref {
        v.push(format!("local-pref {lp}"));
    }
    if !a.communities.is_empty() {
        let c: Vec<String> = a.communities.iter().map(|c| c.to_string()).collect();
        v.push(format!("communities {}", c.join(",")));
    }
    if !a.large_communities.is_empty() {
        let c: Vec<String> = a.large_communities.iter().map(|c| c.to_string()).collect();
        v.push(format!("large-communities {}", c.join(",")));
    }
    if let Some(o) = a.originator_id {
        v.push(format!("originator {o}"));
    }
    if !a.cluster_list.is_empty() {
        let c: Vec<String> = a.cluster_list.iter().map(|c| c.to_string()).collect();
        v.push(format!("cluster-list {}", c.join(",")));
    }
    if !a.other.is_empty() {
        v.push(format!("{} other attributes", a.other.len()));
    }
    v.join(" ")
}
