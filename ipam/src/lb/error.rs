//! Why a Service gets no address, or loses one. Every message names the
//! Service, says what is wrong and how to fix it, so that it can go as is
//! into a Kubernetes Event and the Service's status.

use std::fmt;
use std::net::IpAddr;

use super::pool::IpFamily;
use super::request::{
    ANNOTATION_ADDRESS_POOL, ANNOTATION_ALLOW_SHARED_IP, ServiceKey, ServicePort,
};

/// Why a pool cannot give a Service an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// `spec.disabled` is set.
    Disabled,
    /// The pool has no addresses of the family wanted.
    NoAddressesOfFamily(IpFamily),
    /// The Service names other pools in `petrel.dev/address-pool`.
    NotNamed,
    /// `autoAssign: false`, and the Service neither names the pool nor asks
    /// for one of its addresses.
    NotAutoAssign,
    /// `spec.serviceSelector` does not match the Service's labels.
    ServiceSelector,
    /// `spec.namespaceSelector` does not match the namespace's labels.
    NamespaceSelector,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::Disabled => f.write_str("is disabled (spec.disabled: true)"),
            Exclusion::NoAddressesOfFamily(family) => write!(f, "has no {family} addresses"),
            Exclusion::NotNamed => write!(f, "is not named in {ANNOTATION_ADDRESS_POOL}"),
            Exclusion::NotAutoAssign => write!(
                f,
                "has autoAssign: false and the Service does not name it in {ANNOTATION_ADDRESS_POOL}"
            ),
            Exclusion::ServiceSelector => {
                f.write_str("has a spec.serviceSelector that does not match the Service's labels")
            }
            Exclusion::NamespaceSelector => f.write_str(
                "has a spec.namespaceSelector that does not match the labels of the Service's namespace",
            ),
        }
    }
}

/// Why a Service may not share an address with one that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareConflict {
    /// The Service asking has no sharing key.
    NoKey,
    /// The holder has no sharing key.
    HolderHasNoKey,
    /// The keys differ.
    KeyDiffers {
        /// The asking Service's key.
        ours: String,
        /// The holder's key.
        theirs: String,
    },
    /// Both use this port.
    PortClash(ServicePort),
    /// One has `externalTrafficPolicy: Local`, the other `Cluster`: the
    /// address would be announced from every node for one and only from
    /// endpoint nodes for the other, and one of them would be wrong.
    TrafficPolicyDiffers,
    /// Both are `Local` but select different pods, so their endpoint nodes
    /// (where the address is announced) can differ.
    SelectorsDiffer,
    /// Both are `Local` and at least one has no `spec.selector`: its
    /// endpoints are managed by hand and cannot be shown to be the same.
    NoSelector,
}

impl fmt::Display for ShareConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShareConflict::NoKey => write!(
                f,
                "this Service has no {ANNOTATION_ALLOW_SHARED_IP} annotation; set the holder's key on it to share"
            ),
            ShareConflict::HolderHasNoKey => write!(
                f,
                "the holder has no {ANNOTATION_ALLOW_SHARED_IP} annotation; set the same key on both to share"
            ),
            ShareConflict::KeyDiffers { ours, theirs } => write!(
                f,
                "the {ANNOTATION_ALLOW_SHARED_IP} keys differ ({ours:?} here, {theirs:?} there); use the same key on both to share"
            ),
            ShareConflict::PortClash(port) => write!(
                f,
                "both use port {port}; Services that share an address need distinct ports"
            ),
            ShareConflict::TrafficPolicyDiffers => f.write_str(
                "one has externalTrafficPolicy Local and the other Cluster; Services that share an address need the same policy",
            ),
            ShareConflict::SelectorsDiffer => f.write_str(
                "both have externalTrafficPolicy Local but different spec.selector; with Local they must select the same pods to share",
            ),
            ShareConflict::NoSelector => f.write_str(
                "both have externalTrafficPolicy Local and one has no spec.selector, so their endpoints cannot be compared; use Cluster to share",
            ),
        }
    }
}

/// Why a Service may not have (or keep) a given address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// The address is in no (accepted) pool.
    NotInAnyPool,
    /// The address's pool cannot serve the Service.
    Excluded {
        /// The pool.
        pool: String,
        /// Why.
        why: Exclusion,
    },
    /// The address ends in `.0` or `.255` and its pool avoids those.
    Buggy {
        /// The pool.
        pool: String,
    },
    /// The Service does not want an address of this family.
    FamilyNotWanted(IpFamily),
    /// The Service already has an address of this family.
    SecondOfFamily(IpFamily),
    /// The Service asks for another address of this family.
    NotRequested(IpAddr),
    /// Another Service holds the address and may not share it.
    InUse {
        /// The holder.
        holder: ServiceKey,
        /// Why they cannot share.
        conflict: ShareConflict,
    },
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::NotInAnyPool => f.write_str("is not inside any LoadBalancerPool"),
            Unfit::Excluded { pool, why } => {
                write!(f, "is in LoadBalancerPool {pool}, which {why}")
            }
            Unfit::Buggy { pool } => write!(
                f,
                "ends in .0 or .255 and LoadBalancerPool {pool} has avoidBuggyIPs: true"
            ),
            Unfit::FamilyNotWanted(family) => write!(
                f,
                "is an {family} address and the Service's spec.ipFamilies and spec.ipFamilyPolicy want none"
            ),
            Unfit::SecondOfFamily(family) => write!(
                f,
                "is a second {family} address; a Service has at most one per family"
            ),
            Unfit::NotRequested(requested) => {
                write!(f, "is not {requested}, the address asked for")
            }
            Unfit::InUse { holder, conflict } => {
                write!(f, "is held by Service {holder}, and {conflict}")
            }
        }
    }
}

/// Why a Service gets no address: the Service, and what went wrong. Its
/// text is `Service namespace/name: ` followed by the [`AllocErrorKind`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Service {service}: {kind}")]
pub struct AllocError {
    /// The Service.
    pub service: ServiceKey,
    /// What went wrong (boxed: errors are rare, results are passed a lot).
    pub kind: Box<AllocErrorKind>,
}

impl AllocError {
    /// An error about `service`.
    pub fn new(service: ServiceKey, kind: AllocErrorKind) -> Self {
        AllocError {
            service,
            kind: Box::new(kind),
        }
    }

    /// A CamelCase reason for the Kubernetes Event and status condition.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// The error for a requested address that does not fit.
    pub(crate) fn requested(
        service: &ServiceKey,
        ip: IpAddr,
        field: &'static str,
        unfit: Unfit,
    ) -> Self {
        let kind = match unfit {
            Unfit::InUse { holder, conflict } => AllocErrorKind::RequestedIpInUse {
                ip,
                field,
                holder,
                conflict,
            },
            unfit => AllocErrorKind::RequestedIpUnusable { ip, field, unfit },
        };
        AllocError::new(service.clone(), kind)
    }
}

/// What keeps a Service from getting an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocErrorKind {
    /// A Service field does not parse.
    #[error("{field} {value:?} {reason}")]
    BadField {
        /// The field, such as `spec.ports[1].protocol`.
        field: String,
        /// Its value as written.
        value: String,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// One of petrel's annotations does not parse.
    #[error("annotation {annotation} {value:?}: {reason}")]
    BadAnnotation {
        /// The annotation.
        annotation: &'static str,
        /// Its value as written.
        value: String,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// `petrel.dev/address-pool` names a pool that does not exist (or was
    /// refused). No other pool is used instead: a typo must not put a
    /// Service on addresses nobody meant for it.
    #[error(
        "{ANNOTATION_ADDRESS_POOL} names LoadBalancerPool {pool}, which does not exist or is refused (see its status); fix the name or create the pool"
    )]
    UnknownPool {
        /// The pool named.
        pool: String,
    },
    /// No pool may serve the Service for this family.
    #[error("no LoadBalancerPool may give it an {family} address{}", Exclusions(.excluded))]
    NoPool {
        /// The family.
        family: IpFamily,
        /// Every pool considered, and why it could not serve. Pools the
        /// Service does not name are left out when it names some.
        excluded: Vec<(String, Exclusion)>,
    },
    /// Every pool that may serve the Service is full.
    #[error(
        "no {family} address left in LoadBalancerPool {}; add addresses to a pool, or free some", .pools.join(", ")
    )]
    Exhausted {
        /// The family.
        family: IpFamily,
        /// The pools tried, in order.
        pools: Vec<String>,
    },
    /// The address asked for cannot be given to the Service.
    #[error("{field} asks for {ip}, which {unfit}")]
    RequestedIpUnusable {
        /// The address.
        ip: IpAddr,
        /// `spec.loadBalancerIP` or `petrel.dev/loadBalancerIPs`.
        field: &'static str,
        /// Why not.
        unfit: Unfit,
    },
    /// The address asked for is held by a Service it may not be shared with.
    #[error("{field} asks for {ip}, which Service {holder} holds; {conflict}")]
    RequestedIpInUse {
        /// The address.
        ip: IpAddr,
        /// `spec.loadBalancerIP` or `petrel.dev/loadBalancerIPs`.
        field: &'static str,
        /// The Service holding it.
        holder: ServiceKey,
        /// Why they cannot share.
        conflict: ShareConflict,
    },
    /// `RequireDualStack`, and one family cannot be had.
    #[error(
        "ipFamilyPolicy RequireDualStack needs an IPv4 and an IPv6 address, and no {family} address can be had, so it gets none at all (set PreferDualStack to accept one family): {cause}"
    )]
    DualStackUnavailable {
        /// The family that cannot be had.
        family: IpFamily,
        /// Why.
        cause: Box<AllocErrorKind>,
    },
}

impl AllocErrorKind {
    /// A CamelCase reason for the Kubernetes Event and status condition.
    pub fn reason(&self) -> &'static str {
        match self {
            AllocErrorKind::BadField { .. } | AllocErrorKind::BadAnnotation { .. } => {
                "InvalidService"
            }
            AllocErrorKind::UnknownPool { .. } => "UnknownPool",
            AllocErrorKind::NoPool { .. } => "NoPool",
            AllocErrorKind::Exhausted { .. } => "PoolExhausted",
            AllocErrorKind::RequestedIpUnusable { .. } => "RequestedIPUnusable",
            AllocErrorKind::RequestedIpInUse { .. } => "RequestedIPInUse",
            AllocErrorKind::DualStackUnavailable { .. } => "DualStackUnavailable",
        }
    }
}

/// The list of excluded pools in a [`AllocError::NoPool`] message.
struct Exclusions<'a>(&'a [(String, Exclusion)]);

impl fmt::Display for Exclusions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(": there is no LoadBalancerPool; create one");
        }
        f.write_str(": ")?;
        for (i, (pool, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "LoadBalancerPool {pool} {why}")?;
        }
        f.write_str(
            ". Add a pool that serves it, or change the Service's labels, annotations or ipFamilies",
        )
    }
}

/// An address a Service lost: its pool changed
/// ([`Allocator::set_pools`](super::Allocator::set_pools)), or it could not
/// be taken back ([`Allocator::restore`](super::Allocator::restore)).
/// The Service needs [`Allocator::assign`](super::Allocator::assign) again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The Service.
    pub service: ServiceKey,
    /// The address.
    pub ip: IpAddr,
    /// Why it no longer fits.
    pub reason: Unfit,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Service {}: LoadBalancer IP {} released because it {}; petrel assigns another if it can",
            self.service, self.ip, self.reason
        )
    }
}
