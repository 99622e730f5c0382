//! The detection benchmark (`cargo xtask bench detect`): the eBPF and procfs
//! backends of `kandan-runner watch` against a baseline that polls `ps` and
//! `lsof` the way the TypeScript runner did, measured side by side in one
//! run. The binary is `src/bin/bench-detect.rs`; BENCHMARKS.md says what
//! each number means.
//!
//! Every process spawned here is held by a guard that kills and reaps it on
//! drop, and dies with the bench (`PR_SET_PDEATHSIG`) if the bench is killed.
//!
//! `stats` and `procstat` serve every benchmark (`bench_forward` too);
//! `phoenix` joins the bare stand-ins for the runner.

pub mod baseline;
pub mod clock;
pub mod contender;
pub mod cpu;
pub mod filter;
pub mod guard;
pub mod helper;
pub mod instructions;
pub mod latency;
pub mod phoenix;
pub mod procstat;
pub mod report;
pub mod scan;
pub mod sleepers;
pub mod stats;
