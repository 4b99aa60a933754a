//! What a Service asks for, and how the controller's raw strings become that.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use super::error::{AllocError, AllocErrorKind};
use super::pool::IpFamily;

/// Annotation: the addresses a Service wants, comma-separated, at most one
/// per family (MetalLB's `metallb.io/loadBalancerIPs`). Preferred over the
/// deprecated `spec.loadBalancerIP`, which holds only one address.
pub const ANNOTATION_LOAD_BALANCER_IPS: &str = "petrel.dev/loadBalancerIPs";

/// Annotation: the pools a Service may take addresses from, comma-separated
/// names (MetalLB's `metallb.io/address-pool`, which takes one).
pub const ANNOTATION_ADDRESS_POOL: &str = "petrel.dev/address-pool";

/// Annotation: the sharing key. Services with the same key, non-clashing
/// ports and compatible traffic policies may share an address (MetalLB's
/// `metallb.io/allow-shared-ip`).
pub const ANNOTATION_ALLOW_SHARED_IP: &str = "petrel.dev/allow-shared-ip";

/// A Service's identity: namespace and name. An allocation belongs to the
/// key, so a Service deleted and created again under the same name is the
/// same Service to the allocator (the controller releases on deletion).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ServiceKey {
    /// `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    /// `namespace/name`, as kubectl writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpFamilyPolicy {
    /// One address, of the first family in `spec.ipFamilies` (IPv4 if none).
    #[default]
    SingleStack,
    /// One address of each family listed when both can be had, else one.
    PreferDualStack,
    /// One address of each family, or none at all.
    RequireDualStack,
}

impl fmt::Display for IpFamilyPolicy {
    /// The spelling of `spec.ipFamilyPolicy`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamilyPolicy::SingleStack => "SingleStack",
            IpFamilyPolicy::PreferDualStack => "PreferDualStack",
            IpFamilyPolicy::RequireDualStack => "RequireDualStack",
        })
    }
}

/// A port's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the Kubernetes default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    /// The spelling of `spec.ports[].protocol`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// One of a Service's `spec.ports`: what two Services sharing an address
/// must not both use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    /// `protocol`.
    pub protocol: Protocol,
    /// `port`.
    pub port: u16,
}

impl fmt::Display for ServicePort {
    /// `80/TCP`, as kubectl writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// `spec.externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    /// Every node forwards (the default).
    #[default]
    Cluster,
    /// Only nodes with a ready endpoint take traffic, so the address is
    /// announced only from them.
    Local,
}

/// Where a Service's requested addresses came from, to name the field in
/// messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestedIpsSource {
    /// The `petrel.dev/loadBalancerIPs` annotation.
    #[default]
    Annotation,
    /// `spec.loadBalancerIP`.
    LoadBalancerIp,
}

impl RequestedIpsSource {
    /// The field's name as a user writes it.
    pub fn field(self) -> &'static str {
        match self {
            RequestedIpsSource::Annotation => ANNOTATION_LOAD_BALANCER_IPS,
            RequestedIpsSource::LoadBalancerIp => "spec.loadBalancerIP",
        }
    }
}

/// What one Service of type LoadBalancer asks of the allocator.
///
/// The controller builds it with [`ServiceRequest::parse`] from the
/// Service's raw fields, or fills it directly.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRequest {
    /// The Service.
    pub key: ServiceKey,
    /// `metadata.creationTimestamp` in Unix seconds: in
    /// [`Allocator::restore`](super::Allocator::restore), the older of two
    /// Services claiming one address keeps it.
    pub created_at: Option<i64>,
    /// `metadata.labels`, for pools' `serviceSelector`.
    pub labels: BTreeMap<String, String>,
    /// The labels of the Service's namespace, for pools' `namespaceSelector`.
    pub namespace_labels: BTreeMap<String, String>,
    /// `spec.loadBalancerClass`.
    pub load_balancer_class: Option<String>,
    /// `spec.ipFamilies`, primary first (the API server fills it in).
    pub ip_families: Vec<IpFamily>,
    /// `spec.ipFamilyPolicy`.
    pub ip_family_policy: IpFamilyPolicy,
    /// The addresses asked for, at most one per family.
    pub requested_ips: Vec<IpAddr>,
    /// Where `requested_ips` came from.
    pub requested_ips_from: RequestedIpsSource,
    /// Pools named in `petrel.dev/address-pool`; empty: any pool with
    /// `autoAssign`.
    pub pools: Vec<String>,
    /// `petrel.dev/allow-shared-ip`.
    pub sharing_key: Option<String>,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.selector`: with `Local` traffic policy two Services may share
    /// an address only if they select the same pods.
    pub selector: BTreeMap<String, String>,
}

impl ServiceRequest {
    /// A request with every other field at its Kubernetes default.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceRequest {
            key: ServiceKey::new(namespace, name),
            ..ServiceRequest::default()
        }
    }

    /// The families the Service should get an address of, primary first.
    ///
    /// PreferDualStack wants the families `spec.ipFamilies` lists (the API
    /// server lists both only on a dual-stack cluster, where kube-proxy can
    /// serve both), or both when the list is empty; RequireDualStack always
    /// wants both.
    pub fn families(&self) -> Vec<IpFamily> {
        let mut listed: Vec<IpFamily> = Vec::new();
        for f in &self.ip_families {
            if !listed.contains(f) {
                listed.push(*f);
            }
        }
        let primary = listed.first().copied().unwrap_or(IpFamily::V4);
        match self.ip_family_policy {
            IpFamilyPolicy::SingleStack => vec![primary],
            IpFamilyPolicy::PreferDualStack if listed.len() == 1 => vec![primary],
            IpFamilyPolicy::PreferDualStack | IpFamilyPolicy::RequireDualStack => {
                vec![primary, primary.other()]
            }
        }
    }

    /// The sharing key, if any (an empty one is none).
    pub(crate) fn key_for_sharing(&self) -> Option<&str> {
        self.sharing_key.as_deref().filter(|k| !k.is_empty())
    }

    /// The requested address of `family`.
    pub(crate) fn requested(&self, family: IpFamily) -> Option<IpAddr> {
        self.requested_ips
            .iter()
            .copied()
            .find(|ip| IpFamily::of(ip) == family)
    }

    /// Builds a request from a Service's raw fields, checking every string.
    ///
    /// An error here is an assignment error like any other: the controller
    /// should [`release`](super::Allocator::release) the Service and report
    /// the error, as [`assign`](super::Allocator::assign) does.
    pub fn parse(raw: &RawService) -> Result<ServiceRequest, AllocError> {
        let key = ServiceKey::new(&raw.namespace, &raw.name);
        let bad_field = |field: String, value: &str, reason: &str| {
            AllocError::new(
                key.clone(),
                AllocErrorKind::BadField {
                    field,
                    value: value.to_string(),
                    reason: reason.to_string(),
                },
            )
        };
        let bad_annotation = |annotation: &'static str, value: &str, reason: String| {
            AllocError::new(
                key.clone(),
                AllocErrorKind::BadAnnotation {
                    annotation,
                    value: value.to_string(),
                    reason,
                },
            )
        };

        let mut ip_families = Vec::new();
        for (i, f) in raw.ip_families.iter().enumerate() {
            ip_families.push(match f.as_str() {
                "IPv4" => IpFamily::V4,
                "IPv6" => IpFamily::V6,
                _ => {
                    return Err(bad_field(
                        format!("spec.ipFamilies[{i}]"),
                        f,
                        "is neither IPv4 nor IPv6",
                    ));
                }
            });
        }
        let ip_family_policy = match non_empty(&raw.ip_family_policy) {
            None | Some("SingleStack") => IpFamilyPolicy::SingleStack,
            Some("PreferDualStack") => IpFamilyPolicy::PreferDualStack,
            Some("RequireDualStack") => IpFamilyPolicy::RequireDualStack,
            Some(other) => {
                return Err(bad_field(
                    "spec.ipFamilyPolicy".into(),
                    other,
                    "is not SingleStack, PreferDualStack or RequireDualStack",
                ));
            }
        };

        let spec_ip = match non_empty(&raw.load_balancer_ip) {
            None => None,
            Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
                bad_field(
                    "spec.loadBalancerIP".into(),
                    text,
                    "is not an IP address; write one address such as 192.0.2.10, or use the petrel.dev/loadBalancerIPs annotation",
                )
            })?),
        };
        let annotation = |name: &str| {
            raw.annotations
                .get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let mut annotated_ips: Vec<IpAddr> = Vec::new();
        if let Some(text) = annotation(ANNOTATION_LOAD_BALANCER_IPS) {
            for item in text.split(',').map(str::trim) {
                let ip: IpAddr = item.parse().map_err(|_| {
                    bad_annotation(
                        ANNOTATION_LOAD_BALANCER_IPS,
                        text,
                        format!(
                            "{item:?} is not an IP address; write addresses separated by commas, such as 192.0.2.10,2001:db8::10"
                        ),
                    )
                })?;
                if let Some(first) = annotated_ips
                    .iter()
                    .find(|a| IpFamily::of(a) == IpFamily::of(&ip))
                {
                    return Err(bad_annotation(
                        ANNOTATION_LOAD_BALANCER_IPS,
                        text,
                        format!(
                            "lists two {} addresses ({first} and {ip}); a Service gets at most one address per family, keep one",
                            IpFamily::of(&ip)
                        ),
                    ));
                }
                annotated_ips.push(ip);
            }
        }
        let (requested_ips, requested_ips_from) = match (spec_ip, annotated_ips.is_empty()) {
            (Some(ip), false) => {
                return Err(bad_annotation(
                    ANNOTATION_LOAD_BALANCER_IPS,
                    annotation(ANNOTATION_LOAD_BALANCER_IPS).unwrap_or_default(),
                    format!(
                        "is set together with spec.loadBalancerIP ({ip}); keep only the annotation (spec.loadBalancerIP is deprecated)"
                    ),
                ));
            }
            (Some(ip), true) => (vec![ip], RequestedIpsSource::LoadBalancerIp),
            (None, _) => (annotated_ips, RequestedIpsSource::Annotation),
        };

        let mut pools: Vec<String> = Vec::new();
        if let Some(text) = annotation(ANNOTATION_ADDRESS_POOL) {
            for item in text.split(',').map(str::trim) {
                if item.is_empty() {
                    return Err(bad_annotation(
                        ANNOTATION_ADDRESS_POOL,
                        text,
                        "has an empty pool name; write LoadBalancerPool names separated by commas"
                            .into(),
                    ));
                }
                if !pools.iter().any(|p| p == item) {
                    pools.push(item.to_string());
                }
            }
        }
        let sharing_key = annotation(ANNOTATION_ALLOW_SHARED_IP).map(str::to_string);

        let mut ports = Vec::new();
        for (i, p) in raw.ports.iter().enumerate() {
            let protocol = match non_empty(&p.protocol) {
                None | Some("TCP") => Protocol::Tcp,
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                Some(other) => {
                    return Err(bad_field(
                        format!("spec.ports[{i}].protocol"),
                        other,
                        "is not TCP, UDP or SCTP",
                    ));
                }
            };
            let port = u16::try_from(p.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    bad_field(
                        format!("spec.ports[{i}].port"),
                        &p.port.to_string(),
                        "is not between 1 and 65535",
                    )
                })?;
            ports.push(ServicePort { protocol, port });
        }
        let external_traffic_policy = match non_empty(&raw.external_traffic_policy) {
            None | Some("Cluster") => TrafficPolicy::Cluster,
            Some("Local") => TrafficPolicy::Local,
            Some(other) => {
                return Err(bad_field(
                    "spec.externalTrafficPolicy".into(),
                    other,
                    "is neither Cluster nor Local",
                ));
            }
        };

        Ok(ServiceRequest {
            key,
            created_at: raw.created_at,
            labels: raw.labels.clone(),
            namespace_labels: raw.namespace_labels.clone(),
            load_balancer_class: non_empty(&raw.load_balancer_class).map(str::to_string),
            ip_families,
            ip_family_policy,
            requested_ips,
            requested_ips_from,
            pools,
            sharing_key,
            ports,
            external_traffic_policy,
            selector: raw.selector.clone(),
        })
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A Service's fields as strings, the way the controller reads them off a
/// `v1` Service, for [`ServiceRequest::parse`]. Absent and empty strings
/// mean the Kubernetes default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawService {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.creationTimestamp` in Unix seconds.
    pub created_at: Option<i64>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations` (only petrel's are read).
    pub annotations: BTreeMap<String, String>,
    /// The labels of the Service's namespace.
    pub namespace_labels: BTreeMap<String, String>,
    /// `spec.loadBalancerClass`.
    pub load_balancer_class: Option<String>,
    /// `spec.loadBalancerIP`.
    pub load_balancer_ip: Option<String>,
    /// `spec.ipFamilies`.
    pub ip_families: Vec<String>,
    /// `spec.ipFamilyPolicy`.
    pub ip_family_policy: Option<String>,
    /// `spec.ports`.
    pub ports: Vec<RawPort>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: Option<String>,
    /// `spec.selector`.
    pub selector: BTreeMap<String, String>,
}

/// One of `spec.ports`, raw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawPort {
    /// `protocol` (default TCP).
    pub protocol: Option<String>,
    /// `port`.
    pub port: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawService {
        RawService {
            namespace: "shop".into(),
            name: "web".into(),
            ..RawService::default()
        }
    }

    fn annotated(name: &str, value: &str) -> RawService {
        let mut r = raw();
        r.annotations.insert(name.into(), value.into());
        r
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn defaults_are_kubernetes_defaults() {
        let req = ServiceRequest::parse(&raw()).expect("parses");
        assert_eq!(req.key.to_string(), "shop/web");
        assert_eq!(req.ip_family_policy, IpFamilyPolicy::SingleStack);
        assert_eq!(req.families(), [IpFamily::V4]);
        assert_eq!(req.external_traffic_policy, TrafficPolicy::Cluster);
        assert!(req.requested_ips.is_empty() && req.pools.is_empty());
        assert_eq!(req.sharing_key, None);
        assert_eq!(req.load_balancer_class, None);
    }

    #[test]
    fn parses_every_field() {
        let mut r = annotated(ANNOTATION_LOAD_BALANCER_IPS, " 192.0.2.10 , 2001:db8::10 ");
        r.annotations
            .insert(ANNOTATION_ADDRESS_POOL.into(), "gold, silver,gold".into());
        r.annotations
            .insert(ANNOTATION_ALLOW_SHARED_IP.into(), " dns ".into());
        r.ip_families = vec!["IPv6".into(), "IPv4".into()];
        r.ip_family_policy = Some("PreferDualStack".into());
        r.load_balancer_class = Some("petrel.dev/lb".into());
        r.ports = vec![
            RawPort {
                protocol: None,
                port: 53,
            },
            RawPort {
                protocol: Some("UDP".into()),
                port: 53,
            },
        ];
        r.external_traffic_policy = Some("Local".into());
        r.created_at = Some(7);
        let req = ServiceRequest::parse(&r).expect("parses");
        assert_eq!(req.requested_ips, [ip("192.0.2.10"), ip("2001:db8::10")]);
        assert_eq!(req.requested_ips_from, RequestedIpsSource::Annotation);
        assert_eq!(req.pools, ["gold", "silver"]);
        assert_eq!(req.sharing_key.as_deref(), Some("dns"));
        assert_eq!(req.families(), [IpFamily::V6, IpFamily::V4]);
        assert_eq!(req.load_balancer_class.as_deref(), Some("petrel.dev/lb"));
        assert_eq!(
            req.ports,
            [
                ServicePort {
                    protocol: Protocol::Tcp,
                    port: 53
                },
                ServicePort {
                    protocol: Protocol::Udp,
                    port: 53
                }
            ]
        );
        assert_eq!(req.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(req.created_at, Some(7));
    }

    #[test]
    fn load_balancer_ip_is_a_request_too() {
        let mut r = raw();
        r.load_balancer_ip = Some("198.51.100.4".into());
        let req = ServiceRequest::parse(&r).expect("parses");
        assert_eq!(req.requested_ips, [ip("198.51.100.4")]);
        assert_eq!(req.requested_ips_from, RequestedIpsSource::LoadBalancerIp);
        // An empty spec.loadBalancerIP is common and means none.
        r.load_balancer_ip = Some(String::new());
        assert!(
            ServiceRequest::parse(&r)
                .expect("parses")
                .requested_ips
                .is_empty()
        );
    }

    fn error(r: &RawService) -> String {
        ServiceRequest::parse(r)
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn bad_annotations_name_the_annotation_and_the_text() {
        let msg = error(&annotated(ANNOTATION_LOAD_BALANCER_IPS, "192.0.2.10,nope"));
        assert!(msg.contains("Service shop/web"), "{msg}");
        assert!(msg.contains("petrel.dev/loadBalancerIPs"), "{msg}");
        assert!(
            msg.contains("\"192.0.2.10,nope\"") && msg.contains("\"nope\" is not an IP address"),
            "{msg}"
        );

        let msg = error(&annotated(
            ANNOTATION_LOAD_BALANCER_IPS,
            "192.0.2.10,192.0.2.11",
        ));
        assert!(
            msg.contains("two IPv4 addresses (192.0.2.10 and 192.0.2.11)"),
            "{msg}"
        );

        let msg = error(&annotated(ANNOTATION_ADDRESS_POOL, "gold,,silver"));
        assert!(
            msg.contains("petrel.dev/address-pool") && msg.contains("empty pool name"),
            "{msg}"
        );

        let mut both = annotated(ANNOTATION_LOAD_BALANCER_IPS, "192.0.2.10");
        both.load_balancer_ip = Some("192.0.2.10".into());
        let msg = error(&both);
        assert!(msg.contains("together with spec.loadBalancerIP"), "{msg}");
    }

    #[test]
    fn bad_fields_name_the_field_and_the_value() {
        let mut r = raw();
        r.load_balancer_ip = Some("192.0.2".into());
        let msg = error(&r);
        assert!(
            msg.contains("spec.loadBalancerIP \"192.0.2\" is not an IP address"),
            "{msg}"
        );

        let mut r = raw();
        r.ip_families = vec!["IPv4".into(), "IPX".into()];
        assert!(error(&r).contains("spec.ipFamilies[1] \"IPX\""));

        let mut r = raw();
        r.ip_family_policy = Some("DualStack".into());
        assert!(error(&r).contains("spec.ipFamilyPolicy \"DualStack\""));

        let mut r = raw();
        r.ports = vec![RawPort {
            protocol: Some("ICMP".into()),
            port: 1,
        }];
        assert!(error(&r).contains("spec.ports[0].protocol \"ICMP\""));

        let mut r = raw();
        r.ports = vec![RawPort {
            protocol: None,
            port: 70000,
        }];
        assert!(error(&r).contains("spec.ports[0].port \"70000\""));

        let mut r = raw();
        r.external_traffic_policy = Some("Global".into());
        assert!(error(&r).contains("spec.externalTrafficPolicy \"Global\""));
    }

    #[test]
    fn families_follow_the_policy() {
        let mut req = ServiceRequest::new("ns", "a");
        assert_eq!(req.families(), [IpFamily::V4]);
        req.ip_families = vec![IpFamily::V6];
        assert_eq!(req.families(), [IpFamily::V6]);
        req.ip_family_policy = IpFamilyPolicy::PreferDualStack;
        // A single-stack cluster lists one family: kube-proxy serves no other.
        assert_eq!(req.families(), [IpFamily::V6]);
        req.ip_families = vec![];
        assert_eq!(req.families(), [IpFamily::V4, IpFamily::V6]);
        req.ip_family_policy = IpFamilyPolicy::RequireDualStack;
        req.ip_families = vec![IpFamily::V6];
        assert_eq!(req.families(), [IpFamily::V6, IpFamily::V4]);
    }
}
