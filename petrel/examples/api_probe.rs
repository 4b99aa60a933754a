//! A client that reads the API at a fixed rate and records how long each
//! call takes: `ListPeers` (the whole stream) and `ExplainRoute` for prefixes
//! taken in turn from a file. `bench/run-api-load.sh` runs it beside an
//! agent ingesting a full table, to show that reads never wait for routing.
//!
//! ```text
//! api_probe SOCKET PREFIX_FILE OUT_JSON [RATE_HZ] [SECONDS]
//! ```
//!
//! It waits (up to a minute) for the socket, then runs until SECONDS pass
//! (default 600) or the agent goes away, rewriting OUT_JSON every second with
//! the counts and latency percentiles in milliseconds.
//!
//! `PETREL_PROBE_FLOOD` (a comma-separated list) adds floods beside the
//! probe, each a loop of calls back to back: `routes` (`ListRoutes` of the
//! whole table, read to the end), `adjrib` (`ListAdjRibIn` of the first
//! peer), `metrics` (`GET /metrics` on `PETREL_PROBE_METRICS`, by default
//! 127.0.0.1:9479, at 20 Hz).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use proto::v1 as pb;
use serde_json::json;

#[derive(Default)]
struct Samples {
    ms: Vec<f64>,
    errors: u64,
}

impl Samples {
    fn summary(&self) -> serde_json::Value {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let i = ((v.len() as f64 - 1.0) * p).round() as usize;
            (v[i] * 1000.0).round() / 1000.0
        };
        json!({
            "calls": v.len(),
            "errors": self.errors,
            "p50_ms": q(0.50),
            "p90_ms": q(0.90),
            "p99_ms": q(0.99),
            "max_ms": q(1.0),
        })
    }
}

/// What the floods did, shared with their tasks.
#[derive(Default)]
struct Floods {
    routes: Samples,
    routes_listed: u64,
    adj_rib: Samples,
    adj_rib_listed: u64,
    metrics: Samples,
}

impl Floods {
    fn summary(&self) -> serde_json::Value {
        json!({
            "list_routes": self.routes.summary(),
            "list_routes_routes": self.routes_listed,
            "adj_rib_in": self.adj_rib.summary(),
            "adj_rib_in_routes": self.adj_rib_listed,
            "metrics": self.metrics.summary(),
        })
    }
}

type Shared = std::sync::Arc<std::sync::Mutex<Floods>>;

/// Starts the floods `PETREL_PROBE_FLOOD` names.
fn start_floods(channel: tonic::transport::Channel, floods: &Shared) {
    let wanted = std::env::var("PETREL_PROBE_FLOOD").unwrap_or_default();
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    if wanted.contains(&"routes") {
        let (mut rib, f) = (
            pb::rib_service_client::RibServiceClient::new(channel.clone()),
            floods.clone(),
        );
        tokio::spawn(async move {
            loop {
                let t = Instant::now();
                let r = rib.list_routes(pb::ListRoutesRequest::default()).await;
                let n = drain(r.map(tonic::Response::into_inner)).await;
                record(&f, t, n, |f| (&mut f.routes, &mut f.routes_listed));
            }
        });
    }
    if wanted.contains(&"adjrib") {
        let mut peers = pb::peer_service_client::PeerServiceClient::new(channel.clone());
        let (mut rib, f) = (
            pb::rib_service_client::RibServiceClient::new(channel),
            floods.clone(),
        );
        tokio::spawn(async move {
            let mut peer = None;
            loop {
                let Some(p) = peer.clone() else {
                    if let Ok(r) = peers.list_peers(pb::ListPeersRequest {}).await
                        && let Ok(Some(first)) = r.into_inner().message().await
                    {
                        peer = Some(first.address);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let t = Instant::now();
                let r = rib.list_adj_rib_in(pb::AdjRibRequest { peer: p }).await;
                let n = drain(r.map(tonic::Response::into_inner)).await;
                record(&f, t, n, |f| (&mut f.adj_rib, &mut f.adj_rib_listed));
            }
        });
    }
    if wanted.contains(&"metrics") {
        let addr =
            std::env::var("PETREL_PROBE_METRICS").unwrap_or_else(|_| "127.0.0.1:9479".into());
        let f = floods.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                let t = Instant::now();
                let ok = scrape(&addr).await;
                let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
                match ok {
                    Some(_) => f.metrics.ms.push(t.elapsed().as_secs_f64() * 1000.0),
                    None => f.metrics.errors += 1,
                }
            }
        });
    }
}

/// Reads a stream of routes to its end: how many, or `None` on error.
async fn drain(r: Result<tonic::Streaming<pb::Route>, tonic::Status>) -> Option<u64> {
    let mut s = r.ok()?;
    let mut n = 0;
    while let Some(_route) = s.message().await.ok()? {
        n += 1;
    }
    Some(n)
}

/// Records one flood call that started at `t`.
fn record(
    f: &Shared,
    t: Instant,
    n: Option<u64>,
    which: impl FnOnce(&mut Floods) -> (&mut Samples, &mut u64),
) {
    let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
    let (samples, listed) = which(&mut f);
    match n {
        Some(n) => {
            samples.ms.push(t.elapsed().as_secs_f64() * 1000.0);
            *listed += n;
        }
        None => samples.errors += 1,
    }
}

/// `GET /metrics`: the body's length, or `None`.
async fn scrape(addr: &str) -> Option<usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).await.ok()?;
    body.starts_with(b"HTTP/1.1 200").then_some(body.len())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        anyhow::bail!("usage: api_probe SOCKET PREFIX_FILE OUT_JSON [RATE_HZ] [SECONDS]");
    }
    let socket = PathBuf::from(&args[1]);
    let prefixes: Vec<String> = std::fs::read_to_string(&args[2])
        .with_context(|| format!("cannot read {}", args[2]))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    anyhow::ensure!(!prefixes.is_empty(), "{} has no prefixes", args[2]);
    let out = PathBuf::from(&args[3]);
    let rate: f64 = args.get(4).map_or(Ok(20.0), |s| s.parse())?;
    let seconds: u64 = args.get(5).map_or(Ok(600), |s| s.parse())?;

    let started = Instant::now();
    while !socket.exists() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "no socket at {} after 60 s",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = loop {
        match api::connect(&socket).await {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    let floods: Shared = Shared::default();
    start_floods(channel.clone(), &floods);
    let mut peers = pb::peer_service_client::PeerServiceClient::new(channel.clone());
    let mut rib = pb::rib_service_client::RibServiceClient::new(channel);
    let (mut list, mut explain, mut found) = (Samples::default(), Samples::default(), 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    // A late tick is not made up for: the rate stays what was asked.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written = Instant::now();
    let run_from = Instant::now();
    let mut gone = false;
    for i in 0u64.. {
        // The agent removes its socket when it stops.
        gone |= !socket.exists();
        if run_from.elapsed() >= Duration::from_secs(seconds) || gone {
            break;
        }
        tick.tick().await;
        let t = Instant::now();
        match peers.list_peers(pb::ListPeersRequest {}).await {
            Ok(r) => {
                let mut s = r.into_inner();
                loop {
                    match s.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            list.errors += 1;
                            break;
                        }
                    }
                }
                list.ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Err(e) if e.code() == tonic::Code::Unavailable => gone = true,
            Err(_) => list.errors += 1,
        }
        let prefix = prefixes[(i as usize) % prefixes.len()].clone();
        let t = Instant::now();
        match rib.explain_route(pb::ExplainRouteRequest { prefix }).await {
            Ok(_) => {
                found += 1;
                explain.ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            // Not there yet is an answer too, and as quick to give.
            Err(e) if e.code() == tonic::Code::NotFound => {
                explain.ms.push(t.elapsed().as_secs_f64() * 1000.0)
            }
            Err(e) if e.code() == tonic::Code::Unavailable => gone = true,
            Err(_) => explain.errors += 1,
        }
        if written.elapsed() >= Duration::from_secs(1) {
            write_summary(&out, rate, run_from, &list, &explain, found, &floods)?;
            written = Instant::now();
        }
    }
    write_summary(&out, rate, run_from, &list, &explain, found, &floods)
}

fn write_summary(
    out: &Path,
    rate: f64,
    run_from: Instant,
    list: &Samples,
    explain: &Samples,
    found: u64,
    floods: &Shared,
) -> anyhow::Result<()> {
    let floods = floods.lock().unwrap_or_else(|e| e.into_inner()).summary();
    let v = json!({
        "rate_hz": rate,
        "seconds": run_from.elapsed().as_secs_f64(),
        "list_peers": list.summary(),
        "explain_route": explain.summary(),
        "explain_found": found,
        "floods": floods,
    });
    std::fs::write(out, serde_json::to_string_pretty(&v)?)?;
    Ok(())
}
