//! `cargo xtask bench detect|forward`. Stub until the benchmarks land.

use anyhow::{Result, bail};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Which {
    Detect,
    Forward,
}

pub fn run(which: Which, args: &[String]) -> Result<()> {
    match which {
        Which::Forward => crate::bench_forward::run(args),
        Which::Detect => bail!("bench {which:?} is not written yet"),
    }
}
