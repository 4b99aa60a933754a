//! natOutgoing: pods of a pool with `natOutgoing: true` reach destinations
//! outside every IPPool with the node's address (masquerade).
//!
//! The rules live in nftables tables of petrel's own (`ip petrel`, `ip6
//! petrel`), one set of every pool's CIDRs and one of the masqueraded
//! pools' per family; nothing else in the ruleset is read or touched. Each
//! change replaces the table whole in one `nft -f -` transaction (delete and
//! create together), so no packet sees half a ruleset, and the text the
//! kernel gets is the text logged. `nft` is run rather than a crate:
//! the `nftables` crate also runs the `nft` binary (its JSON input), loses
//! nft's error text (its stderr) and cannot ask for `auto-merge`, which
//! overlapping pools need; libnftnl bindings would add a C library to the
//! build for four objects.

use std::fmt::Write as _;
use std::process::Stdio;

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;

/// The table's name in both families.
pub const TABLE: &str = "petrel";

/// What natOutgoing needs: every pool, and those whose pods are
/// masqueraded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatPlan {
    /// Every IPPool's CIDR.
    pub pools: Vec<IpNet>,
    /// The CIDRs of pools with `natOutgoing`.
    pub masquerade: Vec<IpNet>,
}

impl NatPlan {
    /// From the overlay's view of the pools.
    pub fn from_pools(pools: &[planner::overlay::PoolOverlay]) -> NatPlan {
        NatPlan {
            pools: pools.iter().map(|p| p.cidr).collect(),
            masquerade: pools
                .iter()
                .filter(|p| p.nat_outgoing)
                .map(|p| p.cidr)
                .collect(),
        }
    }
}

/// Why nft failed.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// `nft` could not be run.
    #[error("cannot run nft: {0}")]
    Spawn(#[source] std::io::Error),
    /// `nft` refused the ruleset.
    #[error("nft refused petrel's table ({status}): {stderr}")]
    Refused {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
}

fn elements(out: &mut String, name: &str, kind: &str, cidrs: &[&IpNet]) {
    let _ = write!(
        out,
        "  set {name} {{\n    type {kind}\n    flags interval\n    auto-merge\n"
    );
    if !cidrs.is_empty() {
        let list: Vec<String> = cidrs.iter().map(|c| c.trunc().to_string()).collect();
        let _ = writeln!(out, "    elements = {{ {} }}", list.join(", "));
    }
    out.push_str("  }\n");
}

/// The nft script that makes petrel's tables say `plan`: each family's
/// table deleted (if there) and created again, or only deleted when the
/// family masquerades nothing.
pub fn script(plan: &NatPlan) -> String {
    let mut out = String::new();
    for (family, kind, v6) in [("ip", "ipv4_addr", false), ("ip6", "ipv6_addr", true)] {
        // `add table` first, so the delete never fails on a missing table.
        let _ = writeln!(out, "add table {family} {TABLE}");
        let _ = writeln!(out, "delete table {family} {TABLE}");
        let of_family = |list: &[IpNet]| -> Vec<IpNet> {
            list.iter()
                .filter(|c| c.addr().is_ipv6() == v6)
                .copied()
                .collect()
        };
        let masq = of_family(&plan.masquerade);
        if masq.is_empty() {
            continue;
        }
        let pools = of_family(&plan.pools);
        let _ = writeln!(out, "table {family} {TABLE} {{");
        elements(&mut out, "pools", kind, &pools.iter().collect::<Vec<_>>());
        elements(&mut out, "masq", kind, &masq.iter().collect::<Vec<_>>());
        let _ = write!(
            out,
            "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    {family} saddr @masq {family} daddr != @pools masquerade\n  }}\n}}\n"
        );
    }
    out
}

/// The script that removes petrel's tables.
pub fn remove_script() -> String {
    let mut out = String::new();
    for family in ["ip", "ip6"] {
        let _ = writeln!(out, "add table {family} {TABLE}");
        let _ = writeln!(out, "delete table {family} {TABLE}");
    }
    out
}

/// Runs `nft -f -` with `script`, in one transaction.
pub async fn apply(script: &str) -> Result<(), NatError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(NatError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(NatError::Spawn)?;
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| {
            NatError::Spawn(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "nft did not finish within 10 s",
            ))
        })?
        .map_err(NatError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NatError::Refused {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_masquerading_families_get_a_table() {
        let plan = NatPlan {
            pools: vec![
                "10.244.0.0/16".parse().expect("valid"),
                "10.96.0.0/24".parse().expect("valid"),
                "fd00::/48".parse().expect("valid"),
            ],
            masquerade: vec!["10.244.0.0/16".parse().expect("valid")],
        };
        let s = script(&plan);
        assert!(s.contains("table ip petrel {"), "{s}");
        assert!(!s.contains("table ip6 petrel {"), "{s}");
        assert!(s.contains("delete table ip6 petrel"), "{s}");
        assert!(
            s.contains("elements = { 10.244.0.0/16, 10.96.0.0/24 }"),
            "{s}"
        );
        assert!(
            s.contains("ip saddr @masq ip daddr != @pools masquerade"),
            "{s}"
        );
        assert!(!script(&NatPlan::default()).contains('{'));
    }
}
