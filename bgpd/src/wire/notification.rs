//! NOTIFICATION messages (RFC 4271 §4.5), with shutdown communication
//! (RFC 8203, RFC 9003).

use std::fmt;

use super::error::{code, subcode};

/// A NOTIFICATION message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Diagnostic data, as the code prescribes.
    pub data: Vec<u8>,
}

/// Whether a Cease of this subcode is, under RFC 8538 §5, a Hard Reset:
/// it ends the session for good, where the others are a restart.
pub fn is_hard_cease(sub: u8) -> bool {
    matches!(
        sub,
        subcode::cease::MAX_PREFIXES
            | subcode::cease::ADMINISTRATIVE_SHUTDOWN
            | subcode::cease::PEER_DECONFIGURED
            | subcode::cease::HARD_RESET
            // BFD saw the forwarding path fail: the routes must go, not
            // wait as a restart's (docs/bfd.md).
            | subcode::cease::BFD_DOWN
    )
}

/// Longest shutdown communication allowed (RFC 9003 §2).
pub const MAX_SHUTDOWN_COMMUNICATION: usize = 255;

impl Notification {
    /// A notification with no data.
    pub fn new(code: u8, subcode: u8) -> Self {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    /// Cease / Administrative Shutdown with a shutdown communication (RFC 9003).
    /// The message is cut, at a character boundary, to 255 octets.
    pub fn administrative_shutdown(message: &str) -> Self {
        Self::with_communication(subcode::cease::ADMINISTRATIVE_SHUTDOWN, message)
    }

    /// Cease / Administrative Reset with a shutdown communication (RFC 9003).
    pub fn administrative_reset(message: &str) -> Self {
        Self::with_communication(subcode::cease::ADMINISTRATIVE_RESET, message)
    }

    fn with_communication(sub: u8, message: &str) -> Self {
        let mut end = message.len().min(MAX_SHUTDOWN_COMMUNICATION);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let mut data = Vec::with_capacity(end + 1);
        data.push(end as u8);
        data.extend_from_slice(&message.as_bytes()[..end]);
        Notification {
            code: code::CEASE,
            subcode: sub,
            data,
        }
    }

    /// Cease / Hard Reset (RFC 8538 §3) carrying `inner`: its code and
    /// subcode, then its data.
    pub fn hard_reset(inner: &Notification) -> Self {
        let mut data = Vec::with_capacity(inner.data.len() + 2);
        data.extend([inner.code, inner.subcode]);
        data.extend_from_slice(&inner.data);
        Notification {
            code: code::CEASE,
            subcode: subcode::cease::HARD_RESET,
            data,
        }
    }

    /// Whether, between speakers that both set graceful restart's N bit
    /// (RFC 8538), this NOTIFICATION ends the session for good: a Hard
    /// Reset, or a Cease that RFC 8538 §5 says to send as one (maximum
    /// prefixes, administrative shutdown, peer de-configured). Any other
    /// NOTIFICATION is then a restart: the routes are kept, stale.
    pub fn is_hard(&self) -> bool {
        self.code == code::CEASE && is_hard_cease(self.subcode)
    }

    /// The shutdown communication of a Cease / Administrative Shutdown or Reset,
    /// if it carries a well-formed one (RFC 9003 §2: length octet, then UTF-8).
    pub fn shutdown_communication(&self) -> Option<&str> {
        if self.code != code::CEASE
            || !matches!(
                self.subcode,
                subcode::cease::ADMINISTRATIVE_SHUTDOWN | subcode::cease::ADMINISTRATIVE_RESET
            )
        {
            return None;
        }
        let (&len, text) = self.data.split_first()?;
        let text = text.get(..usize::from(len))?;
        std::str::from_utf8(text).ok()
    }

    /// Decodes a NOTIFICATION body.
    pub(crate) fn decode_body(body: &[u8]) -> Option<Notification> {
        let [code, subcode, data @ ..] = body else {
            return None;
        };
        Some(Notification {
            code: *code,
            subcode: *subcode,
            data: data.to_vec(),
        })
    }

    /// Appends the body.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(self.code);
        out.push(self.subcode);
        out.extend_from_slice(&self.data);
    }

    /// The RFC name of the code and subcode.
    pub fn describe(&self) -> String {
        let c = match self.code {
            code::MESSAGE_HEADER => "Message Header Error",
            code::OPEN_MESSAGE => "OPEN Message Error",
            code::UPDATE_MESSAGE => "UPDATE Message Error",
            code::HOLD_TIMER_EXPIRED => "Hold Timer Expired",
            code::FSM => "Finite State Machine Error",
            code::CEASE => "Cease",
            code::ROUTE_REFRESH_MESSAGE => "ROUTE-REFRESH Message Error",
            code::SEND_HOLD_TIMER_EXPIRED => "Send Hold Timer Expired",
            _ => "unknown error code",
        };
        let s = match (self.code, self.subcode) {
            (_, 0) => None,
            (code::MESSAGE_HEADER, 1) => Some("Connection Not Synchronized"),
            (code::MESSAGE_HEADER, 2) => Some("Bad Message Length"),
            (code::MESSAGE_HEADER, 3) => Some("Bad Message Type"),
            (code::OPEN_MESSAGE, 1) => Some("Unsupported Version Number"),
            (code::OPEN_MESSAGE, 2) => Some("Bad Peer AS"),
            (code::OPEN_MESSAGE, 3) => Some("Bad BGP Identifier"),
            (code::OPEN_MESSAGE, 4) => Some("Unsupported Optional Parameter"),
            (code::OPEN_MESSAGE, 6) => Some("Unacceptable Hold Time"),
            (code::OPEN_MESSAGE, 7) => Some("Unsupported Capability"),
            (code::OPEN_MESSAGE, 11) => Some("Role Mismatch"),
            (code::UPDATE_MESSAGE, 1) => Some("Malformed Attribute List"),
            (code::UPDATE_MESSAGE, 2) => Some("Unrecognized Well-known Attribute"),
            (code::UPDATE_MESSAGE, 3) => Some("Missing Well-known Attribute"),
            (code::UPDATE_MESSAGE, 4) => Some("Attribute Flags Error"),
            (code::UPDATE_MESSAGE, 5) => Some("Attribute Length Error"),
            (code::UPDATE_MESSAGE, 6) => Some("Invalid ORIGIN Attribute"),
            (code::UPDATE_MESSAGE, 8) => Some("Invalid NEXT_HOP Attribute"),
            (code::UPDATE_MESSAGE, 9) => Some("Optional Attribute Error"),
            (code::UPDATE_MESSAGE, 10) => Some("Invalid Network Field"),
            (code::UPDATE_MESSAGE, 11) => Some("Malformed AS_PATH"),
            (code::CEASE, 1) => Some("Maximum Number of Prefixes Reached"),
            (code::CEASE, 2) => Some("Administrative Shutdown"),
            (code::CEASE, 3) => Some("Peer De-configured"),
            (code::CEASE, 4) => Some("Administrative Reset"),
            (code::CEASE, 5) => Some("Connection Rejected"),
            (code::CEASE, 6) => Some("Other Configuration Change"),
            (code::CEASE, 7) => Some("Connection Collision Resolution"),
            (code::CEASE, 8) => Some("Out of Resources"),
            (code::CEASE, 9) => Some("Hard Reset"),
            (code::CEASE, 10) => Some("BFD Down"),
            (code::ROUTE_REFRESH_MESSAGE, 1) => Some("Invalid Message Length"),
            _ => Some("unknown subcode"),
        };
        match s {
            Some(s) => format!("{c} / {s}"),
            None => c.to_string(),
        }
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}/{})", self.describe(), self.code, self.subcode)?;
        if let Some(text) = self.shutdown_communication() {
            write!(f, ": {text:?}")?;
        }
        // A Hard Reset says what it stands for (RFC 8538 §3).
        if self.code == code::CEASE
            && self.subcode == subcode::cease::HARD_RESET
            && let [c, s, rest @ ..] = self.data.as_slice()
        {
            let inner = Notification {
                code: *c,
                subcode: *s,
                data: rest.to_vec(),
            };
            write!(f, " for {inner}")?;
        }
        Ok(())
    }
}
