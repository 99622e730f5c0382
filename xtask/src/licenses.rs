//! The package's `copyright` file: the runner's own licence, then every
//! crate linked into the binary for one target with its licence, read from
//! `cargo metadata` (the normal dependencies reachable from `runner`; build
//! scripts' and tests' crates are not in the binary).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cmd;

pub(crate) fn copyright(target: &str) -> Result<String> {
    let crates = linked_crates(target)?;
    let mut text = format!(
        "kandan-runner\n\
         Copyright: 2026 the kandan-runner authors\n\
         License: {}\n\
         \n\
         The binary links the crates below, each under the licence its\n\
         Cargo.toml declares (an SPDX expression). The texts of these licences\n\
         are in /usr/share/common-licenses (Apache-2.0, BSD-3-Clause, ...) or at\n\
         https://spdx.org/licenses/.\n\n",
        env!("CARGO_PKG_LICENSE")
    );
    let mut by_license: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, version, license) in crates {
        by_license
            .entry(license)
            .or_default()
            .push(format!("{name} {version}"));
    }
    for (license, names) in by_license {
        text.push_str(&format!("{license}:\n"));
        for name in names {
            text.push_str(&format!("  {name}\n"));
        }
        text.push('\n');
    }
    Ok(text)
}

/// (name, version, licence) of each crate linked for `target`, sorted.
fn linked_crates(target: &str) -> Result<BTreeSet<(String, String, String)>> {
    let out = cmd::output(
        Command::new(env!("CARGO"))
            .args([
                "metadata",
                "--format-version",
                "1",
                "--locked",
                "--filter-platform",
                target,
            ])
            .current_dir(cmd::workspace_root()),
    )
    .context("cargo metadata failed")?;
    let meta: Value = serde_json::from_str(&out).context("cargo metadata: not JSON")?;
    let packages: BTreeMap<&str, &Value> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pkg| Some((pkg["id"].as_str()?, pkg)))
        .collect();
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|node| Some((node["id"].as_str()?, node)))
        .collect();
    let start = packages
        .iter()
        .find(|(_, pkg)| pkg["name"] == "runner")
        .map(|(id, _)| *id)
        .context("cargo metadata: no runner package")?;
    let mut seen = BTreeSet::new();
    let mut todo = vec![start];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes
            .get(id)
            .and_then(|node| node["deps"].as_array())
            .into_iter()
            .flatten()
        {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|kind| kind["kind"].is_null());
            if let (true, Some(dep_id)) = (normal, dep["pkg"].as_str()) {
                todo.push(dep_id);
            }
        }
    }
    Ok(seen
        .into_iter()
        .filter(|id| *id != start)
        .filter_map(|id| packages.get(id))
        .map(|pkg| {
            let text = |key: &str| pkg[key].as_str().unwrap_or("unknown").to_owned();
            let license = pkg["license"]
                .as_str()
                .map(|license| license.replace('/', " OR "))
                .unwrap_or_else(|| format!("see {}", text("license_file")));
            (text("name"), text("version"), license)
        })
        .collect())
}
