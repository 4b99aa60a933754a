//! The tool's protocol end to end on loopback: a small BGP peer in the test
//! stands in for the device (accepts, answers OPEN, reflects or counts), and
//! the `bgpload` binary is driven by stdin commands as the harness drives it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bgpload::wire;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// The tool as a child process, its events read by a thread.
struct Tool {
    child: Child,
    stdin: ChildStdin,
    events: Receiver<Value>,
}

impl Tool {
    fn start(args: &[&str]) -> Tool {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bgpload"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("bgpload starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).expect("each line is JSON");
                assert!(v["t"].as_f64().is_some(), "every event has a time: {line}");
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Tool {
            child,
            stdin,
            events,
        }
    }

    fn cmd(&mut self, c: &str) {
        writeln!(self.stdin, "{c}").expect("the tool reads commands");
    }

    /// The next event named `ev`, failing on an error event or after `WAIT`.
    fn wait(&mut self, ev: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["ev"] == ev => return v,
                Ok(v) => {
                    let name = v["ev"].as_str().unwrap_or("");
                    assert!(
                        ![
                            "notification",
                            "closed",
                            "connect_failed",
                            "send_error",
                            "recv_error"
                        ]
                        .contains(&name),
                        "waiting for {ev}: {v}"
                    );
                }
                Err(RecvTimeoutError::Timeout) => panic!("no {ev} within {WAIT:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("the tool exited before {ev}"),
            }
        }
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one message; `None` at end of stream.
fn read_msg(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 19];
    s.read_exact(&mut head).ok()?;
    let len = u16::from_be_bytes([head[16], head[17]]) as usize;
    let mut body = vec![0; len - 19];
    s.read_exact(&mut body).ok()?;
    Some((head[18], body))
}

/// Accepts the session as the device would: its OPEN, our OPEN and KEEPALIVE.
fn accept_session(s: &mut TcpStream) {
    let (t, body) = read_msg(s).expect("an OPEN");
    assert_eq!(t, wire::T_OPEN);
    assert!(wire::parse_open(&body).is_some());
    s.write_all(&wire::open(65001, 90, Ipv4Addr::new(127, 0, 0, 1)))
        .expect("write");
    s.write_all(&wire::keepalive()).expect("write");
}

fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port().to_string();
    (l, port)
}

#[test]
fn clients_reach_every_others_prefixes_through_a_reflector() {
    let (m, k) = (25usize, 4usize);
    let (l, port) = listener();
    let peers: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let shared = peers.clone();
    std::thread::spawn(move || {
        for _ in 0..m {
            let Ok((mut s, _)) = l.accept() else { return };
            accept_session(&mut s);
            shared
                .lock()
                .expect("lock")
                .push(s.try_clone().expect("clone"));
            let others = shared.clone();
            std::thread::spawn(move || {
                // A reflector that sends every UPDATE to all, the source too:
                // without --originator-check (as here, and as bgptool.py
                // counts) a client's own routes count toward its target.
                while let Some((t, body)) = read_msg(&mut s) {
                    if t == wire::T_UPDATE {
                        let m = wire::msg(t, &body);
                        for o in others.lock().expect("lock").iter_mut() {
                            let _ = o.write_all(&m);
                        }
                    }
                }
            });
        }
    });
    let mut tool = Tool::start(&[
        "clients",
        "--remote",
        "127.0.0.1",
        "--port",
        &port,
        "--first-local",
        "127.0.9.1",
        "--asn",
        "65000",
        "--m",
        &m.to_string(),
        "--k",
        &k.to_string(),
        "--retry",
    ]);
    assert_eq!(tool.wait("started")["peers"], m);
    assert_eq!(tool.wait("all_established")["n"], m);
    // The reflector only forwards among sessions it knows; all are in now.
    let deadline = Instant::now() + WAIT;
    while peers.lock().expect("lock").len() < m && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    tool.cmd("go");
    tool.wait("announce_start");
    let done = tool.wait("all_reached");
    assert_eq!(done["n"], m);
    // Each holds the others' prefixes; its own come back too, sooner or later.
    let total = done["total"].as_u64().expect("a count") as usize;
    assert!(
        (m * (m - 1) * k..=m * m * k).contains(&total),
        "total {total}"
    );
    tool.cmd("stats");
    let st = tool.wait("stats");
    assert_eq!(st["established"], m);
    assert_eq!(st["reached"], m);
    let updates = st["rx_updates"].as_u64().expect("a count") as usize;
    assert!(
        (m * (m - 1)..=m * m).contains(&updates),
        "{updates} UPDATEs"
    );
    assert_eq!(st["states"]["established"], m);
    tool.cmd("quit");
    tool.wait("exit");
}

#[test]
fn the_feeder_sends_the_table_and_its_withdrawal() {
    let (l, port) = listener();
    let n = 20_000;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        accept_session(&mut s);
        let mut held = std::collections::HashSet::new();
        let mut stages = 0;
        while let Some((t, body)) = read_msg(&mut s) {
            if t != wire::T_UPDATE {
                continue;
            }
            let wl = u16::from_be_bytes([body[0], body[1]]) as usize;
            let al = u16::from_be_bytes([body[2 + wl], body[3 + wl]]) as usize;
            for (range, add) in [(2..2 + wl, false), (4 + wl + al..body.len(), true)] {
                let mut j = range.start;
                while j < range.end {
                    let nb = (body[j] as usize).div_ceil(8);
                    let p = body[j..j + 1 + nb].to_vec();
                    if add {
                        held.insert(p)
                    } else {
                        held.remove(&p)
                    };
                    j += 1 + nb;
                }
            }
            if (stages == 0 && held.len() == n) || (stages == 1 && held.is_empty()) {
                stages += 1;
                let _ = tx.send(stages);
            }
        }
    });
    let mut tool = Tool::start(&[
        "feed",
        "--remote",
        "127.0.0.1",
        "--port",
        &port,
        "--local",
        "127.0.0.2",
        "--asn",
        "65002",
        "--n",
        &n.to_string(),
        "--seed",
        "3",
        "--exit-on-close",
    ]);
    let ready = tool.wait("table_ready");
    assert_eq!(ready["prefixes"], n);
    let est = tool.wait("established");
    assert_eq!(
        (est["peer_as"].as_u64(), est["hold"].as_u64()),
        (Some(65001), Some(90))
    );
    tool.cmd("go");
    let start = tool.wait("announce_start");
    assert_eq!(start["bytes"], ready["announce_bytes"]);
    tool.wait("announce_sent");
    assert_eq!(
        rx.recv_timeout(WAIT),
        Ok(1),
        "the peer holds all {n} prefixes"
    );
    tool.cmd("withdraw");
    tool.wait("withdraw_start");
    tool.wait("withdraw_sent");
    assert_eq!(rx.recv_timeout(WAIT), Ok(2), "the peer holds none");
}

#[test]
fn the_sink_reports_reached_and_empty_and_a_notification_ends_it() {
    let (l, port) = listener();
    let (go_tx, go_rx) = mpsc::channel::<&str>();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        accept_session(&mut s);
        let t = wire::build_table(3000, 65009, Ipv4Addr::new(127, 0, 0, 1), 5);
        for stage in go_rx {
            match stage {
                "announce" => s.write_all(&t.announce).expect("write"),
                "withdraw" => s.write_all(&t.withdraw).expect("write"),
                _ => s.write_all(&wire::notification(6, 4)).expect("write"),
            }
        }
    });
    let mut tool = Tool::start(&[
        "sink",
        "--remote",
        "127.0.0.1",
        "--port",
        &port,
        "--local",
        "127.0.0.3",
        "--asn",
        "65003",
        "--target",
        "3000",
        "--exit-on-close",
    ]);
    tool.wait("established");
    go_tx.send("announce").expect("peer thread");
    assert_eq!(tool.wait("reached")["count"], 3000);
    go_tx.send("withdraw").expect("peer thread");
    tool.wait("empty");
    go_tx.send("cease").expect("peer thread");
    let deadline = Instant::now() + WAIT;
    let note = loop {
        let v = tool
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("an event");
        if v["ev"] == "notification" {
            break v;
        }
    };
    assert_eq!(
        (note["code"].as_u64(), note["subcode"].as_u64()),
        (Some(6), Some(4))
    );
    tool.wait("exit");
}
