//! `petrel decode` end to end: the shared captures pass `--check`, output is one
//! JSON object per record, compressed input reads the same, and damaged input
//! is reported with its offset and a non-zero exit status.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

fn petrel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(args)
        .output()
        .expect("petrel runs")
}

fn capture(name: &str) -> PathBuf {
    std::env::var_os("PETREL_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
        .join("data/mrt")
        .join(name)
}

const CAPTURES: [&str; 5] = [
    "bird-mrtdump_bgp",
    "bird6_bgp",
    "bird_bgp",
    "quagga_bgp",
    "quagga_rib",
];

/// A scratch directory removed when dropped, also when a test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("petrel-cli-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).expect("tmp dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn check_accepts_every_shared_capture() {
    for name in CAPTURES {
        let path = capture(name);
        let out = petrel(&[
            "decode",
            "--check",
            "--summary",
            path.to_str().expect("utf-8"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(stderr.is_empty(), "{name}: {stderr}");
        let summary: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("summary is JSON");
        assert_eq!(summary["bad"], 0, "{name}");
        assert!(summary["checked"].as_u64().expect("checked") > 0, "{name}");
    }
}

#[test]
fn prints_one_json_object_per_record() {
    let out = petrel(&["decode", capture("quagga_bgp").to_str().expect("utf-8")]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(records.len(), 67);
    // A known UPDATE: prefixes in CIDR, attributes by name, AS path as numbers.
    let update = records
        .iter()
        .find(|r| {
            r["message"]["nlri"]
                .as_array()
                .is_some_and(|n| !n.is_empty())
        })
        .expect("an UPDATE with NLRI");
    assert_eq!(update["message"]["nlri"][0], "172.17.0.0/24");
    assert_eq!(update["message"]["attributes"]["ORIGIN"], "IGP");
    assert_eq!(
        update["message"]["attributes"]["AS_PATH"][0]["asns"][0],
        4_200_000_000u64
    );
    assert_eq!(
        update["message"]["attributes"]["COMMUNITIES"][0],
        "65000:100"
    );
    let rib = petrel(&["decode", capture("quagga_rib").to_str().expect("utf-8")]);
    let text = String::from_utf8(rib.stdout).expect("utf-8");
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("records")).expect("JSON");
    assert_eq!(last["type"], "TABLE_DUMP_V2/RIB_IPV6_UNICAST");
    assert_eq!(last["prefix"], "fd01:1:2::/64");
}

#[test]
fn gzip_and_bzip2_inputs_decode_the_same() {
    let dir = Scratch::new("compressed");
    let plain_path = capture("bird_bgp");
    let plain = std::fs::read(&plain_path).expect("capture");
    let gz = dir.0.join("bird_bgp.gz");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&plain).expect("gzip");
    std::fs::write(&gz, e.finish().expect("gzip")).expect("write");
    let bz = dir.0.join("bird_bgp.bz2");
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(&plain).expect("bzip2");
    std::fs::write(&bz, e.finish().expect("bzip2")).expect("write");
    let want = petrel(&["decode", plain_path.to_str().expect("utf-8")]).stdout;
    for f in [&gz, &bz] {
        let out = petrel(&["decode", "--check", f.to_str().expect("utf-8")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, want, "{}", f.display());
    }
}

#[test]
fn damaged_input_is_reported_with_offsets_and_fails() {
    let dir = Scratch::new("damaged");
    let mut data = std::fs::read(capture("quagga_bgp")).expect("capture");
    // Break the BGP marker of the OPEN at offset 72 (record header 12 +
    // BGP4MP fields 16), and cut the file in the middle of its last record.
    data[72 + 12 + 16] = 0x00;
    data.truncate(data.len() - 10);
    let bad = dir.0.join("damaged");
    std::fs::write(&bad, &data).expect("write");
    let out = petrel(&["decode", "--check", bad.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("offset 72: bad BGP message: header marker is not all ones"),
        "{stderr}"
    );
    assert!(stderr.contains("is truncated"), "{stderr}");
    // The records after the damaged one were still decoded.
    let lines = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .count();
    assert_eq!(
        lines, 66,
        "every record but the truncated last one is printed"
    );
}

#[test]
fn missing_file_is_an_error_not_a_panic() {
    let out = petrel(&["decode", "/nonexistent/petrel-capture"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot open /nonexistent/petrel-capture")
    );
}

#[test]
fn completions_cover_the_commands_and_usage_errors_exit_2() {
    let out = petrel(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    for word in ["_petrel", "status", "peers", "explain", "route", "lab"] {
        assert!(
            script.contains(word),
            "{word} missing from the bash completions"
        );
    }
    let out = petrel(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "unknown shell is a usage error");
    let out = petrel(&["route", "del"]);
    assert_eq!(out.status.code(), Some(2), "a prefix or --all is required");
    // Without an agent: a plain error, exit status 1, saying what to check.
    let out = petrel(&["peers", "--socket", "/nonexistent/petrel.sock"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `petrel agent` running?"));
}
