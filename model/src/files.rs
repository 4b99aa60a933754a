//! The file source: a directory of Kubernetes-style YAML objects, the same
//! objects a cluster has (`petrel.dev/v1alpha1` BGPConfiguration, BGPPeer,
//! BGPFilter, BGPAdvertisement and IPPool; core `v1` Node, Service and Secret;
//! `discovery.k8s.io/v1` EndpointSlice).
//!
//! Every document is parsed on its own: a malformed one is reported (file,
//! document, field, why) and skipped, and the others still count. A file
//! that is not valid YAML (caught half-written, or broken by an edit) keeps
//! its last valid version in force ([`Kept`]).

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::Source;
use crate::objects::{Origin, Snapshot};
use crate::parse::add_object;
use crate::problem::Problem;

/// Reads every `*.yaml` / `*.yml` file of a directory (not recursively).
pub fn load_dir(dir: &Path) -> (Snapshot, Vec<Problem>) {
    load_dir_keeping(dir, &mut Kept::default())
}

/// The last text of each file that was valid YAML, so that a file caught
/// half-written is not read as objects deleted.
#[derive(Debug, Default)]
pub struct Kept {
    texts: BTreeMap<PathBuf, String>,
}

/// The first document of `text` that is not valid YAML: its first line
/// and the parser's words.
fn invalid_yaml(text: &str) -> Option<(usize, String)> {
    documents(text).into_iter().find_map(|(line, doc)| {
        serde_saphyr::from_str::<Value>(&doc)
            .err()
            .map(|e| (line, e.to_string()))
    })
}

/// [`load_dir`], keeping in force the last valid version of a file that is
/// not valid YAML now (a file being written, or broken by an edit), with a
/// problem that says so; a file seen for the first time broken is read as
/// it is (its bad documents reported, the others used).
pub fn load_dir_keeping(dir: &Path, kept: &mut Kept) -> (Snapshot, Vec<Problem>) {
    let mut snap = Snapshot {
        source: dir.display().to_string(),
        ..Snapshot::default()
    };
    let mut problems = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect(),
        Err(e) => {
            problems.push(Problem {
                origin: dir.display().to_string(),
                object: None,
                field: None,
                message: format!("cannot read the directory: {e}"),
            });
            return (snap, problems);
        }
    };
    files.sort();
    // Files gone are deletions.
    kept.texts.retain(|f, _| files.contains(f));
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => match (invalid_yaml(&text), kept.texts.get(&f)) {
                (Some((line, e)), Some(last)) => {
                    problems.push(Problem {
                        origin: f.display().to_string(),
                        object: None,
                        field: None,
                        message: format!(
                            "not valid YAML (document starts at line {line}): {e}; the file's last valid version stays in force"
                        ),
                    });
                    let last = last.clone();
                    load_text(&f, &last, &mut snap, &mut problems);
                }
                (invalid, _) => {
                    load_text(&f, &text, &mut snap, &mut problems);
                    if invalid.is_none() {
                        kept.texts.insert(f, text);
                    }
                }
            },
            Err(e) => problems.push(Problem {
                origin: f.display().to_string(),
                object: None,
                field: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    crate::read_referenced_files(&mut snap, dir);
    (snap, problems)
}

/// Splits a YAML stream into documents at `---` lines, keeping each one's
/// first line number so errors point into the file.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = vec![(1, String::new())];
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") {
            docs.push((i + 2, String::new()));
            continue;
        }
        if let Some((_, d)) = docs.last_mut() {
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.retain(|(_, d)| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// Parses one file's text into the snapshot.
pub fn load_text(file: &Path, text: &str, snap: &mut Snapshot, problems: &mut Vec<Problem>) {
    for (n, (line, doc)) in documents(text).into_iter().enumerate() {
        let origin = Origin {
            file: file.to_path_buf(),
            document: n + 1,
        };
        let problem = |object: Option<String>, field: Option<String>, message: String| Problem {
            origin: origin.to_string(),
            object,
            field,
            message,
        };
        let value: Value = match serde_saphyr::from_str(&doc) {
            Ok(v) => v,
            Err(e) => {
                problems.push(problem(
                    None,
                    None,
                    format!("not valid YAML (document starts at line {line}): {e}"),
                ));
                continue;
            }
        };
        add_object(&value, origin, snap, problems);
    }
}

/// A directory of YAML objects, polled: a fingerprint of its files tells
/// when they changed, so unchanged files cause no work.
#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    poll: Duration,
    last_print: Option<u64>,
    kept: Kept,
}

impl FileSource {
    /// The source for `dir`, looked at every `poll`.
    pub fn new(dir: PathBuf, poll: Duration) -> FileSource {
        FileSource {
            dir,
            poll,
            last_print: None,
            kept: Kept::default(),
        }
    }
}

impl Source for FileSource {
    fn poll(&mut self) -> Option<(Snapshot, Vec<Problem>)> {
        let print = fingerprint(&self.dir);
        if self.last_print == Some(print) {
            return None;
        }
        self.last_print = Some(print);
        Some(load_dir_keeping(&self.dir, &mut self.kept))
    }

    fn changed(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(self.poll))
    }
}

/// A cheap fingerprint of a directory's files (names and contents).
fn fingerprint(dir: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut paths: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            p.hash(&mut h);
            if let Ok(bytes) = std::fs::read(&p) {
                bytes.hash(&mut h);
            }
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::TrafficPolicy;

    fn load(text: &str) -> (Snapshot, Vec<Problem>) {
        let mut snap = Snapshot::default();
        let mut problems = Vec::new();
        load_text(Path::new("test.yaml"), text, &mut snap, &mut problems);
        (snap, problems)
    }

    #[test]
    fn reads_every_kind_from_one_file() {
        let (s, p) = load(
            r#"
apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 65001, routerID: 10.0.0.1}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor}
spec:
  peerIP: 10.0.0.254
  asNumber: 65000
  holdTime: 9s
  password: {secretKeyRef: {name: bgp, key: tor}}
---
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {rack: r1}}
spec: {podCIDRs: [10.244.1.0/24, "fd00:244:1::/64"]}
status: {addresses: [{type: InternalIP, address: 10.0.0.1}, {type: Hostname, address: node-1}]}
---
apiVersion: v1
kind: Secret
metadata: {name: bgp}
data: {tor: c2VjcmV0}
"#,
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.configurations[0].spec.as_number, Some(65001));
        assert_eq!(s.peers[0].spec.hold_time, Some(crds::Seconds(9)));
        assert_eq!(s.nodes[0].pod_cidrs.len(), 2);
        assert_eq!(
            s.nodes[0].internal_ips,
            vec!["10.0.0.1".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(s.secrets[0].data["tor"], b"secret");
    }

    #[test]
    fn a_bad_document_is_reported_with_its_field_and_the_others_load() {
        let (s, p) = load(
            r#"
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: good}
spec: {peerIP: 10.0.0.1, asNumber: 65000}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: bad}
spec: {peerIP: 10.0.0.300, asNumber: 65000}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: typo}
spec: {peerIP: 10.0.0.2, asnumber: 65000}
---
this: is: not: yaml
"#,
        );
        assert_eq!(s.peers.len(), 1);
        assert_eq!(s.peers[0].name, "good");
        assert_eq!(p.len(), 3, "{p:#?}");
        assert_eq!(p[0].object.as_deref(), Some("BGPPeer/bad"));
        assert_eq!(p[0].field.as_deref(), Some("spec.peerIP"));
        assert!(p[0].origin.contains("document 2"));
        assert!(
            p[1].message.contains("unknown field `asnumber`"),
            "{}",
            p[1]
        );
        assert!(p[2].message.contains("not valid YAML"), "{}", p[2]);
    }

    #[test]
    fn ip_pools_are_read_and_a_bad_block_size_is_named() {
        let (s, p) = load(
            r#"
apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.244.0.0/16, strictAffinity: true, allowedUses: [Workload]}
---
apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {name: wide}
spec: {cidr: 10.245.0.0/16, blockSize: 18}
"#,
        );
        assert_eq!(s.ip_pools.len(), 1);
        assert_eq!(s.ip_pools[0].name, "pods");
        assert_eq!(s.ip_pools[0].spec.block_size_or_default(), Some(26));
        assert_eq!(s.ip_pools[0].spec.strict_affinity, Some(true));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].object.as_deref(), Some("IPPool/wide"));
        assert_eq!(p[0].field.as_deref(), Some("spec.blockSize"));
        assert!(p[0].message.contains("use 20 to 30"), "{}", p[0]);
    }

    #[test]
    fn services_and_endpoint_slices_are_read_and_their_mistakes_named() {
        let (s, p) = load(
            r#"
apiVersion: v1
kind: Service
metadata: {name: web, labels: {app: web}}
spec: {type: LoadBalancer, clusterIP: None, externalIPs: [192.0.2.1], externalTrafficPolicy: Local}
status: {loadBalancer: {ingress: [{ip: "2001:db8::10"}, {hostname: x.example}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: prod, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
endpoints:
  - {addresses: ["2001:db8::5"], nodeName: n1}
  - {addresses: ["2001:db8::6"], conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: bad-policy}
spec: {externalTrafficPolicy: Nearby}
---
apiVersion: v1
kind: Service
metadata: {name: bad-ip}
status: {loadBalancer: {ingress: [{ip: 10.0.0.300}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bad-type}
addressType: IPv5
---
apiVersion: v1
kind: Node
metadata: {name: n9, annotations: {petrel.dev/as-number: "sixty"}}
"#,
        );
        assert_eq!(s.services.len(), 1);
        assert_eq!(s.nodes.len(), 1, "a bad annotation does not drop the node");
        assert_eq!(s.nodes[0].as_number, None);
        let web = &s.services[0];
        assert_eq!(web.key(), "default/web");
        assert!(web.cluster_ips.is_empty(), "headless");
        assert_eq!(web.load_balancer_ips.len(), 1);
        assert_eq!(web.external_traffic_policy, TrafficPolicy::Local);
        let slice = &s.endpoint_slices[0];
        assert_eq!(slice.service.as_deref(), Some("web"));
        assert_eq!(slice.namespace, "prod");
        assert!(slice.endpoints[0].ready, "absent means ready");
        assert!(!slice.endpoints[1].ready);
        let fields: Vec<_> = p.iter().filter_map(|p| p.field.as_deref()).collect();
        assert_eq!(
            fields,
            [
                "spec.externalTrafficPolicy",
                "status.loadBalancer.ingress[0].ip",
                "addressType",
                "metadata.annotations.petrel.dev/as-number",
            ],
            "{p:#?}"
        );
    }

    #[test]
    fn the_source_reads_password_files_so_the_planner_reads_none() {
        let dir = std::env::temp_dir().join(format!("petrel-model-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("key"), "s3cret\n").expect("key");
        std::fs::write(
            dir.join("peers.yaml"),
            r#"apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 10.0.0.254, asNumber: 65000, password: {file: key}}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: gone}
spec: {peerIP: 10.0.0.253, asNumber: 65000, password: {file: missing}}
"#,
        )
        .expect("peers");
        let (s, p) = load_dir(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.source, dir.display().to_string());
        assert_eq!(
            s.files.get("key"),
            Some(&Ok(crate::Sensitive("s3cret".to_string())))
        );
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "a debug dump of the snapshot shows the password"
        );
        let missing = s.files.get("missing").expect("tried");
        assert!(
            missing.as_ref().is_err_and(|e| e.contains("missing")),
            "{missing:?}"
        );
    }

    #[test]
    fn a_file_broken_mid_write_keeps_its_last_valid_version() {
        let dir = std::env::temp_dir().join(format!("petrel-files-kept-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("peers.yaml");
        let peer = |name: &str| {
            format!(
                "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: {name}}}\nspec: {{peerIP: 10.0.0.1, asNumber: 65000}}\n"
            )
        };
        std::fs::write(&file, format!("{}---\n{}", peer("a"), peer("b"))).expect("write");
        let mut kept = Kept::default();
        let (s, p) = load_dir_keeping(&dir, &mut kept);
        assert_eq!(s.peers.len(), 2, "{p:?}");
        // Cut in the middle of a flow mapping, as a writer caught mid-way
        // leaves it.
        std::fs::write(
            &file,
            format!(
                "{}---\napiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: b",
                peer("a")
            ),
        )
        .expect("write");
        let (s, p) = load_dir_keeping(&dir, &mut kept);
        let names: Vec<&str> = s.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"], "the last valid version, not a deletion");
        assert!(
            p.iter()
                .any(|p| p.message.contains("last valid version stays in force")),
            "{p:?}"
        );
        // Without the memory (a first read), the broken document is
        // reported and the rest used.
        let (s, _) = load_dir(&dir);
        assert_eq!(s.peers.len(), 1);
        // A file removed is a deletion.
        std::fs::remove_file(&file).expect("remove");
        let (s, _) = load_dir_keeping(&dir, &mut kept);
        assert!(s.peers.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
