//! What can be wrong with a BGP message, and what the receiver must do about it.
//!
//! Every malformed input becomes a [`WireError`]: a description of the fault
//! ([`ErrorKind`]), the action RFC 7606 (or RFC 4271 where 7606 is silent)
//! assigns to it ([`ErrorAction`]) and the NOTIFICATION that a session reset
//! would send. Errors whose action is weaker than a session reset (treat-as-withdraw,
//! attribute discard) are reported beside a successfully decoded UPDATE, so the
//! speaker can still withdraw the NLRI the message carried.

use std::fmt;

use super::AfiSafi;
use super::notification::Notification;

/// NOTIFICATION error codes (RFC 4271 §4.5, RFC 7313).
pub mod code {
    /// Message Header Error.
    pub const MESSAGE_HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN_MESSAGE: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE_MESSAGE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// ROUTE-REFRESH Message Error (RFC 7313).
    pub const ROUTE_REFRESH_MESSAGE: u8 = 7;
    /// Send Hold Timer Expired (RFC 9687).
    pub const SEND_HOLD_TIMER_EXPIRED: u8 = 8;
}

/// NOTIFICATION error subcodes, grouped by error code.
pub mod subcode {
    /// Message Header Error subcodes.
    pub mod header {
        /// Connection Not Synchronized (bad marker).
        pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
        /// Bad Message Length.
        pub const BAD_MESSAGE_LENGTH: u8 = 2;
        /// Bad Message Type.
        pub const BAD_MESSAGE_TYPE: u8 = 3;
    }
    /// OPEN Message Error subcodes.
    pub mod open {
        /// No specific subcode.
        pub const UNSPECIFIC: u8 = 0;
        /// Unsupported Version Number.
        pub const UNSUPPORTED_VERSION: u8 = 1;
        /// Bad Peer AS.
        pub const BAD_PEER_AS: u8 = 2;
        /// Bad BGP Identifier.
        pub const BAD_BGP_IDENTIFIER: u8 = 3;
        /// Unsupported Optional Parameter.
        pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
        /// Unacceptable Hold Time.
        pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
        /// Unsupported Capability (RFC 5492).
        pub const UNSUPPORTED_CAPABILITY: u8 = 7;
        /// Role Mismatch (RFC 9234).
        pub const ROLE_MISMATCH: u8 = 11;
    }
    /// UPDATE Message Error subcodes.
    pub mod update {
        /// Malformed Attribute List.
        pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
        /// Unrecognized Well-known Attribute.
        pub const UNRECOGNIZED_WELL_KNOWN: u8 = 2;
        /// Missing Well-known Attribute.
        pub const MISSING_WELL_KNOWN: u8 = 3;
        /// Attribute Flags Error.
        pub const ATTRIBUTE_FLAGS: u8 = 4;
        /// Attribute Length Error.
        pub const ATTRIBUTE_LENGTH: u8 = 5;
        /// Invalid ORIGIN Attribute.
        pub const INVALID_ORIGIN: u8 = 6;
        /// Invalid NEXT_HOP Attribute.
        pub const INVALID_NEXT_HOP: u8 = 8;
        /// Optional Attribute Error.
        pub const OPTIONAL_ATTRIBUTE: u8 = 9;
        /// Invalid Network Field.
        pub const INVALID_NETWORK_FIELD: u8 = 10;
        /// Malformed AS_PATH.
        pub const MALFORMED_AS_PATH: u8 = 11;
    }
    /// Cease subcodes (RFC 4486, RFC 8203, RFC 9003).
    pub mod cease {
        /// Maximum Number of Prefixes Reached.
        pub const MAX_PREFIXES: u8 = 1;
        /// Administrative Shutdown (may carry a shutdown communication).
        pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
        /// Peer De-configured.
        pub const PEER_DECONFIGURED: u8 = 3;
        /// Administrative Reset (may carry a shutdown communication).
        pub const ADMINISTRATIVE_RESET: u8 = 4;
        /// Connection Rejected.
        pub const CONNECTION_REJECTED: u8 = 5;
        /// Other Configuration Change.
        pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
        /// Connection Collision Resolution.
        pub const CONNECTION_COLLISION: u8 = 7;
        /// Out of Resources.
        pub const OUT_OF_RESOURCES: u8 = 8;
        /// Hard Reset (RFC 8538).
        pub const HARD_RESET: u8 = 9;
        /// BFD Down (RFC 9384).
        pub const BFD_DOWN: u8 = 10;
    }
    /// ROUTE-REFRESH Message Error subcodes (RFC 7313).
    pub mod route_refresh {
        /// Invalid Message Length.
        pub const INVALID_MESSAGE_LENGTH: u8 = 1;
    }
}

/// What the receiver of a malformed message must do (RFC 7606 §2, RFC 4760 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorAction {
    /// Send the NOTIFICATION and close the session.
    SessionReset,
    /// Stop using one address family on the session (RFC 4760 §7). A speaker
    /// that does not implement it falls back to a session reset.
    AfiSafiDisable(AfiSafi),
    /// Keep the session; treat every NLRI in the UPDATE as withdrawn.
    TreatAsWithdraw,
    /// Keep the session and the routes; drop only the offending attribute.
    AttributeDiscard,
}

impl ErrorAction {
    /// The stronger of two actions (RFC 7606 §3: the most severe one wins).
    pub fn max(self, other: ErrorAction) -> ErrorAction {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    fn severity(self) -> u8 {
        match self {
            ErrorAction::AttributeDiscard => 0,
            ErrorAction::TreatAsWithdraw => 1,
            ErrorAction::AfiSafiDisable(_) => 2,
            ErrorAction::SessionReset => 3,
        }
    }
}

impl fmt::Display for ErrorAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorAction::SessionReset => f.write_str("session reset"),
            ErrorAction::AfiSafiDisable(af) => write!(f, "disable {af}"),
            ErrorAction::TreatAsWithdraw => f.write_str("treat-as-withdraw"),
            ErrorAction::AttributeDiscard => f.write_str("attribute discard"),
        }
    }
}

/// The fault found in a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The 16-octet marker is not all ones.
    #[error("header marker is not all ones")]
    BadMarker,
    /// The header's length field is out of range for the message type or the session.
    #[error("bad message length {length} for {what}")]
    BadLength {
        /// The length field's value.
        length: u16,
        /// Which limit it broke.
        what: &'static str,
    },
    /// The message type is not one we know.
    #[error("unknown message type {0}")]
    BadType(u8),
    /// Fewer octets than the structure needs.
    #[error("{0} is truncated")]
    Truncated(&'static str),
    /// Octets left over after a structure that has a fixed size.
    #[error("{0} has {1} trailing octets")]
    Trailing(&'static str, usize),
    /// OPEN with a version other than 4.
    #[error("unsupported BGP version {0}")]
    UnsupportedVersion(u8),
    /// OPEN hold time of 1 or 2 seconds.
    #[error("unacceptable hold time {0} s (must be 0 or at least 3)")]
    UnacceptableHoldTime(u16),
    /// OPEN with BGP identifier 0.0.0.0.
    #[error("BGP identifier 0.0.0.0 is not allowed")]
    BadBgpIdentifier,
    /// A known capability whose value does not parse.
    #[error("malformed capability {code}: {reason}")]
    MalformedCapability {
        /// Capability code.
        code: u8,
        /// What was wrong.
        reason: &'static str,
    },
    /// A structural fault in an OPEN message.
    #[error("malformed OPEN: {0}")]
    MalformedOpen(&'static str),
    /// Withdrawn Routes Length or Total Path Attribute Length overruns the message.
    #[error("UPDATE {0} overruns the message")]
    UpdateLengthOverrun(&'static str),
    /// A prefix in the withdrawn routes or NLRI field does not parse.
    #[error("invalid prefix in {field}: {reason}")]
    InvalidPrefix {
        /// Which field held it.
        field: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// The attribute list itself is broken (an attribute header overruns it).
    #[error("malformed attribute list: {0}")]
    MalformedAttributeList(&'static str),
    /// Attribute flags that conflict with the attribute type.
    #[error("attribute {type_code} has wrong flags {flags:#04x}")]
    AttributeFlags {
        /// Attribute type code.
        type_code: u8,
        /// The flags received.
        flags: u8,
    },
    /// An attribute whose length is wrong for its type.
    #[error("attribute {type_code} has invalid length {length}")]
    AttributeLength {
        /// Attribute type code.
        type_code: u8,
        /// Its length.
        length: usize,
    },
    /// ORIGIN with an undefined value.
    #[error("invalid ORIGIN value {0}")]
    InvalidOrigin(u8),
    /// AS_PATH (or AS4_PATH) that does not parse.
    #[error("malformed {attr}: {reason}")]
    MalformedAsPath {
        /// `AS_PATH` or `AS4_PATH`.
        attr: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// A well-known mandatory attribute is missing from an UPDATE that carries NLRI.
    #[error("missing well-known attribute {0}")]
    MissingWellKnown(u8),
    /// A well-known attribute type we do not recognise.
    #[error("unrecognized well-known attribute {0}")]
    UnrecognizedWellKnown(u8),
    /// MP_REACH_NLRI or MP_UNREACH_NLRI appears more than once.
    #[error("attribute {0} appears more than once")]
    DuplicateMpAttribute(u8),
    /// Another attribute appears more than once (all but the first are discarded).
    #[error("attribute {0} appears more than once; later copies discarded")]
    DuplicateAttribute(u8),
    /// MP_REACH_NLRI / MP_UNREACH_NLRI that does not parse.
    #[error("malformed {attr} for {afi_safi}: {reason}")]
    MalformedMpAttribute {
        /// `MP_REACH_NLRI` or `MP_UNREACH_NLRI`.
        attr: &'static str,
        /// The family it announced.
        afi_safi: AfiSafi,
        /// What was wrong.
        reason: &'static str,
    },
    /// A next hop whose length does not fit the address family.
    #[error("next hop length {length} is invalid for {afi_safi}")]
    InvalidNextHopLength {
        /// The family.
        afi_safi: AfiSafi,
        /// Length received.
        length: usize,
    },
    /// A malformed attribute whose RFC assigns attribute discard (AS4_PATH etc.).
    #[error("malformed attribute {type_code}: {reason}")]
    MalformedOptional {
        /// Attribute type code.
        type_code: u8,
        /// What was wrong.
        reason: &'static str,
    },
    /// ROUTE-REFRESH whose length is wrong for its subtype (RFC 7313 §5).
    #[error("ROUTE-REFRESH subtype {subtype} has invalid length {length}")]
    RouteRefreshLength {
        /// The message subtype.
        subtype: u8,
        /// The body length.
        length: usize,
    },
}

/// A malformed message: what was wrong, what to do, and what to tell the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} ({action})")]
pub struct WireError {
    /// What was wrong.
    pub kind: ErrorKind,
    /// What the receiver must do.
    pub action: ErrorAction,
    /// The NOTIFICATION to send if the action resets the session (RFC 4271 §6).
    pub notification: Notification,
}

impl WireError {
    /// Builds an error with its action and NOTIFICATION.
    pub fn new(kind: ErrorKind, action: ErrorAction, code: u8, subcode: u8, data: Vec<u8>) -> Self {
        WireError {
            kind,
            action,
            notification: Notification {
                code,
                subcode,
                data,
            },
        }
    }

    pub(crate) fn header(kind: ErrorKind, subcode: u8, data: Vec<u8>) -> Self {
        Self::new(
            kind,
            ErrorAction::SessionReset,
            code::MESSAGE_HEADER,
            subcode,
            data,
        )
    }

    pub(crate) fn open(kind: ErrorKind, subcode: u8, data: Vec<u8>) -> Self {
        Self::new(
            kind,
            ErrorAction::SessionReset,
            code::OPEN_MESSAGE,
            subcode,
            data,
        )
    }

    pub(crate) fn update(kind: ErrorKind, action: ErrorAction, subcode: u8, data: Vec<u8>) -> Self {
        Self::new(kind, action, code::UPDATE_MESSAGE, subcode, data)
    }
}

/// Errors from encoding a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message would exceed the maximum size for the session.
    #[error("message of {length} octets exceeds the {max}-octet limit")]
    MessageTooLong {
        /// The length it would have.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// A field's value does not fit its length field.
    #[error("{0} is too long to encode")]
    FieldTooLong(&'static str),
}
