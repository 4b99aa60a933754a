//! `WatchEvents` and `petrel watch` against a live agent peering with FRR:
//! events arrive as routes and sessions change; a watcher that goes away
//! mid-stream and comes back with its last cursor gets everything it missed,
//! in order; a stream dropped half-read leaves the agent serving; bad cursors
//! are refused with a message that says what to do.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Petrel, petrel_yaml, wait_until};
use serde_json::Value;

fn cli(p: &Petrel, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(args)
        .arg("--socket")
        .arg(&p.socket)
        .output()
        .expect("petrel runs")
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{out:?}");
    out
}

/// A `petrel watch -o json` child whose lines arrive on a channel; killed
/// when dropped.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Watcher {
    fn start(p: &Petrel, extra: &[&str]) -> Watcher {
        let mut child = Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(["watch", "-o", "json", "--socket"])
            .arg(&p.socket)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("petrel watch runs");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).expect("one JSON object per line");
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Watcher { child, lines }
    }

    /// Events until one matches, at most `secs` seconds.
    fn until(&self, secs: u64, what: &str, f: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    let done = f(&v);
                    seen.push(v);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no event for {what} within {secs}s; saw {seen:#?}"),
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_best(v: &Value, prefix: &str, from: Option<&str>) -> bool {
    v["type"] == "best-path"
        && v["prefix"] == prefix
        && match from {
            Some(f) => v["best"]["from"] == f,
            None => v["best"].is_null(),
        }
}

fn seq(v: &Value) -> u64 {
    let c = v["cursor"].as_str().expect("cursor");
    let (_, n) = c.split_once('-').expect("EPOCH-SEQ");
    u64::from_str_radix(n, 16).expect("hex")
}

async fn channel(socket: &Path) -> tonic::transport::Channel {
    api::connect(socket).await.expect("connect to the API")
}

#[test]
fn a_watcher_that_reconnects_with_its_cursor_misses_nothing() {
    let mut lab = common::lab("watch");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.41.0.1/24"], &["10.41.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.41.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 timers bgp 3 9
 neighbor 10.41.0.1 remote-as 65001
 neighbor 10.41.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.70.0.0/24
 exit-address-family
"#,
    );
    let config = petrel_yaml(
        65001,
        "10.41.0.1",
        &["10.41.0.1"],
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: 10.41.0.2, asNumber: 65002, holdTime: 9s}\n",
    );
    let petrel = lab.petrel(&p, "node-1", &config);
    // Started before the session comes up: it sees it happen.
    petrel.wait_established("10.41.0.2", 30);
    let first = Watcher::start(&petrel, &[]);
    // Until the watch shows an event, routes are added (each one an event;
    // the watch's own start takes a moment). Then a hard reset: it sees the
    // session go down and come back, and FRR's route return.
    let mut n = 0;
    wait_until(10, "the watch to start", || {
        n += 1;
        ok(cli(
            &petrel,
            &[
                "route",
                "add",
                &format!("10.79.{n}.0/24"),
                "--client",
                "sync",
            ],
        ));
        std::thread::sleep(Duration::from_millis(200));
        first
            .lines
            .try_recv()
            .map(|_| ())
            .map_err(|e| format!("{e}\n{}", petrel.log_tail()))
    });
    ok(cli(&petrel, &["peer", "reset", "frr"]));
    let up = first.until(30, "the session to come up again", |v| {
        v["type"] == "peer-state" && v["address"] == "10.41.0.2" && v["to"] == "Established"
    });
    assert_eq!(up.last().expect("event")["name"], "frr");
    first.until(20, "FRR's route", |v| {
        is_best(v, "10.70.0.0/24", Some("10.41.0.2"))
    });

    ok(cli(
        &petrel,
        &["route", "add", "10.71.0.0/24", "--client", "w"],
    ));
    let seen = first.until(10, "the API route", |v| {
        is_best(v, "10.71.0.0/24", Some("local"))
    });
    let last = seen.last().expect("event").clone();
    assert!(last["time_unix_ms"].as_u64().is_some_and(|t| t > 0));
    // The watcher goes away mid-stream.
    drop(first);

    // What happens while nobody watches.
    ok(cli(
        &petrel,
        &["route", "add", "10.72.0.0/24", "--client", "w"],
    ));
    ok(cli(
        &petrel,
        &["route", "del", "10.71.0.0/24", "--client", "w"],
    ));
    ok(cli(
        &petrel,
        &["peer", "disable", "frr", "-m", "maintenance"],
    ));
    wait_until(10, "the session to go down", || {
        match petrel.peer("10.41.0.2") {
            Some(p) if p["state"] != "Established" && petrel.best("10.70.0.0/24").is_none() => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    });
    // The agent still answers after a client vanished mid-stream.
    ok(cli(&petrel, &["peers"]));

    // Back with the cursor: everything missed, in order, nothing before it.
    let cursor = last["cursor"].as_str().expect("cursor");
    let again = Watcher::start(&petrel, &["--resume", cursor]);
    let missed = again.until(10, "FRR's route to be withdrawn", |v| {
        is_best(v, "10.70.0.0/24", None)
    });
    let seqs: Vec<u64> = missed.iter().map(seq).collect();
    assert_eq!(
        seqs[0],
        seq(&last) + 1,
        "nothing lost at the start: {missed:#?}"
    );
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let pos = |f: &dyn Fn(&Value) -> bool| {
        missed
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("missing event in {missed:#?}"))
    };
    let added = pos(&|v| is_best(v, "10.72.0.0/24", Some("local")));
    let removed = pos(&|v| is_best(v, "10.71.0.0/24", None));
    let down = pos(&|v| {
        v["type"] == "peer-state" && v["from"] == "Established" && v["address"] == "10.41.0.2"
    });
    assert!(added < removed && removed < down, "{missed:#?}");

    // Filters: only peer events, after the same cursor.
    let peers_only = Watcher::start(&petrel, &["--resume", cursor, "--type", "peer"]);
    let v = peers_only.until(10, "the peer event", |v| v["type"] == "peer-state");
    assert!(v.iter().all(|e| e["type"] != "best-path"), "{v:#?}");

    // Bad cursors say what to do.
    let out = cli(&petrel, &["watch", "--resume", "garbage"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resume_after"),
        "{out:?}"
    );
    let foreign = format!("1-{:x}", seq(&last));
    let out = cli(&petrel, &["watch", "--resume", &foreign]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("earlier run"),
        "{out:?}"
    );

    // `--count` ends a scripted watch.
    ok(cli(&petrel, &["peer", "enable", "frr"]));
    let out = ok(cli(
        &petrel,
        &["watch", "--resume", cursor, "--count", "2", "-o", "json"],
    ));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    // A ListRoutes stream dropped after its first message, many times: the
    // agent keeps serving and routing.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for _ in 0..20 {
            let mut rib =
                proto::v1::rib_service_client::RibServiceClient::new(channel(&petrel.socket).await);
            let mut s = rib
                .list_routes(proto::v1::ListRoutesRequest::default())
                .await
                .expect("ListRoutes")
                .into_inner();
            assert!(s.message().await.expect("a route").is_some());
            drop(s);
        }
    });
    petrel.wait_established("10.41.0.2", 30);
    petrel.wait_route("10.70.0.0/24", 20);
}
