//! Every real capture in `shared/data/mrt` decodes completely, and every BGP
//! message (and every RIB entry's attributes) re-encodes to identical bytes.
//! Corrupted copies are reported record by record, without a panic.

use std::io::Write;
use std::path::PathBuf;

use bgpd::mrt::{self, MrtBody, MrtError, MrtReader, SessionTracker};
use bgpd::wire::attr::{AttrSource, decode_attributes, encode_attributes};
use bgpd::wire::{Message, WireContext};

/// The shared data folder: `$PETREL_SHARED_DIR`, else `shared/` beside the checkout.
fn mrt_dir() -> PathBuf {
    let shared = std::env::var_os("PETREL_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    shared.join("data/mrt")
}

fn captures() -> Vec<PathBuf> {
    let dir = mrt_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e} (set PETREL_SHARED_DIR)", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_none_or(|x| x != "md"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "expected the five shared captures in {}",
        dir.display()
    );
    files
}

#[derive(Debug, Default)]
struct Counts {
    records: usize,
    messages: usize,
    updates: usize,
    rib_entries: usize,
}

/// Decodes a whole stream the way `petrel decode --check` does; returns counts
/// and every problem found.
fn check_stream(data: &[u8]) -> (Counts, Vec<String>) {
    let mut counts = Counts::default();
    let mut problems = Vec::new();
    let mut tracker = SessionTracker::new();
    for rec in MrtReader::new(data) {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        counts.records += 1;
        match rec.parse() {
            Err(e) => problems.push(e.to_string()),
            Ok(MrtBody::Bgp4mpMessage(m)) => {
                counts.messages += 1;
                let d = tracker.decode(&m);
                match d.result {
                    Err(e) => problems.push(format!("offset {}: {e}", rec.offset)),
                    Ok(dec) if !dec.problems.is_empty() => {
                        problems.push(format!("offset {}: {:?}", rec.offset, dec.problems))
                    }
                    Ok(dec) => {
                        if matches!(dec.message, Message::Update(_)) {
                            counts.updates += 1;
                        }
                        let bytes = dec.message.to_bytes(&d.context).expect("encodes");
                        if bytes != m.message {
                            problems.push(format!("offset {}: re-encoding differs", rec.offset));
                        }
                    }
                }
            }
            Ok(MrtBody::Bgp4mpStateChange(s)) => {
                if s.new_state <= 3 {
                    tracker.reset(&s.peers);
                }
            }
            Ok(MrtBody::Rib(rib)) => {
                for e in &rib.entries {
                    counts.rib_entries += 1;
                    let ctx = WireContext::modern();
                    match decode_attributes(&e.attributes, &ctx, AttrSource::MrtRib(rib.afi_safi)) {
                        Ok(a) if a.problems.is_empty() => {
                            let mut out = Vec::new();
                            encode_attributes(&a.attributes, &ctx, &mut out).expect("encodes");
                            if out != e.attributes {
                                problems
                                    .push(format!("offset {}: RIB attributes differ", rec.offset));
                            }
                        }
                        Ok(a) => problems.push(format!("offset {}: {:?}", rec.offset, a.problems)),
                        Err(err) => problems.push(format!("offset {}: {err}", rec.offset)),
                    }
                }
            }
            Ok(_) => {}
        }
    }
    (counts, problems)
}

#[test]
fn every_capture_decodes_and_round_trips() {
    let mut total = Counts::default();
    for path in captures() {
        let data = std::fs::read(&path).expect("readable");
        let (c, problems) = check_stream(&data);
        assert!(problems.is_empty(), "{}: {problems:#?}", path.display());
        assert!(c.records > 0, "{}: no records", path.display());
        total.records += c.records;
        total.messages += c.messages;
        total.updates += c.updates;
        total.rib_entries += c.rib_entries;
    }
    // The five captures: 159 records, 96 BGP messages of which 46 UPDATEs,
    // and 9 RIB entries. A reader that silently skipped records would miss these.
    assert_eq!(total.records, 159, "{total:?}");
    assert_eq!(total.messages, 96, "{total:?}");
    assert_eq!(total.updates, 46, "{total:?}");
    assert_eq!(total.rib_entries, 9, "{total:?}");
}

#[test]
fn compressed_captures_read_the_same() {
    let path = &captures()[0];
    let plain = std::fs::read(path).expect("readable");
    let dir = std::env::temp_dir().join(format!("petrel-mrt-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let gz = dir.join("capture.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&plain).expect("gzip");
    std::fs::write(&gz, enc.finish().expect("gzip")).expect("write");
    let bz = dir.join("capture.bz2");
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    enc.write_all(&plain).expect("bzip2");
    std::fs::write(&bz, enc.finish().expect("bzip2")).expect("write");
    let expected: Vec<_> = MrtReader::new(&plain[..])
        .map(|r| r.expect("record"))
        .collect();
    for f in [&gz, &bz] {
        let got: Vec<_> = mrt::open_file(f)
            .expect("open")
            .map(|r| r.expect("record"))
            .collect();
        assert_eq!(got, expected, "{}", f.display());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn truncated_file_reports_the_offset_and_keeps_earlier_records() {
    let data = std::fs::read(&captures()[0]).expect("readable");
    for cut in [1, 11, 13, data.len() / 2, data.len() - 1] {
        let results: Vec<_> = MrtReader::new(&data[..cut]).collect();
        let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(errors.len(), 1, "cut at {cut}: {errors:?}");
        assert!(
            matches!(errors[0], MrtError::Truncated { .. }),
            "{}",
            errors[0]
        );
        assert!(
            results.last().is_some_and(|r| r.is_err()),
            "the error comes last"
        );
        let text = errors[0].to_string();
        assert!(text.contains("offset"), "{text}");
    }
}

#[test]
fn corrupted_bytes_never_panic_and_are_reported() {
    for path in captures() {
        let data = std::fs::read(&path).expect("readable");
        // Flip every byte in turn (bounded: the captures are a few KB) and
        // make sure decoding copes; most flips must be noticed.
        let mut noticed = 0usize;
        let step = (data.len() / 400).max(1);
        let mut tried = 0usize;
        for i in (0..data.len()).step_by(step) {
            let mut bad = data.clone();
            bad[i] ^= 0x5A;
            let (_, problems) = check_stream(&bad);
            tried += 1;
            if !problems.is_empty() {
                noticed += 1;
            }
        }
        // Flips in timestamps, ASNs, addresses or community values are valid data;
        // structural damage is caught. Demand that a good share is.
        assert!(
            noticed * 5 > tried,
            "{}: only {noticed} of {tried} flips noticed",
            path.display()
        );
    }
}

#[test]
fn a_bad_record_does_not_stop_the_next() {
    let data = std::fs::read(&captures()[0]).expect("readable");
    // Corrupt the first message record's BGP marker: that record is bad, the
    // rest still decode.
    let mut records: Vec<_> = MrtReader::new(&data[..])
        .map(|r| r.expect("record"))
        .collect();
    let idx = records
        .iter()
        .position(|r| matches!(r.parse(), Ok(MrtBody::Bgp4mpMessage(_))))
        .expect("a message record");
    let MrtBody::Bgp4mpMessage(m) = records[idx].parse().expect("parses") else {
        unreachable!()
    };
    let marker_at = records[idx].body.len() - m.message.len();
    records[idx].body[marker_at] = 0;
    let mut tracker = SessionTracker::new();
    let mut bad = 0;
    let mut good = 0;
    for r in &records {
        if let Ok(MrtBody::Bgp4mpMessage(m)) = r.parse() {
            match tracker.decode(&m).result {
                Ok(_) => good += 1,
                Err(e) => {
                    assert_eq!(e.notification.code, 1, "{e}");
                    bad += 1;
                }
            }
        }
    }
    assert_eq!(bad, 1);
    assert!(good > 5);
}

/// An MRT record: header and body.
fn record(mrt_type: u16, subtype: u16, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&1_700_000_000u32.to_be_bytes());
    r.extend_from_slice(&mrt_type.to_be_bytes());
    r.extend_from_slice(&subtype.to_be_bytes());
    r.extend_from_slice(&(body.len() as u32).to_be_bytes());
    r.extend_from_slice(body);
    r
}

#[test]
fn bgp4mp_et_local_addpath_records_decode() {
    use bgpd::wire::{Nlri, Update};
    // An UPDATE sent by the recording speaker, with a path identifier.
    let ctx = WireContext {
        add_path_ipv4: true,
        ..WireContext::modern()
    };
    let upd = Message::Update(Update {
        withdrawn: vec![Nlri {
            path_id: Some(42),
            prefix: "198.51.100.0/24".parse().expect("prefix"),
        }],
        ..Update::default()
    });
    let msg = upd.to_bytes(&ctx).expect("encodes");
    let mut body = 250_000u32.to_be_bytes().to_vec(); // microseconds
    body.extend_from_slice(&4_200_000_001u32.to_be_bytes()); // peer AS
    body.extend_from_slice(&65001u32.to_be_bytes()); // local AS
    body.extend_from_slice(&[0, 3, 0, 1]); // ifindex 3, AFI IPv4
    body.extend_from_slice(&[192, 0, 2, 2, 192, 0, 2, 1]);
    body.extend_from_slice(&msg);
    let data = record(
        mrt::mrt_type::BGP4MP_ET,
        mrt::bgp4mp::MESSAGE_AS4_LOCAL_ADDPATH,
        &body,
    );
    let rec = MrtReader::new(&data[..])
        .next()
        .expect("one")
        .expect("framed");
    assert_eq!(rec.microseconds, Some(250_000));
    assert_eq!(rec.type_name(), "BGP4MP_ET/MESSAGE_AS4_LOCAL_ADDPATH");
    let MrtBody::Bgp4mpMessage(m) = rec.parse().expect("parses") else {
        panic!()
    };
    assert!(m.local && m.add_path && m.as4_header);
    assert_eq!(m.peers.peer_as, 4_200_000_001);
    assert_eq!(m.peers.interface_index, 3);
    let d = SessionTracker::new().decode(&m);
    assert!(!d.guessed);
    assert_eq!(d.result.expect("decodes").message, upd);
}

#[test]
fn rib_addpath_records_decode() {
    // PEER_INDEX_TABLE with one IPv6, 4-octet-AS peer, then an IPv4 ADD-PATH RIB entry.
    let mut pit = vec![10, 0, 0, 1, 0, 4];
    pit.extend_from_slice(b"main");
    pit.extend_from_slice(&[0, 1, 0b11, 10, 0, 0, 2]);
    pit.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    pit.extend_from_slice(&4_200_000_002u32.to_be_bytes());
    let attrs = [
        0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0xFA, 0x56, 0xEA, 0x02, 0x40, 3, 4, 192, 0, 2, 9,
    ];
    let mut rib = 7u32.to_be_bytes().to_vec();
    rib.extend_from_slice(&[24, 203, 0, 113, 0, 1]); // 203.0.113.0/24, one entry
    rib.extend_from_slice(&[0, 0]); // peer index
    rib.extend_from_slice(&1_700_000_000u32.to_be_bytes());
    rib.extend_from_slice(&9u32.to_be_bytes()); // path id
    rib.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    rib.extend_from_slice(&attrs);
    let mut data = record(
        mrt::mrt_type::TABLE_DUMP_V2,
        mrt::table_dump_v2::PEER_INDEX_TABLE,
        &pit,
    );
    data.extend(record(
        mrt::mrt_type::TABLE_DUMP_V2,
        mrt::table_dump_v2::RIB_IPV4_UNICAST_ADDPATH,
        &rib,
    ));
    let recs: Vec<_> = MrtReader::new(&data[..])
        .map(|r| r.expect("framed"))
        .collect();
    let MrtBody::PeerIndexTable(t) = recs[0].parse().expect("parses") else {
        panic!()
    };
    assert_eq!(t.view_name, "main");
    assert_eq!(t.peers[0].asn, 4_200_000_002);
    assert_eq!(t.peers[0].ip.to_string(), "2001:db8::2");
    let MrtBody::Rib(r) = recs[1].parse().expect("parses") else {
        panic!()
    };
    assert!(r.add_path);
    assert_eq!(r.entries[0].path_id, Some(9));
    assert_eq!(
        r.nlri,
        mrt::RibNlri::Prefix("203.0.113.0/24".parse().expect("prefix"))
    );
    let (counts, problems) = check_stream(&data);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(counts.rib_entries, 1);
}
