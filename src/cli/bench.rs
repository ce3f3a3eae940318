//! `orrery bench [--json] [--quick]`: measure the host and print the figures.

use orrery::bench::{BenchReport, embedded};
use orrery::error::exit;

/// Arguments of `orrery bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A short smoke run: every measurement once, with rough figures.
    #[arg(long)]
    pub quick: bool,
}

pub fn execute(args: BenchArgs) -> anyhow::Result<i32> {
    let sizes = if args.quick {
        embedded::Sizes::quick()
    } else {
        embedded::Sizes::full()
    };
    let runtime = super::runtime()?;
    let embedded = runtime.block_on(embedded::run(sizes))?;
    let report = BenchReport {
        version: env!("CARGO_PKG_VERSION"),
        quick: args.quick,
        embedded,
    };
    if args.json {
        super::print_out(&format!("{}\n", serde_json::to_string_pretty(&report)?));
    } else {
        super::print_out(&embedded::table(&report.embedded));
    }
    Ok(exit::OK)
}
