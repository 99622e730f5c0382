//! The calling thread's capability sets (Linux `capget`/`capset`, version
//! 3: two 32-bit words per set). Capabilities are per thread, so changing
//! them here touches no other thread of the runner.

use std::io;

/// `_LINUX_CAPABILITY_VERSION_3`.
const CAPABILITY_V3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// One word of the three sets, as the kernel lays it out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CapData {
    pub(crate) effective: u32,
    pub(crate) permitted: u32,
    pub(crate) inheritable: u32,
}

/// The calling thread's sets. Async-signal-safe (a plain syscall).
pub(crate) fn get() -> io::Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: CAPABILITY_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two structs of the layout version 3 expects.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

/// Sets the calling thread's sets. Async-signal-safe (a plain syscall).
pub(crate) fn set(data: &[CapData; 2]) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_V3,
        pid: 0,
    };
    // SAFETY: capset reads two structs of the layout version 3 expects.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` with the calling thread's effective set empty, then restores
/// it (raising back within the permitted set needs no privilege). A run as
/// root keeps its set: root may read what it names anyway, and an empty
/// effective set would stop it reading other users' files it owns the
/// right to read. Fails without running `f` when the set cannot be lowered:
/// a file must never be opened with capabilities by mistake.
pub(crate) fn without_effective<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return f();
    }
    let saved = get()?;
    if saved.iter().all(|word| word.effective == 0) {
        return f();
    }
    let mut lowered = saved;
    for word in &mut lowered {
        word.effective = 0;
    }
    set(&lowered)?;
    let result = f();
    if let Err(err) = set(&saved) {
        tracing::warn!("cannot restore the runner's capabilities: {err}");
    }
    result
}
