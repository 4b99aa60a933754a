//! The interned attribute-set store: sharing, and the bounded garbage sweep.

use super::*;

#[test]
fn attributes_are_interned() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    for i in 0..50u8 {
        let prefixes: Vec<String> = (0..=255u8).map(|j| format!("10.{i}.{j}.0/24")).collect();
        let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        r.update(
            1,
            &announce(vec![65001, 65100], "192.0.2.1", &refs, vec![]),
            false,
        );
    }
    assert_eq!(r.len(), 50 * 256);
    assert_eq!(r.attribute_sets(), 1, "12800 routes, one attribute set");
}

#[test]
fn unused_attribute_sets_are_swept_a_bounded_step_per_flush() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.peer_up(2, info("198.51.100.2", 65002, "198.51.100.100"));
    // 6000 routes, each with its own attribute set (its own origin AS),
    // passed on to peer 2 with one exported set each.
    let prefixes: Vec<String> = (0..6000u32)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    for (i, p) in prefixes.iter().enumerate() {
        let origin = 100_000 + u32::try_from(i).expect("small");
        r.update(
            1,
            &announce(vec![65001, origin], "192.0.2.1", &[p], vec![]),
            false,
        );
    }
    r.flush();
    let sets = r.attribute_sets();
    assert_eq!(sets, 12_000, "received and exported, one set each");
    let w = Update {
        withdrawn: prefixes
            .iter()
            .map(|p| Nlri::new(p.parse().expect("p")))
            .collect(),
        ..Update::default()
    };
    r.update(1, &w, false);
    let mut freed = 0;
    let mut flushes = 0;
    while r.has_pending() {
        let out = r.flush_some(100);
        assert!(
            out.garbage.len() <= 4096,
            "one step freed {} sets",
            out.garbage.len()
        );
        freed += out.garbage.len();
        flushes += 1;
        assert!(flushes <= 200, "the sweep never ends");
    }
    assert_eq!(freed, sets, "every unused set is handed back");
    assert_eq!(r.attribute_sets(), 0);
    assert_eq!(
        flushes, 62,
        "the withdrawal takes 60 slices and its last starts the sweep; two \
         more finish it, 4096 sets a step"
    );
}
