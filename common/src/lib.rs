//! `#[repr(C)]` types shared by the eBPF program (`runner-ebpf`) and the
//! userspace loader (`runner::detect::ebpf`). No `bool`, no implicit padding.
#![no_std]
