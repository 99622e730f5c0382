//! glibc's malloc settings for a daemon that holds megabyte events briefly
//! (response bodies, Codex notifications) and must stay small in between.

/// Makes blocks of 4 MiB or more go back to the system when freed. glibc
/// otherwise raises its mmap threshold to the largest block freed (up to
/// 32 MiB), after which multi-MiB bodies live in arenas it rarely trims:
/// measured after 64 responses of 15 MiB, 115 MiB resident without this and
/// 42 MiB with it. Not lower: at 1 MiB every 1 MiB response paid for a fresh
/// mapping's page faults (1.3 s of CPU per 1,000 instead of 1.1 s). Setting
/// it also stops glibc from adjusting its trim threshold, which then stays
/// at 128 KiB: every 1 MiB frame freed at the top of the heap was given back
/// and faulted in again for the next (15% of the runner's CPU on 1 MiB
/// responses); up to 8 MiB free at the top now stays for the next body.
///
/// Two arenas at most: the blocking pool's threads (file reads of a Codex
/// backlog, for one) would each get an arena of their own, whose freed
/// megabytes the main thread cannot reuse. 400 Codex notifications of
/// 1 MiB delivered after a stall (`connect_codex_memory`) peaked at
/// 107-110 MB resident with glibc's default, 104-107 MB with two arenas.
/// Call once, before any thread starts.
pub(crate) fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc setting; called before threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
