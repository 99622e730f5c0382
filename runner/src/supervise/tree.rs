//! Finding and ending what remains of the tree the runner started.
//!
//! The tree is every descendant of the runner, plus every process whose
//! environment carries this runner's [`TREE_MARKER`](super::spawn::TREE_MARKER):
//! a grandchild whose parent exited is re-parented to init and leaves the
//! runner's descendants, but keeps the environment it inherited. The trees
//! of `--root-pid` are never part of it (the runner did not start them).
//! The command stays in the runner's process group, so a Ctrl-C typed in a
//! terminal still reaches it directly; the group is not what is killed.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::detect::process_tree::{ProcessTree, state_and_ppid_from_stat};

/// How often the end of the tree is checked while it stops.
const POLL: Duration = Duration::from_millis(20);
/// How long SIGKILLed processes get to disappear before the runner goes on.
const KILL_GRACE: Duration = Duration::from_millis(200);

/// Sends SIGTERM to what remains of the tree, and SIGKILL at `kill_at` to
/// whatever is still there (including processes forked meanwhile).
pub async fn end(marker: &str, spared: &[u32], kill_at: Instant) {
    let pids = find(marker, spared).await;
    if pids.is_empty() {
        return;
    }
    tracing::debug!(?pids, "ending what remains of the command's tree");
    signal(&pids, libc::SIGTERM);
    while Instant::now() < kill_at {
        if !pids.iter().any(|&pid| alive(pid)) {
            return;
        }
        sleep(POLL).await;
    }
    let pids = find(marker, spared).await;
    if pids.is_empty() {
        return;
    }
    tracing::info!(?pids, "killing what remains of the command's tree");
    signal(&pids, libc::SIGKILL);
    let deadline = Instant::now() + KILL_GRACE;
    while pids.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        sleep(POLL).await;
    }
}

/// Sends `sig` to every live process of the tree.
pub async fn signal_all(marker: &str, spared: &[u32], sig: libc::c_int) {
    signal(&find(marker, spared).await, sig);
}

fn signal(pids: &[u32], sig: libc::c_int) {
    for &pid in pids {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

/// The tree's live processes, off the async threads (it reads /proc).
async fn find(marker: &str, spared: &[u32]) -> Vec<u32> {
    let marker = marker.to_owned();
    let spared = spared.to_vec();
    tokio::task::spawn_blocking(move || {
        members(&processes(), std::process::id(), &spared, |pid| {
            has_marker(pid, &marker)
        })
    })
    .await
    .unwrap_or_default()
}

/// One process as the tree search needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Proc {
    ppid: u32,
    zombie: bool,
}

/// The runner's descendants and the marked processes, minus the spared
/// roots' trees, the runner itself and zombies.
fn members(
    procs: &HashMap<u32, Proc>,
    self_pid: u32,
    spared: &[u32],
    marked: impl Fn(u32) -> bool,
) -> Vec<u32> {
    let parents = || procs.iter().map(|(&pid, proc)| (pid, proc.ppid));
    let mut tree: BTreeSet<u32> = ProcessTree::walk(parents(), &[self_pid]).pids().collect();
    tree.remove(&self_pid);
    for (&pid, proc) in procs {
        if pid != self_pid && !proc.zombie && marked(pid) {
            tree.insert(pid);
        }
    }
    for pid in ProcessTree::walk(parents(), spared).pids() {
        tree.remove(&pid);
    }
    tree.into_iter()
        .filter(|pid| procs.get(pid).is_some_and(|p| !p.zombie))
        .collect()
}

/// Every process in /proc with its parent.
#[cfg(target_os = "linux")]
fn processes() -> HashMap<u32, Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect()
}

#[cfg(target_os = "linux")]
fn read_stat(pid: u32) -> Option<Proc> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `pid (comm) S ppid ...`; `comm` may hold spaces and parentheses.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_stat(stat: &str) -> Option<Proc> {
    let (state, ppid) = state_and_ppid_from_stat(stat)?;
    Some(Proc {
        ppid,
        zombie: matches!(state, "Z" | "X" | "x"),
    })
}

#[cfg(target_os = "linux")]
fn alive(pid: u32) -> bool {
    read_stat(pid).is_some_and(|p| !p.zombie)
}

#[cfg(target_os = "linux")]
fn has_marker(pid: u32, marker: &str) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = format!("{}={marker}", super::spawn::TREE_MARKER);
    environ
        .split(|&b| b == 0)
        .any(|var| var == wanted.as_bytes())
}

// Elsewhere (macOS) only the command itself is known: it is signalled by
// pid, and the rest of its tree is left to it.
#[cfg(not(target_os = "linux"))]
fn processes() -> HashMap<u32, Proc> {
    HashMap::new()
}

#[cfg(not(target_os = "linux"))]
fn alive(_pid: u32) -> bool {
    false
}

#[cfg(not(target_os = "linux"))]
fn has_marker(_pid: u32, _marker: &str) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(u32, u32, bool)]) -> HashMap<u32, Proc> {
        rows.iter()
            .map(|&(pid, ppid, zombie)| (pid, Proc { ppid, zombie }))
            .collect()
    }

    #[test]
    fn tree_is_descendants_plus_marked_minus_spared() {
        // 10 is the runner; 11 its command, 12 the command's child, 13 a
        // zombie; 20 a marked orphan (re-parented to 1) and 21 its child;
        // 30 a spared root under the runner (odd, but never touched) with
        // child 31; 40 unrelated.
        let procs = table(&[
            (1, 0, false),
            (10, 1, false),
            (11, 10, false),
            (12, 11, false),
            (13, 11, true),
            (20, 1, false),
            (21, 20, false),
            (30, 10, false),
            (31, 30, false),
            (40, 1, false),
        ]);
        let marked = |pid| matches!(pid, 20 | 21 | 31);
        assert_eq!(members(&procs, 10, &[30], marked), vec![11, 12, 20, 21]);
    }

    #[test]
    fn stat_lines_with_odd_command_names() {
        assert_eq!(
            parse_stat("42 (a) b (c)) S 7 42 42 0 -1"),
            Some(Proc {
                ppid: 7,
                zombie: false
            })
        );
        assert_eq!(parse_stat("42 (sh) Z 1 0").map(|p| p.zombie), Some(true));
        assert_eq!(parse_stat("garbage"), None);
    }
}
