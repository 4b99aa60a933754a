//! What `petrel-ipam` does with one CNI call: read the environment and the
//! network configuration, ask the agent, print the result or the error.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::wire::{Attachment, DEFAULT_SOCKET, Failure, Reply, Request, code};

/// The CNI versions the plugin speaks (results are written in the
/// configuration's).
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// How long the agent has to answer one call.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// The CNI environment of one call.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_IFNAME`.
    pub if_name: Option<String>,
    /// `CNI_ARGS`.
    pub args: Option<String>,
}

impl Env {
    /// From the process environment.
    pub fn from_process() -> Env {
        let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        Env {
            command: var("CNI_COMMAND").unwrap_or_default(),
            container_id: var("CNI_CONTAINERID"),
            if_name: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
        }
    }

    fn attachment(&self) -> Result<Attachment, Failure> {
        let missing = |name: &str| Failure {
            code: code::INVALID_ENV,
            msg: format!("{name} is not set"),
            details: format!("CNI_COMMAND={} needs it", self.command),
        };
        Ok(Attachment {
            container_id: self
                .container_id
                .clone()
                .ok_or_else(|| missing("CNI_CONTAINERID"))?,
            if_name: self.if_name.clone().ok_or_else(|| missing("CNI_IFNAME"))?,
        })
    }

    /// `NAMESPACE/NAME` from `K8S_POD_NAMESPACE` and `K8S_POD_NAME` in
    /// `CNI_ARGS`, when both are there.
    fn pod(&self) -> Option<String> {
        let args = self.args.as_deref()?;
        let get = |key: &str| {
            args.split(';')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
                .filter(|v| !v.is_empty())
        };
        Some(format!(
            "{}/{}",
            get("K8S_POD_NAMESPACE")?,
            get("K8S_POD_NAME")?
        ))
    }
}

/// What the call prints on stdout, and its exit status.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The result or error object (`None`: print nothing).
    pub stdout: Option<Value>,
    /// 0 on success.
    pub exit: i32,
}

fn failure(version: &str, f: &Failure) -> Outcome {
    Outcome {
        stdout: Some(json!({
            "cniVersion": version,
            "code": f.code,
            "msg": f.msg,
            "details": f.details,
        })),
        exit: 1,
    }
}

/// The network configuration's parts the plugin reads.
struct Config {
    version: String,
    socket: PathBuf,
    raw: Value,
}

fn config(stdin: &[u8]) -> Result<Config, Failure> {
    let raw: Value = serde_json::from_slice(stdin).map_err(|e| Failure {
        code: code::DECODE,
        msg: "the network configuration on stdin is not JSON".into(),
        details: e.to_string(),
    })?;
    let version = raw
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("1.1.0")
        .to_string();
    if !SUPPORTED.contains(&version.as_str()) {
        return Err(Failure {
            code: 1,
            msg: format!("CNI version {version} is not supported"),
            details: format!("petrel-ipam speaks {}", SUPPORTED.join(", ")),
        });
    }
    let socket = match raw.pointer("/ipam/socket") {
        None => PathBuf::from(DEFAULT_SOCKET),
        Some(Value::String(s)) if !s.is_empty() => PathBuf::from(s),
        Some(other) => {
            return Err(Failure {
                code: code::INVALID_CONFIG,
                msg: "ipam.socket must be a path".into(),
                details: format!("it is {other}"),
            });
        }
    };
    Ok(Config {
        version,
        socket,
        raw,
    })
}

/// Sends `request` to the agent at `socket`; its reply.
pub fn ask(socket: &Path, request: &Request) -> Result<Reply, Failure> {
    let unreachable = |e: std::io::Error| Failure {
        code: code::TRY_AGAIN,
        msg: format!("the petrel agent is not reachable at {}", socket.display()),
        details: format!("{e} (is the agent running, or still starting?)"),
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(ANSWER_WITHIN))
        .and_then(|()| stream.set_write_timeout(Some(ANSWER_WITHIN)))
        .map_err(unreachable)?;
    let mut line = serde_json::to_vec(request).map_err(|e| Failure {
        code: code::INTERNAL,
        msg: "cannot encode the request".into(),
        details: e.to_string(),
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(unreachable)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| Failure {
            code: code::TRY_AGAIN,
            msg: format!("the petrel agent at {} did not answer", socket.display()),
            details: e.to_string(),
        })?;
    serde_json::from_str(&answer).map_err(|e| Failure {
        code: code::IO,
        msg: format!(
            "the petrel agent at {} answered something unreadable",
            socket.display()
        ),
        details: format!("{e}: {answer:?}"),
    })
}

/// The addresses of a CHECK's `prevResult`.
fn previous_addresses(raw: &Value) -> Result<Vec<IpAddr>, Failure> {
    let ips = raw
        .pointer("/prevResult/ips")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure {
            code: code::INVALID_CONFIG,
            msg: "CHECK needs prevResult.ips".into(),
            details: String::new(),
        })?;
    ips.iter()
        .map(|ip| {
            ip.get("address")
                .and_then(Value::as_str)
                .and_then(|a| a.parse::<ipnet::IpNet>().ok())
                .map(|n| n.addr())
                .ok_or_else(|| Failure {
                    code: code::DECODE,
                    msg: "prevResult.ips has an entry without a valid address".into(),
                    details: ip.to_string(),
                })
        })
        .collect()
}

/// The valid attachments of a GC call.
fn valid_attachments(raw: &Value) -> Result<Vec<Attachment>, Failure> {
    match raw.get("cni.dev/valid-attachments") {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| Failure {
            code: code::DECODE,
            msg: "cni.dev/valid-attachments is not a list of {containerID, ifname}".into(),
            details: e.to_string(),
        }),
    }
}

/// The CNI result for `addresses`, in the configuration's version.
fn result(version: &str, addresses: &[crate::wire::Assigned]) -> Value {
    let legacy = version.starts_with("0.");
    let ips: Vec<Value> = addresses
        .iter()
        .map(|a| {
            let mut ip =
                json!({"address": a.address.to_string(), "gateway": a.gateway.to_string()});
            if legacy {
                ip["version"] = json!(if a.address.addr().is_ipv4() { "4" } else { "6" });
            }
            ip
        })
        .collect();
    let routes: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"dst": if a.address.addr().is_ipv4() { "0.0.0.0/0" } else { "::/0" }}))
        .collect();
    json!({"cniVersion": version, "ips": ips, "routes": routes, "dns": {}})
}

/// Runs one CNI call with `env`, the configuration on `stdin`, asking the
/// agent through `ask`.
pub fn run(
    env: &Env,
    stdin: &[u8],
    ask: impl FnOnce(&Path, &Request) -> Result<Reply, Failure>,
) -> Outcome {
    if env.command == "VERSION" {
        return Outcome {
            stdout: Some(json!({
                "cniVersion": "1.1.0",
                "supportedVersions": &SUPPORTED,
            })),
            exit: 0,
        };
    }
    let cfg = match config(stdin) {
        Ok(c) => c,
        Err(f) => return failure("1.1.0", &f),
    };
    let request = match env.command.as_str() {
        "ADD" => env.attachment().map(|attachment| Request::Add {
            attachment,
            pod: env.pod(),
        }),
        "DEL" => env
            .attachment()
            .map(|attachment| Request::Del { attachment }),
        "CHECK" => env.attachment().and_then(|attachment| {
            Ok(Request::Check {
                attachment,
                addresses: previous_addresses(&cfg.raw)?,
            })
        }),
        "GC" => valid_attachments(&cfg.raw).map(|valid| Request::Gc { valid }),
        "STATUS" => Ok(Request::Status),
        other => Err(Failure {
            code: code::INVALID_ENV,
            msg: format!(
                "CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"
            ),
            details: String::new(),
        }),
    };
    let request = match request {
        Ok(r) => r,
        Err(f) => return failure(&cfg.version, &f),
    };
    let reply = ask(&cfg.socket, &request);
    match (reply, &request) {
        (Ok(Reply::Addresses { addresses }), Request::Add { .. }) => Outcome {
            stdout: Some(result(&cfg.version, &addresses)),
            exit: 0,
        },
        (Ok(Reply::Done { .. }), Request::Add { .. }) | (Ok(Reply::Addresses { .. }), _) => {
            failure(
                &cfg.version,
                &Failure {
                    code: code::INTERNAL,
                    msg: "the petrel agent answered out of turn".into(),
                    details: String::new(),
                },
            )
        }
        (Ok(Reply::Done { .. }), _) => Outcome {
            stdout: None,
            exit: 0,
        },
        (Ok(Reply::Error(f)), Request::Status) => failure(
            &cfg.version,
            &Failure {
                code: code::NOT_AVAILABLE,
                ..f
            },
        ),
        (Ok(Reply::Error(f)), _) => failure(&cfg.version, &f),
        // An agent that cannot be reached hands out nothing: STATUS says
        // so with 50, the other verbs ask the runtime to try again.
        (Err(f), Request::Status) => failure(
            &cfg.version,
            &Failure {
                code: code::NOT_AVAILABLE,
                ..f
            },
        ),
        (Err(f), _) => failure(&cfg.version, &f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Assigned;

    fn env(command: &str) -> Env {
        Env {
            command: command.into(),
            container_id: Some("abc".into()),
            if_name: Some("eth0".into()),
            args: Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0".into()),
        }
    }

    const CONF: &[u8] =
        br#"{"cniVersion":"1.1.0","name":"pods","ipam":{"type":"petrel-ipam","socket":"/x.sock"}}"#;

    #[test]
    fn add_asks_for_the_attachment_and_prints_a_result() {
        let out = run(&env("ADD"), CONF, |socket, req| {
            assert_eq!(socket, Path::new("/x.sock"));
            assert_eq!(
                req,
                &Request::Add {
                    attachment: Attachment {
                        container_id: "abc".into(),
                        if_name: "eth0".into()
                    },
                    pod: Some("default/web-0".into())
                }
            );
            Ok(Reply::Addresses {
                addresses: vec![Assigned {
                    address: "10.244.1.5/26".parse().expect("net"),
                    gateway: "169.254.1.1".parse().expect("ip"),
                }],
            })
        });
        assert_eq!(out.exit, 0);
        let v = out.stdout.expect("result");
        assert_eq!(v["ips"][0]["address"], "10.244.1.5/26");
        assert_eq!(v["ips"][0]["gateway"], "169.254.1.1");
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["routes"][0]["dst"], "0.0.0.0/0");
    }

    #[test]
    fn legacy_versions_get_the_version_field() {
        let conf = br#"{"cniVersion":"0.3.1","name":"pods","ipam":{"type":"petrel-ipam"}}"#;
        let out = run(&env("ADD"), conf, |socket, _| {
            assert_eq!(socket, Path::new(DEFAULT_SOCKET));
            Ok(Reply::Addresses {
                addresses: vec![Assigned {
                    address: "fd00::5/122".parse().expect("net"),
                    gateway: "fe80::1".parse().expect("ip"),
                }],
            })
        });
        let v = out.stdout.expect("result");
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "6");
        assert_eq!(v["routes"][0]["dst"], "::/0");
    }

    #[test]
    fn an_unreachable_agent_is_try_again_or_status_50() {
        let missing = Path::new("/nonexistent/petrel.sock");
        let conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"pods","ipam":{{"type":"petrel-ipam","socket":"{}"}}}}"#,
            missing.display()
        );
        let out = run(&env("ADD"), conf.as_bytes(), ask);
        assert_eq!(out.exit, 1);
        let v = out.stdout.expect("error");
        assert_eq!(v["code"], 11);
        assert!(
            v["msg"]
                .as_str()
                .expect("msg")
                .contains("/nonexistent/petrel.sock")
        );
        let out = run(&env("STATUS"), conf.as_bytes(), ask);
        assert_eq!(out.stdout.expect("error")["code"], 50);
    }

    #[test]
    fn bad_input_is_named() {
        let out = run(&env("ADD"), b"{not json", |_, _| unreachable!());
        assert_eq!(out.stdout.expect("error")["code"], 6);
        let mut e = env("ADD");
        e.container_id = None;
        let out = run(&e, CONF, |_, _| unreachable!());
        let v = out.stdout.expect("error");
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "CNI_CONTAINERID is not set");
        let out = run(&env("FROB"), CONF, |_, _| unreachable!());
        assert_eq!(out.stdout.expect("error")["code"], 4);
        let conf = br#"{"cniVersion":"9.9.9","name":"pods","ipam":{"type":"petrel-ipam"}}"#;
        assert_eq!(
            run(&env("ADD"), conf, |_, _| unreachable!())
                .stdout
                .expect("error")["code"],
            1
        );
        let out = run(&env("CHECK"), CONF, |_, _| unreachable!());
        assert_eq!(out.stdout.expect("error")["code"], 7);
    }

    #[test]
    fn gc_sends_the_valid_attachments_and_status_errors_become_50() {
        let conf = br#"{"cniVersion":"1.1.0","name":"pods","ipam":{"type":"petrel-ipam"},
            "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#;
        let out = run(&env("GC"), conf, |_, req| {
            assert_eq!(
                req,
                &Request::Gc {
                    valid: vec![Attachment {
                        container_id: "a".into(),
                        if_name: "eth0".into()
                    }]
                }
            );
            Ok(Reply::Done { released: vec![] })
        });
        assert_eq!(
            out,
            Outcome {
                stdout: None,
                exit: 0
            }
        );
        let out = run(&env("STATUS"), CONF, |_, _| {
            Ok(Reply::Error(Failure {
                code: code::INTERNAL,
                msg: "IPv4 pools pods are exhausted for node n1".into(),
                details: String::new(),
            }))
        });
        let v = out.stdout.expect("error");
        assert_eq!(v["code"], 50);
        assert!(v["msg"].as_str().expect("msg").contains("exhausted"));
    }

    #[test]
    fn version_needs_nothing() {
        let out = run(&env("VERSION"), b"", |_, _| unreachable!());
        assert_eq!(
            out.stdout.expect("version")["supportedVersions"][4],
            "1.1.0"
        );
    }
}
