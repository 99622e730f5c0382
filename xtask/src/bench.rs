//! `cargo xtask bench detect|forward`: each benchmark in its own module,
//! results printed as a Markdown table (BENCHMARKS.md).

mod detect;
mod forward;

use anyhow::Result;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Which {
    Detect,
    Forward,
}

pub fn run(which: Which, args: &[String]) -> Result<()> {
    // `cargo xtask bench detect -- --quick`: the `--` is ours to drop.
    let args = match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    };
    match which {
        Which::Detect => detect::run(args),
        Which::Forward => forward::run(args),
    }
}
