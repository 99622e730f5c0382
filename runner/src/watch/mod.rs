//! `kandan-runner watch`: print the roots' listeners as they open, change and
//! close; with `-- COMMAND`, exit with the command's status.

mod line;

use std::io::Write;

use tokio::process::Child;

use crate::cli::WatchArgs;
use crate::watched::{self, Watched};

pub use line::render;

/// Runs `watch` and returns the process exit code.
pub async fn run(args: WatchArgs) -> i32 {
    let (
        Watched {
            selection,
            mut candidates,
            mut child,
        },
        mut signals,
    ) = match watched::start_for_command(&args.detector) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            event = candidates.recv() => {
                let Some(event) = event else {
                    eprintln!("error: the detector stopped");
                    return 1;
                };
                if let Some(line) = render(&event, selection.kind, args.json) {
                    // A closed stdout (`| head`) ends the watch quietly.
                    if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
                        return 0;
                    }
                }
            }
            status = wait(&mut child) => return crate::spawn::exit_code(status),
            signal = signals.recv() => {
                match &child {
                    Some(child) => signals.forward(signal, child),
                    None => return 128 + signal.number(),
                }
            }
        }
    }
}

/// The child's exit status; pends forever when there is no child.
pub(crate) async fn wait(child: &mut Option<Child>) -> std::process::ExitStatus {
    match child {
        Some(child) => match child.wait().await {
            Ok(status) => status,
            Err(err) => {
                tracing::error!("cannot wait for the command: {err}");
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}
