//! The running runner's end: answers every connection with its current
//! state as one JSON document, then closes it. The state is the snapshot
//! the runner's [`Report`] keeps (read through a clone of it); the main
//! loop never waits on a `status`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::report::Report;

/// A client that does not read its answer within this is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The serving socket; dropping it stops serving and removes the file.
#[derive(Debug)]
pub(crate) struct Served {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves this runner's state, or says why not (the runner goes on
/// without: `status` just will not list it).
pub(crate) fn serve(report: Report) -> Option<Served> {
    match bind() {
        Ok((path, listener)) => {
            let task = tokio::spawn(accept(listener, report));
            Some(Served { path, task })
        }
        Err(reason) => {
            tracing::warn!("`kandan-runner status` will not see this runner: {reason}");
            None
        }
    }
}

fn bind() -> Result<(PathBuf, UnixListener), String> {
    let dir = super::state_dir()?;
    let path = dir.join(super::socket_name(std::process::id()));
    // A runner of the same pid that died without cleaning up.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|err| format!("{}: {err}", path.display()))?;
    // The directory is 0700 already; the socket says so too.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|err| format!("{}: {err}", path.display()))?;
    Ok((path, listener))
}

async fn accept(listener: UnixListener, report: Report) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, report.clone()));
            }
            Err(err) => {
                tracing::debug!("status socket: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: UnixStream, report: Report) {
    // Only this user (or root) may ask, whatever the file modes.
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(peer) if peer.uid() == me || peer.uid() == 0 => {}
        _ => return,
    }
    let document = match serde_json::to_vec(&report.snapshot()) {
        Ok(document) => document,
        Err(err) => {
            tracing::warn!("status: cannot serialize the state: {err}");
            return;
        }
    };
    let write = async {
        stream.write_all(&document).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write).await;
}
