//! `ipam::pod::Block` ↔ `IPAMBlock.spec`.

use std::collections::VecDeque;

use crds::{IpamAllocation, IpamBlockSpec, IpamReleased};
use ipam::pod::{Allocation, Block, Holder, Released};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// A stored block that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `spec.cidr` is missing.
    #[error("spec.cidr is missing")]
    NoCidr,
    /// The block is wider than a block may be.
    #[error("spec.cidr {0} is wider than a block may be (4096 addresses)")]
    TooWide(ipnet::IpNet),
    /// An ordinal outside the block.
    #[error("spec.{field}: ordinal {ordinal} is outside {cidr}")]
    Ordinal {
        /// `allocations` or `released`.
        field: &'static str,
        /// The ordinal.
        ordinal: u32,
        /// The block.
        cidr: ipnet::IpNet,
    },
}

fn seconds(t: &Time) -> u64 {
    u64::try_from(t.0.as_second()).unwrap_or(0)
}

fn time(secs: u64) -> Time {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    Time(Timestamp::from_second(secs).unwrap_or(Timestamp::MAX))
}

/// The spec that stores `block`.
pub fn to_spec(block: &Block) -> IpamBlockSpec {
    IpamBlockSpec {
        cidr: Some(block.cidr),
        pool: block.pool.clone(),
        node: block.node.clone(),
        sequence: block.sequence,
        fresh: block.fresh,
        allocations: block
            .allocations
            .iter()
            .map(|a| IpamAllocation {
                ordinal: a.ordinal,
                handle: a.holder.handle.clone(),
                pod: a.holder.pod.clone(),
                node: a.holder.node.clone(),
                sequence: a.sequence,
            })
            .collect(),
        released: block
            .released
            .iter()
            .map(|r| IpamReleased {
                ordinal: r.ordinal,
                at: time(r.at),
            })
            .collect(),
        empty_since: block.empty_since.map(time),
    }
}

/// The block `spec` stores; an error names what is wrong with it.
pub fn from_spec(spec: &IpamBlockSpec) -> Result<Block, SpecError> {
    let cidr = spec.cidr.ok_or(SpecError::NoCidr)?;
    if cidr.max_prefix_len() - cidr.prefix_len() > ipam::pod::BLOCK_HOST_BITS {
        return Err(SpecError::TooWide(cidr));
    }
    let size = 1u32 << (cidr.max_prefix_len() - cidr.prefix_len());
    let check = |field, ordinal: u32| {
        if ordinal < size {
            Ok(ordinal)
        } else {
            Err(SpecError::Ordinal {
                field,
                ordinal,
                cidr,
            })
        }
    };
    let mut allocations = spec
        .allocations
        .iter()
        .map(|a| {
            Ok(Allocation {
                ordinal: check("allocations", a.ordinal)?,
                holder: Holder {
                    handle: a.handle.clone(),
                    pod: a.pod.clone(),
                    node: a.node.clone(),
                },
                sequence: a.sequence,
            })
        })
        .collect::<Result<Vec<_>, SpecError>>()?;
    // Kept sorted by ordinal, whatever wrote it.
    allocations.sort_by_key(|a| a.ordinal);
    let released = spec
        .released
        .iter()
        .map(|r| {
            Ok(Released {
                ordinal: check("released", r.ordinal)?,
                at: seconds(&r.at),
            })
        })
        .collect::<Result<VecDeque<_>, SpecError>>()?;
    Ok(Block {
        cidr,
        pool: spec.pool.clone(),
        node: spec.node.clone(),
        sequence: spec.sequence,
        allocations,
        // Ordinal 0 is the gateway, never handed out.
        fresh: spec.fresh.clamp(1, size),
        released,
        empty_since: spec.empty_since.as_ref().map(seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_goes_through_its_spec_unchanged() {
        let mut b = Block::new("10.244.1.64/26".parse().expect("cidr"), "pods", "n1", 100);
        for i in 0..5 {
            let h = Holder {
                handle: format!("c{i}/eth0"),
                pod: Some(format!("default/p{i}")),
                node: if i == 3 { "n2".into() } else { "n1".into() },
            };
            b.assign(h, 100 + i, 0).expect("free");
        }
        b.release("10.244.1.65".parse().expect("addr"), None, 200)
            .expect("held");
        let spec = to_spec(&b);
        let json = serde_json::to_string(&spec).expect("serialises");
        let back: IpamBlockSpec = serde_json::from_str(&json).expect("reads back");
        assert_eq!(from_spec(&back), Ok(b));
    }

    #[test]
    fn a_bad_spec_is_named() {
        let mut spec = to_spec(&Block::new(
            "10.0.0.0/30".parse().expect("cidr"),
            "p",
            "n",
            0,
        ));
        spec.released.push(IpamReleased {
            ordinal: 4,
            at: time(1),
        });
        assert_eq!(
            from_spec(&spec).expect_err("outside").to_string(),
            "spec.released: ordinal 4 is outside 10.0.0.0/30"
        );
        spec.cidr = Some("10.0.0.0/16".parse().expect("cidr"));
        assert!(matches!(from_spec(&spec), Err(SpecError::TooWide(_))));
        spec.cidr = None;
        assert_eq!(from_spec(&spec), Err(SpecError::NoCidr));
    }
}
