//! Processes as the tests look for them in /proc.

use crate::bench::procstat;

/// Pids of processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| {
                    String::from_utf8_lossy(&raw)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Whether a process whose program is `program` has `needle` in its command
/// line (the command itself, not the login shell that starts it).
pub fn runs_program(needle: &str, program: &str) -> bool {
    processes_with(needle).into_iter().any(|pid| {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let first = raw.split(|&b| b == 0).next().unwrap_or_default();
        first.rsplit(|&b| b == b'/').next() == Some(program.as_bytes())
    })
}

/// The parent of `pid`, from /proc/<pid>/stat.
pub fn parent_of(pid: u32) -> Option<u32> {
    procstat::stat(pid).ok().map(|stat| stat.ppid)
}

pub fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    while pid > 1 {
        if pid == ancestor {
            return true;
        }
        match parent_of(pid) {
            Some(parent) => pid = parent,
            None => return false,
        }
    }
    false
}
