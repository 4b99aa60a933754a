//! `RibService`: best paths, Adj-RIBs-In and -Out, and why a route is or
//! is not advertised.

use std::net::IpAddr;

use bgpd::speaker::{AdjRibSide, RouteFilter, RouteView, RoutesPage};
use bgpd::wire::AfiSafi;
use ipnet::IpNet;
use proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::convert::*;
use crate::peers::*;
use crate::server::*;

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
        let filter = RouteFilter {
            family,
            prefix,
            longer: r.longer,
        };
        let first = self
            .speaker
            .routes_page(filter.clone(), 0)
            .await
            .map_err(unavailable)?;
        let speaker = self.speaker.clone();
        Ok(Response::new(paged(first, move |from| {
            let (speaker, filter) = (speaker.clone(), filter.clone());
            async move { speaker.routes_page(filter, from).await.map_err(unavailable) }
        })))
    }

    async fn explain_route(
        &self,
        req: Request<pb::ExplainRouteRequest>,
    ) -> Result<Response<pb::RouteExplanation>, Status> {
        Ok(Response::new(self.explain(&req.into_inner().prefix).await?))
    }

    async fn get_rib_summary(
        &self,
        _: Request<pb::RibSummaryRequest>,
    ) -> Result<Response<pb::RibSummary>, Status> {
        let s = self.speaker.summary().await.map_err(unavailable)?;
        Ok(Response::new(pb::RibSummary {
            prefixes: s.prefixes as u64,
            paths: s.paths as u64,
            attribute_sets: s.attribute_sets as u64,
            converged: s.converged,
            deferring: s.deferring,
        }))
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
                planner::community(c)
                    .map_err(|e| Status::invalid_argument(format!("communities[{i}]: {e}")))?,
            );
        }
        for (i, c) in r.large_communities.iter().enumerate() {
            route.large_communities.push(
                planner::large_community(c).map_err(|e| {
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
    pub(crate) async fn adj_rib(
        &self,
        r: pb::AdjRibRequest,
        side: AdjRibSide,
    ) -> Result<Response<Streamed<pb::Route>>, Status> {
        let peer = peer_ref(Some(pb::PeerRef { peer: r.peer }))?;
        let first = self
            .speaker
            .adj_rib_page(&peer, side, 0)
            .await
            .map_err(control_status)?;
        let speaker = self.speaker.clone();
        Ok(Response::new(paged(first, move |from| {
            let (speaker, peer) = (speaker.clone(), peer.clone());
            async move {
                speaker
                    .adj_rib_page(&peer, side, from)
                    .await
                    .map_err(control_status)
            }
        })))
    }

    pub(crate) async fn explain(&self, prefix: &str) -> Result<pb::RouteExplanation, Status> {
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

/// Routes sent ahead of a client that reads slowly.
const PAGED_BUFFER: usize = 1024;

/// Streams a listing page by page ([`RoutesPage`]). The first page is read
/// before the answer (so a bad request is an error status); the others by a
/// task that asks for the next page once the client has taken most of the
/// last, so a slow client holds no one but itself, and the RIB owner does
/// one page's work at a time, routing in between.
fn paged<F, Fut>(first: RoutesPage, next: F) -> Streamed<pb::Route>
where
    F: Fn(usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<RoutesPage, Status>> + Send,
{
    let (tx, rx) = tokio::sync::mpsc::channel(PAGED_BUFFER);
    tokio::spawn(async move {
        let mut page = first;
        loop {
            for r in &page.routes {
                if tx.send(Ok(route_to_pb(r))).await.is_err() {
                    return;
                }
            }
            let Some(from) = page.next else {
                return;
            };
            match next(from).await {
                Ok(p) => page = p,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
