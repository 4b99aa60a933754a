//! One object, as JSON, into the [`Snapshot`]: the parsing the file source
//! and the kube source share, so both report a bad object the same way and
//! skip only it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine;
use crds::{
    API_VERSION, AS_NUMBER_ANNOTATION, BfdProfileSpec, BgpAdvertisementSpec, BgpConfigurationSpec,
    BgpFilterSpec, BgpPeerSpec, IpPoolSpec,
};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::objects::{
    Endpoint, EndpointSlice, Named, Node, Origin, Secret, Service, Snapshot, TrafficPolicy,
};
use crate::problem::{FieldError, Problem};

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
                Err(e) => problems.push(problem(object, Some(e.field), e.reason)),
            },
            (API_VERSION, "BGPPeer") => match typed::<BgpPeerSpec>(value) {
                Ok(spec) => snap.peers.push(Named { name, origin, spec }),
                Err(e) => problems.push(problem(object, Some(e.field), e.reason)),
            },
            (API_VERSION, "BGPFilter") => match typed::<BgpFilterSpec>(value) {
                Ok(spec) => snap.filters.push(Named { name, origin, spec }),
                Err(e) => problems.push(problem(object, Some(e.field), e.reason)),
            },
            (API_VERSION, "BFDProfile") => match typed::<BfdProfileSpec>(value) {
                Ok(spec) => snap.bfd_profiles.push(Named { name, origin, spec }),
                Err(e) => problems.push(problem(object, Some(e.field), e.reason)),
            },
            (API_VERSION, "BGPAdvertisement") => match typed::<BgpAdvertisementSpec>(value) {
                Ok(spec) => snap.advertisements.push(Named { name, origin, spec }),
                Err(e) => problems.push(problem(object, Some(e.field), e.reason)),
            },
            (API_VERSION, "IPPool") => match typed::<IpPoolSpec>(value).and_then(|spec| {
                spec.validate()
                    .map(|()| spec)
                    .map_err(|e| FieldError::new(e.field, e.message))
            }) {
                Ok(spec) => snap.ip_pools.push(Named { name, origin, spec }),
                Err(e) => problems.push(problem(object, Some(e.field), e.reason)),
            },
            ("v1", "Service") => match service(value, name) {
                Ok(sv) => snap.services.push(sv),
                Err(e) => problems.push(problem(object, Some(e.field), e.reason)),
            },
            ("discovery.k8s.io/v1", "EndpointSlice") => match endpoint_slice(value, name) {
                Ok(es) => snap.endpoint_slices.push(es),
                Err(e) => problems.push(problem(object, Some(e.field), e.reason)),
            },
            ("v1", "Node") => match node(value, name) {
                Ok((n, warning)) => {
                    if let Some(e) = warning {
                        problems.push(problem(object, Some(e.field), e.reason));
                    }
                    snap.nodes.push(n);
                }
                Err(e) => problems.push(problem(object, Some(e.field), e.reason)),
            },
            ("v1", "Secret") => match secret(value, name) {
                Ok(s) => snap.secrets.push(s),
                Err(e) => problems.push(problem(object, Some(e.field), e.reason)),
            },
            (
                _,
                "BGPConfiguration" | "BGPPeer" | "BGPFilter" | "BGPAdvertisement" | "BFDProfile"
                | "IPPool",
            ) => problems.push(problem(
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
fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, FieldError> {
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
        FieldError::new(field, e.into_inner().to_string())
    })
}

/// A Node, and a problem that does not stop it from counting (a bad ASN
/// annotation: the node keeps its pod CIDRs and its mesh sessions, with the
/// cluster's ASN).
type NodeRead = (Node, Option<FieldError>);

fn node(v: &Value, name: String) -> Result<NodeRead, FieldError> {
    let mut n = Node {
        name,
        ..Node::default()
    };
    n.labels = string_map(v, "/metadata/labels");
    let mut warning = None;
    let annotations = string_map(v, "/metadata/annotations");
    for (addr_key, mac_key) in crds::VXLAN_ANNOTATIONS {
        let (Some(a), Some(m)) = (annotations.get(addr_key), annotations.get(mac_key)) else {
            continue;
        };
        match (a.trim().parse::<IpAddr>(), crate::objects::parse_mac(m)) {
            (Ok(address), Some(mac)) => n.vteps.push(crate::objects::Vtep { address, mac }),
            // The node counts without a tunnel endpoint: traffic to it is
            // not encapsulated, and the reason shows in the overlay's status.
            _ => {
                warning = Some(FieldError::new(
                    format!("metadata.annotations.{addr_key}"),
                    format!(
                        "{a:?} / {m:?} is not an address and a MAC address; the node's VXLAN endpoint is unknown"
                    ),
                ))
            }
        }
    }
    if let Some(k) = annotations.get(crds::WIREGUARD_ANNOTATION) {
        use base64::Engine as _;
        match base64::engine::general_purpose::STANDARD
            .decode(k.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        {
            Some(key) => n.wireguard_key = Some(key),
            None => {
                warning = Some(FieldError::new(
                    format!("metadata.annotations.{}", crds::WIREGUARD_ANNOTATION),
                    format!(
                        "{k:?} is not a WireGuard public key (32 bytes in base64); the node's traffic is not encrypted"
                    ),
                ))
            }
        }
    }
    if let Some(a) = annotations.get(AS_NUMBER_ANNOTATION) {
        match a.trim().parse() {
            Ok(asn) => n.as_number = Some(asn),
            Err(_) => {
                warning = Some(FieldError::new(
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
            FieldError::new(
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
                    FieldError::new(
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
fn ip_list(v: &Value, pointer: &str, field: &str) -> Result<Vec<IpAddr>, FieldError> {
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
            FieldError::new(
                format!("{field}[{i}]"),
                format!("{s:?} is not an IP address"),
            )
        })?);
    }
    Ok(out)
}

fn traffic_policy(v: &Value, pointer: &str, field: &str) -> Result<TrafficPolicy, FieldError> {
    match v.pointer(pointer).and_then(Value::as_str) {
        None | Some("Cluster") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(other) => Err(FieldError::new(
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

fn service(v: &Value, name: String) -> Result<Service, FieldError> {
    let mut cluster_ips = ip_list(v, "/spec/clusterIPs", "spec.clusterIPs")?;
    if cluster_ips.is_empty()
        && let Some(s) = v.pointer("/spec/clusterIP").and_then(Value::as_str)
        && s != "None"
        && !s.is_empty()
    {
        cluster_ips.push(s.parse().map_err(|_| {
            FieldError::new(
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
                FieldError::new(
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

fn endpoint_slice(v: &Value, name: String) -> Result<EndpointSlice, FieldError> {
    let address_type = v
        .get("addressType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !matches!(address_type.as_str(), "IPv4" | "IPv6" | "FQDN") {
        return Err(FieldError::new(
            "addressType",
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
                return Err(FieldError::new(
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

fn secret(v: &Value, name: String) -> Result<Secret, FieldError> {
    let mut s = Secret {
        name,
        ..Secret::default()
    };
    if let Some(data) = v.get("data").and_then(Value::as_object) {
        for (k, val) in data {
            let text = val.as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| FieldError::new(format!("data.{k}"), format!("not base64: {e}")))?;
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
