//! Thin entry point: parse the command line, set up logs, run a command.

use runner::cli::{self, Command};

fn main() {
    // Before anything else: the eBPF loader child is this binary too.
    #[cfg(target_os = "linux")]
    runner::detect::ebpf::loader_child::run_if_asked();
    let cli = cli::parse();
    runner::control::budget::return_large_blocks_to_the_system();
    let output = cli.output.output();
    runner::logging::init(output);
    let code = match cli.command {
        Command::Doctor(args) => runner::doctor::run(&args),
        Command::Service(args) => runner::service::run(&args, output),
        Command::Status(args) => runner::status::run(&args, output),
        Command::Completions(args) => runner::cli_docs::completions(&args, output),
        Command::Man(args) => runner::cli_docs::man(&args, output),
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
                    Command::Watch(args) => runner::watch::run(args, output).await,
                    Command::Connect(args) => runner::connect::run(*args, output).await,
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
    };
    std::process::exit(code);
}
