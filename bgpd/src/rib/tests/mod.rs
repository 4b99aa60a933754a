//! The RIB's own tests; the rest test through its API in bgpd/tests/rib.rs.

use super::*;

#[test]
fn loc_rib_entries_stay_small() {
    // A million of each at a full table: a byte here is a megabyte
    // there, and a third of the table's slots are empty ones.
    assert!(
        std::mem::size_of::<Path>() <= 32,
        "{}",
        std::mem::size_of::<Path>()
    );
    assert!(
        std::mem::size_of::<Dest>() <= 48,
        "{}",
        std::mem::size_of::<Dest>()
    );
}
