//! `WatchService`: peer and best-path events from the journal, resumable
//! from a cursor.

use bgpd::journal::{Cursor, WatchError, WatchEvent, WatchEventKind};
use ipnet::IpNet;
use proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::client::*;
use crate::convert::*;
use crate::rib::parse_prefix;
use crate::server::*;

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

pub(crate) fn watch_status(e: WatchError) -> Status {
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

pub(crate) fn event_to_pb(e: &WatchEvent) -> pb::Event {
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
