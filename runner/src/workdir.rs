//! Which working directories Kandan may start code in (PROTOCOL.md section 6).
//!
//! Allowed roots are Kandan's `allowedCwds`; when the runner was started with
//! `--allow-cwd` roots, only those of Kandan's roots that lie under a local
//! one count. A cwd is allowed when it is absolute, exists, is a directory,
//! and its canonical path (symlinks and `..` resolved) is an allowed root or
//! lies under one. Everything is compared canonically, so a symlink never
//! lets a cwd out of its root.

use std::io;
use std::path::{Path, PathBuf};

/// Why a cwd is refused; every variant is the wire's `cwd_not_allowed`.
#[derive(Debug, thiserror::Error)]
pub enum CwdError {
    /// No cwd may be used: Kandan allowed none (or none under `--allow-cwd`).
    #[error(
        "no working directory is allowed (no allowedCwds from Kandan under the local --allow-cwd roots)"
    )]
    NoAllowedRoots,
    /// The cwd is not an absolute path.
    #[error("cwd `{cwd}` is not an absolute path")]
    Relative { cwd: String },
    /// The cwd does not exist or cannot be resolved.
    #[error("cwd `{cwd}` does not exist or cannot be resolved")]
    Missing {
        cwd: String,
        #[source]
        source: io::Error,
    },
    /// The cwd exists but is not a directory.
    #[error("cwd `{cwd}` is not a directory")]
    NotADirectory { cwd: String },
    /// The cwd resolves outside every allowed root.
    #[error("cwd `{cwd}` (resolved to `{}`) is not under an allowed directory", .canonical.display())]
    Outside { cwd: String, canonical: PathBuf },
}

impl CwdError {
    /// The `control_error` code for every refusal.
    pub fn code(&self) -> &'static str {
        "cwd_not_allowed"
    }
}

/// The local `--allow-cwd` roots and Kandan's latest `allowedCwds`.
#[derive(Clone, Debug, Default)]
pub struct CwdPolicy {
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
    pub fn new(local_roots: &[PathBuf]) -> Self {
        let local = (!local_roots.is_empty()).then(|| {
            local_roots
                .iter()
                .filter_map(|root| match canonical_dir(root) {
                    Ok(path) => Some(path),
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
    pub fn set_allowed(&mut self, kandan_roots: &[String]) -> &[PathBuf] {
        self.allowed = kandan_roots
            .iter()
            .filter_map(|root| {
                let path = Path::new(root);
                if !path.is_absolute() {
                    tracing::warn!("allowedCwds: `{root}` is not absolute: ignored");
                    return None;
                }
                let canonical = canonical_dir(path)
                    .inspect_err(|err| tracing::warn!("allowedCwds: `{root}`: ignored: {err}"))
                    .ok()?;
                let under_local = self
                    .local
                    .as_ref()
                    .is_none_or(|local| local.iter().any(|l| canonical.starts_with(l)));
                if !under_local {
                    tracing::info!(
                        "allowedCwds: `{root}` is outside the --allow-cwd roots: ignored"
                    );
                    return None;
                }
                Some(canonical)
            })
            .collect();
        &self.allowed
    }

    /// The roots that count now.
    pub fn allowed_roots(&self) -> &[PathBuf] {
        &self.allowed
    }

    /// Checks `cwd` (or picks the first allowed root when it is `None`)
    /// and returns its canonical path, the one to start the process in.
    pub fn resolve(&self, cwd: Option<&str>) -> Result<PathBuf, CwdError> {
        let Some(cwd) = cwd else {
            return self
                .allowed
                .first()
                .cloned()
                .ok_or(CwdError::NoAllowedRoots);
        };
        let path = Path::new(cwd);
        if !path.is_absolute() {
            return Err(CwdError::Relative { cwd: cwd.into() });
        }
        let canonical = path.canonicalize().map_err(|source| CwdError::Missing {
            cwd: cwd.into(),
            source,
        })?;
        if !canonical.is_dir() {
            return Err(CwdError::NotADirectory { cwd: cwd.into() });
        }
        if self.allowed.is_empty() {
            return Err(CwdError::NoAllowedRoots);
        }
        // `starts_with` compares whole components: /a/bc is not under /a/b.
        if self.allowed.iter().any(|root| canonical.starts_with(root)) {
            Ok(canonical)
        } else {
            Err(CwdError::Outside {
                cwd: cwd.into(),
                canonical,
            })
        }
    }
}

fn canonical_dir(path: &Path) -> io::Result<PathBuf> {
    let canonical = path.canonicalize()?;
    if canonical.is_dir() {
        Ok(canonical)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        ))
    }
}

#[cfg(test)]
mod tests {
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

        fn path(&self, rel: &str) -> String {
            self.dir.join(rel).to_string_lossy().into_owned()
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
            policy.resolve(Some(&tree.path("allowed"))).unwrap(),
            tree.dir.join("allowed")
        );
        assert_eq!(
            policy.resolve(Some(&tree.path("allowed/sub"))).unwrap(),
            tree.dir.join("allowed/sub")
        );
        // `..` that stays inside is fine, and comes back canonical.
        assert_eq!(
            policy.resolve(Some(&tree.path("allowed/sub/.."))).unwrap(),
            tree.dir.join("allowed")
        );
    }

    #[test]
    fn missing_cwd_means_the_first_root() {
        let tree = Tree::new("first");
        assert_eq!(
            tree.policy().resolve(None).unwrap(),
            tree.dir.join("allowed")
        );
        assert!(matches!(
            CwdPolicy::new(&[]).resolve(None),
            Err(CwdError::NoAllowedRoots)
        ));
    }

    #[test]
    fn refuses_outside_dotdot_and_symlink_escapes() {
        let tree = Tree::new("escape");
        let policy = tree.policy();
        let err = policy.resolve(Some(&tree.path("outside"))).unwrap_err();
        assert!(matches!(err, CwdError::Outside { .. }), "{err}");
        assert_eq!(err.code(), "cwd_not_allowed");
        let err = policy
            .resolve(Some(&tree.path("allowed/../outside")))
            .unwrap_err();
        assert!(matches!(err, CwdError::Outside { .. }), "{err}");
        std::os::unix::fs::symlink(tree.dir.join("outside"), tree.dir.join("allowed/link"))
            .unwrap();
        let err = policy
            .resolve(Some(&tree.path("allowed/link")))
            .unwrap_err();
        assert!(
            err.to_string().contains("outside"),
            "names the resolved path: {err}"
        );
        // A sibling whose name starts with the root's is not under it.
        std::fs::create_dir(tree.dir.join("allowed2")).unwrap();
        assert!(policy.resolve(Some(&tree.path("allowed2"))).is_err());
    }

    #[test]
    fn refuses_relative_missing_and_files() {
        let tree = Tree::new("kinds");
        let policy = tree.policy();
        assert!(matches!(
            policy.resolve(Some("allowed")),
            Err(CwdError::Relative { .. })
        ));
        assert!(matches!(
            policy.resolve(Some(&tree.path("allowed/nope"))),
            Err(CwdError::Missing { .. })
        ));
        let err = policy
            .resolve(Some(&tree.path("allowed/file")))
            .unwrap_err();
        assert!(matches!(err, CwdError::NotADirectory { .. }), "{err}");
        assert!(err.to_string().contains("not a directory"));
    }

    #[test]
    fn local_roots_narrow_kandans() {
        let tree = Tree::new("narrow");
        let mut policy = CwdPolicy::new(&[tree.dir.join("allowed")]);
        let kept = policy
            .set_allowed(&[
                tree.path("outside"),
                tree.path("allowed/sub"),
                "relative".into(),
                tree.path("missing"),
            ])
            .to_vec();
        assert_eq!(kept, vec![tree.dir.join("allowed/sub")]);
        assert!(policy.resolve(Some(&tree.path("outside"))).is_err());
        // Under the local root but not under Kandan's: refused.
        assert!(policy.resolve(Some(&tree.path("allowed"))).is_err());
        assert!(policy.resolve(Some(&tree.path("allowed/sub"))).is_ok());
        // Kandan's root through a symlink into the local root counts.
        std::os::unix::fs::symlink(tree.dir.join("allowed/sub"), tree.dir.join("outside/in"))
            .unwrap();
        assert_eq!(policy.set_allowed(&[tree.path("outside/in")]).len(), 1);
        assert!(policy.resolve(Some(&tree.path("allowed/sub"))).is_ok());
    }
}
