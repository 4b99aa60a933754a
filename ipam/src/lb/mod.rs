//! LoadBalancer IP allocation, sans-IO.
//!
//! The controller maps `LoadBalancerPool` objects onto [`PoolSpec`]s and each
//! Service of type LoadBalancer onto a [`ServiceRequest`] (with
//! [`ServiceRequest::parse`] from raw strings), and drives one [`Allocator`]:
//!
//! ```text
//!  start / failover:  Allocator::default().with_class(..)
//!                     set_pools(pools)                -> refused pools (their status)
//!                     restore(services' status IPs)   -> addresses not taken back (Events)
//!  every reconcile:   assign(request)                 -> Service status, or an Event
//!  Service deleted, or no longer type LoadBalancer:  release(key)
//!  pools changed:     set_pools(pools)                -> refused pools, addresses dropped;
//!                     then assign every Service again
//!  pool status:       stats()
//! ```
//!
//! The rules, MetalLB's unless said otherwise:
//!
//! - **Pools.** Of two overlapping pools the newer (`created_at`; same age
//!   or none: later by name) is refused, naming both, so a new pool never
//!   takes addresses from one in use. Every address of a CIDR can be handed
//!   out, network and broadcast addresses too (a LoadBalancer IP is a host
//!   route); `avoidBuggyIPs` leaves out IPv4 `.0` and `.255`. A CIDR with
//!   host bits set is refused rather than silently widened.
//! - **Which pools.** A pool serves a Service when it is not disabled, has
//!   addresses of the family, its `serviceSelector` matches the Service's
//!   labels and its `namespaceSelector` the namespace's labels, and either
//!   the Service names it in `petrel.dev/address-pool` (a comma-separated
//!   list; MetalLB takes one name) or, when the Service names none, it has
//!   `autoAssign`. A requested address may come from a pool without
//!   `autoAssign`. Naming a pool that does not exist is an error (MetalLB
//!   falls back to any pool; a typo must not put a Service on addresses
//!   nobody meant for it).
//! - **Which address.** Pools are tried by `priority` (lower first, unset
//!   last), then name; inside a pool, the lowest free address. A Service
//!   with a sharing key first looks, in the same pool order, for an
//!   address already held under its key that it may share (lowest first):
//!   that is what the key is for. Each family is chosen on its own, so a
//!   dual-stack Service may get IPv4 from one pool and IPv6 from another
//!   (MetalLB takes both from one pool).
//! - **Families.** SingleStack: the first of `spec.ipFamilies` (IPv4 if
//!   none). PreferDualStack: each family `spec.ipFamilies` lists (both if
//!   it lists none), those that can be had, at least one. RequireDualStack:
//!   both or nothing. A PreferDualStack Service that got one family gets
//!   the other added, without a change to the first, once it can be had.
//! - **Requested addresses** (`petrel.dev/loadBalancerIPs`, or the
//!   deprecated `spec.loadBalancerIP`, not both) pin the address of their
//!   family; families the policy wants that have no requested address are
//!   chosen as above (MetalLB refuses a dual-stack Service that requests
//!   one address). A requested address that cannot be had is an error
//!   whatever the policy.
//! - **Sharing.** Two Services may hold one address only if both carry the
//!   same `petrel.dev/allow-shared-ip` key, no protocol+port is used by
//!   both, and their `externalTrafficPolicy` agrees: both Cluster, or both
//!   Local with the same non-empty `spec.selector` (with Local the address
//!   is announced from the nodes with endpoints, which must then be the
//!   same for both). As in MetalLB, the key works across namespaces; keep
//!   tenants apart with pools' `namespaceSelector`.
//! - **Stability.** [`Allocator::assign`] keeps every address that still
//!   fits the request: no churn on reconcile, nor when pools are added. An
//!   address that no longer fits (request changed, or pool shrunk, removed,
//!   reselected or set to avoid buggy IPs) is replaced. Disabling a pool,
//!   or setting `autoAssign: false`, only stops new allocations (a disabled
//!   pool's addresses take no new sharers either).
//! - **Failure.** An assignment is all or nothing: when the request cannot
//!   be met, the Service keeps no address (as MetalLB clears it), and the
//!   error says why.
//! - **Class.** Only Services whose `spec.loadBalancerClass` equals the
//!   allocator's class (default: none set) are served; for others
//!   [`Assignment::NotOurs`] says to leave the Service alone.
//!
//! Never handing out one address twice (except to Services that may share
//! it) is the property the tests hold this module to.

mod error;
mod pool;
mod request;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub use error::{AllocError, AllocErrorKind, Dropped, Exclusion, ShareConflict, Unfit};
pub use pool::{AddressRange, IpFamily, PoolError, PoolSpec, RangeError, is_buggy};
pub use request::{
    ANNOTATION_ADDRESS_POOL, ANNOTATION_ALLOW_SHARED_IP, ANNOTATION_LOAD_BALANCER_IPS,
    IpFamilyPolicy, Protocol, RawPort, RawService, RequestedIpsSource, ServiceKey, ServicePort,
    ServiceRequest, TrafficPolicy,
};

use pool::{Pool, build_pools, lowest_free};

/// One address of a Service, and the pool it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedIp {
    /// The address.
    pub ip: IpAddr,
    /// The pool's name.
    pub pool: String,
}

/// What [`Allocator::assign`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// petrel serves the Service: write these to `status.loadBalancer.ingress`.
    Assigned {
        /// Its addresses, primary family first.
        ips: Vec<AssignedIp>,
        /// Whether they differ from what the Service held before the call.
        changed: bool,
        /// Addresses it held before the call and no longer has.
        released: Vec<IpAddr>,
        /// PreferDualStack only: why a family it wants got no address (a
        /// warning for an Event; it is retried on every assign).
        shortfall: Option<AllocError>,
    },
    /// The Service has another `spec.loadBalancerClass`: another controller
    /// owns its status, so petrel must not write it.
    NotOurs {
        /// Addresses petrel held for it and has given up.
        released: Vec<IpAddr>,
    },
}

impl Assignment {
    /// The Service's addresses (none when not ours).
    pub fn ips(&self) -> Vec<IpAddr> {
        match self {
            Assignment::Assigned { ips, .. } => ips.iter().map(|a| a.ip).collect(),
            Assignment::NotOurs { .. } => Vec::new(),
        }
    }
}

/// What [`Allocator::set_pools`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolUpdate {
    /// Pools refused, each for its own status; the others are in use.
    pub rejected: Vec<PoolError>,
    /// Addresses Services lost because they no longer fit a pool; those
    /// Services need [`Allocator::assign`] again.
    pub dropped: Vec<Dropped>,
}

/// Address counts of one family of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FamilyStats {
    /// Addresses the pool can hand out (without `.0`/`.255` when it avoids
    /// them); saturates at `u128::MAX`.
    pub size: u128,
    /// Addresses held (a shared one counts once).
    pub used: u128,
    /// `size - used`.
    pub free: u128,
}

/// A pool's use, for its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// The pool.
    pub name: String,
    /// Whether it is disabled (what it holds stays in use).
    pub disabled: bool,
    /// IPv4 counts.
    pub ipv4: FamilyStats,
    /// IPv6 counts.
    pub ipv6: FamilyStats,
    /// Services holding at least one of its addresses.
    pub services: usize,
}

/// The LoadBalancer IP allocator: pools, and which Service holds which
/// address. Pure state; see the module documentation for the rules.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    class: Option<String>,
    /// In allocation order (priority, name).
    pools: Vec<Pool>,
    /// Every address held, and by whom (more than one only when shared).
    ips: BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
    /// Every Service holding an address: the request it was last assigned
    /// or restored with (needed to judge sharing and, after a pool change,
    /// fit), and its addresses, at most one per family.
    services: BTreeMap<ServiceKey, Held>,
}

#[derive(Debug, Clone)]
struct Held {
    request: ServiceRequest,
    ips: Vec<IpAddr>,
}

/// How strictly an address is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// An address the Service already holds: a disabled pool keeps it.
    Keep,
    /// An address the Service would newly take.
    New,
}

impl Allocator {
    /// An allocator over `pools`, serving Services without a
    /// `loadBalancerClass`; any refused pool is an error. The controller,
    /// which must go on with the good pools when one is bad, uses
    /// [`Allocator::default`] and [`Allocator::set_pools`] instead.
    pub fn new(pools: Vec<PoolSpec>) -> Result<Self, PoolError> {
        let (pools, errors) = build_pools(pools);
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(Allocator {
                pools,
                ..Allocator::default()
            }),
        }
    }

    /// Serve only Services with `spec.loadBalancerClass: class` (and no
    /// longer those without one).
    pub fn with_class(mut self, class: impl Into<String>) -> Self {
        self.class = Some(class.into());
        self
    }

    /// The class served; none: Services without a class.
    pub fn class(&self) -> Option<&str> {
        self.class.as_deref()
    }

    /// Replaces the pools. Refused pools are reported and left out; every
    /// address held is checked against the new pools, and those that no
    /// longer fit are released and reported. The others stay, even in a
    /// pool now disabled or without `autoAssign`. Assign every Service
    /// afterwards: those that lost an address get another, and those that
    /// had none may now get one.
    pub fn set_pools(&mut self, pools: Vec<PoolSpec>) -> PoolUpdate {
        let (pools, rejected) = build_pools(pools);
        self.pools = pools;
        let mut lost = Vec::new();
        for (key, held) in &self.services {
            for ip in &held.ips {
                if let Err(reason) = self.fit(&held.request, *ip, Mode::Keep) {
                    lost.push(Dropped {
                        service: key.clone(),
                        ip: *ip,
                        reason,
                    });
                }
            }
        }
        for d in &lost {
            self.drop_ip(&d.service, d.ip);
        }
        PoolUpdate {
            rejected,
            dropped: lost,
        }
    }

    /// Takes back the addresses Services show in
    /// `status.loadBalancer.ingress`, after a restart or a failover.
    ///
    /// Services are taken oldest first (`created_at`, unset last, then
    /// namespace/name, whatever the order given), and each address must fit
    /// its Service as [`Allocator::assign`] would keep it. So when two
    /// Services claim one address and may not share it, the older keeps it;
    /// the other's claim is returned, as is any address outside the pools or
    /// otherwise unfit. Services of another class are skipped. A Service
    /// already known is replaced by what is restored. Then assign every
    /// Service: those with a dropped or missing address get one.
    pub fn restore(
        &mut self,
        existing: impl IntoIterator<Item = (ServiceRequest, Vec<IpAddr>)>,
    ) -> Vec<Dropped> {
        let mut entries: Vec<(ServiceRequest, Vec<IpAddr>)> = existing.into_iter().collect();
        entries.sort_by(|(a, _), (b, _)| age(a).cmp(&age(b)));
        let mut dropped = Vec::new();
        for (request, ips) in entries {
            self.release(&request.key);
            if request.load_balancer_class != self.class {
                continue;
            }
            let mut kept: Vec<IpAddr> = Vec::new();
            for ip in ips {
                if kept.contains(&ip) {
                    continue;
                }
                let family = IpFamily::of(&ip);
                let verdict = if kept.iter().any(|k| IpFamily::of(k) == family) {
                    Err(Unfit::SecondOfFamily(family))
                } else {
                    self.fit(&request, ip, Mode::Keep).map(|_| ())
                };
                match verdict {
                    Ok(()) => {
                        self.ips.entry(ip).or_default().insert(request.key.clone());
                        kept.push(ip);
                    }
                    Err(reason) => dropped.push(Dropped {
                        service: request.key.clone(),
                        ip,
                        reason,
                    }),
                }
            }
            if !kept.is_empty() {
                let families = request.families();
                kept.sort_by_key(|ip| families.iter().position(|f| *f == IpFamily::of(ip)));
                self.services
                    .insert(request.key.clone(), Held { request, ips: kept });
            }
        }
        dropped
    }

    /// Gives the Service its addresses: the ones it holds while they still
    /// fit, new ones otherwise. Calling it again with the same request
    /// changes nothing. On error the Service holds nothing.
    pub fn assign(&mut self, request: &ServiceRequest) -> Result<Assignment, AllocError> {
        if request.load_balancer_class != self.class {
            return Ok(Assignment::NotOurs {
                released: self.release(&request.key),
            });
        }
        match self.plan(request) {
            Ok((ips, shortfall)) => Ok(self.commit(request, ips, shortfall)),
            Err(e) => {
                self.release(&request.key);
                Err(e)
            }
        }
    }

    /// Frees the Service's addresses and returns them; a shared address
    /// stays with the other Services until the last one leaves.
    pub fn release(&mut self, key: &ServiceKey) -> Vec<IpAddr> {
        let Some(held) = self.services.remove(key) else {
            return Vec::new();
        };
        for ip in &held.ips {
            self.unlink(key, *ip);
        }
        held.ips
    }

    /// The Service's addresses, primary family first, if it holds any.
    pub fn assigned(&self, key: &ServiceKey) -> Option<Vec<AssignedIp>> {
        self.services
            .get(key)
            .map(|held| held.ips.iter().map(|ip| self.assigned_ip(*ip)).collect())
    }

    /// The Services holding `ip` (two or more when shared).
    pub fn holders(&self, ip: &IpAddr) -> Vec<&ServiceKey> {
        self.ips.get(ip).into_iter().flatten().collect()
    }

    /// The name of the accepted pool containing `ip`.
    pub fn pool_for(&self, ip: &IpAddr) -> Option<&str> {
        self.pool_of(ip).map(Pool::name)
    }

    /// Use of every accepted pool, by name. Counts are computed from the
    /// ranges' bounds and the addresses held, never by enumerating a range.
    pub fn stats(&self) -> Vec<PoolStats> {
        let mut out: Vec<PoolStats> = self
            .pools
            .iter()
            .map(|pool| {
                let mut stats = PoolStats {
                    name: pool.name().to_string(),
                    disabled: pool.spec.disabled,
                    ipv4: FamilyStats::default(),
                    ipv6: FamilyStats::default(),
                    services: 0,
                };
                let mut services = BTreeSet::new();
                for (range, _) in &pool.ranges {
                    let family = match range.family() {
                        IpFamily::V4 => &mut stats.ipv4,
                        IpFamily::V6 => &mut stats.ipv6,
                    };
                    family.size = family
                        .size
                        .saturating_add(range.usable(pool.spec.avoid_buggy_ips));
                    for (_, holders) in self.ips.range(range.start()..=range.end()) {
                        family.used += 1;
                        services.extend(holders);
                    }
                }
                for family in [&mut stats.ipv4, &mut stats.ipv6] {
                    family.free = family.size.saturating_sub(family.used);
                }
                stats.services = services.len();
                stats
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn pool_of(&self, ip: &IpAddr) -> Option<&Pool> {
        self.pools.iter().find(|p| p.contains(ip))
    }

    fn assigned_ip(&self, ip: IpAddr) -> AssignedIp {
        AssignedIp {
            ip,
            pool: self.pool_for(&ip).unwrap_or_default().to_string(),
        }
    }

    /// Removes `key` as a holder of `ip`; the address is free once nobody
    /// holds it.
    fn unlink(&mut self, key: &ServiceKey, ip: IpAddr) {
        if let Some(holders) = self.ips.get_mut(&ip) {
            holders.remove(key);
            if holders.is_empty() {
                self.ips.remove(&ip);
            }
        }
    }

    /// Takes one address away from a Service, forgetting the Service when
    /// it has none left.
    fn drop_ip(&mut self, key: &ServiceKey, ip: IpAddr) {
        self.unlink(key, ip);
        if let Some(held) = self.services.get_mut(key) {
            held.ips.retain(|i| *i != ip);
            if held.ips.is_empty() {
                self.services.remove(key);
            }
        }
    }

    /// Why `pool` cannot serve the Service when it asks for no address in
    /// particular.
    fn exclusion(pool: &Pool, request: &ServiceRequest, family: IpFamily) -> Option<Exclusion> {
        if pool.spec.disabled {
            return Some(Exclusion::Disabled);
        }
        if !pool.has_family(family) {
            return Some(Exclusion::NoAddressesOfFamily(family));
        }
        if !request.pools.is_empty() {
            if !request.pools.iter().any(|n| n == pool.name()) {
                return Some(Exclusion::NotNamed);
            }
        } else if !pool.spec.auto_assign {
            return Some(Exclusion::NotAutoAssign);
        }
        Self::selector_exclusion(pool, request)
    }

    fn selector_exclusion(pool: &Pool, request: &ServiceRequest) -> Option<Exclusion> {
        if let Some(sel) = &pool.spec.service_selector
            && !sel.matches(&request.labels)
        {
            return Some(Exclusion::ServiceSelector);
        }
        if let Some(sel) = &pool.spec.namespace_selector
            && !sel.matches(&request.namespace_labels)
        {
            return Some(Exclusion::NamespaceSelector);
        }
        None
    }

    /// Whether the Service may hold `ip`: its family is wanted and not
    /// pinned to another address, a pool that serves the Service contains
    /// it and does not avoid it, and every other holder may share it.
    fn fit(&self, request: &ServiceRequest, ip: IpAddr, mode: Mode) -> Result<&Pool, Unfit> {
        let family = IpFamily::of(&ip);
        if !request.families().contains(&family) {
            return Err(Unfit::FamilyNotWanted(family));
        }
        if let Some(wanted) = request.requested(family)
            && wanted != ip
        {
            return Err(Unfit::NotRequested(wanted));
        }
        let pool = self.pool_of(&ip).ok_or(Unfit::NotInAnyPool)?;
        let excluded = |why| Unfit::Excluded {
            pool: pool.name().to_string(),
            why,
        };
        if !request.pools.is_empty() && !request.pools.iter().any(|n| n == pool.name()) {
            return Err(excluded(Exclusion::NotNamed));
        }
        if mode == Mode::New && pool.spec.disabled {
            return Err(excluded(Exclusion::Disabled));
        }
        if let Some(why) = Self::selector_exclusion(pool, request) {
            return Err(excluded(why));
        }
        if !pool.usable(&ip) {
            return Err(Unfit::Buggy {
                pool: pool.name().to_string(),
            });
        }
        for holder in self.ips.get(&ip).into_iter().flatten() {
            if *holder == request.key {
                continue;
            }
            if let Some(other) = self.services.get(holder) {
                compatible(request, &other.request).map_err(|conflict| Unfit::InUse {
                    holder: holder.clone(),
                    conflict,
                })?;
            }
        }
        Ok(pool)
    }

    /// Chooses a new address of `family` for a Service that asks for none
    /// in particular.
    fn pick(&self, request: &ServiceRequest, family: IpFamily) -> Result<IpAddr, AllocError> {
        let mut eligible: Vec<&Pool> = Vec::new();
        let mut excluded = Vec::new();
        for pool in &self.pools {
            match Self::exclusion(pool, request, family) {
                None => eligible.push(pool),
                // Listing every pool the Service did not name is noise.
                Some(Exclusion::NotNamed) => {}
                Some(why) => excluded.push((pool.name().to_string(), why)),
            }
        }
        if eligible.is_empty() {
            return Err(AllocError::new(
                request.key.clone(),
                AllocErrorKind::NoPool { family, excluded },
            ));
        }
        if request.key_for_sharing().is_some() {
            for pool in &eligible {
                for range in pool.ranges_of(family) {
                    for (ip, _) in self.ips.range(range.start()..=range.end()) {
                        if self.fit(request, *ip, Mode::New).is_ok() {
                            return Ok(*ip);
                        }
                    }
                }
            }
        }
        for pool in &eligible {
            for range in pool.ranges_of(family) {
                if let Some(ip) = lowest_free(range, &self.ips, pool.spec.avoid_buggy_ips) {
                    return Ok(ip);
                }
            }
        }
        Err(AllocError::new(
            request.key.clone(),
            AllocErrorKind::Exhausted {
                family,
                pools: eligible.iter().map(|p| p.name().to_string()).collect(),
            },
        ))
    }

    /// The addresses the Service should hold, primary family first, and for
    /// PreferDualStack why a family got none; no state changes.
    fn plan(
        &self,
        request: &ServiceRequest,
    ) -> Result<(Vec<IpAddr>, Option<AllocError>), AllocError> {
        let families = request.families();
        let field = request.requested_ips_from.field();
        let mut requested_families = Vec::new();
        for ip in &request.requested_ips {
            let family = IpFamily::of(ip);
            let unfit = if requested_families.contains(&family) {
                Unfit::SecondOfFamily(family)
            } else if !families.contains(&family) {
                Unfit::FamilyNotWanted(family)
            } else {
                requested_families.push(family);
                continue;
            };
            return Err(AllocError::requested(&request.key, *ip, field, unfit));
        }
        if let Some(name) = request
            .pools
            .iter()
            .find(|n| !self.pools.iter().any(|p| p.name() == n.as_str()))
        {
            return Err(AllocError::new(
                request.key.clone(),
                AllocErrorKind::UnknownPool { pool: name.clone() },
            ));
        }
        let held: &[IpAddr] = self
            .services
            .get(&request.key)
            .map_or(&[], |h| h.ips.as_slice());

        let mut chosen = Vec::new();
        let mut shortfalls = Vec::new();
        for family in families {
            if let Some(ip) = held.iter().find(|ip| IpFamily::of(ip) == family)
                && self.fit(request, *ip, Mode::Keep).is_ok()
            {
                chosen.push(*ip);
                continue;
            }
            let requested = request.requested(family);
            let result = match requested {
                Some(ip) => self
                    .fit(request, ip, Mode::New)
                    .map(|_| ip)
                    .map_err(|unfit| AllocError::requested(&request.key, ip, field, unfit)),
                None => self.pick(request, family),
            };
            match (result, request.ip_family_policy, requested) {
                (Ok(ip), _, _) => chosen.push(ip),
                (Err(e), IpFamilyPolicy::PreferDualStack, None) => shortfalls.push(e),
                (Err(e), IpFamilyPolicy::RequireDualStack, None) => {
                    return Err(AllocError::new(
                        request.key.clone(),
                        AllocErrorKind::DualStackUnavailable {
                            family,
                            cause: e.kind,
                        },
                    ));
                }
                (Err(e), _, _) => return Err(e),
            }
        }
        let mut shortfalls = shortfalls.into_iter();
        if chosen.is_empty()
            && let Some(first) = shortfalls.next()
        {
            // PreferDualStack and no family at all: the primary's reason.
            return Err(first);
        }
        Ok((chosen, shortfalls.next()))
    }

    fn commit(
        &mut self,
        request: &ServiceRequest,
        ips: Vec<IpAddr>,
        shortfall: Option<AllocError>,
    ) -> Assignment {
        let old = self.release(&request.key);
        for ip in &ips {
            self.ips.entry(*ip).or_default().insert(request.key.clone());
        }
        let released: Vec<IpAddr> = old.iter().filter(|ip| !ips.contains(ip)).copied().collect();
        let changed = !released.is_empty() || ips.iter().any(|ip| !old.contains(ip));
        let assigned = ips.iter().map(|ip| self.assigned_ip(*ip)).collect();
        self.services.insert(
            request.key.clone(),
            Held {
                request: request.clone(),
                ips,
            },
        );
        Assignment::Assigned {
            ips: assigned,
            changed,
            released,
            shortfall,
        }
    }
}

/// The order in which [`Allocator::restore`] takes Services: oldest first.
fn age(request: &ServiceRequest) -> (bool, Option<i64>, &ServiceKey) {
    (
        request.created_at.is_none(),
        request.created_at,
        &request.key,
    )
}

/// Whether `a` may hold an address `b` holds.
fn compatible(a: &ServiceRequest, b: &ServiceRequest) -> Result<(), ShareConflict> {
    match (a.key_for_sharing(), b.key_for_sharing()) {
        (None, _) => return Err(ShareConflict::NoKey),
        (_, None) => return Err(ShareConflict::HolderHasNoKey),
        (Some(ours), Some(theirs)) if ours != theirs => {
            return Err(ShareConflict::KeyDiffers {
                ours: ours.to_string(),
                theirs: theirs.to_string(),
            });
        }
        _ => {}
    }
    if let Some(port) = a.ports.iter().find(|p| b.ports.contains(p)) {
        return Err(ShareConflict::PortClash(*port));
    }
    match (a.external_traffic_policy, b.external_traffic_policy) {
        (TrafficPolicy::Cluster, TrafficPolicy::Cluster) => Ok(()),
        (TrafficPolicy::Local, TrafficPolicy::Local) => {
            if a.selector.is_empty() || b.selector.is_empty() {
                Err(ShareConflict::NoSelector)
            } else if a.selector != b.selector {
                Err(ShareConflict::SelectorsDiffer)
            } else {
                Ok(())
            }
        }
        _ => Err(ShareConflict::TrafficPolicyDiffers),
    }
}
