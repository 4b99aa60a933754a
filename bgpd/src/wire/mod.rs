//! The BGP-4 wire format: decoding and encoding of every message a modern speaker meets.
//!
//! Decoding takes a [`WireContext`] (what the session negotiated: 4-octet AS,
//! ADD-PATH per family in the direction being decoded, extended messages) and never
//! panics: a malformed message is a [`WireError`] carrying the RFC 7606 action
//! and the NOTIFICATION to send. Encoding with the same context is the exact
//! inverse of decoding: `encode(decode(bytes)) == bytes` for every message this
//! module accepts without problems, including attribute order, attribute flags
//! (the Extended Length bit too) and how capabilities are grouped in the OPEN.
//!
//! Modules follow the message structure: [`message`] (header and the [`Message`]
//! enum), [`open`] and [`capability`], [`update`] with [`attr`] and [`nlri`],
//! [`notification`] and [`route_refresh`].

pub mod attr;
pub mod capability;
pub mod error;
pub mod message;
pub mod nlri;
pub mod notification;
pub mod open;
pub mod route_refresh;
pub mod update;

pub(crate) mod reader;

use std::fmt;

pub use attr::{AsPath, AsSegment, AttrValue, Origin, PathAttribute};
pub use capability::Capability;
pub use error::{EncodeError, ErrorAction, ErrorKind, WireError};
pub use message::{Decoded, Message};
pub use nlri::Nlri;
pub use notification::Notification;
pub use open::Open;
pub use route_refresh::RouteRefresh;
pub use update::Update;

/// Largest message without the extended message capability (RFC 4271).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Largest message when extended messages are negotiated (RFC 8654).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;
/// The fixed BGP header: marker, length, type.
pub const HEADER_LEN: usize = 19;
/// AS_TRANS (RFC 6793): stands in for a 4-octet ASN towards 2-octet speakers.
pub const AS_TRANS: u32 = 23456;

/// An address family and subsequent address family (RFC 4760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AfiSafi {
    /// Address Family Identifier (IANA): 1 IPv4, 2 IPv6.
    pub afi: u16,
    /// Subsequent Address Family Identifier: 1 unicast, 2 multicast, 128 MPLS VPN...
    pub safi: u8,
}

impl AfiSafi {
    /// IPv4 unicast.
    pub const IPV4_UNICAST: AfiSafi = AfiSafi {
        afi: AFI_IPV4,
        safi: SAFI_UNICAST,
    };
    /// IPv6 unicast.
    pub const IPV6_UNICAST: AfiSafi = AfiSafi {
        afi: AFI_IPV6,
        safi: SAFI_UNICAST,
    };

    /// Builds a family from its numbers.
    pub const fn new(afi: u16, safi: u8) -> Self {
        AfiSafi { afi, safi }
    }
}

/// AFI for IPv4.
pub const AFI_IPV4: u16 = 1;
/// AFI for IPv6.
pub const AFI_IPV6: u16 = 2;
/// SAFI for unicast.
pub const SAFI_UNICAST: u8 = 1;

impl fmt::Display for AfiSafi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.afi, self.safi) {
            (AFI_IPV4, SAFI_UNICAST) => f.write_str("ipv4-unicast"),
            (AFI_IPV6, SAFI_UNICAST) => f.write_str("ipv6-unicast"),
            (AFI_IPV4, 2) => f.write_str("ipv4-multicast"),
            (AFI_IPV6, 2) => f.write_str("ipv6-multicast"),
            (AFI_IPV4, 128) => f.write_str("ipv4-vpn"),
            (AFI_IPV6, 128) => f.write_str("ipv6-vpn"),
            (afi, safi) => write!(f, "afi {afi} safi {safi}"),
        }
    }
}

/// What a session negotiated that changes how messages are laid out on the wire.
///
/// A session holds two: one for what it receives and one for what it sends,
/// because ADD-PATH is negotiated per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireContext {
    /// Both sides sent the 4-octet AS capability (RFC 6793): AS_PATH and
    /// AGGREGATOR carry 4-octet ASNs.
    pub four_octet_as: bool,
    /// Both sides sent the extended message capability (RFC 8654): UPDATE and
    /// ROUTE-REFRESH may be up to 65535 octets.
    pub extended_message: bool,
    /// IPv4 unicast NLRI carry a path identifier in this direction (RFC 7911).
    pub add_path_ipv4: bool,
    /// IPv6 unicast NLRI carry a path identifier in this direction (RFC 7911).
    pub add_path_ipv6: bool,
}

impl WireContext {
    /// The context of a 4-octet-AS session without ADD-PATH or extended messages,
    /// which is what most modern peers negotiate.
    pub const fn modern() -> Self {
        WireContext {
            four_octet_as: true,
            extended_message: false,
            add_path_ipv4: false,
            add_path_ipv6: false,
        }
    }

    /// The context for messages that `sender` sends to `receiver`, from the two
    /// OPENs of a session: 4-octet AS and extended messages when both offered
    /// them, ADD-PATH for a family when the sender offered to send and the
    /// receiver to receive (RFC 7911 §4). A session uses
    /// `negotiated(remote, local)` to decode and `negotiated(local, remote)` to encode.
    pub fn negotiated(sender: &Open, receiver: &Open) -> Self {
        use capability::AddPathFamily;
        let both = |f: &dyn Fn(&Capability) -> bool| {
            sender.capabilities().any(f) && receiver.capabilities().any(f)
        };
        let offers = |o: &Open, af: AfiSafi, bit: u8| {
            o.capabilities().any(|c| match c {
                Capability::AddPath(fams) => fams
                    .iter()
                    .any(|f| f.afi_safi == af && f.send_receive & bit != 0),
                _ => false,
            })
        };
        let add_path = |af| {
            offers(sender, af, AddPathFamily::SEND) && offers(receiver, af, AddPathFamily::RECEIVE)
        };
        WireContext {
            four_octet_as: both(&|c| matches!(c, Capability::FourOctetAs(_))),
            extended_message: both(&|c| matches!(c, Capability::ExtendedMessage)),
            add_path_ipv4: add_path(AfiSafi::IPV4_UNICAST),
            add_path_ipv6: add_path(AfiSafi::IPV6_UNICAST),
        }
    }

    /// Whether NLRI of this family carry path identifiers. Families other than
    /// IPv4 and IPv6 unicast are kept opaque, so the question does not arise.
    pub fn add_path(&self, af: AfiSafi) -> bool {
        match af {
            AfiSafi::IPV4_UNICAST => self.add_path_ipv4,
            AfiSafi::IPV6_UNICAST => self.add_path_ipv6,
            _ => false,
        }
    }

    /// The largest UPDATE this session may carry.
    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}
