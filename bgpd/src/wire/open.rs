//! OPEN messages (RFC 4271 §4.2) with optional parameters (RFC 5492) in the
//! classic and the extended (RFC 9072) encoding.

use std::net::Ipv4Addr;

use super::capability::Capability;
use super::error::{ErrorKind, WireError, subcode};
use super::reader::Reader;
use super::{AS_TRANS, EncodeError};

/// Optional parameter type for capabilities (RFC 5492).
pub const PARAM_CAPABILITIES: u8 = 2;
/// Marks the extended optional parameters encoding (RFC 9072).
const PARAM_EXTENDED: u8 = 255;

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// BGP version; always 4 once decoded.
    pub version: u8,
    /// My Autonomous System: the ASN, or AS_TRANS for a 4-octet ASN.
    pub my_as: u16,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Optional parameters, in wire order.
    pub params: Vec<OptionalParameter>,
    /// Whether the parameters use the RFC 9072 extended length encoding.
    pub extended_params: bool,
}

/// An optional parameter of an OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionalParameter {
    /// A Capabilities parameter; peers differ in putting one or many capabilities
    /// in each, and the grouping is kept.
    Capabilities(Vec<Capability>),
    /// Any other parameter (Authentication, type 1, is deprecated).
    Unknown {
        /// Parameter type.
        param_type: u8,
        /// Value octets.
        data: Vec<u8>,
    },
}

impl Open {
    /// An OPEN for `asn` with one Capabilities parameter holding `capabilities`.
    /// A 4-octet ASN is written as AS_TRANS; add [`Capability::FourOctetAs`] too.
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Self {
        Open {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS as u16),
            hold_time,
            bgp_id,
            params: vec![OptionalParameter::Capabilities(capabilities)],
            extended_params: false,
        }
    }

    /// All capabilities, across parameters, in order.
    pub fn capabilities(&self) -> impl Iterator<Item = &Capability> {
        self.params.iter().flat_map(|p| match p {
            OptionalParameter::Capabilities(c) => c.as_slice(),
            OptionalParameter::Unknown { .. } => &[],
        })
    }

    /// The speaker's ASN: from the 4-octet AS capability if present, else `my_as`.
    pub fn asn(&self) -> u32 {
        self.capabilities()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// Decodes an OPEN body (the octets after the header).
    pub fn decode_body(body: &[u8]) -> Result<Open, WireError> {
        let malformed = |reason| {
            WireError::open(
                ErrorKind::MalformedOpen(reason),
                subcode::open::UNSPECIFIC,
                Vec::new(),
            )
        };
        let mut r = Reader::new(body);
        let version = r.u8().map_err(|_| malformed("version missing"))?;
        if version != 4 {
            // The data is the highest version we support (RFC 4271 §6.2).
            return Err(WireError::open(
                ErrorKind::UnsupportedVersion(version),
                subcode::open::UNSUPPORTED_VERSION,
                vec![0, 4],
            ));
        }
        let my_as = r.u16().map_err(|_| malformed("fixed fields truncated"))?;
        let hold_time = r.u16().map_err(|_| malformed("fixed fields truncated"))?;
        let bgp_id = r.ipv4().map_err(|_| malformed("fixed fields truncated"))?;
        let opt_len = r.u8().map_err(|_| malformed("fixed fields truncated"))?;
        if hold_time == 1 || hold_time == 2 {
            return Err(WireError::open(
                ErrorKind::UnacceptableHoldTime(hold_time),
                subcode::open::UNACCEPTABLE_HOLD_TIME,
                Vec::new(),
            ));
        }
        if bgp_id.is_unspecified() {
            return Err(WireError::open(
                ErrorKind::BadBgpIdentifier,
                subcode::open::BAD_BGP_IDENTIFIER,
                bgp_id.octets().to_vec(),
            ));
        }
        let extended_params = opt_len == 255 && r.rest().first() == Some(&PARAM_EXTENDED);
        let params_buf = if extended_params {
            r.u8()
                .map_err(|_| malformed("extended parameters truncated"))?;
            let len = r
                .u16()
                .map_err(|_| malformed("extended parameters truncated"))?;
            r.take(usize::from(len))
                .map_err(|_| malformed("optional parameters overrun the message"))?
        } else {
            r.take(usize::from(opt_len))
                .map_err(|_| malformed("optional parameters overrun the message"))?
        };
        if !r.is_empty() {
            return Err(malformed("octets after the optional parameters"));
        }
        let mut params = Vec::new();
        let mut p = Reader::new(params_buf);
        while !p.is_empty() {
            let param_type = p
                .u8()
                .map_err(|_| malformed("parameter header truncated"))?;
            let len = if extended_params {
                p.u16()
            } else {
                p.u8().map(u16::from)
            }
            .map_err(|_| malformed("parameter header truncated"))?;
            let value = p
                .take(usize::from(len))
                .map_err(|_| malformed("parameter overruns the optional parameters"))?;
            params.push(match param_type {
                PARAM_CAPABILITIES => {
                    OptionalParameter::Capabilities(Capability::decode_list(value)?)
                }
                _ => OptionalParameter::Unknown {
                    param_type,
                    data: value.to_vec(),
                },
            });
        }
        Ok(Open {
            version,
            my_as,
            hold_time,
            bgp_id,
            params,
            extended_params,
        })
    }

    /// Appends the OPEN body. Parameters that do not fit the classic one-octet
    /// lengths switch the message to the RFC 9072 encoding.
    pub fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.version);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let mut values = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let mut v = Vec::new();
            let ty = match p {
                OptionalParameter::Capabilities(caps) => {
                    for c in caps {
                        c.encode(&mut v)?;
                    }
                    PARAM_CAPABILITIES
                }
                OptionalParameter::Unknown { param_type, data } => {
                    v.extend_from_slice(data);
                    *param_type
                }
            };
            values.push((ty, v));
        }
        let classic_len: usize = values.iter().map(|(_, v)| 2 + v.len()).sum();
        let extended =
            self.extended_params || classic_len > 255 || values.iter().any(|(_, v)| v.len() > 255);
        if extended {
            out.push(255);
            out.push(PARAM_EXTENDED);
            let total: usize = values.iter().map(|(_, v)| 3 + v.len()).sum();
            let total = u16::try_from(total)
                .map_err(|_| EncodeError::FieldTooLong("optional parameters"))?;
            out.extend_from_slice(&total.to_be_bytes());
            for (ty, v) in values {
                out.push(ty);
                let len = u16::try_from(v.len())
                    .map_err(|_| EncodeError::FieldTooLong("optional parameter"))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&v);
            }
        } else {
            out.push(classic_len as u8);
            for (ty, v) in values {
                out.push(ty);
                out.push(v.len() as u8);
                out.extend_from_slice(&v);
            }
        }
        Ok(())
    }
}
