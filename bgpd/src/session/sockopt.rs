//! Socket options the standard library and socket2 do not offer: TCP-MD5
//! (RFC 2385) and GTSM's minimum TTL (RFC 5082). Most of petrel's unsafe code
//! lives here (the rest is route-sync's netlink socket filter), each block a
//! single `setsockopt` on a struct we lay out ourselves.
#![allow(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

/// Longest key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;
/// `TCP_MD5SIG_FLAG_PREFIX`: the entry covers a prefix, not one address.
const TCP_MD5SIG_FLAG_PREFIX: u8 = 1;

/// `struct tcp_md5sig` from `<linux/tcp.h>`.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY_LEN],
}

fn sockaddr(ip: IpAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match ip {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
        }
    }
    ss
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs (or, with an empty key, removes) the TCP-MD5 key for a peer address,
/// or for a whole prefix of peers on a listening socket (dynamic neighbours).
pub(crate) fn set_tcp_md5(
    sock: &impl AsRawFd,
    peer: IpAddr,
    prefix_len: Option<u8>,
    key: &[u8],
) -> io::Result<()> {
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP-MD5 key is {} octets; Linux accepts at most {MD5_MAX_KEY_LEN}",
                key.len()
            ),
        ));
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr(peer),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MD5_MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    match prefix_len {
        Some(len) => {
            sig.flags = TCP_MD5SIG_FLAG_PREFIX;
            sig.prefixlen = len;
            setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_MD5SIG_EXT,
                &sig,
            )
        }
        None => setsockopt(sock.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig),
    }
}

/// GTSM (RFC 5082): drop packets that arrive with a TTL (hop limit) below `min`.
pub(crate) fn set_min_ttl(sock: &impl AsRawFd, v6: bool, min: u8) -> io::Result<()> {
    let v: libc::c_int = min.into();
    if v6 {
        setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_MINHOPCOUNT,
            &v,
        )
    } else {
        setsockopt(sock.as_raw_fd(), libc::IPPROTO_IP, libc::IP_MINTTL, &v)
    }
}
