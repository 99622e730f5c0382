//! `cargo xtask`: set up the machine, run the runner, run every test, bench.

mod bench;
mod cmd;
mod deb;
mod demo;
mod deps;
mod dist;
mod licenses;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the eBPF object needs (idempotent) and mount tracefs.
    Setup {
        /// Also install what the tests need (browser, capsh, npm fixtures, macOS target).
        #[arg(long)]
        tests: bool,
    },
    /// Set up, build, and run `kandan-runner ARGS...`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The whole loop offline: a Kandan stand-in page, a runner with Codex
    /// (scripted fake model) and code-server, a sample app (docs/demo.md).
    Demo {
        /// Stop everything once ready (for tests).
        #[arg(long)]
        exit_after_ready: bool,
    },
    /// Set up and run every test: unit, end-to-end, privileged, lints.
    Test,
    /// Release archives (static musl binary with the eBPF object, completions,
    /// man pages) in target/dist, with sizes and sha256 sums.
    Dist {
        /// Target triple (repeatable); default x86_64 and aarch64 Linux musl.
        #[arg(long = "target", value_name = "TRIPLE")]
        targets: Vec<String>,
    },
    /// One .deb for this machine's architecture from a built binary (what
    /// `dist` does per target, without the release build): for tests.
    Deb {
        /// The binary to package; default target/debug/kandan-runner.
        #[arg(long, value_name = "PATH")]
        bin: Option<std::path::PathBuf>,
        /// Where the .deb goes; default target/dist.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// The cycles between runner/src's top-level modules (imports must go
    /// one way); fails when there are more than `--max`.
    Deps {
        #[arg(long)]
        max: Option<usize>,
    },
    /// Benchmarks: `detect` or `forward`, results printed as a table.
    Bench {
        #[arg(value_enum)]
        which: bench::Which,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup { tests } => setup::run(tests),
        Task::Run { args } => {
            setup::run(false)?;
            cmd::cargo(&["build", "-p", "runner", "--bin", "kandan-runner"])?;
            let bin = cmd::workspace_root().join("target/debug/kandan-runner");
            cmd::exec(&bin, &args)
        }
        Task::Demo { exit_after_ready } => demo::run(exit_after_ready),
        Task::Test => test::run(),
        Task::Dist { targets } => dist::run(&targets),
        Task::Deb { bin, out } => dist::host_deb(bin, out),
        Task::Deps { max } => deps::run(max),
        Task::Bench { which, args } => {
            setup::run(true)?;
            bench::run(which, &args)
        }
    }
}
