//! `AgentService`: what the planner decided about every prefix
//! (`petrel status`), and API routes.

use bgpd::fsm::State;
use bgpd::speaker::PeerStatus;
use ipnet::IpNet;
use planner::advertise::IntentKind;
use proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::convert::*;
use crate::server::*;

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
            overlay: view.overlay.as_deref().map(overlay_to_pb),
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
    pub(crate) async fn sent_to(
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

pub(crate) fn intent_kind_to_pb(k: IntentKind) -> pb::IntentKind {
    match k {
        IntentKind::PodCidr => pb::IntentKind::PodCidr,
        IntentKind::ClusterIpRange => pb::IntentKind::ClusterIpRange,
        IntentKind::ExternalIpRange => pb::IntentKind::ExternalIpRange,
        IntentKind::ClusterIp => pb::IntentKind::ClusterIp,
        IntentKind::ExternalIp => pb::IntentKind::ExternalIp,
        IntentKind::LoadBalancerIp => pb::IntentKind::LoadBalancerIp,
        IntentKind::ApiPath => pb::IntentKind::ApiPath,
        IntentKind::PodBlock => pb::IntentKind::PodBlock,
        IntentKind::PodBorrowed => pb::IntentKind::PodBorrowed,
    }
}

fn overlay_to_pb(o: &crate::OverlayView) -> pb::Overlay {
    pb::Overlay {
        link_mtu: o.link_mtu.unwrap_or_default(),
        pod_mtu: o.pod_mtu.unwrap_or_default(),
        devices: o
            .devices
            .iter()
            .map(|(name, mtu, endpoint)| pb::TunnelDevice {
                name: name.clone(),
                mtu: *mtu,
                endpoint: endpoint.clone(),
            })
            .collect(),
        nodes: o
            .nodes
            .iter()
            .map(|n| pb::OverlayNode {
                node: n.node.clone(),
                address: n.address.clone(),
                adjacency: n.adjacency.clone(),
                pools: n
                    .pools
                    .iter()
                    .map(|(pool, tunnel, reason)| pb::OverlayDecision {
                        pool: pool.clone(),
                        tunnel: tunnel.clone().unwrap_or_default(),
                        reason: reason.clone(),
                    })
                    .collect(),
            })
            .collect(),
        nat: o.nat.clone(),
        errors: o.errors.clone(),
    }
}
