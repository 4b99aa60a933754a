//! The status petrel writes back to the API server.
//!
//! - Agents (`--source kube`, two nodes in network namespaces, peering each
//!   other over BGPPeers, and a ToR that never answers): each writes its own
//!   entries of `BGPPeer.status.nodes` without clobbering the other's, its
//!   Node's `PetrelBGPReady`, and its `BGPNodeStatus` with, per Service IP,
//!   whether it is advertised, to which peers, and if not, why; sessions
//!   going down and up are reflected; an idle agent does not write (the API
//!   server's audit log says); a 403 is survived. The agents run as in a
//!   cluster: the Helm chart's ServiceAccount, RBAC and admission policy
//!   (rendered by Helm, created on the API server), each with a token bound
//!   to its DaemonSet Pod; the 403 is real RBAC: the chart's agent role
//!   loses `nodes/status` mid-test.
//! - The cluster-wide conditions (`conditions::run`, a leader task of
//!   `petrel controller`): an invalid BGPPeer gets `Ready=False` naming the field,
//!   and an Event; fixing it makes it Ready; the BGPPeer summary column.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Lab;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use testkit::KubeEnv;

/// A process in the host's namespace, killed when dropped.
struct Process {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `petrel controller` with a kubeconfig (the chart's controller account;
/// no leader election: it acts at once), for its Ready conditions.
fn start_controller(kubeconfig: &Path, dir: &Path) -> Process {
    let log = dir.join("controller.log");
    let child = Command::new(env!("CARGO_BIN_EXE_petrel"))
        // A class and a pool label nothing has: on a real cluster this
        // controller must not touch the cluster's own Services or pools.
        .args(["controller", "--metrics-address", "off"])
        .args(["--load-balancer-class", "petrel.dev/test-none"])
        .args(["--pool-selector", "petrel.dev/test=none"])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("controller starts");
    Process { child, log }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The Api of a kind, as dynamic objects.
fn api(client: &kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let (group, version) = match kind {
        "Node" => ("", "v1"),
        "Event" => ("events.k8s.io", "v1"),
        _ => ("petrel.dev", "v1alpha1"),
    };
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::all_with(client.clone(), &ar)
}

/// Runs `$body` (an async block's body giving `Result<(), String>`) every
/// 200 ms until it is `Ok`, at most `$secs`; panics with `$what`, the last
/// reason and `$logs()` on timeout.
macro_rules! eventually {
    ($secs:expr, $what:expr, $logs:expr, $body:block) => {{
        let deadline = Instant::now() + Duration::from_secs($secs);
        loop {
            let r: Result<(), String> = async $body.await;
            match r {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline => panic!(
                    "timed out after {}s waiting for {}: {e}\n{}",
                    $secs,
                    $what,
                    $logs()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }};
}

/// An object's `status` (Null while it has none or does not exist).
async fn status(api: &Api<DynamicObject>, name: &str) -> Value {
    match api.get_opt(name).await {
        Ok(Some(o)) => o.data["status"].clone(),
        _ => Value::Null,
    }
}

/// The condition of `type_` in a status.
fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// `status.nodes` of a BGPPeer as (node, address, state), sorted.
fn entries(status: &Value) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("node"), s("address"), s("state"))
        })
        .collect();
    v.sort();
    v
}

/// A BGPNodeStatus' entry for one Service.
fn service<'a>(status: &'a Value, svc: &str) -> Option<&'a Value> {
    status["services"]
        .as_array()?
        .iter()
        .find(|s| s["service"] == svc)
}

/// Why an advertised entry is not sent to `peer`.
fn not_sent(entry: &Value, peer: &str) -> Option<String> {
    entry["notSent"]
        .as_array()?
        .iter()
        .find(|r| r["peer"] == peer)
        .and_then(|r| r["reason"].as_str().map(String::from))
}

/// A veth pair from the host's namespace to `ns`, /24 on both sides, so
/// processes in `ns` reach a forwarder to the API server at `host_ip`.
/// Deleting the namespace (the Lab's drop) deletes the pair.
fn host_link(name: &str, ns: &str, host_ip: &str, ns_ip: &str) {
    testkit::netns::host_link(name, ns, &format!("{host_ip}/24"), &format!("{ns_ip}/24"))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Starts `petrel agent --source kube` for `node` in `ns`.
fn start_agent(lab: &mut Lab, ns: &str, node: &str, kubeconfig: &Path) -> std::path::PathBuf {
    let log = lab.root.join(format!("agent-{node}.log"));
    let socket = lab.root.join(format!("{node}.sock"));
    let kc = format!("KUBECONFIG={}", kubeconfig.display());
    lab.spawn(
        ns,
        &format!("agent-{node}"),
        "env",
        &[
            &kc,
            "RUST_LOG=info,agent::status=debug",
            env!("CARGO_BIN_EXE_petrel"),
            "agent",
            "--source",
            "kube",
            "--node",
            node,
            "--no-fib",
            "--metrics-address",
            "off",
            "--api-socket",
            &socket.display().to_string(),
        ],
        &log,
    );
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_report_their_own_nodes_state() {
    let mut env = KubeEnv::start("kube-status").await;
    env.install_crds().await;
    let client = env.client();
    let mut lab = common::lab("kst");
    let ns1 = lab.ns("a");
    let ns2 = lab.ns("b");
    lab.link(&ns1, &ns2, "eth0", &["10.40.0.1/24"], &["10.40.0.2/24"]);
    // The agents reach the API server through the host: one link each, on
    // subnets of this run's own (tests of other runs may be up at once).
    let k = std::process::id() % 100;
    let (host1, host2) = (
        format!("10.41.{}.254", 2 * k),
        format!("10.41.{}.254", 2 * k + 1),
    );
    let tag = format!("ks{}", std::process::id() % 100_000);
    host_link(
        &format!("{tag}a"),
        &ns1,
        &host1,
        &format!("10.41.{}.1", 2 * k),
    );
    host_link(
        &format!("{tag}b"),
        &ns2,
        &host2,
        &format!("10.41.{}.1", 2 * k + 1),
    );
    let (n1, n2) = (env.name("n1"), env.name("n2"));
    // Room for the chart's agent Pods, which the scheduler places.
    let room = json!({"cpu": "4", "memory": "8Gi", "pods": "110"});
    for (node, ip) in [(&n1, "10.40.0.1"), (&n2, "10.40.0.2")] {
        let mut labels = env.node_labels();
        labels["petrel-test/node"] = node.as_str().into();
        labels["kubernetes.io/os"] = "linux".into();
        env.create_json(
            "nodes",
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node, "labels": labels},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                           "capacity": room, "allocatable": room}
            }),
        )
        .await;
    }
    // The agents' identity, as in a cluster: the chart's ServiceAccount,
    // RBAC and admission policy, and a token bound to the agent Pod its
    // DaemonSet has on each node (so the token names the node).
    let release_ns = env.namespace("petrel-system").await;
    let chart = env
        .install_chart(
            "petrel",
            &release_ns,
            json!({"admissionPolicy": {"enabled": true}}),
            &[
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
                "DaemonSet",
            ],
        )
        .await;
    let agent_user = chart.user("agent");
    let tokens = env.agent_tokens(&chart, &[&n1, &n2]).await;
    let kc1 = env
        .kubeconfig_via(host1.parse().expect("ip"), &tokens[0].1)
        .await;
    let kc2 = env
        .kubeconfig_via(host2.parse().expect("ip"), &tokens[1].1)
        .await;

    env.create_json("bgpconfigurations", json!({
        "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPConfiguration", "metadata": {"name": "default"},
        "spec": {"asNumber": 65001, "nodeToNodeMeshEnabled": false,
                 "serviceLoadBalancerIPs": [{"cidr": "198.51.100.0/24"}]}
    }))
    .await;
    env.create_json("bgpfilters", json!({
        "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPFilter", "metadata": {"name": "no-web2"},
        "spec": {"export": [{"match": {"prefix": {"cidr": "198.51.100.20/32"}}, "action": "Reject"}]}
    }))
    .await;
    // node-1 peers with node-2 and node-2 with node-1 (iBGP), each through
    // a BGPPeer of its own; both with a ToR that never answers.
    let peer = |name: &str, ip: &str, asn: u32, node: Option<&str>, filters: &[&str]| {
        let mut spec = json!({"peerIP": ip, "asNumber": asn});
        if let Some(n) = node {
            spec["nodeSelector"] = json!({"matchLabels": {"petrel-test/node": n}});
        }
        if !filters.is_empty() {
            spec["filters"] = json!(filters);
        }
        json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "BGPPeer",
               "metadata": {"name": name}, "spec": spec})
    };
    env.create_json(
        "bgppeers",
        peer("to-n2", "10.40.0.2", 65001, Some(&n1), &["no-web2"]),
    )
    .await;
    env.create_json(
        "bgppeers",
        peer("to-n1", "10.40.0.1", 65001, Some(&n2), &[]),
    )
    .await;
    env.create_json("bgppeers", peer("tor", "10.40.0.9", 65009, None, &[]))
        .await;
    // Two LoadBalancer Services with a Local policy and their one Pod on
    // node-1 (their EndpointSlices are the endpointslice controller's);
    // node-1 exports web2 to nobody (the filter).
    let shop = env.namespace("shop").await;
    for (svc, ip, pod_ip) in [
        ("web", "198.51.100.10", "10.244.1.5"),
        ("web2", "198.51.100.20", "10.244.1.6"),
    ] {
        env.create_json(
            "services",
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": svc, "namespace": shop},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                         "selector": {"app": svc},
                         "ports": [{"port": 80}], "loadBalancerClass": "petrel.dev/test"}
            }),
        )
        .await;
        let services: Api<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(client.clone(), &shop);
        services
            .patch_status(
                svc,
                &PatchParams::apply("test-lb"),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": svc, "namespace": shop},
                    "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})),
            )
            .await
            .expect("LoadBalancer IP assigned");
        env.ready_pod(&shop, &format!("{svc}-0"), json!({"app": svc}), &n1, pod_ip)
            .await;
    }

    let controller_kc = env
        .token(
            &release_ns,
            &chart.name("ServiceAccount", "controller"),
            None,
        )
        .await;
    let controller = start_controller(&controller_kc, env.dir());
    let log1 = start_agent(&mut lab, &ns1, &n1, &kc1);
    let log2 = start_agent(&mut lab, &ns2, &n2, &kc2);
    let logs = || {
        format!(
            "--- agent {n1}:\n{}\n--- agent {n2}:\n{}\n--- controller:\n{}",
            read(&log1),
            read(&log2),
            read(&controller.log)
        )
    };
    let peers = api(&client, "BGPPeer", "bgppeers");
    let nodes = api(&client, "Node", "nodes");
    let reports = api(&client, "BGPNodeStatus", "bgpnodestatuses");

    // Each agent writes its own entries; neither clobbers the other's.
    eventually!(60, "both sessions Established, both ToR entries", logs, {
        let to_n2 = entries(&status(&peers, "to-n2").await);
        let to_n1 = entries(&status(&peers, "to-n1").await);
        let tor = entries(&status(&peers, "tor").await);
        let up = |node: &str, addr: &str| {
            vec![(
                node.to_string(),
                addr.to_string(),
                "Established".to_string(),
            )]
        };
        let tor_ok = tor.len() == 2
            && tor[0].0 == n1
            && tor[1].0 == n2
            && tor
                .iter()
                .all(|e| e.1 == "10.40.0.9" && e.2 != "Established");
        if to_n2 == up(&n1, "10.40.0.2") && to_n1 == up(&n2, "10.40.0.1") && tor_ok {
            Ok(())
        } else {
            Err(format!("to-n2 {to_n2:?}, to-n1 {to_n1:?}, tor {tor:?}"))
        }
    });
    // Counters are coalesced (written with the next change, or within 30 s).
    eventually!(40, "node-1's session entry with its counters", logs, {
        let s = status(&peers, "to-n2").await;
        let e = &s["nodes"][0];
        if e["establishedSince"].is_string() && e["prefixesAdvertised"].as_u64() >= Some(1) {
            Ok(())
        } else {
            Err(format!("node-1 advertises web to node-2: {e}"))
        }
    });
    let tor_object = peers.get("tor").await.expect("tor");
    let managers: Vec<String> = tor_object
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    for m in [format!("petrel-agent/{n1}"), format!("petrel-agent/{n2}")] {
        assert!(managers.contains(&m), "{m} among {managers:?}");
    }

    // The controller sums the entries up.
    eventually!(20, "the session summaries", logs, {
        let tor = status(&peers, "tor").await["summary"].clone();
        let up = status(&peers, "to-n2").await["summary"].clone();
        if tor == "0/2 established" && up == "1/1 established" {
            Ok(())
        } else {
            Err(format!("tor {tor}, to-n2 {up}"))
        }
    });

    // The Node condition names what is down.
    eventually!(20, "PetrelBGPReady False naming the ToR", logs, {
        let s = status(&nodes, &n1).await;
        let c = condition(&s, "PetrelBGPReady").cloned().unwrap_or_default();
        if c["status"] == "False"
            && c["reason"] == "SessionsDown"
            && c["message"] == "1 of 2 sessions not established: tor"
        {
            Ok(())
        } else {
            Err(c.to_string())
        }
    });

    // Per Service IP: advertised or why not, and to whom.
    let web = format!("{shop}/web");
    let web2 = format!("{shop}/web2");
    eventually!(20, "the BGPNodeStatus of both nodes", logs, {
        let r1 = status(&reports, &n1).await;
        let r2 = status(&reports, &n2).await;
        let (Some(w1), Some(w2_1), Some(w_2)) =
            (service(&r1, &web), service(&r1, &web2), service(&r2, &web))
        else {
            return Err(format!("{n1}: {r1}\n{n2}: {r2}"));
        };
        let ok = w1["advertised"] == true
            && w1["type"] == "LoadBalancerIP"
            && w1["prefix"] == "198.51.100.10/32"
            && w1["peers"] == json!(["to-n2"])
            && not_sent(w1, "tor").as_deref() == Some("session not established")
            && w2_1["advertised"] == true
            && not_sent(w2_1, "to-n2").as_deref() == Some("filtered by export policy")
            && w_2["advertised"] == false
            && w_2["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no ready endpoint on this node"))
            && r1["sessions"] == "1/2 established"
            && r1["advertised"] == "2/2 advertised"
            && r2["advertised"] == "0/2 advertised";
        if ok {
            Ok(())
        } else {
            Err(format!("{n1}: {r1}\n{n2}: {r2}"))
        }
    });
    let report = reports.get(&n1).await.expect("BGPNodeStatus");
    let node_uid = nodes
        .get(&n1)
        .await
        .expect("node")
        .metadata
        .uid
        .expect("uid");
    let owner = report
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .next()
        .expect("an owner");
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Node", n1.as_str(), node_uid.as_str()),
        "goes with its Node"
    );
    env.track(
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("petrel.dev", "v1alpha1", "BGPNodeStatus"),
            "bgpnodestatuses",
        ),
        None,
        &n1,
    );
    env.track(
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("petrel.dev", "v1alpha1", "BGPNodeStatus"),
            "bgpnodestatuses",
        ),
        None,
        &n2,
    );

    // The ToR is for node-1 only now: node-2's entry goes, node-1's stays.
    peers
        .patch(
            "tor",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"nodeSelector": {"matchLabels": {"petrel-test/node": n1}}}}),
            ),
        )
        .await
        .expect("tor narrowed");
    eventually!(20, "node-2's ToR entry removed", logs, {
        let tor = entries(&status(&peers, "tor").await);
        if tor.len() == 1 && tor[0].0 == n1 {
            Ok(())
        } else {
            Err(format!("{tor:?}"))
        }
    });

    // Without the ToR every session is up.
    peers
        .delete("tor", &DeleteParams::default())
        .await
        .expect("tor deleted");
    eventually!(20, "both nodes ready", logs, {
        let mut out = Vec::new();
        for n in [&n1, &n2] {
            let s = status(&nodes, n).await;
            let c = condition(&s, "PetrelBGPReady").cloned().unwrap_or_default();
            let r = status(&reports, n).await;
            if !(c["status"] == "True"
                && c["reason"] == "AllEstablished"
                && r["sessions"] == "1/1 established"
                && condition(&r, "Ready").is_some_and(|c| c["status"] == "True"))
            {
                out.push(format!("{n}: {c} / {r}"));
            }
        }
        if out.is_empty() {
            Ok(())
        } else {
            Err(out.join("\n"))
        }
    });

    // Idle: nothing changes, so nothing is written again. A change that
    // mattered less (counters) may still be waiting to go out, coalesced,
    // once: at most one write per object, where an agent writing on every
    // peer-table refresh would write each one every second or two. Counted
    // in the API server's audit log: every PATCH the agents (their
    // ServiceAccount) or the controller (the admin) sent, applied or not
    // (a server-side apply that changes nothing is still a request).
    // kube-controller-manager's own Node writes (taints, the Ready
    // condition of these kubelet-less Nodes) are not petrel's.
    if env.audit().is_some() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let start = env.audit().unwrap_or_default().len();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut per_object: std::collections::BTreeMap<String, usize> = Default::default();
        for r in env.audit().unwrap_or_default().iter().skip(start) {
            let agent_kind = matches!(
                r.resource.as_str(),
                "nodes" | "bgppeers" | "bgpnodestatuses"
            );
            let petrel = r.user == agent_user || r.user == "petrel-admin";
            if r.verb == "patch" && agent_kind && petrel {
                let key = format!(
                    "{}/{}{}",
                    r.resource,
                    r.name.as_deref().unwrap_or_default(),
                    r.subresource
                        .as_deref()
                        .map(|s| format!("/{s}"))
                        .unwrap_or_default()
                );
                *per_object.entry(key).or_default() += 1;
            }
        }
        assert!(
            per_object.values().all(|n| *n <= 1),
            "idle agents kept writing: {per_object:?}\n{}",
            logs()
        );
    } else {
        eprintln!("an external cluster: the write count is not checked (no audit log to read)");
    }

    // node-2's agent goes: node-1 sees its session down, and says so.
    lab.kill(&format!("agent-{n2}"));
    eventually!(30, "node-1 reporting node-2 down", logs, {
        let e = entries(&status(&peers, "to-n2").await);
        let s = status(&nodes, &n1).await;
        let c = condition(&s, "PetrelBGPReady").cloned().unwrap_or_default();
        let r1 = status(&reports, &n1).await;
        let why = service(&r1, &web).and_then(|w| not_sent(w, "to-n2"));
        if e.len() == 1
            && e[0].2 != "Established"
            && c["status"] == "False"
            && c["message"] == "1 of 1 sessions not established: to-n2"
            && why.as_deref() == Some("session not established")
        {
            Ok(())
        } else {
            Err(format!("{e:?} {c} {why:?}"))
        }
    });

    // Writing Node status is refused from now on (RBAC: the agents' role
    // loses nodes/status; the API server answers 403): the agents go on,
    // and write what they may.
    let role = chart.name("ClusterRole", "agent");
    let narrowed: Vec<Value> = chart
        .of("ClusterRole", "agent")
        .first()
        .and_then(|r| r["rules"].as_array())
        .expect("the chart's agent role has rules")
        .iter()
        .filter(|rule| {
            !rule["resources"]
                .as_array()
                .is_some_and(|r| r.contains(&json!("nodes/status")))
        })
        .cloned()
        .collect();
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    roles
        .patch(
            &role,
            &PatchParams::default(),
            &Patch::Merge(json!({"rules": narrowed})),
        )
        .await
        .expect("the agents' role narrowed");
    let _log2 = start_agent(&mut lab, &ns2, &n2, &kc2);
    eventually!(40, "node-2 back, and the session up again", logs, {
        let e = entries(&status(&peers, "to-n2").await);
        let back = entries(&status(&peers, "to-n1").await);
        if e.len() == 1 && e[0].2 == "Established" && back.len() == 1 && back[0].2 == "Established"
        {
            Ok(())
        } else {
            Err(format!("to-n2 {e:?}, to-n1 {back:?}"))
        }
    });
    eventually!(20, "the BGPNodeStatus, still written", logs, {
        let r = status(&reports, &n1).await;
        if r["sessions"] == "1/1 established" {
            Ok(())
        } else {
            Err(r.to_string())
        }
    });
    eventually!(20, "the 403 logged, once", logs, {
        let denied = read(&log1)
            .lines()
            .filter(|l| l.contains("cannot write status (denied by") && l.contains("Node"))
            .count();
        if denied == 1 {
            Ok(())
        } else {
            Err(format!("logged {denied} times"))
        }
    });
    // The Node still says False: the agent could not say otherwise.
    let s = status(&nodes, &n1).await;
    assert_eq!(
        condition(&s, "PetrelBGPReady").map(|c| c["status"].clone()),
        Some(json!("False"))
    );
    // And it was the API server that refused it.
    if let Some(log) = env.audit() {
        assert!(
            log.iter().any(|r| r.user == agent_user
                && r.resource == "nodes"
                && r.subresource.as_deref() == Some("status")
                && r.code == 403),
            "no Node status write of the agents was refused"
        );
    }

    // Garbage collection, by kube-controller-manager's collector: a
    // BGPNodeStatus is owned by its Node, so it goes with it.
    lab.kill(&format!("agent-{n2}"));
    assert!(
        status(&reports, &n2).await.is_object(),
        "node-2 has a report"
    );
    nodes
        .delete(&n2, &DeleteParams::default())
        .await
        .expect("node-2 deleted");
    eventually!(
        90,
        "node-2's BGPNodeStatus collected with its Node",
        logs,
        {
            match reports.get_opt(&n2).await {
                Ok(None) => Ok(()),
                Ok(Some(r)) => Err(format!(
                    "still there, owned by {}",
                    r.metadata
                        .owner_references
                        .map(|o| format!("{o:?}"))
                        .unwrap_or_default()
                )),
                Err(e) => Err(e.to_string()),
            }
        }
    );
    assert!(
        reports.get_opt(&n1).await.is_ok_and(|r| r.is_some()),
        "node-1's report stays"
    );
    drop(lab);
    drop(controller);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_get_ready_false_naming_the_field_and_an_event() {
    let mut env = KubeEnv::start("kube-conditions").await;
    env.install_crds().await;
    let client = env.client();
    env.create_json("bgpconfigurations", json!({
        "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPConfiguration", "metadata": {"name": "default"},
        "spec": {"asNumber": 65001, "nodeToNodeMeshEnabled": false}
    }))
    .await;
    let (good, keepalive, missing) = (env.name("good"), env.name("keepalive"), env.name("missing"));
    for (name, spec) in [
        (&good, json!({"peerIP": "10.0.0.1", "asNumber": 65000})),
        (
            &keepalive,
            json!({"peerIP": "10.0.0.2", "asNumber": 65000, "holdTime": "9s", "keepaliveTime": "5s"}),
        ),
        (
            &missing,
            json!({"peerIP": "10.0.0.3", "asNumber": 65000, "filters": ["nope"]}),
        ),
    ] {
        env.create_json(
            "bgppeers",
            json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "BGPPeer",
            "metadata": {"name": name}, "spec": spec}),
        )
        .await;
    }
    // As the chart's controller ServiceAccount, with the chart's RBAC.
    let release_ns = env.namespace("petrel-system").await;
    let chart = env
        .install_chart(
            "petrel",
            &release_ns,
            json!({}),
            &[
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ],
        )
        .await;
    let controller_kc = env
        .token(
            &release_ns,
            &chart.name("ServiceAccount", "controller"),
            None,
        )
        .await;
    let controller = start_controller(&controller_kc, env.dir());
    let logs = || read(&controller.log);
    let peers = api(&client, "BGPPeer", "bgppeers");
    let ready = |o: &DynamicObject| condition(&o.data["status"], "Ready").cloned();
    eventually!(30, "Ready conditions on every peer", logs, {
        let mut wrong = Vec::new();
        for (name, status, reason, message) in [
            (&good, "True", "Valid", "the object is valid"),
            (
                &keepalive,
                "False",
                "InvalidField",
                "spec.keepaliveTime: 5s must be at least 1s and at most a third of the hold time (9s)",
            ),
            (
                &missing,
                "False",
                "MissingReference",
                "spec.filters: BGPFilter \"nope\" does not exist",
            ),
        ] {
            let o = peers.get(name).await.map_err(|e| e.to_string())?;
            let c = ready(&o).unwrap_or_default();
            if c["status"] != status
                || c["reason"] != reason
                || c["message"] != message
                || c["observedGeneration"].as_i64() != o.metadata.generation
            {
                wrong.push(format!("{name}: {c}"));
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("\n"))
        }
    });
    // A Warning Event on each invalid object.
    let events = api(&client, "Event", "events");
    eventually!(10, "Warning Events", logs, {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let about = |name: &str, reason: &str| {
            list.items.iter().any(|e| {
                e.data["regarding"]["name"] == name
                    && e.data["regarding"]["kind"] == "BGPPeer"
                    && e.data["type"] == "Warning"
                    && e.data["reason"] == reason
                    && e.data["note"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("spec."))
            })
        };
        if about(&keepalive, "InvalidField")
            && about(&missing, "MissingReference")
            && !list
                .items
                .iter()
                .any(|e| e.data["regarding"]["name"] == good.as_str())
        {
            Ok(())
        } else {
            Err(format!(
                "{:#?}",
                list.items.iter().map(|e| &e.data).collect::<Vec<_>>()
            ))
        }
    });

    // Fixed: Ready again, with the new generation; the condition changed
    // status, so its transition time is the new one's (not earlier).
    let before = peers.get(&keepalive).await.expect("peer");
    let since = ready(&before).map(|c| c["lastTransitionTime"].clone());
    peers
        .patch(
            &keepalive,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"keepaliveTime": "3s"}})),
        )
        .await
        .expect("fixed");
    eventually!(20, "the fixed peer Ready", logs, {
        let o = peers.get(&keepalive).await.map_err(|e| e.to_string())?;
        let c = ready(&o).unwrap_or_default();
        if c["status"] == "True"
            && c["observedGeneration"].as_i64() == o.metadata.generation
            && o.metadata.generation > before.metadata.generation
        {
            Ok(())
        } else {
            Err(c.to_string())
        }
    });
    let after = peers.get(&keepalive).await.expect("peer");
    let now = ready(&after).map(|c| c["lastTransitionTime"].clone());
    let (Some(since), Some(now)) = (since, now) else {
        panic!("a transition time was written before and after the fix")
    };
    // RFC 3339 in UTC compares as text.
    assert!(
        now.as_str() >= since.as_str(),
        "the transition time went back: {since} then {now}"
    );

    // Agents' entries (applied here as two agents would) make the summary.
    // Their Nodes exist: the entries of a node that is gone are removed.
    let (node_a, node_b) = (env.name("node-a"), env.name("node-b"));
    for node in [&node_a, &node_b] {
        env.create_json(
            "nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
        )
        .await;
    }
    for (node, state) in [(&node_a, "Established"), (&node_b, "Active")] {
        peers
            .patch_status(
                &good,
                &PatchParams::apply(&format!("petrel-agent/{node}")),
                &Patch::Apply(
                    json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "BGPPeer",
                    "metadata": {"name": good},
                    "status": {"nodes": [{"node": node, "address": "10.0.0.1", "state": state}]}}),
                ),
            )
            .await
            .expect("agent entry");
    }
    eventually!(20, "the summary", logs, {
        let s = status(&peers, &good).await;
        if s["summary"] == "1/2 established" && entries(&s).len() == 2 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });

    // Settled: the controller writes nothing more (the API server's audit
    // log: no PATCH of a BGPPeer's status, applied or not).
    let count = |env: &KubeEnv| {
        env.audit().map(|log| {
            log.iter()
                .filter(|r| {
                    r.verb == "patch"
                        && r.resource == "bgppeers"
                        && r.subresource.as_deref() == Some("status")
                })
                .count()
        })
    };
    if count(&env).is_some() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = count(&env);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            count(&env),
            before,
            "status written while nothing changed\n{}",
            logs()
        );
    } else {
        eprintln!("an external cluster: the write count is not checked (no audit log to read)");
    }
    assert!(after.metadata.generation.is_some());

    // A Node deleted: after a grace period its agent's entries go (given up
    // in that agent's name), and the other node's entry stays.
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .delete(&node_b, &DeleteParams::default())
        .await
        .expect("node-b deleted");
    eventually!(40, "node-b's entry removed", logs, {
        let s = status(&peers, &good).await;
        let e = entries(&s);
        if e.len() == 1 && e[0].0 == node_a && s["summary"] == "1/1 established" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    assert!(
        logs().contains("removed the status entries of a node that is gone"),
        "{}",
        logs()
    );
    drop(controller);
    env.cleanup().await;
}
