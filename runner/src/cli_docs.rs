//! `kandan-runner completions SHELL` and `kandan-runner man`: generated from
//! the same clap definition as the parser, so they never drift from it.

use std::io::{self, Write};

use clap::{Args, CommandFactory, ValueEnum};

use crate::cli::Cli;

/// The name completions complete and the man page documents.
const BIN: &str = "kandan-runner";

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// The shells of PROTOCOL.md section 1 (clap_complete knows more).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for clap_complete::Shell {
    fn from(shell: CompletionShell) -> Self {
        match shell {
            CompletionShell::Bash => Self::Bash,
            CompletionShell::Zsh => Self::Zsh,
            CompletionShell::Fish => Self::Fish,
        }
    }
}

/// Prints the completion script on stdout; exit code.
pub fn completions(args: &CompletionsArgs) -> i32 {
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(args.shell),
        &mut Cli::command(),
        BIN,
        &mut script,
    );
    write_stdout(&script)
}

/// Prints the man page (roff) on stdout; exit code.
pub fn man() -> i32 {
    let mut page = Vec::new();
    if let Err(err) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
        eprintln!("error: cannot render the man page: {err}");
        return 1;
    }
    write_stdout(&page)
}

fn write_stdout(bytes: &[u8]) -> i32 {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        // `kandan-runner man | head` closes the pipe early; not an error.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(err) => {
            eprintln!("error: cannot write to stdout: {err}");
            1
        }
    }
}
