//! The API server: the unix socket (and TCP with mutual TLS) and the
//! services on them, on a thread and runtime of its own.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Instant;

use bgpd::speaker::Speaker;
use planner::advertise::Intent;
use proto::v1 as pb;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::Status;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::error::ApiError;
use crate::managed::ManagedHandle;

/// Default API socket.
pub const DEFAULT_SOCKET: &str = "/run/petrel/petrel.sock";

/// What the agent publishes for `AgentService.GetStatus`, refreshed on every
/// plan.
#[derive(Debug, Clone, Default)]
pub struct AgentView {
    /// This node's name.
    pub node: String,
    /// Our ASN.
    pub asn: u32,
    /// Our BGP identifier.
    pub router_id: Option<std::net::Ipv4Addr>,
    /// Every prefix considered, with the planner's verdict.
    pub intents: Vec<Intent>,
    /// The objects the plan came from (API peers are checked against them:
    /// filters and Secrets they name).
    pub snapshot: std::sync::Arc<model::Snapshot>,
    /// The overlay as last reconciled (`None`: the kernel is not programmed).
    pub overlay: Option<std::sync::Arc<OverlayView>>,
    /// The BFD sessions, read live (`None`: the agent runs no BFD runtime).
    pub bfd: Option<watch::Receiver<std::sync::Arc<Vec<bfd::runtime::PeerStatus>>>>,
}

/// The overlay as the agent last reconciled it (`petrel status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayView {
    /// MTU of the link that routes to the other nodes, or the configured one.
    pub link_mtu: Option<u32>,
    /// MTU handed to pods.
    pub pod_mtu: Option<u32>,
    /// petrel's tunnel devices: name, MTU, this node's endpoint.
    pub devices: Vec<(String, u32, String)>,
    /// Every other node.
    pub nodes: Vec<OverlayNode>,
    /// natOutgoing's table, or why it could not be written.
    pub nat: String,
    /// What went wrong in the last reconciliation.
    pub errors: Vec<String>,
}

/// Another node, as the overlay reaches it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayNode {
    /// Its name.
    pub node: String,
    /// Its underlay address.
    pub address: String,
    /// How the kernel reaches it.
    pub adjacency: String,
    /// Per pool: its name, the tunnel taken (`None`: none) and why.
    pub pools: Vec<(String, Option<String>, String)>,
}

/// The API on TCP: every client must present a certificate signed by the
/// configured CA (there is no plain-text TCP: the API adds peers and routes).
#[derive(Debug, Clone)]
pub struct TcpApi {
    /// Where to listen.
    pub address: std::net::SocketAddr,
    tls: ServerTlsConfig,
}

impl TcpApi {
    /// Reads and checks the server's certificate and key and the CA that
    /// signs client certificates (PEM files).
    pub fn load(
        address: std::net::SocketAddr,
        cert: &Path,
        key: &Path,
        client_ca: &Path,
    ) -> Result<TcpApi, ApiError> {
        let read = |p: &Path, what: &str| {
            std::fs::read(p).map_err(|e| {
                ApiError::failed(format!("cannot read the API's {what} {}", p.display()), e)
            })
        };
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                read(cert, "TLS certificate (--api-tls-cert)")?,
                read(key, "TLS key (--api-tls-key)")?,
            ))
            .client_ca_root(Certificate::from_pem(read(
                client_ca,
                "client CA (--api-tls-client-ca)",
            )?))
            .client_auth_optional(false);
        // Building the acceptor parses the files: a bad one fails now, at
        // start, not at the first connection.
        Server::builder().tls_config(tls.clone()).map_err(|e| {
            ApiError::failed(
                format!(
                    "the API's TLS files are not usable: check that {} and {} are a PEM certificate and its key, and {} a PEM CA certificate",
                    cert.display(),
                    key.display(),
                    client_ca.display()
                ),
                e,
            )
        })?;
        Ok(TcpApi { address, tls })
    }
}

/// The running API server; [`ApiServer::stop`] ends it.
#[derive(Debug)]
pub struct ApiServer {
    stop: watch::Sender<bool>,
}

impl ApiServer {
    /// Stops accepting calls. Not waited for: a client's open watch would
    /// hold a graceful shutdown forever, and the process is ending anyway.
    pub fn stop(self) {
        let _ = self.stop.send(true);
    }
}

/// Serves the API on `path` (mode 0600), and on TCP with mutual TLS when
/// `tcp` is given, until stopped.
///
/// The server runs on a thread and runtime of its own: the speaker task and
/// the FIB can keep the agent's worker threads busy for long stretches under
/// a full table, and an API read must not queue behind them.
pub fn serve(
    path: &Path,
    tcp: Option<&TcpApi>,
    speaker: Speaker,
    view: watch::Receiver<AgentView>,
    managed: ManagedHandle,
) -> Result<ApiServer, ApiError> {
    let at = |what: &str, p: &Path| {
        let what = format!("{what} {}", p.display());
        move |e| ApiError::failed(what, e)
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(at("cannot create", dir))?;
    }
    // A socket left by a previous run would make bind fail.
    let _ = std::fs::remove_file(path);
    let unix =
        std::os::unix::net::UnixListener::bind(path).map_err(at("cannot listen on", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(at("cannot restrict", path))?;
    unix.set_nonblocking(true)
        .map_err(at("cannot make non-blocking", path))?;
    let tcp = match tcp {
        None => None,
        Some(t) => {
            let cannot =
                |e| ApiError::failed(format!("cannot listen on {} for the API", t.address), e);
            let l = std::net::TcpListener::bind(t.address).map_err(cannot)?;
            l.set_nonblocking(true).map_err(cannot)?;
            tracing::info!(address = %t.address, "API on TCP, clients need a certificate");
            Some((l, t.clone()))
        }
    };
    let api = Api {
        speaker,
        view,
        managed,
        started: Instant::now(),
    };
    let (stop, stopped) = watch::channel(false);
    let path = path.to_path_buf();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ApiError::failed("cannot start the API's runtime", e))?;
    std::thread::Builder::new()
        .name("petrel-api".into())
        .spawn(move || runtime.block_on(run_servers(api, path, unix, tcp, stopped)))
        .map_err(|e| ApiError::failed("cannot start the API's thread", e))?;
    Ok(ApiServer { stop })
}

async fn run_servers(
    api: Api,
    path: PathBuf,
    unix: std::os::unix::net::UnixListener,
    tcp: Option<(std::net::TcpListener, TcpApi)>,
    stopped: watch::Receiver<bool>,
) {
    let signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let unix = match UnixListener::from_std(unix) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(socket = %path.display(), error = %e, "API socket unusable");
            return;
        }
    };
    let unix = async {
        if let Err(e) = routes(Server::builder(), &api)
            .serve_with_incoming_shutdown(UnixListenerStream::new(unix), signal(stopped.clone()))
            .await
        {
            tracing::error!(socket = %path.display(), error = %e, "API server stopped");
        }
    };
    let tcp = async {
        let Some((l, t)) = tcp else {
            return;
        };
        let served = async {
            let l = tokio::net::TcpListener::from_std(l)
                .map_err(|e| ApiError::failed("cannot use the TCP listener", e))?;
            let builder = Server::builder()
                .tls_config(t.tls.clone())
                .map_err(|e| ApiError::failed("cannot use the TLS files", e))?;
            routes(builder, &api)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(l),
                    signal(stopped.clone()),
                )
                .await
                .map_err(|e| ApiError::failed("serving", e))
        };
        if let Err(e) = served.await {
            tracing::error!(address = %t.address, error = %e, "API server on TCP stopped");
        }
    };
    tokio::join!(unix, tcp);
}

pub(crate) fn routes(mut builder: Server, api: &Api) -> tonic::transport::server::Router {
    builder
        .add_service(pb::peer_service_server::PeerServiceServer::new(api.clone()))
        .add_service(pb::rib_service_server::RibServiceServer::new(api.clone()))
        .add_service(pb::watch_service_server::WatchServiceServer::new(
            api.clone(),
        ))
        .add_service(pb::agent_service_server::AgentServiceServer::new(
            api.clone(),
        ))
}

/// Metadata key of a RESOURCE_EXHAUSTED watch error: the cursor to resume
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) speaker: Speaker,
    pub(crate) view: watch::Receiver<AgentView>,
    pub(crate) managed: ManagedHandle,
    pub(crate) started: Instant,
}

pub(crate) type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub(crate) fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the speaker is not running: {e}"))
}
