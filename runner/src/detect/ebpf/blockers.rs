//! What keeps eBPF tracing from running here, found before loading anything
//! so the message names the one real cause and its fix: a user namespace,
//! kernel lockdown, missing capabilities (CAP_BPF, CAP_PERFMON, and
//! CAP_DAC_READ_SEARCH for the root-only tracefs), tracefs not mounted.
//! Capabilities are read from CapEff, never inferred from the uid: root
//! with capabilities dropped lacks them, a service user granted them has
//! them.

use std::io;
use std::path::Path;

use super::tracefs::TRACEFS;

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What a non-root install needs, as `setcap` and systemd spell them.
pub(crate) const NON_ROOT_CAPS: &str = "CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH";

/// The one thing in the way.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Blocker {
    /// Capabilities inside a user namespace do not reach bpf().
    #[error(
        "running in a user namespace (uid_map {map}): the kernel grants bpf() and tracing only to capabilities of the initial namespace"
    )]
    UserNamespace { map: String },
    /// Lockdown in confidentiality mode forbids reading kernel memory.
    #[error("kernel lockdown is in confidentiality mode, which forbids eBPF tracing")]
    Lockdown,
    /// Effective capabilities lack these (in `NON_ROOT_CAPS` order).
    #[error("{} missing from the effective capabilities (uid {uid})", .missing.join(" and "))]
    Capabilities {
        missing: Vec<&'static str>,
        uid: u32,
        /// `kernel.unprivileged_bpf_disabled`, when readable.
        unprivileged_bpf_disabled: Option<u8>,
    },
    /// Nothing is mounted at /sys/kernel/tracing, and the runner may not mount it.
    #[error("tracefs is not mounted at {TRACEFS}")]
    TracefsNotMounted,
    /// Mounted, but the runner may not read it for another reason.
    #[error("cannot read {TRACEFS}: {0}")]
    TracefsUnreadable(String),
    /// /proc/self/status has no readable CapEff.
    #[error("cannot read CapEff from /proc/self/status")]
    Unreadable,
}

impl Blocker {
    /// What to do about it.
    pub(crate) fn fix(&self) -> String {
        match self {
            Blocker::UserNamespace { .. } => "run the runner outside the user namespace (on the host, or a container without userns remapping), or use --backend procfs".to_owned(),
            Blocker::Lockdown => "boot without lockdown=confidentiality (integrity mode allows tracing), or use --backend procfs".to_owned(),
            Blocker::Capabilities { missing, uid, unprivileged_bpf_disabled } => {
                if *uid == 0 {
                    return format!(
                        "root needs them too: do not drop {} (capsh --drop, a container's cap_drop, systemd CapabilityBoundingSet)",
                        missing.join(", ")
                    );
                }
                // setcap replaces the whole set: always the full one.
                let mut fix = format!(
                    "grant a non-root runner exactly {NON_ROOT_CAPS}: `sudo kandan-runner service install` does, or `sudo setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep $(command -v kandan-runner)`"
                );
                if missing.contains(&"CAP_BPF") && unprivileged_bpf_disabled.is_some_and(|v| v != 0) {
                    fix.push_str(" (kernel.unprivileged_bpf_disabled is set, so bpf() is refused to any user without CAP_BPF)");
                }
                fix
            }
            Blocker::TracefsNotMounted => format!(
                "mount it: `sudo mount -t tracefs nodev {TRACEFS}` (systemd does at boot: sys-kernel-tracing.mount)"
            ),
            Blocker::TracefsUnreadable(_) => format!("check the mount at {TRACEFS} (findmnt {TRACEFS})"),
            Blocker::Unreadable => "check that /proc is mounted".to_owned(),
        }
    }
}

/// What the checks read, gathered so the decision is testable.
#[derive(Debug)]
pub(crate) struct Facts {
    /// `/proc/self/status`.
    pub(crate) status: String,
    /// `/proc/self/uid_map`, if readable.
    pub(crate) uid_map: Option<String>,
    /// `/sys/kernel/security/lockdown`, if the kernel has it.
    pub(crate) lockdown: Option<String>,
    /// `/proc/sys/kernel/unprivileged_bpf_disabled`.
    pub(crate) unprivileged_bpf_disabled: Option<u8>,
    /// Reading `TRACEFS/events`: `Ok` when it can be searched.
    pub(crate) tracefs: Result<(), io::ErrorKind>,
}

impl Facts {
    /// Reads them from this process and kernel.
    pub(crate) fn here() -> Facts {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        Facts {
            status: read("/proc/self/status").unwrap_or_default(),
            uid_map: read("/proc/self/uid_map"),
            lockdown: read("/sys/kernel/security/lockdown"),
            unprivileged_bpf_disabled: read("/proc/sys/kernel/unprivileged_bpf_disabled")
                .and_then(|text| text.trim().parse().ok()),
            tracefs: std::fs::read_dir(Path::new(TRACEFS).join("events"))
                .map(drop)
                .map_err(|err| err.kind()),
        }
    }
}

/// The first thing in the way, if any.
pub(crate) fn check() -> Result<(), Blocker> {
    decide(&Facts::here())
}

/// [`check`] over given facts.
pub(crate) fn decide(facts: &Facts) -> Result<(), Blocker> {
    if let Some(map) = &facts.uid_map
        && !is_identity(map)
    {
        return Err(Blocker::UserNamespace {
            map: map.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }
    if facts
        .lockdown
        .as_deref()
        .is_some_and(|text| text.contains("[confidentiality]"))
    {
        return Err(Blocker::Lockdown);
    }
    let eff = field(&facts.status, "CapEff:")
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or(Blocker::Unreadable)?;
    let uid = field(&facts.status, "Uid:")
        .and_then(|uids| uids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .unwrap_or(u32::MAX);
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    match facts.tracefs {
        Ok(()) => {}
        // Mounted and root-only (mode 0700): only its owner, or a reader
        // that bypasses permissions, gets in.
        Err(io::ErrorKind::PermissionDenied) => {
            if !has(CAP_DAC_READ_SEARCH) && !has(CAP_DAC_OVERRIDE) {
                missing.push("CAP_DAC_READ_SEARCH");
            } else if missing.is_empty() {
                return Err(Blocker::TracefsUnreadable(
                    "permission denied despite CAP_DAC_READ_SEARCH (an LSM policy?)".to_owned(),
                ));
            }
        }
        // The loader mounts it when it may (CAP_SYS_ADMIN).
        Err(io::ErrorKind::NotFound) if !has(CAP_SYS_ADMIN) && missing.is_empty() => {
            return Err(Blocker::TracefsNotMounted);
        }
        Err(io::ErrorKind::NotFound) => {}
        Err(kind) if missing.is_empty() => {
            return Err(Blocker::TracefsUnreadable(
                io::Error::from(kind).to_string(),
            ));
        }
        Err(_) => {}
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Blocker::Capabilities {
            missing,
            uid,
            unprivileged_bpf_disabled: facts.unprivileged_bpf_disabled,
        })
    }
}

/// `0 0 4294967295`: the initial user namespace.
fn is_identity(uid_map: &str) -> bool {
    let lines: Vec<Vec<&str>> = uid_map
        .lines()
        .map(|line| line.split_whitespace().collect())
        .filter(|fields: &Vec<&str>| !fields.is_empty())
        .collect();
    lines.len() == 1 && lines[0] == ["0", "0", "4294967295"]
}

fn field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT_NS: &str = "         0          0 4294967295\n";

    fn facts(uid: u32, caps: &[u32], tracefs: Result<(), io::ErrorKind>) -> Facts {
        let eff: u64 = caps.iter().map(|cap| 1u64 << cap).sum();
        Facts {
            status: format!("Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nCapEff:\t{eff:016x}\n"),
            uid_map: Some(INIT_NS.to_owned()),
            lockdown: Some("[none] integrity confidentiality\n".to_owned()),
            unprivileged_bpf_disabled: Some(2),
            tracefs,
        }
    }

    const ROOT_ONLY: Result<(), io::ErrorKind> = Err(io::ErrorKind::PermissionDenied);

    #[test]
    fn the_non_root_set_suffices() {
        // CAP_DAC_READ_SEARCH is what makes the read of tracefs succeed.
        let ok = facts(1000, &[CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH], Ok(()));
        assert_eq!(decide(&ok), Ok(()));
        // Refused even so: not a capability matter.
        let odd = facts(
            1000,
            &[CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH],
            ROOT_ONLY,
        );
        assert!(matches!(decide(&odd), Err(Blocker::TracefsUnreadable(_))));
        // Root owns tracefs: no CAP_DAC_READ_SEARCH needed.
        assert_eq!(decide(&facts(0, &[CAP_SYS_ADMIN], Ok(()))), Ok(()));
    }

    #[test]
    fn each_missing_capability_is_named_alone() {
        let all = [CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH];
        for (dropped, name) in all
            .iter()
            .zip(["CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH"])
        {
            let caps: Vec<u32> = all.iter().copied().filter(|cap| cap != dropped).collect();
            let err = decide(&facts(65534, &caps, ROOT_ONLY)).unwrap_err();
            let text = err.to_string();
            assert_eq!(
                text,
                format!("{name} missing from the effective capabilities (uid 65534)")
            );
            assert!(!text.contains("tracefs is not mounted"), "{text}");
            assert!(err.fix().contains("setcap"), "{}", err.fix());
        }
    }

    #[test]
    fn root_with_capabilities_dropped_is_not_told_not_root() {
        let err = decide(&facts(0, &[CAP_DAC_READ_SEARCH], Ok(()))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CAP_BPF and CAP_PERFMON missing from the effective capabilities (uid 0)"
        );
        assert!(
            err.fix().starts_with("root needs them too"),
            "{}",
            err.fix()
        );
        assert!(!err.to_string().contains("not root"));
    }

    #[test]
    fn a_user_namespace_comes_first() {
        let mut f = facts(0, &[CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON], Ok(()));
        f.uid_map = Some("         0       1000          1\n".to_owned());
        let err = decide(&f).unwrap_err();
        assert_eq!(
            err,
            Blocker::UserNamespace {
                map: "0 1000 1".to_owned()
            }
        );
    }

    #[test]
    fn lockdown_confidentiality_blocks_integrity_does_not() {
        let mut f = facts(0, &[CAP_SYS_ADMIN], Ok(()));
        f.lockdown = Some("none integrity [confidentiality]\n".to_owned());
        assert_eq!(decide(&f), Err(Blocker::Lockdown));
        f.lockdown = Some("none [integrity] confidentiality\n".to_owned());
        assert_eq!(decide(&f), Ok(()));
    }

    #[test]
    fn tracefs_not_mounted_is_told_apart_from_not_readable() {
        let f = facts(1000, &[CAP_BPF, CAP_PERFMON], Err(io::ErrorKind::NotFound));
        assert_eq!(decide(&f), Err(Blocker::TracefsNotMounted));
        let f = facts(1000, &[CAP_BPF, CAP_PERFMON], ROOT_ONLY);
        assert!(
            matches!(decide(&f), Err(Blocker::Capabilities { ref missing, .. }) if missing == &["CAP_DAC_READ_SEARCH"])
        );
        // With CAP_SYS_ADMIN the loader mounts it itself.
        let f = facts(0, &[CAP_SYS_ADMIN], Err(io::ErrorKind::NotFound));
        assert_eq!(decide(&f), Ok(()));
    }

    #[test]
    fn garbage_is_unreadable() {
        let mut f = facts(0, &[], Ok(()));
        f.status = "CapEff: zz".to_owned();
        assert_eq!(decide(&f), Err(Blocker::Unreadable));
    }
}
