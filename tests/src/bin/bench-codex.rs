//! `bench-codex`: Codex instances through the runner (`cargo xtask bench
//! codex`); prints a Markdown table (see `integration_tests::bench_codex`).

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Codex instances through kandan-runner connect: latency, batching, CPU, memory")]
struct Args {
    /// The runner (default: the release build).
    #[arg(long)]
    runner: Option<PathBuf>,
    /// Only the 1.2 GB flood with Kandan paused (no Codex needed).
    #[arg(long)]
    flood_only: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runner = args.runner.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/kandan-runner")
    });
    anyhow::ensure!(runner.exists(), "{} missing", runner.display());
    if args.flood_only {
        let flood = integration_tests::bench_codex::flood(&runner).await?;
        print!("{}", flood.markdown());
        return Ok(());
    }
    let codex = integration_tests::codex::codex_bin()?;
    let bench = integration_tests::bench_codex::run(&runner, &codex).await?;
    print!("{}", bench.markdown());
    Ok(())
}
