//! Builds `agent-ebpf` for the BPF target with aya-build (pinned nightly + bpf-linker, both installed
//! by `cargo xtask`). With `AYA_BUILD_SKIP=1` (root-less unit tests) an empty object is written, and
//! loading reports that the binary was built without its eBPF programs.
use std::{env, fs, path::PathBuf};

/// The eBPF toolchain `cargo xtask` installs; keep in sync with `xtask/src/toolchain.rs`.
const EBPF_TOOLCHAIN: &str = "nightly-2026-10-15";

fn main() -> anyhow::Result<()> {
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
        let out = PathBuf::from(env::var("OUT_DIR")?).join("agent-ebpf");
        fs::write(out, [])?;
        return Ok(());
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf");
    // aya-build watches the eBPF crate's own sources; the limits and record layouts it compiles in
    // live in agent-common, so a change there must rebuild the object too.
    println!(
        "cargo::rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-common/src")
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
