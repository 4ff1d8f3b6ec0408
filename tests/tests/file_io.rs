//! The application pays only for its TCP sockets: in the `socket` capture mode, reads and writes on
//! files and pipes run no eBPF program at all (the kernel's own per-program `run_cnt`, read from
//! the agent's program fds in `/proc/<pid>/fdinfo` with `kernel.bpf_stats_enabled` on), while HTTP
//! traffic next to them is still traced exactly. In the modes that tie a `sys_enter`/`sys_exit`
//! pair to the socket (`fentry`, `kprobe`, `tracepoint`) every such syscall runs two programs: the
//! test asserts that too, so the counting itself is proven wherever it runs (the VM's modes).

use std::{
    collections::BTreeMap,
    fs,
    process::{Command, Stdio},
};

use agent_tests::{peers::curl, require_root, World};

/// 1-byte `dd` transfers: each byte is one `read` and one `write` syscall.
const BYTES: u32 = 20_000;

/// `kernel.bpf_stats_enabled` on for the guard's life, put back as it was after.
struct BpfStats {
    before: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Self {
        let before = fs::read_to_string(BPF_STATS).expect("read kernel.bpf_stats_enabled");
        fs::write(BPF_STATS, "1").expect("enable kernel.bpf_stats_enabled");
        Self { before }
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, self.before.trim());
    }
}

/// `prog_id` → `run_cnt` of every BPF program fd `pid` holds.
fn run_counts(pid: u32) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let Ok(text) = fs::read_to_string(entry.expect("fdinfo entry").path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(runs)) = (field("prog_id:"), field("run_cnt:")) {
            out.insert(id, runs);
        }
    }
    out
}

fn total_runs(pid: u32) -> u64 {
    run_counts(pid).values().sum()
}

/// Runs `sh -c script`, asserting success.
fn sh(script: &str) {
    let status = Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn sh");
    assert!(status.success(), "`{script}` failed: {status}");
}

#[test]
fn file_and_pipe_io_run_no_program_in_socket_mode() {
    require_root!();
    let mut w = World::python("file-io");
    let log = w.agent.stderr();
    let mode = log
        .split("capture mode: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `capture mode:` line in the agent's log:\n{log}"))
        .to_owned();
    assert!(
        !run_counts(w.agent.pid()).is_empty(),
        "the agent holds no BPF program fd"
    );

    let stats = BpfStats::enable();
    let before = total_runs(w.agent.pid());
    let file = w.dir.path().join("bytes");
    // A file: 20,000 reads of /dev/zero and 20,000 writes to a file; a pipe: as many writes into
    // it and reads out of it (and writes to /dev/null).
    sh(&format!(
        "dd if=/dev/zero of={} bs=1 count={BYTES} && \
         dd if=/dev/zero bs=1 count={BYTES} | dd of=/dev/null bs=1",
        file.display()
    ));
    let runs = total_runs(w.agent.pid()) - before;
    drop(stats);
    let syscalls = u64::from(BYTES) * 6;
    println!("capture mode {mode}: {runs} program runs during {syscalls} file and pipe syscalls");
    if mode == "socket" {
        // Other processes' socket traffic (the agent's exports to the sink) may run a few.
        assert!(
            runs < syscalls / 20,
            "{runs} program runs during {syscalls} file and pipe syscalls in socket mode: \
             something still hooks every read and write"
        );
    } else {
        assert!(
            runs >= 2 * syscalls,
            "{runs} program runs during {syscalls} file and pipe syscalls in {mode} mode, which \
             runs a sys_enter/sys_exit pair for each: run_cnt is not counting"
        );
    }

    // HTTP next to it is traced as ever.
    let paths = ["/status/200", "/status/404"];
    let run = curl(&paths.map(|p| w.server.url(p)), &[]);
    let spans = w.finish(4);
    w.assert_counts(&spans, 2, 2);
    w.assert_curl_to_python(&spans, &run, &paths);
}
