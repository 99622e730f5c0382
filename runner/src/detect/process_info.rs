//! What the runner says about a process: full command line, label, cwd.
//!
//! [`describe`] reads them from the OS: `/proc/<pid>/cmdline` and
//! `/proc/<pid>/cwd` on Linux, `KERN_PROCARGS2` and `PROC_PIDVNODEPATHINFO`
//! on macOS. The byte-level parsing is platform-neutral and unit-tested.

use std::path::PathBuf;

/// Description of the process that holds a listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcessInfo {
    /// Full command line, arguments joined by spaces.
    pub command: String,
    /// The tool the command line shows (`vite`, `django`), else the script
    /// an interpreter runs (`server.js`), else the base name of the first
    /// word (see `label.rs`).
    pub label: String,
    /// Working directory, when readable.
    pub cwd: Option<PathBuf>,
}

impl ProcessInfo {
    /// Builds the description from argv and cwd.
    pub fn from_argv(argv: &[String], cwd: Option<PathBuf>) -> Self {
        let command = argv.join(" ");
        let label = super::label::label_of(argv);
        ProcessInfo {
            command,
            label,
            cwd,
        }
    }
}

/// Describes `pid` as it is now. Never fails: a process that exited or that
/// the runner may not inspect gets what could be read (its short name when
/// the command line is unreadable, no cwd when that is unreadable).
pub(crate) fn describe(pid: u32) -> ProcessInfo {
    let argv = imp::argv(pid)
        .filter(|argv| !argv.is_empty())
        .or_else(|| imp::name(pid).map(|name| vec![name]))
        .unwrap_or_default();
    ProcessInfo::from_argv(&argv, imp::cwd(pid))
}

/// Splits a Linux `cmdline` (arguments each ended by a NUL) into argv.
/// Trailing NULs are dropped; empty arguments in the middle are kept.
/// Bytes that are not UTF-8 are replaced, never refused.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn argv_from_cmdline(bytes: &[u8]) -> Vec<String> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end == 0 {
        return Vec::new();
    }
    bytes[..end]
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Reads argv out of a macOS `KERN_PROCARGS2` buffer: a native-endian
/// `int argc`, the executable path, NUL padding, then `argc` NUL-ended
/// arguments (then the environment, which is ignored). `None` when the
/// buffer is malformed.
#[cfg(any(target_os = "macos", test))]
pub(crate) fn argv_from_procargs2(bytes: &[u8]) -> Option<Vec<String>> {
    let argc_bytes: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let argc = usize::try_from(i32::from_ne_bytes(argc_bytes)).ok()?;
    let rest = &bytes[4..];
    // Skip the executable path and the NULs that pad it.
    let path_end = rest.iter().position(|&b| b == 0)?;
    let args_start = rest[path_end..].iter().position(|&b| b != 0)? + path_end;
    let mut argv = Vec::with_capacity(argc.min(256));
    let mut pieces = rest[args_start..].split(|&b| b == 0);
    for _ in 0..argc {
        argv.push(String::from_utf8_lossy(pieces.next()?).into_owned());
    }
    Some(argv)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::path::PathBuf;

    pub(crate) fn argv(pid: u32) -> Option<Vec<String>> {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .map(|bytes| super::argv_from_cmdline(&bytes))
    }

    /// The kernel's short name (`comm`), for processes whose cmdline is empty
    /// (zombies, kernel threads).
    pub(crate) fn name(pid: u32) -> Option<String> {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let comm = comm.trim_end_matches('\n');
        (!comm.is_empty()).then(|| comm.to_string())
    }

    pub(crate) fn cwd(pid: u32) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
    }
}

#[cfg(target_os = "macos")]
mod imp {
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;

    use libproc::libproc::proc_pid;

    pub(crate) fn argv(pid: u32) -> Option<Vec<String>> {
        let pid = libc::c_int::try_from(pid).ok()?;
        let mut mib = [libc::CTL_KERN, libc::KERN_PROCARGS2, pid];
        let mut size: libc::size_t = 0;
        // SAFETY: a size query: null buffer, `size` receives the length.
        let rc = unsafe {
            libc::sysctl(
                mib.as_mut_ptr(),
                3,
                std::ptr::null_mut(),
                &mut size,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 || size == 0 {
            return None;
        }
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` holds `size` writable bytes; the kernel writes at
        // most that many and stores the written length in `size`.
        let rc = unsafe {
            libc::sysctl(
                mib.as_mut_ptr(),
                3,
                buf.as_mut_ptr().cast(),
                &mut size,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 {
            return None;
        }
        buf.truncate(size);
        super::argv_from_procargs2(&buf)
    }

    pub(crate) fn name(pid: u32) -> Option<String> {
        let pid = i32::try_from(pid).ok()?;
        proc_pid::name(pid).ok().filter(|name| !name.is_empty())
    }

    pub(crate) fn cwd(pid: u32) -> Option<PathBuf> {
        vnode_cwd(i32::try_from(pid).ok()?)
    }

    /// `proc_pidinfo(PROC_PIDVNODEPATHINFO)`: `struct proc_vnodepathinfo`
    /// starts with the cwd's `struct vnode_info_path` (a 152-byte
    /// `vnode_info` then a `MAXPATHLEN` path).
    fn vnode_cwd(pid: i32) -> Option<PathBuf> {
        const PROC_PIDVNODEPATHINFO: libc::c_int = 9;
        const VNODE_INFO_SIZE: usize = 152;
        const MAXPATHLEN: usize = 1024;
        // cdir then rdir.
        let mut buf = vec![0u8; 2 * (VNODE_INFO_SIZE + MAXPATHLEN)];
        let len = libc::c_int::try_from(buf.len()).ok()?;
        // SAFETY: `buf` holds `len` writable bytes.
        let n = unsafe {
            libc::proc_pidinfo(pid, PROC_PIDVNODEPATHINFO, 0, buf.as_mut_ptr().cast(), len)
        };
        if n <= 0 {
            return None;
        }
        let path = &buf[VNODE_INFO_SIZE..VNODE_INFO_SIZE + MAXPATHLEN];
        let end = path.iter().position(|&b| b == 0)?;
        (end > 0).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(&path[..end])))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod imp {
    use std::path::PathBuf;

    pub(crate) fn argv(_pid: u32) -> Option<Vec<String>> {
        None
    }

    pub(crate) fn name(_pid: u32) -> Option<String> {
        None
    }

    pub(crate) fn cwd(_pid: u32) -> Option<PathBuf> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_splits_on_nuls_and_drops_the_trailing_ones() {
        let argv = argv_from_cmdline(b"node\0/x/node_modules/.bin/vite\0--port\x005173\0");
        assert_eq!(
            argv,
            ["node", "/x/node_modules/.bin/vite", "--port", "5173"]
        );
    }

    #[test]
    fn cmdline_keeps_empty_arguments_in_the_middle() {
        assert_eq!(argv_from_cmdline(b"sh\0-c\0\0x\0"), ["sh", "-c", "", "x"]);
    }

    #[test]
    fn cmdline_rewritten_without_nuls_is_one_argument() {
        // nginx and others overwrite argv with a title padded by NULs.
        let argv = argv_from_cmdline(b"nginx: master process\0\0\0\0");
        assert_eq!(argv, ["nginx: master process"]);
    }

    #[test]
    fn empty_cmdline_gives_no_argv() {
        assert!(argv_from_cmdline(b"").is_empty());
        assert!(argv_from_cmdline(b"\0\0").is_empty());
    }

    #[test]
    fn cmdline_with_invalid_utf8_is_replaced_not_refused() {
        assert_eq!(argv_from_cmdline(b"a\xffb\0"), ["a\u{fffd}b"]);
    }

    #[test]
    fn procargs2_skips_the_path_and_its_padding() {
        let mut buf = 2i32.to_ne_bytes().to_vec();
        buf.extend_from_slice(b"/usr/bin/python3\0\0\0\0python3\0-m\0PATH=/bin\0");
        assert_eq!(argv_from_procargs2(&buf).unwrap(), ["python3", "-m"]);
    }

    #[test]
    fn procargs2_malformed_is_none() {
        assert_eq!(argv_from_procargs2(b""), None);
        assert_eq!(argv_from_procargs2(&[1, 0]), None);
        let mut buf = 3i32.to_ne_bytes().to_vec();
        buf.extend_from_slice(b"/bin/x\0x\0");
        assert_eq!(argv_from_procargs2(&buf), None);
        let mut negative = (-1i32).to_ne_bytes().to_vec();
        negative.extend_from_slice(b"/bin/x\0x\0");
        assert_eq!(argv_from_procargs2(&negative), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn describes_a_real_child() {
        let dir = std::env::temp_dir();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&dir)
            .spawn()
            .unwrap();
        // Right after fork the child still shows this test's command line:
        // wait for the exec to finish.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let info = loop {
            let info = describe(child.id());
            if info.command == "sleep 30" || std::time::Instant::now() > deadline {
                break info;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(info.command, "sleep 30");
        assert_eq!(info.label, "sleep");
        assert_eq!(
            info.cwd.map(|p| p.canonicalize().unwrap()),
            Some(dir.canonicalize().unwrap())
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn describes_a_missing_process_as_empty() {
        // Pid numbers above pid_max (4194304 at most) never exist.
        assert_eq!(describe(u32::MAX - 1), ProcessInfo::default());
    }
}
