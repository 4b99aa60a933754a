//! FIB programming speed: route-sync beside `ip -batch`, installing and then
//! removing the same routes in a fresh network namespace, in the same run.
//!
//! Needs root. `cargo bench -p route-sync --bench fib` runs 100k and 1M routes;
//! `FIB_BENCH_SIZES=10000,100000` picks other sizes.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use route_sync::{Changes, Kernel, NextHop, Route};

struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run(&["netns", "add", name]);
        for args in [
            vec!["-n", name, "link", "set", "lo", "up"],
            vec![
                "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
            ],
            vec!["-n", name, "addr", "add", "192.0.2.1/24", "dev", "v0"],
            vec!["-n", name, "link", "set", "v0", "up"],
            vec!["-n", name, "link", "set", "v1", "up"],
        ] {
            run(&args);
        }
        Netns(name.to_string())
    }

    fn count(&self) -> usize {
        let o = Command::new("ip")
            .args(["-n", &self.0, "route", "show", "proto", "201"])
            .output()
            .expect("ip");
        o.stdout.iter().filter(|&&b| b == b'\n').count()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn run(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// N distinct /24s out of 10.0.0.0/8 and 11.0.0.0/8 ... (65,536 per /8).
fn prefixes(n: usize) -> Vec<Ipv4Net> {
    (0..n)
        .map(|i| {
            let a = 10 + (i >> 16) as u32;
            let b = ((i >> 8) & 0xff) as u32;
            let c = (i & 0xff) as u32;
            Ipv4Net::new(Ipv4Addr::from((a << 24) | (b << 16) | (c << 8)), 24).expect("prefix")
        })
        .collect()
}

fn ip_batch(ns: &Netns, lines: impl Iterator<Item = String>) -> Duration {
    let path = std::env::temp_dir().join(format!("fib-bench-{}.batch", ns.0));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("batch file"));
    for l in lines {
        writeln!(f, "{l}").expect("write");
    }
    drop(f);
    let t = Instant::now();
    run(&["-n", &ns.0, "-batch", &path.display().to_string()]);
    let d = t.elapsed();
    let _ = std::fs::remove_file(&path);
    d
}

fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("bench thread")
}

fn main() {
    let sizes: Vec<usize> = std::env::var("FIB_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000]);
    println!(
        "{:>9}  {:>12} {:>12} {:>7}   {:>12} {:>12} {:>7}",
        "routes", "ip add", "petrel add", "ratio", "ip del", "petrel del", "ratio"
    );
    for n in sizes {
        let nets = prefixes(n);
        let ns = Netns::new("petrel-fib-bench");
        let ip_add = ip_batch(
            &ns,
            nets.iter()
                .map(|p| format!("route add {p} via 192.0.2.2 proto 201")),
        );
        assert_eq!(ns.count(), n);
        let ip_del = ip_batch(
            &ns,
            nets.iter()
                .map(|p| format!("route del {p} via 192.0.2.2 proto 201")),
        );
        assert_eq!(ns.count(), 0);

        let routes: Vec<Route> = nets
            .iter()
            .map(|p| {
                Route::unicast(
                    IpNet::V4(*p),
                    vec![NextHop::via(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)))],
                )
            })
            .collect();
        let (add, del) = in_netns(&ns.0, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let k = Kernel::connect(201).expect("netlink");
                let t = Instant::now();
                let a = k
                    .apply(&Changes {
                        add: routes.clone(),
                        ..Changes::default()
                    })
                    .await;
                let add = t.elapsed();
                assert!(
                    a.failed.is_empty(),
                    "{:?}",
                    &a.failed[..a.failed.len().min(3)]
                );
                let t = Instant::now();
                let d = k
                    .apply(&Changes {
                        delete: routes,
                        ..Changes::default()
                    })
                    .await;
                let del = t.elapsed();
                assert!(d.failed.is_empty());
                (add, del)
            })
        });
        assert_eq!(ns.count(), 0);
        println!(
            "{n:>9}  {:>10.2}s {:>10.2}s {:>6.2}x   {:>10.2}s {:>10.2}s {:>6.2}x",
            ip_add.as_secs_f64(),
            add.as_secs_f64(),
            add.as_secs_f64() / ip_add.as_secs_f64(),
            ip_del.as_secs_f64(),
            del.as_secs_f64(),
            del.as_secs_f64() / ip_del.as_secs_f64(),
        );
    }
}
