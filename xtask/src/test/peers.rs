//! Installs the real peers the end-to-end tests drive, each only when it is missing.
//!
//! apt: nginx (server), curl (client), bpftool (inspecting loaded programs when a test fails),
//! openssl (self-signed certificates for the TLS tests), prometheus (a real scraper of `/metrics`,
//! with promtool to lint the exposition), nghttp2-client (`nghttp` and `h2load`, HTTP/2 clients),
//! golang-go + golang-google-grpc-dev (go1.19 and grpc-go 1.33 sources, GOPATH mode: the grpc-go
//! server tests/peers/grpc_go_peer.go, built by the tests).
//! pip: opentelemetry-proto + grpcio (the independent OTLP sink, tests/peers/otlp_sink.py; grpcio is
//! also the gRPC server and client of tests/peers/grpc_peer.py) and rotel (a real OTLP collector
//! used as a gateway). rotel only ships pre-releases, so it alone gets `--pre`: with `--pre` the
//! others would pull protobuf release candidates.

use std::process::Command;

use anyhow::Result;

use crate::{apt, exec};

const APT_PACKAGES: [&str; 8] = [
    "nginx",
    "curl",
    "bpftool",
    "openssl",
    "prometheus",
    "nghttp2-client",
    "golang-go",
    "golang-google-grpc-dev",
];

/// (distribution name, pinned version or `None` for any, pip requirement, needs `--pre`).
const PIP_PACKAGES: [(&str, Option<&str>, &str, bool); 4] = [
    (
        "opentelemetry-proto",
        Some("1.45.2"),
        "opentelemetry-proto==1.45.2",
        false,
    ),
    ("grpcio", None, "grpcio", false),
    ("rotel", Some("0.0.1a15"), "rotel==0.0.1a15", true),
    ("hypercorn", None, "hypercorn", false),
];

pub(super) fn install() -> Result<()> {
    let mut installed = Vec::new();
    install_apt(&mut installed)?;
    install_pip(&mut installed)?;
    if installed.is_empty() {
        println!("xtask: test peers already installed; nothing to do");
    } else {
        println!("xtask: installed test peers: {}", installed.join(", "));
    }
    Ok(())
}

fn install_apt(installed: &mut Vec<String>) -> Result<()> {
    let missing = apt::install_missing(&APT_PACKAGES)?;
    installed.extend(missing.iter().map(|p| format!("apt {p}")));
    Ok(())
}

fn install_pip(installed: &mut Vec<String>) -> Result<()> {
    let mut plain = Vec::new();
    let mut pre = Vec::new();
    for (dist, version, requirement, needs_pre) in PIP_PACKAGES {
        if pip_version(dist).is_some_and(|have| version.is_none_or(|want| have == want)) {
            continue;
        }
        if needs_pre {
            pre.push(requirement);
        } else {
            plain.push(requirement);
        }
    }
    if !plain.is_empty() {
        exec::run(
            Command::new("python3")
                .args(["-m", "pip", "install"])
                .args(&plain),
        )?;
    }
    if !pre.is_empty() {
        exec::run(
            Command::new("python3")
                .args(["-m", "pip", "install", "--pre"])
                .args(&pre),
        )?;
    }
    installed.extend(plain.iter().chain(&pre).map(|r| format!("pip {r}")));
    Ok(())
}

/// The installed version of a Python distribution, or `None` when it is not installed.
fn pip_version(dist: &str) -> Option<String> {
    let script = format!("import importlib.metadata as m; print(m.version({dist:?}))");
    exec::output(Command::new("python3").args(["-c", &script]))
        .ok()
        .map(|v| v.trim().to_owned())
}
