//! The process's entry: parse the command line, set up logs, run a
//! command. `main.rs` only calls [`run`], so every module stays
//! `pub(crate)` and the compiler finds what nothing uses.

use crate::cli::{self, Command};

/// Runs the command the command line names; the process's exit code.
pub fn run() -> i32 {
    // Before anything else: the eBPF loader child is this binary too.
    #[cfg(target_os = "linux")]
    crate::detect::ebpf::loader_child::run_if_asked();
    let cli = cli::parse();
    crate::malloc::tune_malloc();
    let output = cli.output.output();
    crate::logging::init(output);
    match cli.command {
        Command::Doctor(args) => crate::doctor::run(&args),
        Command::Service(args) => crate::service::run(&args, output),
        Command::Status(args) => crate::status::run(&args, output),
        Command::Completions(args) => crate::cli_docs::completions(&args, output),
        Command::Man(args) => crate::cli_docs::man(&args, output),
        command => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("error: cannot start the async runtime: {err}");
                    std::process::exit(1);
                }
            };
            // The command runs as a task of its own, not as `block_on`'s
            // future: the scheduler polls that future only after a turn of
            // the I/O driver, so every wake-up of the main loop (one per
            // forwarded request) cost an extra `epoll_wait`.
            let main = runtime.spawn(async move {
                match command {
                    Command::Watch(args) => crate::watch::run(args, output).await,
                    Command::Connect(args) => crate::connect::run(*args, output).await,
                    Command::Doctor(_)
                    | Command::Status(_)
                    | Command::Service(_)
                    | Command::Completions(_)
                    | Command::Man(_) => unreachable!("handled above"),
                }
            });
            match runtime.block_on(main) {
                Ok(code) => code,
                // A panic leaves as it did from `block_on`'s own future.
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(err) => {
                    eprintln!("error: {err}");
                    1
                }
            }
        }
    }
}
