//! `kandan-runner doctor`: which backends work here and why the others do
//! not, and which Codex instances would run.

use crate::cli::DoctorArgs;
use crate::detect::{self, BackendStatus};

/// Prints the report; exit code 0 when at least one backend works.
pub fn run(args: &DoctorArgs) -> i32 {
    let statuses = detect::statuses();
    let auto = statuses.iter().find(|s| s.available).map(|s| s.backend);
    // The local editor and Codex instances are optional: they never change
    // the exit code.
    let explicit = std::env::var_os("KANDAN_CODE_SERVER_BIN").map(std::path::PathBuf::from);
    let code_server = crate::editor::code_server_status(explicit.as_deref());
    let codex = crate::codex::probe(None);
    if args.json {
        let report = serde_json::json!({
            "backends": statuses, "auto": auto, "codeServer": code_server, "codex": codex
        });
        println!("{report}");
    } else {
        for line in human(&statuses) {
            println!("{line}");
        }
        match auto {
            Some(backend) => println!("auto: {backend}"),
            None => println!("auto: none works here"),
        }
        match (&code_server.version, &code_server.reason) {
            (Some(version), _) => println!("code-server {version}"),
            (None, Some(reason)) => println!("code-server unavailable: {reason}"),
            (None, None) => println!("code-server unavailable"),
        }
        match (&codex.path, &codex.version, &codex.error) {
            (Some(path), Some(version), _) => println!("codex: {version} ({})", path.display()),
            (_, _, Some(error)) => println!("codex: unavailable: {error}"),
            _ => println!("codex: unavailable"),
        }
    }
    if auto.is_some() { 0 } else { 1 }
}

fn human(statuses: &[BackendStatus]) -> Vec<String> {
    statuses
        .iter()
        .map(|s| match &s.reason {
            None => format!("{:<8} ok", s.backend),
            Some(reason) => format!("{:<8} unavailable: {reason}", s.backend),
        })
        .collect()
}
