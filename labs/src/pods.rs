//! With `ipamMode: Petrel`: the lab's pods made as a container runtime
//! makes them (`ptp` ADD, which asks `petrel-ipam`, which asks the node's
//! agent), and the Services' EndpointSlices once the pods have addresses.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{State, kube, render, sys, topology};

/// Debian's `ptp` CNI plugin (containernetworking-plugins): it makes the
/// pods' links and asks `petrel-ipam` for their addresses.
pub(crate) const PTP: &str = "/usr/lib/cni/ptp";

/// `petrel-ipam`, beside this binary.
pub(crate) fn ipam_plugin() -> anyhow::Result<String> {
    let p = std::env::current_exe().context("cannot find the petrel binary")?;
    Ok(p.with_file_name("petrel-ipam").display().to_string())
}

/// One pod made as a container runtime makes it: its namespace, then `ptp`
/// ADD in the node's namespace, which makes the veth pair and asks
/// `petrel-ipam` (and so the node's agent) for the address. Tried again
/// while the agent is starting (CNI error 11).
pub(crate) fn add_pod(state: &mut State, n: &topology::LabNode, i: u8) -> anyhow::Result<()> {
    let pod = state.pod_ns(&n.name, i);
    state.add_ns(&pod, false)?;
    let plugin = ipam_plugin()?;
    let plugin_dir = Path::new(&plugin)
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "petrel-lab", "type": "ptp",
        "ipam": {"type": "petrel-ipam", "socket": state.ipam_socket(&n.name)},
    });
    let k8s_namespace = match &state.kube {
        Some(_) => kube::namespace_of(&state.name),
        None => "default".to_string(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &state.node_ns(&n.name), PTP])
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", &pod)
            .env("CNI_NETNS", format!("/var/run/netns/{pod}"))
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_PATH",
                format!("{plugin_dir}:/usr/lib/cni:/opt/cni/bin"),
            )
            .env(
                "CNI_ARGS",
                format!(
                    "K8S_POD_NAMESPACE={k8s_namespace};K8S_POD_NAME={}-pod{i}",
                    n.name
                ),
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("cannot run the ptp CNI plugin")?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            stdin.write_all(conf.to_string().as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if out.status.success() {
            let ip = v["ips"][0]["address"]
                .as_str()
                .and_then(|a| a.parse::<ipnet::Ipv4Net>().ok())
                .map(|n| n.addr())
                .with_context(|| format!("ptp gave no IPv4 address: {v}"))?;
            state.pod_ips.insert(pod, ip);
            return state.save();
        }
        if v["code"] != 11 || Instant::now() >= deadline {
            bail!(
                "ptp ADD failed: {} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The Services' EndpointSlices, once the pods have their addresses: into
/// the agents' directory, or the API server.
pub(crate) fn publish_slices(state: &mut State) -> anyhow::Result<()> {
    let t = state.topology.clone();
    let slices = render::endpoint_slices(&t, &|n, i| state.pod_ip(n, i));
    let Some(k) = state.kube.clone() else {
        let cluster = state.cluster_dir();
        for (file, yaml) in slices {
            sys::write_atomic(&cluster.join(file), &yaml)?;
        }
        return Ok(());
    };
    let rt = kube::runtime()?;
    rt.block_on(async {
        let client = kube::client(&k.kubeconfig).await?;
        for obj in kube::slice_objects(&slices, &state.name)? {
            let made = kube::create(&client, &obj).await?;
            if let Some(kl) = state.kube.as_mut() {
                kl.created.push(made);
            }
            state.save()?;
        }
        anyhow::Ok(())
    })
}
