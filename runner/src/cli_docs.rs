//! `kandan-runner completions SHELL` and `kandan-runner man`: generated from
//! the same clap definition as the parser, so they never drift from it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
    if let CompletionShell::Bash = args.shell {
        script = fix_bash_names(&script).into_bytes();
    }
    write_stdout(&script)
}

/// clap_complete's bash script names its case arms from the binary name
/// with `-` taken as a separator (`kandan__subcmd__runner__subcmd__watch`)
/// while its dispatch sets `kandan__runner__subcmd__watch`: no arm matched,
/// so nothing completed after the first word. The arms get the dispatch's
/// names.
fn fix_bash_names(script: &[u8]) -> String {
    let wrong = format!(
        "{}__subcmd__",
        BIN.replacen('-', "__subcmd__", 1).replace('-', "__")
    );
    let right = format!("{}__subcmd__", BIN.replace('-', "__"));
    String::from_utf8_lossy(script).replace(&wrong, &right)
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write kandan-runner.1 and a page per subcommand (kandan-runner-watch.1,
    /// ...) into DIR instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the man page (roff) on stdout, or writes every page into
/// `--dir`; exit code.
pub fn man(args: &ManArgs) -> i32 {
    if let Some(dir) = &args.dir {
        return match write_pages(dir) {
            Ok(()) => 0,
            Err(err) => {
                crate::report::error(format!("--dir {}: {err}", dir.display()));
                1
            }
        };
    }
    let mut page = Vec::new();
    if let Err(err) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
        crate::report::error(format!("cannot render the man page: {err}"));
        return 1;
    }
    write_stdout(&page)
}

fn write_pages(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)?;
    let mut pages: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(BIN) && name.ends_with(".1")
        })
        .collect();
    pages.sort();
    for page in pages {
        println!("wrote {}", page.display());
    }
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> i32 {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        // `kandan-runner man | head` closes the pipe early; not an error.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(err) => {
            crate::report::error(format!("cannot write to stdout: {err}"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks over every subcommand (duplicate
    /// flags, bad conflicts), which completions and man pages rely on.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
