//! BFD Control packets: any datagram decodes to a packet or an error
//! naming the field, never a panic; a decoded packet re-encodes to the
//! bytes its Length field covers (reserved bits aside), and a session fed
//! it (keyed with SHA1, to exercise the digest and sequence paths too)
//! neither panics nor leaves its state machine's states.
#![no_main]

use std::time::{Duration, Instant};

use bfd::{AuthType, ControlPacket, Key, Session, SessionConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = ControlPacket::decode(data) else {
        return;
    };
    let again = ControlPacket::decode(&p.encode()).expect("an encoded packet decodes");
    assert_eq!(again, p);
    let t0 = Instant::now();
    let mut plain = Session::new(SessionConfig::default(), 1, 1, t0);
    let _ = plain.receive(&p, data, t0);
    let mut keyed = Session::new(
        SessionConfig {
            key: Some(Key::new(AuthType::MeticulousKeyedSha1, 1, b"key").expect("key")),
            ..SessionConfig::default()
        },
        2,
        2,
        t0,
    );
    let _ = keyed.receive(&p, data, t0);
    for s in [&mut plain, &mut keyed] {
        let later = t0 + Duration::from_secs(5);
        let _ = s.timeout(later);
        let _ = s.transmit(later);
    }
});
