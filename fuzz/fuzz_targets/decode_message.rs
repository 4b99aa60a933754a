//! Decodes arbitrary bytes as a BGP message under every context, and checks
//! that whatever decodes cleanly re-encodes to the same bytes.
#![no_main]

use bgpd::wire::{Message, WireContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first octet picks the context, so one corpus covers all of them.
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let ctx = WireContext {
        four_octet_as: sel & 1 != 0,
        extended_message: sel & 2 != 0,
        add_path_ipv4: sel & 4 != 0,
        add_path_ipv6: sel & 8 != 0,
    };
    if let Ok(decoded) = Message::decode(msg, &ctx) {
        if decoded.problems.is_empty() {
            let bytes = decoded
                .message
                .to_bytes(&ctx)
                .expect("a decoded message encodes");
            assert_eq!(bytes, msg, "round trip differs");
        }
        // Whatever decoded must encode without panicking, even with problems.
        let _ = decoded.message.to_bytes(&ctx);
    }
});
