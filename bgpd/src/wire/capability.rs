//! Capabilities advertised in OPEN (RFC 5492) and the ones petrel understands.

use super::error::{ErrorKind, WireError, subcode};
use super::reader::Reader;
use super::{AfiSafi, EncodeError};

/// Capability codes (IANA "Capability Codes").
pub mod code {
    /// Multiprotocol Extensions (RFC 4760).
    pub const MULTIPROTOCOL: u8 = 1;
    /// Route Refresh (RFC 2918).
    pub const ROUTE_REFRESH: u8 = 2;
    /// Extended Next Hop Encoding (RFC 8950).
    pub const EXTENDED_NEXT_HOP: u8 = 5;
    /// BGP Extended Message (RFC 8654).
    pub const EXTENDED_MESSAGE: u8 = 6;
    /// Graceful Restart (RFC 4724).
    pub const GRACEFUL_RESTART: u8 = 64;
    /// Support for 4-octet AS numbers (RFC 6793).
    pub const FOUR_OCTET_AS: u8 = 65;
    /// ADD-PATH (RFC 7911).
    pub const ADD_PATH: u8 = 69;
    /// Enhanced Route Refresh (RFC 7313).
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
    /// Long-Lived Graceful Restart (RFC 9494).
    pub const LONG_LIVED_GRACEFUL_RESTART: u8 = 71;
    /// FQDN (draft-walton-bgp-hostname-capability).
    pub const FQDN: u8 = 73;
}

/// One capability.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Multiprotocol Extensions for a family.
    Multiprotocol(AfiSafi),
    /// Route Refresh.
    RouteRefresh,
    /// Enhanced Route Refresh.
    EnhancedRouteRefresh,
    /// 4-octet AS support, with the speaker's real ASN.
    FourOctetAs(u32),
    /// Graceful Restart.
    GracefulRestart(GracefulRestart),
    /// Long-Lived Graceful Restart, per family.
    LongLivedGracefulRestart(Vec<LlgrFamily>),
    /// ADD-PATH, per family.
    AddPath(Vec<AddPathFamily>),
    /// Extended Next Hop Encoding, per family.
    ExtendedNextHop(Vec<ExtendedNextHopFamily>),
    /// BGP Extended Message.
    ExtendedMessage,
    /// The speaker's host and domain name.
    Fqdn {
        /// Host name octets (normally ASCII).
        hostname: Vec<u8>,
        /// Domain name octets (normally ASCII, often empty).
        domain: Vec<u8>,
    },
    /// A capability kept as bytes: unknown, or known but not interpreted here.
    Unknown {
        /// Capability code.
        code: u8,
        /// Value octets.
        data: Vec<u8>,
    },
}

/// Graceful Restart capability value (RFC 4724 §3, RFC 8538).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GracefulRestart {
    /// The four Restart Flags bits, in the high nibble as on the wire.
    pub flags: u8,
    /// Restart Time in seconds (12 bits).
    pub restart_time: u16,
    /// Per-family entries.
    pub families: Vec<GrFamily>,
}

impl GracefulRestart {
    /// Restart State (R): the speaker has restarted.
    pub const RESTART_STATE: u8 = 0x80;
    /// Graceful Notification (N) support (RFC 8538).
    pub const NOTIFICATION: u8 = 0x40;

    /// Whether the R bit is set.
    pub fn restart_state(&self) -> bool {
        self.flags & Self::RESTART_STATE != 0
    }

    /// Whether the N bit is set.
    pub fn notification(&self) -> bool {
        self.flags & Self::NOTIFICATION != 0
    }
}

/// One family in the Graceful Restart capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrFamily {
    /// The family.
    pub afi_safi: AfiSafi,
    /// Flags for Address Family; bit 0x80 is F (forwarding state preserved).
    pub flags: u8,
}

impl GrFamily {
    /// The F bit.
    pub const FORWARDING_PRESERVED: u8 = 0x80;

    /// Whether forwarding state was preserved across the restart.
    pub fn forwarding_preserved(&self) -> bool {
        self.flags & Self::FORWARDING_PRESERVED != 0
    }
}

/// One family in the Long-Lived Graceful Restart capability (RFC 9494 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LlgrFamily {
    /// The family.
    pub afi_safi: AfiSafi,
    /// Flags; bit 0x80 is F.
    pub flags: u8,
    /// Long-lived stale time in seconds (24 bits).
    pub stale_time: u32,
}

/// ADD-PATH direction (RFC 7911 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddPathFamily {
    /// The family.
    pub afi_safi: AfiSafi,
    /// Send/Receive: 1 receive, 2 send, 3 both (other values are kept but mean nothing).
    pub send_receive: u8,
}

impl AddPathFamily {
    /// Receive bit.
    pub const RECEIVE: u8 = 1;
    /// Send bit.
    pub const SEND: u8 = 2;

    /// Whether the speaker can receive multiple paths.
    pub fn receive(&self) -> bool {
        self.send_receive & Self::RECEIVE != 0
    }

    /// Whether the speaker can send multiple paths.
    pub fn send(&self) -> bool {
        self.send_receive & Self::SEND != 0
    }
}

/// One tuple of the Extended Next Hop Encoding capability (RFC 8950 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExtendedNextHopFamily {
    /// NLRI AFI.
    pub nlri_afi: u16,
    /// NLRI SAFI (two octets here).
    pub nlri_safi: u16,
    /// AFI of the next hop.
    pub next_hop_afi: u16,
}

impl Capability {
    /// The capability code.
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol(_) => code::MULTIPROTOCOL,
            Capability::RouteRefresh => code::ROUTE_REFRESH,
            Capability::EnhancedRouteRefresh => code::ENHANCED_ROUTE_REFRESH,
            Capability::FourOctetAs(_) => code::FOUR_OCTET_AS,
            Capability::GracefulRestart(_) => code::GRACEFUL_RESTART,
            Capability::LongLivedGracefulRestart(_) => code::LONG_LIVED_GRACEFUL_RESTART,
            Capability::AddPath(_) => code::ADD_PATH,
            Capability::ExtendedNextHop(_) => code::EXTENDED_NEXT_HOP,
            Capability::ExtendedMessage => code::EXTENDED_MESSAGE,
            Capability::Fqdn { .. } => code::FQDN,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// A short name for logs and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Capability::Multiprotocol(_) => "multiprotocol",
            Capability::RouteRefresh => "route-refresh",
            Capability::EnhancedRouteRefresh => "enhanced-route-refresh",
            Capability::FourOctetAs(_) => "four-octet-as",
            Capability::GracefulRestart(_) => "graceful-restart",
            Capability::LongLivedGracefulRestart(_) => "long-lived-graceful-restart",
            Capability::AddPath(_) => "add-path",
            Capability::ExtendedNextHop(_) => "extended-next-hop",
            Capability::ExtendedMessage => "extended-message",
            Capability::Fqdn { .. } => "fqdn",
            Capability::Unknown { .. } => "unknown",
        }
    }

    /// Decodes a sequence of capabilities (the value of one Capabilities
    /// optional parameter).
    pub(crate) fn decode_list(buf: &[u8]) -> Result<Vec<Capability>, WireError> {
        let mut r = Reader::new(buf);
        let mut caps = Vec::new();
        while !r.is_empty() {
            let (Ok(code), Ok(len)) = (r.u8(), r.u8()) else {
                return Err(malformed(0, "capability header truncated"));
            };
            let value = r
                .take(usize::from(len))
                .map_err(|_| malformed(code, "capability overruns the optional parameter"))?;
            caps.push(Self::decode_one(code, value)?);
        }
        Ok(caps)
    }

    fn decode_one(c: u8, value: &[u8]) -> Result<Capability, WireError> {
        let mut r = Reader::new(value);
        let truncated = |_| malformed(c, "value truncated");
        let cap = match c {
            code::MULTIPROTOCOL => {
                let afi = r.u16().map_err(truncated)?;
                r.u8().map_err(truncated)?; // reserved
                let safi = r.u8().map_err(truncated)?;
                Capability::Multiprotocol(AfiSafi::new(afi, safi))
            }
            code::ROUTE_REFRESH => Capability::RouteRefresh,
            code::ENHANCED_ROUTE_REFRESH => Capability::EnhancedRouteRefresh,
            code::EXTENDED_MESSAGE => Capability::ExtendedMessage,
            code::FOUR_OCTET_AS => Capability::FourOctetAs(r.u32().map_err(truncated)?),
            code::GRACEFUL_RESTART => {
                let head = r.u16().map_err(truncated)?;
                let mut families = Vec::new();
                while !r.is_empty() {
                    let afi = r.u16().map_err(truncated)?;
                    let safi = r.u8().map_err(truncated)?;
                    let flags = r.u8().map_err(truncated)?;
                    families.push(GrFamily {
                        afi_safi: AfiSafi::new(afi, safi),
                        flags,
                    });
                }
                Capability::GracefulRestart(GracefulRestart {
                    flags: (head >> 8) as u8 & 0xF0,
                    restart_time: head & 0x0FFF,
                    families,
                })
            }
            code::LONG_LIVED_GRACEFUL_RESTART => {
                let mut families = Vec::new();
                while !r.is_empty() {
                    let afi = r.u16().map_err(truncated)?;
                    let safi = r.u8().map_err(truncated)?;
                    let flags = r.u8().map_err(truncated)?;
                    let stale_time = r.u24().map_err(truncated)?;
                    families.push(LlgrFamily {
                        afi_safi: AfiSafi::new(afi, safi),
                        flags,
                        stale_time,
                    });
                }
                Capability::LongLivedGracefulRestart(families)
            }
            code::ADD_PATH => {
                let mut families = Vec::new();
                while !r.is_empty() {
                    let afi = r.u16().map_err(truncated)?;
                    let safi = r.u8().map_err(truncated)?;
                    let send_receive = r.u8().map_err(truncated)?;
                    families.push(AddPathFamily {
                        afi_safi: AfiSafi::new(afi, safi),
                        send_receive,
                    });
                }
                Capability::AddPath(families)
            }
            code::EXTENDED_NEXT_HOP => {
                let mut families = Vec::new();
                while !r.is_empty() {
                    families.push(ExtendedNextHopFamily {
                        nlri_afi: r.u16().map_err(truncated)?,
                        nlri_safi: r.u16().map_err(truncated)?,
                        next_hop_afi: r.u16().map_err(truncated)?,
                    });
                }
                Capability::ExtendedNextHop(families)
            }
            code::FQDN => {
                let n = r.u8().map_err(truncated)?;
                let hostname = r.take(usize::from(n)).map_err(truncated)?.to_vec();
                let n = r.u8().map_err(truncated)?;
                let domain = r.take(usize::from(n)).map_err(truncated)?.to_vec();
                Capability::Fqdn { hostname, domain }
            }
            _ => {
                return Ok(Capability::Unknown {
                    code: c,
                    data: value.to_vec(),
                });
            }
        };
        // Fixed-size capabilities with extra octets, or an odd per-family list,
        // are malformed: guessing would misread what the peer meant.
        if !r.is_empty() {
            return Err(malformed(c, "unexpected trailing octets"));
        }
        if matches!(cap, Capability::Multiprotocol(_)) && value.get(2) != Some(&0) {
            // The reserved octet is ignored on receipt (RFC 4760 §8) but must
            // survive a round trip, so keep such a capability as bytes.
            return Ok(Capability::Unknown {
                code: c,
                data: value.to_vec(),
            });
        }
        Ok(cap)
    }

    /// Appends the capability (code, length, value).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.code());
        let at = out.len();
        out.push(0);
        match self {
            Capability::Multiprotocol(af) => {
                out.extend_from_slice(&af.afi.to_be_bytes());
                out.push(0);
                out.push(af.safi);
            }
            Capability::RouteRefresh
            | Capability::EnhancedRouteRefresh
            | Capability::ExtendedMessage => {}
            Capability::FourOctetAs(asn) => out.extend_from_slice(&asn.to_be_bytes()),
            Capability::GracefulRestart(gr) => {
                let head = (u16::from(gr.flags & 0xF0) << 8) | (gr.restart_time & 0x0FFF);
                out.extend_from_slice(&head.to_be_bytes());
                for f in &gr.families {
                    out.extend_from_slice(&f.afi_safi.afi.to_be_bytes());
                    out.push(f.afi_safi.safi);
                    out.push(f.flags);
                }
            }
            Capability::LongLivedGracefulRestart(fams) => {
                for f in fams {
                    out.extend_from_slice(&f.afi_safi.afi.to_be_bytes());
                    out.push(f.afi_safi.safi);
                    out.push(f.flags);
                    out.extend_from_slice(&f.stale_time.to_be_bytes()[1..]);
                }
            }
            Capability::AddPath(fams) => {
                for f in fams {
                    out.extend_from_slice(&f.afi_safi.afi.to_be_bytes());
                    out.push(f.afi_safi.safi);
                    out.push(f.send_receive);
                }
            }
            Capability::ExtendedNextHop(fams) => {
                for f in fams {
                    out.extend_from_slice(&f.nlri_afi.to_be_bytes());
                    out.extend_from_slice(&f.nlri_safi.to_be_bytes());
                    out.extend_from_slice(&f.next_hop_afi.to_be_bytes());
                }
            }
            Capability::Fqdn { hostname, domain } => {
                for part in [hostname, domain] {
                    out.push(
                        u8::try_from(part.len())
                            .map_err(|_| EncodeError::FieldTooLong("FQDN name"))?,
                    );
                    out.extend_from_slice(part);
                }
            }
            Capability::Unknown { data, .. } => out.extend_from_slice(data),
        }
        out[at] = u8::try_from(out.len() - at - 1)
            .map_err(|_| EncodeError::FieldTooLong("capability"))?;
        Ok(())
    }
}

fn malformed(code: u8, reason: &'static str) -> WireError {
    WireError::open(
        ErrorKind::MalformedCapability { code, reason },
        subcode::open::UNSPECIFIC,
        Vec::new(),
    )
}
