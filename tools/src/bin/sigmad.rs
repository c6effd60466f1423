//! sigmad: the per-machine σ daemon.
//!
//! Not built yet. Its first real job (serving the namespace) is issue #4;
//! until then it refuses to start rather than pretend to run.
use clap::Parser;

/// The per-machine σ daemon (not yet implemented: see issue #4).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("sigmad is not implemented yet: the namespace service arrives with issue #4")
}
