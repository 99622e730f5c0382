//! What `--version` prints: the version, then the git commit, target triple
//! and whether the eBPF object is embedded (all from `runner/build.rs`), so a
//! bug report says exactly which build it is about. `-V` prints the same
//! text: two texts for one question only confused bug reports.

/// The text after "kandan-runner " in `--version`.
pub(crate) const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("KANDAN_GIT_COMMIT"),
    "\ntarget: ",
    env!("KANDAN_TARGET"),
    "\nebpf: ",
    env!("KANDAN_EBPF_EMBEDDED"),
);
