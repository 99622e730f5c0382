//! `cargo xtask bench detect|forward`. Stub until the benchmarks land.

use anyhow::{Result, bail};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Which {
    Detect,
    Forward,
}

pub fn run(which: Which, _args: &[String]) -> Result<()> {
    bail!("bench {which:?} is not written yet")
}
