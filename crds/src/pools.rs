//! Address pools: `LoadBalancerPool` (addresses for Services of type
//! LoadBalancer) and `IPPool` (the blocks pod addresses come from).

// Each `printcolumn(...)` of kube's derive repeats `type_ = "string"`,
// which clippy takes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use kube::CustomResource;
use kube::KubeSchema;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::FieldError;
use crate::common::{Cidr, LabelSelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// `LoadBalancerPool.spec`: addresses for Services of type LoadBalancer, and
/// which Services may take them (MetalLB's `IPAddressPool`, Calico's and
/// Cilium's LB IPAM pools).
#[derive(
    CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize,
)]
#[kube(
    group = "petrel.dev",
    version = "v1alpha1",
    kind = "LoadBalancerPool",
    plural = "loadbalancerpools",
    status = "LoadBalancerPoolStatus",
    derive = "PartialEq",
    shortname = "lbpool",
    category = "petrel",
    doc = "Addresses for Services of type LoadBalancer: CIDRs or start-end ranges, which Services and namespaces may use them, and in which order pools are tried.",
    printcolumn(name = "CIDRs", type_ = "string", json_path = ".spec.cidrs"),
    printcolumn(name = "Used-IPv4", type_ = "string", json_path = ".status.usedIPv4"),
    printcolumn(name = "Free-IPv4", type_ = "string", json_path = ".status.freeIPv4"),
    printcolumn(name = "Used-IPv6", type_ = "string", json_path = ".status.usedIPv6"),
    printcolumn(name = "Free-IPv6", type_ = "string", json_path = ".status.freeIPv6"),
    printcolumn(
        name = "Disabled",
        type_ = "boolean",
        json_path = ".spec.disabled",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("size(self.cidrs) > 0").message("cidrs needs at least one CIDR or range"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerPoolSpec {
    /// The addresses: CIDRs (`192.0.2.0/24`, `2001:db8::/120`) or inclusive
    /// ranges (`192.0.2.10-192.0.2.20`), IPv4 and IPv6 mixed freely. They
    /// must not overlap each other.
    #[schemars(length(min = 1))]
    pub cidrs: Vec<AddressRange>,
    /// Give addresses to Services that did not ask for one
    /// (`spec.loadBalancerIP` or the `petrel.dev/loadBalancerIPs`
    /// annotation); default true. With false, only Services that name an
    /// address in this pool get one from it.
    #[schemars(extend("default" = true))]
    pub auto_assign: Option<bool>,
    /// Never hand out IPv4 addresses ending in `.0` or `.255` (some old
    /// clients and middleboxes drop them); default false.
    #[serde(rename = "avoidBuggyIPs", default)]
    #[schemars(extend("default" = false))]
    pub avoid_buggy_ips: Option<bool>,
    /// The order pools are tried in: lower first. Pools without a priority
    /// come after all pools with one; ties go by name.
    #[schemars(range(max = 2147483647))]
    pub priority: Option<u32>,
    /// Only Services whose labels match take addresses from this pool; none:
    /// every Service.
    pub service_selector: Option<LabelSelector>,
    /// Only Services in namespaces whose labels match (the
    /// `kubernetes.io/metadata.name` label selects by name); none: every
    /// namespace.
    pub namespace_selector: Option<LabelSelector>,
    /// Hand out no new addresses from this pool; Services keep the ones
    /// they have. Default false.
    #[schemars(extend("default" = false))]
    pub disabled: Option<bool>,
}

/// `LoadBalancerPool.status`: written by the controller.
///
/// Counts are decimal strings, not integers: an IPv6 pool easily holds more
/// addresses than JSON numbers carry exactly (a /64 has 2^64, a /48 2^80).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerPoolStatus {
    /// `Ready`: the spec is valid (the message names a wrong field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// IPv4 addresses given to Services.
    #[serde(rename = "usedIPv4")]
    pub used_ipv4: Option<AddressCount>,
    /// IPv4 addresses still free (less the avoided ones with `avoidBuggyIPs`).
    #[serde(rename = "freeIPv4")]
    pub free_ipv4: Option<AddressCount>,
    /// IPv6 addresses given to Services.
    #[serde(rename = "usedIPv6")]
    pub used_ipv6: Option<AddressCount>,
    /// IPv6 addresses still free.
    #[serde(rename = "freeIPv6")]
    pub free_ipv6: Option<AddressCount>,
}

/// A number of addresses, written as a decimal string (`"254"`,
/// `"18446744073709551616"`).
///
/// Up to 2^128 - 1: a pool of all of IPv6 (`::/0`, 2^128 addresses) shows
/// one less, which nobody will notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AddressCount(pub u128);

impl fmt::Display for AddressCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for AddressCount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddressCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map(AddressCount)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a count of addresses")))
    }
}

impl JsonSchema for AddressCount {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "AddressCount".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A number of addresses, as a decimal string (IPv6 counts exceed 64 bits).",
            "type": "string",
            "pattern": "^[0-9]{1,39}$",
        })
    }
}

/// One entry of `LoadBalancerPool.spec.cidrs`: a CIDR or an inclusive
/// `start-end` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressRange {
    /// Every address of the CIDR (host bits must be zero).
    Cidr(IpNet),
    /// From `start` to `end`, both included, one family.
    Range {
        /// The first address.
        start: IpAddr,
        /// The last address.
        end: IpAddr,
    },
}

/// The schema's pattern for a `start-end` range (the addresses themselves
/// are checked by [`AddressRange::from_str`]).
pub const RANGE_PATTERN: &str = "^[0-9a-fA-F.:]+ *- *[0-9a-fA-F.:]+$";

/// Why an [`AddressRange`] is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressRangeError {
    /// Neither a CIDR nor a range of two addresses.
    #[error("{0:?} is not a CIDR (192.0.2.0/24) or a range (192.0.2.10-192.0.2.20)")]
    Syntax(String),
    /// The CIDR has bits set past its prefix length.
    #[error("{given} has host bits set: the CIDR is {canonical}")]
    HostBits {
        /// As written.
        given: IpNet,
        /// What was probably meant.
        canonical: IpNet,
    },
    /// The two ends are of different families.
    #[error("{start}-{end} mixes IPv4 and IPv6")]
    MixedFamilies {
        /// The first address.
        start: IpAddr,
        /// The last address.
        end: IpAddr,
    },
    /// The range ends before it starts.
    #[error("{start}-{end} ends before it starts")]
    Backwards {
        /// The first address.
        start: IpAddr,
        /// The last address.
        end: IpAddr,
    },
}

impl FromStr for AddressRange {
    type Err = AddressRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let syntax = || AddressRangeError::Syntax(text.to_string());
        if text.contains('/') {
            let net: IpNet = text.parse().map_err(|_| syntax())?;
            if net.trunc() != net {
                return Err(AddressRangeError::HostBits {
                    given: net,
                    canonical: net.trunc(),
                });
            }
            return Ok(AddressRange::Cidr(net));
        }
        let (a, b) = text.split_once('-').ok_or_else(syntax)?;
        let start: IpAddr = a.trim().parse().map_err(|_| syntax())?;
        let end: IpAddr = b.trim().parse().map_err(|_| syntax())?;
        if start.is_ipv4() != end.is_ipv4() {
            return Err(AddressRangeError::MixedFamilies { start, end });
        }
        if end < start {
            return Err(AddressRangeError::Backwards { start, end });
        }
        Ok(AddressRange::Range { start, end })
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressRange::Cidr(net) => write!(f, "{net}"),
            AddressRange::Range { start, end } => write!(f, "{start}-{end}"),
        }
    }
}

impl Serialize for AddressRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddressRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for AddressRange {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "AddressRange".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A CIDR (192.0.2.0/24) or an inclusive range (192.0.2.10-192.0.2.20).",
            "type": "string",
            "maxLength": 100,
            "anyOf": [{"format": "cidr"}, {"pattern": RANGE_PATTERN}],
        })
    }
}

impl AddressRange {
    /// The first and last address.
    pub fn bounds(&self) -> (IpAddr, IpAddr) {
        match *self {
            AddressRange::Cidr(net) => (net.network(), net.broadcast()),
            AddressRange::Range { start, end } => (start, end),
        }
    }

    /// Whether this is an IPv4 range.
    pub fn is_ipv4(&self) -> bool {
        self.bounds().0.is_ipv4()
    }

    /// How many addresses it holds, at most `u128::MAX` (see
    /// [`AddressCount`]).
    pub fn len(&self) -> u128 {
        let (start, end) = self.bounds();
        as_u128(end)
            .saturating_sub(as_u128(start))
            .saturating_add(1)
    }

    /// Never true: every range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the two share an address.
    pub fn overlaps(&self, other: &AddressRange) -> bool {
        let (a0, a1) = self.bounds();
        let (b0, b1) = other.bounds();
        a0.is_ipv4() == b0.is_ipv4() && a0 <= b1 && b0 <= a1
    }
}

fn as_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl LoadBalancerPoolSpec {
    /// What the schema cannot check: ranges that overlap, selectors
    /// Kubernetes would refuse. The error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.cidrs.is_empty() {
            return Err(FieldError::new(
                "spec.cidrs",
                "needs at least one CIDR or range",
            ));
        }
        for (i, a) in self.cidrs.iter().enumerate() {
            if let Some(j) = self.cidrs[..i].iter().position(|b| a.overlaps(b)) {
                return Err(FieldError::new(
                    format!("spec.cidrs[{i}]"),
                    format!("{a} overlaps spec.cidrs[{j}] ({})", self.cidrs[j]),
                ));
            }
        }
        for (field, sel) in [
            ("spec.serviceSelector", &self.service_selector),
            ("spec.namespaceSelector", &self.namespace_selector),
        ] {
            if let Some(Err(e)) = sel.as_ref().map(LabelSelector::validate) {
                return Err(FieldError::new(field, e));
            }
        }
        Ok(())
    }
}

/// `IPPool.spec`: a range pod addresses come from, handed to nodes in
/// blocks of `blockSize`.
///
/// `encapsulation` picks the tunnel to other nodes (VXLAN, IPIP, or
/// WireGuard, which encrypts), and
/// `natOutgoing` masquerades pods' traffic leaving every pool.
#[derive(
    CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize,
)]
#[kube(
    group = "petrel.dev",
    version = "v1alpha1",
    kind = "IPPool",
    plural = "ippools",
    status = "IpPoolStatus",
    derive = "PartialEq",
    category = "petrel",
    doc = "A range pod addresses come from, handed to nodes in blocks, with the encapsulation used between nodes that the fabric does not route for.",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "Block", type_ = "integer", json_path = ".spec.blockSize"),
    printcolumn(
        name = "Encapsulation",
        type_ = "string",
        json_path = ".spec.encapsulation.type"
    ),
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.encapsulation.mode"
    ),
    printcolumn(name = "Disabled", type_ = "boolean", json_path = ".spec.disabled"),
    printcolumn(name = "Used", type_ = "integer", json_path = ".status.usedAddresses"),
    printcolumn(name = "Free", type_ = "string", json_path = ".status.freeAddresses"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.cidr == oldSelf.cidr")
    .message("cidr cannot change: blocks were cut from it; make a new IPPool and move pods to it"))]
#[x_kube(validation = Rule::new("has(self.blockSize) == has(oldSelf.blockSize) && (!has(self.blockSize) || self.blockSize == oldSelf.blockSize)")
    .message("blockSize cannot change: blocks were cut to it; make a new IPPool and move pods to it"))]
pub struct IpPoolSpec {
    /// The range. Required.
    #[schemars(required, with = "Option<Cidr>")]
    pub cidr: Option<IpNet>,
    /// The prefix length of the blocks nodes get: from the CIDR's own
    /// length (at most 4096 addresses a block: 20 for IPv4, 116 for IPv6)
    /// to 30 (IPv4) or 126 (IPv6); default 26 for IPv4, 122 for IPv6 (64
    /// addresses). A block's first address (and an IPv4 block's last) is
    /// never a pod's.
    // The family-dependent bounds are checked by `validate`: CEL in the
    // subset the project keeps to cannot take a CIDR apart.
    #[schemars(range(max = 128))]
    pub block_size: Option<u8>,
    /// How pod traffic crosses to nodes the fabric does not route pod
    /// addresses for; default none.
    pub encapsulation: Option<EncapsulationSpec>,
    /// Masquerade traffic from pods in this pool to destinations outside
    /// every IPPool; default false.
    #[schemars(extend("default" = false))]
    pub nat_outgoing: Option<bool>,
    /// Only nodes whose labels match get blocks from this pool; none: every
    /// node.
    pub node_selector: Option<LabelSelector>,
    /// Hand out no new addresses or blocks from this pool; blocks in use
    /// stay. Default false.
    #[schemars(extend("default" = false))]
    pub disabled: Option<bool>,
    /// Never lend an address of one node's block to another node: a node
    /// whose blocks are full and finds no free block gets no address.
    /// Default false: it borrows one, and routes it as a host route.
    #[schemars(extend("default" = false))]
    pub strict_affinity: Option<bool>,
    /// What the pool's addresses are for: `Workload` (pods), `Tunnel`
    /// (nodes' tunnel addresses). Default both.
    #[schemars(extend("maxItems" = 2))]
    pub allowed_uses: Option<Vec<PoolUse>>,
    /// Do not advertise the pool's blocks over BGP (routed some other way,
    /// or by the overlay only). Default false.
    #[serde(rename = "disableBGPExport")]
    #[schemars(extend("default" = false))]
    pub disable_bgp_export: Option<bool>,
}

/// `IPPool.status`: `Ready` (the object is valid, written by the
/// controller's conditions task), `Used` (whether nodes get addresses from
/// it, and if not, why) and its usage, counted by the controller from the
/// IPAMBlocks. Counts that can exceed 64 bits are decimal strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolStatus {
    /// `Ready` and `Used`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Blocks the pool has (decimal).
    pub blocks: Option<String>,
    /// Blocks claimed by nodes.
    pub claimed_blocks: Option<u64>,
    /// Blocks no node has claimed (decimal).
    pub free_blocks: Option<String>,
    /// Addresses in use.
    pub used_addresses: Option<u64>,
    /// Addresses that can still be handed out (decimal).
    pub free_addresses: Option<String>,
    /// Addresses a node holds in another node's block.
    pub borrowed_addresses: Option<u64>,
    /// Nodes with a block of the pool.
    pub nodes: Option<u64>,
}

/// What an IPPool's addresses may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PoolUse {
    /// Pod addresses.
    Workload,
    /// Nodes' tunnel addresses (VXLAN, IPIP, WireGuard).
    Tunnel,
}

/// `IPPool.spec.encapsulation`: one tunnel type and when to use it.
///
/// One object rather than Calico's `vxlanMode` / `ipipMode` pair, so that
/// two tunnel types at once cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.mode) || self.type != 'None'")
    .message("mode applies to a tunnel type (VXLAN, IPIP, WireGuard), not to None"))]
pub struct EncapsulationSpec {
    /// `VXLAN`, `IPIP`, `WireGuard` or `None`. Required.
    #[serde(rename = "type")]
    #[schemars(extend("maxLength" = 9))]
    pub kind: EncapsulationType,
    /// `Always`, `CrossSubnet` (only towards nodes the kernel reaches
    /// through a gateway) or `Never`; default `Always` with a tunnel type.
    /// WireGuard encrypts to every node unless `Never`. IPIP and WireGuard
    /// pools are IPv4 only.
    pub mode: Option<EncapsulationMode>,
}

/// The tunnel type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EncapsulationType {
    /// No tunnel: the fabric routes pod addresses (`None` in YAML).
    #[serde(rename = "None")]
    Direct,
    /// VXLAN (UDP 4789).
    #[serde(rename = "VXLAN")]
    Vxlan,
    /// IP in IP (protocol 4).
    #[serde(rename = "IPIP")]
    Ipip,
    /// WireGuard (encrypted, UDP).
    WireGuard,
}

/// When to tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EncapsulationMode {
    /// To every other node.
    Always,
    /// Only to nodes in another L3 subnet.
    CrossSubnet,
    /// Never (the same as type `None`).
    Never,
}

impl IpPoolSpec {
    /// `blockSize`, or its default for the pool's family (26 for IPv4, 122
    /// for IPv6); `None` without a CIDR.
    pub fn block_size_or_default(&self) -> Option<u8> {
        let cidr = self.cidr?;
        Some(self.block_size.unwrap_or(match cidr {
            IpNet::V4(_) => 26,
            IpNet::V6(_) => 122,
        }))
    }

    /// What the schema cannot check: the block size against the CIDR, host
    /// bits, the node selector. The error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        let Some(cidr) = self.cidr else {
            return Err(FieldError::new("spec.cidr", "is required"));
        };
        if cidr.trunc() != cidr {
            return Err(FieldError::new(
                "spec.cidr",
                format!("{cidr} has host bits set: the CIDR is {}", cidr.trunc()),
            ));
        }
        if let Some(size) = self.block_size_or_default() {
            // At most 4096 addresses a block (12 host bits), as Calico.
            let widest = cidr.max_prefix_len() - 12;
            let lowest = cidr.prefix_len().max(widest);
            // At least four addresses: the first is the pods' gateway.
            let highest = cidr.max_prefix_len() - 2;
            if size < lowest || size > highest {
                return Err(FieldError::new(
                    "spec.blockSize",
                    format!("/{size} does not fit {cidr}: use {lowest} to {highest}"),
                ));
            }
        }
        if let Some(Err(e)) = self.node_selector.as_ref().map(LabelSelector::validate) {
            return Err(FieldError::new("spec.nodeSelector", e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> AddressRange {
        s.parse().expect("valid range")
    }

    #[test]
    fn ranges_parse_in_both_forms_and_count_their_addresses() {
        assert_eq!(range("192.0.2.0/24").len(), 256);
        assert_eq!(range("192.0.2.10 - 192.0.2.20").len(), 11);
        assert_eq!(
            range("192.0.2.10-192.0.2.20").to_string(),
            "192.0.2.10-192.0.2.20"
        );
        assert_eq!(range("2001:db8::/48").len(), 1 << 80);
        assert_eq!(range("::/0").len(), u128::MAX, "saturates");
        assert!(range("2001:db8::1-2001:db8::ff").overlaps(&range("2001:db8::/120")));
        assert!(!range("192.0.2.0/25").overlaps(&range("192.0.2.128/25")));
        assert!(
            !range("0.0.0.0/0").overlaps(&range("::/0")),
            "families apart"
        );
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        let err = |s: &str| s.parse::<AddressRange>().expect_err(s).to_string();
        assert!(err("192.0.2.1/24").contains("the CIDR is 192.0.2.0/24"));
        assert!(err("192.0.2.9-192.0.2.1").contains("ends before it starts"));
        assert!(err("192.0.2.1-2001:db8::1").contains("mixes IPv4 and IPv6"));
        assert!(err("192.0.2.300").contains("is not a CIDR"));
        let parsed: Result<LoadBalancerPoolSpec, _> =
            serde_json::from_value(serde_json::json!({"cidrs": ["10.0.0.0/33"]}));
        assert!(parsed.is_err());
    }

    #[test]
    fn pools_refuse_overlaps_and_bad_block_sizes_naming_the_field() {
        let pool = LoadBalancerPoolSpec {
            cidrs: vec![range("192.0.2.0/24"), range("192.0.2.200-192.0.2.210")],
            ..LoadBalancerPoolSpec::default()
        };
        let e = pool.validate().expect_err("overlap");
        assert_eq!(e.field, "spec.cidrs[1]");
        assert!(e.message.contains("spec.cidrs[0]"), "{e}");
        assert_eq!(
            LoadBalancerPoolSpec::default()
                .validate()
                .expect_err("empty")
                .field,
            "spec.cidrs"
        );

        let mut ip = IpPoolSpec {
            cidr: Some("10.244.0.0/16".parse().expect("cidr")),
            ..IpPoolSpec::default()
        };
        assert_eq!(ip.block_size_or_default(), Some(26));
        assert_eq!(ip.validate(), Ok(()));
        ip.block_size = Some(33);
        assert_eq!(ip.validate().expect_err("too long").field, "spec.blockSize");
        ip.block_size = Some(8);
        assert_eq!(
            ip.validate().expect_err("too short").field,
            "spec.blockSize"
        );
        // At most 4096 addresses a block: /20 is the widest IPv4 block.
        ip.block_size = Some(19);
        let e = ip.validate().expect_err("too wide");
        assert_eq!(e.message, "/19 does not fit 10.244.0.0/16: use 20 to 30");
        ip.block_size = Some(20);
        assert_eq!(ip.validate(), Ok(()));
        ip.cidr = Some("fd00:244::/48".parse().expect("cidr"));
        ip.block_size = None;
        assert_eq!(ip.block_size_or_default(), Some(122));
        assert_eq!(ip.validate(), Ok(()));
        ip.block_size = Some(112);
        assert_eq!(ip.validate().expect_err("too wide").field, "spec.blockSize");
        ip.cidr = Some("10.244.1.0/16".parse().expect("cidr"));
        assert_eq!(ip.validate().expect_err("host bits").field, "spec.cidr");
    }

    #[test]
    fn address_counts_are_decimal_strings() {
        let c = AddressCount(1 << 80);
        let v = serde_json::to_value(c).expect("serialises");
        assert_eq!(v, serde_json::json!("1208925819614629174706176"));
        assert_eq!(
            serde_json::from_value::<AddressCount>(v).expect("parses"),
            c
        );
        assert!(serde_json::from_value::<AddressCount>(serde_json::json!("-1")).is_err());
    }
}
