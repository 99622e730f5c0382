//! The pinned Codex as the runner uses it: its schema, and `doctor`.
//!
//! The app-server schema files kept in `runner/src/codex/schema/` are those
//! the pinned Codex generates: a Codex upgrade that changes a message the
//! runner uses fails here until the copy (and the code) are updated.
//! To update: `codex app-server generate-json-schema --out DIR` with the
//! fixture's binary, then copy the files named in `runner::codex::SCHEMA_FILES`.

use std::path::PathBuf;

use integration_tests::codex::codex_bin;

#[test]
fn committed_schema_matches_the_pinned_codex() {
    let bin = codex_bin().expect("the Codex fixture");
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(&bin)
        .args(["app-server", "generate-json-schema", "--out"])
        .arg(out.path())
        .env("CODEX_HOME", out.path().join("home"))
        .status()
        .expect("run codex");
    assert!(status.success(), "generate-json-schema: {status}");
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runner/src/codex/schema");
    let mut differ = Vec::new();
    for file in runner::codex::SCHEMA_FILES {
        let generated = std::fs::read(out.path().join(file))
            .unwrap_or_else(|err| panic!("{file} not generated: {err}"));
        let kept = std::fs::read(committed.join(file))
            .unwrap_or_else(|err| panic!("{file} not in runner/src/codex/schema: {err}"));
        if generated != kept {
            differ.push(*file);
        }
    }
    assert!(
        differ.is_empty(),
        "schema files differ from the pinned Codex's: {differ:?}"
    );
    // Nothing else is kept there, so the list says what the runner relies on.
    let mut kept_files = Vec::new();
    for dir in ["", "v1", "v2"] {
        for entry in std::fs::read_dir(committed.join(dir)).unwrap().flatten() {
            if entry.path().is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                kept_files.push(if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                });
            }
        }
    }
    kept_files.sort();
    let mut listed: Vec<String> = runner::codex::SCHEMA_FILES
        .iter()
        .map(|f| f.to_string())
        .collect();
    listed.sort();
    assert_eq!(kept_files, listed);
}

#[test]
fn doctor_reports_the_codex_version() {
    let bin = codex_bin().expect("the Codex fixture");
    let output = std::process::Command::new(integration_tests::support::runner_bin())
        .args(["doctor", "--json"])
        .env("KANDAN_CODEX_BIN", &bin)
        .output()
        .expect("run kandan-runner doctor");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("doctor's JSON");
    assert_eq!(
        report["codex"]["version"].as_str(),
        Some(integration_tests::codex::pinned_version().unwrap().as_str()),
        "{report}"
    );
    assert_eq!(report["codex"]["path"].as_str(), bin.to_str());
    // A binary that is not there: said, and doctor still judges by backends only.
    let output = std::process::Command::new(integration_tests::support::runner_bin())
        .args(["doctor"])
        .env("KANDAN_CODEX_BIN", "/nonexistent/codex")
        .output()
        .expect("run kandan-runner doctor");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("codex: unavailable") && text.contains("/nonexistent/codex"),
        "{text}"
    );
}
