//! Pools: address ranges, their validation, and the search for a free address.
//!
//! Addresses are handled as `u128` inside a family so that IPv4 and IPv6 share
//! one arithmetic; nothing here ever enumerates a range, because an IPv6 pool
//! is routinely a /64 (2^64 addresses).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crds::LabelSelector;
use ipnet::IpNet;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of `ip`.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The other family.
    pub fn other(self) -> Self {
        match self {
            IpFamily::V4 => IpFamily::V6,
            IpFamily::V6 => IpFamily::V4,
        }
    }
}

impl fmt::Display for IpFamily {
    /// The spelling of `spec.ipFamilies`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`to_u128`]; callers only pass values inside a range of
/// `family`, so the IPv4 conversion cannot truncate.
pub(crate) fn from_u128(family: IpFamily, v: u128) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// Whether `ip` ends in `.0` or `.255`: addresses that some old client
/// firmware treats as network or broadcast addresses even inside a larger
/// range, and drops (MetalLB's `avoidBuggyIPs`). IPv6 has no such problem.
pub fn is_buggy(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => matches!(a.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

/// An inclusive range of addresses of one family, from a pool's
/// `spec.cidrs`: a CIDR (`192.0.2.0/24`), a range
/// (`192.0.2.10-192.0.2.20`) or one address.
///
/// Every address of a CIDR is usable, the network and broadcast addresses
/// too (a LoadBalancer IP is a /32 or /128 host route, not a subnet on a
/// link); set `avoid_buggy_ips` on the pool to leave out `.0` and `.255`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRange {
    start: IpAddr,
    end: IpAddr,
}

/// What is wrong with one entry of a pool's `spec.cidrs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Neither an address, a CIDR nor a range.
    #[error(
        "is not an address, a CIDR (192.0.2.0/24, 2001:db8::/64) or an inclusive range (192.0.2.10-192.0.2.20)"
    )]
    Syntax,
    /// A CIDR with bits set after the prefix length: probably a typo for a
    /// different length, so it is refused rather than silently widened.
    #[error("has bits set after the prefix length; write {0} (or the /32 or /128 you meant)")]
    HostBits(IpNet),
    /// A range written backwards.
    #[error("starts at {start}, after its end {end}; write the lower address first")]
    Reversed {
        /// The first address written.
        start: IpAddr,
        /// The second address written.
        end: IpAddr,
    },
    /// A range from an IPv4 to an IPv6 address.
    #[error("goes from {start} to {end}, an IPv4 and an IPv6 address; a range stays in one family")]
    MixedFamilies {
        /// The first address written.
        start: IpAddr,
        /// The second address written.
        end: IpAddr,
    },
}

impl AddressRange {
    /// The range `start..=end`.
    pub fn new(start: IpAddr, end: IpAddr) -> Result<Self, RangeError> {
        if IpFamily::of(&start) != IpFamily::of(&end) {
            return Err(RangeError::MixedFamilies { start, end });
        }
        if start > end {
            return Err(RangeError::Reversed { start, end });
        }
        Ok(AddressRange { start, end })
    }

    /// The first address.
    pub fn start(&self) -> IpAddr {
        self.start
    }

    /// The last address.
    pub fn end(&self) -> IpAddr {
        self.end
    }

    /// The family of its addresses.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.start)
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.start <= *ip && *ip <= self.end
    }

    /// Whether the two share an address.
    pub fn overlaps(&self, other: &AddressRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// How many addresses it holds; `u128::MAX` for `::/0`, whose 2^128
    /// addresses do not fit.
    pub fn size(&self) -> u128 {
        (to_u128(self.end) - to_u128(self.start)).saturating_add(1)
    }

    /// How many of its addresses end in `.0` or `.255` (0 for IPv6).
    pub fn buggy_count(&self) -> u128 {
        if self.family() == IpFamily::V6 {
            return 0;
        }
        let (s, e) = (to_u128(self.start), to_u128(self.end));
        // Values x in [s, e] with x % 256 == r: those <= e minus those < s.
        let upto = |x: u128, r: u128| if x >= r { (x - r) / 256 + 1 } else { 0 };
        let below = |r: u128| if s == 0 { 0 } else { upto(s - 1, r) };
        (upto(e, 0) - below(0)) + (upto(e, 255) - below(255))
    }

    /// The number of addresses a pool can hand out from this range.
    pub(crate) fn usable(&self, avoid_buggy: bool) -> u128 {
        if avoid_buggy {
            self.size() - self.buggy_count()
        } else {
            self.size()
        }
    }
}

impl fmt::Display for AddressRange {
    /// `start-end`, or the one address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for AddressRange {
    type Err = RangeError;

    /// Parses a CIDR, a `start-end` range (spaces around the dash allowed) or
    /// one address.
    fn from_str(s: &str) -> Result<Self, RangeError> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            let a: IpAddr = a.trim().parse().map_err(|_| RangeError::Syntax)?;
            let b: IpAddr = b.trim().parse().map_err(|_| RangeError::Syntax)?;
            return AddressRange::new(a, b);
        }
        if s.contains('/') {
            let net: IpNet = s.parse().map_err(|_| RangeError::Syntax)?;
            if net.addr() != net.network() {
                return Err(RangeError::HostBits(net.trunc()));
            }
            return AddressRange::new(net.network(), net.broadcast());
        }
        let ip: IpAddr = s.parse().map_err(|_| RangeError::Syntax)?;
        AddressRange::new(ip, ip)
    }
}

/// A LoadBalancer pool as the controller hands it over (it maps
/// `LoadBalancerPool` objects onto this; the allocator validates it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// `metadata.name`; what Services name in `petrel.dev/address-pool`.
    pub name: String,
    /// `metadata.creationTimestamp` in Unix seconds. When two pools overlap,
    /// the older keeps the addresses (a new pool must never take addresses
    /// away from one in use); pools of the same age, or without a
    /// timestamp (file source), are ordered by name, and come after those
    /// with one.
    pub created_at: Option<i64>,
    /// `spec.cidrs` (as strings): CIDRs, inclusive `start-end` ranges or single
    /// addresses, IPv4 and IPv6 mixed as needed.
    pub addresses: Vec<String>,
    /// `spec.autoAssign` (default true): false keeps the pool for Services
    /// that name it or ask for one of its addresses.
    pub auto_assign: bool,
    /// `spec.avoidBuggyIPs`: never hand out IPv4 addresses ending in `.0`
    /// or `.255`.
    pub avoid_buggy_ips: bool,
    /// `spec.priority`: lower is tried first; pools without one come after
    /// every pool with one; ties go by name.
    pub priority: Option<u32>,
    /// `spec.serviceSelector`: only Services whose labels match.
    pub service_selector: Option<LabelSelector>,
    /// `spec.namespaceSelector`: only Services whose namespace's labels match.
    pub namespace_selector: Option<LabelSelector>,
    /// `spec.disabled`: no new addresses (nor new sharers of one); Services
    /// that have an address from it keep it.
    pub disabled: bool,
}

impl Default for PoolSpec {
    /// An unnamed, empty pool with the CRD's defaults (`autoAssign: true`).
    fn default() -> Self {
        PoolSpec {
            name: String::new(),
            created_at: None,
            addresses: Vec::new(),
            auto_assign: true,
            avoid_buggy_ips: false,
            priority: None,
            service_selector: None,
            namespace_selector: None,
            disabled: false,
        }
    }
}

impl PoolSpec {
    /// A pool with the CRD's defaults.
    pub fn new(name: impl Into<String>, addresses: &[&str]) -> Self {
        PoolSpec {
            name: name.into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            ..PoolSpec::default()
        }
    }

    /// The order in which overlapping pools claim addresses: older first,
    /// then by name.
    fn precedence(&self) -> (bool, Option<i64>, &str) {
        (self.created_at.is_none(), self.created_at, &self.name)
    }

    /// The order in which pools are tried: priority, then name.
    pub(crate) fn allocation_order(&self) -> (bool, Option<u32>, &str) {
        (self.priority.is_none(), self.priority, &self.name)
    }
}

/// Why a pool is refused. A refused pool hands out nothing; the rest still
/// work. Each message is meant for the pool's status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// `spec.cidrs` lists nothing.
    #[error(
        "LoadBalancerPool {pool}: spec.cidrs is empty; list at least one CIDR or start-end range"
    )]
    NoAddresses {
        /// The pool.
        pool: String,
    },
    /// One entry of `spec.cidrs` does not parse.
    #[error("LoadBalancerPool {pool}: spec.cidrs[{index}] {text:?} {reason}")]
    BadAddress {
        /// The pool.
        pool: String,
        /// Position in `spec.cidrs`.
        index: usize,
        /// The entry as written.
        text: String,
        /// What is wrong with it.
        reason: RangeError,
    },
    /// Two entries of the same pool overlap.
    #[error(
        "LoadBalancerPool {pool}: spec.cidrs[{index}] {text:?} overlaps spec.cidrs[{other_index}] {other_text:?}; list each address once"
    )]
    SelfOverlap {
        /// The pool.
        pool: String,
        /// Position of the later entry.
        index: usize,
        /// The later entry as written.
        text: String,
        /// Position of the earlier entry.
        other_index: usize,
        /// The earlier entry as written.
        other_text: String,
    },
    /// The pool overlaps one that takes precedence.
    #[error(
        "LoadBalancerPool {pool}: spec.cidrs[{index}] {text:?} overlaps {other_text:?} of LoadBalancerPool {other}, which is older (or as old and first by name) and keeps those addresses; remove the overlap from {pool}"
    )]
    Overlap {
        /// The refused pool.
        pool: String,
        /// Position of its overlapping entry.
        index: usize,
        /// Its overlapping entry as written.
        text: String,
        /// The pool that keeps the addresses.
        other: String,
        /// That pool's overlapping entry as written.
        other_text: String,
    },
    /// A selector Kubernetes itself would refuse.
    #[error("LoadBalancerPool {pool}: spec.{field}: {reason}")]
    BadSelector {
        /// The pool.
        pool: String,
        /// `serviceSelector` or `namespaceSelector`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Two pools with one name (only possible outside Kubernetes).
    #[error("LoadBalancerPool {pool}: defined twice; the second definition is ignored, rename it")]
    Duplicate {
        /// The pool.
        pool: String,
    },
}

impl PoolError {
    /// The pool the error is about.
    pub fn pool(&self) -> &str {
        match self {
            PoolError::NoAddresses { pool }
            | PoolError::BadAddress { pool, .. }
            | PoolError::SelfOverlap { pool, .. }
            | PoolError::Overlap { pool, .. }
            | PoolError::BadSelector { pool, .. }
            | PoolError::Duplicate { pool } => pool,
        }
    }
}

/// A validated pool.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    pub(crate) spec: PoolSpec,
    /// Sorted by start; non-overlapping. The `usize` is the entry's index
    /// in `spec.cidrs`, for messages.
    pub(crate) ranges: Vec<(AddressRange, usize)>,
}

impl Pool {
    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }

    pub(crate) fn contains(&self, ip: &IpAddr) -> bool {
        self.ranges.iter().any(|(r, _)| r.contains(ip))
    }

    pub(crate) fn has_family(&self, family: IpFamily) -> bool {
        self.ranges.iter().any(|(r, _)| r.family() == family)
    }

    pub(crate) fn ranges_of(&self, family: IpFamily) -> impl Iterator<Item = &AddressRange> {
        self.ranges
            .iter()
            .map(|(r, _)| r)
            .filter(move |r| r.family() == family)
    }

    /// Whether the pool may hand out `ip` at all (inside, and not a buggy
    /// address it avoids).
    pub(crate) fn usable(&self, ip: &IpAddr) -> bool {
        self.contains(ip) && !(self.spec.avoid_buggy_ips && is_buggy(ip))
    }
}

fn parse_pool(spec: &PoolSpec) -> Result<Pool, PoolError> {
    let pool = || spec.name.clone();
    if spec.addresses.is_empty() {
        return Err(PoolError::NoAddresses { pool: pool() });
    }
    for (field, sel) in [
        ("serviceSelector", &spec.service_selector),
        ("namespaceSelector", &spec.namespace_selector),
    ] {
        if let Some(Err(reason)) = sel.as_ref().map(LabelSelector::validate) {
            return Err(PoolError::BadSelector {
                pool: pool(),
                field,
                reason,
            });
        }
    }
    let mut ranges: Vec<(AddressRange, usize)> = Vec::new();
    for (index, text) in spec.addresses.iter().enumerate() {
        let range: AddressRange = text.parse().map_err(|reason| PoolError::BadAddress {
            pool: pool(),
            index,
            text: text.clone(),
            reason,
        })?;
        if let Some((_, other_index)) = ranges.iter().find(|(r, _)| r.overlaps(&range)) {
            return Err(PoolError::SelfOverlap {
                pool: pool(),
                index,
                text: text.clone(),
                other_index: *other_index,
                other_text: spec.addresses[*other_index].clone(),
            });
        }
        ranges.push((range, index));
    }
    ranges.sort();
    Ok(Pool {
        spec: spec.clone(),
        ranges,
    })
}

/// Validates every pool: returns those accepted, in allocation order, and
/// an error for each refused one. Overlaps are settled in precedence order
/// (older first, then by name), so the pool that loses is always the newer.
pub(crate) fn build_pools(mut specs: Vec<PoolSpec>) -> (Vec<Pool>, Vec<PoolError>) {
    specs.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
    let mut accepted: Vec<Pool> = Vec::new();
    let mut errors = Vec::new();
    for spec in &specs {
        if accepted.iter().any(|p| p.spec.name == spec.name) {
            errors.push(PoolError::Duplicate {
                pool: spec.name.clone(),
            });
            continue;
        }
        let pool = match parse_pool(spec) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let clash = pool.ranges.iter().find_map(|(r, index)| {
            accepted.iter().find_map(|other| {
                other
                    .ranges
                    .iter()
                    .find(|(o, _)| o.overlaps(r))
                    .map(|(_, oi)| (*index, other, *oi))
            })
        });
        if let Some((index, other, other_index)) = clash {
            errors.push(PoolError::Overlap {
                pool: spec.name.clone(),
                index,
                text: spec.addresses[index].clone(),
                other: other.spec.name.clone(),
                other_text: other.spec.addresses[other_index].clone(),
            });
            continue;
        }
        accepted.push(pool);
    }
    accepted.sort_by(|a, b| a.spec.allocation_order().cmp(&b.spec.allocation_order()));
    (accepted, errors)
}

/// The lowest address of `range` that is not a key of `used` (and not
/// `.0`/`.255` with `avoid_buggy`). Walks the used addresses inside the
/// range in order, stopping at the first gap: O(used in range), never
/// O(range size).
pub(crate) fn lowest_free<V>(
    range: &AddressRange,
    used: &BTreeMap<IpAddr, V>,
    avoid_buggy: bool,
) -> Option<IpAddr> {
    let family = range.family();
    let skip_buggy = avoid_buggy && family == IpFamily::V4;
    let end = to_u128(range.end);
    let mut candidate = to_u128(range.start);
    let mut taken = used
        .range(range.start..=range.end)
        .map(|(ip, _)| to_u128(*ip))
        .peekable();
    loop {
        if skip_buggy {
            // .255 is followed by .0, so both are passed in one step.
            candidate += match candidate % 256 {
                0 => 1,
                255 => 2,
                _ => 0,
            };
        }
        if candidate > end {
            return None;
        }
        while taken.next_if(|t| *t < candidate).is_some() {}
        if taken.next_if_eq(&candidate).is_none() {
            return Some(from_u128(family, candidate));
        }
        if candidate == end {
            return None;
        }
        candidate += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn range(s: &str) -> AddressRange {
        s.parse().expect("test range")
    }

    #[test]
    fn parses_cidrs_ranges_and_single_addresses() {
        let r = range("192.0.2.0/24");
        assert_eq!((r.start(), r.end()), (ip("192.0.2.0"), ip("192.0.2.255")));
        let r = range(" 192.0.2.10 - 192.0.2.20 ");
        assert_eq!(
            (r.start(), r.end(), r.size()),
            (ip("192.0.2.10"), ip("192.0.2.20"), 11)
        );
        let r = range("2001:db8::5");
        assert_eq!((r.start(), r.end()), (ip("2001:db8::5"), ip("2001:db8::5")));
        assert_eq!(range("2001:db8::/64").size(), 1 << 64);
        assert_eq!(range("::/0").size(), u128::MAX, "2^128 saturates");
    }

    #[test]
    fn refuses_bad_ranges() {
        assert_eq!("bogus".parse::<AddressRange>(), Err(RangeError::Syntax));
        assert_eq!(
            "192.0.2.0/33".parse::<AddressRange>(),
            Err(RangeError::Syntax)
        );
        assert_eq!(
            "192.0.2.5/24".parse::<AddressRange>(),
            Err(RangeError::HostBits("192.0.2.0/24".parse().expect("net")))
        );
        assert_eq!(
            "192.0.2.20-192.0.2.10".parse::<AddressRange>(),
            Err(RangeError::Reversed {
                start: ip("192.0.2.20"),
                end: ip("192.0.2.10")
            })
        );
        assert!(matches!(
            "192.0.2.1-2001:db8::1".parse::<AddressRange>(),
            Err(RangeError::MixedFamilies { .. })
        ));
    }

    #[test]
    fn counts_buggy_addresses() {
        assert_eq!(range("192.0.2.0/24").buggy_count(), 2);
        assert_eq!(range("10.0.0.0/22").buggy_count(), 8);
        assert_eq!(range("192.0.2.1-192.0.2.254").buggy_count(), 0);
        assert_eq!(range("192.0.2.255-192.0.3.0").buggy_count(), 2);
        assert_eq!(range("0.0.0.0/32").buggy_count(), 1);
        assert_eq!(range("2001:db8::/120").buggy_count(), 0);
        assert_eq!(range("10.0.0.0/22").usable(true), 1016);
    }

    #[test]
    fn lowest_free_walks_gaps() {
        let r = range("192.0.2.1-192.0.2.5");
        let mut used = BTreeMap::new();
        assert_eq!(lowest_free(&r, &used, false), Some(ip("192.0.2.1")));
        used.insert(ip("192.0.2.1"), ());
        used.insert(ip("192.0.2.2"), ());
        used.insert(ip("192.0.2.4"), ());
        // Addresses outside the range do not matter.
        used.insert(ip("192.0.2.0"), ());
        assert_eq!(lowest_free(&r, &used, false), Some(ip("192.0.2.3")));
        used.insert(ip("192.0.2.3"), ());
        assert_eq!(lowest_free(&r, &used, false), Some(ip("192.0.2.5")));
        used.insert(ip("192.0.2.5"), ());
        assert_eq!(lowest_free(&r, &used, false), None);
    }

    #[test]
    fn lowest_free_avoids_buggy_addresses() {
        let r = range("192.0.2.254-192.0.3.2");
        let mut used = BTreeMap::new();
        used.insert(ip("192.0.2.254"), ());
        assert_eq!(lowest_free(&r, &used, true), Some(ip("192.0.3.1")));
        assert_eq!(lowest_free(&r, &used, false), Some(ip("192.0.2.255")));
        let only_buggy = range("192.0.2.255-192.0.3.0");
        assert_eq!(
            lowest_free(&only_buggy, &BTreeMap::<IpAddr, ()>::new(), true),
            None
        );
        let top = range("255.255.255.254-255.255.255.255");
        assert_eq!(
            lowest_free(&top, &BTreeMap::<IpAddr, ()>::new(), true),
            Some(ip("255.255.255.254"))
        );
        used.insert(ip("255.255.255.254"), ());
        assert_eq!(lowest_free(&top, &used, true), None);
    }

    #[test]
    fn lowest_free_in_a_huge_range_is_quick() {
        let r = range("2001:db8::/64");
        let mut used = BTreeMap::new();
        for i in 0..1000u128 {
            used.insert(from_u128(IpFamily::V6, to_u128(r.start()) + i), ());
        }
        assert_eq!(lowest_free(&r, &used, true), Some(ip("2001:db8::3e8")));
        let full = range("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127");
        used.insert(full.start(), ());
        used.insert(full.end(), ());
        assert_eq!(lowest_free(&full, &used, false), None);
    }

    fn spec(name: &str, addresses: &[&str]) -> PoolSpec {
        PoolSpec::new(name, addresses)
    }

    #[test]
    fn overlapping_pools_refuse_the_later_by_name() {
        let (pools, errors) = build_pools(vec![
            spec("b", &["192.0.2.128/25"]),
            spec("a", &["192.0.2.0/24"]),
        ]);
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].name(), "a");
        assert_eq!(errors.len(), 1);
        let msg = errors[0].to_string();
        assert_eq!(errors[0].pool(), "b");
        assert!(
            msg.contains("LoadBalancerPool b") && msg.contains("LoadBalancerPool a"),
            "{msg}"
        );
        assert!(
            msg.contains("192.0.2.128/25") && msg.contains("192.0.2.0/24"),
            "{msg}"
        );
    }

    #[test]
    fn overlapping_pools_refuse_the_newer_before_the_name() {
        let mut old = spec("z-old", &["192.0.2.0/24"]);
        old.created_at = Some(100);
        let mut new = spec("a-new", &["192.0.2.10-192.0.2.20"]);
        new.created_at = Some(200);
        let (pools, errors) = build_pools(vec![new, old]);
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].name(), "z-old");
        assert_eq!(errors[0].pool(), "a-new");
    }

    #[test]
    fn refuses_bad_pools_one_by_one() {
        let mut bad_selector = spec("sel", &["198.51.100.0/24"]);
        bad_selector.service_selector = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![crds::LabelSelectorRequirement {
                key: "app".into(),
                operator: crds::SelectorOperator::In,
                values: vec![],
            }]),
        });
        let (pools, errors) = build_pools(vec![
            spec("empty", &[]),
            spec("typo", &["192.0.2.0/24", "192.0.2.300"]),
            spec("self", &["203.0.113.0/24", "203.0.113.7"]),
            spec("dup", &["2001:db8::/64"]),
            spec("dup", &["2001:db8:1::/64"]),
            bad_selector,
            spec("good", &["2001:db8:2::/64"]),
        ]);
        let names: Vec<_> = pools.iter().map(Pool::name).collect();
        assert_eq!(names, ["dup", "good"]);
        let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 5, "{msgs:#?}");
        assert!(
            msgs.iter()
                .any(|m| m.contains("empty: spec.cidrs is empty"))
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("typo: spec.cidrs[1] \"192.0.2.300\" is not"))
        );
        assert!(
            msgs.iter().any(|m| {
                m.contains("self: spec.cidrs[1] \"203.0.113.7\" overlaps spec.cidrs[0]")
            })
        );
        assert!(msgs.iter().any(|m| m.contains("dup: defined twice")));
        assert!(msgs.iter().any(|m| m.contains("sel: spec.serviceSelector")));
    }

    #[test]
    fn allocation_order_is_priority_then_name_with_unset_last() {
        let mut a = spec("a", &["192.0.2.0/28"]);
        a.priority = None;
        let mut b = spec("b", &["192.0.2.16/28"]);
        b.priority = Some(10);
        let mut c = spec("c", &["192.0.2.32/28"]);
        c.priority = Some(5);
        let mut d = spec("d", &["192.0.2.48/28"]);
        d.priority = Some(10);
        let (pools, errors) = build_pools(vec![a, b, c, d]);
        assert!(errors.is_empty());
        let names: Vec<_> = pools.iter().map(Pool::name).collect();
        assert_eq!(names, ["c", "b", "d", "a"]);
    }
}
