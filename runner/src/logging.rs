//! Logs go to stderr (stdout belongs to `watch --json`); `RUST_LOG` filters,
//! `--log-format` picks text or one JSON object per line.
//!
//! Other crates never log below `info`, whatever `RUST_LOG` says: at debug
//! and trace the WebSocket, HTTP and TLS libraries print request URLs and
//! headers, and the socket URL carries the token (PROTOCOL.md section 5:
//! the token reaches no log line at any level). Capping every crate but
//! ours also covers dependencies added later.
//!
//! Colour only when stderr is a terminal and `NO_COLOR` is not set
//! (<https://no-color.org>), so files and pipes get plain text.

use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// How stderr lines (logs and state lines) are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, each with a `ts`.
    Json,
}

/// The global output flags (`--log-format`, `--quiet`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Output {
    pub(crate) format: LogFormat,
    /// No state lines (warnings and errors still print).
    pub(crate) quiet: bool,
}

/// Sets up logs for this process (the state lines are the commands'
/// report, made from the same `output`).
pub(crate) fn init(output: Output) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let filter = filter.and(filter_fn(allowed));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    match output.format {
        LogFormat::Text => {
            let layer = fmt.with_ansi(colour()).with_filter(filter);
            tracing_subscriber::registry().with(layer).init();
        }
        LogFormat::Json => {
            let layer = fmt.event_format(JsonLines).with_filter(filter);
            tracing_subscriber::registry().with(layer).init();
        }
    }
    // Other crates log through `log` at most at info (see above): tell
    // `log` so, and their debug and trace calls cost a comparison instead
    // of a trip through the subscriber.
    log::set_max_level(log::LevelFilter::Info);
}

/// Colour on stderr: only on a terminal, never with `NO_COLOR` set.
pub(crate) fn colour() -> bool {
    colour_allowed(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    )
}

fn colour_allowed(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

/// Ours at any level, everyone else's at `info` and above.
fn allowed(metadata: &Metadata<'_>) -> bool {
    *metadata.level() <= Level::INFO || is_ours(metadata.target())
}

fn is_ours(target: &str) -> bool {
    ["runner", "kandan_runner"].iter().any(|crate_name| {
        target == *crate_name
            || target
                .strip_prefix(crate_name)
                .is_some_and(|rest| rest.starts_with("::"))
    })
}

/// Now as RFC 3339 UTC with milliseconds (`2026-11-29T23:10:00.123Z`): the
/// `ts` of JSON logs, state lines and `watch --json`.
pub(crate) fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// `{"ts","level","message",...fields,"target"}` on one line.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut object = Map::new();
        object.insert("ts".into(), timestamp().into());
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        object.insert("level".into(), level.into());
        event.record(&mut JsonFields(&mut object));
        object.insert("target".into(), event.metadata().target().into());
        let line = serde_json::to_string(&object).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// Collects an event's fields into a JSON object.
struct JsonFields<'a>(&'a mut Map<String, Value>);

impl Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), crate::error_chain(value).into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_targets_pass_below_info() {
        assert!(is_ours("runner"));
        assert!(is_ours("runner::control::client"));
        assert!(is_ours("kandan_runner"));
        assert!(!is_ours("tungstenite::handshake::client"));
        assert!(!is_ours("tokio_tungstenite"));
        assert!(!is_ours("runnerx::y"));
        assert!(!is_ours("hyper_util::client"));
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_allowed(true, false));
        assert!(!colour_allowed(true, true));
        assert!(!colour_allowed(false, false));
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let ts = timestamp();
        assert_eq!(ts.len(), "2026-11-29T23:10:00.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    }
}
