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
