//! ROUTE-REFRESH messages (RFC 2918) with the Enhanced Route Refresh
//! subtypes (RFC 7313).

use super::AfiSafi;
use super::error::{ErrorAction, ErrorKind, WireError, code, subcode};

/// The Message Subtype octet (RFC 7313 §3.2; reserved in RFC 2918).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefreshSubtype {
    /// 0: a normal route refresh request.
    Request,
    /// 1: Beginning of Route Refresh.
    BeginOfRefresh,
    /// 2: End of Route Refresh.
    EndOfRefresh,
    /// Any other value; receivers ignore such messages (RFC 7313 §5).
    Reserved(u8),
}

impl RefreshSubtype {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => RefreshSubtype::Request,
            1 => RefreshSubtype::BeginOfRefresh,
            2 => RefreshSubtype::EndOfRefresh,
            v => RefreshSubtype::Reserved(v),
        }
    }

    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            RefreshSubtype::Request => 0,
            RefreshSubtype::BeginOfRefresh => 1,
            RefreshSubtype::EndOfRefresh => 2,
            RefreshSubtype::Reserved(v) => v,
        }
    }
}

/// A ROUTE-REFRESH message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    /// The family to refresh.
    pub afi_safi: AfiSafi,
    /// Request, BoRR or EoRR.
    pub subtype: RefreshSubtype,
    /// Octets after the fixed part: Outbound Route Filter entries (RFC 5291)
    /// in a request; empty otherwise.
    pub orf: Vec<u8>,
}

impl RouteRefresh {
    /// A plain refresh request for a family.
    pub fn request(afi_safi: AfiSafi) -> Self {
        RouteRefresh {
            afi_safi,
            subtype: RefreshSubtype::Request,
            orf: Vec::new(),
        }
    }

    /// Decodes a ROUTE-REFRESH body. `whole` is the complete message, which
    /// RFC 7313 §5 puts in the NOTIFICATION data on a length error.
    pub(crate) fn decode_body(body: &[u8], whole: &[u8]) -> Result<RouteRefresh, WireError> {
        let length_error = |subtype| {
            WireError::new(
                ErrorKind::RouteRefreshLength {
                    subtype,
                    length: body.len(),
                },
                ErrorAction::SessionReset,
                code::ROUTE_REFRESH_MESSAGE,
                subcode::route_refresh::INVALID_MESSAGE_LENGTH,
                whole.to_vec(),
            )
        };
        let [a, b, sub, safi, rest @ ..] = body else {
            return Err(length_error(body.get(2).copied().unwrap_or(0)));
        };
        let subtype = RefreshSubtype::from_u8(*sub);
        // Only a request may carry ORF entries; BoRR/EoRR are exactly 4 octets.
        if !rest.is_empty() && subtype != RefreshSubtype::Request {
            return Err(length_error(*sub));
        }
        Ok(RouteRefresh {
            afi_safi: AfiSafi::new(u16::from_be_bytes([*a, *b]), *safi),
            subtype,
            orf: rest.to_vec(),
        })
    }

    /// Appends the body.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.afi_safi.afi.to_be_bytes());
        out.push(self.subtype.to_u8());
        out.push(self.afi_safi.safi);
        out.extend_from_slice(&self.orf);
    }
}
