//! The demo's workspace: a tiny static site the runner's command serves,
//! and a `site/` folder for the dev server the agent starts.

use std::path::Path;

use anyhow::{Context, Result};

use super::script::MESSAGE_LINE;

/// Writes the sample files afresh (an earlier run's edits are undone).
pub(crate) fn write(workspace: &Path) -> Result<()> {
    let site = workspace.join("site");
    std::fs::create_dir_all(&site).with_context(|| format!("create {}", site.display()))?;
    let index = format!(
        "<!doctype html>\n<html>\n  <head><meta charset=\"utf-8\"><title>Demo app</title></head>\n  <body style=\"font-family: sans-serif\">\n    <h1>Demo app</h1>\n    {MESSAGE_LINE}\n    <p>Served by <code>python3 -m http.server</code>, the runner's command, through Kandan's preview.</p>\n  </body>\n</html>\n"
    );
    std::fs::write(workspace.join("index.html"), index)?;
    std::fs::write(
        site.join("index.html"),
        "<!doctype html>\n<html><body style=\"font-family: sans-serif\">\n<h1>Codex's dev server</h1>\n<p id=\"message\">Started by the agent, forwarded with its instance.</p>\n</body></html>\n",
    )?;
    std::fs::write(
        workspace.join("README.md"),
        "# Demo workspace\n\nThe Kandan demo's allowed directory: Codex and the editor start here.\n",
    )?;
    let _ = std::fs::remove_file(workspace.join("checked-at.txt"));
    Ok(())
}
