//! Objects in, plan out: arbitrary text read as the file source reads a
//! YAML file, then planned for every node it names (and one it does not):
//! the BGP plan and the overlay plan. Nothing may panic; bad objects are
//! problems.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut snapshot = model::Snapshot::default();
    let mut problems = Vec::new();
    model::files::load_text(Path::new("fuzz.yaml"), text, &mut snapshot, &mut problems);
    let mut nodes: Vec<String> = snapshot.nodes.iter().map(|n| n.name.clone()).collect();
    nodes.push("not-a-node".into());
    for node in nodes.iter().take(8) {
        let _ = planner::plan(&snapshot, node);
        let _ = planner::overlay::plan(&snapshot, node);
    }
});
