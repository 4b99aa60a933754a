//! `petrel lab`: a whole cluster's routing on one machine. Network namespaces
//! play the nodes, their pods and the switch; a real router (FRR, BIRD 2 or a
//! petrel route reflector) peers with one `petrel agent` per node; the lab
//! plays kube-proxy and writes the cluster's objects for the agents to read:
//! into a directory, or with `--kube` into a Kubernetes API server, where
//! `petrel controller` assigns the LoadBalancer IPs (see the `kube` module).
//!
//! Everything `up` creates is recorded in `/run/petrel-lab/<name>/state.json`
//! as it goes, so `status`, `down` and `restart` work from any later process,
//! and `down` also removes a lab whose `up` failed half-way.

mod kube;
mod network;
mod pods;
mod render;
mod report;
mod sys;
mod topology;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use network::build;
use pods::{PTP, ipam_plugin};
use report::*;
use sys::Proc;
pub use topology::RouterKind;
use topology::Topology;

/// `print!` that ignores a closed stdout (`petrel lab status | head`): the
/// lab's state must not depend on whether anyone reads the report.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// `println!` that ignores a closed stdout.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Where labs keep their state, one directory per lab.
const STATE_ROOT: &str = "/run/petrel-lab";

/// The pods' gateway: a link-local address nobody has, answered by the node's
/// proxy ARP (as Calico does), so pods need no per-node configuration.
const POD_GATEWAY: &str = "169.254.1.1";

/// How long processes get to exit after SIGTERM.
const GRACE: Duration = Duration::from_secs(5);

/// `petrel lab` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Build a lab: namespaces, the router, one agent per node, pods, Services;
    /// wait until it converges and show it.
    Up {
        /// A built-in topology (tor, tor-bird, rr) or a YAML file; default tor.
        topology: Option<String>,
        /// The lab's name, the prefix of its namespaces (default: the topology's).
        #[arg(long)]
        name: Option<String>,
        /// Run this router instead of the topology's.
        #[arg(long, value_enum)]
        router: Option<RouterKind>,
        /// The longest wait for sessions and routes, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Keep the cluster's objects in this kubeconfig's API server
        /// instead of files: agents run `--source kube` and
        /// `petrel controller` assigns LoadBalancer IPs. `down` deletes
        /// what the lab created there.
        #[arg(long, value_name = "KUBECONFIG")]
        kube: Option<PathBuf>,
    },
    /// Show a lab: processes, sessions, the router's routes, pod reachability.
    Status {
        /// The lab (default: the only one running).
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a lab: stop its processes, delete its namespaces and state.
    Down {
        /// The lab (default: the only one running).
        #[arg(long)]
        name: Option<String>,
    },
    /// Print a topology as Graphviz DOT (`| dot -Tsvg > lab.svg`).
    Graph {
        /// A built-in topology (tor, tor-bird, rr) or a YAML file; default tor.
        topology: Option<String>,
    },
    /// Restart one node's agent (SIGTERM, or SIGKILL with --kill), e.g. to
    /// watch graceful restart.
    Restart {
        /// The node.
        node: String,
        /// Kill it (SIGKILL) instead of asking it to stop.
        #[arg(long)]
        kill: bool,
        /// The lab (default: the only one running).
        #[arg(long)]
        name: Option<String>,
    },
    /// Relay TCP from inside a network namespace to an address reached from
    /// here (how `--kube` labs' agents reach the API server).
    #[command(hide = true)]
    Forward {
        /// The namespace to listen in.
        #[arg(long)]
        netns: String,
        /// The address to listen on, inside it.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Where to connect, from this process's namespace.
        #[arg(long)]
        to: std::net::SocketAddr,
    },
}

/// Runs a `petrel lab` subcommand.
pub fn run(cmd: LabCommand) -> anyhow::Result<()> {
    match cmd {
        LabCommand::Graph { topology } => {
            out!("{}", render::dot(&Topology::load(topology.as_deref())?));
            Ok(())
        }
        LabCommand::Up {
            topology,
            name,
            router,
            timeout,
            kube,
        } => {
            let mut topo = Topology::load(topology.as_deref())?;
            if let Some(kind) = router {
                topo = topo.with_router(kind)?;
            }
            let kube = match kube {
                Some(p) => Some(
                    std::path::absolute(&p).with_context(|| format!("--kube {}", p.display()))?,
                ),
                None => None,
            };
            up(topo, name, Duration::from_secs(timeout), kube)
        }
        LabCommand::Forward { netns, listen, to } => kube::forward(&netns, listen, to),
        LabCommand::Status { name } => {
            if !sys::is_root() {
                bail!(
                    "petrel lab status needs root (it pings inside the lab's namespaces); run it with sudo"
                );
            }
            let state = State::load(&resolve_name(name)?)?;
            out!("{}", status(&state));
            Ok(())
        }
        LabCommand::Down { name } => {
            let name = match name {
                Some(n) => n,
                None => match labs().as_slice() {
                    [] => {
                        outln!("no lab is running");
                        return Ok(());
                    }
                    [one] => one.clone(),
                    many => bail!(
                        "several labs are running ({}); say which with --name",
                        many.join(", ")
                    ),
                },
            };
            down(&name)
        }
        LabCommand::Restart { node, kill, name } => {
            let mut state = State::load(&resolve_name(name)?)?;
            restart_agent(&mut state, &node, kill)
        }
    }
}

/// What `up` built, saved after every step.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// The lab's name.
    name: String,
    /// Its topology.
    topology: Topology,
    /// The namespaces created, in order.
    namespaces: Vec<String>,
    /// The processes started.
    processes: Vec<Proc>,
    /// Directories outside the state directory to remove (FRR's run directory).
    extra_dirs: Vec<PathBuf>,
    /// Whether `up` finished building.
    complete: bool,
    /// The API server the cluster's objects are in (`--kube`).
    #[serde(default)]
    kube: Option<kube::KubeLab>,
    /// With `ipamMode: Petrel`: each pod's address (by namespace), as the
    /// CNI plugins gave it.
    #[serde(default)]
    pod_ips: std::collections::BTreeMap<String, Ipv4Addr>,
}

impl State {
    fn dir_of(name: &str) -> PathBuf {
        Path::new(STATE_ROOT).join(name)
    }

    fn dir(&self) -> PathBuf {
        State::dir_of(&self.name)
    }

    fn load(name: &str) -> anyhow::Result<State> {
        let path = State::dir_of(name).join("state.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!("there is no lab {name:?} (no {})", path.display())
            } else {
                anyhow::anyhow!("cannot read {}: {e}", path.display())
            }
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    fn save(&self) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        sys::write_atomic(&self.dir().join("state.json"), &text)
    }

    /// The switch (router) namespace.
    fn switch_ns(&self) -> String {
        format!("{}-{}", self.name, self.topology.router.name)
    }

    fn node_ns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    /// The outside host's namespace.
    fn outside_ns(&self) -> String {
        format!("{}-outside", self.name)
    }

    /// The address of pod `i` of `node`: from its pod CIDR, or as petrel's
    /// IPAM gave it (`None` before its pod was made).
    fn pod_ip(&self, node: &topology::LabNode, i: u8) -> Option<Ipv4Addr> {
        if self.topology.petrel_ipam() {
            self.pod_ips.get(&self.pod_ns(&node.name, i)).copied()
        } else {
            Some(node.pod_ip(i))
        }
    }

    /// The IPAM socket of `node`'s agent.
    fn ipam_socket(&self, node: &str) -> PathBuf {
        self.dir().join(format!("{node}-ipam.sock"))
    }

    fn pod_ns(&self, node: &str, i: u8) -> String {
        format!("{}-{node}-pod{i}", self.name)
    }

    /// A node agent's (or the reflector's) API socket.
    fn socket(&self, node: &str) -> PathBuf {
        self.dir().join(format!("{node}.sock"))
    }

    /// `--kube`: the agents' kubeconfig (the same cluster, through the
    /// forwarder).
    fn agent_kubeconfig(&self) -> PathBuf {
        self.dir().join("kubeconfig-agents")
    }

    /// The directory every node agent reads.
    fn cluster_dir(&self) -> PathBuf {
        self.dir().join("cluster")
    }

    fn process(&self, label: &str) -> Option<&Proc> {
        self.processes.iter().find(|p| p.label == label)
    }

    /// Creates a namespace with forwarding on and reverse-path filtering off
    /// (set before any interface exists, so every interface inherits it).
    fn add_ns(&mut self, ns: &str, forwarding: bool) -> anyhow::Result<()> {
        sys::run("ip", &["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        self.save()?;
        sys::ip(ns, &["link", "set", "lo", "up"])?;
        let fwd = if forwarding {
            "net.ipv4.ip_forward=1"
        } else {
            "net.ipv4.ip_forward=0"
        };
        sys::sysctl(
            ns,
            &[
                fwd,
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
        )?;
        Ok(())
    }

    fn spawn(
        &mut self,
        label: &str,
        ns: &str,
        argv: Vec<String>,
        log: &Path,
    ) -> anyhow::Result<()> {
        let p = Proc::spawn(label, ns, &argv, log)?;
        self.processes.push(p);
        self.save()
    }
}

/// The lab's daemons are started by the shared recipes and recorded
/// detached, so they outlive this command.
impl testkit::daemons::Spawn for State {
    fn spawn(
        &mut self,
        label: &str,
        ns: &str,
        argv: &[String],
        log: &Path,
    ) -> Result<(), testkit::Error> {
        State::spawn(self, label, ns, argv.to_vec(), log)
            .map_err(|e| testkit::Error::new(format!("start {label}"), format!("{e:#}")))
    }
}

impl Topology {
    /// The same topology with another router; checked again.
    fn with_router(mut self, kind: RouterKind) -> anyhow::Result<Topology> {
        if kind == RouterKind::Petrel {
            self.router.asn = None;
        } else if self.router.asn.is_none() {
            // The router joins the cluster's AS: an iBGP route reflector, as with petrel.
            self.router.asn = Some(self.cluster.asn);
        }
        self.router.kind = kind;
        // Through the one checked path (JSON is YAML), so errors read the same.
        let text = serde_json::to_string(&self)?;
        Topology::parse(&text).with_context(|| {
            let name = clap::ValueEnum::to_possible_value(&kind)
                .map(|v| v.get_name().to_string())
                .unwrap_or_default();
            format!("with --router {name}")
        })
    }
}

/// The labs that have a state directory.
fn labs() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(STATE_ROOT) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn resolve_name(name: Option<String>) -> anyhow::Result<String> {
    if let Some(n) = name {
        return Ok(n);
    }
    match labs().as_slice() {
        [] => bail!("no lab is running; start one with `petrel lab up`"),
        [one] => Ok(one.clone()),
        many => bail!(
            "several labs are running ({}); say which with --name",
            many.join(", ")
        ),
    }
}

/// Fails clearly when the lab cannot be built here: not root, or a program missing.
fn preflight(t: &Topology) -> anyhow::Result<()> {
    if !sys::is_root() {
        bail!("petrel lab needs root (it creates network namespaces); run it with sudo");
    }
    let mut needed = vec![
        ("ip", "iproute2"),
        ("setsid", "util-linux"),
        ("sysctl", "procps"),
        ("ping", "iputils-ping"),
    ];
    match t.router.kind {
        RouterKind::Frr => needed.extend([
            ("/usr/lib/frr/zebra", "frr"),
            ("/usr/lib/frr/bgpd", "frr"),
            ("vtysh", "frr"),
        ]),
        RouterKind::Bird => needed.extend([("bird", "bird2"), ("birdc", "bird2")]),
        RouterKind::Petrel => {}
    }
    if t.cluster.nat_outgoing {
        needed.push(("nft", "nftables"));
    }
    if t.petrel_ipam() {
        needed.push((PTP, "containernetworking-plugins"));
        let plugin = ipam_plugin()?;
        if !Path::new(&plugin).exists() {
            bail!(
                "{plugin} is missing: petrel's CNI plugin is built beside petrel (cargo build --release -p petrel; labs/up.sh does)"
            );
        }
    }
    let missing: Vec<String> = needed
        .iter()
        .filter(|(p, _)| sys::which(p).is_none())
        .map(|(p, pkg)| format!("{p} (Debian package {pkg})"))
        .collect();
    if !missing.is_empty() {
        bail!("missing {}; labs/up.sh installs them", missing.join(", "));
    }
    Ok(())
}

fn up(
    t: Topology,
    name: Option<String>,
    timeout: Duration,
    kubeconfig: Option<PathBuf>,
) -> anyhow::Result<()> {
    preflight(&t)?;
    let name = name.unwrap_or_else(|| t.name.clone());
    if name.is_empty()
        || name.len() > 20
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!("--name: {name:?} must be 1 to 20 lowercase letters, digits or '-'");
    }
    let dir = State::dir_of(&name);
    if dir.join("state.json").exists() {
        bail!(
            "lab {name:?} exists already: `petrel lab status --name {name}`, or `petrel lab down --name {name}` first"
        );
    }
    let mut state = State {
        name: name.clone(),
        topology: t,
        namespaces: Vec::new(),
        processes: Vec::new(),
        extra_dirs: Vec::new(),
        complete: false,
        kube: kubeconfig.map(|k| kube::KubeLab {
            kubeconfig: k,
            ..kube::KubeLab::default()
        }),
        pod_ips: Default::default(),
    };
    let mut wanted = vec![state.switch_ns()];
    for n in &state.topology.nodes {
        wanted.push(state.node_ns(&n.name));
        wanted.extend((1..=n.pods).map(|i| state.pod_ns(&n.name, i)));
    }
    let existing = sys::namespaces();
    if let Some(ns) = wanted.iter().find(|ns| existing.contains(ns)) {
        bail!(
            "namespace {ns} exists already (not made by a lab named {name:?}); choose another --name or remove it"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    state.save()?;

    let started = Instant::now();
    if let Err(e) = build(&mut state) {
        eprintln!("petrel lab up failed: {e:#}\nremoving what was built");
        teardown(&state);
        return Err(e.context(format!("building lab {name}")));
    }
    outln!(
        "lab {name} built in {:.1} s; waiting (at most {} s) for every session, and every pod CIDR in every table",
        started.elapsed().as_secs_f64(),
        timeout.as_secs()
    );
    let waited = Instant::now();
    // A daemon that exits (a configuration it refuses) fails the wait at once.
    let mut dead = None;
    let result = sys::wait_for(timeout, Duration::from_millis(200), || {
        if let Some(p) = state.processes.iter().find(|p| !p.alive()) {
            dead = Some(p.clone());
            return Ok(());
        }
        converged(&state)
    });
    if let Some(p) = dead {
        out!("{}", status(&state));
        bail!(
            "{} exited; the end of {}:\n{}\nthe lab is left up to look at; `petrel lab down --name {name}` removes it",
            p.label,
            p.log.display(),
            p.log_tail(10)
        );
    }
    match result {
        Ok(()) => {
            outln!(
                "converged {:.1} s after the agents started ({:.1} s in all)\n",
                waited.elapsed().as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            out!("{}", status(&state));
            outln!(
                "\n`petrel lab status --name {name}` shows this again; `petrel lab down --name {name}` removes the lab."
            );
            Ok(())
        }
        Err(why) => {
            out!("{}", status(&state));
            bail!(
                "lab {name} did not converge within {} s: {why}\nit is left up to look at; `petrel lab down --name {name}` removes it",
                timeout.as_secs()
            )
        }
    }
}

/// `--kube`: the forwarder the agents reach the API server through, the
/// cluster's objects, and the controller.
fn publish(state: &mut State) -> anyhow::Result<()> {
    let Some(k) = state.kube.clone() else {
        return Ok(());
    };
    let listen = std::net::SocketAddr::new(state.topology.router.address.into(), kube::API_PORT);
    let rt = kube::runtime()?;
    let target = rt.block_on(kube::agent_kubeconfig(
        &k.kubeconfig,
        listen,
        &state.agent_kubeconfig(),
    ))?;
    let sw = state.switch_ns();
    let argv = vec![
        exe()?,
        "lab".into(),
        "forward".into(),
        "--netns".into(),
        sw,
        "--listen".into(),
        listen.to_string(),
        "--to".into(),
        target.to_string(),
    ];
    let log = state.dir().join("forward.log");
    state.spawn("forward", "", argv, &log)?;
    rt.block_on(async {
        let client = kube::client(&k.kubeconfig).await?;
        for obj in kube::objects(&state.topology, &state.name)? {
            let made = kube::create(&client, &obj).await?;
            // Recorded at once: a failure later still deletes it.
            if let Some(kl) = state.kube.as_mut() {
                kl.created.push(made.clone());
            }
            state.save()?;
            kube::finish(&client, &made, &obj).await?;
        }
        anyhow::Ok(())
    })?;
    let argv = vec![
        "env".into(),
        format!("KUBECONFIG={}", k.kubeconfig.display()),
        exe()?,
        "controller".into(),
        // Labs side by side must not fight over one metrics port.
        "--metrics-address".into(),
        "off".into(),
        // Only the lab's Services and pool: in a real cluster, nothing else.
        "--load-balancer-class".into(),
        kube::class_of(&state.name),
        "--pool-selector".into(),
        format!("{}={}", kube::POOL_LABEL, state.name),
    ];
    let log = state.dir().join("controller.log");
    state.spawn("controller", "", argv, &log)
}

fn exe() -> anyhow::Result<String> {
    let p = std::env::current_exe().context("cannot find the petrel binary")?;
    Ok(p.display().to_string())
}

/// The command line of an agent reading `source` as `node` (`None`: the
/// lab's API server).
fn agent_argv(state: &State, source: Option<&Path>, node: &str) -> anyhow::Result<Vec<String>> {
    let mut argv = Vec::new();
    let source = match (source, &state.kube) {
        (Some(dir), _) => format!("files:{}", dir.display()),
        (None, Some(_)) => {
            argv.push("env".into());
            argv.push(format!("KUBECONFIG={}", state.agent_kubeconfig().display()));
            "kube".into()
        }
        (None, None) => format!("files:{}", state.cluster_dir().display()),
    };
    argv.extend([
        exe()?,
        "agent".into(),
        "--source".into(),
        source,
        "--node".into(),
        node.into(),
        "--api-socket".into(),
        state.socket(node).display().to_string(),
        "--poll-ms".into(),
        "200".into(),
        // Stale routes of a restarted agent go after 5 s at the latest.
        "--fib-initial-delay".into(),
        "5".into(),
    ]);
    if state.topology.petrel_ipam() {
        argv.push("--ipam-socket".into());
        argv.push(state.ipam_socket(node).display().to_string());
        if state.kube.is_none() {
            // Every node's agent on this host shares one state file, under
            // its lock: the lab's cluster-wide truth without a cluster.
            argv.push("--ipam-state".into());
            argv.push(state.dir().join("ipam.json").display().to_string());
        }
    }
    Ok(argv)
}

fn start_agent(state: &mut State, node: &str) -> anyhow::Result<()> {
    let argv = agent_argv(state, None, node)?;
    let log = state.dir().join(format!("{node}.log"));
    let ns = state.node_ns(node);
    state.spawn(&format!("agent {node}"), &ns, argv, &log)
}

fn start_router(state: &mut State) -> anyhow::Result<()> {
    let t = state.topology.clone();
    let sw = state.switch_ns();
    match t.router.kind {
        RouterKind::Frr => {
            let dir = state.dir().join("frr");
            std::fs::create_dir_all(&dir)?;
            // Recorded before starting, so `down` removes it even if FRR
            // does not come up.
            state.extra_dirs.push(testkit::daemons::frr_run_dir(&sw));
            state.save()?;
            let config = render::frr_config(&t, &dir.join("frr.log"));
            testkit::daemons::start_frr(state, &sw, &dir, &config)?;
            Ok(())
        }
        RouterKind::Bird => {
            let dir = state.dir().join("bird");
            testkit::daemons::start_bird(state, &sw, &dir, &render::bird_config(&t))?;
            Ok(())
        }
        RouterKind::Petrel => {
            let dir = state.dir().join("reflector");
            std::fs::create_dir_all(&dir)?;
            for (file, yaml) in render::reflector_objects(&t) {
                sys::write_atomic(&dir.join(file), &yaml)?;
            }
            let mut argv = agent_argv(state, Some(&dir), &t.router.name)?;
            if !t.router.install_routes {
                argv.push("--no-fib".into());
            }
            let log = state.dir().join(format!("{}.log", t.router.name));
            state.spawn(&format!("agent {}", t.router.name), &sw, argv, &log)
        }
    }
}

/// Stops every process, deletes every namespace and the state directory.
/// Errors are ignored: whatever is already gone is fine.
fn teardown(state: &State) {
    // Ask everyone at once, then wait once: a lab stops in one grace period.
    for p in state.processes.iter().rev() {
        p.signal("TERM");
    }
    let deadline = Instant::now() + GRACE;
    while state.processes.iter().any(Proc::alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &state.processes {
        p.kill();
    }
    for ns in state.namespaces.iter().rev() {
        // Anything else still inside (a ping from `status`) is the lab's too.
        if let Ok(pids) = sys::run("ip", &["netns", "pids", ns]) {
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).output();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    for d in &state.extra_dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    if let Some(k) = &state.kube
        && !k.created.is_empty()
    {
        // After the processes: nobody reacts to the deletions any more.
        let deleted = kube::runtime().and_then(|rt| {
            rt.block_on(async {
                let client = kube::client(&k.kubeconfig).await?;
                let (n, mut errors) = kube::delete(&client, &k.created).await;
                errors.extend(kube::delete_blocks(&client, &state.name).await);
                Ok((n, errors))
            })
        });
        match deleted {
            Ok((_, errors)) if errors.is_empty() => {}
            Ok((_, errors)) => eprintln!(
                "objects the lab made in the API server and could not delete: {}",
                errors.join("; ")
            ),
            Err(e) => eprintln!(
                "cannot delete the lab's objects in the API server ({e:#}); they are: {}",
                k.created
                    .iter()
                    .map(|c| format!("{} {}", c.kind, c.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    let _ = std::fs::remove_dir_all(state.dir());
}

fn down(name: &str) -> anyhow::Result<()> {
    if !sys::is_root() {
        bail!("petrel lab needs root (it deletes network namespaces); run it with sudo");
    }
    let dir = State::dir_of(name);
    if !dir.exists() {
        outln!("no lab {name:?}: nothing to do");
        return Ok(());
    }
    match State::load(name) {
        Ok(state) => {
            teardown(&state);
            outln!(
                "lab {name}: stopped {} processes, deleted {} namespaces",
                state.processes.len(),
                state.namespaces.len()
            );
        }
        Err(e) => {
            // Nothing recorded means nothing was created yet.
            let _ = std::fs::remove_dir_all(&dir);
            outln!("lab {name}: {e:#}; removed {}", dir.display());
        }
    }
    Ok(())
}

fn restart_agent(state: &mut State, node: &str, kill: bool) -> anyhow::Result<()> {
    let label = format!("agent {node}");
    let Some(old) = state.process(&label).cloned() else {
        let nodes: Vec<&str> = state
            .topology
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        bail!(
            "lab {} has no node {node:?} (nodes: {})",
            state.name,
            nodes.join(", ")
        );
    };
    if kill {
        old.kill();
    } else {
        old.stop(GRACE);
    }
    let new = Proc::spawn(&label, &old.ns, &old.argv, &old.log)?;
    outln!(
        "agent {node}: pid {} {}, started again as pid {}",
        old.pid,
        if kill { "killed" } else { "stopped" },
        new.pid
    );
    for p in &mut state.processes {
        if p.label == label {
            *p = new.clone();
        }
    }
    state.save()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_can_be_swapped_and_is_checked_again() {
        let tor = Topology::load(None).expect("tor");
        let bird = tor.clone().with_router(RouterKind::Bird).expect("bird");
        assert_eq!(bird.router.kind, RouterKind::Bird);
        assert_eq!(bird.nodes, tor.nodes);
        // A reflector is in the cluster's AS; tor's nodes have their own.
        let e = format!(
            "{:#}",
            tor.with_router(RouterKind::Petrel)
                .expect_err("per-node ASNs")
        );
        assert!(e.contains("nodes[0].asn"), "{e}");
        let rr = Topology::load(Some("rr")).expect("rr");
        let frr = rr.with_router(RouterKind::Frr).expect("frr");
        assert_eq!(frr.router_asn(), 64512);
        assert!(render::frr_config(&frr, Path::new("/x")).contains("route-reflector-client"));
    }

    #[test]
    fn names_follow_the_lab() {
        let state = State {
            name: "x1".into(),
            topology: Topology::load(None).expect("tor"),
            namespaces: Vec::new(),
            processes: Vec::new(),
            extra_dirs: Vec::new(),
            complete: false,
            kube: None,
            pod_ips: Default::default(),
        };
        assert_eq!(state.switch_ns(), "x1-tor");
        assert_eq!(state.pod_ns("node-2", 1), "x1-node-2-pod1");
        assert_eq!(
            state.socket("node-1"),
            Path::new("/run/petrel-lab/x1/node-1.sock")
        );
    }
}
