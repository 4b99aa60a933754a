//! A bounds-checked cursor over a byte slice: every read either succeeds or
//! reports truncation, so decoders cannot index out of bounds.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Cursor over borrowed input.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

/// The input ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Short;

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if n > self.buf.len() {
            return Err(Short);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Short> {
        let (&first, tail) = self.buf.split_first().ok_or(Short)?;
        self.buf = tail;
        Ok(first)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Short> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u24(&mut self) -> Result<u32, Short> {
        let [a, b, c] = self.array()?;
        Ok(u32::from_be_bytes([0, a, b, c]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn ipv4(&mut self) -> Result<Ipv4Addr, Short> {
        Ok(Ipv4Addr::from(self.array::<4>()?))
    }

    pub(crate) fn ipv6(&mut self) -> Result<Ipv6Addr, Short> {
        Ok(Ipv6Addr::from(self.array::<16>()?))
    }
}

/// Appends a big-endian u16 length placeholder and returns its position, so
/// the length can be patched once the body is written.
pub(crate) fn push_len16(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    at
}

/// Patches a length written by [`push_len16`] with the number of octets written
/// since; fails if it does not fit.
pub(crate) fn patch_len16(out: &mut [u8], at: usize) -> Option<()> {
    let len = u16::try_from(out.len() - at - 2).ok()?;
    out[at..at + 2].copy_from_slice(&len.to_be_bytes());
    Some(())
}
