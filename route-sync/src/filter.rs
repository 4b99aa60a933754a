//! A socket filter that keeps the kernel from queueing our own route
//! notifications on the monitor socket.
//!
//! Every route we install comes back as a notification to every listener of
//! the route groups, ours included; at a million routes that is some hundred
//! megabytes the monitor would read only to skip, and which overflow its
//! buffer (ENOBUFS, then a full re-sync) whenever the reader falls behind.
//! A classic BPF program on the socket drops notifications whose header
//! carries our batch socket's port id before they are queued. The one other
//! unsafe block in petrel besides `bgpd::session::sockopt`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

/// `SO_ATTACH_FILTER` from `asm-generic/socket.h` (the same on x86, arm and
/// mips; the libc crate has it only for Android).
const SO_ATTACH_FILTER: libc::c_int = 26;

/// Offset of `nlmsg_pid` in `struct nlmsghdr`.
const NLMSG_PID_OFFSET: u32 = 12;

/// Attaches to a netlink socket a filter that drops datagrams whose first
/// message was caused by `own_port` (see [`crate::Kernel::batch_port`]). Notifications come one message per datagram, so the first
/// header decides.
pub fn drop_own_notifications(socket: &impl AsRawFd, own_port: u32) -> io::Result<()> {
    // Absolute loads read network byte order; the header is in host order.
    let port_as_loaded = u32::from_be_bytes(own_port.to_ne_bytes());
    let mut program = [
        // A = nlmsg_pid
        bpf(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            0,
            0,
            NLMSG_PID_OFFSET,
        ),
        // if A == own port: next (drop), else skip one (accept)
        bpf(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            port_as_loaded,
        ),
        bpf(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
        bpf(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `program`, which outlives the call; the kernel
    // copies the program and keeps no pointer to it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}
