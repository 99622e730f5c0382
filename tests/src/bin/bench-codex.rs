//! `bench-codex`: Codex instances through the runner (`cargo xtask bench
//! codex`); prints a Markdown table (see `integration_tests::bench_codex`).

use std::path::PathBuf;

use clap::Parser;
use integration_tests::bench_codex::{self, Pace};

#[derive(Parser)]
#[command(
    about = "Codex instances through kandan-runner connect: latency, batching, CPU, memory",
    after_help = "Modes: without a mode flag, the real pinned Codex (tests/fixtures/codex) with \
                  the fake model, then the flood. --replay: a stand-in app-server \
                  (tests/fixtures/codex_replay.py) replays a recorded real Codex turn \
                  (tests/fixtures/codex_turn.jsonl, 1,000 deltas) five times, at its original \
                  pace and as fast as possible, answering the runner's requests as Codex did: \
                  the runner's relay from the line written to the frame at Kandan (flush 0, \
                  p50 target < 0.2 ms) and its CPU per notification, without Codex's own CPU. \
                  --record FILE makes such a recording from the pinned Codex. The replay runs \
                  in turns with the bare relay (bench-codex connect), the least any runner \
                  does on this harness, and prints the runner's ratios to it."
)]
struct Args {
    /// The runner (default: the release build).
    #[arg(long)]
    runner: Option<PathBuf>,
    /// Only the 1.2 GB flood with Kandan paused (no Codex needed).
    #[arg(long)]
    flood_only: bool,
    /// Only the replay of a recorded Codex turn (no Codex needed).
    #[arg(long, conflicts_with_all = ["flood_only", "record"])]
    replay: bool,
    /// The recording to replay (default: tests/fixtures/codex_turn.jsonl).
    #[arg(long, requires = "replay")]
    recording: Option<PathBuf>,
    /// With --replay: the relay alone on CPU 1, the simulator and the
    /// stand-in on CPU 0 (two CPUs or more).
    #[arg(long, requires = "replay")]
    pin: bool,
    /// With --replay: count the relay's user-space instructions per
    /// notification under valgrind's callgrind instead of timing it
    /// (repeatable on a busy machine).
    #[arg(long, requires = "replay", conflicts_with = "pin")]
    instructions: bool,
    /// Record a turn of the pinned Codex into FILE for --replay, and stop.
    #[arg(long, value_name = "FILE", conflicts_with = "flood_only")]
    record: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// The bare relay (`bench_codex::bare`), started with `kandan-runner
    /// connect`'s arguments in its place.
    Connect(bench_codex::bare::Args),
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(Cmd::Connect(bare)) = args.cmd.take() {
        return bench_codex::bare::run(bare);
    }
    if args.pin {
        bench_codex::Pinning::pin_bench()?;
    }
    if args.instructions {
        integration_tests::bench::instructions::want();
    }
    tokio::runtime::Runtime::new()?.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let runner = args.runner.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/kandan-runner")
    });
    anyhow::ensure!(runner.exists(), "{} missing", runner.display());
    if args.flood_only {
        let flood = bench_codex::flood(&runner).await?;
        print!("{}", flood.markdown());
        return Ok(());
    }
    if args.replay {
        let recording = args.recording.unwrap_or_else(bench_codex::replay_fixture);
        // The bare relay is this program (`connect`), started as the runner is.
        let bare = std::env::current_exe()?;
        print!("| Codex relay, replayed | value | target |\n|---|---:|---|\n");
        for pace in [Pace::Original, Pace::Fast, Pace::Spaced] {
            let by_runner = bench_codex::replay(&runner, &recording, pace).await?;
            let by_bare = bench_codex::replay(&bare, &recording, pace).await?;
            print!(
                "{}{}{}",
                by_runner.markdown("runner"),
                by_bare.markdown("bare relay"),
                by_runner.against_bare(&by_bare)
            );
        }
        return Ok(());
    }
    let codex = integration_tests::codex::codex_bin()?;
    if let Some(out) = args.record {
        let lines = bench_codex::record(&runner, &codex, &out).await?;
        eprintln!("{lines} lines recorded into {}", out.display());
        return Ok(());
    }
    let bench = bench_codex::run(&runner, &codex).await?;
    print!("{}", bench.markdown());
    Ok(())
}
