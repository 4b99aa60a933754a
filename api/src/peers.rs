//! `PeerService`: list, show, reset, disable, enable, add, update and
//! delete peers.

use std::net::IpAddr;

use bgpd::speaker::{PeerStatus, ResetKind, SpeakerError};
use proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::convert::*;
use crate::managed::ManagedPeer;
use crate::server::*;

#[tonic::async_trait]
impl pb::peer_service_server::PeerService for Api {
    type ListPeersStream = Streamed<pb::Peer>;

    async fn list_peers(
        &self,
        _: Request<pb::ListPeersRequest>,
    ) -> Result<Response<Self::ListPeersStream>, Status> {
        let peers = self.speaker.peers().await.map_err(unavailable)?;
        let items: Vec<Result<pb::Peer, Status>> =
            peers.iter().map(|p| Ok(self.peer_with_bfd(p))).collect();
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
            [p] => Ok(Response::new(self.peer_with_bfd(p))),
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
    fn checked_peer(&self, r: pb::AddPeerRequest) -> Result<(String, ManagedPeer), Status> {
        let view = self.view.borrow().clone();
        checked_peer(r, &view)
    }
}

/// An AddPeer (or UpdatePeer) request as a BGPPeer spec, checked the way
/// the planner checks a BGPPeer against the agent's `view` (so the same
/// mistakes get the same words), with the field named as the API calls
/// it.
pub fn checked_peer(
    r: pb::AddPeerRequest,
    view: &AgentView,
) -> Result<(String, ManagedPeer), Status> {
    {
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
        let router_id = view.router_id.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        let named = model::Named {
            name: p.name.clone(),
            origin: crate::managed::api_origin(),
            spec: spec.clone(),
        };
        planner::neighbor(&named, &view.snapshot, view.asn, router_id).map_err(|e| {
            Status::invalid_argument(format!("peer.{}: {}", api_field(&e.field), e.reason))
        })?;
        if p.password.len() > bgpd::session::sockopt::MD5_MAX_KEY_LEN {
            return Err(Status::invalid_argument(format!(
                "peer.password: {} octets; TCP-MD5 keys are at most {}",
                p.password.len(),
                bgpd::session::sockopt::MD5_MAX_KEY_LEN
            )));
        }
        let password = (!p.password.is_empty()).then(|| p.password.into());
        Ok((p.name, ManagedPeer { spec, password }))
    }
}

impl Api {
    /// NOT_FOUND, or FAILED_PRECONDITION for a peer that the configuration
    /// declares (the API cannot change those).
    pub(crate) fn not_managed(&self, want: &str, hint: &str) -> Status {
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
pub(crate) fn api_field(field: &str) -> &str {
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

/// The peer a request names.
pub(crate) fn peer_ref(r: Option<pb::PeerRef>) -> Result<String, Status> {
    match r {
        Some(r) if !r.peer.is_empty() => Ok(r.peer),
        _ => Err(Status::invalid_argument(
            "peer: give the peer's address or BGPPeer name",
        )),
    }
}

/// The gRPC status for a failed peer operation.
pub(crate) fn control_status(e: SpeakerError) -> Status {
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

impl Api {
    /// A peer as the API shows it, with its BFD session if it has one.
    fn peer_with_bfd(&self, p: &PeerStatus) -> pb::Peer {
        let mut out = peer_to_pb(p);
        let view = self.view.borrow();
        if let Some(bfd) = &view.bfd {
            out.bfd = bfd
                .borrow()
                .iter()
                .find(|s| s.peer == p.address)
                .map(bfd_to_pb);
        }
        out
    }
}
