//! The reconciler's routes by key, stored compactly: for each key, the route
//! wanted and the route the kernel has, side by side in one entry; what
//! makes a route more than its key (kind, next hops, source) is kept once
//! per distinct value and shared.
//!
//! A full BGP table is a million routes that share a handful of next-hop
//! sets, wanted and installed. Stored as whole [`Route`]s in two maps they
//! took ~800 MB at a million (heaptrack: each route its own next-hop `Vec`,
//! the map slot the size of a `Route`); as two maps of key and pointer,
//! 128 MB resident. Here a key is stored once for both views, and the
//! comparison of the two is one look-up. Routes are grouped by table and
//! metric (nearly all share one), then by family, so an entry's key is a
//! bare `Ipv4Net` or `Ipv6Net`: an IPv4 entry is 32 bytes. The entries sit
//! densely in an `IndexMap` (spare capacity never touched, so never
//! resident) behind an index of integers, where a hash map's slots are
//! 44–88% used and its old and new tables are both resident while it
//! doubles. Growing the index rehashes the whole index at once (~200 ms at
//! a million); that delays only the kernel's catching up, never the
//! speaker or an API read.

use std::net::IpAddr;
use std::sync::Arc;

use foldhash::HashSet;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::route::{NextHop, Route, RouteKey, RouteKind, hops_satisfied};

/// One of the two views the table keeps of each key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The route wanted.
    Wanted,
    /// Our route as the kernel has it.
    Kernel,
}

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

/// Both views of one key; an entry with neither is removed.
#[derive(Debug, Default)]
struct Slot {
    wanted: Option<Arc<Body>>,
    kernel: Option<Arc<Body>>,
}

impl Slot {
    fn view(&self, view: View) -> &Option<Arc<Body>> {
        match view {
            View::Wanted => &self.wanted,
            View::Kernel => &self.kernel,
        }
    }

    fn view_mut(&mut self, view: View) -> &mut Option<Arc<Body>> {
        match view {
            View::Wanted => &mut self.wanted,
            View::Kernel => &mut self.kernel,
        }
    }

    fn state(&self) -> State {
        State {
            wanted: self.wanted.is_some(),
            installed: self.kernel.is_some(),
            satisfied: match (&self.wanted, &self.kernel) {
                (Some(w), Some(k)) => {
                    Arc::ptr_eq(w, k) || k.satisfies(w.kind, w.source, &w.next_hops)
                }
                _ => false,
            },
        }
    }
}

/// Where one key stands between the two views.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct State {
    /// A route is wanted.
    pub wanted: bool,
    /// The kernel has one of ours.
    pub installed: bool,
    /// The kernel's is the wanted one (both present, see
    /// [`Route::satisfied_by`]).
    pub satisfied: bool,
}

type Map<K> = indexmap::IndexMap<K, Slot, foldhash::fast::RandomState>;

/// The routes of one table and metric, per family. A key is then a bare
/// prefix: a whole `RouteKey` (28 bytes) in every entry made an entry 56
/// bytes, where an IPv4 one is now 32.
#[derive(Debug)]
struct Space {
    table: u32,
    metric: u32,
    v4: Map<Ipv4Net>,
    v6: Map<Ipv6Net>,
}

impl Space {
    fn new(table: u32, metric: u32) -> Self {
        Space {
            table,
            metric,
            v4: Map::default(),
            v6: Map::default(),
        }
    }

    fn is(&self, key: &RouteKey) -> bool {
        self.table == key.table && self.metric == key.metric
    }

    fn key(&self, prefix: IpNet) -> RouteKey {
        RouteKey {
            table: self.table,
            prefix,
            metric: self.metric,
        }
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    fn get(&self, prefix: &IpNet) -> Option<&Slot> {
        match prefix {
            IpNet::V4(p) => self.v4.get(p),
            IpNet::V6(p) => self.v6.get(p),
        }
    }

    fn get_mut(&mut self, prefix: &IpNet) -> Option<&mut Slot> {
        match prefix {
            IpNet::V4(p) => self.v4.get_mut(p),
            IpNet::V6(p) => self.v6.get_mut(p),
        }
    }

    fn get_or_default(&mut self, prefix: IpNet) -> &mut Slot {
        match prefix {
            IpNet::V4(p) => self.v4.entry(p).or_default(),
            IpNet::V6(p) => self.v6.entry(p).or_default(),
        }
    }

    fn remove(&mut self, prefix: &IpNet) {
        match prefix {
            IpNet::V4(p) => self.v4.swap_remove(p),
            IpNet::V6(p) => self.v6.swap_remove(p),
        };
    }

    fn retain(&mut self, mut keep: impl FnMut(&mut Slot) -> bool) {
        self.v4.retain(|_, s| keep(s));
        self.v6.retain(|_, s| keep(s));
    }

    fn iter(&self) -> impl Iterator<Item = (RouteKey, &Slot)> {
        let v4 = self.v4.iter().map(|(p, s)| (self.key(IpNet::V4(*p)), s));
        let v6 = self.v6.iter().map(|(p, s)| (self.key(IpNet::V6(*p)), s));
        v4.chain(v6)
    }
}

/// Routes by key, wanted and installed, their contents shared.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Per table and metric; a node has one or two, so a list.
    spaces: Vec<Space>,
    /// Every distinct content in `spaces`, once: a new route takes its
    /// content from here. An entry goes when the last route using it does.
    bodies: HashSet<Arc<Body>>,
    /// The content stored last: routes come in long runs of the same
    /// content (a peer's table, one next hop), and comparing with it costs
    /// less than hashing a next-hop list for the look-up in `bodies`.
    last: Option<Arc<Body>>,
    wanted: usize,
    kernel: usize,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        RouteTable::default()
    }

    /// How many routes one view holds.
    pub fn len(&self, view: View) -> usize {
        match view {
            View::Wanted => self.wanted,
            View::Kernel => self.kernel,
        }
    }

    /// Whether neither view holds any route.
    pub fn is_empty(&self) -> bool {
        self.spaces.is_empty()
    }

    fn space(&self, key: &RouteKey) -> Option<&Space> {
        self.spaces.iter().find(|s| s.is(key))
    }

    fn slot(&self, key: &RouteKey) -> Option<&Slot> {
        self.space(key)?.get(&key.prefix)
    }

    /// Adds a route to a view, or replaces the one with the same key there.
    /// The route is stored as given (normalize it first if it is to be
    /// compared).
    pub fn insert(&mut self, view: View, route: Route) {
        let key = route.key();
        let shared = self.share(Body {
            kind: route.kind,
            next_hops: route.next_hops,
            source: route.source,
        });
        let i = match self.spaces.iter().position(|s| s.is(&key)) {
            Some(i) => i,
            None => {
                self.spaces.push(Space::new(key.table, key.metric));
                self.spaces.len() - 1
            }
        };
        let old = self.spaces[i]
            .get_or_default(key.prefix)
            .view_mut(view)
            .replace(shared);
        match old {
            Some(old) => self.release(old),
            None => *self.count(view) += 1,
        }
    }

    /// Takes the route with this key out of a view.
    pub fn remove(&mut self, view: View, key: &RouteKey) -> Option<Route> {
        let i = self.spaces.iter().position(|s| s.is(key))?;
        let space = &mut self.spaces[i];
        let slot = space.get_mut(&key.prefix)?;
        let body = slot.view_mut(view).take()?;
        if slot.wanted.is_none() && slot.kernel.is_none() {
            space.remove(&key.prefix);
            if space.is_empty() {
                self.spaces.swap_remove(i);
            }
        }
        *self.count(view) -= 1;
        let route = assemble(key, &body);
        self.release(body);
        Some(route)
    }

    /// The route with this key in a view.
    pub fn get(&self, view: View, key: &RouteKey) -> Option<Route> {
        let body = self.slot(key)?.view(view).as_ref()?;
        Some(assemble(key, body))
    }

    /// Whether a view holds a route with this key.
    pub fn contains_key(&self, view: View, key: &RouteKey) -> bool {
        self.slot(key).is_some_and(|s| s.view(view).is_some())
    }

    /// Empties one view.
    pub fn clear(&mut self, view: View) {
        let mut freed = Vec::new();
        for space in &mut self.spaces {
            space.retain(|slot| {
                freed.extend(slot.view_mut(view).take());
                slot.wanted.is_some() || slot.kernel.is_some()
            });
        }
        self.spaces.retain(|s| !s.is_empty());
        *self.count(view) = 0;
        for body in freed {
            self.release(body);
        }
    }

    /// The keys one view holds, in no particular order.
    pub fn keys(&self, view: View) -> impl Iterator<Item = RouteKey> {
        self.spaces
            .iter()
            .flat_map(Space::iter)
            .filter(move |(_, s)| s.view(view).is_some())
            .map(|(k, _)| k)
    }

    /// Every key with its [`State`].
    pub(crate) fn states(&self) -> impl Iterator<Item = (RouteKey, State)> {
        self.spaces
            .iter()
            .flat_map(Space::iter)
            .map(|(k, s)| (k, s.state()))
    }

    /// One key's [`State`].
    pub(crate) fn state(&self, key: &RouteKey) -> State {
        self.slot(key).map(Slot::state).unwrap_or_default()
    }

    /// How many distinct contents the routes share.
    pub fn distinct_contents(&self) -> usize {
        self.bodies.len()
    }

    fn count(&mut self, view: View) -> &mut usize {
        match view {
            View::Wanted => &mut self.wanted,
            View::Kernel => &mut self.kernel,
        }
    }

    /// The shared copy of a content, added to the set if new.
    fn share(&mut self, body: Body) -> Arc<Body> {
        if let Some(last) = &self.last
            && **last == body
        {
            return last.clone();
        }
        let shared = match self.bodies.get(&body) {
            Some(b) => b.clone(),
            None => {
                let b = Arc::new(body);
                self.bodies.insert(b.clone());
                b
            }
        };
        self.last = Some(shared.clone());
        shared
    }

    /// Drops a content from the shared set once no route uses it: the
    /// references left are the caller's, the set's and maybe `last`'s.
    fn release(&mut self, body: Arc<Body>) {
        let is_last = self.last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &body));
        if Arc::strong_count(&body) == 2 + usize::from(is_last) {
            self.bodies.remove(&body);
            if is_last {
                self.last = None;
            }
        }
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
            t.insert(View::Wanted, unicast(&p, "192.0.2.1"));
            t.insert(View::Kernel, unicast(&p, "192.0.2.1"));
        }
        t.insert(View::Wanted, unicast("10.200.0.0/24", "192.0.2.2"));
        // Interleaved with another content, the shared set is still used.
        t.insert(View::Kernel, unicast("10.200.1.0/24", "192.0.2.1"));
        assert_eq!(t.len(View::Wanted), 1001);
        assert_eq!(t.len(View::Kernel), 1001);
        assert_eq!(t.distinct_contents(), 2);
        let key = unicast("10.0.5.0/24", "192.0.2.1").key();
        assert_eq!(
            t.get(View::Kernel, &key),
            Some(unicast("10.0.5.0/24", "192.0.2.1"))
        );
        assert_eq!(
            t.get(View::Wanted, &unicast("10.200.1.0/24", "192.0.2.1").key()),
            None
        );
    }

    #[test]
    fn a_content_goes_with_its_last_route() {
        let mut t = RouteTable::new();
        t.insert(View::Wanted, unicast("10.0.0.0/24", "192.0.2.1"));
        t.insert(View::Kernel, unicast("10.0.1.0/24", "192.0.2.1"));
        t.insert(View::Wanted, unicast("10.0.2.0/24", "192.0.2.2"));
        assert_eq!(t.distinct_contents(), 2);
        // Replacing the last route with .2 by one via .1 frees .2's content,
        // though it was the content stored last.
        t.insert(View::Wanted, unicast("10.0.2.0/24", "192.0.2.1"));
        assert_eq!(t.distinct_contents(), 1);
        let gone = t.remove(View::Wanted, &unicast("10.0.0.0/24", "192.0.2.1").key());
        assert_eq!(gone, Some(unicast("10.0.0.0/24", "192.0.2.1")));
        assert_eq!(t.distinct_contents(), 1);
        // Not in that view: nothing happens.
        assert_eq!(
            t.remove(View::Wanted, &unicast("10.0.1.0/24", "192.0.2.1").key()),
            None
        );
        t.remove(View::Kernel, &unicast("10.0.1.0/24", "192.0.2.1").key());
        t.remove(View::Wanted, &unicast("10.0.2.0/24", "192.0.2.1").key());
        assert!(t.is_empty());
        assert_eq!((t.len(View::Wanted), t.len(View::Kernel)), (0, 0));
        assert_eq!(t.distinct_contents(), 0);
        // A content stored again after it was freed is shared again.
        t.insert(View::Wanted, unicast("10.0.3.0/24", "192.0.2.2"));
        t.insert(View::Kernel, unicast("10.0.3.0/24", "192.0.2.2"));
        assert_eq!(t.distinct_contents(), 1);
    }

    #[test]
    fn tables_metrics_and_families_are_keys_apart() {
        let main = unicast("10.0.0.0/24", "192.0.2.1");
        let mut other_table = main.clone();
        other_table.table = 100;
        let mut other_metric = main.clone();
        other_metric.metric = 20;
        let v6 = unicast("2001:db8::/64", "2001:db8:ffff::1");
        let mut t = RouteTable::new();
        for r in [&main, &other_table, &other_metric, &v6] {
            t.insert(View::Wanted, r.clone());
        }
        assert_eq!(t.len(View::Wanted), 4);
        for r in [&main, &other_table, &other_metric, &v6] {
            assert_eq!(t.get(View::Wanted, &r.key()).as_ref(), Some(r));
        }
        let mut keys: Vec<RouteKey> = t.keys(View::Wanted).collect();
        keys.sort();
        let mut want: Vec<RouteKey> = [&main, &other_table, &other_metric, &v6]
            .iter()
            .map(|r| r.key())
            .collect();
        want.sort();
        assert_eq!(keys, want);
        // The last route of a table goes, and with it the table's space;
        // the others are untouched.
        assert_eq!(
            t.remove(View::Wanted, &other_table.key()),
            Some(other_table.clone())
        );
        assert!(!t.contains_key(View::Wanted, &other_table.key()));
        assert!(t.contains_key(View::Wanted, &main.key()));
        for r in [&main, &other_metric, &v6] {
            t.remove(View::Wanted, &r.key());
        }
        assert!(t.is_empty());
    }

    #[test]
    fn clearing_one_view_keeps_the_other() {
        let mut t = RouteTable::new();
        t.insert(View::Wanted, unicast("10.0.0.0/24", "192.0.2.1"));
        t.insert(View::Kernel, unicast("10.0.0.0/24", "192.0.2.1"));
        t.insert(View::Kernel, unicast("10.0.1.0/24", "192.0.2.2"));
        t.clear(View::Kernel);
        assert_eq!((t.len(View::Wanted), t.len(View::Kernel)), (1, 0));
        assert_eq!(t.distinct_contents(), 1);
        let keys: Vec<_> = t.keys(View::Wanted).collect();
        assert_eq!(keys, vec![unicast("10.0.0.0/24", "192.0.2.1").key()]);
        assert_eq!(t.keys(View::Kernel).count(), 0);
        t.clear(View::Wanted);
        assert!(t.is_empty());
        assert_eq!(t.distinct_contents(), 0);
    }

    #[test]
    fn satisfaction_allows_the_interface_the_kernel_chose() {
        let want = unicast("10.0.0.0/24", "192.0.2.1");
        let mut chosen = want.clone();
        chosen.next_hops[0].ifindex = Some(7);
        let mut t = RouteTable::new();
        t.insert(View::Kernel, chosen);
        let key = want.key();
        let state = |t: &RouteTable| {
            let s = t.state(&key);
            assert_eq!(t.states().map(|(_, s)| s).next(), Some(s));
            (s.wanted, s.installed, s.satisfied)
        };
        assert_eq!(state(&t), (false, true, false));
        t.insert(View::Wanted, want.clone());
        assert_eq!(state(&t), (true, true, true));
        // The other way round the interface is asked for and not given.
        let mut pinned = want.clone();
        pinned.next_hops[0].ifindex = Some(3);
        t.insert(View::Wanted, pinned);
        assert_eq!(state(&t), (true, true, false));
        t.insert(View::Wanted, want.clone());
        t.insert(View::Kernel, unicast("10.0.0.0/24", "192.0.2.9"));
        assert_eq!(state(&t), (true, true, false));
        t.remove(View::Kernel, &key);
        assert_eq!(state(&t), (true, false, false));
        assert_eq!(
            t.state(&unicast("10.9.0.0/24", "192.0.2.1").key()),
            State::default()
        );
    }
}
