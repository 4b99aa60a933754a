//! UPDATE messages (RFC 4271 §4.3) and packing many NLRI into few of them.

use super::attr::{
    self, AttrSource, AttrValue, MpNlri, MpReach, MpUnreach, NextHop, PathAttribute, type_code,
};
use super::error::{ErrorAction, ErrorKind, WireError, subcode};
use super::nlri::{self, Nlri};
use super::reader::{Reader, patch_len16, push_len16};
use super::{AfiSafi, EncodeError, HEADER_LEN, WireContext};

/// An UPDATE message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// IPv4 unicast prefixes withdrawn in the Withdrawn Routes field.
    pub withdrawn: Vec<Nlri>,
    /// Path attributes in wire order (MP_REACH / MP_UNREACH included).
    pub attributes: Vec<PathAttribute>,
    /// IPv4 unicast prefixes announced in the NLRI field.
    pub nlri: Vec<Nlri>,
}

impl Update {
    /// The End-of-RIB marker for a family (RFC 4724 §2).
    pub fn end_of_rib(af: AfiSafi) -> Update {
        if af == AfiSafi::IPV4_UNICAST {
            return Update::default();
        }
        let withdrawn = match af {
            AfiSafi::IPV6_UNICAST => MpNlri::Prefixes(Vec::new()),
            _ => MpNlri::Opaque(Vec::new()),
        };
        Update {
            attributes: vec![PathAttribute::new(AttrValue::MpUnreach(MpUnreach {
                afi_safi: af,
                withdrawn,
            }))],
            ..Update::default()
        }
    }

    /// If this UPDATE is an End-of-RIB marker, its family.
    pub fn as_end_of_rib(&self) -> Option<AfiSafi> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(AfiSafi::IPV4_UNICAST),
            [a] => match &a.value {
                AttrValue::MpUnreach(u) if u.withdrawn.is_empty() => Some(u.afi_safi),
                _ => None,
            },
            _ => None,
        }
    }

    /// The first attribute with this type code.
    pub fn attribute(&self, code: u8) -> Option<&PathAttribute> {
        self.attributes.iter().find(|a| a.type_code() == code)
    }

    /// The MP_REACH_NLRI attribute, if any.
    pub fn mp_reach(&self) -> Option<&MpReach> {
        self.attributes.iter().find_map(|a| match &a.value {
            AttrValue::MpReach(m) => Some(m),
            _ => None,
        })
    }

    /// The MP_UNREACH_NLRI attribute, if any.
    pub fn mp_unreach(&self) -> Option<&MpUnreach> {
        self.attributes.iter().find_map(|a| match &a.value {
            AttrValue::MpUnreach(m) => Some(m),
            _ => None,
        })
    }

    /// Every announced prefix: the NLRI field and MP_REACH_NLRI.
    pub fn announced(&self) -> impl Iterator<Item = &Nlri> {
        self.nlri
            .iter()
            .chain(self.mp_reach().map(|m| m.nlri.prefixes()).unwrap_or(&[]))
    }

    /// Every withdrawn prefix: the Withdrawn Routes field and MP_UNREACH_NLRI.
    pub fn withdrawn_all(&self) -> impl Iterator<Item = &Nlri> {
        self.withdrawn.iter().chain(
            self.mp_unreach()
                .map(|m| m.withdrawn.prefixes())
                .unwrap_or(&[]),
        )
    }

    /// Decodes an UPDATE body (the octets after the header). Weaker RFC 7606
    /// findings are appended to `problems`.
    pub fn decode_body(
        body: &[u8],
        ctx: &WireContext,
        problems: &mut Vec<WireError>,
    ) -> Result<Update, WireError> {
        let overrun = |what| {
            WireError::update(
                ErrorKind::UpdateLengthOverrun(what),
                ErrorAction::SessionReset,
                subcode::update::MALFORMED_ATTRIBUTE_LIST,
                Vec::new(),
            )
        };
        let mut r = Reader::new(body);
        let wlen = r.u16().map_err(|_| overrun("withdrawn routes length"))?;
        let withdrawn_buf = r
            .take(usize::from(wlen))
            .map_err(|_| overrun("withdrawn routes length"))?;
        let alen = r
            .u16()
            .map_err(|_| overrun("total path attribute length"))?;
        let attr_buf = r
            .take(usize::from(alen))
            .map_err(|_| overrun("total path attribute length"))?;
        let nlri_buf = r.rest();

        let network_error = |field, fault: nlri::NlriFault| {
            WireError::update(
                ErrorKind::InvalidPrefix {
                    field,
                    reason: fault.reason(),
                },
                ErrorAction::SessionReset,
                subcode::update::INVALID_NETWORK_FIELD,
                Vec::new(),
            )
        };
        let mut withdrawn = Vec::new();
        nlri::decode_ipv4(withdrawn_buf, ctx.add_path_ipv4, &mut withdrawn)
            .map_err(|f| network_error("withdrawn routes", f))?;
        let mut nlri = Vec::new();
        nlri::decode_ipv4(nlri_buf, ctx.add_path_ipv4, &mut nlri)
            .map_err(|f| network_error("NLRI", f))?;

        let decoded = attr::decode_attributes(attr_buf, ctx, AttrSource::Update)?;
        problems.extend(decoded.problems);
        let update = Update {
            withdrawn,
            attributes: decoded.attributes,
            nlri,
        };
        update.check_mandatory(problems);
        Ok(update)
    }

    /// RFC 7606 §3 (d): well-known mandatory attributes must be present when the
    /// UPDATE announces anything; NEXT_HOP only for the NLRI field (RFC 4760 §3).
    fn check_mandatory(&self, problems: &mut Vec<WireError>) {
        let mp_announces = self.mp_reach().is_some_and(|m| !m.nlri.is_empty());
        if self.nlri.is_empty() && !mp_announces {
            return;
        }
        // An attribute that was present but malformed has already been reported.
        let mut required = vec![type_code::ORIGIN, type_code::AS_PATH];
        if !self.nlri.is_empty() {
            required.push(type_code::NEXT_HOP);
        }
        for code in required {
            let reported = problems.iter().any(|p| {
                p.notification.data.get(1) == Some(&code)
                    || (code == type_code::AS_PATH
                        && matches!(
                            p.kind,
                            ErrorKind::MalformedAsPath {
                                attr: "AS_PATH",
                                ..
                            }
                        ))
            });
            if self.attribute(code).is_none() && !reported {
                problems.push(WireError::update(
                    ErrorKind::MissingWellKnown(code),
                    ErrorAction::TreatAsWithdraw,
                    subcode::update::MISSING_WELL_KNOWN,
                    vec![code],
                ));
            }
        }
    }

    /// Appends the UPDATE body (without the header).
    pub fn encode_body(&self, ctx: &WireContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let at = push_len16(out);
        nlri::encode_all(&self.withdrawn, ctx.add_path_ipv4, out);
        patch_len16(out, at).ok_or(EncodeError::FieldTooLong("withdrawn routes"))?;
        let at = push_len16(out);
        attr::encode_attributes(&self.attributes, ctx, out)?;
        patch_len16(out, at).ok_or(EncodeError::FieldTooLong("path attributes"))?;
        nlri::encode_all(&self.nlri, ctx.add_path_ipv4, out);
        Ok(())
    }
}

/// Packs announcements and withdrawals into as few UPDATE messages as the
/// session's maximum message size allows.
///
/// IPv4 unicast goes in the classic fields (with NEXT_HOP among the attributes);
/// every other family goes in MP_REACH_NLRI / MP_UNREACH_NLRI, which are written
/// first as RFC 7606 §5.1 asks.
#[derive(Debug)]
pub struct UpdatePacker<'a> {
    ctx: &'a WireContext,
    max: usize,
}

impl<'a> UpdatePacker<'a> {
    /// A packer for a session's outbound context.
    pub fn new(ctx: &'a WireContext) -> Self {
        UpdatePacker {
            ctx,
            max: ctx.max_message_len(),
        }
    }

    /// A packer with a smaller size limit (tests, or peers that need it).
    pub fn with_max_len(ctx: &'a WireContext, max: usize) -> Self {
        UpdatePacker {
            ctx,
            max: max.min(ctx.max_message_len()),
        }
    }

    /// Encodes full messages (header included) announcing `nlri` of family `af`
    /// with the given attributes, appending each message to `out`. For families
    /// other than IPv4 unicast, `next_hop` is placed in MP_REACH_NLRI; for IPv4
    /// unicast, `attributes` must hold NEXT_HOP unless the next hop is IPv6 (RFC 8950).
    pub fn announce(
        &self,
        af: AfiSafi,
        attributes: &[PathAttribute],
        next_hop: Option<&NextHop>,
        nlri: &[Nlri],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), EncodeError> {
        let mut attr_bytes = Vec::with_capacity(128);
        attr::encode_attributes(attributes, self.ctx, &mut attr_bytes)?;
        let add_path = self.ctx.add_path(af);
        let classic =
            af == AfiSafi::IPV4_UNICAST && !matches!(next_hop, Some(NextHop::Ipv6 { .. }));
        let mp_head = if classic {
            Vec::new()
        } else {
            let nh = next_hop.map(NextHop::to_bytes).unwrap_or_default();
            let mut h = Vec::with_capacity(5 + nh.len());
            h.extend_from_slice(&af.afi.to_be_bytes());
            h.push(af.safi);
            h.push(u8::try_from(nh.len()).map_err(|_| EncodeError::FieldTooLong("next hop"))?);
            h.extend_from_slice(&nh);
            h.push(0);
            h
        };
        // Header, two length fields, attributes, and the MP_REACH attribute header
        // (always the 4-octet extended form so the length never moves).
        let fixed = HEADER_LEN + 4 + attr_bytes.len() + if classic { 0 } else { 4 + mp_head.len() };
        let mut rest = nlri;
        while !rest.is_empty() {
            let mut room = self
                .max
                .checked_sub(fixed)
                .ok_or(EncodeError::MessageTooLong {
                    length: fixed,
                    max: self.max,
                })?;
            let mut n = 0;
            for p in rest {
                let len = p.wire_len()
                    + if add_path && p.path_id.is_none() {
                        4
                    } else {
                        0
                    };
                if len > room {
                    break;
                }
                room -= len;
                n += 1;
            }
            if n == 0 {
                return Err(EncodeError::MessageTooLong {
                    length: fixed + rest[0].wire_len(),
                    max: self.max,
                });
            }
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut msg = Vec::with_capacity(self.max - room);
            let hdr = start_message(&mut msg);
            msg.extend_from_slice(&[0, 0]); // no withdrawn routes
            let at = push_len16(&mut msg);
            if !classic {
                msg.push(attr::flags::OPTIONAL | attr::flags::EXTENDED_LENGTH);
                msg.push(type_code::MP_REACH_NLRI);
                let mp_at = push_len16(&mut msg);
                msg.extend_from_slice(&mp_head);
                nlri::encode_all(chunk, add_path, &mut msg);
                patch_len16(&mut msg, mp_at).ok_or(EncodeError::FieldTooLong("MP_REACH_NLRI"))?;
            }
            msg.extend_from_slice(&attr_bytes);
            patch_len16(&mut msg, at).ok_or(EncodeError::FieldTooLong("path attributes"))?;
            if classic {
                nlri::encode_all(chunk, add_path, &mut msg);
            }
            finish_message(&mut msg, hdr, self.max)?;
            out.push(msg);
        }
        Ok(())
    }

    /// Encodes full messages withdrawing `nlri` of family `af`.
    pub fn withdraw(
        &self,
        af: AfiSafi,
        nlri: &[Nlri],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), EncodeError> {
        let add_path = self.ctx.add_path(af);
        let classic = af == AfiSafi::IPV4_UNICAST;
        let fixed = HEADER_LEN + 4 + if classic { 0 } else { 4 + 3 };
        let mut rest = nlri;
        while !rest.is_empty() {
            let mut room = self.max - fixed;
            let mut n = 0;
            for p in rest {
                let len = p.wire_len()
                    + if add_path && p.path_id.is_none() {
                        4
                    } else {
                        0
                    };
                if len > room {
                    break;
                }
                room -= len;
                n += 1;
            }
            let (chunk, tail) = rest.split_at(n.max(1));
            rest = tail;
            let mut msg = Vec::with_capacity(self.max - room);
            let hdr = start_message(&mut msg);
            if classic {
                let at = push_len16(&mut msg);
                nlri::encode_all(chunk, add_path, &mut msg);
                patch_len16(&mut msg, at).ok_or(EncodeError::FieldTooLong("withdrawn routes"))?;
                msg.extend_from_slice(&[0, 0]);
            } else {
                msg.extend_from_slice(&[0, 0]);
                let at = push_len16(&mut msg);
                msg.push(attr::flags::OPTIONAL | attr::flags::EXTENDED_LENGTH);
                msg.push(type_code::MP_UNREACH_NLRI);
                let mp_at = push_len16(&mut msg);
                msg.extend_from_slice(&af.afi.to_be_bytes());
                msg.push(af.safi);
                nlri::encode_all(chunk, add_path, &mut msg);
                patch_len16(&mut msg, mp_at).ok_or(EncodeError::FieldTooLong("MP_UNREACH_NLRI"))?;
                patch_len16(&mut msg, at).ok_or(EncodeError::FieldTooLong("path attributes"))?;
            }
            finish_message(&mut msg, hdr, self.max)?;
            out.push(msg);
        }
        Ok(())
    }
}

/// Writes the marker, a length placeholder and the UPDATE type.
fn start_message(msg: &mut Vec<u8>) -> usize {
    let start = msg.len();
    msg.extend_from_slice(&[0xFF; 16]);
    msg.extend_from_slice(&[0, 0, super::message::msg_type::UPDATE]);
    start
}

fn finish_message(msg: &mut [u8], start: usize, max: usize) -> Result<(), EncodeError> {
    let len = msg.len() - start;
    if len > max {
        return Err(EncodeError::MessageTooLong { length: len, max });
    }
    msg[start + 16..start + 18].copy_from_slice(&(len as u16).to_be_bytes());
    Ok(())
}
