//! The message header (RFC 4271 §4.1) and the [`Message`] enum.

use super::error::{ErrorKind, WireError, subcode};
use super::notification::Notification;
use super::open::Open;
use super::route_refresh::RouteRefresh;
use super::update::Update;
use super::{EncodeError, HEADER_LEN, MAX_MESSAGE_LEN, WireContext};

/// Message type codes.
pub mod msg_type {
    /// OPEN.
    pub const OPEN: u8 = 1;
    /// UPDATE.
    pub const UPDATE: u8 = 2;
    /// NOTIFICATION.
    pub const NOTIFICATION: u8 = 3;
    /// KEEPALIVE.
    pub const KEEPALIVE: u8 = 4;
    /// ROUTE-REFRESH (RFC 2918).
    pub const ROUTE_REFRESH: u8 = 5;
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

/// A decoded message and the RFC 7606 findings that did not prevent decoding
/// (treat-as-withdraw, attribute discard); empty for a clean message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The message.
    pub message: Message,
    /// Problems the receiver must act on without resetting the session.
    pub problems: Vec<WireError>,
}

impl Decoded {
    /// The strongest action the problems call for (RFC 7606 §3: when several
    /// attributes are malformed, the most severe approach wins), if any.
    pub fn action(&self) -> Option<super::ErrorAction> {
        self.problems
            .iter()
            .map(|p| p.action)
            .reduce(super::ErrorAction::max)
    }

    /// Whether the UPDATE's routes must be treated as withdrawn.
    pub fn treat_as_withdraw(&self) -> bool {
        self.action() == Some(super::ErrorAction::TreatAsWithdraw)
    }
}

impl Message {
    /// The message type code.
    pub fn type_code(&self) -> u8 {
        match self {
            Message::Open(_) => msg_type::OPEN,
            Message::Update(_) => msg_type::UPDATE,
            Message::Notification(_) => msg_type::NOTIFICATION,
            Message::Keepalive => msg_type::KEEPALIVE,
            Message::RouteRefresh(_) => msg_type::ROUTE_REFRESH,
        }
    }

    /// The type's name, for logs and JSON.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Open(_) => "OPEN",
            Message::Update(_) => "UPDATE",
            Message::Notification(_) => "NOTIFICATION",
            Message::Keepalive => "KEEPALIVE",
            Message::RouteRefresh(_) => "ROUTE-REFRESH",
        }
    }

    /// Decodes exactly one message, header included, from `buf`.
    pub fn decode(buf: &[u8], ctx: &WireContext) -> Result<Decoded, WireError> {
        let Some(len) = frame_len(buf, ctx)? else {
            return Err(WireError::header(
                ErrorKind::Truncated("message"),
                subcode::header::BAD_MESSAGE_LENGTH,
                buf.get(16..18).map(<[u8]>::to_vec).unwrap_or_default(),
            ));
        };
        if len != buf.len() {
            return Err(WireError::header(
                ErrorKind::Trailing("message", buf.len() - len),
                subcode::header::BAD_MESSAGE_LENGTH,
                buf[16..18].to_vec(),
            ));
        }
        let body = &buf[HEADER_LEN..];
        let mut problems = Vec::new();
        let message = match buf[18] {
            msg_type::OPEN => Message::Open(Open::decode_body(body)?),
            msg_type::UPDATE => Message::Update(Update::decode_body(body, ctx, &mut problems)?),
            msg_type::NOTIFICATION => Message::Notification(
                Notification::decode_body(body).ok_or_else(|| bad_length(buf, "NOTIFICATION"))?,
            ),
            msg_type::KEEPALIVE => Message::Keepalive,
            msg_type::ROUTE_REFRESH => Message::RouteRefresh(RouteRefresh::decode_body(body, buf)?),
            t => {
                return Err(WireError::header(
                    ErrorKind::BadType(t),
                    subcode::header::BAD_MESSAGE_TYPE,
                    vec![t],
                ));
            }
        };
        Ok(Decoded { message, problems })
    }

    /// Appends the whole message, header included.
    pub fn encode(&self, ctx: &WireContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0xFF; 16]);
        out.extend_from_slice(&[0, 0, self.type_code()]);
        match self {
            Message::Open(o) => o.encode_body(out)?,
            Message::Update(u) => u.encode_body(ctx, out)?,
            Message::Notification(n) => n.encode_body(out),
            Message::Keepalive => {}
            Message::RouteRefresh(r) => r.encode_body(out),
        }
        let len = out.len() - start;
        let max = max_len(self.type_code(), ctx);
        if len > max {
            out.truncate(start);
            return Err(EncodeError::MessageTooLong { length: len, max });
        }
        out[start + 16..start + 18].copy_from_slice(&(len as u16).to_be_bytes());
        Ok(())
    }

    /// The whole message as a new buffer.
    pub fn to_bytes(&self, ctx: &WireContext) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(ctx, &mut out)?;
        Ok(out)
    }
}

/// OPEN and KEEPALIVE stay within 4096 octets even with extended messages (RFC 8654 §4).
fn max_len(ty: u8, ctx: &WireContext) -> usize {
    match ty {
        msg_type::OPEN | msg_type::KEEPALIVE => MAX_MESSAGE_LEN,
        _ => ctx.max_message_len(),
    }
}

fn bad_length(buf: &[u8], what: &'static str) -> WireError {
    let len = u16::from_be_bytes([buf[16], buf[17]]);
    WireError::header(
        ErrorKind::BadLength { length: len, what },
        subcode::header::BAD_MESSAGE_LENGTH,
        len.to_be_bytes().to_vec(),
    )
}

/// Checks the header at the start of `buf` and returns the message length, or
/// `None` if `buf` does not yet hold the whole message. Used to cut messages out
/// of a byte stream.
pub fn frame_len(buf: &[u8], ctx: &WireContext) -> Result<Option<usize>, WireError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16].iter().any(|&b| b != 0xFF) {
        return Err(WireError::header(
            ErrorKind::BadMarker,
            subcode::header::CONNECTION_NOT_SYNCHRONIZED,
            Vec::new(),
        ));
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    let ty = buf[18];
    let (min, what) = match ty {
        msg_type::OPEN => (29, "OPEN"),
        msg_type::UPDATE => (23, "UPDATE"),
        msg_type::NOTIFICATION => (21, "NOTIFICATION"),
        msg_type::KEEPALIVE => (19, "KEEPALIVE"),
        msg_type::ROUTE_REFRESH => (23, "ROUTE-REFRESH"),
        t => {
            return Err(WireError::header(
                ErrorKind::BadType(t),
                subcode::header::BAD_MESSAGE_TYPE,
                vec![t],
            ));
        }
    };
    let max = if ty == msg_type::KEEPALIVE {
        HEADER_LEN
    } else {
        max_len(ty, ctx)
    };
    if len < min || len > max {
        return Err(bad_length(buf, what));
    }
    Ok((buf.len() >= len).then_some(len))
}
