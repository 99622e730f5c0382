//! The processes of one thing the runner started (the command's tree, a
//! Codex instance, an editor), found and ended the same way for all three.
//!
//! With a cgroup ([`Members::Cgroup`]) the kernel keeps the set: whatever a
//! process does (`setsid`, a double fork, a cleared environment), it stays
//! in, and `cgroup.kill` ends it whole. Where no cgroup could be created
//! ([`Members::Marked`]), the set is found in /proc: the processes that
//! carry the thing's marker variable in their environment (inherited by
//! every descendant, whatever its parent became; Jenkins' ProcessTreeKiller
//! uses the same trick), those of its process group, and for the command's
//! tree the runner's descendants. A process that clears its environment
//! and leaves its group escapes that; the cgroup is why it is preferred.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::cgroup::Cgroup;
use crate::detect::process_tree::ProcessTree;

/// How often an ending set is checked.
const POLL: Duration = Duration::from_millis(20);

/// What holds the processes of one thing the runner started.
#[derive(Clone, Debug)]
pub(crate) enum Members {
    Cgroup(Arc<Cgroup>),
    Marked(Marked),
}

/// The fallback: processes found by marker, group and ancestry.
#[derive(Clone, Debug)]
pub(crate) struct Marked {
    /// `NAME=value`, in the environment of every process of the set
    /// (read from /proc: Linux only).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    marker: String,
    /// Its own process group, when it leads one.
    pgid: Option<u32>,
    /// Every descendant of this pid belongs too (the runner, for the
    /// command, which stays in the runner's group for a terminal's Ctrl-C).
    descendants_of: Option<u32>,
    /// Trees never touched (`--root-pid`: the runner did not start them).
    spared: Vec<u32>,
}

impl Marked {
    pub(crate) fn new(var: &str, value: &str) -> Self {
        Marked {
            marker: format!("{var}={value}"),
            pgid: None,
            descendants_of: None,
            spared: Vec::new(),
        }
    }

    pub(crate) fn with_group(mut self, pgid: u32) -> Self {
        self.pgid = (pgid > 1).then_some(pgid);
        self
    }

    pub(crate) fn with_descendants_of(mut self, pid: u32, spared: &[u32]) -> Self {
        self.descendants_of = Some(pid);
        self.spared = spared.to_vec();
        self
    }
}

impl Members {
    /// The live processes of the set (zombies are gone already). Blocking
    /// in the fallback, which reads /proc.
    pub(crate) fn pids(&self) -> Vec<u32> {
        match self {
            Members::Cgroup(cgroup) => cgroup.members(),
            #[cfg(target_os = "linux")]
            Members::Marked(marked) => marked_members(&processes(), marked),
            // Without /proc only the group is known: `kill(-pgid, 0)` says
            // whether it has members.
            #[cfg(not(target_os = "linux"))]
            Members::Marked(marked) => marked
                .pgid
                .filter(|&pgid| group_alive(pgid))
                .into_iter()
                .collect(),
        }
    }

    /// [`Members::pids`] off the async threads.
    pub(crate) async fn live(&self) -> Vec<u32> {
        match self {
            Members::Cgroup(cgroup) => cgroup.members(),
            Members::Marked(_) => {
                let members = self.clone();
                tokio::task::spawn_blocking(move || members.pids())
                    .await
                    .unwrap_or_default()
            }
        }
    }

    /// Sends `signal` to every process of the set.
    pub(crate) async fn signal(&self, signal: libc::c_int) {
        self.signal_group(signal);
        send(&self.live().await, signal);
    }

    /// The fallback's process group as a whole (all there is on macOS).
    fn signal_group(&self, signal: libc::c_int) {
        if let Members::Marked(Marked {
            pgid: Some(pgid), ..
        }) = self
            && let Ok(pgid) = libc::pid_t::try_from(*pgid)
        {
            // Never the runner's own group.
            // SAFETY: getpgrp and kill have no memory preconditions.
            unsafe {
                if pgid != libc::getpgrp() {
                    libc::kill(-pgid, signal);
                }
            }
        }
    }

    /// Whether every process is gone: none alive, and in the fallback no
    /// zombie left in the group either (its parent has not reaped it yet).
    pub(crate) async fn settled(&self) -> bool {
        if !self.live().await.is_empty() {
            return false;
        }
        match self {
            Members::Marked(Marked {
                pgid: Some(pgid), ..
            }) => !group_alive(*pgid),
            _ => true,
        }
    }

    /// Waits until the set has [`settled`](Self::settled) or `deadline`
    /// passes; whether it has.
    pub(crate) async fn wait_empty(&self, deadline: Instant) -> bool {
        loop {
            if self.settled().await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(POLL).await;
        }
    }

    /// SIGKILL to every process (`cgroup.kill`), then at most `wait` for
    /// them to go; whether the set is empty.
    pub(crate) async fn kill(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        match self {
            Members::Cgroup(cgroup) => {
                cgroup.kill_now();
                cgroup.wait_empty(deadline).await
            }
            // Processes forked meanwhile get theirs at the next round.
            Members::Marked(_) => loop {
                let pids = self.live().await;
                if pids.is_empty() {
                    return true;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(?pids, "processes outlived SIGKILL");
                    return false;
                }
                self.signal_group(libc::SIGKILL);
                send(&pids, libc::SIGKILL);
                sleep(POLL).await;
            },
        }
    }

    /// SIGKILL to every process, without waiting (for `Drop`); how many
    /// there were.
    pub(crate) fn kill_now(&self) -> usize {
        match self {
            Members::Cgroup(cgroup) => cgroup.kill_now(),
            Members::Marked(_) => {
                self.signal_group(libc::SIGKILL);
                let pids = self.pids();
                send(&pids, libc::SIGKILL);
                pids.len()
            }
        }
    }
}

/// Whether any process (zombies included) is in group `pgid`.
pub(crate) fn group_alive(pgid: u32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks.
    pgid > 1 && unsafe { libc::kill(-pgid, 0) } == 0
}

fn send(pids: &[u32], signal: libc::c_int) {
    for &pid in pids {
        // Never init, and never a pid that would name a group.
        if let Ok(pid) = libc::pid_t::try_from(pid)
            && pid > 1
        {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

/// One process as the fallback needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Proc {
    ppid: u32,
    pgid: u32,
    zombie: bool,
}

/// The set: marked processes, the group, the descendants; minus the spared
/// trees, the runner itself and zombies.
#[cfg(target_os = "linux")]
fn marked_members(procs: &HashMap<u32, Proc>, marked: &Marked) -> Vec<u32> {
    let me = std::process::id();
    members(procs, marked, me, |pid| has_marker(pid, &marked.marker))
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn members(
    procs: &HashMap<u32, Proc>,
    marked: &Marked,
    self_pid: u32,
    has_marker: impl Fn(u32) -> bool,
) -> Vec<u32> {
    let parents = || procs.iter().map(|(&pid, proc)| (pid, proc.ppid));
    let mut set: BTreeSet<u32> = match marked.descendants_of {
        Some(root) => ProcessTree::walk(parents(), &[root]).pids().collect(),
        None => BTreeSet::new(),
    };
    for (&pid, proc) in procs {
        if !proc.zombie && (Some(proc.pgid) == marked.pgid || has_marker(pid)) {
            set.insert(pid);
        }
    }
    for pid in ProcessTree::walk(parents(), &marked.spared).pids() {
        set.remove(&pid);
    }
    set.remove(&self_pid);
    set.into_iter()
        .filter(|pid| procs.get(pid).is_some_and(|p| !p.zombie))
        .collect()
}

/// Every process in /proc with its parent and group.
#[cfg(target_os = "linux")]
fn processes() -> HashMap<u32, Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_stat(&stat)?))
        })
        .collect()
}

/// `pid (comm) S ppid pgrp ...`; `comm` may hold spaces and parentheses.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_stat(stat: &str) -> Option<Proc> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some(Proc {
        ppid,
        pgid,
        zombie: matches!(state, "Z" | "X" | "x"),
    })
}

#[cfg(target_os = "linux")]
fn has_marker(pid: u32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
        environ
            .split(|&b| b == 0)
            .any(|var| var == marker.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(u32, u32, u32, bool)]) -> HashMap<u32, Proc> {
        rows.iter()
            .map(|&(pid, ppid, pgid, zombie)| (pid, Proc { ppid, pgid, zombie }))
            .collect()
    }

    #[test]
    fn the_command_tree_is_descendants_plus_marked_minus_spared() {
        // 10 is the runner; 11 its command, 12 the command's child, 13 a
        // zombie; 20 a marked orphan (re-parented to 1) and 21 its child;
        // 30 a spared root under the runner (odd, but never touched) with
        // child 31; 40 unrelated.
        let procs = table(&[
            (1, 0, 1, false),
            (10, 1, 10, false),
            (11, 10, 10, false),
            (12, 11, 10, false),
            (13, 11, 10, true),
            (20, 1, 20, false),
            (21, 20, 20, false),
            (30, 10, 10, false),
            (31, 30, 10, false),
            (40, 1, 40, false),
        ]);
        let marked = Marked::new("M", "x").with_descendants_of(10, &[30]);
        let has = |pid| matches!(pid, 20 | 21 | 31);
        assert_eq!(members(&procs, &marked, 10, has), vec![11, 12, 20, 21]);
    }

    #[test]
    fn a_group_is_its_members_and_the_marked_ones() {
        // 50 leads group 50 with 51; 52 left the group (setsid) but is
        // marked; 53 is in another group, unmarked.
        let procs = table(&[
            (50, 10, 50, false),
            (51, 50, 50, false),
            (52, 50, 52, false),
            (53, 1, 53, false),
        ]);
        let marked = Marked::new("M", "x").with_group(50);
        assert_eq!(
            members(&procs, &marked, 10, |pid| pid == 52),
            vec![50, 51, 52]
        );
    }

    #[test]
    fn stat_lines_with_odd_command_names() {
        assert_eq!(
            parse_stat("42 (a) b (c)) S 7 42 42 0 -1"),
            Some(Proc {
                ppid: 7,
                pgid: 42,
                zombie: false
            })
        );
        assert_eq!(parse_stat("42 (sh) Z 1 3 0").map(|p| p.zombie), Some(true));
        assert_eq!(parse_stat("garbage"), None);
    }
}
