//! Starting a child in a directory by descriptor (PROTOCOL.md section 6):
//! `fchdir` between fork and exec puts it in the directory that was
//! checked, not in whatever that directory's path names by then.

use std::io;
use std::os::fd::RawFd;

/// What a child whose directory is not under an allowed root fails its
/// spawn with (std passes only an errno from before exec to the parent).
pub(crate) const ESCAPED_ERRNO: i32 = libc::EXDEV;

/// Makes `dir` the working directory. Runs in the child between fork and
/// exec: async-signal-safe.
pub(crate) fn enter(dir: RawFd) -> io::Result<()> {
    // SAFETY: fchdir takes a plain descriptor.
    if unsafe { libc::fchdir(dir) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this process's working directory lies under one of `roots`
/// (canonical paths, as bytes). Runs in the child between fork and exec:
/// only readlink into the stack and byte comparisons, no allocation.
#[cfg(target_os = "linux")]
pub(crate) fn cwd_is_under(roots: &[Vec<u8>]) -> bool {
    let mut buf = [0u8; 4096];
    // SAFETY: readlink writes at most buf.len() bytes into buf.
    let n = unsafe {
        libc::readlink(
            c"/proc/self/cwd".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let Ok(n) = usize::try_from(n) else {
        return false;
    };
    // A full buffer may be a truncated path: refuse rather than guess.
    n < buf.len() && roots.iter().any(|root| under(&buf[..n], root))
}

/// Without /proc the child cannot read its directory before exec; the
/// descriptor alone holds it (the caller checks the running process).
#[cfg(not(target_os = "linux"))]
pub(crate) fn cwd_is_under(_roots: &[Vec<u8>]) -> bool {
    true
}

/// `path` is `root` or lies under it, by whole components.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn under(path: &[u8], root: &[u8]) -> bool {
    path.starts_with(root)
        && (path.len() == root.len() || root.ends_with(b"/") || path[root.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held child given a directory's descriptor starts there, though
    /// the directory's path names another one by the time it forks.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_held_child_starts_in_the_descriptor_not_the_path() {
        use std::os::fd::{FromRawFd, OwnedFd};

        use crate::supervise::{HeldChild, SpawnOptions};

        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().canonicalize().unwrap();
        let (checked, elsewhere) = (root.join("checked"), root.join("elsewhere"));
        std::fs::create_dir(&checked).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        let path = std::ffi::CString::new(checked.to_str().unwrap()).unwrap();
        // SAFETY: open reads a NUL-terminated path; we own the result.
        let dir = unsafe {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            assert!(fd >= 0);
            OwnedFd::from_raw_fd(fd)
        };
        std::fs::rename(&checked, root.join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &checked).unwrap();
        let options = SpawnOptions {
            cwd: Some(checked.clone()),
            cwd_dir: Some(std::sync::Arc::new(dir)),
            ..SpawnOptions::default()
        };
        let argv = ["sleep".to_string(), "30".to_string()];
        let held = HeldChild::spawn(&argv, &options).unwrap();
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", held.pid())).unwrap();
        assert_eq!(cwd, root.join("moved"));
        let mut child = held.release().unwrap();
        child.kill().await.unwrap();
    }

    #[test]
    fn under_compares_whole_components() {
        assert!(under(b"/a/b", b"/a/b"));
        assert!(under(b"/a/b/c", b"/a/b"));
        assert!(under(b"/a/b\xff/c", b"/a/b\xff"));
        assert!(!under(b"/a/bc", b"/a/b"));
        assert!(!under(b"/a", b"/a/b"));
        assert!(!under(b"/a/b\xef\xbf\xbd", b"/a/b\xff"));
        assert!(under(b"/anything", b"/"));
    }
}
