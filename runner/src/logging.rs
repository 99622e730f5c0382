//! Logs go to stderr (stdout belongs to `watch --json`); `RUST_LOG` filters.
//!
//! Other crates never log below `info`, whatever `RUST_LOG` says: at debug
//! and trace the WebSocket, HTTP and TLS libraries print request URLs and
//! headers, and the socket URL carries the token (PROTOCOL.md section 5:
//! the token reaches no log line at any level). Capping every crate but
//! ours also covers dependencies added later.

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter.and(filter_fn(allowed)));
    tracing_subscriber::registry().with(layer).init();
    // Other crates log through `log` at most at info (see above): tell
    // `log` so, and their debug and trace calls cost a comparison instead
    // of a trip through the subscriber.
    log::set_max_level(log::LevelFilter::Info);
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
}
