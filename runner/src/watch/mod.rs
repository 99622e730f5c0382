//! `kandan-runner watch`: print the roots' listeners as they open, change and
//! close; with `-- COMMAND`, exit with the command's status.

mod line;

use std::io::Write;

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
    ) = match watched::start_for_command(&args.detector, None) {
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
            code = crate::spawn::exit_code_of(&mut child) => return code,
            signal = signals.recv() => {
                match &child {
                    Some(child) => signals.forward(signal, child),
                    None => return 128 + signal.number(),
                }
            }
        }
    }
}
