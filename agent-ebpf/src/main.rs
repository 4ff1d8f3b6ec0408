//! Sonde's eBPF programs (aya-ebpf). Every record goes to the `EVENTS` ring buffer (layouts in
//! `agent-common`). Userspace loads one capture mode for the socket identity (fentry, kprobe or
//! tracepoint: whichever the kernel allows first) and the rest in every mode.
//!
//! - [`data`]: payload of read/write-family syscalls on IPv4/IPv6 TCP sockets (and the
//!   `tracepoint` mode's socket hooks).
//! - [`socket`]: the same payloads captured whole at the `tracepoint` mode's socket hooks, with no
//!   syscall tracepoint (where the task's registers can be read).
//! - [`tcp`]: the `fentry` and `kprobe` modes' socket hooks on the kernel's TCP functions.
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
mod socket;
mod tcp;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
