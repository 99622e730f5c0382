//! The systemd unit and the environment file it reads.

use std::path::Path;

use super::layout::{Layout, Scope};

/// Exactly what the eBPF detector needs, and nothing else: loading the
/// programs (CAP_BPF), attaching tracepoints (CAP_PERFMON), and reading the
/// tracepoint formats in tracefs, which is root-only (CAP_DAC_READ_SEARCH).
pub(crate) const CAPABILITIES: &str = "CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH";

/// The unit file for `layout`.
pub(crate) fn unit(layout: &Layout) -> String {
    let exe = exec_arg(&layout.exe.to_string_lossy());
    let mut lines: Vec<String> = Vec::new();
    let mut add = |new: &[&str]| lines.extend(new.iter().map(|line| (*line).to_owned()));
    add(&[
        "# Written by `kandan-runner service install`; `kandan-runner service print` shows it.",
        "[Unit]",
        "Description=kandan-runner: forwards a coding agent's dev servers to Kandan",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=exec",
    ]);
    match &layout.scope {
        Scope::System { run_as } => {
            let token = specifiers(&layout.token_file.to_string_lossy());
            add(&[
                &format!("User={}", specifiers(run_as)),
                // systemd opens the root-only token file as root, before it
                // becomes User=, and hands the runner the open descriptor
                // as stdin; the runner reads it and puts /dev/null there.
                // So the file stays root's 0600 and nothing the service
                // user runs (the agent's tree) can read it. (LoadCredential=
                // would give the service user a readable copy.)
                &format!("StandardInput=file:{token}"),
                "StandardOutput=journal",
                "StandardError=journal",
                &format!("ExecStart={exe} connect --token-file -"),
            ]);
        }
        Scope::User => {
            let token = exec_arg(&layout.token_file.to_string_lossy());
            add(&[&format!("ExecStart={exe} connect --token-file {token}")]);
        }
    }
    add(&[
        &format!(
            "EnvironmentFile={}",
            specifiers(&layout.env_file.to_string_lossy())
        ),
        // The runner keeps its private state (status socket, editor
        // folders) in $XDG_STATE_HOME/kandan-runner: the state directory.
        "Environment=XDG_STATE_HOME=%S",
        "StateDirectory=kandan-runner",
        "StateDirectoryMode=0700",
    ]);
    match &layout.scope {
        Scope::System { .. } => add(&[
            &format!("AmbientCapabilities={CAPABILITIES}"),
            &format!("CapabilityBoundingSet={CAPABILITIES}"),
            // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
            "LimitMEMLOCK=infinity",
            // /usr, /boot and /etc read-only for the runner and its tree.
            "ProtectSystem=full",
            // The tree gets a /tmp and /var/tmp of its own: nothing the
            // agent runs needs the host's, and other users' files there
            // (and theirs from us) stay apart.
            "PrivateTmp=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "RestrictSUIDSGID=yes",
            "# ProtectControlGroups= stays off: systemd 252 has only yes, which",
            "# makes all of /sys/fs/cgroup read-only, the delegated subtree too.",
            "# Outside its subtree (owned by User=) the hierarchy is root's.",
        ]),
        Scope::User => add(&[
            "# No capabilities: a user manager cannot grant them. The procfs",
            "# backend needs none (it reads only the user's own processes).",
        ]),
    }
    add(&[
        // The runner puts its tree, instances and editors in cgroups of
        // their own below its unit's: systemd hands it the subtree.
        "Delegate=yes",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "RestartSec=5",
        // 2: bad flags or environment file; 3: Kandan refused the token.
        // A restart changes neither.
        "RestartPreventExitStatus=2 3",
        // SIGTERM to the runner alone: it ends its own tree within 2 s.
        "KillMode=mixed",
        "TimeoutStopSec=10",
        "",
        "[Install]",
    ]);
    add(&[match layout.scope {
        Scope::System { .. } => "WantedBy=multi-user.target",
        Scope::User => "WantedBy=default.target",
    }]);
    lines.push(String::new());
    lines.join("\n")
}

/// The template environment file `install` writes when there is none.
pub(crate) fn env_template(token_file: &Path) -> String {
    format!(
        "# Environment of the kandan-runner service (systemd EnvironmentFile=).\n\
         # The token does not go here: write it alone to {} (mode 0600).\n\
         \n\
         # Kandan's runner socket (required):\n\
         #KANDAN_URL=wss://kandan.example/runner/socket\n\
         # Runner id (channel topic runner:<id>); the host name when unset:\n\
         #KANDAN_RUNNER_ID=laptop\n\
         # Log level of the runner's journal lines:\n\
         #RUST_LOG=info\n",
        token_file.display()
    )
}

/// `%` starts a specifier in almost every unit setting.
fn specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

/// One word of ExecStart=: specifiers and `$` escaped, quoted when it holds
/// blanks, quotes or backslashes.
fn exec_arg(text: &str) -> String {
    let escaped = specifiers(text).replace('$', "$$");
    if !escaped.contains(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\')) {
        return escaped;
    }
    format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_args_are_escaped_and_quoted() {
        assert_eq!(exec_arg("/usr/bin/kandan-runner"), "/usr/bin/kandan-runner");
        assert_eq!(exec_arg("/opt/50%/$x"), "/opt/50%%/$$x");
        assert_eq!(exec_arg("/My Apps/k\"r"), "\"/My Apps/k\\\"r\"");
    }
}
