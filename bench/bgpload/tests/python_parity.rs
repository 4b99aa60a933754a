//! The feeder's table and the clients' announcements are the shared
//! harness's own (`shared/bench/bgpwire.py`), byte for byte: results from
//! either tool are comparable only if the device gets the same work.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use bgpload::wire;

/// `shared/bench`: `$PETREL_SHARED_DIR/bench`, else beside the checkout.
fn harness() -> PathBuf {
    let shared = std::env::var_os("PETREL_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let dir = shared.join("bench");
    assert!(
        dir.join("bgpwire.py").is_file(),
        "{} has no bgpwire.py (set PETREL_SHARED_DIR)",
        dir.display()
    );
    dir
}

/// Runs `script` with `bgpwire` importable as `W`; returns what it wrote to stdout.
fn python(script: &str) -> Vec<u8> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sys; sys.path.insert(0, {:?}); import bgpwire as W\n{script}",
            harness()
        ))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn nlri_set(stream: &[u8]) -> std::collections::BTreeSet<Vec<u8>> {
    let mut set = std::collections::BTreeSet::new();
    let mut i = 0;
    while i < stream.len() {
        let len = u16::from_be_bytes([stream[i + 16], stream[i + 17]]) as usize;
        let body = &stream[i + 19..i + len];
        let wl = u16::from_be_bytes([body[0], body[1]]) as usize;
        let al = u16::from_be_bytes([body[2 + wl], body[3 + wl]]) as usize;
        let mut j = 4 + wl + al;
        while j < body.len() {
            let nb = (body[j] as usize).div_ceil(8);
            set.insert(body[j..j + 1 + nb].to_vec());
            j += 1 + nb;
        }
        i += len;
    }
    set
}

#[test]
fn the_table_is_bgpwires_for_the_same_seed() {
    for (n, asn, nh, seed) in [
        (3000usize, 65002u32, "10.0.1.2", 1u64),
        (5000, 4_200_000_001, "192.0.2.7", 7),
        (1, 65002, "10.0.1.2", 0),
    ] {
        let py = python(&format!(
            "a, w, st = W.build_table_stream({n}, {asn}, {nh:?}, {seed})\n\
             sys.stdout.buffer.write(len(a).to_bytes(4, 'big') + a + w)"
        ));
        let alen = u32::from_be_bytes([py[0], py[1], py[2], py[3]]) as usize;
        let (py_ann, py_wd) = py[4..].split_at(alen);
        let t = wire::build_table(n, asn, nh.parse().expect("an address"), seed);
        assert_eq!(
            nlri_set(&t.announce),
            nlri_set(py_ann),
            "NLRI for n={n} seed={seed}"
        );
        assert_eq!(nlri_set(&t.announce).len(), n);
        assert!(
            t.announce == py_ann,
            "announce stream differs for n={n} seed={seed}"
        );
        assert!(
            t.withdraw == py_wd,
            "withdraw stream differs for n={n} seed={seed}"
        );
    }
}

#[test]
fn client_announcements_are_bgptools() {
    let (m, k) = (40u32, 4u32);
    let py = python(&format!(
        "import ipaddress\n\
         base = int(ipaddress.IPv4Address('10.1.1.1')); pod = int(ipaddress.IPv4Address('100.64.0.0'))\n\
         vip = int(ipaddress.IPv4Address('198.18.0.0'))\n\
         for i in range({m}):\n\
         \x20   addr = str(ipaddress.IPv4Address(base + i)); pfx = []\n\
         \x20   for j in range({k}):\n\
         \x20       pfx.append(W.encode_prefix(pod + ((i * {k} + j) << 6), 26) if j < {k} - 1 or {k} == 1 else W.encode_prefix(vip + i, 32))\n\
         \x20   sys.stdout.buffer.write(b''.join(W.encode_updates(W.encode_attrs([], addr, local_pref=100), pfx)))"
    ));
    let mut ours = Vec::new();
    for i in 0..m {
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 1, 1)) + i);
        ours.extend(wire::client_update(i, k, addr));
    }
    assert!(ours == py, "client announcements differ");
}

#[test]
fn the_open_is_bgpwires() {
    let py = python(
        "sys.stdout.buffer.write(W.encode_open(4200000001, 240, '10.9.8.7') + W.encode_open(65000, 90, '1.2.3.4'))",
    );
    let mut ours = wire::open(4_200_000_001, 240, Ipv4Addr::new(10, 9, 8, 7));
    ours.extend(wire::open(65000, 90, Ipv4Addr::new(1, 2, 3, 4)));
    assert_eq!(ours, py);
}
