//! The capabilities eBPF tracing needs: CAP_BPF and CAP_PERFMON, or
//! CAP_SYS_ADMIN (which covers both on every kernel).

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What is missing, in words for the user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MissingCaps {
    #[error("not root and {0} missing (needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)")]
    Missing(String),
    #[error("cannot read CapEff from /proc/self/status")]
    Unreadable,
}

/// Checks the effective capabilities of this process.
pub fn check() -> Result<(), MissingCaps> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|_| MissingCaps::Unreadable)?;
    check_status(&status)
}

fn check_status(status: &str) -> Result<(), MissingCaps> {
    let eff = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or(MissingCaps::Unreadable)?;
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .chain(std::iter::once("CAP_SYS_ADMIN"))
        .collect();
    Err(MissingCaps::Missing(missing.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_everything() {
        assert_eq!(
            check_status("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Ok(())
        );
    }

    #[test]
    fn bpf_and_perfmon_suffice() {
        let eff = (1u64 << CAP_BPF) | (1u64 << CAP_PERFMON);
        assert_eq!(check_status(&format!("CapEff:\t{eff:016x}\n")), Ok(()));
    }

    #[test]
    fn names_what_is_missing() {
        let eff = 1u64 << CAP_PERFMON;
        let err = check_status(&format!("CapEff:\t{eff:016x}\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not root and CAP_BPF, CAP_SYS_ADMIN missing (needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)"
        );
    }

    #[test]
    fn garbage_is_unreadable() {
        assert_eq!(check_status("CapEff: zz"), Err(MissingCaps::Unreadable));
        assert_eq!(check_status(""), Err(MissingCaps::Unreadable));
    }
}
