//! gRPC request in, configuration out: arbitrary bytes decoded as an
//! AddPeer request, checked as the API checks it, and the accepted peer
//! merged into a plan. Nothing may panic; a bad request is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = proto::v1::AddPeerRequest::decode(data) else {
        return;
    };
    let view = api::AgentView {
        node: "n1".into(),
        asn: 64512,
        router_id: Some(std::net::Ipv4Addr::new(10, 0, 0, 1)),
        ..api::AgentView::default()
    };
    let Ok((name, peer)) = api::checked_peer(request, &view) else {
        return;
    };
    let named = model::Named {
        name,
        origin: api::api_origin(),
        spec: peer.spec,
    };
    let _ = planner::neighbor(
        &named,
        &view.snapshot,
        view.asn,
        std::net::Ipv4Addr::new(10, 0, 0, 1),
    );
});
