//! The client side: connecting to an agent's API (unix socket, or TCP
//! with mutual TLS).

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use crate::error::ApiError;

/// from (also when no event passed the watcher's filters yet).
pub const RESUME_CURSOR: &str = "petrel-resume-cursor";

/// Environment variable naming the CA (PEM) that signed the agent's
/// certificate, for an `https://HOST:PORT` API address.
pub const ENV_CA: &str = "PETREL_API_CA";
/// Environment variable naming the client certificate (PEM).
pub const ENV_CERT: &str = "PETREL_API_CERT";
/// Environment variable naming the client key (PEM).
pub const ENV_KEY: &str = "PETREL_API_KEY";
/// Environment variable with the name to check the server's certificate
/// against, when not the host of the address.
pub const ENV_SERVER_NAME: &str = "PETREL_API_SERVER_NAME";

/// Connects to the API: a unix socket path, or `https://HOST:PORT` for the
/// TCP listener (certificates from `PETREL_API_CA`, `PETREL_API_CERT`,
/// `PETREL_API_KEY`).
pub async fn connect(path: &Path) -> Result<Channel, ApiError> {
    if let Some(url) = path.to_str().filter(|s| s.starts_with("https://")) {
        return connect_tls(url).await;
    }
    let path: PathBuf = path.to_path_buf();
    let shown = path.display().to_string();
    // The URI is not used: the connector always dials the socket.
    let cannot = |e| {
        ApiError::failed(
            format!("cannot connect to the petrel API at {shown}; is `petrel agent` running?"),
            e,
        )
    };
    Endpoint::try_from("http://[::]:50051")
        .map_err(cannot)?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(cannot)
}

async fn connect_tls(url: &str) -> Result<Channel, ApiError> {
    let file = |var: &str, what: &str| -> Result<Vec<u8>, ApiError> {
        let p = std::env::var_os(var).ok_or_else(|| {
            ApiError::Missing(format!(
                "{url} needs TLS: set {var} to the {what} (PEM file)"
            ))
        })?;
        std::fs::read(&p)
            .map_err(|e| ApiError::failed(format!("cannot read {var}={}", p.to_string_lossy()), e))
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(file(
            ENV_CA,
            "CA that signed the agent's certificate",
        )?))
        .identity(Identity::from_pem(
            file(ENV_CERT, "client certificate")?,
            file(ENV_KEY, "client key")?,
        ));
    if let Ok(name) = std::env::var(ENV_SERVER_NAME) {
        tls = tls.domain_name(name);
    }
    Endpoint::from_shared(url.to_string())
        .map_err(|e| {
            ApiError::failed(
                format!("{url:?} is not an address like https://192.0.2.1:9480"),
                e,
            )
        })?
        .tls_config(tls)
        .map_err(|e| ApiError::failed("the TLS files are not usable", e))?
        .connect()
        .await
        .map_err(|e| {
            ApiError::failed(
                format!(
                    "cannot connect to the petrel API at {url} (agent down, or a certificate refused)"
                ),
                e,
            )
        })
}
