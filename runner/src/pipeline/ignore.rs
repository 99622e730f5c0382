//! Ports and commands that are never candidates.
//!
//! The defaults drop listeners that a dev tool opens for itself and that
//! nobody wants to preview in a browser, so users are not asked about them:
//!
//! | what | why |
//! |---|---|
//! | ports 9229-9230 | Node inspector (`node --inspect`; 9230 is the next one a child or worker takes) |
//! | port 9222 | Chrome DevTools remote debugging (headless Chrome, Puppeteer, Playwright) |
//! | port 5678 | debugpy (VS Code's Python debugger) |
//! | port 5005 | JDWP (Java debugger, `-agentlib:jdwp`, Gradle/Maven debug) |
//! | `ipykernel` | Jupyter kernels listen on five random ports each; Jupyter itself stays |
//! | `language-server`, `langserver`, `rust-analyzer`, `gopls`, `pyright`, `tsserver`, `pylsp` | language servers that talk over TCP |
//!
//! Debuggers are matched by port, not command: `node --inspect server.js`
//! holds both the inspector and the app's own port. Everything else a user
//! adds with `--ignore-port` / `--ignore-command`, and `--no-default-ignores`
//! drops the table above.

use std::fmt;
use std::str::FromStr;

use crate::config::PortRange;
use crate::detect::process_info::ProcessInfo;

/// Why a command pattern was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum IgnoreSpecError {
    /// An empty command pattern would match every command.
    #[error("empty command pattern")]
    EmptyPattern,
}

/// Matches a full command line: a substring, or with `*` (any run of
/// characters) or `?` (one character) a glob over the whole line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommandPattern(String);

impl CommandPattern {
    pub(crate) fn matches(&self, command: &str) -> bool {
        if self.0.contains(['*', '?']) {
            glob_match(self.0.as_bytes(), command.as_bytes())
        } else {
            command.contains(&self.0)
        }
    }
}

impl FromStr for CommandPattern {
    type Err = IgnoreSpecError;

    /// Parses a pattern for `--ignore-command`.
    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        if pattern.trim().is_empty() {
            return Err(IgnoreSpecError::EmptyPattern);
        }
        Ok(CommandPattern(pattern.to_string()))
    }
}

impl fmt::Display for CommandPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `*` and `?` over bytes, iterative with one backtrack point, so no input
/// can make it slow.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Default ignored ports: debuggers and DevTools (see the module docs).
pub(crate) const DEFAULT_PORTS: &[(u16, u16)] =
    &[(9229, 9230), (9222, 9222), (5678, 5678), (5005, 5005)];

/// Default ignored commands: Jupyter kernels and language servers.
pub(crate) const DEFAULT_COMMANDS: &[&str] = &[
    "ipykernel",
    "language-server",
    "langserver",
    "rust-analyzer",
    "gopls",
    "pyright",
    "tsserver",
    "pylsp",
];

/// Ports and commands that are never candidates. `Default` is the
/// documented default table; [`IgnorePolicy::empty`] ignores nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IgnorePolicy {
    ports: Vec<PortRange>,
    commands: Vec<CommandPattern>,
}

impl Default for IgnorePolicy {
    fn default() -> Self {
        IgnorePolicy {
            ports: DEFAULT_PORTS
                .iter()
                .map(|&(start, end)| PortRange { start, end })
                .collect(),
            commands: DEFAULT_COMMANDS
                .iter()
                .map(|c| CommandPattern(c.to_string()))
                .collect(),
        }
    }
}

impl IgnorePolicy {
    /// Ignores nothing.
    pub(crate) fn empty() -> Self {
        IgnorePolicy {
            ports: Vec::new(),
            commands: Vec::new(),
        }
    }

    /// What the command line asks for: the defaults unless `no_defaults`,
    /// plus the user's ports and patterns.
    pub(crate) fn from_cli(
        no_defaults: bool,
        ports: impl IntoIterator<Item = PortRange>,
        commands: impl IntoIterator<Item = CommandPattern>,
    ) -> Self {
        let mut policy = if no_defaults {
            IgnorePolicy::empty()
        } else {
            IgnorePolicy::default()
        };
        policy.ports.extend(ports);
        policy.commands.extend(commands);
        policy
    }

    /// True when a listener on `port` held by `process` is never reported.
    pub(crate) fn ignores(&self, port: u16, process: &ProcessInfo) -> bool {
        self.ports.iter().any(|range| range.contains(port))
            || self
                .commands
                .iter()
                .any(|pattern| pattern.matches(&process.command))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(command: &str) -> ProcessInfo {
        let argv: Vec<String> = command.split(' ').map(str::to_string).collect();
        ProcessInfo::from_argv(&argv, None)
    }

    #[test]
    fn patterns_match_substrings_and_globs() {
        let sub: CommandPattern = "ipykernel".parse().unwrap();
        assert!(sub.matches("python3 -m ipykernel_launcher -f /tmp/k.json"));
        assert!(!sub.matches("jupyter-lab --port 8888"));

        let glob: CommandPattern = "node */storybook*".parse().unwrap();
        assert!(glob.matches("node /x/node_modules/.bin/storybook dev"));
        assert!(!glob.matches("npx node /x/storybook")); // anchored at the start
        let one: CommandPattern = "python? -m http.server".parse().unwrap();
        assert!(one.matches("python3 -m http.server"));
        assert!(!one.matches("python -m http.server"));

        assert_eq!(
            "  ".parse::<CommandPattern>(),
            Err(IgnoreSpecError::EmptyPattern)
        );
    }

    #[test]
    fn glob_edge_cases() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
        assert!(!glob_match(b"a*b*c", b"aXXbYY"));
        assert!(glob_match(b"**a", b"bba"));
        assert!(!glob_match(b"", b"a"));
        // Pathological input stays linear-ish and correct.
        let text = "a".repeat(10_000);
        assert!(!glob_match(b"*a*a*a*b", text.as_bytes()));
    }

    #[test]
    fn defaults_skip_debuggers_kernels_and_language_servers() {
        let policy = IgnorePolicy::default();
        let vite = process("node /x/node_modules/.bin/vite");
        for port in [9229, 9230, 9222, 5678, 5005] {
            assert!(policy.ignores(port, &vite), "{port}");
        }
        for port in [3000, 5173, 8000, 8888, 9231] {
            assert!(!policy.ignores(port, &vite), "{port}");
        }
        for command in [
            "/usr/bin/python3 -m ipykernel_launcher -f /run/kernel-1.json",
            "node /x/typescript-language-server --stdio",
            "node /x/typescript/lib/tsserver.js",
            "/home/u/.cargo/bin/rust-analyzer",
            "gopls serve -listen=:37374",
            "node /x/pyright-langserver --stdio",
            "pylsp --tcp --port 2087",
        ] {
            assert!(policy.ignores(40000, &process(command)), "{command}");
        }
        for command in [
            "jupyter-lab --no-browser",
            "python3 manage.py runserver",
            "node /x/next/dist/bin/next dev",
        ] {
            assert!(!policy.ignores(40000, &process(command)), "{command}");
        }
    }

    #[test]
    fn cli_adds_to_or_replaces_the_defaults() {
        let vite = process("node vite");
        let policy = IgnorePolicy::from_cli(
            false,
            ["6000-6100".parse().unwrap()],
            ["storybook".parse().unwrap()],
        );
        assert!(policy.ignores(9229, &vite));
        assert!(policy.ignores(6050, &vite));
        assert!(policy.ignores(3000, &process("node storybook dev")));

        let bare = IgnorePolicy::from_cli(true, [PortRange::single(4000)], []);
        assert!(!bare.ignores(9229, &vite));
        assert!(bare.ignores(4000, &vite));
        assert!(!IgnorePolicy::empty().ignores(9229, &vite));
    }
}
