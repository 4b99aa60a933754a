//! Helpers for tests that run speakers over loopback.
#![allow(dead_code)]

use std::time::Duration;

use bgpd::speaker::{LocalRoute, RouteFilter, Speaker};
use ipnet::IpNet;

/// Polls until `f` is true, for at most `secs` seconds.
/// A route to originate, with no extra attributes.
pub fn local(prefix: &str) -> LocalRoute {
    LocalRoute::from(prefix.parse::<IpNet>().expect("prefix"))
}

pub async fn wait_for<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Whether the speaker has a best path for the prefix.
pub async fn has_route(s: &Speaker, prefix: &str) -> bool {
    let p: IpNet = prefix.parse().expect("prefix");
    s.routes(RouteFilter {
        prefix: Some(p),
        ..Default::default()
    })
    .await
    .expect("routes")
    .iter()
    .any(|r| r.paths.iter().any(|p| p.best))
}
