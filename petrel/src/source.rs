//! The file source: a directory of Kubernetes-style YAML objects, the same
//! objects a cluster has (`petrel.dev/v1alpha1` BGPConfiguration, BGPPeer,
//! BGPFilter and BGPAdvertisement; core `v1` Node, Service and Secret;
//! `discovery.k8s.io/v1` EndpointSlice).
//!
//! Every document is parsed on its own: a malformed one is reported (file,
//! document, field, why) and skipped, and the others still count.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use crds::{
    API_VERSION, AS_NUMBER_ANNOTATION, BgpAdvertisementSpec, BgpConfigurationSpec, BgpFilterSpec,
    BgpPeerSpec,
};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Where an object came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// The file (for objects from the API server: `KIND NAMESPACE/NAME`).
    pub file: PathBuf,
    /// 1-based document number within the file; 0 for objects from the API
    /// server.
    pub document: usize,
}

impl Origin {
    /// An object read from the Kubernetes API server.
    pub fn api(kind: &str, namespace: Option<&str>, name: &str) -> Origin {
        let id = match namespace {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        };
        Origin {
            file: PathBuf::from(id),
            document: 0,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document == 0 {
            return write!(f, "the API server's {}", self.file.display());
        }
        write!(f, "{} (document {})", self.file.display(), self.document)
    }
}

/// An object with its name and origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named<T> {
    /// `metadata.name`.
    pub name: String,
    /// Where it was read.
    pub origin: Origin,
    /// The spec.
    pub spec: T,
}

/// What petrel needs of a `v1` Node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.podCIDRs` (or the older `spec.podCIDR`).
    pub pod_cidrs: Vec<IpNet>,
    /// `status.addresses` of type InternalIP.
    pub internal_ips: Vec<IpAddr>,
    /// The node's own ASN, from the `petrel.dev/as-number` annotation.
    pub as_number: Option<u32>,
}

/// `spec.externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    /// Any node forwards to any endpoint (the default).
    #[default]
    Cluster,
    /// Only nodes with a local endpoint take traffic.
    Local,
}

/// What petrel needs of a `v1` Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    /// `metadata.namespace` (`default` when absent).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.type`.
    pub service_type: String,
    /// `spec.clusterIPs` (or `spec.clusterIP`); `None` addresses dropped.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
}

impl Service {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One endpoint of an [`EndpointSlice`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; absent counts as ready, as Kubernetes says.
    pub ready: bool,
    /// `nodeName`.
    pub node_name: Option<String>,
}

/// What petrel needs of a `discovery.k8s.io/v1` EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointSlice {
    /// `metadata.namespace` (`default` when absent).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    pub service: Option<String>,
    /// `addressType`: `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    /// The endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// A `v1` Secret's data, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Secret {
    /// `metadata.name`.
    pub name: String,
    /// `data` (base64-decoded) merged with `stringData`.
    pub data: BTreeMap<String, Vec<u8>>,
}

/// Everything read from the source at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// BGPConfiguration objects.
    pub configurations: Vec<Named<BgpConfigurationSpec>>,
    /// BGPPeer objects.
    pub peers: Vec<Named<BgpPeerSpec>>,
    /// BGPFilter objects.
    pub filters: Vec<Named<BgpFilterSpec>>,
    /// BGPAdvertisement objects.
    pub advertisements: Vec<Named<BgpAdvertisementSpec>>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Secrets.
    pub secrets: Vec<Secret>,
    /// The directory, for resolving relative file references.
    pub base: PathBuf,
}

/// Something wrong with one object or file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub origin: String,
    /// Which object (`Kind/name`), if known.
    pub object: Option<String>,
    /// Which field (`spec.asNumber`), if one.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Reads every `*.yaml` / `*.yml` file of a directory (not recursively).
pub fn load_dir(dir: &Path) -> (Snapshot, Vec<Problem>) {
    let mut snap = Snapshot {
        base: dir.to_path_buf(),
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
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => load_text(&f, &text, &mut snap, &mut problems),
            Err(e) => problems.push(Problem {
                origin: f.display().to_string(),
                object: None,
                field: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
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

/// Adds one object (as JSON) to the snapshot, or reports what is wrong with
/// it; objects of kinds petrel does not read are ignored. The file source and
/// the kube source both come through here.
pub fn add_object(value: &Value, origin: Origin, snap: &mut Snapshot, problems: &mut Vec<Problem>) {
    {
        let problem = |object: Option<String>, field: Option<String>, message: String| Problem {
            origin: origin.to_string(),
            object,
            field,
            message,
        };
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let api = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let object = Some(format!("{kind}/{name}"));
        if name.is_empty() {
            problems.push(problem(
                object,
                Some("metadata.name".into()),
                "is required".into(),
            ));
            return;
        }
        match (api.as_str(), kind.as_str()) {
            (API_VERSION, "BGPConfiguration") => match typed::<BgpConfigurationSpec>(value) {
                Ok(spec) => snap.configurations.push(Named { name, origin, spec }),
                Err((field, msg)) => problems.push(problem(object, Some(field), msg)),
            },
            (API_VERSION, "BGPPeer") => match typed::<BgpPeerSpec>(value) {
                Ok(spec) => snap.peers.push(Named { name, origin, spec }),
                Err((field, msg)) => problems.push(problem(object, Some(field), msg)),
            },
            (API_VERSION, "BGPFilter") => match typed::<BgpFilterSpec>(value) {
                Ok(spec) => snap.filters.push(Named { name, origin, spec }),
                Err((field, msg)) => problems.push(problem(object, Some(field), msg)),
            },
            (API_VERSION, "BGPAdvertisement") => match typed::<BgpAdvertisementSpec>(value) {
                Ok(spec) => snap.advertisements.push(Named { name, origin, spec }),
                Err((field, msg)) => problems.push(problem(object, Some(field), msg)),
            },
            ("v1", "Service") => match service(value, name) {
                Ok(sv) => snap.services.push(sv),
                Err((field, msg)) => problems.push(problem(object, Some(field), msg)),
            },
            ("discovery.k8s.io/v1", "EndpointSlice") => match endpoint_slice(value, name) {
                Ok(es) => snap.endpoint_slices.push(es),
                Err((field, msg)) => problems.push(problem(object, Some(field), msg)),
            },
            ("v1", "Node") => match node(value, name) {
                Ok((n, warning)) => {
                    if let Some((field, msg)) = warning {
                        problems.push(problem(object, Some(field), msg));
                    }
                    snap.nodes.push(n);
                }
                Err((field, msg)) => problems.push(problem(object, Some(field), msg)),
            },
            ("v1", "Secret") => match secret(value, name) {
                Ok(s) => snap.secrets.push(s),
                Err((field, msg)) => problems.push(problem(object, Some(field), msg)),
            },
            (_, "BGPConfiguration" | "BGPPeer" | "BGPFilter" | "BGPAdvertisement") => problems
                .push(problem(
                    object,
                    Some("apiVersion".into()),
                    format!("is {api:?}; petrel objects are {API_VERSION}"),
                )),
            (_, "EndpointSlice") => problems.push(problem(
                object,
                Some("apiVersion".into()),
                format!("is {api:?}; EndpointSlices are read as discovery.k8s.io/v1"),
            )),
            // Pods, Deployments and the rest carry nothing petrel routes.
            _ => {}
        }
    }
}

/// Deserializes `spec` into `T`, naming the field on error.
fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, (String, String)> {
    let spec = value
        .get("spec")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        (field, e.into_inner().to_string())
    })
}

/// A Node, and a problem that does not stop it from counting (a bad ASN
/// annotation: the node keeps its pod CIDRs and its mesh sessions, with the
/// cluster's ASN).
type NodeRead = (Node, Option<(String, String)>);

fn node(v: &Value, name: String) -> Result<NodeRead, (String, String)> {
    let mut n = Node {
        name,
        ..Node::default()
    };
    n.labels = string_map(v, "/metadata/labels");
    let mut warning = None;
    if let Some(a) = string_map(v, "/metadata/annotations").get(AS_NUMBER_ANNOTATION) {
        match a.trim().parse() {
            Ok(asn) => n.as_number = Some(asn),
            Err(_) => {
                warning = Some((
                    format!("metadata.annotations.{AS_NUMBER_ANNOTATION}"),
                    format!("{a:?} is not an ASN; the node uses BGPConfiguration's"),
                ))
            }
        }
    }
    let cidrs: Vec<&Value> = match v.pointer("/spec/podCIDRs").and_then(Value::as_array) {
        Some(a) => a.iter().collect(),
        None => v.pointer("/spec/podCIDR").into_iter().collect(),
    };
    for (i, c) in cidrs.into_iter().enumerate() {
        let s = c.as_str().unwrap_or_default();
        let net: IpNet = s.parse().map_err(|_| {
            (
                format!("spec.podCIDRs[{i}]"),
                format!("{s:?} is not a CIDR"),
            )
        })?;
        n.pod_cidrs.push(net);
    }
    if let Some(addrs) = v.pointer("/status/addresses").and_then(Value::as_array) {
        for (i, a) in addrs.iter().enumerate() {
            if a.get("type").and_then(Value::as_str) == Some("InternalIP") {
                let s = a.get("address").and_then(Value::as_str).unwrap_or_default();
                let ip: IpAddr = s.parse().map_err(|_| {
                    (
                        format!("status.addresses[{i}].address"),
                        format!("{s:?} is not an IP address"),
                    )
                })?;
                n.internal_ips.push(ip);
            }
        }
    }
    Ok((n, warning))
}

/// Labels (or annotations) at `pointer`, values as strings.
fn string_map(v: &Value, pointer: &str) -> BTreeMap<String, String> {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, val)| {
                    let text = match val {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The IP addresses of a list of strings at `pointer`, naming the bad one.
fn ip_list(v: &Value, pointer: &str, field: &str) -> Result<Vec<IpAddr>, (String, String)> {
    let mut out = Vec::new();
    for (i, a) in v
        .pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let s = a.as_str().unwrap_or_default();
        // A headless Service's clusterIP is the word None.
        if s == "None" || s.is_empty() {
            continue;
        }
        out.push(s.parse().map_err(|_| {
            (
                format!("{field}[{i}]"),
                format!("{s:?} is not an IP address"),
            )
        })?);
    }
    Ok(out)
}

fn traffic_policy(
    v: &Value,
    pointer: &str,
    field: &str,
) -> Result<TrafficPolicy, (String, String)> {
    match v.pointer(pointer).and_then(Value::as_str) {
        None | Some("Cluster") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(other) => Err((
            field.to_string(),
            format!("{other:?} is not Cluster or Local"),
        )),
    }
}

fn namespace(v: &Value) -> String {
    v.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string()
}

fn service(v: &Value, name: String) -> Result<Service, (String, String)> {
    let mut cluster_ips = ip_list(v, "/spec/clusterIPs", "spec.clusterIPs")?;
    if cluster_ips.is_empty()
        && let Some(s) = v.pointer("/spec/clusterIP").and_then(Value::as_str)
        && s != "None"
        && !s.is_empty()
    {
        cluster_ips.push(s.parse().map_err(|_| {
            (
                "spec.clusterIP".to_string(),
                format!("{s:?} is not an IP address"),
            )
        })?);
    }
    let mut load_balancer_ips = Vec::new();
    for (i, ing) in v
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        // Ingress points given only as hostnames have nothing to route.
        if let Some(s) = ing.get("ip").and_then(Value::as_str) {
            load_balancer_ips.push(s.parse().map_err(|_| {
                (
                    format!("status.loadBalancer.ingress[{i}].ip"),
                    format!("{s:?} is not an IP address"),
                )
            })?);
        }
    }
    Ok(Service {
        namespace: namespace(v),
        name,
        labels: string_map(v, "/metadata/labels"),
        service_type: v
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string(),
        cluster_ips,
        external_ips: ip_list(v, "/spec/externalIPs", "spec.externalIPs")?,
        load_balancer_ips,
        external_traffic_policy: traffic_policy(
            v,
            "/spec/externalTrafficPolicy",
            "spec.externalTrafficPolicy",
        )?,
        internal_traffic_policy: traffic_policy(
            v,
            "/spec/internalTrafficPolicy",
            "spec.internalTrafficPolicy",
        )?,
    })
}

fn endpoint_slice(v: &Value, name: String) -> Result<EndpointSlice, (String, String)> {
    let address_type = v
        .get("addressType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !matches!(address_type.as_str(), "IPv4" | "IPv6" | "FQDN") {
        return Err((
            "addressType".into(),
            format!("{address_type:?} is not IPv4, IPv6 or FQDN"),
        ));
    }
    let mut endpoints = Vec::new();
    for (i, e) in v
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let addresses = if address_type == "FQDN" {
            Vec::new()
        } else {
            ip_list(e, "/addresses", &format!("endpoints[{i}].addresses"))?
        };
        let ready = match e.pointer("/conditions/ready") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err((
                    format!("endpoints[{i}].conditions.ready"),
                    format!("{other} is not true or false"),
                ));
            }
        };
        endpoints.push(Endpoint {
            addresses,
            ready,
            node_name: e
                .get("nodeName")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    Ok(EndpointSlice {
        namespace: namespace(v),
        name,
        service: string_map(v, "/metadata/labels").remove("kubernetes.io/service-name"),
        address_type,
        endpoints,
    })
}

fn secret(v: &Value, name: String) -> Result<Secret, (String, String)> {
    let mut s = Secret {
        name,
        ..Secret::default()
    };
    if let Some(data) = v.get("data").and_then(Value::as_object) {
        for (k, val) in data {
            let text = val.as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| (format!("data.{k}"), format!("not base64: {e}")))?;
            s.data.insert(k.clone(), bytes);
        }
    }
    if let Some(data) = v.get("stringData").and_then(Value::as_object) {
        for (k, val) in data {
            s.data.insert(
                k.clone(),
                val.as_str().unwrap_or_default().as_bytes().to_vec(),
            );
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
