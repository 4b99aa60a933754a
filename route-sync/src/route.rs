//! Routes as route-sync sees them, and the pure diff between the routes
//! wanted and the routes the kernel has.

use foldhash::{HashMap, HashMapExt};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::table::{RouteTable, View};

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;
/// petrel's routing protocol number (`/etc/iproute2/rt_protos.d/petrel.conf`).
pub const DEFAULT_PROTOCOL: u8 = 201;

/// What the kernel does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    /// Forward via next hops.
    Unicast,
    /// Drop silently.
    Blackhole,
    /// Drop with ICMP unreachable.
    Unreachable,
    /// End the lookup in this table: the next rule's table decides.
    Throw,
}

/// One way out.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHop {
    /// Gateway, or `None` for a directly connected destination on `device`.
    pub gateway: Option<IpAddr>,
    /// Output interface index; `None` lets the kernel pick from the gateway.
    pub ifindex: Option<u32>,
    /// ECMP weight (1..=256); 1 when not multipath.
    pub weight: u16,
    /// Treat the gateway as on-link even if no connected route covers it.
    pub onlink: bool,
}

impl NextHop {
    /// A plain gateway.
    pub fn via(gateway: IpAddr) -> Self {
        NextHop {
            gateway: Some(gateway),
            ifindex: None,
            weight: 1,
            onlink: false,
        }
    }
}

/// A route wanted in, or read from, the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// Destination (host bits clear).
    pub prefix: IpNet,
    /// Routing table.
    pub table: u32,
    /// Unicast, blackhole or unreachable.
    pub kind: RouteKind,
    /// Next hops, sorted; several make an ECMP route. Empty for blackhole and unreachable.
    pub next_hops: Vec<NextHop>,
    /// Priority (metric).
    pub metric: u32,
    /// Preferred source address.
    pub source: Option<IpAddr>,
}

impl Route {
    /// A unicast route.
    pub fn unicast(prefix: IpNet, next_hops: Vec<NextHop>) -> Self {
        let mut r = Route {
            prefix: prefix.trunc(),
            table: MAIN_TABLE,
            kind: RouteKind::Unicast,
            next_hops,
            metric: 0,
            source: None,
        };
        r.normalize();
        r
    }

    /// A blackhole route.
    pub fn blackhole(prefix: IpNet) -> Self {
        Route {
            prefix: prefix.trunc(),
            table: MAIN_TABLE,
            kind: RouteKind::Blackhole,
            next_hops: Vec::new(),
            metric: 0,
            source: None,
        }
    }

    /// The kernel's identity of a route: replacing keeps it, anything else is
    /// another route.
    pub fn key(&self) -> RouteKey {
        RouteKey {
            table: self.table,
            prefix: self.prefix,
            metric: self.metric,
        }
    }

    /// Sorts next hops so equal sets compare equal, and drops the weight of a
    /// single next hop (the kernel does not keep it).
    pub fn normalize(&mut self) {
        self.prefix = self.prefix.trunc();
        // The kernel gives IPv6 routes without a priority the metric 1024.
        if matches!(self.prefix, IpNet::V6(_)) && self.metric == 0 {
            self.metric = 1024;
        }
        self.next_hops.sort();
        self.next_hops.dedup();
        if self.next_hops.len() == 1 {
            self.next_hops[0].weight = 1;
        }
    }
}

impl Route {
    /// Whether a route the kernel has is this one: the same content, where an
    /// interface left unspecified here may be whatever the kernel chose.
    pub fn satisfied_by(&self, kernel: &Route) -> bool {
        self.key() == kernel.key()
            && self.kind == kernel.kind
            && self.source == kernel.source
            && hops_satisfied(&self.next_hops, &kernel.next_hops)
    }
}

/// Whether the kernel's next hops `have` are the wanted ones: the same, where
/// an interface left unspecified in `want` may be whatever the kernel chose.
pub(crate) fn hops_satisfied(want: &[NextHop], have: &[NextHop]) -> bool {
    want.len() == have.len()
        && want.iter().zip(have).all(|(w, k)| {
            w.gateway == k.gateway
                && w.weight == k.weight
                && w.onlink == k.onlink
                && (w.ifindex.is_none() || w.ifindex == k.ifindex)
        })
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RouteKind::Blackhole => write!(f, "blackhole {}", self.prefix)?,
            RouteKind::Unreachable => write!(f, "unreachable {}", self.prefix)?,
            RouteKind::Throw => write!(f, "throw {}", self.prefix)?,
            RouteKind::Unicast => write!(f, "{}", self.prefix)?,
        }
        for nh in &self.next_hops {
            if let Some(g) = nh.gateway {
                write!(f, " via {g}")?;
            }
            if let Some(i) = nh.ifindex {
                write!(f, " dev #{i}")?;
            }
            if nh.weight > 1 {
                write!(f, " weight {}", nh.weight)?;
            }
            if nh.onlink {
                f.write_str(" onlink")?;
            }
        }
        if self.table != MAIN_TABLE {
            write!(f, " table {}", self.table)?;
        }
        if self.metric != 0 {
            write!(f, " metric {}", self.metric)?;
        }
        Ok(())
    }
}

/// The kernel's identity of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// Table.
    pub table: u32,
    /// Destination.
    pub prefix: IpNet,
    /// Priority.
    pub metric: u32,
}

/// A route the kernel has, with its protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    /// The route.
    pub route: Route,
    /// `rtm_protocol`.
    pub protocol: u8,
}

/// What must change in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Routes to create.
    pub add: Vec<Route>,
    /// Our routes to replace (same key, different content).
    pub replace: Vec<Route>,
    /// Our routes to delete.
    pub delete: Vec<Route>,
    /// Wanted routes not installed because a route of another protocol holds
    /// the same prefix in the same table.
    pub conflicts: Vec<(Route, KernelRoute)>,
}

impl Changes {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.replace.is_empty() && self.delete.is_empty()
    }
}

/// Compares the wanted routes with the kernel's. Routes of other protocols are
/// never touched; where one holds a wanted route's prefix and table, the wanted
/// route is reported as a conflict instead of installed.
pub fn diff(desired: &[Route], kernel: &[KernelRoute], protocol: u8) -> Changes {
    let mut table = RouteTable::new();
    let mut foreign: HashMap<(u32, IpNet), KernelRoute> = HashMap::new();
    for k in kernel {
        if k.protocol == protocol {
            table.insert(View::Kernel, k.route.clone());
        } else {
            foreign.insert((k.route.table, k.route.prefix), k.clone());
        }
    }
    for d in desired {
        let mut d = d.clone();
        d.normalize();
        if !table.contains_key(View::Wanted, &d.key()) {
            table.insert(View::Wanted, d);
        }
    }
    diff_maps(&table, &foreign)
}

/// [`diff`] over a table the caller keeps anyway: its wanted view
/// normalized, its kernel view the kernel's routes of our protocol, and
/// `foreign` the others by table and prefix.
pub fn diff_maps(table: &RouteTable, foreign: &HashMap<(u32, IpNet), KernelRoute>) -> Changes {
    let mut changes = Changes::default();
    // By key, a route assembled only when it is to change.
    for (key, state) in table.states() {
        let held = foreign.get(&(key.table, key.prefix));
        if state.wanted {
            let assembled = || table.get(View::Wanted, &key).into_iter();
            if let Some(f) = held {
                changes
                    .conflicts
                    .extend(assembled().map(|d| (d, f.clone())));
            } else if !state.installed {
                changes.add.extend(assembled());
            } else if !state.satisfied {
                changes.replace.extend(assembled());
            }
        }
        if state.installed && (!state.wanted || held.is_some()) {
            changes.delete.extend(table.get(View::Kernel, &key));
        }
    }
    changes.delete.sort_by_key(|r| r.key());
    changes.conflicts.sort_by_key(|(r, _)| r.key());
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpNet {
        s.parse().expect("prefix")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn k(route: Route, protocol: u8) -> KernelRoute {
        KernelRoute { route, protocol }
    }

    #[test]
    fn adds_replaces_deletes_only_our_routes() {
        let kernel = vec![
            k(
                Route::unicast(p("10.0.0.0/24"), vec![NextHop::via(ip("192.0.2.1"))]),
                201,
            ),
            k(
                Route::unicast(p("10.0.1.0/24"), vec![NextHop::via(ip("192.0.2.1"))]),
                201,
            ),
            k(
                Route::unicast(p("10.0.2.0/24"), vec![NextHop::via(ip("192.0.2.1"))]),
                201,
            ),
            k(
                Route::unicast(p("172.16.0.0/12"), vec![NextHop::via(ip("192.0.2.254"))]),
                4,
            ),
        ];
        let desired = vec![
            Route::unicast(p("10.0.0.0/24"), vec![NextHop::via(ip("192.0.2.1"))]),
            Route::unicast(p("10.0.1.0/24"), vec![NextHop::via(ip("192.0.2.2"))]),
            Route::blackhole(p("10.244.1.0/24")),
        ];
        let c = diff(&desired, &kernel, 201);
        assert_eq!(c.add, vec![Route::blackhole(p("10.244.1.0/24"))]);
        assert_eq!(c.replace.len(), 1);
        assert_eq!(c.replace[0].prefix, p("10.0.1.0/24"));
        assert_eq!(c.delete.len(), 1);
        assert_eq!(c.delete[0].prefix, p("10.0.2.0/24"));
        assert!(c.conflicts.is_empty());
    }

    #[test]
    fn foreign_routes_are_reported_not_fought() {
        let foreign = k(
            Route::unicast(p("10.9.0.0/24"), vec![NextHop::via(ip("192.0.2.9"))]),
            3,
        );
        let desired = vec![Route::unicast(
            p("10.9.0.0/24"),
            vec![NextHop::via(ip("192.0.2.1"))],
        )];
        let c = diff(&desired, std::slice::from_ref(&foreign), 201);
        assert!(c.is_empty());
        assert_eq!(c.conflicts.len(), 1);
        assert_eq!(c.conflicts[0].1, foreign);
    }

    #[test]
    fn next_hop_order_does_not_matter() {
        let a = NextHop {
            weight: 1,
            ..NextHop::via(ip("192.0.2.1"))
        };
        let b = NextHop {
            weight: 1,
            ..NextHop::via(ip("192.0.2.2"))
        };
        let kernel = vec![k(
            Route::unicast(p("10.0.0.0/24"), vec![a.clone(), b.clone()]),
            201,
        )];
        let desired = vec![Route::unicast(p("10.0.0.0/24"), vec![b, a])];
        assert!(diff(&desired, &kernel, 201).is_empty());
    }
}
