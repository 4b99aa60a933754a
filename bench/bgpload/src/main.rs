//! `bgpload feed|sink|clients`: see the library's documentation.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use anyhow::{Context, bail};
use bgpload::engine::{Engine, Options, Payload, PeerSpec};
use bgpload::events::{emit, now};
use bgpload::wire;
use clap::{Parser, ValueEnum};
use serde_json::json;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// One eBGP session; `go` streams the table, `withdraw` withdraws it.
    Feed,
    /// One session that counts the distinct prefixes it holds.
    Sink,
    /// M iBGP sessions from M consecutive local addresses (route-reflector
    /// clients); on `go` each announces K prefixes.
    Clients,
}

/// A BGP load generator speaking the shared harness's tool protocol.
#[derive(Parser, Debug)]
#[command(name = "bgpload")]
struct Args {
    mode: Mode,
    /// The device's address.
    #[arg(long)]
    remote: Ipv4Addr,
    #[arg(long, default_value_t = 179)]
    port: u16,
    /// Local address to bind (feed, sink).
    #[arg(long)]
    local: Option<Ipv4Addr>,
    /// clients: the first of M consecutive local addresses.
    #[arg(long)]
    first_local: Option<Ipv4Addr>,
    #[arg(long)]
    asn: u32,
    #[arg(long)]
    router_id: Option<Ipv4Addr>,
    #[arg(long, default_value_t = 240)]
    hold: u16,
    /// feed: prefixes in the table.
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// feed: the next hop (default: --local).
    #[arg(long)]
    next_hop: Option<Ipv4Addr>,
    /// sink, clients: the prefix count that means done (clients: (M-1)*K).
    #[arg(long)]
    target: Option<usize>,
    /// clients: sessions.
    #[arg(long, default_value_t = 10)]
    m: u32,
    /// clients: prefixes per client.
    #[arg(long, default_value_t = 4)]
    k: u32,
    /// Emit a progress event every this many seconds (0: never).
    #[arg(long, default_value_t = 0.0)]
    progress: f64,
    /// Exit when the session closes (feed, sink).
    #[arg(long)]
    exit_on_close: bool,
    /// Reconnect after 1 s when a session fails before Established.
    #[arg(long)]
    retry: bool,
    /// Count a route that comes back carrying the session's own router ID as
    /// ORIGINATOR_ID as withdrawn, as a route-reflector client does (RFC
    /// 4456 §8). Off by default, like the Python tool, which counts it.
    #[arg(long)]
    originator_check: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_fd_limit();
    let opts = Options {
        remote: SocketAddrV4::new(args.remote, args.port),
        asn: args.asn,
        hold: args.hold,
        progress: args.progress,
        exit_on_close: args.exit_on_close,
        retry: args.retry,
        originator_check: args.originator_check,
    };
    let one = |count_rx, target| -> anyhow::Result<Vec<PeerSpec>> {
        let router_id = args
            .router_id
            .or(args.local)
            .context("--router-id or --local is needed")?;
        Ok(vec![PeerSpec {
            local: args.local,
            router_id,
            count_rx,
            target,
        }])
    };
    let (peers, payload) = match args.mode {
        Mode::Feed => {
            let next_hop = args
                .next_hop
                .or(args.local)
                .context("feed needs --next-hop or --local")?;
            let t0 = now();
            let t = wire::build_table(args.n, args.asn, next_hop, args.seed);
            emit(
                "table_ready",
                json!({"build_s": ((now() - t0) * 1000.0).round() / 1000.0, "prefixes": t.prefixes,
                       "attr_sets": t.attr_sets, "announce_msgs": t.announce_msgs,
                       "announce_bytes": t.announce.len(), "withdraw_msgs": t.withdraw_msgs,
                       "withdraw_bytes": t.withdraw.len()}),
            );
            let payload = Payload::Table {
                announce: t.announce.into(),
                withdraw: t.withdraw.into(),
            };
            (one(false, 0)?, payload)
        }
        Mode::Sink => (one(true, args.target.unwrap_or(0))?, Payload::None),
        Mode::Clients => {
            let first = args.first_local.context("clients needs --first-local")?;
            if args.m == 0 || args.k == 0 {
                bail!("clients needs --m and --k of at least 1");
            }
            let target = args.target.unwrap_or(((args.m - 1) * args.k) as usize);
            let mut peers = Vec::with_capacity(args.m as usize);
            let mut updates: Vec<Arc<[u8]>> = Vec::with_capacity(args.m as usize);
            for i in 0..args.m {
                let addr = Ipv4Addr::from(u32::from(first) + i);
                updates.push(wire::client_update(i, args.k, addr).into());
                peers.push(PeerSpec {
                    local: Some(addr),
                    router_id: addr,
                    count_rx: true,
                    target,
                });
            }
            (peers, Payload::PerPeer(updates))
        }
    };
    let mode = match args.mode {
        Mode::Feed => "feed",
        Mode::Sink => "sink",
        Mode::Clients => "clients",
    };
    let mut engine = Engine::new(opts, peers, payload).context("opening the sessions")?;
    emit("started", json!({"mode": mode, "peers": engine.len()}));
    engine.run().context("the event loop")?;
    emit("exit", json!({}));
    Ok(())
}

/// Thousands of sessions need thousands of descriptors: take the hard limit.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
