//! One test per malformed-message case: the action RFC 7606 (or RFC 4271,
//! 4760, 6793, 7313, 8092 where they assign it) prescribes, and the
//! NOTIFICATION code, subcode and data a session reset would send.

use bgpd::wire::attr::{AttrValue, Origin, flags};
use bgpd::wire::error::{ErrorAction, ErrorKind, code, subcode};
use bgpd::wire::{AfiSafi, Message, Notification, WireContext, WireError};

const CTX: WireContext = WireContext::modern();

/// A header around a body.
fn frame(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xFF; 16];
    m.extend_from_slice(&((body.len() + 19) as u16).to_be_bytes());
    m.push(ty);
    m.extend_from_slice(body);
    m
}

/// An UPDATE with the given withdrawn routes, raw attribute list and NLRI.
fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    frame(2, &b)
}

/// One attribute: flags, type, one-octet length, value.
fn attr(flags: u8, ty: u8, value: &[u8]) -> Vec<u8> {
    let mut a = vec![flags, ty, value.len() as u8];
    a.extend_from_slice(value);
    a
}

const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
const EMPTY_AS_PATH: [u8; 3] = [0x40, 2, 0];
const NEXT_HOP: [u8; 7] = [0x40, 3, 4, 192, 0, 2, 1];
/// 10.0.0.0/8
const NLRI: [u8; 2] = [8, 10];

/// The mandatory attributes followed by `extra`.
fn with_mandatory(extra: &[u8]) -> Vec<u8> {
    [&ORIGIN_IGP[..], &EMPTY_AS_PATH, &NEXT_HOP, extra].concat()
}

/// Decodes an UPDATE that must survive, and returns its single problem.
fn one_problem(msg: &[u8]) -> WireError {
    let d = Message::decode(msg, &CTX).expect("the session survives");
    assert_eq!(d.problems.len(), 1, "problems: {:?}", d.problems);
    d.problems.into_iter().next().expect("one")
}

fn fatal(msg: &[u8]) -> WireError {
    Message::decode(msg, &CTX).expect_err("must be fatal")
}

fn assert_notification(e: &WireError, c: u8, s: u8, data: &[u8]) {
    assert_eq!(
        e.notification,
        Notification {
            code: c,
            subcode: s,
            data: data.to_vec()
        },
        "{e}"
    );
}

// ---- attributes: treat-as-withdraw ----

#[test]
fn origin_bad_length_is_treat_as_withdraw() {
    let bad = attr(0x40, 1, &[0, 0]);
    let e = one_problem(&update(
        &[],
        &[&bad[..], &EMPTY_AS_PATH, &NEXT_HOP].concat(),
        &NLRI,
    ));
    assert_eq!(e.action, ErrorAction::TreatAsWithdraw);
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::ATTRIBUTE_LENGTH,
        &bad,
    );
}

#[test]
fn origin_undefined_value_is_treat_as_withdraw() {
    let bad = attr(0x40, 1, &[3]);
    let e = one_problem(&update(
        &[],
        &[&bad[..], &EMPTY_AS_PATH, &NEXT_HOP].concat(),
        &NLRI,
    ));
    assert_eq!(e.kind, ErrorKind::InvalidOrigin(3));
    assert_eq!(e.action, ErrorAction::TreatAsWithdraw);
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::INVALID_ORIGIN,
        &bad,
    );
}

fn as_path_case(value: &[u8]) {
    let bad = attr(0x40, 2, value);
    let e = one_problem(&update(
        &[],
        &[&ORIGIN_IGP[..], &bad, &NEXT_HOP].concat(),
        &NLRI,
    ));
    assert!(
        matches!(
            e.kind,
            ErrorKind::MalformedAsPath {
                attr: "AS_PATH",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.action, ErrorAction::TreatAsWithdraw);
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::MALFORMED_AS_PATH,
        &[],
    );
}

#[test]
fn as_path_unknown_segment_type_is_treat_as_withdraw() {
    as_path_case(&[5, 1, 0, 0, 0, 1]);
}

#[test]
fn as_path_zero_length_segment_is_treat_as_withdraw() {
    as_path_case(&[2, 0]);
}

#[test]
fn as_path_segment_overrun_is_treat_as_withdraw() {
    as_path_case(&[2, 2, 0, 0, 0, 1]);
}

#[test]
fn as_path_truncated_segment_header_is_treat_as_withdraw() {
    as_path_case(&[2, 1, 0, 0, 0, 1, 2]);
}

#[test]
fn next_hop_bad_length_is_treat_as_withdraw() {
    let bad = attr(0x40, 3, &[192, 0, 2]);
    let e = one_problem(&update(
        &[],
        &[&ORIGIN_IGP[..], &EMPTY_AS_PATH, &bad].concat(),
        &NLRI,
    ));
    assert_eq!(e.action, ErrorAction::TreatAsWithdraw);
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::ATTRIBUTE_LENGTH,
        &bad,
    );
}

#[test]
fn next_hop_not_unicast_is_treat_as_withdraw() {
    for nh in [[0, 0, 0, 0], [224, 0, 0, 1], [255, 255, 255, 255]] {
        let bad = attr(0x40, 3, &nh);
        let e = one_problem(&update(
            &[],
            &[&ORIGIN_IGP[..], &EMPTY_AS_PATH, &bad].concat(),
            &NLRI,
        ));
        assert_eq!(e.action, ErrorAction::TreatAsWithdraw);
        assert_notification(
            &e,
            code::UPDATE_MESSAGE,
            subcode::update::INVALID_NEXT_HOP,
            &bad,
        );
    }
}

fn length_case(flags: u8, ty: u8, value: &[u8], action: ErrorAction) {
    let bad = attr(flags, ty, value);
    let e = one_problem(&update(&[], &with_mandatory(&bad), &NLRI));
    assert_eq!(e.action, action, "type {ty}: {e}");
    assert_eq!(
        e.kind,
        ErrorKind::AttributeLength {
            type_code: ty,
            length: value.len()
        }
    );
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::ATTRIBUTE_LENGTH,
        &bad,
    );
}

#[test]
fn med_bad_length_is_treat_as_withdraw() {
    length_case(0x80, 4, &[0, 0, 1], ErrorAction::TreatAsWithdraw);
}

#[test]
fn local_pref_bad_length_is_treat_as_withdraw() {
    length_case(0x40, 5, &[0, 0, 0, 0, 100], ErrorAction::TreatAsWithdraw);
}

#[test]
fn atomic_aggregate_bad_length_is_attribute_discard() {
    length_case(0x40, 6, &[1], ErrorAction::AttributeDiscard);
}

#[test]
fn aggregator_bad_length_is_attribute_discard() {
    // 4-octet session: AGGREGATOR must be 8 octets; 6 is the 2-octet form.
    length_case(
        0xC0,
        7,
        &[0xFD, 0xE8, 10, 0, 0, 1],
        ErrorAction::AttributeDiscard,
    );
}

#[test]
fn communities_bad_length_is_treat_as_withdraw() {
    length_case(0xC0, 8, &[0, 1, 0], ErrorAction::TreatAsWithdraw);
    length_case(0xC0, 8, &[], ErrorAction::TreatAsWithdraw);
}

#[test]
fn originator_id_bad_length_is_treat_as_withdraw() {
    length_case(0x80, 9, &[1, 2, 3, 4, 5], ErrorAction::TreatAsWithdraw);
}

#[test]
fn cluster_list_bad_length_is_treat_as_withdraw() {
    length_case(0x80, 10, &[1, 2, 3, 4, 5, 6], ErrorAction::TreatAsWithdraw);
    length_case(0x80, 10, &[], ErrorAction::TreatAsWithdraw);
}

#[test]
fn extended_communities_bad_length_is_treat_as_withdraw() {
    length_case(0xC0, 16, &[0; 7], ErrorAction::TreatAsWithdraw);
}

#[test]
fn large_communities_bad_length_is_treat_as_withdraw() {
    length_case(0xC0, 32, &[0; 11], ErrorAction::TreatAsWithdraw);
    length_case(0xC0, 32, &[], ErrorAction::TreatAsWithdraw);
}

#[test]
fn as4_aggregator_bad_length_is_attribute_discard() {
    length_case(0xC0, 18, &[0; 6], ErrorAction::AttributeDiscard);
}

#[test]
fn malformed_as4_path_is_attribute_discard() {
    let bad = attr(0xC0, 17, &[2, 3, 0, 0, 0, 1]);
    let e = one_problem(&update(&[], &with_mandatory(&bad), &NLRI));
    assert_eq!(e.action, ErrorAction::AttributeDiscard);
    assert!(matches!(
        e.kind,
        ErrorKind::MalformedAsPath {
            attr: "AS4_PATH",
            ..
        }
    ));
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::OPTIONAL_ATTRIBUTE,
        &bad,
    );
}

#[test]
fn discarded_attribute_is_gone_but_routes_stay() {
    let bad = attr(0x40, 6, &[1]);
    let d = Message::decode(&update(&[], &with_mandatory(&bad), &NLRI), &CTX).expect("decodes");
    assert!(!d.treat_as_withdraw());
    let Message::Update(u) = d.message else {
        panic!()
    };
    assert_eq!(u.attributes.len(), 3);
    assert_eq!(u.nlri.len(), 1);
}

#[test]
fn wrong_flags_are_treat_as_withdraw() {
    // ORIGIN marked optional.
    let bad = attr(0xC0, 1, &[0]);
    let e = one_problem(&update(
        &[],
        &[&bad[..], &EMPTY_AS_PATH, &NEXT_HOP].concat(),
        &NLRI,
    ));
    assert_eq!(e.action, ErrorAction::TreatAsWithdraw);
    assert_eq!(
        e.kind,
        ErrorKind::AttributeFlags {
            type_code: 1,
            flags: 0xC0
        }
    );
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::ATTRIBUTE_FLAGS,
        &bad,
    );
    // COMMUNITIES marked non-transitive.
    let bad = attr(0x80, 8, &[0, 1, 0, 1]);
    let e = one_problem(&update(&[], &with_mandatory(&bad), &NLRI));
    assert_eq!(
        e.kind,
        ErrorKind::AttributeFlags {
            type_code: 8,
            flags: 0x80
        }
    );
}

#[test]
fn missing_well_known_attributes_are_treat_as_withdraw() {
    for (attrs, missing) in [
        ([&EMPTY_AS_PATH[..], &NEXT_HOP].concat(), 1u8),
        ([&ORIGIN_IGP[..], &NEXT_HOP].concat(), 2),
        ([&ORIGIN_IGP[..], &EMPTY_AS_PATH].concat(), 3),
    ] {
        let e = one_problem(&update(&[], &attrs, &NLRI));
        assert_eq!(e.kind, ErrorKind::MissingWellKnown(missing));
        assert_eq!(e.action, ErrorAction::TreatAsWithdraw);
        assert_notification(
            &e,
            code::UPDATE_MESSAGE,
            subcode::update::MISSING_WELL_KNOWN,
            &[missing],
        );
    }
}

#[test]
fn withdraw_only_update_needs_no_attributes() {
    let d = Message::decode(&update(&NLRI, &[], &[]), &CTX).expect("decodes");
    assert!(d.problems.is_empty());
}

#[test]
fn mp_reach_without_next_hop_attribute_is_fine() {
    // IPv6 announcement: NEXT_HOP is not needed (RFC 4760 §3).
    let mut mp = vec![0, 2, 1, 16];
    mp.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    mp.extend_from_slice(&[0, 32, 0x20, 0x01, 0x0d, 0xb8]);
    let attrs = [&ORIGIN_IGP[..], &EMPTY_AS_PATH, &attr(0x80, 14, &mp)].concat();
    let d = Message::decode(&update(&[], &attrs, &[]), &CTX).expect("decodes");
    assert!(d.problems.is_empty(), "{:?}", d.problems);
}

#[test]
fn mp_reach_bad_next_hop_length_is_treat_as_withdraw() {
    let mut mp = vec![0, 2, 1, 5, 1, 2, 3, 4, 5, 0];
    mp.extend_from_slice(&[32, 0x20, 0x01, 0x0d, 0xb8]);
    let bad = attr(0x80, 14, &mp);
    let attrs = [&ORIGIN_IGP[..], &EMPTY_AS_PATH, &bad].concat();
    let d = Message::decode(&update(&[], &attrs, &[]), &CTX).expect("decodes");
    assert_eq!(d.problems.len(), 1);
    let e = &d.problems[0];
    assert_eq!(
        e.kind,
        ErrorKind::InvalidNextHopLength {
            afi_safi: AfiSafi::IPV6_UNICAST,
            length: 5
        }
    );
    assert_eq!(e.action, ErrorAction::TreatAsWithdraw);
    assert_notification(
        e,
        code::UPDATE_MESSAGE,
        subcode::update::OPTIONAL_ATTRIBUTE,
        &bad,
    );
    // The NLRI are still known, so they can be withdrawn.
    let Message::Update(u) = &d.message else {
        panic!()
    };
    assert_eq!(u.announced().count(), 1);
}

#[test]
fn mp_reach_bad_nlri_disables_the_family() {
    let mut mp = vec![0, 2, 1, 16];
    mp.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    mp.extend_from_slice(&[0, 129, 0x20]);
    let bad = attr(0x80, 14, &mp);
    let e = fatal(&update(
        &[],
        &[&ORIGIN_IGP[..], &EMPTY_AS_PATH, &bad].concat(),
        &[],
    ));
    assert_eq!(e.action, ErrorAction::AfiSafiDisable(AfiSafi::IPV6_UNICAST));
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::OPTIONAL_ATTRIBUTE,
        &bad,
    );
}

#[test]
fn mp_reach_too_short_for_a_family_resets_the_session() {
    let bad = attr(0x80, 14, &[0, 2]);
    let e = fatal(&update(&[], &bad, &[]));
    assert_eq!(e.action, ErrorAction::SessionReset);
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::OPTIONAL_ATTRIBUTE,
        &bad,
    );
}

#[test]
fn mp_reach_next_hop_overrun_disables_the_family() {
    let bad = attr(0x80, 14, &[0, 1, 1, 16, 10, 0]);
    let e = fatal(&update(&[], &bad, &[]));
    assert_eq!(e.action, ErrorAction::AfiSafiDisable(AfiSafi::IPV4_UNICAST));
}

#[test]
fn mp_unreach_bad_nlri_disables_the_family() {
    let bad = attr(0x80, 15, &[0, 1, 1, 33, 10, 0, 0, 0, 0]);
    let e = fatal(&update(&[], &bad, &[]));
    assert_eq!(e.action, ErrorAction::AfiSafiDisable(AfiSafi::IPV4_UNICAST));
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::OPTIONAL_ATTRIBUTE,
        &bad,
    );
}

#[test]
fn duplicate_mp_attribute_resets_the_session() {
    let eor = attr(0x80, 15, &[0, 2, 1]);
    let e = fatal(&update(&[], &[&eor[..], &eor].concat(), &[]));
    assert_eq!(e.kind, ErrorKind::DuplicateMpAttribute(15));
    assert_eq!(e.action, ErrorAction::SessionReset);
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::MALFORMED_ATTRIBUTE_LIST,
        &[],
    );
}

#[test]
fn duplicate_attribute_keeps_the_first() {
    let second = attr(0x40, 1, &[2]);
    let d = Message::decode(&update(&[], &with_mandatory(&second), &NLRI), &CTX).expect("decodes");
    assert_eq!(d.problems.len(), 1);
    assert_eq!(d.problems[0].kind, ErrorKind::DuplicateAttribute(1));
    assert_eq!(d.problems[0].action, ErrorAction::AttributeDiscard);
    let Message::Update(u) = d.message else {
        panic!()
    };
    assert_eq!(u.attributes[0].value, AttrValue::Origin(Origin::Igp));
    assert_eq!(u.attributes.len(), 3);
}

#[test]
fn attribute_overrunning_the_list_is_treat_as_withdraw_and_nlri_survive() {
    // MED claims 9 octets but only 4 remain in the attribute list.
    let attrs = with_mandatory(&[0x80, 4, 9, 0, 0, 0, 1]);
    let e = one_problem(&update(&[], &attrs, &NLRI));
    assert!(matches!(e.kind, ErrorKind::MalformedAttributeList(_)));
    assert_eq!(e.action, ErrorAction::TreatAsWithdraw);
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::MALFORMED_ATTRIBUTE_LIST,
        &[],
    );
    let d = Message::decode(&update(&[], &attrs, &NLRI), &CTX).expect("decodes");
    let Message::Update(u) = d.message else {
        panic!()
    };
    assert_eq!(u.nlri.len(), 1, "the total length still locates the NLRI");
}

#[test]
fn truncated_attribute_header_is_treat_as_withdraw() {
    for tail in [&[0x40u8][..], &[0x50, 4, 0]] {
        let e = one_problem(&update(&[], &with_mandatory(tail), &NLRI));
        assert!(
            matches!(e.kind, ErrorKind::MalformedAttributeList(_)),
            "{e}"
        );
        assert_eq!(e.action, ErrorAction::TreatAsWithdraw);
    }
}

#[test]
fn unrecognized_well_known_attribute_resets_the_session() {
    let bad = attr(0x40, 99, &[1, 2]);
    let e = fatal(&update(&[], &with_mandatory(&bad), &NLRI));
    assert_eq!(e.action, ErrorAction::SessionReset);
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::UNRECOGNIZED_WELL_KNOWN,
        &bad,
    );
}

#[test]
fn unknown_optional_transitive_is_kept_and_propagated_partial() {
    let unknown = attr(0xC0, 99, &[1, 2, 3]);
    let msg = update(&[], &with_mandatory(&unknown), &NLRI);
    let d = Message::decode(&msg, &CTX).expect("decodes");
    assert!(d.problems.is_empty());
    let Message::Update(u) = &d.message else {
        panic!()
    };
    let a = &u.attributes[3];
    assert_eq!(
        a.value,
        AttrValue::Unknown {
            type_code: 99,
            data: vec![1, 2, 3]
        }
    );
    let fwd = a.for_propagation().expect("transitive ones are passed on");
    assert_eq!(fwd.flags, 0xC0 | flags::PARTIAL);
    // Non-transitive unknown attributes are not passed on.
    let nt = attr(0x80, 99, &[1]);
    let d = Message::decode(&update(&[], &with_mandatory(&nt), &NLRI), &CTX).expect("decodes");
    let Message::Update(u) = &d.message else {
        panic!()
    };
    assert!(u.attributes[3].for_propagation().is_none());
    // Re-encoding is exact.
    assert_eq!(
        Message::decode(&msg, &CTX)
            .expect("ok")
            .message
            .to_bytes(&CTX)
            .expect("enc"),
        msg
    );
}

// ---- UPDATE structure: session reset ----

#[test]
fn withdrawn_length_overrun_resets_the_session() {
    let mut msg = update(&NLRI, &[], &[]);
    msg[20] = 200; // Withdrawn Routes Length
    let e = fatal(&msg);
    assert_eq!(e.action, ErrorAction::SessionReset);
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::MALFORMED_ATTRIBUTE_LIST,
        &[],
    );
}

#[test]
fn attribute_length_overrun_resets_the_session() {
    let mut msg = update(&[], &with_mandatory(&[]), &[]);
    msg[22] = 200; // Total Path Attribute Length, low octet
    let e = fatal(&msg);
    assert_eq!(
        e.kind,
        ErrorKind::UpdateLengthOverrun("total path attribute length")
    );
    assert_notification(
        &e,
        code::UPDATE_MESSAGE,
        subcode::update::MALFORMED_ATTRIBUTE_LIST,
        &[],
    );
}

#[test]
fn invalid_nlri_resets_the_session() {
    for nlri in [&[33u8, 10, 0, 0, 0, 0][..], &[24, 10, 0]] {
        let e = fatal(&update(&[], &with_mandatory(&[]), nlri));
        assert_eq!(e.action, ErrorAction::SessionReset);
        assert_notification(
            &e,
            code::UPDATE_MESSAGE,
            subcode::update::INVALID_NETWORK_FIELD,
            &[],
        );
    }
}

#[test]
fn invalid_withdrawn_prefix_resets_the_session() {
    let e = fatal(&update(&[40, 1, 2, 3, 4, 5], &[], &[]));
    assert_eq!(e.action, ErrorAction::SessionReset);
    assert_eq!(
        e.notification.subcode,
        subcode::update::INVALID_NETWORK_FIELD
    );
}

// ---- header, OPEN, ROUTE-REFRESH ----

#[test]
fn bad_marker_is_connection_not_synchronized() {
    let mut msg = frame(4, &[]);
    msg[3] = 0;
    assert_notification(
        &fatal(&msg),
        code::MESSAGE_HEADER,
        subcode::header::CONNECTION_NOT_SYNCHRONIZED,
        &[],
    );
}

#[test]
fn bad_length_carries_the_length() {
    let msg = frame(4, &[0]); // KEEPALIVE of 20 octets
    assert_notification(
        &fatal(&msg),
        code::MESSAGE_HEADER,
        subcode::header::BAD_MESSAGE_LENGTH,
        &[0, 20],
    );
    let mut short = frame(2, &[0, 0, 0, 0]);
    short[17] = 18;
    assert_eq!(
        fatal(&short).notification.subcode,
        subcode::header::BAD_MESSAGE_LENGTH
    );
    // An UPDATE longer than 4096 without extended messages.
    let big = frame(2, &vec![0u8; 5000]);
    let e = fatal(&big);
    assert_notification(
        &e,
        code::MESSAGE_HEADER,
        subcode::header::BAD_MESSAGE_LENGTH,
        &((5019u16).to_be_bytes()),
    );
}

#[test]
fn bad_type_carries_the_type() {
    assert_notification(
        &fatal(&frame(9, &[])),
        code::MESSAGE_HEADER,
        subcode::header::BAD_MESSAGE_TYPE,
        &[9],
    );
}

fn open_body(version: u8, hold: u16, id: [u8; 4]) -> Vec<u8> {
    let mut b = vec![version, 0xFD, 0xE8];
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(0);
    b
}

#[test]
fn open_errors_carry_rfc_4271_subcodes() {
    let e = fatal(&frame(1, &open_body(3, 90, [1, 1, 1, 1])));
    assert_notification(
        &e,
        code::OPEN_MESSAGE,
        subcode::open::UNSUPPORTED_VERSION,
        &[0, 4],
    );
    let e = fatal(&frame(1, &open_body(4, 2, [1, 1, 1, 1])));
    assert_notification(
        &e,
        code::OPEN_MESSAGE,
        subcode::open::UNACCEPTABLE_HOLD_TIME,
        &[],
    );
    let e = fatal(&frame(1, &open_body(4, 90, [0, 0, 0, 0])));
    assert_notification(
        &e,
        code::OPEN_MESSAGE,
        subcode::open::BAD_BGP_IDENTIFIER,
        &[0, 0, 0, 0],
    );
    let mut b = open_body(4, 90, [1, 1, 1, 1]);
    *b.last_mut().expect("opt len") = 6;
    b.extend_from_slice(&[2, 4, 65, 4, 0, 0]); // 4-octet AS capability cut short
    let e = fatal(&frame(1, &b));
    assert!(matches!(
        e.kind,
        ErrorKind::MalformedOpen(_) | ErrorKind::MalformedCapability { .. }
    ));
    assert_eq!(e.notification.code, code::OPEN_MESSAGE);
}

#[test]
fn open_accepts_hold_time_zero_and_three() {
    for hold in [0, 3] {
        assert!(Message::decode(&frame(1, &open_body(4, hold, [1, 1, 1, 1])), &CTX).is_ok());
    }
}

#[test]
fn route_refresh_borr_with_extra_octets_is_invalid_length() {
    let msg = frame(5, &[0, 1, 1, 1, 0]);
    let e = fatal(&msg);
    assert_notification(
        &e,
        code::ROUTE_REFRESH_MESSAGE,
        subcode::route_refresh::INVALID_MESSAGE_LENGTH,
        &msg,
    );
}

#[test]
fn shutdown_communication_round_trips_and_is_bounded() {
    let n = Notification::administrative_shutdown("maintenance: moving to rack 7");
    assert_eq!(
        n.shutdown_communication(),
        Some("maintenance: moving to rack 7")
    );
    let bytes = Message::Notification(n.clone())
        .to_bytes(&CTX)
        .expect("encodes");
    let d = Message::decode(&bytes, &CTX).expect("decodes");
    assert_eq!(d.message, Message::Notification(n));
    let long = "é".repeat(200);
    let n = Notification::administrative_reset(&long);
    assert!(n.data.len() <= 256);
    assert!(n.shutdown_communication().is_some_and(|s| s.len() <= 255));
}

#[test]
fn several_problems_take_the_strongest_action() {
    // A discardable ATOMIC_AGGREGATE and a treat-as-withdraw MED together.
    let extra = [attr(0x40, 6, &[1]), attr(0x80, 4, &[0])].concat();
    let d = Message::decode(&update(&[], &with_mandatory(&extra), &NLRI), &CTX).expect("decodes");
    assert_eq!(d.problems.len(), 2);
    assert_eq!(d.action(), Some(ErrorAction::TreatAsWithdraw));
    assert!(d.treat_as_withdraw());
}

#[test]
fn the_most_severe_action_wins() {
    use ErrorAction::*;
    assert_eq!(AttributeDiscard.max(TreatAsWithdraw), TreatAsWithdraw);
    assert_eq!(TreatAsWithdraw.max(SessionReset), SessionReset);
    assert_eq!(SessionReset.max(AttributeDiscard), SessionReset);
    assert_eq!(
        TreatAsWithdraw.max(AfiSafiDisable(AfiSafi::IPV6_UNICAST)),
        AfiSafiDisable(AfiSafi::IPV6_UNICAST)
    );
}
