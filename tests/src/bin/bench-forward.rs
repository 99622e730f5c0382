//! `bench-forward`: the forwarding benchmark (`cargo xtask bench forward`),
//! and the local server it runs under the runner (`serve`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use integration_tests::bench_forward::{self, Options, bare, server};

#[derive(Parser)]
#[command(about = "Forwarding benchmark: client -> simulator -> kandan-runner -> local server")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure and print the table.
    Run {
        /// The kandan-runner binary (build it with --release).
        #[arg(long)]
        runner: PathBuf,
        /// One round with fewer requests.
        #[arg(long)]
        quick: bool,
    },
    /// Only the live gate and verified dial table.
    Gate {
        #[arg(long)]
        quick: bool,
    },
    /// Only the Vite page table (300 modules in headless Chromium).
    Page {
        /// The kandan-runner binary (build it with --release).
        #[arg(long)]
        runner: PathBuf,
        /// Fewer samples.
        #[arg(long)]
        quick: bool,
    },
    /// Forwarded 100 B GETs for a while, to attach a profiler to the
    /// runner (its pid is printed); then the rate and CPU per 1,000.
    Soak {
        /// The kandan-runner binary; this bench-forward binary itself soaks
        /// the bare forwarder instead.
        #[arg(long)]
        runner: PathBuf,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// 1 MiB GETs instead of 100 B ones.
        #[arg(long)]
        big: bool,
        /// WebSocket echo round trips instead of GETs.
        #[arg(long)]
        ws: bool,
        /// Count the runner's user-space instructions per GET instead of
        /// its CPU time: it runs under valgrind's callgrind, instrumented
        /// only while the load runs (repeatable on a busy machine).
        #[arg(long, conflicts_with = "ws")]
        instructions: bool,
        /// GETs at this many per second in all instead of as fast as they
        /// are answered: two forwarders soaked at one rate see the same
        /// arrivals, so their CPU per GET compares their code.
        #[arg(long, conflicts_with = "ws")]
        rate: Option<f64>,
    },
    /// The listener helper the close-to-refused measure watches (see
    /// `bench::helper`).
    Helper,
    /// The bare forwarder (`bench_forward::bare`), started with
    /// `kandan-runner connect`'s arguments in its place.
    #[command(hide = true)]
    Connect(bare::Args),
    /// The local server: /small, /big, /upload, /ws (echo) on 127.0.0.1:PORT.
    Serve {
        #[arg(long)]
        port: u16,
        /// Exit when this process is gone (the benchmark), so no server outlives it.
        #[arg(long)]
        parent_pid: Option<i32>,
    },
}

fn main() -> anyhow::Result<()> {
    let command = Args::parse().command;
    let runtime = match command {
        // One thread, as the runner has.
        Cmd::Connect(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Runtime::new()?,
    };
    runtime.block_on(run(command))
}

async fn run(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Run { runner, quick } => {
            let opts = Options {
                runner,
                quick,
                callgrind: None,
            };
            bench_forward::run(opts).await
        }
        Cmd::Gate { quick } => bench_forward::gate::report(quick).await,
        Cmd::Soak {
            runner,
            seconds,
            clients,
            big,
            ws,
            instructions,
            rate,
        } => {
            let profile = tempfile::tempdir()?;
            let opts = Options {
                runner,
                quick: false,
                callgrind: instructions.then(|| profile.path().join("callgrind.out")),
            };
            let load = bench_forward::soak::Soak { big, ws, rate };
            bench_forward::soak::soak(opts, seconds, clients, load).await
        }
        Cmd::Page { runner, quick } => bench_forward::page::report(&runner, quick).await,
        Cmd::Helper => integration_tests::bench::helper::serve(),
        Cmd::Serve { port, parent_pid } => {
            if let Some(parent) = parent_pid {
                tokio::spawn(async move {
                    loop {
                        // SAFETY: signal 0 only checks that the process exists.
                        if unsafe { libc::kill(parent, 0) } != 0 {
                            std::process::exit(0);
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                });
            }
            server::serve(port).await
        }
        Cmd::Connect(args) => bare::run(args).await,
    }
}
