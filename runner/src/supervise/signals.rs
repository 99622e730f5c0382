//! Ctrl-C and friends. Each starts the shutdown (PROTOCOL.md section 9);
//! with `-- COMMAND` the signal is passed to the command first, and the
//! runner exits with the command's status.

use std::io::{self, IsTerminal};

use tokio::process::Child;
use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};

/// A signal the runner handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    Interrupt,
    Terminate,
    Hangup,
}

impl Signal {
    pub(crate) fn number(self) -> i32 {
        match self {
            Signal::Interrupt => libc::SIGINT,
            Signal::Terminate => libc::SIGTERM,
            Signal::Hangup => libc::SIGHUP,
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP as a stream.
pub(crate) struct Signals {
    interrupt: UnixSignal,
    terminate: UnixSignal,
    hangup: UnixSignal,
}

impl Signals {
    pub(crate) fn new() -> io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal.
    pub(crate) async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::Interrupt,
            _ = self.terminate.recv() => Signal::Terminate,
            _ = self.hangup.recv() => Signal::Hangup,
        }
    }

    /// Passes `signal` on to the command. A Ctrl-C typed in a terminal has
    /// already reached the command (same foreground process group), so it
    /// is not sent twice; a SIGINT sent to the runner alone is passed on.
    pub(crate) fn forward(&self, signal: Signal, child: &Child) {
        if signal == Signal::Interrupt && io::stdin().is_terminal() {
            return;
        }
        let Some(pid) = child.id() else { return };
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return;
        };
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // child's, which we have not reaped yet.
        unsafe {
            libc::kill(pid, signal.number());
        }
    }
}
