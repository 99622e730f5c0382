//! `kandan-runner watch`: print the roots' listeners as they open, change and
//! close; with `-- COMMAND`, exit with the command's status.

mod line;

use std::io::Write;
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use crate::cli::WatchArgs;
use crate::logging::Output;
use crate::report::{Line, Report};
use crate::supervise::{self, RunnerStop};
use crate::trees::{self, CommandOutput, Trees};

pub(crate) use line::render;

/// How long the final `closed` lines may take once the command is gone.
const FINAL_LINES: Duration = Duration::from_millis(250);

/// Runs `watch` and returns the process exit code.
pub(crate) async fn run(args: WatchArgs, output: Output) -> i32 {
    let report = Report::new(output);
    let command_output = CommandOutput {
        // stdout is the JSON stream: the command's own output must not mix in.
        stdout_to_stderr: args.json,
    };
    let (
        Trees {
            selection,
            mut candidates,
            mut command,
            finisher,
            mut root_pids,
            containment,
            ..
        },
        signals,
    ) = match trees::start_for_command(&args.detector, command_output, None, &report) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let mut signals = signals;
    report.started("watch", &selection.kind.to_string());
    // Removed (with its socket) when `watch` returns.
    let _status = crate::status::serve(report.clone());
    if args.detector.root_pids.is_empty() && args.detector.command.is_empty() {
        report.notice(Line::new(
            "watching",
            "watching the runner's own descendants (give --root-pid PID or -- COMMAND to watch another tree)",
        ));
    }
    let mut stdout = std::io::stdout();
    let mut print = |event| {
        report.watched(&event, &args.detector.redactor);
        let redact = args.redact.then_some(&args.detector.redactor);
        match render(&event, selection.kind, args.json, redact) {
            // A closed stdout (`| head`) ends the watch quietly.
            Some(line) => writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_ok(),
            None => true,
        }
    };
    let stop = loop {
        tokio::select! {
            event = candidates.recv() => {
                let Some(event) = event else {
                    report.error("the detector stopped");
                    return 1;
                };
                if !print(event) {
                    return 0;
                }
            }
            code = supervise::exit_code_of(&mut command) => break RunnerStop::Exited(code),
            () = root_pids.all_ended() => break RunnerStop::Exited(0),
            signal = signals.recv() => break RunnerStop::Signal(signal),
        }
    };
    // PROTOCOL.md section 9: end the command's tree, then say `closed` for
    // every reported port that no longer listens, without the window.
    let code = supervise::finish(command, stop, &signals).await;
    containment.remove();
    finisher.finish().await;
    let deadline = Instant::now() + FINAL_LINES;
    while let Ok(Some(event)) = timeout_at(deadline, candidates.recv()).await {
        if !print(event) {
            break;
        }
    }
    code
}
