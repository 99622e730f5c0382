//! `bench-editor`: the local-editor benchmark (`cargo xtask bench editor`);
//! prints a Markdown table (see `integration_tests::bench_editor`).

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Local editor: time from start to Started, cold and warm")]
struct Args {
    /// code-server to start; the test fixture's by default.
    #[arg(long, env = "KANDAN_CODE_SERVER_BIN")]
    code_server: Option<PathBuf>,
    /// The runner for the through-Kandan rows (default: the release build).
    #[arg(long)]
    runner: Option<PathBuf>,
    /// Starts per measure (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let code_server = args.code_server.unwrap_or_else(|| {
        integration_tests::code_server::fixture_dir().join("node_modules/.bin/code-server")
    });
    anyhow::ensure!(
        code_server.exists(),
        "{} missing: run `cargo xtask setup --tests`",
        code_server.display()
    );
    let runner = args.runner.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/kandan-runner")
    });
    anyhow::ensure!(runner.exists(), "{} missing", runner.display());
    let bench = integration_tests::bench_editor::run(&code_server, &runner, args.runs).await?;
    print!("{}", bench.markdown());
    Ok(())
}
