//! What the kernel says about a process, for both benchmarks and the
//! end-to-end tests: state and CPU time from `/proc/<pid>/stat`, resident
//! memory from `/proc/<pid>/status`, wakeups (context switches) from
//! `/proc/<pid>/task/*/status`.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use super::clock::monotonic_ns;

/// The fields of `/proc/<pid>/stat` the benchmarks and tests read; times
/// in clock ticks ([`clk_tck`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `Z`, `X`, ...
    pub state: char,
    pub ppid: u32,
    /// Process group.
    pub pgrp: u32,
    pub utime: u64,
    pub stime: u64,
    /// Times of waited-for children.
    pub cutime: u64,
    pub cstime: u64,
}

impl Stat {
    /// Parses the one line of `/proc/<pid>/stat`.
    pub fn parse(stat: &str) -> Option<Self> {
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        // Field 3 (state) is the first here; ppid, pgrp are 4, 5; utime..cstime are 14..=17.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Option<u64> {
            // cutime and cstime are signed in the kernel's format.
            Some(fields.get(i)?.parse::<i64>().ok()?.max(0) as u64)
        };
        let mut state = fields.first()?.chars();
        Some(Stat {
            state: state.next().filter(|_| state.next().is_none())?,
            ppid: fields.get(1)?.parse().ok()?,
            pgrp: fields.get(2)?.parse().ok()?,
            utime: ticks(11)?,
            stime: ticks(12)?,
            cutime: ticks(13)?,
            cstime: ticks(14)?,
        })
    }
}

/// Reads `/proc/<pid>/<file>`; the error names the file.
fn read(pid: u32, file: &str) -> io::Result<String> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::read_to_string(&path)
        .map_err(|err| io::Error::new(err.kind(), format!("{path}: {err}")))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// `/proc/<pid>/stat`, parsed.
pub fn stat(pid: u32) -> io::Result<Stat> {
    Stat::parse(&read(pid, "stat")?).ok_or_else(|| invalid(format!("malformed /proc/{pid}/stat")))
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    stat(pid).is_ok_and(|stat| !matches!(stat.state, 'Z' | 'X'))
}

/// Clock ticks per second of the `stat` times.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// utime + stime + cutime + cstime of `pid`, in clock ticks. The children's
/// times count: the baseline's cost is mostly the `ps` and `lsof` it runs.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = stat(pid)?;
    Ok(stat.utime + stat.stime + stat.cutime + stat.cstime)
}

/// Time on CPU of `pid`'s live threads (not its children), in nanoseconds
/// from `/proc/<pid>/task/*/schedstat`: `stat`'s utime and stime count in
/// clock ticks (10 ms), too coarse for a few hundred milliseconds of work.
/// Compare two readings over a window in which no thread of `pid` ends.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path().join("schedstat");
        // A thread that ended since the listing has nothing left to count.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let on_cpu = text
            .split_ascii_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok());
        total += on_cpu.ok_or_else(|| invalid(format!("{}: {text:?}", path.display())))?;
    }
    Ok(Duration::from_nanos(total))
}

/// VmHWM (peak resident set) of `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> io::Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// VmRSS (resident set now) of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// `VmHWM` (peak resident set) and `VmRSS` of `pid`, in KiB.
pub fn memory_kib(pid: u32) -> io::Result<(u64, u64)> {
    let status = read(pid, "status")?;
    Ok((
        field_kib(&status, pid, "VmHWM:")?,
        field_kib(&status, pid, "VmRSS:")?,
    ))
}

/// Resets `VmHWM` to the current RSS (`clear_refs` 5, Linux 4.0+), so a
/// phase's peak is its own.
pub fn reset_peak(pid: u32) -> io::Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").map_err(|err| io::Error::new(err.kind(), format!("{path}: {err}")))
}

fn status_kib(pid: u32, field: &str) -> io::Result<u64> {
    field_kib(&read(pid, "status")?, pid, field)
}

fn field_kib(status: &str, pid: u32, field: &str) -> io::Result<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| invalid(format!("no {field} in /proc/{pid}/status")))
}

/// Number of processes on the machine (as this pid namespace sees it).
pub fn process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0)
}

/// CPU use of one process over a window.
pub struct CpuMeter {
    pid: u32,
    ticks: u64,
    at_ns: u64,
}

impl CpuMeter {
    pub fn start(pid: u32) -> io::Result<Self> {
        Ok(CpuMeter {
            pid,
            ticks: cpu_ticks(pid)?,
            at_ns: monotonic_ns(),
        })
    }

    /// Percent of one core used since `start`.
    pub fn percent(&self) -> io::Result<f64> {
        let ticks = cpu_ticks(self.pid)?.saturating_sub(self.ticks);
        let seconds = (monotonic_ns() - self.at_ns) as f64 / 1e9;
        Ok(ticks as f64 / clk_tck() as f64 / seconds * 100.0)
    }
}

/// Context switches (voluntary + involuntary) of each thread of `pid`, by
/// thread id. A thread sleeping in the kernel is switched out once per
/// wakeup, so the count is its wakeups.
pub fn context_switches(pid: u32) -> io::Result<HashMap<u32, u64>> {
    let mut threads = HashMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A thread that exited meanwhile is counted by `wakeups_between`.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        threads.insert(tid, parse_switches(&status));
    }
    Ok(threads)
}

fn parse_switches(status: &str) -> u64 {
    status
        .lines()
        .filter(|line| line.contains("ctxt_switches:"))
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Wakeups between two [`context_switches`] samples: what each thread in
/// both added, all of a thread that started in between, and one for each
/// thread that exited (its counts are gone with it).
pub fn wakeups_between(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> u64 {
    let mut wakeups = 0;
    for (tid, &now) in after {
        wakeups += now.saturating_sub(before.get(tid).copied().unwrap_or(0));
    }
    wakeups + before.keys().filter(|tid| !after.contains_key(tid)).count() as u64
}

/// Wakeups per second of one process over a window.
pub struct WakeMeter {
    pid: u32,
    before: HashMap<u32, u64>,
    at_ns: u64,
}

impl WakeMeter {
    pub fn start(pid: u32) -> io::Result<Self> {
        Ok(WakeMeter {
            pid,
            before: context_switches(pid)?,
            at_ns: monotonic_ns(),
        })
    }

    /// Wakeups since `start`, and the seconds that took.
    pub fn wakeups(&self) -> io::Result<(u64, f64)> {
        let after = context_switches(self.pid)?;
        let seconds = (monotonic_ns() - self.at_ns) as f64 / 1e9;
        Ok((wakeups_between(&self.before, &after), seconds))
    }

    /// Wakeups per second since `start`.
    pub fn per_second(&self) -> io::Result<f64> {
        let (wakeups, seconds) = self.wakeups()?;
        Ok(wakeups as f64 / seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_after_the_command_name() {
        let stat = "42 (we ird) name)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 1 0 5 1000 10";
        let stat = Stat::parse(stat).unwrap();
        assert_eq!((stat.state, stat.ppid, stat.pgrp), ('S', 1, 42));
        assert_eq!(
            (stat.utime, stat.stime, stat.cutime, stat.cstime),
            (7, 3, 2, 1)
        );
        assert_eq!(Stat::parse("42 (x) S 1 2"), None);
    }

    #[test]
    fn own_process_is_alive_and_has_memory() {
        let me = std::process::id();
        assert!(alive(me));
        assert_eq!(stat(me).unwrap().ppid, std::os::unix::process::parent_id());
        let (peak, now) = memory_kib(me).unwrap();
        assert!(peak >= now && now > 0, "{peak} {now}");
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn switches_sum_both_kinds() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t31\nnonvoluntary_ctxt_switches:\t4\n";
        assert_eq!(parse_switches(status), 35);
    }

    #[test]
    fn wakeups_count_new_and_exited_threads() {
        let before = HashMap::from([(1, 10), (2, 5), (3, 7)]);
        // 1 woke twice, 2 slept, 3 exited, 4 started and woke 3 times.
        let after = HashMap::from([(1, 12), (2, 5), (4, 3)]);
        assert_eq!(wakeups_between(&before, &after), 2 + 1 + 3);
    }

    #[test]
    fn own_threads_have_switched() {
        let own = context_switches(std::process::id()).unwrap();
        assert!(own.contains_key(&std::process::id()));
    }

    #[test]
    fn own_process_has_a_peak_rss() {
        assert!(peak_rss_kib(std::process::id()).unwrap() > 0);
    }
}
