//! `petrel crds`: the CustomResourceDefinitions of petrel's kinds.
//!
//! On standard output as one multi-document YAML stream (`petrel crds |
//! kubectl apply -f -`) or a JSON `List` (`-o json`, what the chart test
//! compares its YAML with), or with `--dir` one YAML file per CRD
//! (`NAME.yaml`), which is how the Helm chart's `crds/` directory is kept up
//! to date. The output is the same bytes every run, so a diff shows exactly
//! what a change did.

use std::path::Path;

use anyhow::Context;

/// The suffix of the files `--dir` writes; other files there are left alone.
const SUFFIX: &str = ".petrel.dev.yaml";

/// How `petrel crds` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A multi-document YAML stream.
    Yaml,
    /// A `v1` `List` of the CRDs, as JSON.
    Json,
}

/// The CRDs as a JSON `List`, one line.
fn json_list() -> anyhow::Result<String> {
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": crds::crds(),
    });
    Ok(serde_json::to_string(&list)?)
}

/// Prints every CRD, or writes them into `dir` (replacing earlier petrel
/// CRD files there, so a renamed kind leaves no stale file behind).
pub fn run(dir: Option<&Path>, format: Format) -> anyhow::Result<()> {
    let Some(dir) = dir else {
        match format {
            Format::Yaml => print!("{}", crds::crds_yaml()?),
            Format::Json => println!("{}", json_list()?),
        }
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for crd in crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let file = format!("{name}.yaml");
        let path = dir.join(&file);
        std::fs::write(&path, crds::crd_yaml(&crd)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(file);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.ends_with(SUFFIX) && !written.contains(&file) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove stale {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_gets_one_file_per_crd_and_loses_stale_ones() {
        let dir = std::env::temp_dir().join(format!("petrel-crds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("oldkinds.petrel.dev.yaml"), "stale").expect("write");
        std::fs::write(dir.join("README.md"), "kept").expect("write");
        let result = run(Some(&dir), Format::Yaml);
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("read")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let peers = std::fs::read_to_string(dir.join("bgppeers.petrel.dev.yaml"));
        let _ = std::fs::remove_dir_all(&dir);
        result.expect("writes");
        assert_eq!(
            files,
            [
                "README.md",
                "bfdprofiles.petrel.dev.yaml",
                "bgpadvertisements.petrel.dev.yaml",
                "bgpconfigurations.petrel.dev.yaml",
                "bgpfilters.petrel.dev.yaml",
                "bgpnodestatuses.petrel.dev.yaml",
                "bgppeers.petrel.dev.yaml",
                "ipamblocks.petrel.dev.yaml",
                "ippools.petrel.dev.yaml",
                "loadbalancerpools.petrel.dev.yaml",
            ]
        );
        let peers = peers.expect("bgppeers file");
        assert!(crds::crds_yaml().expect("yaml").contains(&peers));
        assert!(peers.contains("kind: CustomResourceDefinition"));
    }

    #[test]
    fn the_json_list_holds_every_crd() {
        let list: serde_json::Value =
            serde_json::from_str(&json_list().expect("json")).expect("parses");
        assert_eq!(list["kind"], "List");
        let names: Vec<&str> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|c| c["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names.len(), 9);
        assert!(names.contains(&"loadbalancerpools.petrel.dev"));
    }
}
