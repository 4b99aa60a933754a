//! A set of routes by key, stored compactly: what makes a route more than its
//! key (kind, next hops, source) is kept once per distinct value and shared.
//!
//! The reconciler keeps two such sets the size of the table (what it wants,
//! and what the kernel has), and a full BGP table has a million routes that
//! share a handful of next-hop sets. Stored as whole [`Route`]s they took
//! ~800 MB at a million routes (measured with heaptrack: each route its own
//! next-hop `Vec`, and the map slot the size of a `Route`); here an entry is
//! a key and a pointer, packed in an `IndexMap`: its entries sit densely in
//! one vector (spare capacity never touched, so never resident) behind an
//! index of integers, where a hash map's slots are 44–88% used and its old
//! and new tables are both resident while it doubles. Growing the index
//! rehashes the whole index at once (~200 ms at a million); that delays
//! only the kernel's catching up, never the speaker or an API read.

use std::net::IpAddr;
use std::sync::Arc;

use foldhash::{HashSet, HashSetExt};

use crate::route::{NextHop, Route, RouteKey, RouteKind, hops_satisfied};

/// Everything of a route but its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Body {
    kind: RouteKind,
    next_hops: Vec<NextHop>,
    source: Option<IpAddr>,
}

impl Body {
    /// Whether the kernel's content `have` is the one wanted, given as its
    /// parts (see [`Route::satisfied_by`]).
    fn satisfies(&self, kind: RouteKind, source: Option<IpAddr>, hops: &[NextHop]) -> bool {
        kind == self.kind && source == self.source && hops_satisfied(hops, &self.next_hops)
    }
}

/// Routes by key, their contents shared.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: indexmap::IndexMap<RouteKey, Arc<Body>, foldhash::fast::RandomState>,
    /// Every distinct content in `routes`, once: a new route takes its
    /// content from here. An entry goes when the last route using it does.
    bodies: HashSet<Arc<Body>>,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        RouteTable {
            routes: indexmap::IndexMap::default(),
            bodies: HashSet::new(),
        }
    }

    /// How many routes it holds.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Adds a route, or replaces the one with the same key. The route is
    /// stored as given (normalize it first if it is to be compared).
    pub fn insert(&mut self, route: Route) {
        let key = route.key();
        let body = Body {
            kind: route.kind,
            next_hops: route.next_hops,
            source: route.source,
        };
        let shared = match self.bodies.get(&body) {
            Some(b) => b.clone(),
            None => {
                let b = Arc::new(body);
                self.bodies.insert(b.clone());
                b
            }
        };
        if let Some(old) = self.routes.insert(key, shared) {
            self.release(old);
        }
    }

    /// Takes out the route with this key.
    pub fn remove(&mut self, key: &RouteKey) -> Option<Route> {
        let body = self.routes.swap_remove(key)?;
        let route = assemble(key, &body);
        self.release(body);
        Some(route)
    }

    /// The route with this key.
    pub fn get(&self, key: &RouteKey) -> Option<Route> {
        self.routes.get(key).map(|b| assemble(key, b))
    }

    /// Whether a route with this key is held.
    pub fn contains_key(&self, key: &RouteKey) -> bool {
        self.routes.contains_key(key)
    }

    /// Whether the route held under `want`'s key satisfies it (the same
    /// content, see [`Route::satisfied_by`]). `want` must be normalized.
    pub fn satisfies(&self, want: &Route) -> bool {
        self.routes
            .get(&want.key())
            .is_some_and(|have| have.satisfies(want.kind, want.source, &want.next_hops))
    }

    /// Whether the route under `key` here is satisfied by the one under the
    /// same key in `have`.
    pub(crate) fn satisfied_in(&self, key: &RouteKey, have: &RouteTable) -> bool {
        match (self.routes.get(key), have.routes.get(key)) {
            (Some(w), Some(h)) => Arc::ptr_eq(w, h) || h.satisfies(w.kind, w.source, &w.next_hops),
            _ => false,
        }
    }

    /// Empties the table.
    pub fn clear(&mut self) {
        self.routes.clear();
        self.bodies.clear();
    }

    /// The keys held, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &RouteKey> {
        self.routes.keys()
    }

    /// How many distinct contents the routes share.
    pub fn distinct_contents(&self) -> usize {
        self.bodies.len()
    }

    /// Drops a content from the shared set once no route uses it: one
    /// reference is the caller's, one the set's.
    fn release(&mut self, body: Arc<Body>) {
        if Arc::strong_count(&body) == 2 {
            self.bodies.remove(&body);
        }
    }
}

impl FromIterator<Route> for RouteTable {
    fn from_iter<I: IntoIterator<Item = Route>>(iter: I) -> Self {
        let mut t = RouteTable::new();
        for r in iter {
            t.insert(r);
        }
        t
    }
}

fn assemble(key: &RouteKey, body: &Body) -> Route {
    Route {
        prefix: key.prefix,
        table: key.table,
        kind: body.kind,
        next_hops: body.next_hops.clone(),
        metric: key.metric,
        source: body.source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unicast(prefix: &str, gateway: &str) -> Route {
        let mut r = Route::unicast(
            prefix.parse().expect("prefix"),
            vec![NextHop::via(gateway.parse().expect("gateway"))],
        );
        r.normalize();
        r
    }

    #[test]
    fn routes_with_the_same_next_hops_share_one_content() {
        let mut t = RouteTable::new();
        for i in 0..1000u32 {
            let p = format!("10.{}.{}.0/24", i / 256, i % 256);
            t.insert(unicast(&p, "192.0.2.1"));
        }
        t.insert(unicast("10.200.0.0/24", "192.0.2.2"));
        assert_eq!(t.len(), 1001);
        assert_eq!(t.distinct_contents(), 2);
        let back = t.get(&unicast("10.0.5.0/24", "192.0.2.1").key());
        assert_eq!(back, Some(unicast("10.0.5.0/24", "192.0.2.1")));
    }

    #[test]
    fn a_content_goes_with_its_last_route() {
        let mut t = RouteTable::new();
        t.insert(unicast("10.0.0.0/24", "192.0.2.1"));
        t.insert(unicast("10.0.1.0/24", "192.0.2.1"));
        t.insert(unicast("10.0.2.0/24", "192.0.2.2"));
        assert_eq!(t.distinct_contents(), 2);
        // Replacing the last route with .2 by one via .1 frees .2's content.
        t.insert(unicast("10.0.2.0/24", "192.0.2.1"));
        assert_eq!(t.distinct_contents(), 1);
        let gone = t.remove(&unicast("10.0.0.0/24", "192.0.2.1").key());
        assert_eq!(gone, Some(unicast("10.0.0.0/24", "192.0.2.1")));
        assert_eq!(t.distinct_contents(), 1);
        t.remove(&unicast("10.0.1.0/24", "192.0.2.1").key());
        t.remove(&unicast("10.0.2.0/24", "192.0.2.1").key());
        assert!(t.is_empty());
        assert_eq!(t.distinct_contents(), 0);
        assert_eq!(t.remove(&unicast("10.0.2.0/24", "192.0.2.1").key()), None);
    }

    #[test]
    fn satisfaction_allows_the_interface_the_kernel_chose() {
        let want = unicast("10.0.0.0/24", "192.0.2.1");
        let mut chosen = want.clone();
        chosen.next_hops[0].ifindex = Some(7);
        let have: RouteTable = [chosen].into_iter().collect();
        assert!(have.satisfies(&want));
        let wanted: RouteTable = [want.clone()].into_iter().collect();
        assert!(wanted.satisfied_in(&want.key(), &have));
        // The other way round the interface is asked for and not given.
        let mut pinned = want.clone();
        pinned.next_hops[0].ifindex = Some(3);
        assert!(!have.satisfies(&pinned));
        let other: RouteTable = [unicast("10.0.0.0/24", "192.0.2.9")].into_iter().collect();
        assert!(!other.satisfies(&want));
        assert!(!wanted.satisfied_in(&want.key(), &other));
    }
}
