//! One block: a CIDR of a pool, the node it is affine to, and who holds each
//! of its addresses. A block is the unit the cluster agrees on (one object
//! written by compare-and-swap), so everything here works on a block value
//! that the caller read, changes, and writes back whole.

use std::collections::VecDeque;
use std::net::IpAddr;

use ipnet::IpNet;

use super::error::ReleaseError;

/// Who holds an address: the CNI attachment (container ID and interface
/// name, as CNI's GC names them), the pod, and the node it runs on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Holder {
    /// The attachment's handle: `CONTAINERID/IFNAME`.
    pub handle: String,
    /// `NAMESPACE/NAME` of the pod, when known (CNI_ARGS), for GC and
    /// `ipam check`.
    pub pod: Option<String>,
    /// The node the attachment is on: the block's node, or another that
    /// borrowed the address.
    pub node: String,
}

impl Holder {
    /// The holder of `node`'s tunnel address (VXLAN, IPIP and WireGuard
    /// share it): no pod, and a handle no CNI attachment can have (a
    /// container ID is letters, digits, `_`, `.` and `-`), so the runtime's
    /// GC never names it and it lives as long as its node.
    pub fn tunnel(node: &str) -> Holder {
        Holder {
            handle: format!("{TUNNEL_HANDLE_PREFIX}{node}"),
            pod: None,
            node: node.to_string(),
        }
    }

    /// Whether this holds a node's tunnel address, not a pod's.
    pub fn is_tunnel(&self) -> bool {
        is_tunnel_handle(&self.handle)
    }
}

/// How a tunnel address's handle starts ([`Holder::tunnel`]).
pub const TUNNEL_HANDLE_PREFIX: &str = "tunnel:";

/// Whether `handle` is a node's tunnel address's, not a CNI attachment's.
pub fn is_tunnel_handle(handle: &str) -> bool {
    handle.starts_with(TUNNEL_HANDLE_PREFIX)
}

/// One address in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The address's position in the block (0 = the block's first address).
    pub ordinal: u32,
    /// Who holds it.
    pub holder: Holder,
    /// The block's sequence number when it was handed out: a release that
    /// names another sequence number is for an earlier holder, and is
    /// refused (the address was freed and handed out again since).
    pub sequence: u64,
}

/// An address given back, waiting for its cooldown (and then reused, the
/// longest-free first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Its position in the block.
    pub ordinal: u32,
    /// When it was given back (seconds since the Unix epoch).
    pub at: u64,
}

/// A block of a pool.
///
/// The first address is the pods' gateway and is never handed out; for
/// IPv4 neither is the last (the broadcast address of the pods' prefix).
/// Addresses never handed out go first, in order (`fresh` is the next);
/// then those given back, oldest first, once their cooldown is over. A
/// block of a node whose addresses all come back is empty from then on
/// (`empty_since`), which is what lets its node give it up after a grace
/// period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The block's CIDR.
    pub cidr: IpNet,
    /// The pool it was cut from.
    pub pool: String,
    /// The node the block is affine to: it routes the block, and allocates
    /// from it first. `None`: its node went away with addresses still
    /// borrowed; no new address is handed out of it.
    pub node: Option<String>,
    /// Bumped by every change; the next allocation's sequence number.
    pub sequence: u64,
    /// The addresses in use, by ordinal.
    pub allocations: Vec<Allocation>,
    /// The first ordinal never handed out.
    pub fresh: u32,
    /// Addresses given back, oldest first.
    pub released: VecDeque<Released>,
    /// When the block last became empty (seconds since the Unix epoch);
    /// `None` while it holds an address.
    pub empty_since: Option<u64>,
}

impl Block {
    /// A new block of `pool`, affine to `node`, all free; `now`: its
    /// emptiness starts now.
    pub fn new(cidr: IpNet, pool: &str, node: &str, now: u64) -> Block {
        Block {
            cidr,
            pool: pool.to_string(),
            node: Some(node.to_string()),
            sequence: 0,
            allocations: Vec::new(),
            // The first address is the gateway.
            fresh: 1,
            released: VecDeque::new(),
            empty_since: Some(now),
        }
    }

    /// How many addresses the block has.
    pub fn size(&self) -> u32 {
        let bits = self.cidr.max_prefix_len() - self.cidr.prefix_len();
        // Block sizes are validated to at most 12 host bits (4096
        // addresses; see `BLOCK_HOST_BITS`): no overflow here.
        1u32.checked_shl(u32::from(bits)).unwrap_or(u32::MAX)
    }

    /// The first ordinal past the last that can be handed out: for IPv4 the
    /// block's last address is left out too, since pods get the block's
    /// prefix length and to them it is the broadcast address.
    fn limit(&self) -> u32 {
        match self.cidr {
            IpNet::V4(_) if self.size() >= 4 => self.size() - 1,
            _ => self.size(),
        }
    }

    /// Addresses that can ever be handed out: all but the first (the
    /// gateway) and, for IPv4, the last (the broadcast address).
    pub fn capacity(&self) -> u32 {
        self.limit().saturating_sub(1)
    }

    /// Addresses in use.
    pub fn used(&self) -> u32 {
        u32::try_from(self.allocations.len()).unwrap_or(u32::MAX)
    }

    /// Addresses that can be handed out at `now` with `cooldown` seconds.
    pub fn available(&self, now: u64, cooldown: u64) -> u32 {
        let cooled = self
            .released
            .iter()
            .filter(|r| r.at.saturating_add(cooldown) <= now)
            .count();
        (self.limit().saturating_sub(self.fresh))
            .saturating_add(u32::try_from(cooled).unwrap_or(u32::MAX))
    }

    /// The pods' gateway: the block's first address, never handed out. The
    /// main CNI plugin puts it on the host side of each pod's link (`ptp`)
    /// or on the bridge (`bridge`); both need it inside the pod's prefix.
    pub fn gateway(&self) -> IpAddr {
        self.address(0)
    }

    /// The address at `ordinal`.
    pub fn address(&self, ordinal: u32) -> IpAddr {
        match self.cidr {
            IpNet::V4(n) => IpAddr::V4(std::net::Ipv4Addr::from(
                u32::from(n.network()).wrapping_add(ordinal),
            )),
            IpNet::V6(n) => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(n.network()).wrapping_add(u128::from(ordinal)),
            )),
        }
    }

    /// The ordinal of `addr`, if it is in the block.
    pub fn ordinal(&self, addr: IpAddr) -> Option<u32> {
        if !self.cidr.contains(&addr) {
            return None;
        }
        match (self.cidr, addr) {
            (IpNet::V4(n), IpAddr::V4(a)) => Some(u32::from(a) - u32::from(n.network())),
            (IpNet::V6(n), IpAddr::V6(a)) => {
                u32::try_from(u128::from(a) - u128::from(n.network())).ok()
            }
            _ => None,
        }
    }

    /// Who holds `addr`, if anyone.
    pub fn holder(&self, addr: IpAddr) -> Option<&Allocation> {
        let ordinal = self.ordinal(addr)?;
        self.allocations.iter().find(|a| a.ordinal == ordinal)
    }

    /// The addresses `handle` holds here.
    pub fn held_by<'a>(&'a self, handle: &'a str) -> impl Iterator<Item = IpAddr> + 'a {
        self.allocations
            .iter()
            .filter(move |a| a.holder.handle == handle)
            .map(|a| self.address(a.ordinal))
    }

    /// Hands out one address to `holder`: a fresh one, else the longest
    /// given back whose cooldown is over. The address and its sequence
    /// number; `None` when none is available. The block must have a node
    /// (an orphaned block hands out nothing).
    pub fn assign(&mut self, holder: Holder, now: u64, cooldown: u64) -> Option<(IpAddr, u64)> {
        self.node.as_ref()?;
        let ordinal = if self.fresh < self.limit() {
            self.fresh += 1;
            self.fresh - 1
        } else {
            let first = self.released.front()?;
            if first.at.saturating_add(cooldown) > now {
                return None;
            }
            self.released.pop_front()?.ordinal
        };
        self.sequence += 1;
        let sequence = self.sequence;
        let at = self.allocations.partition_point(|a| a.ordinal < ordinal);
        self.allocations.insert(
            at,
            Allocation {
                ordinal,
                holder,
                sequence,
            },
        );
        self.empty_since = None;
        Some((self.address(ordinal), sequence))
    }

    /// Gives back `addr`. With `sequence`, only if the address is still the
    /// one handed out under that number. The holder it had.
    pub fn release(
        &mut self,
        addr: IpAddr,
        sequence: Option<u64>,
        now: u64,
    ) -> Result<Holder, ReleaseError> {
        let ordinal = self.ordinal(addr).ok_or(ReleaseError::NotInBlock {
            addr,
            block: self.cidr,
        })?;
        let at = self
            .allocations
            .iter()
            .position(|a| a.ordinal == ordinal)
            .ok_or(ReleaseError::NotAllocated { addr })?;
        if let Some(expected) = sequence
            && self.allocations[at].sequence != expected
        {
            return Err(ReleaseError::Reused {
                addr,
                expected,
                found: self.allocations[at].sequence,
            });
        }
        let gone = self.allocations.remove(at);
        self.released.push_back(Released { ordinal, at: now });
        self.sequence += 1;
        if self.allocations.is_empty() {
            self.empty_since = Some(now);
        }
        Ok(gone.holder)
    }

    /// Gives back every address `handle` holds here; the addresses.
    pub fn release_handle(&mut self, handle: &str, now: u64) -> Vec<IpAddr> {
        let addrs: Vec<IpAddr> = self.held_by(handle).collect();
        for addr in &addrs {
            // Just found: cannot fail.
            let _ = self.release(*addr, None, now);
        }
        addrs
    }

    /// Addresses held by nodes other than the block's (borrowed).
    pub fn borrowed(&self) -> impl Iterator<Item = (IpAddr, &Holder)> + '_ {
        self.allocations
            .iter()
            .filter(|a| self.node.as_deref() != Some(a.holder.node.as_str()))
            .map(|a| (self.address(a.ordinal), &a.holder))
    }
}
