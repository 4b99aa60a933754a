//! `petrel`: the node agent and the operator's command line.
//!
//! - `petrel agent`: the node agent (standalone, from a directory of YAML objects).
//! - `petrel controller`: LoadBalancer IPs and status, one replica leading.
//! - `petrel peers`, `petrel rib`: what the running agent sees, over its API.
//! - `petrel decode`: MRT captures through petrel's own BGP codec.
//! - `petrel crds`: the CustomResourceDefinitions, as YAML.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "petrel",
    version,
    about = "Kubernetes routing controller with a native BGP speaker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the agent's many flags cost nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node agent.
    Agent {
        /// Where desired state comes from: `files:DIR` (a directory of YAML
        /// objects) or `kube` (the API server: in-cluster configuration, or
        /// KUBECONFIG).
        #[arg(long)]
        source: agent::SourceKind,
        /// This node's name (its Node object's metadata.name).
        #[arg(long)]
        node: String,
        /// The API's unix socket.
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        api_socket: PathBuf,
        /// Also serve the API on TCP at this address, with mutual TLS (needs
        /// --api-tls-cert, --api-tls-key and --api-tls-client-ca).
        #[arg(long, requires_all = ["api_tls_cert", "api_tls_key", "api_tls_client_ca"])]
        api_address: Option<std::net::SocketAddr>,
        /// The API's TLS certificate (PEM), for --api-address.
        #[arg(long, requires = "api_address")]
        api_tls_cert: Option<PathBuf>,
        /// The API's TLS key (PEM), for --api-address.
        #[arg(long, requires = "api_address")]
        api_tls_key: Option<PathBuf>,
        /// The CA (PEM) that signs the certificates clients must present.
        #[arg(long, requires = "api_address")]
        api_tls_client_ca: Option<PathBuf>,
        /// How often to check the source for changes, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        poll_ms: u64,
        /// Leave the kernel's routing tables alone (no FIB programming).
        #[arg(long)]
        no_fib: bool,
        /// The routing table petrel's routes go into.
        #[arg(long, default_value_t = route_sync::route::MAIN_TABLE)]
        route_table: u32,
        /// The routing protocol number petrel's routes carry.
        #[arg(long, default_value_t = route_sync::route::DEFAULT_PROTOCOL)]
        route_protocol: u8,
        /// The longest wait, in seconds after start, before routes nobody
        /// announced again are removed from the kernel (routes that survived a
        /// restart keep forwarding meanwhile). They go sooner, as soon as every
        /// configured peer has sent its table (End-of-RIB).
        #[arg(long, default_value_t = 120)]
        fib_initial_delay: u64,
        /// Remove petrel's routes from the kernel on exit (by default they stay,
        /// so forwarding continues while the agent restarts).
        #[arg(long)]
        flush_routes_on_exit: bool,
        /// Install next hops that no kernel route reaches as `onlink` out of
        /// this interface, instead of leaving their routes out.
        #[arg(long)]
        onlink_interface: Option<String>,
        /// Where to serve /metrics, /healthz and /readyz (`off`: nowhere).
        #[arg(long, default_value = agent::metrics::DEFAULT_ADDRESS, value_parser = parse_metrics_address)]
        metrics_address: MetricsAddress,
        /// Record every input the BGP speaker takes into this directory
        /// (`config.json`, `events.jsonl`; passwords left out), so that a
        /// run can be replayed without sockets (bgpd::speaker::replay).
        #[arg(long, value_name = "DIR")]
        record_speaker: Option<PathBuf>,
        /// With `--source kube`: save the API server's objects here (mode
        /// 0600: it holds BGP passwords) after each change, and start from
        /// them when restarted while the API server cannot be reached.
        #[arg(long, value_name = "FILE")]
        saved_snapshot: Option<PathBuf>,
        /// Hand out pod addresses from IPPools to the CNI plugin
        /// (`petrel-ipam`) on this unix socket.
        #[arg(long, value_name = "PATH")]
        ipam_socket: Option<PathBuf>,
        /// With `--source files:DIR`: the file that keeps the blocks and who
        /// holds each address (in a cluster they are IPAMBlock objects).
        #[arg(long, value_name = "FILE", default_value = "/var/lib/petrel/ipam.json")]
        ipam_state: PathBuf,
        /// Seconds a given-back pod address waits before it is handed out
        /// again.
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        ipam_cooldown: u64,
        /// Seconds a block stays empty before its node gives it up (never
        /// its last of a pool).
        #[arg(long, value_name = "SECONDS", default_value_t = 900)]
        ipam_block_grace: u64,
        /// A CNI network configuration list (`/etc/cni/net.d/10-petrel.conflist`)
        /// whose interface-making plugin's `mtu` the agent keeps at the
        /// pods' MTU: the link's less the overhead of the tunnels in use.
        #[arg(long, value_name = "FILE")]
        cni_conflist: Option<PathBuf>,
        /// The node's WireGuard private key (made, mode 0600, if missing;
        /// replace the file to rotate the key).
        #[arg(
            long,
            value_name = "FILE",
            default_value = "/var/lib/petrel/wireguard.key"
        )]
        wireguard_key: PathBuf,
        /// The WireGuard device's name (unique per host with a userspace
        /// implementation: their sockets share /var/run/wireguard).
        #[arg(long, value_name = "NAME", default_value = "wg.petrel")]
        wireguard_interface: String,
        /// Run this userspace WireGuard (`wireguard-go`) for the device
        /// instead of the kernel's.
        #[arg(long, value_name = "PROGRAM")]
        wireguard_userspace: Option<PathBuf>,
        /// The routing table of the routes through WireGuard.
        #[arg(long, value_name = "TABLE", default_value_t = 51820)]
        wireguard_table: u32,
    },
    /// Run the controller: LoadBalancer IPs for Services from
    /// LoadBalancerPools, the pools' status, and the Ready conditions of
    /// petrel's objects. With --leader-elect one replica acts (it holds a
    /// Lease) and the others stand by.
    Controller {
        /// Elect a leader through a coordination.k8s.io Lease before acting
        /// (without it, act at once: run only one replica).
        #[arg(long)]
        leader_elect: bool,
        /// The Lease's name.
        #[arg(long, default_value = "petrel-controller")]
        lease_name: String,
        /// The Lease's namespace [default: $POD_NAMESPACE, else default].
        #[arg(long)]
        lease_namespace: Option<String>,
        /// This replica's identity in the Lease [default: $POD_NAME, else
        /// HOSTNAME-PID].
        #[arg(long)]
        identity: Option<String>,
        /// How long the Lease holds without renewal: standbys take over
        /// this long after the leader's last renewal they saw.
        #[arg(long, default_value = "15s", value_parser = controller::parse_duration)]
        lease_duration: Duration,
        /// How long the leader keeps acting after its last successful
        /// renewal began (shorter than --lease-duration).
        #[arg(long, default_value = "10s", value_parser = controller::parse_duration)]
        renew_deadline: Duration,
        /// How often the Lease is tried or renewed.
        #[arg(long, default_value = "2s", value_parser = controller::parse_duration)]
        retry_period: Duration,
        /// Serve only Services with this spec.loadBalancerClass (by default,
        /// Services without one).
        #[arg(long)]
        load_balancer_class: Option<String>,
        /// Use only LoadBalancerPools whose labels match this selector
        /// (`kubectl -l` syntax, e.g. `team=web`); by default every pool.
        #[arg(long)]
        pool_selector: Option<String>,
        /// Where to serve /metrics, /healthz and /readyz (`off`: nowhere).
        #[arg(long, default_value = controller::health::DEFAULT_ADDRESS, value_parser = parse_metrics_address)]
        metrics_address: MetricsAddress,
        /// Garbage-collect leaked pod addresses (IPAMBlocks): those of pods
        /// that are gone, after --ipam-gc-grace; those of nodes that are
        /// gone, at once.
        #[arg(long)]
        ipam_gc: bool,
        /// How long an address whose pod is gone waits before it is given
        /// back (the pod is looked up once more just before).
        #[arg(long, default_value = "15m", value_parser = controller::parse_duration)]
        ipam_gc_grace: Duration,
        /// How often garbage collection runs.
        #[arg(long, default_value = "60s", value_parser = controller::parse_duration)]
        ipam_gc_interval: Duration,
    },
    /// This node's identity, peers, and every prefix it should advertise:
    /// whether it does, to which peers, and if not, why.
    Status {
        /// The agent's API socket.
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: cli::Format,
    },
    /// List BGP peers and their sessions.
    Peers {
        /// The agent's API socket.
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: cli::Format,
    },
    /// List the peers' BFD sessions: state, timers, discriminators, why
    /// each last went down.
    Bfd {
        /// The agent's API socket.
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: cli::Format,
    },
    /// Act on one peer: show it, reset, disable or enable its session.
    Peer {
        /// The agent's API socket.
        #[arg(long, default_value = api::DEFAULT_SOCKET, global = true)]
        socket: PathBuf,
        #[command(subcommand)]
        action: cli::client::PeerAction,
    },
    /// Originate or withdraw routes through the API.
    Route {
        /// The agent's API socket.
        #[arg(long, default_value = api::DEFAULT_SOCKET, global = true)]
        socket: PathBuf,
        #[command(subcommand)]
        action: cli::client::RouteAction,
    },
    /// Show the routing table: best paths and alternatives.
    Rib {
        #[command(flatten)]
        args: cli::client::RibArgs,
        /// The agent's API socket.
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: cli::Format,
    },
    /// Explain one prefix: every candidate path and why it won or lost, and
    /// which peers are sent the best path, or why not.
    Explain {
        /// The prefix (or an address, for a host route).
        prefix: String,
        /// The agent's API socket.
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: cli::Format,
    },
    /// Follow peer state and best-path changes as they happen.
    Watch {
        /// The agent's API socket.
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
        #[command(flatten)]
        args: cli::client::WatchArgs,
    },
    /// A whole cluster's routing on this machine, in network namespaces:
    /// `petrel lab up`, `status`, `down` (see docs/lab.md).
    Lab {
        #[command(subcommand)]
        command: lab::LabCommand,
    },
    /// Print the CustomResourceDefinitions of petrel's kinds as YAML
    /// (`petrel crds | kubectl apply -f -`).
    Crds {
        /// Write one file per CRD into this directory instead (how the Helm
        /// chart's crds/ is regenerated).
        #[arg(long, value_name = "DIR", conflicts_with = "output")]
        dir: Option<PathBuf>,
        /// Output format on standard output.
        #[arg(short, long, value_enum, default_value = "yaml")]
        output: cli::crds::Format,
    },
    /// Pod address blocks: `show` (pools, blocks per node, borrowed
    /// addresses), `check` (blocks against pods, this node's kernel routes
    /// and RIB), `release --from-report` (see docs/ipam.md).
    Ipam {
        #[command(subcommand)]
        command: IpamCommand,
    },
    /// Install the CNI plugin `petrel-ipam` and a network configuration on
    /// this host (the chart's init container runs it; see docs/ipam.md).
    CniInstall {
        /// The plugin binary to copy.
        #[arg(long, default_value = "/usr/local/bin/petrel-ipam")]
        plugin: PathBuf,
        /// The host's CNI bin directory.
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        /// The host's CNI configuration directory.
        #[arg(long, default_value = "/etc/cni/net.d")]
        conf_dir: PathBuf,
        /// The configuration's file name (runtimes take the first in
        /// lexical order).
        #[arg(long, default_value = "10-petrel.conflist")]
        conf_name: String,
        /// The network's name.
        #[arg(long, default_value = "petrel")]
        network: String,
        /// The main plugin that runs petrel-ipam: `ptp` or `bridge`.
        #[arg(long, default_value = "ptp", value_parser = ["ptp", "bridge"])]
        main_plugin: String,
        /// The agent's IPAM socket, as seen on the host.
        #[arg(long, default_value = cni::wire::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// The pods' MTU (default: the main plugin's).
        #[arg(long)]
        mtu: Option<u32>,
    },
    /// Print a shell completion script (e.g. `petrel completions bash >
    /// /etc/bash_completion.d/petrel`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Decode MRT files (RFC 6396; plain, gzip or bzip2) and print one JSON object per record.
    Decode(cli::decode::DecodeArgs),
}

/// `petrel ipam` subcommands.
#[derive(Debug, clap::Subcommand)]
enum IpamCommand {
    /// Pools, each node's blocks with utilisation and fragmentation, and
    /// the borrowed addresses.
    Show {
        #[command(flatten)]
        at: cli::ipam::Where,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: cli::Format,
    },
    /// Cross-checks the blocks with the pods, and with this node's kernel
    /// routes and RIB (`--node`): addresses allocated but unused, used but
    /// not allocated, blocks advertised by a node without affinity,
    /// overlapping blocks. Exit status 1 when it finds any.
    Check {
        #[command(flatten)]
        at: cli::ipam::Where,
        #[command(flatten)]
        args: cli::ipam::CheckArgs,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: cli::Format,
    },
    /// Gives back the addresses a `check --report` found allocated but
    /// unused; refuses a report older than a change of their blocks.
    Release {
        #[command(flatten)]
        at: cli::ipam::Where,
        /// The report of `petrel ipam check --report FILE`.
        #[arg(long, value_name = "FILE")]
        from_report: PathBuf,
        /// Say what would be given back, and give back nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Logs to stderr, `RUST_LOG` or `info`, colours only on a terminal.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `--metrics-address`: an address, or `off`.
#[derive(Debug, Clone)]
struct MetricsAddress(Option<std::net::SocketAddr>);

fn parse_metrics_address(s: &str) -> Result<MetricsAddress, String> {
    if s == "off" {
        return Ok(MetricsAddress(None));
    }
    // `[::1]:9479`, `10.0.0.1:9479`, and an IPv6 address without brackets
    // (`fd00::1:9479`, as a node's address from the downward API is
    // written before the port).
    let bare = s.rsplit_once(':').and_then(|(ip, port)| {
        Some(std::net::SocketAddr::new(
            ip.parse().ok()?,
            port.parse().ok()?,
        ))
    });
    s.parse()
        .ok()
        .or(bare)
        .map(|a| MetricsAddress(Some(a)))
        .ok_or_else(|| format!("{s:?} is not ADDRESS:PORT or off"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode(args) => {
            return match cli::decode::run(&args) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("petrel decode: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Lab { command } => lab::run(command),
        Command::Agent {
            source,
            node,
            api_socket,
            api_address,
            api_tls_cert,
            api_tls_key,
            api_tls_client_ca,
            poll_ms,
            no_fib,
            route_table,
            route_protocol,
            fib_initial_delay,
            flush_routes_on_exit,
            onlink_interface,
            metrics_address,
            record_speaker,
            saved_snapshot,
            ipam_socket,
            ipam_state,
            ipam_cooldown,
            ipam_block_grace,
            cni_conflist,
            wireguard_key,
            wireguard_interface,
            wireguard_userspace,
            wireguard_table,
        } => {
            init_logging();
            // Two reconcilers with one protocol on one table would remove
            // each other's routes; the kernel's own tables are not ours.
            if wireguard_table == route_table || matches!(wireguard_table, 0 | 253..=255) {
                eprintln!(
                    "petrel: --wireguard-table {wireguard_table} is the FIB's table (--route-table) or one of the kernel's (0, 253-255); pick another"
                );
                return ExitCode::from(2);
            }
            let api_tcp = match (api_address, api_tls_cert, api_tls_key, api_tls_client_ca) {
                (Some(a), Some(c), Some(k), Some(ca)) => match api::TcpApi::load(a, &c, &k, &ca) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        eprintln!("petrel: {e:#}");
                        return ExitCode::from(1);
                    }
                },
                _ => None,
            };
            runtime().and_then(|rt| {
                rt.block_on(agent::run(agent::AgentOptions {
                    source,
                    node,
                    api_socket,
                    api_tcp,
                    poll: Duration::from_millis(poll_ms.max(50)),
                    fib: (!no_fib).then(|| agent::fib::FibOptions {
                        table: route_table,
                        protocol: route_protocol,
                        initial_delay: Duration::from_secs(fib_initial_delay),
                        onlink_interface,
                    }),
                    flush_routes_on_exit,
                    metrics: metrics_address.0,
                    record_speaker,
                    saved_snapshot,
                    ipam: ipam_socket.map(|socket| agent::IpamOptions {
                        socket,
                        state_file: ipam_state,
                        cooldown: Duration::from_secs(ipam_cooldown),
                        block_grace: Duration::from_secs(ipam_block_grace),
                    }),
                    overlay: agent::OverlayOptions {
                        cni_conflist,
                        wireguard: agent::wireguard::WireGuardOptions {
                            key_file: wireguard_key,
                            interface: wireguard_interface,
                            userspace: wireguard_userspace,
                            table: wireguard_table,
                            ..Default::default()
                        },
                    },
                }))
                .map_err(anyhow::Error::from)
            })
        }
        Command::Controller {
            leader_elect,
            lease_name,
            lease_namespace,
            identity,
            lease_duration,
            renew_deadline,
            retry_period,
            load_balancer_class,
            pool_selector,
            ipam_gc,
            ipam_gc_grace,
            ipam_gc_interval,
            metrics_address,
        } => {
            init_logging();
            let timing = controller::lease::Timing {
                lease_duration,
                renew_deadline,
                retry_period,
            };
            match timing.validate() {
                Err(e) if leader_elect => Err(e.into()),
                _ => runtime().and_then(|rt| {
                    rt.block_on(controller::run(controller::ControllerOptions {
                        leader_elect,
                        lease_name,
                        lease_namespace: lease_namespace
                            .unwrap_or_else(controller::default_lease_namespace),
                        identity: identity.unwrap_or_else(controller::default_identity),
                        timing,
                        lb: controller::lb::LbOptions {
                            class: load_balancer_class,
                            pool_selector,
                        },
                        metrics: metrics_address.0,
                        ipam_gc: ipam_gc.then_some(controller::ipam_gc::GcOptions {
                            grace: ipam_gc_grace,
                            interval: ipam_gc_interval,
                        }),
                    }))
                    .map_err(anyhow::Error::from)
                }),
            }
        }
        Command::Explain {
            prefix,
            socket,
            output,
        } => runtime().and_then(|rt| rt.block_on(cli::client::explain(&socket, &prefix, output))),
        Command::Watch { socket, args } => {
            runtime().and_then(|rt| rt.block_on(cli::client::watch(&socket, args)))
        }
        Command::Crds { dir, output } => cli::crds::run(dir.as_deref(), output),
        Command::Ipam {
            command: IpamCommand::Check { at, args, output },
        } => {
            // Exit status 1: inconsistencies found; 2: the check failed.
            return match runtime()
                .and_then(|rt| rt.block_on(cli::ipam::run_check(&at, &args, output)))
            {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("petrel: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Ipam { command } => runtime().and_then(|rt| match command {
            IpamCommand::Show { at, output } => rt.block_on(cli::ipam::show(&at, output)),
            // Handled above, for its exit status.
            IpamCommand::Check { .. } => Ok(()),
            IpamCommand::Release {
                at,
                from_report,
                dry_run,
            } => rt.block_on(cli::ipam::release_from_report(&at, &from_report, dry_run)),
        }),
        Command::CniInstall {
            plugin,
            bin_dir,
            conf_dir,
            conf_name,
            network,
            main_plugin,
            socket,
            mtu,
        } => cni::install::install(&cni::install::Install {
            plugin,
            bin_dir,
            conf_dir,
            conf_name,
            network,
            main_plugin,
            socket,
            mtu,
        })
        .map(|(bin, conf)| println!("installed {} and {}", bin.display(), conf.display()))
        .map_err(anyhow::Error::from),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "petrel", &mut std::io::stdout());
            Ok(())
        }
        Command::Status { socket, output } => {
            runtime().and_then(|rt| rt.block_on(cli::status::status(&socket, output)))
        }
        Command::Route { socket, action } => {
            runtime().and_then(|rt| rt.block_on(cli::client::route_action(&socket, action)))
        }
        Command::Peer { socket, action } => {
            runtime().and_then(|rt| rt.block_on(cli::client::peer_action(&socket, action)))
        }
        Command::Peers { socket, output } => {
            runtime().and_then(|rt| rt.block_on(cli::client::peers(&socket, output)))
        }
        Command::Bfd { socket, output } => {
            runtime().and_then(|rt| rt.block_on(cli::bfd::bfd(&socket, output)))
        }
        Command::Rib {
            args,
            socket,
            output,
        } => runtime().and_then(|rt| rt.block_on(cli::client::rib(&socket, args, output))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("petrel: {e:#}");
            ExitCode::from(1)
        }
    }
}
