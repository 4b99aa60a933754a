//! What `petrel lab status` prints (sessions, routes, the pod-to-pod ping
//! matrix) and how `up` knows the lab has converged.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
pub use topology::RouterKind;

/// `print!` that ignores a closed stdout (`petrel lab status | head`): the
/// lab's state must not depend on whether anyone reads the report.
use crate::*;

/// `petrel peers -o json` of one agent, through our own binary so the lab
/// reads exactly what an operator would.
pub(crate) fn agent_peers(socket: &Path) -> Result<Vec<Value>, String> {
    let exe = exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(["peers", "-o", "json", "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(v)) => Ok(v),
        _ => Err("unreadable `petrel peers` output".into()),
    }
}

/// The destinations in a namespace's main table.
pub(crate) fn kernel_routes(ns: &str) -> Vec<Value> {
    match sys::run("ip", &["-n", ns, "-j", "-4", "route", "show"]) {
        Ok(out) => match serde_json::from_str(&out) {
            Ok(Value::Array(v)) => v,
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}

/// Whether a route of `ip -j route` is a usable one to `dst` (not
/// `unreachable`, as BIRD installs routes whose next hop it cannot resolve).
pub(crate) fn forwards(route: &Value, dst: &str) -> bool {
    route["dst"] == dst && route["type"].as_str().unwrap_or("unicast") == "unicast"
}

/// Whether a route of `ip -j route` is a usable one to `ip` (its prefix
/// holds it; not the default route).
pub(crate) fn covers(route: &Value, ip: Ipv4Addr) -> bool {
    let Some(dst) = route["dst"].as_str() else {
        return false;
    };
    let net = if dst.contains('/') {
        dst.parse::<ipnet::Ipv4Net>().ok()
    } else {
        dst.parse::<Ipv4Addr>().ok().map(ipnet::Ipv4Net::from)
    };
    net.is_some_and(|n| n.contains(&ip)) && route["type"].as_str().unwrap_or("unicast") == "unicast"
}

/// With petrel's IPAM: every pod's address routed by the router and by
/// every other node (through the blocks, or a borrowed address's host
/// route).
fn pods_routed(state: &State) -> Result<(), String> {
    let t = &state.topology;
    let router = kernel_routes(&state.switch_ns());
    for n in &t.nodes {
        for i in 1..=n.pods {
            let Some(ip) = state.pod_ip(n, i) else {
                return Err(format!("pod {i} of {} has no address yet", n.name));
            };
            if t.router.install_routes && !router.iter().any(|r| covers(r, ip)) {
                return Err(format!(
                    "the router has no route to {ip} (pod {i} of {}) yet",
                    n.name
                ));
            }
            for m in t.nodes.iter().filter(|m| m.name != n.name) {
                let routes = kernel_routes(&state.node_ns(&m.name));
                // The default route covers nothing here: it is not in
                // `covers`' sense a route to the pod.
                if !routes.iter().any(|r| covers(r, ip)) {
                    return Err(format!(
                        "{} has no route to {ip} (pod {i} of {}) in its kernel yet",
                        m.name, n.name
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every node's sessions Established, every pod CIDR (or, with petrel's
/// IPAM, every pod's address) in the router's kernel table and in every
/// other node's.
pub(crate) fn converged(state: &State) -> Result<(), String> {
    for n in &state.topology.nodes {
        let peers = agent_peers(&state.socket(&n.name)).map_err(|e| format!("{}: {e}", n.name))?;
        if peers.is_empty() {
            return Err(format!("{} has no peers yet", n.name));
        }
        for p in &peers {
            if p["state"] != "Established" {
                return Err(format!(
                    "{}'s session with {} is {}",
                    n.name, p["address"], p["state"]
                ));
            }
        }
    }
    if state.topology.petrel_ipam() {
        return pods_routed(state);
    }
    let routes = kernel_routes(&state.switch_ns());
    // A router that leaves its kernel alone has no pod routes to check.
    let router_nodes = if state.topology.router.install_routes {
        state.topology.nodes.as_slice()
    } else {
        &[]
    };
    for n in router_nodes {
        let cidr = n.pod_cidr.to_string();
        if !routes.iter().any(|r| forwards(r, &cidr)) {
            return Err(format!(
                "the router has no route to {cidr} ({}) yet",
                n.name
            ));
        }
    }
    // The agents hold their FIB until their peers' End-of-RIB (or
    // --fib-initial-delay); until then pods still reach each other through
    // the default route, but the tables `status` prints are not the final ones.
    for n in &state.topology.nodes {
        let routes = kernel_routes(&state.node_ns(&n.name));
        for m in state.topology.nodes.iter().filter(|m| m.name != n.name) {
            let cidr = m.pod_cidr.to_string();
            if !routes.iter().any(|r| forwards(r, &cidr)) {
                return Err(format!(
                    "{} has no route to {cidr} ({}) in its kernel yet",
                    n.name, m.name
                ));
            }
        }
    }
    Ok(())
}

/// Everything about a running lab, as text.
pub(crate) fn status(state: &State) -> String {
    let t = &state.topology;
    let sw = state.switch_ns();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "lab {}: {} {} (AS {}, {}) and {} nodes on {}; state in {}{}",
        state.name,
        t.router.kind.label(),
        t.router.name,
        t.router_asn(),
        t.router.address,
        t.nodes.len(),
        std::iter::once(t.subnet.to_string())
            .chain(t.racks.iter().map(|r| format!("{} ({})", r.subnet, r.name)))
            .collect::<Vec<_>>()
            .join(", "),
        state.dir().display(),
        if state.complete {
            ""
        } else {
            " (NOT fully built)"
        }
    );
    let _ = writeln!(s, "\nProcesses:");
    for p in &state.processes {
        let _ = writeln!(
            s,
            "  {:<16} {:<24} pid {:<8} {}",
            p.label,
            p.ns,
            p.pid,
            if p.alive() { "running" } else { "NOT RUNNING" }
        );
        if !p.alive() {
            let _ = writeln!(s, "    the end of {}:", p.log.display());
            for line in p.log_tail(5).lines() {
                let _ = writeln!(s, "    {line}");
            }
        }
    }

    let _ = writeln!(s, "\nSessions, as each node's agent sees them:");
    for n in &t.nodes {
        let line = match agent_peers(&state.socket(&n.name)) {
            Ok(peers) if peers.is_empty() => "no peers".to_string(),
            Ok(peers) => peers
                .iter()
                .map(|p| {
                    format!(
                        "{} {}",
                        p["address"].as_str().unwrap_or("?"),
                        p["state"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("no answer: {e}"),
        };
        let _ = writeln!(
            s,
            "  {:<10} {} AS {} {}: {line}",
            n.name,
            n.address,
            n.asn.unwrap_or(t.cluster.asn),
            t.session_kind(n)
        );
    }

    let (sessions_cmd, routes_cmd): (Vec<String>, Vec<String>) = match t.router.kind {
        RouterKind::Frr => (
            vec![
                "vtysh".into(),
                "-N".into(),
                sw.clone(),
                "-c".into(),
                "show bgp ipv4 unicast summary".into(),
            ],
            vec![
                "vtysh".into(),
                "-N".into(),
                sw.clone(),
                "-c".into(),
                "show ip route bgp".into(),
            ],
        ),
        RouterKind::Bird => {
            let sock = state
                .dir()
                .join("bird")
                .join("bird.ctl")
                .display()
                .to_string();
            (
                vec![
                    "birdc".into(),
                    "-s".into(),
                    sock.clone(),
                    "show".into(),
                    "protocols".into(),
                ],
                vec![
                    "birdc".into(),
                    "-s".into(),
                    sock,
                    "show".into(),
                    "route".into(),
                ],
            )
        }
        RouterKind::Petrel => {
            let exe = exe().unwrap_or_else(|_| "petrel".into());
            let sock = state.socket(&t.router.name).display().to_string();
            (
                vec![exe.clone(), "peers".into(), "--socket".into(), sock.clone()],
                vec![exe, "rib".into(), "-4".into(), "--socket".into(), sock],
            )
        }
    };
    for (title, cmd) in [
        ("The router's sessions", sessions_cmd),
        ("The router's BGP routes", routes_cmd),
    ] {
        let _ = writeln!(s, "\n{title} ({}):", shell_words(&cmd));
        let args: Vec<&str> = cmd[1..].iter().map(String::as_str).collect();
        // vtysh complains about a missing vtysh.conf per namespace: noise.
        for line in sys::output(&cmd[0], &args)
            .lines()
            .filter(|l| !l.starts_with("% Can't open configuration file"))
        {
            let _ = writeln!(s, "  {line}");
        }
    }
    let _ = writeln!(
        s,
        "\nThe router's kernel routes to the cluster (ip -n {sw} route):"
    );
    for line in sys::output("ip", &["-n", &sw, "route"]).lines() {
        let _ = writeln!(s, "  {line}");
    }

    if state.topology.nodes.len() > 1 {
        s.push_str(&overlay(state));
    }
    s.push_str(&reachability(state));
    s
}

/// `petrel status -o json` of one agent.
pub(crate) fn agent_status(socket: &Path) -> Result<Value, String> {
    let exe = exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(["status", "-o", "json", "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|_| "unreadable `petrel status` output".into())
}

/// Per node pair: the tunnel each agent chose, and why.
pub(crate) fn overlay(state: &State) -> String {
    let mut s = String::from("\nOverlay, as each node's agent decides it (petrel status):\n");
    for n in &state.topology.nodes {
        let v = match agent_status(&state.socket(&n.name)) {
            Ok(v) => v,
            Err(e) => {
                let _ = writeln!(s, "  {:<10} no answer: {e}", n.name);
                continue;
            }
        };
        let o = &v["overlay"];
        if o.is_null() {
            let _ = writeln!(s, "  {:<10} programs no kernel routes", n.name);
            continue;
        }
        let _ = writeln!(
            s,
            "  {:<10} pod MTU {}, natOutgoing: {}",
            n.name,
            o["pod_mtu"],
            o["nat"].as_str().unwrap_or("-")
        );
        for e in o["errors"].as_array().into_iter().flatten() {
            let _ = writeln!(s, "    error: {}", e.as_str().unwrap_or_default());
        }
        for peer in o["nodes"].as_array().into_iter().flatten() {
            for p in peer["pools"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    s,
                    "    -> {:<10} {:<8} {}",
                    peer["node"].as_str().unwrap_or("?"),
                    p["tunnel"].as_str().unwrap_or("none"),
                    p["reason"].as_str().unwrap_or_default()
                );
            }
        }
    }
    s
}

/// Quotes a command line for printing.
pub(crate) fn shell_words(cmd: &[String]) -> String {
    cmd.iter()
        .map(|w| {
            if w.contains(' ') {
                format!("'{w}'")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The pod-to-pod ping matrix, and each Service IP pinged from the router.
pub(crate) fn reachability(state: &State) -> String {
    let t = &state.topology;
    // (label, namespace, address) of every pod.
    let pods: Vec<(String, String, Ipv4Addr)> = t
        .nodes
        .iter()
        .flat_map(|n| {
            (1..=n.pods).filter_map(move |i| {
                Some((
                    format!("{}/pod{i}", n.name),
                    state.pod_ns(&n.name, i),
                    state.pod_ip(n, i)?,
                ))
            })
        })
        .collect();
    // Every ping at once, so a broken lab costs one timeout, not one per pair.
    let mut jobs = Vec::new();
    for (i, (_, src, _)) in pods.iter().enumerate() {
        for (j, (_, _, dst)) in pods.iter().enumerate() {
            if i != j {
                jobs.push(((i, j), ping(src, *dst)));
            }
        }
    }
    let mut results = std::collections::HashMap::new();
    for (key, child) in jobs {
        let ok = child
            .and_then(|c| c.wait_with_output().map_err(anyhow::Error::from))
            .map(|o| o.status.success())
            .unwrap_or(false);
        results.insert(key, ok);
    }
    let width = pods
        .iter()
        .map(|(l, _, _)| l.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!(
        "\nPod reachability (ping -c1 -W1 from the row's pod to the column's):\n  {:<width$} {:<12}",
        "", ""
    );
    for (label, _, _) in &pods {
        let _ = write!(s, " {label:>width$}");
    }
    s.push('\n');
    let mut failures = 0;
    for (i, (label, _, ip)) in pods.iter().enumerate() {
        let _ = write!(s, "  {label:<width$} {:<12}", ip.to_string());
        for j in 0..pods.len() {
            let cell = match results.get(&(i, j)) {
                None => "-",
                Some(true) => "ok",
                Some(false) => {
                    failures += 1;
                    "FAIL"
                }
            };
            let _ = write!(s, " {cell:>width$}");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "  {}",
        if failures == 0 {
            format!("all {} pairs reach each other", results.len())
        } else {
            format!("{failures} of {} pairs FAIL", results.len())
        }
    );
    if let Some(o) = &t.outside {
        let _ = writeln!(s, "\nThe outside host {} (ping from each pod):", o.address);
        for (label, ns, _) in &pods {
            let ok = ping(ns, o.address)
                .and_then(|c| c.wait_with_output().map_err(anyhow::Error::from))
                .is_ok_and(|o| o.status.success());
            let _ = writeln!(s, "  {label:<width$} {}", if ok { "ok" } else { "FAIL" });
        }
    }
    if !t.services.is_empty() {
        let sw = state.switch_ns();
        let _ = writeln!(s, "\nServices (ping from the router's namespace):");
        for svc in &t.services {
            let mut line = format!("  {:<12}", svc.name);
            let ips = std::iter::once(("ClusterIP", svc.cluster_ip))
                .chain(svc.load_balancer_ip.map(|ip| ("LoadBalancer", ip)));
            for (what, ip) in ips {
                let ok = ping(&sw, ip)
                    .and_then(|c| c.wait_with_output().map_err(anyhow::Error::from))
                    .is_ok_and(|o| o.status.success());
                let _ = write!(line, " {what} {ip} {}", if ok { "ok" } else { "FAIL" });
            }
            let _ = writeln!(s, "{line}  endpoints on {}", svc.endpoints.join(", "));
        }
    }
    s
}

/// Starts one `ping -c1 -W1` inside a namespace.
pub(crate) fn ping(ns: &str, dst: Ipv4Addr) -> anyhow::Result<std::process::Child> {
    Ok(Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c1", "-W1", "-q"])
        .arg(dst.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}
