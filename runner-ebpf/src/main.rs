//! Kernel side of the eBPF listener detector, built for `bpfel-unknown-none`
//! by `runner/build.rs`. The probes only exist for the BPF target, so the
//! crate still builds on the host (where `runner` names it as a
//! build-dependency to be rebuilt when it changes).
#![no_std]
#![no_main]
// The BPF atomic add (`probes::bump`).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod probes;

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
