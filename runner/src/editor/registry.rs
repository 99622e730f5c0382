//! The running editors: one per cwd, each watched by a task that reports
//! its end. Starts are serialized (a second start for a cwd must find the
//! first); stops run concurrently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::collaboration::Collaboration;
use super::dirs::EditorDirs;
use super::process::{self, Group};
use super::{EditorConfig, EditorError, EditorEvent, EditorId, StopReason};

/// A `start_local_editor`, its cwd already allowed by the cwd policy.
#[derive(Clone, Debug, Default)]
pub struct StartRequest {
    pub request_id: Option<String>,
    pub instance_id: Option<String>,
    /// Absolute and canonical (the policy's answer).
    pub cwd: PathBuf,
    /// The control's `collaboration` object, as sent.
    pub collaboration: Option<Value>,
}

/// One running editor, as `runner_ready` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EditorInfo {
    pub editor_id: EditorId,
    pub cwd: PathBuf,
    /// code-server's pid, also its process group id.
    pub pid: u32,
    /// Its Unix socket (mode 0600).
    pub socket: PathBuf,
}

struct Running {
    info: EditorInfo,
    stop: oneshot::Sender<StopReason>,
    watcher: JoinHandle<()>,
}

struct Shared {
    config: EditorConfig,
    events: mpsc::UnboundedSender<EditorEvent>,
    running: Mutex<HashMap<EditorId, Running>>,
    /// Held for a whole start.
    starting: tokio::sync::Mutex<()>,
    /// True once [`Editors::stop_all`] began.
    closing: watch::Sender<bool>,
}

/// The registry of running editors. Cheap to clone; every clone is the
/// same registry.
#[derive(Clone)]
pub struct Editors {
    shared: Arc<Shared>,
}

impl Editors {
    /// A registry and the receiver of its events. The channel is unbounded
    /// because a stop waits until its `Stopped` is queued: a bounded one
    /// could deadlock a reader that stops editors; there are at most two
    /// events per start.
    pub fn new(config: EditorConfig) -> (Self, mpsc::UnboundedReceiver<EditorEvent>) {
        let (events, receiver) = mpsc::unbounded_channel();
        let shared = Shared {
            config,
            events,
            running: Mutex::new(HashMap::new()),
            starting: tokio::sync::Mutex::new(()),
            closing: watch::channel(false).0,
        };
        (
            Editors {
                shared: Arc::new(shared),
            },
            receiver,
        )
    }

    /// Starts an editor for `request.cwd`, or finds the one running there,
    /// sends [`EditorEvent::Started`] or [`EditorEvent::Failed`] on the
    /// channel, and returns that same event. A failed start leaves no
    /// process and no folder.
    pub async fn start(&self, request: StartRequest) -> EditorEvent {
        let event = match self.try_start(&request).await {
            Ok(editor_id) => EditorEvent::Started {
                request_id: request.request_id.clone(),
                instance_id: request.instance_id.clone(),
                editor_id,
                cwd: request.cwd.clone(),
            },
            Err(err) => {
                tracing::warn!(cwd = %request.cwd.display(), "editor start failed: {}", crate::error_chain(&err));
                EditorEvent::Failed {
                    request_id: request.request_id.clone(),
                    instance_id: request.instance_id.clone(),
                    reason: crate::error_chain(&err),
                }
            }
        };
        let _ = self.shared.events.send(event.clone());
        event
    }

    async fn try_start(&self, request: &StartRequest) -> Result<EditorId, EditorError> {
        let cwd = &request.cwd;
        if !cwd.is_absolute() || !cwd.is_dir() {
            return Err(EditorError::BadCwd(cwd.clone()));
        }
        let collaboration = request
            .collaboration
            .as_ref()
            .map(Collaboration::parse)
            .transpose()?;
        let mut closing = self.shared.closing.subscribe();
        if *closing.borrow() {
            return Err(EditorError::ShuttingDown);
        }
        let _starting = self.shared.starting.lock().await;
        if let Some(id) = self.editor_for(cwd) {
            return Ok(id);
        }
        // Cancelled by stop_all: dropping the start future drops its group
        // (killed) and its folder guard (removed).
        tokio::select! {
            started = self.launch(cwd, collaboration.as_ref()) => started,
            _ = closing.wait_for(|closing| *closing) => Err(EditorError::ShuttingDown),
        }
    }

    async fn launch(
        &self,
        cwd: &Path,
        collaboration: Option<&Collaboration>,
    ) -> Result<EditorId, EditorError> {
        let config = &self.shared.config;
        let id = EditorId::generate()?;
        let dirs = EditorDirs::new(&config.state_dir, &id);
        let folder = FolderGuard(Some(dirs.clone()));
        dirs.create(&config.state_dir)?;
        if let Some(collaboration) = collaboration {
            collaboration
                .apply(config.kandan.as_ref(), &config.code_server, &dirs, &id)
                .await?;
        }
        let mut command = process::command(&config.code_server, &dirs, &id);
        command
            .arg("--socket")
            .arg(&dirs.socket)
            .args([
                "--socket-mode",
                "600",
                "--auth",
                "none",
                "--config",
                "/dev/null",
                "--disable-telemetry",
                "--disable-update-check",
                "--disable-workspace-trust",
            ])
            .arg("--user-data-dir")
            .arg(&dirs.user_data)
            .arg("--extensions-dir")
            .arg(&dirs.extensions)
            .arg(cwd)
            .current_dir(cwd);
        let mut group = Group::spawn(command, &config.code_server, &id)?;
        if let Err(err) = group.wait_ready(&dirs.socket, config.ready_timeout).await {
            group.end().await;
            return Err(err);
        }
        let info = EditorInfo {
            editor_id: id.clone(),
            cwd: cwd.to_path_buf(),
            pid: group.pid(),
            socket: dirs.socket.clone(),
        };
        tracing::info!(editor = %id, cwd = %cwd.display(), pid = info.pid, "editor started");
        let (stop, stopped) = oneshot::channel();
        let watcher = tokio::spawn(watch_editor(
            self.shared.clone(),
            id.clone(),
            group,
            folder.keep(),
            stopped,
        ));
        self.lock().insert(
            id.clone(),
            Running {
                info,
                stop,
                watcher,
            },
        );
        Ok(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EditorId, Running>> {
        self.shared
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn editor_for(&self, cwd: &Path) -> Option<EditorId> {
        self.lock()
            .values()
            .find(|running| running.info.cwd == cwd)
            .map(|running| running.info.editor_id.clone())
    }

    /// The running editors.
    pub fn list(&self) -> Vec<EditorInfo> {
        let mut list: Vec<_> = self.lock().values().map(|r| r.info.clone()).collect();
        list.sort_by(|a, b| a.cwd.cmp(&b.cwd));
        list
    }

    /// The socket of a running editor.
    pub fn socket_path(&self, editor_id: &str) -> Result<PathBuf, EditorError> {
        self.lock()
            .get(editor_id)
            .map(|running| running.info.socket.clone())
            .ok_or_else(|| EditorError::UnknownEditor(editor_id.to_string()))
    }

    /// A connection to a running editor's socket, for the forwarding
    /// (HTTP/1.1 and WebSocket upgrades, as to a local port).
    pub async fn connect(&self, editor_id: &str) -> Result<UnixStream, EditorError> {
        let path = self.socket_path(editor_id)?;
        UnixStream::connect(&path)
            .await
            .map_err(|source| EditorError::Connect { path, source })
    }

    /// Stops one editor (`stop_local_editor`); returns once its processes
    /// are gone and its `Stopped` event is queued.
    pub async fn stop(&self, editor_id: &str) -> Result<(), EditorError> {
        let running = self
            .lock()
            .remove(editor_id)
            .ok_or_else(|| EditorError::UnknownEditor(editor_id.to_string()))?;
        finish(running, StopReason::Stopped).await;
        Ok(())
    }

    /// Stops the editors whose cwd no longer passes `allowed` (after
    /// `update_runner_config`), all at once; returns the ids stopped.
    pub async fn retain_allowed(&self, allowed: impl Fn(&Path) -> bool) -> Vec<EditorId> {
        let withdrawn: Vec<Running> = {
            let mut running = self.lock();
            let ids: Vec<EditorId> = running
                .values()
                .filter(|r| !allowed(&r.info.cwd))
                .map(|r| r.info.editor_id.clone())
                .collect();
            ids.iter().filter_map(|id| running.remove(id)).collect()
        };
        let ids = withdrawn.iter().map(|r| r.info.editor_id.clone()).collect();
        futures_util::future::join_all(
            withdrawn
                .into_iter()
                .map(|running| finish(running, StopReason::CwdWithdrawn)),
        )
        .await;
        ids
    }

    /// Stops every editor and refuses new ones (the runner exits). A start
    /// in progress is abandoned and cleaned up.
    pub async fn stop_all(&self) {
        self.shared.closing.send_replace(true);
        // Waits for a start in progress to see `closing` and clean up.
        let _starting = self.shared.starting.lock().await;
        let all: Vec<Running> = self.lock().drain().map(|(_, running)| running).collect();
        futures_util::future::join_all(
            all.into_iter()
                .map(|running| finish(running, StopReason::Shutdown)),
        )
        .await;
    }
}

/// Tells a running editor's watcher to stop it, and waits for the end.
async fn finish(running: Running, reason: StopReason) {
    // The watcher may have seen the editor exit already: then it reports
    // `exited` itself.
    let _ = running.stop.send(reason);
    let _ = running.watcher.await;
}

/// Watches one editor until it exits or is told to stop; then ends every
/// process of it, removes its folder and reports `Stopped`.
async fn watch_editor(
    shared: Arc<Shared>,
    id: EditorId,
    mut group: Group,
    dirs: EditorDirs,
    stop: oneshot::Receiver<StopReason>,
) {
    let (reason, exit_code) = tokio::select! {
        code = group.wait() => {
            tracing::info!(editor = %id, ?code, "the editor exited: {}", group.tail());
            // A start for its cwd from now on starts a new one.
            shared
                .running
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&id);
            // What it left behind goes too.
            group.end().await;
            (StopReason::Exited, code)
        }
        reason = stop => {
            let reason = reason.unwrap_or(StopReason::Shutdown);
            (reason, group.end().await)
        }
    };
    dirs.remove();
    shared
        .running
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(&id);
    tracing::info!(editor = %id, %reason, ?exit_code, "editor stopped");
    let _ = shared.events.send(EditorEvent::Stopped {
        editor_id: id,
        reason,
        exit_code,
    });
}

/// Removes an editor's folder unless kept: a failed or cancelled start
/// leaves nothing.
struct FolderGuard(Option<EditorDirs>);

impl FolderGuard {
    fn keep(mut self) -> EditorDirs {
        self.0.take().expect("kept once")
    }
}

impl Drop for FolderGuard {
    fn drop(&mut self) {
        if let Some(dirs) = self.0.take() {
            dirs.remove();
        }
    }
}
