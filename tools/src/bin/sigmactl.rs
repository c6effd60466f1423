//! sigmactl: the command-line client of sigmad.
//!
//! Not built yet (issue #4); it refuses to run rather than pretend.
use clap::Parser;

/// Command-line client of sigmad (not yet implemented: see issue #4).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("sigmactl is not implemented yet: sigmad's admin API arrives with issue #4")
}
