//! Which working directories Kandan may start code in (PROTOCOL.md section 6).
//!
//! Allowed roots are Kandan's `allowedCwds`; when the runner was started with
//! `--allow-cwd` roots, only those of Kandan's roots that lie under a local
//! one count. A cwd is allowed when it is absolute, exists, is a directory,
//! and its canonical path (symlinks and `..` resolved) is an allowed root or
//! lies under one. Everything is compared canonically and as bytes, so a
//! symlink never lets a cwd out of its root and a name that is not UTF-8
//! is neither refused nor confused with another.
//!
//! The check opens the directory and reads the canonical path of what it
//! opened: the process then starts in that descriptor ([`CheckedCwd`]), not
//! in whatever the path names by the time it forks, and its working
//! directory is checked once more before it `exec`s
//! ([`CwdPolicy::verify_process`]).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a cwd is refused; every variant is the wire's `cwd_not_allowed`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CwdError {
    /// No cwd may be used: Kandan allowed none (or none under `--allow-cwd`).
    #[error(
        "no working directory is allowed (no allowedCwds from Kandan under the local --allow-cwd roots)"
    )]
    NoAllowedRoots,
    /// The cwd is not an absolute path.
    #[error("cwd `{}` is not an absolute path", .cwd.display())]
    Relative { cwd: PathBuf },
    /// The cwd does not exist or cannot be opened.
    #[error("cwd `{}` does not exist or cannot be opened", .cwd.display())]
    Missing {
        cwd: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The cwd exists but is not a directory.
    #[error("cwd `{}` is not a directory", .cwd.display())]
    NotADirectory { cwd: PathBuf },
    /// The cwd resolves outside every allowed root.
    #[error("cwd `{}` (resolved to `{}`) is not under an allowed directory", .cwd.display(), .canonical.display())]
    Outside { cwd: PathBuf, canonical: PathBuf },
    /// Between the check and its `exec`, the process's directory moved
    /// out of every allowed root, or its root was withdrawn.
    #[error("the directory the process was to start in (now `{}`) is no longer under an allowed directory", .now.display())]
    Escaped { now: PathBuf },
    /// The process's working directory cannot be read.
    #[error("cannot read the working directory of process {pid}")]
    Unverifiable {
        pid: u32,
        #[source]
        source: io::Error,
    },
}

/// A cwd that passed the policy: its canonical path when checked, and the
/// directory itself, opened by the check. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct CheckedCwd {
    canonical: PathBuf,
    dir: Arc<OwnedFd>,
}

impl CheckedCwd {
    /// The canonical path, as checked (what Kandan is told).
    pub(crate) fn path(&self) -> &Path {
        &self.canonical
    }

    /// The directory, to start a process in (`SpawnOptions::cwd_dir`).
    pub(crate) fn dir(&self) -> &Arc<OwnedFd> {
        &self.dir
    }
}

/// The local `--allow-cwd` roots and Kandan's latest `allowedCwds`.
#[derive(Clone, Debug, Default)]
pub(crate) struct CwdPolicy {
    /// Canonical `--allow-cwd` roots; `None` when the flag was not given
    /// (Kandan's roots then count as they are).
    local: Option<Vec<PathBuf>>,
    /// Kandan's roots that count, canonical, in Kandan's order.
    allowed: Vec<PathBuf>,
}

impl CwdPolicy {
    /// A policy with the local `--allow-cwd` roots (empty: no flag given).
    /// Roots that do not exist are dropped with a warning: nothing can be
    /// under them.
    pub(crate) fn new(local_roots: &[PathBuf]) -> Self {
        let local = (!local_roots.is_empty()).then(|| {
            local_roots
                .iter()
                .filter_map(|root| match open_dir(root) {
                    Ok((_, path)) => Some(path),
                    Err(err) => {
                        tracing::warn!("--allow-cwd {}: ignored: {err}", root.display());
                        None
                    }
                })
                .collect()
        });
        CwdPolicy {
            local,
            allowed: Vec::new(),
        }
    }

    /// Applies Kandan's `allowedCwds` (`update_runner_config`): the roots
    /// that count from now on, as canonical paths. Relative, missing and
    /// non-directory entries, and those outside the local roots, are
    /// dropped.
    pub(crate) fn set_allowed(&mut self, kandan_roots: &[PathBuf]) -> &[PathBuf] {
        self.allowed = kandan_roots
            .iter()
            .filter_map(|root| {
                let shown = root.display();
                if !root.is_absolute() {
                    tracing::warn!("allowedCwds: `{shown}` is not absolute: ignored");
                    return None;
                }
                let (_, canonical) = open_dir(root)
                    .inspect_err(|err| tracing::warn!("allowedCwds: `{shown}`: ignored: {err}"))
                    .ok()?;
                let under_local = self
                    .local
                    .as_ref()
                    .is_none_or(|local| local.iter().any(|l| canonical.starts_with(l)));
                if !under_local {
                    tracing::info!(
                        "allowedCwds: `{shown}` is outside the --allow-cwd roots: ignored"
                    );
                    return None;
                }
                Some(canonical)
            })
            .collect();
        &self.allowed
    }

    /// The roots that count now.
    pub(crate) fn allowed_roots(&self) -> &[PathBuf] {
        &self.allowed
    }

    /// Whether the canonical path `path` is an allowed root or lies under
    /// one. `starts_with` compares whole components, as bytes: /a/bc is
    /// not under /a/b.
    pub(crate) fn allows(&self, path: &Path) -> bool {
        self.allowed.iter().any(|root| path.starts_with(root))
    }

    /// Checks `cwd` (the first allowed root when it is `None`, opened and
    /// checked afresh: it may have been replaced since) and opens it.
    pub(crate) fn check(&self, cwd: Option<&Path>) -> Result<CheckedCwd, CwdError> {
        let cwd = match cwd {
            Some(cwd) => cwd,
            None => self.allowed.first().ok_or(CwdError::NoAllowedRoots)?,
        };
        if !cwd.is_absolute() {
            return Err(CwdError::Relative { cwd: cwd.into() });
        }
        let (dir, canonical) = open_dir(cwd).map_err(|source| {
            if source.raw_os_error() == Some(libc::ENOTDIR) {
                CwdError::NotADirectory { cwd: cwd.into() }
            } else {
                CwdError::Missing {
                    cwd: cwd.into(),
                    source,
                }
            }
        })?;
        if self.allowed.is_empty() {
            return Err(CwdError::NoAllowedRoots);
        }
        if self.allows(&canonical) {
            Ok(CheckedCwd {
                canonical,
                dir: Arc::new(dir),
            })
        } else {
            Err(CwdError::Outside {
                cwd: cwd.into(),
                canonical,
            })
        }
    }

    /// The last check before a held process `exec`s: its working directory
    /// (where the checked descriptor put it) is still under a root allowed
    /// now. It fails when the directory was moved out of its root, or the
    /// root withdrawn, since the check.
    pub(crate) fn verify_process(&self, pid: u32) -> Result<(), CwdError> {
        let now = process_cwd(pid).map_err(|source| CwdError::Unverifiable { pid, source })?;
        if self.allows(&now) {
            Ok(())
        } else {
            Err(CwdError::Escaped { now })
        }
    }
}

/// Opens the directory `path` names (symlinks followed) without reading
/// it, and returns it with the canonical path of what was opened.
fn open_dir(path: &Path) -> io::Result<(OwnedFd, PathBuf)> {
    // O_PATH: no read permission needed, enough for fchdir.
    #[cfg(target_os = "linux")]
    const FLAGS: libc::c_int = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    #[cfg(not(target_os = "linux"))]
    const FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path holds a NUL byte"))?;
    // SAFETY: open reads a NUL-terminated path we own.
    let fd = unsafe { libc::open(c_path.as_ptr(), FLAGS) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open just returned this descriptor; we own it.
    let dir = unsafe { OwnedFd::from_raw_fd(fd) };
    let canonical = fd_path(&dir)?;
    if !canonical.is_absolute() {
        return Err(io::Error::other("the directory has no path"));
    }
    Ok((dir, canonical))
}

/// The path the kernel has for an open descriptor.
#[cfg(target_os = "linux")]
fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(target_os = "macos")]
fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    let mut buf = [0u8; libc::MAXPATHLEN as usize];
    // SAFETY: F_GETPATH writes at most MAXPATHLEN bytes into buf.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPATH, buf.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(path_of_c_bytes(&buf))
}

/// The working directory of process `pid`.
#[cfg(target_os = "linux")]
pub(crate) fn process_cwd(pid: u32) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
}

#[cfg(target_os = "macos")]
pub(crate) fn process_cwd(pid: u32) -> io::Result<PathBuf> {
    let pid = libc::c_int::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: a plain C struct of integers and byte arrays.
    let mut info: libc::proc_vnodepathinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_vnodepathinfo>() as libc::c_int;
    // SAFETY: proc_pidinfo writes at most `size` bytes into `info`.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDVNODEPATHINFO,
            0,
            std::ptr::from_mut(&mut info).cast(),
            size,
        )
    };
    if n != size {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: vip_path is MAXPATHLEN contiguous C chars.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            info.pvi_cdir.vip_path.as_ptr().cast::<u8>(),
            libc::MAXPATHLEN as usize,
        )
    };
    Ok(path_of_c_bytes(bytes))
}

#[cfg(target_os = "macos")]
fn path_of_c_bytes(bytes: &[u8]) -> PathBuf {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    PathBuf::from(std::ffi::OsStr::from_bytes(&bytes[..end]))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    struct Tree {
        dir: PathBuf,
    }

    impl Tree {
        /// /tmp/kandan-workdir-N/{allowed/{sub,file},outside}, canonical.
        fn new(name: &str) -> Tree {
            let dir =
                std::env::temp_dir().join(format!("kandan-workdir-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("allowed/sub")).unwrap();
            std::fs::create_dir_all(dir.join("outside")).unwrap();
            std::fs::write(dir.join("allowed/file"), "x").unwrap();
            Tree {
                dir: dir.canonicalize().unwrap(),
            }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.join(rel)
        }

        fn check(&self, policy: &CwdPolicy, rel: &str) -> Result<PathBuf, CwdError> {
            policy
                .check(Some(&self.path(rel)))
                .map(|cwd| cwd.path().to_path_buf())
        }

        fn policy(&self) -> CwdPolicy {
            let mut policy = CwdPolicy::new(&[]);
            policy.set_allowed(&[self.path("allowed")]);
            policy
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn allows_the_root_and_what_is_under_it() {
        let tree = Tree::new("under");
        let policy = tree.policy();
        assert_eq!(
            tree.check(&policy, "allowed").unwrap(),
            tree.path("allowed")
        );
        assert_eq!(
            tree.check(&policy, "allowed/sub").unwrap(),
            tree.path("allowed/sub")
        );
        // `..` that stays inside is fine, and comes back canonical.
        assert_eq!(
            tree.check(&policy, "allowed/sub/..").unwrap(),
            tree.path("allowed")
        );
    }

    #[test]
    fn missing_cwd_means_the_first_root_checked_afresh() {
        let tree = Tree::new("first");
        let policy = tree.policy();
        assert_eq!(policy.check(None).unwrap().path(), tree.path("allowed"));
        assert!(matches!(
            CwdPolicy::new(&[]).check(None),
            Err(CwdError::NoAllowedRoots)
        ));
        // The root is renamed and its name made a symlink to elsewhere:
        // the root as stored no longer names an allowed directory.
        std::fs::rename(tree.path("allowed"), tree.path("allowed.old")).unwrap();
        std::os::unix::fs::symlink(tree.path("outside"), tree.path("allowed")).unwrap();
        let err = policy.check(None).unwrap_err();
        assert!(matches!(err, CwdError::Outside { .. }), "{err}");
    }

    #[test]
    fn refuses_outside_dotdot_and_symlink_escapes() {
        let tree = Tree::new("escape");
        let policy = tree.policy();
        let err = tree.check(&policy, "outside").unwrap_err();
        assert!(matches!(err, CwdError::Outside { .. }), "{err}");
        let err = tree.check(&policy, "allowed/../outside").unwrap_err();
        assert!(matches!(err, CwdError::Outside { .. }), "{err}");
        std::os::unix::fs::symlink(tree.path("outside"), tree.path("allowed/link")).unwrap();
        let err = tree.check(&policy, "allowed/link").unwrap_err();
        assert!(
            err.to_string().contains("outside"),
            "names the resolved path: {err}"
        );
        // A sibling whose name starts with the root's is not under it.
        std::fs::create_dir(tree.path("allowed2")).unwrap();
        assert!(tree.check(&policy, "allowed2").is_err());
    }

    #[test]
    fn refuses_relative_missing_and_files() {
        let tree = Tree::new("kinds");
        let policy = tree.policy();
        for relative in ["allowed", "./allowed", ""] {
            let err = policy.check(Some(Path::new(relative))).unwrap_err();
            assert!(matches!(err, CwdError::Relative { .. }), "{err}");
        }
        assert!(matches!(
            tree.check(&policy, "allowed/nope"),
            Err(CwdError::Missing { .. })
        ));
        let err = tree.check(&policy, "allowed/file").unwrap_err();
        assert!(matches!(err, CwdError::NotADirectory { .. }), "{err}");
        assert!(err.to_string().contains("not a directory"));
    }

    #[test]
    fn local_roots_narrow_kandans() {
        let tree = Tree::new("narrow");
        let mut policy = CwdPolicy::new(&[tree.path("allowed")]);
        let kept = policy
            .set_allowed(&[
                tree.path("outside"),
                tree.path("allowed/sub"),
                "relative".into(),
                tree.path("missing"),
            ])
            .to_vec();
        assert_eq!(kept, vec![tree.path("allowed/sub")]);
        assert!(tree.check(&policy, "outside").is_err());
        // Under the local root but not under Kandan's: refused.
        assert!(tree.check(&policy, "allowed").is_err());
        assert!(tree.check(&policy, "allowed/sub").is_ok());
        // Kandan's root through a symlink into the local root counts.
        std::os::unix::fs::symlink(tree.path("allowed/sub"), tree.path("outside/in")).unwrap();
        assert_eq!(policy.set_allowed(&[tree.path("outside/in")]).len(), 1);
        assert!(tree.check(&policy, "allowed/sub").is_ok());
    }

    /// A root whose name is not UTF-8 is compared as bytes: what a lossy
    /// conversion would make of it is another directory, and outside.
    #[test]
    fn names_that_are_not_utf8_compare_as_bytes() {
        let tree = Tree::new("bytes");
        let raw = tree.dir.join(OsStr::from_bytes(b"r\xffoot"));
        let lossy = PathBuf::from(raw.to_string_lossy().into_owned());
        assert_ne!(raw, lossy);
        std::fs::create_dir_all(raw.join("sub")).unwrap();
        std::fs::create_dir(&lossy).unwrap();
        let mut policy = CwdPolicy::new(&[]);
        let kept = policy.set_allowed(std::slice::from_ref(&raw));
        assert_eq!(kept, std::slice::from_ref(&raw));
        assert_eq!(
            policy.check(Some(&raw.join("sub"))).unwrap().path(),
            raw.join("sub")
        );
        assert!(policy.allows(&raw.join("sub")));
        let err = policy.check(Some(&lossy)).unwrap_err();
        assert!(matches!(err, CwdError::Outside { .. }), "{err}");
    }

    /// The descriptor is the directory that was checked, whatever its path
    /// names later; and a process in it that moved out is caught.
    #[test]
    fn the_checked_directory_is_held_and_a_move_out_is_seen() {
        let tree = Tree::new("held");
        let policy = tree.policy();
        let checked = policy.check(Some(&tree.path("allowed/sub"))).unwrap();
        let inode = std::fs::metadata(tree.path("allowed/sub")).unwrap().ino();
        // The attacker swaps the directory for a symlink to outside.
        std::fs::rename(tree.path("allowed/sub"), tree.path("allowed/sub.old")).unwrap();
        std::os::unix::fs::symlink(tree.path("outside"), tree.path("allowed/sub")).unwrap();
        // SAFETY: fstat into a zeroed struct, on a descriptor we hold.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::fstat(checked.dir().as_raw_fd(), &mut stat) },
            0
        );
        assert_eq!(
            stat.st_ino, inode,
            "the descriptor still is the checked one"
        );

        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(tree.path("allowed/sub.old"))
            .spawn()
            .unwrap();
        let pid = child.id();
        policy.verify_process(pid).unwrap();
        std::fs::rename(tree.path("allowed/sub.old"), tree.path("outside/moved")).unwrap();
        let err = policy.verify_process(pid).unwrap_err();
        assert!(matches!(err, CwdError::Escaped { .. }), "{err}");
        // A withdrawn root fails the same way.
        std::fs::rename(tree.path("outside/moved"), tree.path("allowed/back")).unwrap();
        policy.verify_process(pid).unwrap();
        let mut withdrawn = policy.clone();
        withdrawn.set_allowed(&[tree.path("outside")]);
        assert!(withdrawn.verify_process(pid).is_err());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
