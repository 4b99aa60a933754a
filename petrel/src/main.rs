//! `petrel`: the node agent, the controller and the operator's command line.
//!
//! Today it has one subcommand, `petrel decode`, which reads MRT captures with
//! petrel's own BGP codec; the agent, controller and lab arrive with later issues.

mod decode;
mod json;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "petrel",
    version,
    about = "Kubernetes routing controller with a native BGP speaker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode MRT files (RFC 6396; plain, gzip or bzip2) and print one JSON object per record.
    Decode(DecodeArgs),
}

/// Arguments of `petrel decode`.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// MRT files to read.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Re-encode every BGP message (and every RIB entry's attributes) and
    /// compare with the original bytes; a difference counts as an error.
    #[arg(long)]
    check: bool,
    /// Print counts per file instead of the records.
    #[arg(long)]
    summary: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode(args) => match decode::run(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("petrel decode: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}
