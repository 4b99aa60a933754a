//! `petrel rib --summary`: the table's size from the speaker's counters.

use std::path::Path;

use proto::v1 as pb;
use serde_json::json;

use crate::client::{Format, print_data};

/// Prints prefixes, paths and attribute sets. The table puts the path count
/// last, so a script taking the last number gets the accepted paths (what
/// FRR's `pfxRcd` and BIRD's `imported` count).
pub(crate) async fn show(socket: &Path, output: Format) -> anyhow::Result<()> {
    let mut client = pb::rib_service_client::RibServiceClient::new(api::connect(socket).await?);
    let s = client
        .get_rib_summary(pb::RibSummaryRequest {})
        .await?
        .into_inner();
    match output {
        Format::Table => {
            let state = match (s.deferring, s.converged) {
                (true, _) => "route selection deferred (graceful restart)",
                (false, true) => "converged",
                (false, false) => "converging",
            };
            println!("state           {state}");
            println!("attribute sets  {}", s.attribute_sets);
            println!("prefixes        {}", s.prefixes);
            println!("paths           {}", s.paths);
        }
        Format::Json | Format::Yaml => print_data(
            &json!({
                "prefixes": s.prefixes,
                "paths": s.paths,
                "attribute_sets": s.attribute_sets,
                "converged": s.converged,
                "deferring": s.deferring,
            }),
            output,
        )?,
    }
    Ok(())
}
