//! One clock for every process of the bench: CLOCK_MONOTONIC in nanoseconds,
//! comparable between the listener helper and the harness.

/// Nanoseconds of CLOCK_MONOTONIC.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A small xorshift generator for jitter: no need for a crate.
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded() -> Self {
        Jitter(monotonic_ns() | 1)
    }

    /// Uniform-ish in `0..max_ns` (0 when `max_ns` is 0).
    pub fn below(&mut self, max_ns: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if max_ns == 0 { 0 } else { self.0 % max_ns }
    }
}
