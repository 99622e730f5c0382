//! `kandan-runner doctor`: which backends work here and why the others do not.

use crate::cli::DoctorArgs;
use crate::detect::{self, BackendStatus};

/// Prints the report; exit code 0 when at least one backend works.
pub fn run(args: &DoctorArgs) -> i32 {
    let statuses = detect::statuses();
    let auto = statuses.iter().find(|s| s.available).map(|s| s.backend);
    if args.json {
        let report = serde_json::json!({ "backends": statuses, "auto": auto });
        println!("{report}");
    } else {
        for line in human(&statuses) {
            println!("{line}");
        }
        match auto {
            Some(backend) => println!("auto: {backend}"),
            None => println!("auto: none works here"),
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
