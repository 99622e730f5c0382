//! What `doctor --url` found: the steps with their outcome, time, detail
//! and fix, as JSON (serde) or human lines, and the exit code.

use serde::Serialize;

use crate::control::endpoint;

/// Exit code of a network failure (DNS, TCP, TLS, an unexpected answer).
pub(crate) const EXIT_NETWORK: i32 = 1;
/// Exit code of a `--url` that is no WebSocket URL (a bad flag value).
pub(crate) const EXIT_BAD_URL: i32 = 2;
/// Exit code of Kandan refusing the runner: token, path or join.
pub(crate) const EXIT_REFUSED: i32 = 3;

/// The steps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StepName {
    Url,
    Dns,
    Tcp,
    Tls,
    Websocket,
    Join,
}

impl StepName {
    fn as_str(self) -> &'static str {
        match self {
            StepName::Url => "url",
            StepName::Dns => "dns",
            StepName::Tcp => "tcp",
            StepName::Tls => "tls",
            StepName::Websocket => "websocket",
            StepName::Join => "join",
        }
    }
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    Ok,
    Failed,
    /// Not needed for this URL (TLS for `ws://`).
    Skipped,
}

/// One step of the report.
#[derive(Debug, Serialize)]
pub(crate) struct Step {
    pub(crate) step: StepName,
    pub(crate) status: Outcome,
    /// Time taken, in milliseconds (0.1 ms resolution).
    pub(crate) ms: f64,
    pub(crate) detail: String,
    /// What to do about a failed step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fix: Option<String>,
}

/// The whole check.
#[derive(Debug, Serialize)]
pub(crate) struct DoctorReport {
    /// `--url`, without its password.
    pub(crate) url: String,
    pub(crate) ok: bool,
    pub(crate) steps: Vec<Step>,
    /// The process exit code this check asks for (0 when it passed).
    #[serde(skip)]
    pub(crate) exit: i32,
}

impl DoctorReport {
    /// A check that could not start (no runtime): one failed step.
    pub(crate) fn not_run(url: &str, why: &str) -> DoctorReport {
        DoctorReport {
            url: endpoint::redact(url),
            ok: false,
            steps: vec![Step {
                step: StepName::Url,
                status: Outcome::Failed,
                ms: 0.0,
                detail: why.to_owned(),
                fix: None,
            }],
            exit: EXIT_NETWORK,
        }
    }

    /// Human lines: one per step, the fix under a failed one, then a verdict.
    pub(crate) fn human(&self) -> Vec<String> {
        let mut lines = vec![format!("connection to {}", self.url)];
        for step in &self.steps {
            let (status, time) = match step.status {
                Outcome::Ok => ("ok", format!("{:.1} ms", step.ms)),
                Outcome::Failed => ("FAILED", format!("{:.1} ms", step.ms)),
                Outcome::Skipped => ("skipped", String::new()),
            };
            lines.push(format!(
                "  {:<10} {:<8} {:>9}  {}",
                step.step.as_str(),
                status,
                time,
                step.detail
            ));
            if let Some(fix) = &step.fix {
                lines.push(format!("  {:<10} fix: {fix}", ""));
            }
        }
        let join_left_out =
            (self.steps.iter()).any(|s| s.step == StepName::Join && s.status == Outcome::Skipped);
        let verdict = match self.steps.iter().find(|s| s.status == Outcome::Failed) {
            None if join_left_out => {
                "connection: ok up to the WebSocket handshake (the join was left out)".to_owned()
            }
            None => "connection: ok (joined and left)".to_owned(),
            Some(failed) => format!("connection: failed at {}", failed.step.as_str()),
        };
        lines.push(verdict);
        lines
    }
}
