//! The launchd property list (macOS): a LaunchAgent for `--user`, else a
//! LaunchDaemon that runs as the named user. launchd has no environment
//! file, so `KANDAN_URL` is written into the plist.

use std::path::PathBuf;

use super::layout::{Layout, NAME, Scope};

/// The plist for `layout`; `url` is `KANDAN_URL` when it is set here.
pub(crate) fn plist(layout: &Layout, url: Option<&str>) -> String {
    let exe = layout.exe.to_string_lossy();
    let token = layout.token_file.to_string_lossy();
    let args = [exe.as_ref(), "connect", "--token-file", token.as_ref()];
    let mut body = vec![
        key_string("  ", "Label", NAME),
        "  <key>ProgramArguments</key>\n  <array>".to_owned(),
    ];
    body.extend(
        args.iter()
            .map(|arg| format!("    <string>{}</string>", escape(arg))),
    );
    body.push("  </array>".to_owned());
    if let Scope::System { run_as } = &layout.scope {
        body.push(key_string("  ", "UserName", run_as));
    }
    body.push(format!(
        "  <!-- Kandan's runner socket; the token goes alone in {} (mode 0600). -->",
        escape(&token)
    ));
    body.push("  <key>EnvironmentVariables</key>\n  <dict>".to_owned());
    body.push(key_string(
        "    ",
        "KANDAN_URL",
        url.unwrap_or("wss://kandan.example/runner/socket"),
    ));
    body.push("  </dict>".to_owned());
    body.push("  <key>RunAtLoad</key>\n  <true/>".to_owned());
    // Restart after a failure, not after a clean exit.
    body.push(
        "  <key>KeepAlive</key>\n  <dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>"
            .to_owned(),
    );
    body.push(key_string(
        "  ",
        "StandardErrorPath",
        &log_file(layout).to_string_lossy(),
    ));
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n{}\n</dict>\n</plist>\n",
        body.join("\n")
    )
}

/// Where launchd writes the runner's stderr (its logs).
fn log_file(layout: &Layout) -> PathBuf {
    match layout.scope {
        Scope::System { .. } => PathBuf::from("/Library/Logs").join(format!("{NAME}.log")),
        // ~/Library/LaunchAgents -> ~/Library/Logs
        Scope::User => layout
            .plist_dir
            .parent()
            .map(|library| library.join("Logs"))
            .unwrap_or_default()
            .join(format!("{NAME}.log")),
    }
}

fn key_string(indent: &str, key: &str, value: &str) -> String {
    format!(
        "{indent}<key>{}</key>\n{indent}<string>{}</string>",
        escape(key),
        escape(value)
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
