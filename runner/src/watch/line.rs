//! The lines `watch` prints: one JSON object per line with `--json`, a short
//! human-readable line otherwise (PROTOCOL.md section 1).

use std::borrow::Cow;

use serde::Serialize;

use crate::detect::BackendKind;
use crate::pipeline::{Candidate, CandidateEvent};
use crate::redact::Redactor;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    event: &'static str,
    port: u16,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cwd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    addresses: Option<Vec<String>>,
    backend: BackendKind,
    /// When the runner printed it (RFC 3339 UTC, milliseconds); last, so
    /// the contract's fields keep their order.
    ts: String,
}

impl<'a> Line<'a> {
    fn candidate(
        event: &'static str,
        c: &'a Candidate,
        backend: BackendKind,
        redact: Option<&Redactor>,
    ) -> Self {
        let command = &c.process.command;
        Line {
            ts: crate::logging::timestamp(),
            event,
            port: c.port,
            pid: c.pid,
            command: Some(match redact {
                Some(redactor) => Cow::Owned(redactor.command(command)),
                None => Cow::Borrowed(command),
            }),
            label: Some(&c.process.label),
            cwd: c.process.cwd.as_ref().map(|cwd| cwd.display().to_string()),
            addresses: Some(c.addresses.iter().map(ToString::to_string).collect()),
            backend,
        }
    }
}

/// The line for `event`, or `None` for events `watch` does not print. With
/// `redact`, the command line is shown as Kandan gets it (`watch --redact`).
pub(crate) fn render(
    event: &CandidateEvent,
    backend: BackendKind,
    json: bool,
    redact: Option<&Redactor>,
) -> Option<String> {
    let line = match event {
        CandidateEvent::Opened(c) => Line::candidate("opened", c, backend, redact),
        CandidateEvent::Changed(c) => Line::candidate("changed", c, backend, redact),
        CandidateEvent::AddressesChanged(_) => return None,
        CandidateEvent::Closed { port, pid } => Line {
            ts: crate::logging::timestamp(),
            event: "closed",
            port: *port,
            pid: *pid,
            command: None,
            label: None,
            cwd: None,
            addresses: None,
            backend,
        },
    };
    if json {
        return Some(serde_json::to_string(&line).expect("a watch line always serializes"));
    }
    let mut text = format!("{:<7} :{:<5} pid {}", line.event, line.port, line.pid);
    if let (Some(label), Some(addresses)) = (line.label, &line.addresses) {
        text.push_str(&format!("  {label}  [{}]", addresses.join(", ")));
    }
    if let Some(cwd) = &line.cwd {
        text.push_str(&format!("  in {cwd}"));
    }
    if let Some(command) = &line.command {
        text.push_str(&format!("  $ {command}"));
    }
    // For a terminal: a command line or cwd cannot move the cursor or set
    // the title (JSON escapes them itself).
    Some(crate::report::escape(&text).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::process_info::ProcessInfo;

    fn vite() -> Candidate {
        Candidate {
            port: 5173,
            pid: 4242,
            process: ProcessInfo {
                command: "node /x/node_modules/.bin/vite".into(),
                label: "node".into(),
                cwd: Some("/x".into()),
            },
            addresses: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            attributes: Default::default(),
        }
    }

    /// The line without its `ts` (checked to be there, RFC 3339 UTC).
    fn without_ts(line: &str) -> String {
        let (rest, ts) = line.rsplit_once(r#","ts":""#).expect("a ts field");
        assert!(ts.ends_with("Z\"}") && ts.contains('T'), "{line}");
        format!("{rest}}}")
    }

    #[test]
    fn human_lines_escape_control_characters() {
        let mut candidate = vite();
        candidate.process.command = "node \x1b]0;owned\x07".into();
        candidate.process.cwd = Some("/x\x1b[2J".into());
        let line = render(
            &CandidateEvent::Opened(candidate),
            BackendKind::Procfs,
            false,
            None,
        )
        .unwrap();
        assert!(!line.contains(char::is_control), "{line:?}");
        assert!(
            line.ends_with("in /x\\x1b[2J  $ node \\x1b]0;owned\\x07"),
            "{line}"
        );
    }

    #[test]
    fn opened_json_matches_the_contract() {
        let line = render(
            &CandidateEvent::Opened(vite()),
            BackendKind::Ebpf,
            true,
            None,
        )
        .unwrap();
        assert_eq!(
            without_ts(&line),
            r#"{"event":"opened","port":5173,"pid":4242,"command":"node /x/node_modules/.bin/vite","label":"node","cwd":"/x","addresses":["127.0.0.1","::1"],"backend":"ebpf"}"#
        );
    }

    #[test]
    fn closed_json_has_port_pid_backend_only() {
        let event = CandidateEvent::Closed {
            port: 5173,
            pid: 4242,
        };
        let line = render(&event, BackendKind::Procfs, true, None).unwrap();
        assert_eq!(
            without_ts(&line),
            r#"{"event":"closed","port":5173,"pid":4242,"backend":"procfs"}"#
        );
    }

    #[test]
    fn unreadable_cwd_is_left_out() {
        let mut c = vite();
        c.process.cwd = None;
        let line = render(&CandidateEvent::Changed(c), BackendKind::Ebpf, true, None).unwrap();
        assert!(line.starts_with(r#"{"event":"changed""#));
        assert!(!line.contains("cwd"));
    }

    #[test]
    fn address_only_changes_are_not_printed() {
        let event = CandidateEvent::AddressesChanged(vite());
        assert!(render(&event, BackendKind::Ebpf, true, None).is_none());
        assert!(render(&event, BackendKind::Ebpf, false, None).is_none());
    }

    #[test]
    fn human_line_names_port_pid_and_command() {
        let line = render(
            &CandidateEvent::Opened(vite()),
            BackendKind::Ebpf,
            false,
            None,
        )
        .unwrap();
        assert!(line.starts_with("opened  :5173"), "{line}");
        assert!(line.contains("pid 4242"));
        assert!(line.contains("$ node /x/node_modules/.bin/vite"));
    }

    #[test]
    fn redact_hides_secrets_in_both_formats_and_only_then() {
        let mut c = vite();
        c.process.command = "jupyter lab --IdentityProvider.token=abc API_KEY=k".into();
        let event = CandidateEvent::Opened(c);
        for json in [true, false] {
            let kept = render(&event, BackendKind::Ebpf, json, None).unwrap();
            assert!(kept.contains("token=abc API_KEY=k"), "{kept}");
            let hidden =
                render(&event, BackendKind::Ebpf, json, Some(&Redactor::default())).unwrap();
            assert!(
                hidden.contains("--IdentityProvider.token=*** API_KEY=***"),
                "{hidden}"
            );
            assert!(
                !hidden.contains("abc") && !hidden.contains("=k"),
                "{hidden}"
            );
        }
    }
}
