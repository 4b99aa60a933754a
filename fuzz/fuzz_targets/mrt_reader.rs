//! Feeds arbitrary bytes to the MRT reader and decodes every record the way
//! `petrel decode --check` does.
#![no_main]

use bgpd::mrt::{MrtBody, MrtReader, SessionTracker};
use bgpd::wire::WireContext;
use bgpd::wire::attr::{AttrSource, decode_attributes, encode_attributes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut tracker = SessionTracker::new();
    for record in MrtReader::new(data).take(10_000) {
        let Ok(record) = record else { continue };
        match record.parse() {
            Ok(MrtBody::Bgp4mpMessage(m)) => {
                let d = tracker.decode(&m);
                if let Ok(decoded) = d.result {
                    if decoded.problems.is_empty() {
                        let bytes = decoded.message.to_bytes(&d.context).expect("encodes");
                        assert_eq!(bytes, m.message);
                    }
                }
            }
            Ok(MrtBody::Rib(rib)) => {
                let ctx = WireContext::modern();
                for e in &rib.entries {
                    if let Ok(a) =
                        decode_attributes(&e.attributes, &ctx, AttrSource::MrtRib(rib.afi_safi))
                    {
                        if a.problems.is_empty() {
                            let mut out = Vec::new();
                            encode_attributes(&a.attributes, &ctx, &mut out).expect("encodes");
                            assert_eq!(out, e.attributes);
                        }
                    }
                }
            }
            _ => {}
        }
    }
});
