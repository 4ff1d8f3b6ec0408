//! Sonde's eBPF programs (aya-ebpf). Tracepoints and uprobes only, so they load on kernels without
//! kprobes or BPF trampolines; every record goes to the `EVENTS` ring buffer (layouts in
//! `agent-common`).
//!
//! - [`data`]: payload of read/write-family syscalls on IPv4/IPv6 TCP sockets.
//! - [`conn`]: TCP connection lifecycle from `sock:inet_sock_set_state`.
//! - [`tls`]: TLS plaintext from uprobes on OpenSSL/BoringSSL.
//! - [`exec`]: process exec notifications (new images may map TLS libraries).
#![no_std]
#![no_main]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![allow(
    unreachable_pub,
    reason = "aya program macros need `pub fn` for their exported symbols"
)]

mod conn;
mod data;
mod emit;
mod exec;
mod helpers;
mod maps;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
