//! `kandan-runner completions SHELL` and `kandan-runner man`: generated from
//! the same clap definition as the parser, so they never drift from it.

use std::io::{self, Write};
use std::path::Path;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionShell, CompletionsArgs, ManArgs};
use crate::logging::Output;
use crate::report::Report;

/// The name completions complete and the man page documents.
const BIN: &str = "kandan-runner";

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
pub(crate) fn completions(args: &CompletionsArgs, output: Output) -> i32 {
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
    write_stdout(&script, &Report::new(output))
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

/// Prints the man page (roff) on stdout, or writes every page into
/// `--dir`; exit code.
pub(crate) fn man(args: &ManArgs, output: Output) -> i32 {
    let printer = Report::new(output);
    if let Some(dir) = &args.dir {
        return match write_pages(dir) {
            Ok(()) => 0,
            Err(err) => {
                printer.error(format!("--dir {}: {err}", dir.display()));
                1
            }
        };
    }
    let mut page = Vec::new();
    if let Err(err) = clap_mangen::Man::new(man_command()).render(&mut page) {
        printer.error(format!("cannot render the man page: {err}"));
        return 1;
    }
    let page = unlink_subpages(&String::from_utf8_lossy(&page), |_| false);
    let pointer = ".SH SUBCOMMANDS\nEach has a page of its own, written by \\fBkandan\\-runner man \\-\\-dir\\fR \\fIDIR\\fR.\n.PP\n";
    write_stdout(
        page.replacen(".SH SUBCOMMANDS\n", pointer, 1).as_bytes(),
        &printer,
    )
}

/// The command as the pages show it: the version alone in their header
/// line (`--version`'s text has several lines, which roff's `.TH` cannot).
fn man_command() -> clap::Command {
    Cli::command().version(env!("CARGO_PKG_VERSION"))
}

/// A page names only pages that are installed: a link to another
/// (`kandan-runner-watch(1)`) for which `installed(name)` (the page's name
/// without `.1`) is false becomes the command (`kandan-runner watch`). The
/// printed page alone installs none; `man --dir` writes a page per
/// subcommand but none for `help`.
fn unlink_subpages(page: &str, installed: impl Fn(&str) -> bool) -> String {
    let prefix = format!("{}\\-", BIN.replace('-', "\\-"));
    let mut out = String::with_capacity(page.len());
    let mut rest = page;
    while let Some(at) = rest.find(&prefix) {
        let after = &rest[at + prefix.len()..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '\\' || c == '-'))
            .unwrap_or(after.len());
        let (name, tail) = after.split_at(name_len);
        out.push_str(&rest[..at]);
        let page_name = format!("{BIN}-{}", name.replace("\\-", "-"));
        match tail.strip_prefix("(1)") {
            Some(tail) if !installed(&page_name) => {
                out.push_str(&BIN.replace('-', "\\-"));
                out.push(' ');
                out.push_str(&name.replace("\\-", " "));
                rest = tail;
            }
            _ => {
                out.push_str(&prefix);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn write_pages(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(man_command(), dir)?;
    let mut pages: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(BIN) && name.ends_with(".1")
        })
        .collect();
    pages.sort();
    let installed = |name: &str| dir.join(format!("{name}.1")).is_file();
    for page in &pages {
        let text = std::fs::read_to_string(page)?;
        let unlinked = unlink_subpages(&text, installed);
        if unlinked != text {
            std::fs::write(page, unlinked)?;
        }
    }
    for page in pages {
        println!("wrote {}", page.display());
    }
    Ok(())
}

fn write_stdout(bytes: &[u8], printer: &Report) -> i32 {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        // `kandan-runner man | head` closes the pipe early; not an error.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(err) => {
            printer.error(format!("cannot write to stdout: {err}"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The printed page links no page it does not install.
    #[test]
    fn the_printed_page_names_subcommands_without_links_to_missing_pages() {
        let mut page = Vec::new();
        clap_mangen::Man::new(man_command())
            .render(&mut page)
            .unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(
            page.contains("kandan\\-runner\\-watch(1)"),
            "clap changed: {page}"
        );
        let printed = unlink_subpages(&page, |_| false);
        assert!(!printed.contains("kandan\\-runner\\-"), "{printed}");
        assert!(printed.contains("kandan\\-runner watch"), "{printed}");
        // Installed pages keep their links.
        let linked = unlink_subpages(&page, |name| name != "kandan-runner-help");
        assert!(linked.contains("kandan\\-runner\\-watch(1)"), "{linked}");
        assert!(!linked.contains("kandan\\-runner\\-help(1)"), "{linked}");
        assert!(linked.contains("kandan\\-runner help"), "{linked}");
    }

    /// clap's own consistency checks over every subcommand (duplicate
    /// flags, bad conflicts), which completions and man pages rely on.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
