//! The API on TCP with mutual TLS: a client with a certificate from the
//! configured CA is served (reads, a write, a watch); one without a
//! certificate, or with one from another CA, is refused; an agent given
//! unusable TLS files says which and does not start.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{petrel_yaml, run, wait_until};

/// Makes a CA and a certificate it signs, with `ext` (openssl x509v3 text).
fn issue(dir: &Path, ca: &str, name: &str, ext: &str) {
    let p = |s: &str| dir.join(s).display().to_string();
    if !dir.join(format!("{ca}.pem")).exists() {
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                &format!("/CN={ca}"),
                "-keyout",
                &p(&format!("{ca}.key")),
                "-out",
                &p(&format!("{ca}.pem")),
            ],
        );
    }
    std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &p(&format!("{name}.key")),
            "-out",
            &p(&format!("{name}.csr")),
        ],
    );
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &p(&format!("{name}.csr")),
            "-CA",
            &p(&format!("{ca}.pem")),
            "-CAkey",
            &p(&format!("{ca}.key")),
            "-CAcreateserial",
            "-extfile",
            &p(&format!("{name}.ext")),
            "-out",
            &p(&format!("{name}.pem")),
        ],
    );
}

/// `petrel ARGS --socket URL` inside `ns`, with the client files of `who`
/// (`None`: no client certificate at all).
fn cli(ns: &str, url: &str, dir: &Path, who: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_petrel")])
        .args(args)
        .args(["--socket", url])
        .env("PETREL_API_CA", dir.join("ca.pem"));
    if let Some(w) = who {
        c.env("PETREL_API_CERT", dir.join(format!("{w}.pem")))
            .env("PETREL_API_KEY", dir.join(format!("{w}.key")));
    }
    c.output().expect("petrel runs")
}

#[test]
fn the_tcp_api_serves_only_clients_with_a_certificate_from_its_ca() {
    let mut lab = common::lab("tls");
    let ns = lab.ns("p");
    let dir: PathBuf = lab.root.join("tls");
    std::fs::create_dir_all(&dir).expect("dir");
    issue(
        &dir,
        "ca",
        "agent",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    issue(&dir, "ca", "operator", "extendedKeyUsage=clientAuth\n");
    issue(
        &dir,
        "other-ca",
        "intruder",
        "extendedKeyUsage=clientAuth\n",
    );

    let f = |n: &str| dir.join(n).display().to_string();
    let config = petrel_yaml(
        65001,
        "10.42.0.1",
        &["10.42.0.1"],
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: nowhere}\nspec: {peerIP: 10.42.0.9, asNumber: 65009}\n",
    );
    let url = "https://127.0.0.1:9480";
    let tls_args = [
        "--api-address",
        "127.0.0.1:9480",
        "--api-tls-cert",
        &f("agent.pem"),
        "--api-tls-key",
        &f("agent.key"),
        "--api-tls-client-ca",
        &f("ca.pem"),
    ];
    let petrel = lab.petrel_with(&ns, "node-1", &config, &tls_args);

    // The operator's certificate is accepted: reads, a write, a watch.
    wait_until(20, "the TCP API", || {
        let out = cli(&ns, url, &dir, Some("operator"), &["peers", "-o", "json"]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("10.42.0.9") {
            Ok(())
        } else {
            Err(format!("{out:?}\n{}", petrel.log_tail()))
        }
    });
    let out = cli(
        &ns,
        url,
        &dir,
        Some("operator"),
        &["route", "add", "10.73.0.0/24", "--client", "tls"],
    );
    assert!(out.status.success(), "{out:?}");
    let out = cli(
        &ns,
        url,
        &dir,
        Some("operator"),
        &["explain", "10.73.0.0/24", "-o", "json"],
    );
    assert!(out.status.success(), "{out:?}");
    // A watch over TLS sees a route added after it started.
    let watch = {
        let (ns, dir) = (ns.clone(), dir.clone());
        std::thread::spawn(move || {
            cli(
                &ns,
                url,
                &dir,
                Some("operator"),
                &["watch", "--count", "1", "--type", "best-path", "-o", "json"],
            )
        })
    };
    for i in 0..50 {
        if watch.is_finished() {
            break;
        }
        let prefix = format!("10.74.{i}.0/24");
        let out = cli(&ns, url, &dir, Some("operator"), &["route", "add", &prefix]);
        assert!(out.status.success(), "{out:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for _ in 0..50 {
        if watch.is_finished() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(watch.is_finished(), "the watch over TLS saw no event");
    let out = watch.join().expect("watch thread");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.74."),
        "{out:?}"
    );

    // No certificate, or one from another CA: refused at the handshake.
    let out = cli(&ns, url, &dir, None, &["peers"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PETREL_API_CERT"),
        "{out:?}"
    );
    // Past the CLI's own check: a TLS client with no certificate at all.
    let bare = std::thread::spawn({
        let (ns, ca) = (ns.clone(), dir.join("ca.pem"));
        move || health_without_certificate(&ns, &ca)
    })
    .join()
    .expect("thread");
    // Refused by TLS, at the handshake or the first call; not some other
    // failure of the test itself.
    assert!(
        bare.as_ref()
            .is_err_and(|e| e.starts_with("connect:") || e.starts_with("health:")),
        "a client without a certificate got through, or the check failed: {bare:?}"
    );
    let out = cli(&ns, url, &dir, Some("intruder"), &["peers"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // The unix socket still works alongside.
    assert!(petrel.peer("10.42.0.9").is_some());
    assert!(
        petrel
            .rib(&["10.73.0.0/24"])
            .to_string()
            .contains("10.73.0.0/24"),
        "the route added over TLS is there"
    );

    // Unusable TLS files stop the agent at start, naming them.
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["agent", "--source", "files:/nonexistent", "--node", "n"])
        .args([
            "--api-socket",
            &f("x.sock"),
            "--no-fib",
            "--metrics-address",
            "off",
        ])
        .args([
            "--api-address",
            "127.0.0.1:1",
            "--api-tls-cert",
            &f("ca.key"),
        ])
        .args([
            "--api-tls-key",
            &f("ca.pem"),
            "--api-tls-client-ca",
            &f("ca.pem"),
        ])
        .output()
        .expect("petrel runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not usable"),
        "{out:?}"
    );
    // --api-address alone is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args([
            "agent",
            "--source",
            "files:/x",
            "--node",
            "n",
            "--api-address",
            "127.0.0.1:1",
        ])
        .output()
        .expect("petrel runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// Calls AgentService.Health over TLS from inside `ns` with no client
/// certificate (the thread enters the namespace first).
fn health_without_certificate(ns: &str, ca: &Path) -> Result<(), String> {
    testkit::forward::in_netns(ns, || Ok(health_inside(ca))).map_err(|e| e.to_string())?
}

/// The call itself, from a thread already in the namespace.
fn health_inside(ca: &Path) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(std::fs::read(ca).map_err(|e| e.to_string())?),
        );
        let channel = tonic::transport::Endpoint::from_static("https://127.0.0.1:9480")
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        proto::v1::agent_service_client::AgentServiceClient::new(channel)
            .health(proto::v1::HealthRequest {})
            .await
            .map(|_| ())
            .map_err(|e| format!("health: {e}"))
    })
}
