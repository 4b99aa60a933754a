//! A kubeconfig whose current cluster is reached at another address (a
//! relay into a namespace), everything else as it was.

use std::net::SocketAddr;
use std::path::Path;

use kube::config::Kubeconfig;

use crate::Error;

/// Where a kubeconfig's server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `https` (or plain `http`).
    pub https: bool,
    /// Host, without brackets.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// A server URL's scheme, host (without brackets) and port.
pub fn split_url(url: &str) -> Option<Server> {
    let (scheme, rest) = url.split_once("://")?;
    let https = match scheme {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().ok()?),
        _ => (authority, if https { 443 } else { 80 }),
    };
    Some(Server {
        https,
        host: host.trim_matches(['[', ']']).to_string(),
        port,
    })
}

/// Points `config`'s current cluster at `listen` (keeping the name its
/// certificate is checked against) and makes its relative file names
/// absolute from `base` (the directory the kubeconfig was read from: the
/// rewritten one is written elsewhere). Returns the server it named.
pub fn redirect(config: &mut Kubeconfig, base: &Path, listen: SocketAddr) -> Result<Server, Error> {
    let what = "redirect the kubeconfig";
    let context = config
        .current_context
        .clone()
        .ok_or_else(|| Error::new(what, "it has no current-context"))?;
    let cluster_name = config
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .ok_or_else(|| Error::new(what, format!("context {context:?} is missing")))?;
    let cluster = config
        .clusters
        .iter_mut()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_mut())
        .ok_or_else(|| Error::new(what, format!("cluster {cluster_name:?} is missing")))?;
    let url = cluster
        .server
        .clone()
        .ok_or_else(|| Error::new(what, format!("cluster {cluster_name:?} has no server")))?;
    let server =
        split_url(&url).ok_or_else(|| Error::new(what, format!("server {url:?} is not a URL")))?;
    cluster.server = Some(format!(
        "{}://{listen}",
        if server.https { "https" } else { "http" }
    ));
    if server.https && cluster.tls_server_name.is_none() {
        cluster.tls_server_name = Some(server.host.clone());
    }
    if let Some(ca) = cluster.certificate_authority.as_mut() {
        *ca = base.join(&*ca).display().to_string();
    }
    for user in config
        .auth_infos
        .iter_mut()
        .filter_map(|u| u.auth_info.as_mut())
    {
        for f in [&mut user.client_certificate, &mut user.client_key]
            .into_iter()
            .flatten()
        {
            *f = base.join(&*f).display().to_string();
        }
    }
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_and_port() {
        let s = split_url("https://[::1]:6443/x").expect("url");
        assert_eq!((s.https, s.host.as_str(), s.port), (true, "::1", 6443));
        let s = split_url("http://example").expect("url");
        assert_eq!((s.https, s.port), (false, 80));
        let s = split_url("https://api.example:6443").expect("url");
        assert_eq!(
            (s.https, s.host.as_str(), s.port),
            (true, "api.example", 6443)
        );
        let s = split_url("http://127.0.0.1:41234/").expect("url");
        assert_eq!(
            (s.https, s.host.as_str(), s.port),
            (false, "127.0.0.1", 41234)
        );
        let s = split_url("https://[2001:db8::1]").expect("url");
        assert_eq!(
            (s.https, s.host.as_str(), s.port),
            (true, "2001:db8::1", 443)
        );
        assert!(split_url("ftp://x").is_none());
    }
}
