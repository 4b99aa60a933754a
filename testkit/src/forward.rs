//! Sockets inside another network namespace, and a TCP relay: how a process
//! in a namespace reaches a server (the API server) outside it.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use crate::Error;

/// Runs `f` on a thread that enters network namespace `netns` first (the
/// process stays where it is): a socket made there stays in the namespace.
pub fn in_netns<T: Send>(
    netns: &str,
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> Result<T, Error> {
    let path = Path::new("/run/netns").join(netns);
    let ns = std::fs::File::open(&path)
        .map_err(|e| Error::new(format!("open network namespace {}", path.display()), e))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::new(format!("enter network namespace {netns}"), e))?;
            f()
        })
        .join()
        .map_err(|_| Error::new(format!("enter {netns}"), "the thread panicked"))?
    })
}

/// A listening TCP socket inside network namespace `netns`.
pub fn listen_in(netns: &str, addr: SocketAddr) -> Result<TcpListener, Error> {
    in_netns(netns, || {
        TcpListener::bind(addr).map_err(|e| Error::new(format!("listen on {addr} in {netns}"), e))
    })
}

/// Relays every connection `listener` accepts to `target`, bytes both ways,
/// until the task is dropped.
pub async fn relay(listener: tokio::net::TcpListener, target: SocketAddr) {
    loop {
        let (mut inbound, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: pause, never spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(target).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::warn!(%peer, %target, error = %e, "cannot reach the target"),
            }
        });
    }
}
