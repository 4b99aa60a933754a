//! The gRPC API on the agent's unix socket (and, optionally, on TCP with
//! mutual TLS), and the client the CLI uses.
//!
//! No read takes a lock shared with UPDATE processing: the peer table is a
//! snapshot the speaker publishes, per-prefix reads are commands the speaker
//! task serves ahead of its event batches, and events come from the journal's
//! own task (see docs/architecture.md).

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Instant, SystemTime};

use anyhow::Context;
use bgpd::fsm::State;
use bgpd::journal::{Cursor, WatchError, WatchEvent, WatchEventKind};
use bgpd::rib::Attrs;
use bgpd::speaker::{
    AdjRibSide, PeerStatus, ResetKind, RouteFilter, RouteView, Speaker, SpeakerError,
};
use bgpd::wire::AfiSafi;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use proto::v1 as pb;

use crate::managed::{ManagedHandle, ManagedPeer};
use crate::planner::advertise::{Intent, IntentKind};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig, Uri,
};
use tonic::{Request, Response, Status};

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
    pub snapshot: std::sync::Arc<crate::source::Snapshot>,
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
    ) -> anyhow::Result<TcpApi> {
        let read = |p: &Path, what: &str| {
            std::fs::read(p)
                .with_context(|| format!("cannot read the API's {what} {}", p.display()))
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
        Server::builder().tls_config(tls.clone()).with_context(|| {
            format!(
                "the API's TLS files are not usable: check that {} and {} are a PEM certificate and its key, and {} a PEM CA certificate",
                cert.display(),
                key.display(),
                client_ca.display()
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
) -> anyhow::Result<ApiServer> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // A socket left by a previous run would make bind fail.
    let _ = std::fs::remove_file(path);
    let unix = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    unix.set_nonblocking(true)?;
    let tcp = match tcp {
        None => None,
        Some(t) => {
            let l = std::net::TcpListener::bind(t.address)
                .with_context(|| format!("cannot listen on {} for the API", t.address))?;
            l.set_nonblocking(true)?;
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
        .context("cannot start the API's runtime")?;
    std::thread::Builder::new()
        .name("petrel-api".into())
        .spawn(move || runtime.block_on(run_servers(api, path, unix, tcp, stopped)))
        .context("cannot start the API's thread")?;
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
            let l = tokio::net::TcpListener::from_std(l)?;
            let builder = Server::builder().tls_config(t.tls.clone())?;
            routes(builder, &api)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(l),
                    signal(stopped.clone()),
                )
                .await?;
            anyhow::Ok(())
        };
        if let Err(e) = served.await {
            tracing::error!(address = %t.address, error = %e, "API server on TCP stopped");
        }
    };
    tokio::join!(unix, tcp);
}

fn routes(mut builder: Server, api: &Api) -> tonic::transport::server::Router {
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
/// from (also when no event passed the watcher's filters yet).
pub const RESUME_CURSOR: &str = "petrel-resume-cursor";

/// Environment variable naming the CA (PEM) that signed the agent's
/// certificate, for an `https://HOST:PORT` API address.
pub const ENV_CA: &str = "PETREL_API_CA";
/// Environment variable naming the client certificate (PEM).
pub const ENV_CERT: &str = "PETREL_API_CERT";
/// Environment variable naming the client key (PEM).
pub const ENV_KEY: &str = "PETREL_API_KEY";
/// Environment variable with the name to check the server's certificate
/// against, when not the host of the address.
pub const ENV_SERVER_NAME: &str = "PETREL_API_SERVER_NAME";

/// Connects to the API: a unix socket path, or `https://HOST:PORT` for the
/// TCP listener (certificates from `PETREL_API_CA`, `PETREL_API_CERT`,
/// `PETREL_API_KEY`).
pub async fn connect(path: &Path) -> anyhow::Result<Channel> {
    if let Some(url) = path.to_str().filter(|s| s.starts_with("https://")) {
        return connect_tls(url).await;
    }
    let path: PathBuf = path.to_path_buf();
    let shown = path.display().to_string();
    // The URI is not used: the connector always dials the socket.
    Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| {
            format!("cannot connect to the petrel API at {shown}; is `petrel agent` running?")
        })
}

async fn connect_tls(url: &str) -> anyhow::Result<Channel> {
    let file = |var: &str, what: &str| -> anyhow::Result<Vec<u8>> {
        let p = std::env::var_os(var)
            .with_context(|| format!("{url} needs TLS: set {var} to the {what} (PEM file)"))?;
        std::fs::read(&p).with_context(|| format!("cannot read {var}={}", p.to_string_lossy()))
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(file(
            ENV_CA,
            "CA that signed the agent's certificate",
        )?))
        .identity(Identity::from_pem(
            file(ENV_CERT, "client certificate")?,
            file(ENV_KEY, "client key")?,
        ));
    if let Ok(name) = std::env::var(ENV_SERVER_NAME) {
        tls = tls.domain_name(name);
    }
    Endpoint::from_shared(url.to_string())
        .with_context(|| format!("{url:?} is not an address like https://192.0.2.1:9480"))?
        .tls_config(tls)
        .context("the TLS files are not usable")?
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot connect to the petrel API at {url} (agent down, or a certificate refused)"
            )
        })
}

#[derive(Clone)]
struct Api {
    speaker: Speaker,
    view: watch::Receiver<AgentView>,
    managed: ManagedHandle,
    started: Instant,
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the speaker is not running: {e}"))
}

#[tonic::async_trait]
impl pb::peer_service_server::PeerService for Api {
    type ListPeersStream = Streamed<pb::Peer>;

    async fn list_peers(
        &self,
        _: Request<pb::ListPeersRequest>,
    ) -> Result<Response<Self::ListPeersStream>, Status> {
        let peers = self.speaker.peers().await.map_err(unavailable)?;
        let items: Vec<Result<pb::Peer, Status>> =
            peers.iter().map(|p| Ok(peer_to_pb(p))).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn get_peer(&self, req: Request<pb::PeerRef>) -> Result<Response<pb::Peer>, Status> {
        let want = peer_ref(Some(req.into_inner()))?;
        let peers = self.speaker.peers().await.map_err(unavailable)?;
        let found: Vec<&PeerStatus> = match want.parse::<IpAddr>() {
            Ok(a) => peers
                .iter()
                .filter(|p| p.address == a.to_canonical())
                .collect(),
            Err(_) => peers.iter().filter(|p| p.name == want).collect(),
        };
        match found.as_slice() {
            [p] => Ok(Response::new(peer_to_pb(p))),
            [] => Err(Status::not_found(format!(
                "no peer {want:?} (give its address or its BGPPeer name)"
            ))),
            many => Err(Status::failed_precondition(format!(
                "{want:?} names {} peers; give the address of one",
                many.len()
            ))),
        }
    }

    async fn reset_peer(
        &self,
        req: Request<pb::ResetPeerRequest>,
    ) -> Result<Response<pb::ResetPeerResponse>, Status> {
        let r = req.into_inner();
        let peer = peer_ref(r.peer)?;
        let kind = match pb::ResetKind::try_from(r.kind) {
            Ok(pb::ResetKind::Hard) => ResetKind::Hard,
            Ok(pb::ResetKind::SoftIn) => ResetKind::SoftIn,
            Ok(pb::ResetKind::SoftOut) => ResetKind::SoftOut,
            Ok(pb::ResetKind::SoftBoth) => ResetKind::SoftBoth,
            _ => {
                return Err(Status::invalid_argument(
                    "kind: say HARD, SOFT_IN, SOFT_OUT or SOFT_BOTH",
                ));
            }
        };
        self.speaker
            .reset_peer(&peer, kind)
            .await
            .map_err(control_status)?;
        Ok(Response::new(pb::ResetPeerResponse {}))
    }

    async fn disable_peer(
        &self,
        req: Request<pb::DisablePeerRequest>,
    ) -> Result<Response<pb::DisablePeerResponse>, Status> {
        let r = req.into_inner();
        let peer = peer_ref(r.peer)?;
        if r.message.len() > 255 {
            return Err(Status::invalid_argument(format!(
                "message: {} octets; RFC 8203 allows at most 255",
                r.message.len()
            )));
        }
        let message = (!r.message.is_empty()).then_some(r.message);
        self.speaker
            .disable_peer(&peer, message)
            .await
            .map_err(control_status)?;
        Ok(Response::new(pb::DisablePeerResponse {}))
    }

    async fn enable_peer(
        &self,
        req: Request<pb::PeerRef>,
    ) -> Result<Response<pb::EnablePeerResponse>, Status> {
        let peer = peer_ref(Some(req.into_inner()))?;
        self.speaker
            .enable_peer(&peer)
            .await
            .map_err(control_status)?;
        Ok(Response::new(pb::EnablePeerResponse {}))
    }

    async fn add_peer(
        &self,
        req: Request<pb::AddPeerRequest>,
    ) -> Result<Response<pb::AddPeerResponse>, Status> {
        let (name, spec) = self.checked_peer(req.into_inner())?;
        let peers = self.speaker.peers().await.map_err(unavailable)?;
        if let Some(p) = peers
            .iter()
            .find(|p| p.name == name || Some(p.address) == spec.spec.peer_ip)
        {
            return Err(Status::already_exists(format!(
                "peer {} ({}) exists; choose another name and address, or UpdatePeer",
                p.name, p.address
            )));
        }
        {
            let mut m = self.managed.lock();
            if m.peers.contains_key(&name) {
                return Err(Status::already_exists(format!(
                    "the API already has a peer named {name:?}; use UpdatePeer"
                )));
            }
            m.peers.insert(name, spec);
        }
        self.managed.notify();
        Ok(Response::new(pb::AddPeerResponse {}))
    }

    async fn update_peer(
        &self,
        req: Request<pb::AddPeerRequest>,
    ) -> Result<Response<pb::AddPeerResponse>, Status> {
        let (name, spec) = self.checked_peer(req.into_inner())?;
        {
            let mut m = self.managed.lock();
            match m.peers.get_mut(&name) {
                Some(old) => *old = spec,
                None => return Err(self.not_managed(&name, "AddPeer it first")),
            }
        }
        self.managed.notify();
        Ok(Response::new(pb::AddPeerResponse {}))
    }

    async fn delete_peer(
        &self,
        req: Request<pb::PeerRef>,
    ) -> Result<Response<pb::DeletePeerResponse>, Status> {
        let want = peer_ref(Some(req.into_inner()))?;
        {
            let mut m = self.managed.lock();
            let key = m
                .peers
                .iter()
                .find(|(n, s)| {
                    **n == want
                        || want
                            .parse::<IpAddr>()
                            .is_ok_and(|a| s.spec.peer_ip == Some(a.to_canonical()))
                })
                .map(|(n, _)| n.clone());
            match key {
                Some(k) => m.peers.remove(&k),
                None => return Err(self.not_managed(&want, "nothing to delete")),
            };
        }
        self.managed.notify();
        Ok(Response::new(pb::DeletePeerResponse {}))
    }
}

impl Api {
    /// A PeerSpec as a BGPPeer spec, checked the way the planner checks a
    /// BGPPeer (so the same mistakes get the same words), with the field
    /// named as the API calls it.
    fn checked_peer(&self, r: pb::AddPeerRequest) -> Result<(String, ManagedPeer), Status> {
        let p = r
            .peer
            .ok_or_else(|| Status::invalid_argument("peer: give the peer's settings"))?;
        if p.name.is_empty() {
            return Err(Status::invalid_argument("peer.name: give the peer a name"));
        }
        let address: IpAddr = p.address.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "peer.address: {:?} is not an IP address",
                p.address
            ))
        })?;
        let source_address = if p.source_address.is_empty() {
            None
        } else {
            Some(p.source_address.parse::<IpAddr>().map_err(|_| {
                Status::invalid_argument(format!(
                    "peer.source_address: {:?} is not an IP address",
                    p.source_address
                ))
            })?)
        };
        let port = match p.port {
            0 => None,
            n => Some(u16::try_from(n).map_err(|_| {
                Status::invalid_argument(format!("peer.port: {n} is not a TCP port"))
            })?),
        };
        let multihop = match p.ebgp_multihop {
            0 => None,
            n => Some(u8::try_from(n).map_err(|_| {
                Status::invalid_argument(format!("peer.ebgp_multihop: {n} is not 1 to 255"))
            })?),
        };
        let spec = crds::BgpPeerSpec {
            peer_ip: Some(address.to_canonical()),
            as_number: (p.asn != 0).then_some(p.asn),
            port,
            hold_time: p.hold_time_seconds.map(crds::Seconds),
            keepalive_time: p.keepalive_seconds.map(crds::Seconds),
            passive: Some(p.passive),
            ebgp_multihop: multihop,
            source_address,
            password: None,
            next_hop_self: Some(p.next_hop_self),
            route_reflector_client: Some(p.route_reflector_client),
            filters: (!p.filters.is_empty()).then_some(p.filters),
            ..crds::BgpPeerSpec::default()
        };
        let view = self.view.borrow().clone();
        let router_id = view.router_id.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        let named = crate::source::Named {
            name: p.name.clone(),
            origin: crate::managed::api_origin(),
            spec: spec.clone(),
        };
        crate::planner::neighbor(&named, &view.snapshot, view.asn, router_id).map_err(
            |(field, message)| {
                Status::invalid_argument(format!("peer.{}: {message}", api_field(&field)))
            },
        )?;
        if p.password.len() > bgpd::session::sockopt::MD5_MAX_KEY_LEN {
            return Err(Status::invalid_argument(format!(
                "peer.password: {} octets; TCP-MD5 keys are at most {}",
                p.password.len(),
                bgpd::session::sockopt::MD5_MAX_KEY_LEN
            )));
        }
        let password = (!p.password.is_empty()).then_some(p.password);
        Ok((p.name, ManagedPeer { spec, password }))
    }

    /// NOT_FOUND, or FAILED_PRECONDITION for a peer that the configuration
    /// declares (the API cannot change those).
    fn not_managed(&self, want: &str, hint: &str) -> Status {
        let snapshot = self.view.borrow().snapshot.clone();
        match snapshot.peers.iter().find(|p| {
            p.name == want
                || want
                    .parse::<IpAddr>()
                    .is_ok_and(|a| p.spec.peer_ip == Some(a))
        }) {
            Some(p) => Status::failed_precondition(format!(
                "{want:?} is BGPPeer/{} from the configuration ({}); change it there",
                p.name, p.origin
            )),
            None => Status::not_found(format!(
                "no peer {want:?} was added through the API; {hint}"
            )),
        }
    }
}

/// The API's name for a BGPPeer spec field in a planner message.
fn api_field(field: &str) -> &str {
    match field {
        "spec.peerIP" => "address",
        "spec.asNumber" => "asn",
        "spec.port" => "port",
        "spec.holdTime" => "hold_time_seconds",
        "spec.keepaliveTime" => "keepalive_seconds",
        "spec.ebgpMultihop" => "ebgp_multihop",
        "spec.password" => "password",
        "spec.filters" => "filters",
        "spec.routeReflectorClient" => "route_reflector_client",
        other => other.strip_prefix("spec.").unwrap_or(other),
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for Api {
    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::Status>, Status> {
        let view = self.view.borrow().clone();
        let peers = self.speaker.peers().await.map_err(unavailable)?;
        let summary = self.speaker.summary().await.map_err(unavailable)?;
        let mut intents = Vec::with_capacity(view.intents.len());
        for i in &view.intents {
            let mut out = pb::Intent {
                prefix: i.prefix.to_string(),
                kind: intent_kind_to_pb(i.kind) as i32,
                service: i.service.clone().unwrap_or_default(),
                advertised: i.advertised,
                reason: i.reason.clone(),
                peers: Vec::new(),
                limited_to: i.peers.clone().unwrap_or_default(),
            };
            if i.advertised {
                out.peers = self.sent_to(i.prefix, &peers).await?;
            }
            intents.push(out);
        }
        Ok(Response::new(pb::Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: view.node,
            asn: view.asn,
            router_id: view.router_id.map(|r| r.to_string()).unwrap_or_default(),
            uptime_seconds: self.started.elapsed().as_secs(),
            peers_configured: peers.len() as u32,
            peers_established: peers
                .iter()
                .filter(|p| p.state == State::Established)
                .count() as u32,
            rib_prefixes: summary.prefixes as u64,
            peers: peers.iter().map(peer_to_pb).collect(),
            intents,
        }))
    }

    async fn health(
        &self,
        _: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        // The API is served once the speaker runs; it answering is readiness.
        Ok(Response::new(match self.speaker.summary().await {
            Ok(s) if s.deferring => pb::HealthResponse {
                ready: true,
                detail: "route selection deferred after a restart (graceful restart)".into(),
            },
            Ok(_) => pb::HealthResponse {
                ready: true,
                detail: String::new(),
            },
            Err(e) => pb::HealthResponse {
                ready: false,
                detail: e.to_string(),
            },
        }))
    }
}

impl Api {
    /// Per peer, whether it is sent our route for `prefix`, or why not.
    async fn sent_to(
        &self,
        prefix: IpNet,
        peers: &[PeerStatus],
    ) -> Result<Vec<pb::Advertisement>, Status> {
        let explained = self.speaker.explain(prefix).await.map_err(unavailable)?;
        let per_peer = explained.map(|e| e.peers).unwrap_or_default();
        Ok(peers
            .iter()
            .map(|p| {
                let found = per_peer.iter().find(|(a, _, _)| *a == p.address);
                let (sent, why_not) = match found {
                    Some((_, _, None)) => (true, String::new()),
                    Some((_, _, Some(why))) => (false, why.clone()),
                    None if p.disabled => (false, "the peer is disabled".into()),
                    None => (false, format!("the session is {:?}", p.state)),
                };
                pb::Advertisement {
                    peer: p.address.to_string(),
                    name: p.name.clone(),
                    sent,
                    why_not,
                }
            })
            .collect())
    }
}

fn intent_kind_to_pb(k: IntentKind) -> pb::IntentKind {
    match k {
        IntentKind::PodCidr => pb::IntentKind::PodCidr,
        IntentKind::ClusterIpRange => pb::IntentKind::ClusterIpRange,
        IntentKind::ExternalIpRange => pb::IntentKind::ExternalIpRange,
        IntentKind::ClusterIp => pb::IntentKind::ClusterIp,
        IntentKind::ExternalIp => pb::IntentKind::ExternalIp,
        IntentKind::LoadBalancerIp => pb::IntentKind::LoadBalancerIp,
        IntentKind::ApiPath => pb::IntentKind::ApiPath,
    }
}

/// The peer a request names.
fn peer_ref(r: Option<pb::PeerRef>) -> Result<String, Status> {
    match r {
        Some(r) if !r.peer.is_empty() => Ok(r.peer),
        _ => Err(Status::invalid_argument(
            "peer: give the peer's address or BGPPeer name",
        )),
    }
}

/// The gRPC status for a failed peer operation.
fn control_status(e: SpeakerError) -> Status {
    match e {
        SpeakerError::NoSuchPeer(_) => Status::not_found(e.to_string()),
        SpeakerError::Ambiguous(..)
        | SpeakerError::NotEstablished(_)
        | SpeakerError::Disabled(_)
        | SpeakerError::Dynamic(_)
        | SpeakerError::NoRouteRefresh(_) => Status::failed_precondition(e.to_string()),
        SpeakerError::Stopped | SpeakerError::Listen { .. } => unavailable(e),
    }
}

#[tonic::async_trait]
impl pb::rib_service_server::RibService for Api {
    type ListRoutesStream = Streamed<pb::Route>;

    async fn list_routes(
        &self,
        req: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<Self::ListRoutesStream>, Status> {
        let r = req.into_inner();
        let family = match pb::Family::try_from(r.family) {
            Ok(pb::Family::Unspecified) => None,
            Ok(pb::Family::Ipv4Unicast) => Some(AfiSafi::IPV4_UNICAST),
            Ok(pb::Family::Ipv6Unicast) => Some(AfiSafi::IPV6_UNICAST),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "family {} is not a known Family value",
                    r.family
                )));
            }
        };
        let prefix = if r.prefix.is_empty() {
            None
        } else {
            Some(parse_prefix(&r.prefix).map_err(Status::invalid_argument)?)
        };
        let routes = self
            .speaker
            .routes(RouteFilter {
                family,
                prefix,
                longer: r.longer,
            })
            .await
            .map_err(unavailable)?;
        let items: Vec<Result<pb::Route, Status>> =
            routes.iter().map(|r| Ok(route_to_pb(r))).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn explain_route(
        &self,
        req: Request<pb::ExplainRouteRequest>,
    ) -> Result<Response<pb::RouteExplanation>, Status> {
        Ok(Response::new(self.explain(&req.into_inner().prefix).await?))
    }

    type ListAdjRibInStream = Streamed<pb::Route>;
    type ListAdjRibOutStream = Streamed<pb::Route>;

    async fn list_adj_rib_in(
        &self,
        req: Request<pb::AdjRibRequest>,
    ) -> Result<Response<Self::ListAdjRibInStream>, Status> {
        self.adj_rib(req.into_inner(), AdjRibSide::In).await
    }

    async fn list_adj_rib_out(
        &self,
        req: Request<pb::AdjRibRequest>,
    ) -> Result<Response<Self::ListAdjRibOutStream>, Status> {
        self.adj_rib(req.into_inner(), AdjRibSide::Out).await
    }

    async fn add_path(
        &self,
        req: Request<pb::AddPathRequest>,
    ) -> Result<Response<pb::AddPathResponse>, Status> {
        let r = req.into_inner();
        if r.client.is_empty() {
            return Err(Status::invalid_argument(
                "client: name the client (DeletePath uses the same name)",
            ));
        }
        let prefix = parse_prefix(&r.prefix)
            .map_err(|e| Status::invalid_argument(format!("prefix: {e}")))?
            .trunc();
        let mut route = bgpd::speaker::LocalRoute::from(prefix);
        for (i, c) in r.communities.iter().enumerate() {
            route.communities.push(
                crate::planner::community(c)
                    .map_err(|e| Status::invalid_argument(format!("communities[{i}]: {e}")))?,
            );
        }
        for (i, c) in r.large_communities.iter().enumerate() {
            route.large_communities.push(
                crate::planner::large_community(c).map_err(|e| {
                    Status::invalid_argument(format!("large_communities[{i}]: {e}"))
                })?,
            );
        }
        route.local_pref = r.local_pref;
        self.managed
            .lock()
            .paths
            .entry(r.client)
            .or_default()
            .insert(prefix, route);
        self.managed.notify();
        Ok(Response::new(pb::AddPathResponse {}))
    }

    async fn delete_path(
        &self,
        req: Request<pb::DeletePathRequest>,
    ) -> Result<Response<pb::DeletePathResponse>, Status> {
        let r = req.into_inner();
        let prefix = if r.prefix.is_empty() {
            None
        } else {
            Some(
                parse_prefix(&r.prefix)
                    .map_err(|e| Status::invalid_argument(format!("prefix: {e}")))?
                    .trunc(),
            )
        };
        let withdrawn = {
            let mut m = self.managed.lock();
            let Some(routes) = m.paths.get_mut(&r.client) else {
                return Err(Status::not_found(format!(
                    "client {:?} has added no routes",
                    r.client
                )));
            };
            let n = match prefix {
                None => std::mem::take(routes).len(),
                Some(p) => match routes.remove(&p) {
                    Some(_) => 1,
                    None => {
                        return Err(Status::not_found(format!(
                            "client {:?} has not added {p}",
                            r.client
                        )));
                    }
                },
            };
            if routes.is_empty() {
                m.paths.remove(&r.client);
            }
            n
        };
        self.managed.notify();
        Ok(Response::new(pb::DeletePathResponse {
            withdrawn: withdrawn as u32,
        }))
    }
}

impl Api {
    async fn adj_rib(
        &self,
        r: pb::AdjRibRequest,
        side: AdjRibSide,
    ) -> Result<Response<Streamed<pb::Route>>, Status> {
        let peer = peer_ref(Some(pb::PeerRef { peer: r.peer }))?;
        let routes = self
            .speaker
            .adj_rib(&peer, side)
            .await
            .map_err(control_status)?;
        let items: Vec<Result<pb::Route, Status>> =
            routes.iter().map(|r| Ok(route_to_pb(r))).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn explain(&self, prefix: &str) -> Result<pb::RouteExplanation, Status> {
        let p = parse_prefix(prefix).map_err(Status::invalid_argument)?;
        let e = self
            .speaker
            .explain(p)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Status::not_found(format!("no path for {p} in the RIB")))?;
        let paths = RouteView {
            prefix: e.prefix,
            paths: e.candidates.iter().map(|c| c.path.clone()).collect(),
        };
        let pb_paths = route_to_pb(&paths).paths;
        Ok(pb::RouteExplanation {
            prefix: e.prefix.to_string(),
            candidates: e
                .candidates
                .iter()
                .zip(pb_paths)
                .map(|(c, path)| pb::Candidate {
                    path: Some(path),
                    lost_because: c.lost_because.clone().unwrap_or_default(),
                    multipath: c.multipath,
                })
                .collect(),
            peers: e
                .peers
                .iter()
                .map(|(addr, name, why)| pb::Advertisement {
                    peer: addr.to_string(),
                    name: name.clone(),
                    sent: why.is_none(),
                    why_not: why.clone().unwrap_or_default(),
                })
                .collect(),
        })
    }
}

/// Parses a prefix, accepting a bare address as a host route.
pub fn parse_prefix(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not a prefix (like 10.0.0.0/24) or an address"))
}

/// What a watcher asked to see.
struct WatchFilter {
    peers: bool,
    best_paths: bool,
    prefix: Option<IpNet>,
}

impl WatchFilter {
    fn from_request(r: &pb::WatchEventsRequest) -> Result<WatchFilter, Status> {
        let mut f = WatchFilter {
            peers: r.types.is_empty(),
            best_paths: r.types.is_empty(),
            prefix: None,
        };
        for t in &r.types {
            match pb::EventType::try_from(*t) {
                Ok(pb::EventType::Peer) => f.peers = true,
                Ok(pb::EventType::BestPath) => f.best_paths = true,
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "types: {t} is not an event type; say PEER or BEST_PATH, or nothing for all"
                    )));
                }
            }
        }
        if !r.prefix.is_empty() {
            f.prefix = Some(
                parse_prefix(&r.prefix)
                    .map_err(|e| Status::invalid_argument(format!("prefix: {e}")))?,
            );
        }
        Ok(f)
    }

    fn wants(&self, e: &WatchEvent) -> bool {
        match &e.kind {
            WatchEventKind::PeerAdded { .. }
            | WatchEventKind::PeerRemoved { .. }
            | WatchEventKind::PeerState { .. } => self.peers,
            WatchEventKind::BestPath { prefix, .. } => {
                self.best_paths && self.prefix.is_none_or(|p| p.contains(prefix))
            }
        }
    }
}

fn watch_status(e: WatchError) -> Status {
    let msg = e.to_string();
    match e {
        WatchError::BadCursor(_) => Status::invalid_argument(format!("resume_after: {msg}")),
        WatchError::OtherRun { .. } | WatchError::Expired { .. } | WatchError::Ahead { .. } => {
            Status::out_of_range(msg)
        }
        WatchError::Lagged { last } => {
            let mut md = tonic::metadata::MetadataMap::new();
            if let Ok(v) = last.to_string().parse() {
                md.insert(RESUME_CURSOR, v);
            }
            Status::with_metadata(tonic::Code::ResourceExhausted, msg, md)
        }
        WatchError::Stopped => Status::unavailable(msg),
    }
}

fn event_to_pb(e: &WatchEvent) -> pb::Event {
    use pb::event::Event as E;
    let event = match &e.kind {
        WatchEventKind::PeerAdded { name, address } => E::PeerAdded(pb::PeerAdded {
            name: name.clone(),
            address: address.to_string(),
        }),
        WatchEventKind::PeerRemoved { name, address } => E::PeerRemoved(pb::PeerRemoved {
            name: name.clone(),
            address: address.to_string(),
        }),
        WatchEventKind::PeerState {
            name,
            address,
            from,
            to,
            last_error,
        } => E::PeerState(pb::PeerStateChanged {
            name: name.clone(),
            address: address.to_string(),
            from: state_to_pb(*from) as i32,
            to: state_to_pb(*to) as i32,
            last_error: last_error.clone().unwrap_or_default(),
        }),
        WatchEventKind::BestPath { prefix, best } => E::BestPath(pb::BestPathChanged {
            prefix: prefix.to_string(),
            best: best
                .as_ref()
                .map(|b| path_to_pb(true, b.from, b.path_id, &b.attrs, false)),
            next_hops: best
                .iter()
                .flat_map(|b| b.next_hops.iter().map(ToString::to_string))
                .collect(),
        }),
    };
    pb::Event {
        cursor: e.cursor.to_string(),
        time_unix_ms: e
            .time
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        event: Some(event),
    }
}

#[tonic::async_trait]
impl pb::watch_service_server::WatchService for Api {
    type WatchEventsStream = Streamed<pb::Event>;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let r = req.into_inner();
        let filter = WatchFilter::from_request(&r)?;
        let after = match r.resume_after.as_str() {
            "" => None,
            c => Some(c.parse::<Cursor>().map_err(watch_status)?),
        };
        let mut events = self.speaker.watch(after).await.map_err(watch_status)?;
        // A small queue towards the client: when it reads too slowly the
        // journal's live buffer overtakes it and it is told where to resume;
        // when it goes away the send fails and this task ends.
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    n = events.next() => n,
                    // Noticed at once, not at the next event.
                    _ = tx.closed() => None,
                };
                let Some(next) = next else {
                    tracing::debug!("a watcher went away, or the speaker stopped");
                    return;
                };
                let item = match next {
                    Ok(e) if !filter.wants(&e) => continue,
                    Ok(e) => Ok(event_to_pb(&e)),
                    Err(e) => Err(watch_status(e)),
                };
                if tx.send(item).await.is_err() {
                    tracing::debug!("a watcher went away");
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

fn state_to_pb(s: State) -> pb::SessionState {
    match s {
        State::Idle => pb::SessionState::Idle,
        State::Connect => pb::SessionState::Connect,
        State::Active => pb::SessionState::Active,
        State::OpenSent => pb::SessionState::OpenSent,
        State::OpenConfirm => pb::SessionState::OpenConfirm,
        State::Established => pb::SessionState::Established,
    }
}

fn peer_to_pb(p: &PeerStatus) -> pb::Peer {
    pb::Peer {
        name: p.name.clone(),
        address: p.address.to_string(),
        asn: p.asn,
        state: state_to_pb(p.state) as i32,
        state_seconds: SystemTime::now()
            .duration_since(p.since)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        dynamic: p.dynamic,
        last_error: p.last_error.clone().unwrap_or_default(),
        capabilities: p.capabilities.clone(),
        hold_time: p.hold_time.map(u32::from).unwrap_or(0),
        peer_router_id: p.peer_router_id.map(|i| i.to_string()).unwrap_or_default(),
        local_address: p.local_address.map(|a| a.to_string()).unwrap_or_default(),
        prefixes: p
            .prefixes
            .iter()
            .map(|(af, c)| pb::PrefixCounts {
                afi_safi: af.to_string(),
                received: c.received,
                accepted: c.accepted,
                advertised: c.advertised,
            })
            .collect(),
        messages_received: p.messages_received,
        messages_sent: p.messages_sent,
        flaps: p.flaps,
        stale_routes: p.stale_routes as u64,
        disabled: p.disabled,
    }
}

fn route_to_pb(r: &RouteView) -> pb::Route {
    pb::Route {
        prefix: r.prefix.to_string(),
        paths: r
            .paths
            .iter()
            .map(|p| path_to_pb(p.best, p.from, p.path_id, &p.attrs, p.rejected))
            .collect(),
    }
}

fn path_to_pb(
    best: bool,
    from: Option<IpAddr>,
    path_id: u32,
    a: &Attrs,
    rejected: bool,
) -> pb::Path {
    pb::Path {
        best,
        from: from.map(|f| f.to_string()).unwrap_or_default(),
        path_id,
        next_hop: a.next_hop.map(|n| n.to_string()).unwrap_or_default(),
        next_hop_link_local: a.link_local.map(|n| n.to_string()).unwrap_or_default(),
        as_path: a
            .as_path
            .segments
            .iter()
            .map(|s| pb::AsSegment {
                r#type: s.kind.name().to_string(),
                asns: s.asns.clone(),
            })
            .collect(),
        origin: a.origin.map(|o| o.to_string()).unwrap_or_default(),
        med: a.med,
        local_pref: a.local_pref,
        communities: a.communities.iter().map(ToString::to_string).collect(),
        large_communities: a
            .large_communities
            .iter()
            .map(ToString::to_string)
            .collect(),
        extended_communities: a.ext_communities.iter().map(ToString::to_string).collect(),
        originator_id: a.originator_id.map(|o| o.to_string()).unwrap_or_default(),
        cluster_list: a.cluster_list.iter().map(ToString::to_string).collect(),
        atomic_aggregate: a.atomic_aggregate,
        rejected,
    }
}
