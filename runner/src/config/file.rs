//! The config file as written (TOML, PROTOCOL.md section 1). Every key is
//! optional; an unknown key is an error. The token itself has no key: a
//! file is read by more eyes than a flag, so it takes `token_file` only.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::paths::expand_home;
use super::ports::PortRule;

/// The user's config file. The keys that stand for a flag are named after
/// its long name with `_`, and hold what the flag would.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    // The connection (`connect`).
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) token_file: Option<Spanned<String>>,
    pub(crate) runner_id: Option<Spanned<String>>,
    pub(crate) max_request_body: Option<Spanned<u64>>,
    pub(crate) max_response_body: Option<Spanned<u64>>,
    pub(crate) connect_timeout_ms: Option<Spanned<u64>>,
    pub(crate) request_timeout_ms: Option<Spanned<u64>>,
    // Detection (`watch` and `connect`).
    pub(crate) backend: Option<Spanned<String>>,
    pub(crate) debounce_ms: Option<Spanned<u64>>,
    pub(crate) poll_interval_ms: Option<Spanned<u64>>,
    pub(crate) ignore_port: Option<Spanned<Vec<String>>>,
    pub(crate) ignore_command: Option<Spanned<Vec<String>>>,
    pub(crate) no_default_ignores: Option<Spanned<bool>>,
    // Instances and editors (`connect`).
    pub(crate) allow_cwd: Option<Spanned<Vec<String>>>,
    pub(crate) codex_bin: Option<Spanned<String>>,
    pub(crate) stream_flush_ms: Option<Spanned<u64>>,
    pub(crate) turn_idle_timeout_ms: Option<Spanned<u64>>,
    pub(crate) code_server_bin: Option<Spanned<String>>,
    // How stderr speaks (every command).
    pub(crate) log_format: Option<Spanned<String>>,
    pub(crate) quiet: Option<Spanned<bool>>,
    /// More option and variable names whose values are hidden from Kandan.
    #[serde(default)]
    pub(crate) redact: Vec<String>,
    /// Per-port attributes, first match wins.
    #[serde(default)]
    pub(crate) ports: Vec<PortRule>,
}

/// A project's `.kandan/ports.toml`: `[[ports]]` entries and nothing else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProjectFile {
    #[serde(default)]
    pub(crate) ports: Vec<PortRule>,
}

/// A key of the file that stands for a flag: the flag's clap id (the
/// field name in `cli.rs`), where the value is, and the flag's values.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FlagValue {
    pub(crate) key: &'static str,
    pub(crate) arg_id: &'static str,
    pub(crate) span: Range<usize>,
    pub(crate) values: Vec<String>,
}

impl ConfigFile {
    /// The values of the keys that stand for flags, as the flag's own text
    /// (clap parses and checks them), paths with `~` expanded.
    pub(crate) fn flag_values(&self) -> Vec<FlagValue> {
        // Each key is named as its flag's clap id.
        let singles = [
            ("url", text(&self.url)),
            ("token_file", path(&self.token_file)),
            ("runner_id", text(&self.runner_id)),
            ("max_request_body", number(&self.max_request_body)),
            ("max_response_body", number(&self.max_response_body)),
            ("connect_timeout_ms", number(&self.connect_timeout_ms)),
            ("request_timeout_ms", number(&self.request_timeout_ms)),
            ("backend", text(&self.backend)),
            ("debounce_ms", number(&self.debounce_ms)),
            ("poll_interval_ms", number(&self.poll_interval_ms)),
            ("no_default_ignores", shown(&self.no_default_ignores)),
            ("codex_bin", path(&self.codex_bin)),
            ("log_format", text(&self.log_format)),
            ("quiet", shown(&self.quiet)),
            ("stream_flush_ms", number(&self.stream_flush_ms)),
            ("turn_idle_timeout_ms", number(&self.turn_idle_timeout_ms)),
            ("code_server_bin", path(&self.code_server_bin)),
        ];
        let mut out: Vec<FlagValue> = (singles.into_iter())
            .filter_map(|(key, value)| {
                let (span, value) = value?;
                Some(FlagValue {
                    key,
                    arg_id: key,
                    span,
                    values: vec![value],
                })
            })
            .collect();
        // The lists' keys are singular, their flags' ids not always.
        let lists = [
            ("ignore_port", "ignore_ports", &self.ignore_port, false),
            (
                "ignore_command",
                "ignore_commands",
                &self.ignore_command,
                false,
            ),
            ("allow_cwd", "allow_cwd", &self.allow_cwd, true),
        ];
        for (key, arg_id, value, paths) in lists {
            if let Some(value) = value {
                out.push(FlagValue {
                    key,
                    arg_id,
                    span: value.span(),
                    values: (value.get_ref().iter())
                        .map(|v| if paths { expand_home(v) } else { v.clone() })
                        .collect(),
                });
            }
        }
        out
    }
}

fn text(value: &Option<Spanned<String>>) -> Option<(Range<usize>, String)> {
    value.as_ref().map(|v| (v.span(), v.get_ref().clone()))
}

fn path(value: &Option<Spanned<String>>) -> Option<(Range<usize>, String)> {
    value.as_ref().map(|v| (v.span(), expand_home(v.get_ref())))
}

fn shown(value: &Option<Spanned<bool>>) -> Option<(Range<usize>, String)> {
    value.as_ref().map(|v| (v.span(), v.get_ref().to_string()))
}

fn number(value: &Option<Spanned<u64>>) -> Option<(Range<usize>, String)> {
    value.as_ref().map(|v| (v.span(), v.get_ref().to_string()))
}
