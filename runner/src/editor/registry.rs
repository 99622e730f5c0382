//! The running editors: one per cwd, each watched by a task that reports
//! its end. Starts are serialized (a second start for a cwd must find the
//! first); stops run concurrently.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::collaboration::Collaboration;
use super::dirs::{EditorDirs, FolderLock, sweep_stale};
use super::process::{self, Group};
use super::{EditorConfig, EditorError, EditorId, StopReason, resolve_code_server};
use crate::wire::{
    ControlIds, ControlType, ErrorCode, Event, Failure, LocalEditorStarted, LocalEditorStopped,
};
use crate::workdir::CwdPolicy;

/// A `start_local_editor`, its cwd already allowed by the cwd policy.
#[derive(Clone, Debug, Default)]
pub struct StartRequest {
    pub request_id: Option<String>,
    pub instance_id: Option<String>,
    /// Absolute and canonical (the policy's answer).
    pub cwd: PathBuf,
    /// `cwd` as the descriptor the policy's check opened: code-server
    /// starts in it (else in `cwd` by path).
    pub dir: Option<Arc<OwnedFd>>,
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
    /// Its cgroup, when it has one.
    pub cgroup: Option<PathBuf>,
}

struct RunningEditor {
    info: EditorInfo,
    stop: oneshot::Sender<StopReason>,
    watcher: JoinHandle<()>,
}

struct Shared {
    config: EditorConfig,
    events: mpsc::UnboundedSender<Event>,
    running: Mutex<HashMap<EditorId, RunningEditor>>,
    /// Held for a whole start.
    starting: tokio::sync::Mutex<()>,
    /// True once [`Editors::stop_all`] began.
    closing: watch::Sender<bool>,
    /// The cwd policy now ([`Editors::set_policy`]); `None`: every cwd
    /// given stays allowed.
    policy: watch::Sender<Option<CwdPolicy>>,
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
    ///
    /// It first ends the editors of runners that died on this state
    /// directory and removes their folders (a few /proc reads; call it
    /// where blocking briefly is fine, e.g. at start-up).
    pub fn new(config: EditorConfig) -> (Self, mpsc::UnboundedReceiver<Event>) {
        sweep_stale(&config.state_dir);
        let (events, receiver) = mpsc::unbounded_channel();
        let shared = Shared {
            config,
            events,
            running: Mutex::new(HashMap::new()),
            starting: tokio::sync::Mutex::new(()),
            closing: watch::channel(false).0,
            policy: watch::channel(None).0,
        };
        (
            Editors {
                shared: Arc::new(shared),
            },
            receiver,
        )
    }

    /// Starts an editor for `request.cwd`, or finds the one running there,
    /// sends `local_editor_started` or the start's `control_error`
    /// (`editor_failed`) on the channel, and returns that same event. A
    /// failed start leaves no process and no folder.
    pub async fn start(&self, request: StartRequest) -> Event {
        let event = match self.try_start(&request).await {
            Ok(editor_id) => Event::LocalEditorStarted(LocalEditorStarted {
                request_id: request.request_id.clone(),
                instance_id: request.instance_id.clone(),
                editor_id: editor_id.to_string(),
                cwd: request.cwd.display().to_string(),
            }),
            Err(err) => {
                let reason = crate::error_chain(&err);
                tracing::warn!(cwd = %request.cwd.display(), "editor start failed: {reason}");
                let ids = ControlIds {
                    request_id: request.request_id.clone(),
                    instance_id: request.instance_id.clone(),
                    ..ControlType::StartLocalEditor.ids()
                };
                ids.error(Failure::new(ErrorCode::EditorFailed, reason))
            }
        };
        let _ = self.shared.events.send(event.clone());
        event
    }

    /// The cwd policy from now on (`update_runner_config`): a start whose
    /// cwd it no longer allows fails with nothing left running. Running
    /// editors are stopped by [`Editors::retain_allowed`].
    pub(crate) fn set_policy(&self, policy: CwdPolicy) {
        self.shared.policy.send_replace(Some(policy));
    }

    async fn try_start(&self, request: &StartRequest) -> Result<EditorId, EditorError> {
        let cwd = &request.cwd;
        if !cwd.is_absolute() || (request.dir.is_none() && !cwd.is_dir()) {
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
        // Withdrawn since the control was checked, or while starting.
        let mut policy = self.shared.policy.subscribe();
        if !allows(&policy.borrow(), cwd) {
            return Err(EditorError::CwdWithdrawn(cwd.clone()));
        }
        // Cancelled by stop_all or a withdrawal: dropping the start future
        // drops its group (killed) and its folder guard (removed).
        tokio::select! {
            started = self.launch(request, collaboration.as_ref()) => started,
            _ = closing.wait_for(|closing| *closing) => Err(EditorError::ShuttingDown),
            _ = policy.wait_for(|policy| !allows(policy, cwd)) => {
                Err(EditorError::CwdWithdrawn(cwd.clone()))
            }
        }
    }

    async fn launch(
        &self,
        request: &StartRequest,
        collaboration: Option<&Collaboration>,
    ) -> Result<EditorId, EditorError> {
        let cwd = request.cwd.as_path();
        let config = &self.shared.config;
        let id = EditorId::generate()?;
        // Looked up at each start: code-server may be installed while the
        // runner runs.
        let program = resolve_code_server(Some(&config.code_server))?;
        let dirs = EditorDirs::new(&config.state_dir, &id);
        let folder = FolderGuard(Some(dirs.clone()));
        let lock = dirs.create(&config.state_dir)?;
        if let Some(collaboration) = collaboration {
            collaboration
                .apply(config.kandan.as_ref(), &program, &dirs, &id)
                .await?;
        }
        let cgroup = config.containment.new_group("editor");
        let mut command = process::serve(&program, &dirs, &id, cgroup.as_deref(), cwd)?;
        self.set_start_dir(&mut command, request);
        let mut group = match Group::spawn(command, &program, &id, cgroup) {
            Err(EditorError::Spawn { source, .. })
                if source.raw_os_error() == Some(crate::supervise::ESCAPED_ERRNO) =>
            {
                return Err(EditorError::CwdWithdrawn(cwd.to_path_buf()));
            }
            spawned => spawned?,
        };
        if let Err(err) = group.wait_ready(&dirs.socket, config.ready_timeout).await {
            group.end().await;
            return Err(err);
        }
        let info = EditorInfo {
            editor_id: id.clone(),
            cwd: cwd.to_path_buf(),
            pid: group.pid(),
            socket: dirs.socket.clone(),
            cgroup: group.cgroup_path(),
        };
        tracing::info!(editor = %id, cwd = %cwd.display(), pid = info.pid, "editor started");
        let (stop, stopped) = oneshot::channel();
        // Inserted under the lock the watcher takes to remove it: an editor
        // that exits at once is not left listed.
        let mut running = self.lock();
        // Checked under the lock `retain_allowed` takes after a new policy:
        // either that sees this editor, or this sees the new policy (and
        // dropping the group kills it).
        if !allows(&self.shared.policy.borrow(), cwd) {
            return Err(EditorError::CwdWithdrawn(cwd.to_path_buf()));
        }
        let watcher = tokio::spawn(watch_editor(
            self.shared.clone(),
            id.clone(),
            group,
            (folder.keep(), lock),
            stopped,
        ));
        running.insert(
            id.clone(),
            RunningEditor {
                info,
                stop,
                watcher,
            },
        );
        Ok(id)
    }

    /// The directory the cwd check opened, checked again in the child
    /// against the allowed roots; without one (tests), the path.
    fn set_start_dir(&self, command: &mut tokio::process::Command, request: &StartRequest) {
        match &request.dir {
            Some(dir) => {
                let roots = self.shared.policy.borrow().as_ref().map(|policy| {
                    (policy.allowed_roots().iter())
                        .map(|root| root.as_os_str().as_bytes().to_vec())
                        .collect()
                });
                process::start_in(command, dir.clone(), roots);
            }
            None => {
                command.current_dir(&request.cwd);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EditorId, RunningEditor>> {
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
        let withdrawn: Vec<RunningEditor> = {
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
        let all: Vec<RunningEditor> = self.lock().drain().map(|(_, running)| running).collect();
        futures_util::future::join_all(
            all.into_iter()
                .map(|running| finish(running, StopReason::Shutdown)),
        )
        .await;
    }
}

/// Whether `policy` (none: no policy) allows the canonical `cwd`.
fn allows(policy: &Option<CwdPolicy>, cwd: &Path) -> bool {
    policy.as_ref().is_none_or(|policy| policy.allows(cwd))
}

/// Tells a running editor's watcher to stop it, and waits for the end.
async fn finish(running: RunningEditor, reason: StopReason) {
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
    (dirs, _lock): (EditorDirs, FolderLock),
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
    let _ = shared
        .events
        .send(Event::LocalEditorStopped(LocalEditorStopped {
            editor_id: id.to_string(),
            reason,
            exit_code,
        }));
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;
    use crate::editor::process::member_pids;

    /// A stand-in for code-server that misbehaves in a way the real one
    /// cannot be made to: `script` is its shell body.
    fn fake_program(dir: &Path, script: &str) -> PathBuf {
        let path = dir.join("fake-code-server");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn registry(scratch: &Path, program: PathBuf, timeout: Duration) -> Editors {
        let mut config = EditorConfig::new(program, scratch.join("state"), None);
        config.ready_timeout = timeout;
        Editors::new(config).0
    }

    fn request(cwd: &Path) -> StartRequest {
        StartRequest {
            request_id: Some("r1".into()),
            cwd: cwd.to_path_buf(),
            ..StartRequest::default()
        }
    }

    /// No folder under `editors/` and no process carrying the scratch path.
    fn assert_nothing_left(scratch: &Path) {
        let editors = scratch.join("state/editors");
        let folders: Vec<_> = std::fs::read_dir(&editors)
            .map(|dir| dir.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(folders.is_empty(), "folders left: {folders:?}");
    }

    fn failure(event: Event) -> String {
        match event {
            Event::ControlError(error) => {
                assert_eq!(error.control_type, "start_local_editor");
                assert_eq!(error.code, ErrorCode::EditorFailed);
                assert_eq!(error.request_id.as_deref(), Some("r1"));
                error.message
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_editor_that_never_answers_times_out_and_leaves_nothing() {
        let scratch = tempfile::tempdir().unwrap();
        // Prints nothing and forks a child that would outlive a plain kill.
        let program = fake_program(scratch.path(), "sleep 300 & exec sleep 300");
        let editors = registry(scratch.path(), program, Duration::from_millis(500));
        let started = std::time::Instant::now();
        let reason = failure(editors.start(request(scratch.path())).await);
        assert!(reason.contains("did not answer within"), "{reason}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_nothing_left(scratch.path());
        assert!(editors.list().is_empty());
    }

    #[tokio::test]
    async fn an_editor_that_exits_at_once_says_so() {
        let scratch = tempfile::tempdir().unwrap();
        let program = fake_program(scratch.path(), "echo 'bad flag --socket' >&2; exit 3");
        let editors = registry(scratch.path(), program, Duration::from_secs(10));
        let reason = failure(editors.start(request(scratch.path())).await);
        assert!(reason.contains("status 3"), "{reason}");
        assert!(reason.contains("bad flag --socket"), "{reason}");
        assert_nothing_left(scratch.path());
    }

    #[tokio::test]
    async fn bad_requests_are_refused_before_anything_starts() {
        let scratch = tempfile::tempdir().unwrap();
        let program = fake_program(scratch.path(), "exit 0");
        let editors = registry(scratch.path(), program, Duration::from_secs(10));
        let reason = failure(editors.start(request(Path::new("relative/dir"))).await);
        assert!(reason.contains("not an absolute path"), "{reason}");
        let mut collab = request(scratch.path());
        collab.collaboration = Some(serde_json::json!({"extensionAssetPath": "/x.vsix"}));
        let reason = failure(editors.start(collab).await);
        assert!(reason.contains("serverAssetPath"), "{reason}");
        // Collaboration without Kandan's origin and token.
        let mut collab = request(scratch.path());
        collab.collaboration = Some(serde_json::json!({
            "extensionAssetPath": "/x.vsix", "serverAssetPath": "/s.js"
        }));
        let reason = failure(editors.start(collab).await);
        assert!(reason.contains("no Kandan origin"), "{reason}");
        assert_nothing_left(scratch.path());
        assert!(matches!(
            editors.stop("nope").await,
            Err(EditorError::UnknownEditor(_))
        ));
    }

    #[tokio::test]
    async fn stop_all_abandons_a_start_in_progress() {
        let scratch = tempfile::tempdir().unwrap();
        let program = fake_program(
            scratch.path(),
            "echo $$ > \"$KANDAN_PID_FILE\"; exec sleep 300",
        );
        let pid_file = scratch.path().join("pid");
        // The fake reads where to write its pid from a variable the
        // registry passes on (the runner's environment minus its secrets).
        let script = std::fs::read_to_string(&program)
            .unwrap()
            .replace("$KANDAN_PID_FILE", &pid_file.to_string_lossy());
        std::fs::write(&program, script).unwrap();
        let editors = registry(scratch.path(), program, Duration::from_secs(60));
        let starting = tokio::spawn({
            let editors = editors.clone();
            let cwd = scratch.path().to_path_buf();
            async move { editors.start(request(&cwd)).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let pid: libc::pid_t = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                break pid;
            }
            assert!(tokio::time::Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        editors.stop_all().await;
        let reason = failure(starting.await.unwrap());
        assert!(reason.contains("stopping"), "{reason}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !member_pids(pid, "-").is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the group survived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_nothing_left(scratch.path());
    }

    /// scratch/{allowed/sub,outside}, a policy allowing `allowed`, and a
    /// fake code-server that writes `pid cwd` to scratch/seen, then waits.
    fn cwd_setup(scratch: &Path) -> (CwdPolicy, PathBuf, Editors) {
        let root = scratch.canonicalize().unwrap();
        std::fs::create_dir_all(root.join("allowed/sub")).unwrap();
        std::fs::create_dir_all(root.join("outside")).unwrap();
        let mut policy = CwdPolicy::new(&[]);
        policy.set_allowed(&[root.join("allowed")]);
        let seen = root.join("seen");
        let program = fake_program(
            &root,
            &format!("echo \"$$ $(pwd -P)\" > {}; exec sleep 300", seen.display()),
        );
        let editors = registry(&root, program, Duration::from_secs(60));
        editors.set_policy(policy.clone());
        (policy, root, editors)
    }

    fn checked_request(policy: &CwdPolicy, cwd: &Path) -> StartRequest {
        let checked = policy.check(Some(cwd)).unwrap();
        StartRequest {
            dir: Some(checked.dir().clone()),
            ..request(checked.path())
        }
    }

    async fn wait_seen(root: &Path) -> (libc::pid_t, PathBuf) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(root.join("seen")).unwrap_or_default();
            if let Some((pid, cwd)) = text.trim_end().split_once(' ') {
                return (pid.parse().unwrap(), PathBuf::from(cwd));
            }
            assert!(tokio::time::Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The attacker swaps the checked directory for a symlink to outside
    /// before code-server starts: it starts in the directory checked; and
    /// a withdrawal while it starts fails the start and ends it.
    #[tokio::test]
    async fn starts_in_the_checked_directory_and_a_withdrawal_wins() {
        let scratch = tempfile::tempdir().unwrap();
        let (policy, root, editors) = cwd_setup(scratch.path());
        let request = checked_request(&policy, &root.join("allowed/sub"));
        std::fs::rename(root.join("allowed/sub"), root.join("allowed/kept")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), root.join("allowed/sub")).unwrap();
        let starting = tokio::spawn({
            let editors = editors.clone();
            async move { editors.start(request).await }
        });
        let (pid, cwd) = wait_seen(&root).await;
        assert_eq!(cwd, root.join("allowed/kept"));
        let mut withdrawn = policy.clone();
        withdrawn.set_allowed(&[root.join("outside")]);
        editors.set_policy(withdrawn);
        let reason = failure(starting.await.unwrap());
        assert!(reason.contains("no longer allowed"), "{reason}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !member_pids(pid, "-").is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the group survived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(editors.list().is_empty());
        assert_nothing_left(&root);
    }

    /// The checked directory moved out of its root before `exec`:
    /// code-server never runs.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_directory_moved_out_before_exec_never_runs_code() {
        let scratch = tempfile::tempdir().unwrap();
        let (policy, root, editors) = cwd_setup(scratch.path());
        let request = checked_request(&policy, &root.join("allowed/sub"));
        std::fs::rename(root.join("allowed/sub"), root.join("outside/sub")).unwrap();
        let reason = failure(editors.start(request).await);
        assert!(reason.contains("no longer allowed"), "{reason}");
        assert!(!root.join("seen").exists(), "code-server ran");
        assert_nothing_left(&root);
    }

    /// A writer flips an allowed directory between itself and a symlink to
    /// outside as fast as it can while editors start: none runs outside.
    #[tokio::test]
    async fn a_flipping_directory_never_starts_an_editor_outside() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().canonicalize().unwrap();
        let (allowed, outside) = (root.join("allowed"), root.join("outside"));
        let (flip, real) = (allowed.join("flip"), allowed.join("real"));
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, &flip).unwrap();
        let mut policy = CwdPolicy::new(&[]);
        policy.set_allowed(std::slice::from_ref(&allowed));
        let log = root.join("seen.log");
        let program = fake_program(&root, &format!("pwd -P >> {}; exit 0", log.display()));
        let editors = registry(&root, program, Duration::from_secs(10));
        editors.set_policy(policy.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = std::thread::spawn({
            let (stop, flip, real, outside) = (stop.clone(), flip.clone(), real, outside);
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::fs::remove_file(&flip);
                    let _ = std::fs::rename(&real, &flip);
                    let _ = std::fs::rename(&flip, &real);
                    let _ = std::os::unix::fs::symlink(&outside, &flip);
                }
            }
        });
        let mut started = 0;
        for _ in 0..100 {
            // Spread over the writer's phases.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let Ok(checked) = policy.check(Some(&flip)) else {
                continue;
            };
            started += 1;
            let request = StartRequest {
                dir: Some(checked.dir().clone()),
                ..request(checked.path())
            };
            let reason = failure(editors.start(request).await);
            assert!(reason.contains("before it answered"), "{reason}");
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let seen = std::fs::read_to_string(&log).unwrap_or_default();
        let ran: Vec<&str> = seen.lines().collect();
        assert_eq!(ran.len(), started, "{seen}");
        assert!(started > 0, "no check saw the directory");
        for cwd in ran {
            assert!(Path::new(cwd).starts_with(&allowed), "ran outside: {cwd}");
        }
    }
}
