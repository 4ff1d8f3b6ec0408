//! Sonde's eBPF programs (aya-ebpf). Tracepoints only, so they load on kernels without kprobes or
//! BPF trampolines; every record goes to the `EVENTS` ring buffer (layouts in `agent-common`).
//!
//! - [`data`]: payload of read/write-family syscalls on IPv4/IPv6 TCP sockets.
//! - [`conn`]: TCP connection lifecycle from `sock:inet_sock_set_state`.
#![no_std]
#![no_main]
#![allow(
    unreachable_pub,
    reason = "aya program macros need `pub fn` for their exported symbols"
)]

mod conn;
mod data;
mod helpers;
mod maps;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
