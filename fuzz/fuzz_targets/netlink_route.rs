//! What route-sync reads from the kernel, from arbitrary bytes: a datagram
//! cut into netlink messages (`route_sync::wireguard::frames`, its own
//! framing), and a route message read into the table's terms
//! (`route_sync::kernel::from_message`). The generic netlink answers are
//! parsed by netlink-packet-core, which panics on some malformed nested
//! attributes; route-sync catches that (`wireguard::decode`), which a
//! fuzzer's panic hook would not let it show, so it is left out here.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netlink_packet_core::Parseable;
use netlink_packet_route::route::RouteMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(frames) = route_sync::wireguard::frames(data) {
        for f in frames {
            assert!(f.len() >= 16 && f.len() <= data.len());
        }
    }
    if let Ok(m) = RouteMessage::parse(data) {
        let _ = route_sync::kernel::from_message(&m);
    }
});
