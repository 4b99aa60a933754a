//! The BFD Control packet (RFC 5880 §4.1, §4.2) and the checks §6.8.6
//! makes of every received one before it reaches a session.

use thiserror::Error;

use crate::auth::{AuthSection, AuthType};

/// The mandatory section's length: a packet without authentication.
pub const MANDATORY_LEN: usize = 24;

/// A session's state as the packet carries it (§4.1, "Sta").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum State {
    /// Held down by an operator (or being removed).
    AdminDown,
    /// Not up, and no packet from the remote end says it sees us.
    Down,
    /// The remote end is heard and said Down: one step from Up.
    Init,
    /// Both ends hear each other.
    Up,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }

    /// The name operators read (`up`, `down`, `init`, `admin-down`).
    pub fn name(self) -> &'static str {
        match self {
            State::AdminDown => "admin-down",
            State::Down => "down",
            State::Init => "init",
            State::Up => "up",
        }
    }
}

/// Why a session last left Up, or why it is down (§4.1, "Diag").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Diag {
    /// No diagnostic.
    None,
    /// Control Detection Time Expired: the remote end went silent.
    DetectionTimeExpired,
    /// Echo Function Failed.
    EchoFailed,
    /// Neighbor Signaled Session Down.
    NeighborDown,
    /// Forwarding Plane Reset.
    ForwardingReset,
    /// Path Down.
    PathDown,
    /// Concatenated Path Down.
    ConcatenatedPathDown,
    /// Administratively Down.
    AdminDown,
    /// Reverse Concatenated Path Down.
    ReverseConcatenatedPathDown,
    /// A code RFC 5880 does not define (kept as received).
    Other(u8),
}

impl Diag {
    fn from_bits(b: u8) -> Diag {
        match b & 0x1f {
            0 => Diag::None,
            1 => Diag::DetectionTimeExpired,
            2 => Diag::EchoFailed,
            3 => Diag::NeighborDown,
            4 => Diag::ForwardingReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdminDown,
            8 => Diag::ReverseConcatenatedPathDown,
            n => Diag::Other(n),
        }
    }

    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::DetectionTimeExpired => 1,
            Diag::EchoFailed => 2,
            Diag::NeighborDown => 3,
            Diag::ForwardingReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdminDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Other(n) => n & 0x1f,
        }
    }

    /// The name operators read.
    pub fn name(self) -> &'static str {
        match self {
            Diag::None => "none",
            Diag::DetectionTimeExpired => "control detection time expired",
            Diag::EchoFailed => "echo function failed",
            Diag::NeighborDown => "neighbor signaled session down",
            Diag::ForwardingReset => "forwarding plane reset",
            Diag::PathDown => "path down",
            Diag::ConcatenatedPathDown => "concatenated path down",
            Diag::AdminDown => "administratively down",
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down",
            Diag::Other(_) => "unknown",
        }
    }
}

/// A Control packet. Intervals are in microseconds, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPacket {
    /// The sender's diagnostic.
    pub diag: Diag,
    /// The sender's state.
    pub state: State,
    /// Poll: the sender asks for a Final (a parameter change, §6.5).
    pub poll: bool,
    /// Final: the answer to a Poll.
    pub final_: bool,
    /// Control Plane Independent: the sender's BFD survives a restart of
    /// its control plane (what graceful restart looks at, RFC 5882 §4.3.1).
    pub cpi: bool,
    /// Demand mode (never set by petrel, which runs asynchronous mode).
    pub demand: bool,
    /// The sender's detection multiplier.
    pub detect_mult: u8,
    /// The sender's discriminator.
    pub my_disc: u32,
    /// The discriminator the sender has for us (0 if it has none yet).
    pub your_disc: u32,
    /// The shortest interval the sender wants to send at (µs).
    pub desired_min_tx: u32,
    /// The shortest interval the sender can receive at (µs); 0: send none.
    pub required_min_rx: u32,
    /// The shortest Echo interval the sender can take (µs); 0: no Echo.
    pub required_min_echo_rx: u32,
    /// The authentication section, when present.
    pub auth: Option<AuthSection>,
}

/// Why a received packet was discarded (§6.8.6), naming the field.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    /// Fewer bytes than the mandatory section.
    #[error("{0} bytes: shorter than a BFD Control packet (24)")]
    Short(usize),
    /// A version other than 1.
    #[error("version {0}: only version 1 is known")]
    Version(u8),
    /// The Length field is too small for what the A bit says, or larger
    /// than the datagram.
    #[error("length field {field} does not fit a datagram of {datagram} bytes (A bit {auth})")]
    Length {
        /// The Length field.
        field: u8,
        /// The datagram's size.
        datagram: usize,
        /// The A bit.
        auth: bool,
    },
    /// Detect Mult of zero.
    #[error("detect multiplier is zero")]
    DetectMult,
    /// The M bit set (multipoint is reserved).
    #[error("multipoint bit set")]
    Multipoint,
    /// My Discriminator of zero.
    #[error("my discriminator is zero")]
    MyDiscriminator,
    /// Your Discriminator of zero with a state that needs one.
    #[error("your discriminator is zero in state {0}")]
    YourDiscriminator(&'static str),
    /// A malformed authentication section.
    #[error("authentication section: {0}")]
    Auth(String),
}

impl ControlPacket {
    /// Decodes a datagram and makes §6.8.6's checks that need no session
    /// (the ones that do, demultiplexing and authentication, come after).
    pub fn decode(buf: &[u8]) -> Result<ControlPacket, PacketError> {
        if buf.len() < MANDATORY_LEN {
            return Err(PacketError::Short(buf.len()));
        }
        let version = buf[0] >> 5;
        if version != 1 {
            return Err(PacketError::Version(version));
        }
        let flags = buf[1];
        let auth_bit = flags & 0x04 != 0;
        let len = buf[3];
        let min = if auth_bit {
            MANDATORY_LEN + 2
        } else {
            MANDATORY_LEN
        };
        if (len as usize) < min || len as usize > buf.len() {
            return Err(PacketError::Length {
                field: len,
                datagram: buf.len(),
                auth: auth_bit,
            });
        }
        let buf = &buf[..len as usize];
        let detect_mult = buf[2];
        if detect_mult == 0 {
            return Err(PacketError::DetectMult);
        }
        if flags & 0x01 != 0 {
            return Err(PacketError::Multipoint);
        }
        let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let state = State::from_bits(flags >> 6);
        let my_disc = word(4);
        let your_disc = word(8);
        if my_disc == 0 {
            return Err(PacketError::MyDiscriminator);
        }
        if your_disc == 0 && !matches!(state, State::Down | State::AdminDown) {
            return Err(PacketError::YourDiscriminator(state.name()));
        }
        let auth = if auth_bit {
            Some(AuthSection::decode(&buf[MANDATORY_LEN..]).map_err(PacketError::Auth)?)
        } else {
            None
        };
        Ok(ControlPacket {
            diag: Diag::from_bits(buf[0]),
            state,
            poll: flags & 0x20 != 0,
            final_: flags & 0x10 != 0,
            cpi: flags & 0x08 != 0,
            demand: flags & 0x02 != 0,
            detect_mult,
            my_disc,
            your_disc,
            desired_min_tx: word(12),
            required_min_rx: word(16),
            required_min_echo_rx: word(20),
            auth,
        })
    }

    /// Encodes the packet; an authentication section is written with the
    /// digest field as [`AuthSection`] holds it (sign it after, with
    /// [`crate::auth::Key::sign`]).
    pub fn encode(&self) -> Vec<u8> {
        let auth_len = self.auth.as_ref().map_or(0, |a| a.len());
        let len = MANDATORY_LEN + auth_len;
        let mut out = Vec::with_capacity(len);
        out.push((1 << 5) | self.diag.code());
        let mut flags = self.state.bits() << 6;
        for (bit, set) in [
            (0x20, self.poll),
            (0x10, self.final_),
            (0x08, self.cpi),
            (0x04, self.auth.is_some()),
            (0x02, self.demand),
        ] {
            if set {
                flags |= bit;
            }
        }
        out.push(flags);
        out.push(self.detect_mult);
        out.push(len as u8);
        for w in [
            self.my_disc,
            self.your_disc,
            self.desired_min_tx,
            self.required_min_rx,
            self.required_min_echo_rx,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        if let Some(a) = &self.auth {
            a.encode(&mut out);
        }
        out
    }

    /// The authentication type the packet carries, if any.
    pub fn auth_type(&self) -> Option<AuthType> {
        self.auth.as_ref().map(|a| a.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ControlPacket {
        ControlPacket {
            diag: Diag::DetectionTimeExpired,
            state: State::Up,
            poll: true,
            final_: false,
            cpi: true,
            demand: false,
            detect_mult: 3,
            my_disc: 0x0102_0304,
            your_disc: 7,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
            auth: None,
        }
    }

    #[test]
    fn a_packet_survives_encoding() {
        let p = sample();
        let b = p.encode();
        assert_eq!(b.len(), 24);
        assert_eq!(b[0], 0x21, "version 1, diag 1");
        assert_eq!(b[1], 0xc0 | 0x20 | 0x08, "Up, P, C");
        assert_eq!(ControlPacket::decode(&b), Ok(p));
    }

    #[test]
    fn every_check_of_6_8_6_names_what_was_wrong() {
        let good = sample().encode();
        let mut b = good.clone();
        b[0] = (2 << 5) | 1;
        assert_eq!(ControlPacket::decode(&b), Err(PacketError::Version(2)));
        assert_eq!(
            ControlPacket::decode(&good[..20]),
            Err(PacketError::Short(20))
        );
        let mut b = good.clone();
        b[3] = 40;
        assert!(matches!(
            ControlPacket::decode(&b),
            Err(PacketError::Length { field: 40, .. })
        ));
        let mut b = good.clone();
        b[1] |= 0x04;
        assert!(matches!(
            ControlPacket::decode(&b),
            Err(PacketError::Length { auth: true, .. })
        ));
        let mut b = good.clone();
        b[2] = 0;
        assert_eq!(ControlPacket::decode(&b), Err(PacketError::DetectMult));
        let mut b = good.clone();
        b[1] |= 0x01;
        assert_eq!(ControlPacket::decode(&b), Err(PacketError::Multipoint));
        let mut b = good.clone();
        b[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(ControlPacket::decode(&b), Err(PacketError::MyDiscriminator));
        let mut b = good.clone();
        b[8..12].copy_from_slice(&[0; 4]);
        assert_eq!(
            ControlPacket::decode(&b),
            Err(PacketError::YourDiscriminator("up"))
        );
        // Down with no discriminator for us yet is how a session starts.
        let mut down = sample();
        down.state = State::Down;
        down.your_disc = 0;
        assert!(ControlPacket::decode(&down.encode()).is_ok());
        // Trailing bytes past the Length field are ignored.
        let mut b = good.clone();
        b.extend_from_slice(&[0xff; 8]);
        assert!(ControlPacket::decode(&b).is_ok());
    }

    #[test]
    fn decoding_never_panics_on_any_prefix_or_flip() {
        let good = sample().encode();
        for n in 0..good.len() {
            let _ = ControlPacket::decode(&good[..n]);
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                let _ = ControlPacket::decode(&b);
            }
        }
    }
}
