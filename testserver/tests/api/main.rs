//! The test API server driven by real kube-rs clients, watchers and reflectors.

mod crd;
mod crud;
mod watch;

use std::future::Future;
use std::time::Duration;

use kube::Client;
use testserver::{Options, TestServer};

/// A server with short bookmark and restart intervals, and a client for it.
async fn server() -> (TestServer, Client) {
    let options = Options {
        bookmark_interval: Duration::from_millis(100),
        restart_downtime: Duration::from_millis(100),
        ..Options::default()
    };
    let server = TestServer::start_with(options)
        .await
        .expect("test server starts");
    let client = server.client().expect("client for the test server");
    (server, client)
}

/// Every test body runs under this bound, so a hang fails instead of stalling CI.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test finished within 30 s")
}

/// Polls `check` until it holds; panics naming `what` after 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `Status` of a failed request: (code, reason, message).
fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(status)) => {
            (status.code, status.reason.clone(), status.message.clone())
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}
