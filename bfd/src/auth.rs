//! Authentication (RFC 5880 §4.2-§4.4, §6.7): the section's wire form, and
//! keys that sign and verify packets. Sequence numbers are the session's
//! ([`crate::Session`]): they depend on its state.

use md5::{Digest, Md5};
use sha1::Sha1;
use thiserror::Error;

/// The authentication types (§4.1, "Auth Type").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AuthType {
    /// Simple Password (1).
    SimplePassword,
    /// Keyed MD5 (2).
    KeyedMd5,
    /// Meticulous Keyed MD5 (3).
    MeticulousKeyedMd5,
    /// Keyed SHA1 (4).
    KeyedSha1,
    /// Meticulous Keyed SHA1 (5).
    MeticulousKeyedSha1,
}

impl AuthType {
    fn from_code(c: u8) -> Option<AuthType> {
        Some(match c {
            1 => AuthType::SimplePassword,
            2 => AuthType::KeyedMd5,
            3 => AuthType::MeticulousKeyedMd5,
            4 => AuthType::KeyedSha1,
            5 => AuthType::MeticulousKeyedSha1,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        match self {
            AuthType::SimplePassword => 1,
            AuthType::KeyedMd5 => 2,
            AuthType::MeticulousKeyedMd5 => 3,
            AuthType::KeyedSha1 => 4,
            AuthType::MeticulousKeyedSha1 => 5,
        }
    }

    /// The digest's length (the password's limit for Simple Password).
    fn digest_len(self) -> usize {
        match self {
            AuthType::SimplePassword => 16,
            AuthType::KeyedMd5 | AuthType::MeticulousKeyedMd5 => 16,
            AuthType::KeyedSha1 | AuthType::MeticulousKeyedSha1 => 20,
        }
    }

    /// Whether packets carry a sequence number.
    pub fn sequenced(self) -> bool {
        self != AuthType::SimplePassword
    }

    /// Whether every packet must carry a new sequence number.
    pub fn meticulous(self) -> bool {
        matches!(
            self,
            AuthType::MeticulousKeyedMd5 | AuthType::MeticulousKeyedSha1
        )
    }

    /// The name used in configuration and status.
    pub fn name(self) -> &'static str {
        match self {
            AuthType::SimplePassword => "simple-password",
            AuthType::KeyedMd5 => "keyed-md5",
            AuthType::MeticulousKeyedMd5 => "meticulous-keyed-md5",
            AuthType::KeyedSha1 => "keyed-sha1",
            AuthType::MeticulousKeyedSha1 => "meticulous-keyed-sha1",
        }
    }
}

/// A packet's authentication section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSection {
    /// The type.
    pub kind: AuthType,
    /// Which key signed it.
    pub key_id: u8,
    /// The sequence number (0 for Simple Password).
    pub seq: u32,
    /// The password (Simple Password) or the digest.
    pub data: Vec<u8>,
}

impl AuthSection {
    /// The section's length on the wire.
    pub fn len(&self) -> usize {
        match self.kind {
            AuthType::SimplePassword => 3 + self.data.len(),
            _ => 8 + self.kind.digest_len(),
        }
    }

    /// Whether the section is empty (never: it has a header).
    pub fn is_empty(&self) -> bool {
        false
    }

    pub(crate) fn decode(b: &[u8]) -> Result<AuthSection, String> {
        if b.len() < 2 {
            return Err("shorter than its header".into());
        }
        let kind = AuthType::from_code(b[0]).ok_or_else(|| format!("unknown type {}", b[0]))?;
        let len = b[1] as usize;
        if len > b.len() {
            return Err(format!(
                "length {len} past the packet's end ({} bytes)",
                b.len()
            ));
        }
        match kind {
            AuthType::SimplePassword => {
                if !(4..=19).contains(&len) {
                    return Err(format!("simple password section of {len} bytes (4-19)"));
                }
                Ok(AuthSection {
                    kind,
                    key_id: b[2],
                    seq: 0,
                    data: b[3..len].to_vec(),
                })
            }
            _ => {
                let want = 8 + kind.digest_len();
                if len != want {
                    return Err(format!("{} section of {len} bytes ({want})", kind.name()));
                }
                Ok(AuthSection {
                    kind,
                    key_id: b[2],
                    seq: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                    data: b[8..len].to_vec(),
                })
            }
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind.code());
        out.push(self.len() as u8);
        out.push(self.key_id);
        if self.kind.sequenced() {
            out.push(0);
            out.extend_from_slice(&self.seq.to_be_bytes());
        }
        out.extend_from_slice(&self.data);
    }
}

/// A configured key: what signs our packets and checks the peer's.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    /// The type.
    pub kind: AuthType,
    /// The key ID both ends agree on.
    pub id: u8,
    /// The secret (at most 16 bytes for MD5 and passwords, 20 for SHA1).
    secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("secret", &"***")
            .finish()
    }
}

/// Why a key or a packet's authentication was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    /// A secret longer than the type allows, or empty.
    #[error("a {kind} secret must be 1 to {max} bytes, not {len}")]
    SecretLength {
        /// The type's name.
        kind: &'static str,
        /// Its limit.
        max: usize,
        /// What was given.
        len: usize,
    },
    /// The packet is not authenticated but the session is, or the reverse.
    #[error("authentication expected {expected}, the packet has {got}")]
    Mismatch {
        /// What the session uses.
        expected: &'static str,
        /// What the packet carries.
        got: &'static str,
    },
    /// Another key ID.
    #[error("key ID {got}, expected {expected}")]
    KeyId {
        /// Ours.
        expected: u8,
        /// The packet's.
        got: u8,
    },
    /// The password or digest does not match.
    #[error("{0}: digest or password does not match")]
    Digest(&'static str),
    /// A sequence number outside the window.
    #[error("sequence number {got} outside {from}..={to}")]
    Sequence {
        /// The packet's.
        got: u32,
        /// The window's start.
        from: u32,
        /// Its end.
        to: u32,
    },
}

impl Key {
    /// A key, its secret checked against the type's limit.
    pub fn new(kind: AuthType, id: u8, secret: &[u8]) -> Result<Key, AuthError> {
        let max = kind.digest_len();
        if secret.is_empty() || secret.len() > max {
            return Err(AuthError::SecretLength {
                kind: kind.name(),
                max,
                len: secret.len(),
            });
        }
        Ok(Key {
            kind,
            id,
            secret: secret.to_vec(),
        })
    }

    /// The section to put in an outgoing packet with sequence number
    /// `seq`; the digest is filled by [`Key::sign`] once encoded.
    pub fn section(&self, seq: u32) -> AuthSection {
        let data = match self.kind {
            AuthType::SimplePassword => self.secret.clone(),
            k => vec![0; k.digest_len()],
        };
        AuthSection {
            kind: self.kind,
            key_id: self.id,
            seq,
            data,
        }
    }

    /// Signs an encoded packet whose section [`Key::section`] made.
    pub fn sign(&self, packet: &mut [u8]) {
        if self.kind == AuthType::SimplePassword {
            return;
        }
        let n = self.kind.digest_len();
        let at = crate::packet::MANDATORY_LEN + 8;
        if packet.len() < at + n {
            return;
        }
        let digest = self.digest(packet, at);
        packet[at..at + n].copy_from_slice(&digest);
    }

    /// The digest of `packet` with the key in place of the digest at `at`
    /// (§6.7.3, §6.7.4).
    fn digest(&self, packet: &[u8], at: usize) -> Vec<u8> {
        let n = self.kind.digest_len();
        let mut buf = packet.to_vec();
        let mut padded = self.secret.clone();
        padded.resize(n, 0);
        buf[at..at + n].copy_from_slice(&padded);
        match self.kind {
            AuthType::KeyedSha1 | AuthType::MeticulousKeyedSha1 => Sha1::digest(&buf).to_vec(),
            _ => Md5::digest(&buf).to_vec(),
        }
    }

    /// Checks a received packet's section (type, key ID, password or
    /// digest) against this key; `datagram` is the packet as received, up
    /// to its Length field. Sequence numbers are the session's to check.
    pub fn verify(&self, section: Option<&AuthSection>, datagram: &[u8]) -> Result<(), AuthError> {
        let Some(s) = section else {
            return Err(AuthError::Mismatch {
                expected: self.kind.name(),
                got: "none",
            });
        };
        if s.kind != self.kind {
            return Err(AuthError::Mismatch {
                expected: self.kind.name(),
                got: s.kind.name(),
            });
        }
        if s.key_id != self.id {
            return Err(AuthError::KeyId {
                expected: self.id,
                got: s.key_id,
            });
        }
        let ok = match self.kind {
            AuthType::SimplePassword => s.data == self.secret,
            _ => {
                let at = crate::packet::MANDATORY_LEN + 8;
                datagram.len() >= at + self.kind.digest_len()
                    && constant_time_eq(&self.digest(datagram, at), &s.data)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(AuthError::Digest(self.kind.name()))
        }
    }
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{ControlPacket, Diag, State};

    fn packet(key: &Key, seq: u32) -> Vec<u8> {
        let p = ControlPacket {
            diag: Diag::None,
            state: State::Down,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_disc: 1,
            your_disc: 0,
            desired_min_tx: 1_000_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
            auth: Some(key.section(seq)),
        };
        let mut b = p.encode();
        key.sign(&mut b);
        b
    }

    #[test]
    fn every_type_signs_and_verifies_and_refuses_another_secret() {
        for kind in [
            AuthType::SimplePassword,
            AuthType::KeyedMd5,
            AuthType::MeticulousKeyedMd5,
            AuthType::KeyedSha1,
            AuthType::MeticulousKeyedSha1,
        ] {
            let key = Key::new(kind, 5, b"s3cret").expect("key");
            let b = packet(&key, 42);
            let p = ControlPacket::decode(&b).expect("decodes");
            let s = p.auth.as_ref().expect("a section");
            assert_eq!(s.kind, kind);
            if kind.sequenced() {
                assert_eq!(s.seq, 42);
            }
            key.verify(p.auth.as_ref(), &b).expect("verifies");
            let other = Key::new(kind, 5, b"other").expect("key");
            assert_eq!(
                other.verify(p.auth.as_ref(), &b),
                Err(AuthError::Digest(kind.name())),
                "{kind:?}"
            );
            let other_id = Key::new(kind, 6, b"s3cret").expect("key");
            assert!(matches!(
                other_id.verify(p.auth.as_ref(), &b),
                Err(AuthError::KeyId {
                    expected: 6,
                    got: 5
                })
            ));
            // A flipped bit anywhere in a signed packet is refused.
            if kind != AuthType::SimplePassword {
                let mut t = b.clone();
                t[17] ^= 1;
                let p = ControlPacket::decode(&t).expect("still decodes");
                assert!(key.verify(p.auth.as_ref(), &t).is_err());
            }
        }
    }

    #[test]
    fn an_unsigned_packet_is_refused_by_a_keyed_session() {
        let key = Key::new(AuthType::KeyedSha1, 1, b"k").expect("key");
        assert!(matches!(
            key.verify(None, &[]),
            Err(AuthError::Mismatch { got: "none", .. })
        ));
    }

    #[test]
    fn secrets_are_bounded_and_never_printed() {
        assert!(Key::new(AuthType::KeyedMd5, 1, &[1; 17]).is_err());
        assert!(Key::new(AuthType::KeyedSha1, 1, &[1; 20]).is_ok());
        assert!(Key::new(AuthType::KeyedSha1, 1, b"").is_err());
        let k = Key::new(AuthType::KeyedMd5, 1, b"hunter2").expect("key");
        assert!(!format!("{k:?}").contains("hunter2"));
    }

    /// RFC 1321's test vector through the same path the digest takes.
    #[test]
    fn md5_and_sha1_are_the_standard_ones() {
        let md5: Vec<u8> = Md5::digest(b"abc").to_vec();
        assert_eq!(
            md5,
            [
                0x90, 0x01, 0x50, 0x98, 0x3c, 0xd2, 0x4f, 0xb0, 0xd6, 0x96, 0x3f, 0x7d, 0x28, 0xe1,
                0x7f, 0x72
            ]
        );
        let sha1: Vec<u8> = Sha1::digest(b"abc").to_vec();
        assert_eq!(&sha1[..4], &[0xa9, 0x99, 0x3e, 0x36]);
    }
}
