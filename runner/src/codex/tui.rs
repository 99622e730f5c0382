//! `launchTui`: the app-server listens on `ws://127.0.0.1:<port>` and the
//! runner is its client there, so a person at the machine can attach the
//! Codex TUI (`codex resume --remote`) to the same thread. The listener
//! takes a capability token (any local user could reach a loopback port);
//! it lives in a file only the runner's user can read, removed with the
//! instance.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::timeout;

use super::process::AppServer;
use super::transport::{self, Transport};

/// How long the app-server may take to print its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The capability token and its file.
#[derive(Debug)]
pub(crate) struct TuiAuth {
    token: String,
    dir: PathBuf,
    file: PathBuf,
}

impl TuiAuth {
    /// A fresh random token in a new private directory.
    pub(crate) fn new() -> io::Result<TuiAuth> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|err| io::Error::other(err.to_string()))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!(
            "kandan-codex-tui-{}-{}",
            std::process::id(),
            &token[..12]
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let file = dir.join("token");
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)?;
        io::Write::write_all(&mut out, token.as_bytes())?;
        Ok(TuiAuth { token, dir, file })
    }

    /// `app-server` arguments for the WebSocket listener.
    pub(crate) fn args(&self) -> Vec<String> {
        vec![
            "--listen".into(),
            "ws://127.0.0.1:0".into(),
            "--ws-auth".into(),
            "capability-token".into(),
            "--ws-token-file".into(),
            self.file.to_string_lossy().into_owned(),
        ]
    }

    pub(crate) fn file(&self) -> &PathBuf {
        &self.file
    }
}

impl Drop for TuiAuth {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits for the app-server's address and connects to it.
pub(crate) async fn connect(
    server: &mut AppServer,
    auth: &TuiAuth,
    budget: crate::control::budget::Budget,
) -> Result<(Transport, String), String> {
    let Some(url_rx) = server.listen_url.take() else {
        return Err("the app-server's address is unknown".into());
    };
    let url = match timeout(LISTEN_TIMEOUT, url_rx).await {
        Ok(Ok(url)) => url,
        Ok(Err(_)) => return Err("the app-server exited without listening".into()),
        Err(_) => {
            return Err(format!(
                "the app-server did not listen within {LISTEN_TIMEOUT:?}"
            ));
        }
    };
    // The banner may come just before the listener accepts: a few tries.
    let mut last = String::new();
    for _ in 0..20 {
        match transport::websocket(&url, &auth.token, budget.clone()).await {
            Ok(transport) => return Ok((transport, url)),
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("cannot connect to the app-server at {url}: {last}"))
}
