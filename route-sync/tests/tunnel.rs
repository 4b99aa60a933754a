//! Tunnel devices and their entries against a real kernel, each test in a
//! fresh network namespace removed afterwards, also on failure.

use std::net::IpAddr;

use route_sync::{EntryChanges, Kernel, TunnelDevice, TunnelKind};
use testkit::netns::Netns;

fn ip(args: &[&str]) -> String {
    testkit::must_run("ip", args)
}

fn a(s: &str) -> IpAddr {
    s.parse().expect("addr")
}

fn vxlan() -> TunnelDevice {
    TunnelDevice {
        name: "vxlan.petrel".into(),
        kind: TunnelKind::Vxlan {
            vni: 4096,
            port: 4789,
        },
        local: a("192.0.2.1"),
        mac: Some([0x0e, 0, 0, 0, 0, 1]),
        mtu: 1450,
        address: Some("10.80.1.0/32".parse().expect("prefix")),
    }
}

const NEIGH: [(&str, [u8; 6]); 2] = [
    ("10.80.2.0", [0x0e, 0, 0, 0, 0, 2]),
    ("10.80.3.0", [0x0e, 0, 0, 0, 0, 3]),
];

/// Neighbour entries (address → MAC) and FDB entries (MAC → underlay).
type Entries = (Vec<(IpAddr, [u8; 6])>, Vec<([u8; 6], IpAddr)>);

fn entries() -> Entries {
    let neigh = NEIGH.iter().map(|(ip, mac)| (a(ip), *mac)).collect();
    let fdb = vec![
        (NEIGH[0].1, a("192.0.2.2")),
        (NEIGH[1].1, a("198.51.100.3")),
    ];
    (neigh, fdb)
}

/// Everything made once; again with nothing changed; drift (an entry
/// deleted, a foreign one added, the MTU changed by hand) repaired; a new
/// VNI makes the device again.
#[test]
fn a_vxlan_device_and_its_entries_converge_and_a_second_pass_changes_nothing() {
    let ns = Netns::new("rt").expect("namespace");
    let n = ns.name().to_string();
    ip(&[
        "-n", &n, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
    ]);
    ip(&["-n", &n, "addr", "add", "192.0.2.1/24", "dev", "v0"]);
    ip(&["-n", &n, "link", "set", "v0", "up"]);
    ip(&["-n", &n, "link", "set", "v1", "up"]);
    let pass = |ns: &Netns, want: TunnelDevice| {
        ns.block_on(move || {
            Box::pin(async move {
                let k = Kernel::connect(201).expect("netlink");
                let (index, changed) = k.ensure_tunnel(&want).await.expect("device");
                let (neigh, fdb) = entries();
                let n = k.sync_neighbours(index, &neigh).await.expect("neighbours");
                let f = k.sync_fdb(index, &fdb).await.expect("fdb");
                (index, changed, n, f)
            })
        })
        .expect("a thread in the namespace")
    };
    let (index, changed, n1, f1) = pass(&ns, vxlan());
    assert!(changed);
    assert_eq!(
        n1,
        EntryChanges {
            written: 2,
            removed: 0
        }
    );
    assert_eq!(
        f1,
        EntryChanges {
            written: 2,
            removed: 0
        }
    );
    let details = ip(&["-n", &n, "-d", "link", "show", "vxlan.petrel"]);
    assert!(details.contains("vxlan id 4096"), "{details}");
    assert!(details.contains("dstport 4789"), "{details}");
    assert!(details.contains("nolearning"), "{details}");
    assert!(details.contains("mtu 1450"), "{details}");
    assert!(details.contains("0e:00:00:00:00:01"), "{details}");
    let fdb = ip(&["-n", &n, "neigh", "show", "dev", "vxlan.petrel"]);
    assert!(
        fdb.contains("10.80.3.0") && fdb.contains("PERMANENT"),
        "{fdb}"
    );
    let fdb = testkit::must_run("bridge", &["-n", &n, "fdb", "show", "dev", "vxlan.petrel"]);
    assert!(
        fdb.contains("0e:00:00:00:00:03 dst 198.51.100.3 self permanent"),
        "{fdb}"
    );

    // Nothing to do the second time (an agent restarting into a right
    // kernel changes nothing).
    let (again, changed, n2, f2) = pass(&ns, vxlan());
    assert_eq!(again, index, "the same device");
    assert!(!changed);
    assert_eq!(n2, EntryChanges::default());
    assert_eq!(f2, EntryChanges::default());

    // Drift: one entry gone, a foreign one added, the MTU changed.
    ip(&["-n", &n, "neigh", "del", "10.80.2.0", "dev", "vxlan.petrel"]);
    ip(&[
        "-n",
        &n,
        "neigh",
        "add",
        "10.80.9.9",
        "lladdr",
        "0e:00:00:00:00:09",
        "dev",
        "vxlan.petrel",
        "nud",
        "permanent",
    ]);
    ip(&["-n", &n, "link", "set", "vxlan.petrel", "mtu", "1300"]);
    let (again, changed, n3, f3) = pass(&ns, vxlan());
    assert_eq!(again, index, "corrected in place");
    assert!(changed);
    assert_eq!(
        n3,
        EntryChanges {
            written: 1,
            removed: 1
        }
    );
    assert_eq!(f3, EntryChanges::default());
    let shown = ip(&["-n", &n, "neigh", "show", "dev", "vxlan.petrel"]);
    assert!(
        shown.contains("10.80.2.0") && !shown.contains("10.80.9.9"),
        "{shown}"
    );

    // Another VNI is another device.
    let other = TunnelDevice {
        kind: TunnelKind::Vxlan { vni: 7, port: 4789 },
        ..vxlan()
    };
    let (made, changed, _, _) = pass(&ns, other);
    assert!(changed);
    assert_ne!(made, index, "made again");
    let details = ip(&["-n", &n, "-d", "link", "show", "vxlan.petrel"]);
    assert!(details.contains("vxlan id 7"), "{details}");
}
