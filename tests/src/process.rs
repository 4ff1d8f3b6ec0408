//! Child processes for the tests: stdout and stderr go to files (readable while the child runs), and
//! the guard kills the child by PID when dropped, printing its logs if the test is panicking.

use std::{
    fs::{self, File},
    io,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

/// How much of each log a failing test prints.
const LOG_TAIL_BYTES: usize = 8 * 1024;

/// A running child process, killed by PID on drop. When the test is panicking, the drop also prints
/// the tails of its stdout and stderr, so panic messages need not include them.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout/stderr in `<dir>/<name>.{stdout,stderr}`.
    pub fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Self {
        Self::spawn_with_stdin(name, dir, cmd, Stdio::null())
    }

    /// Like [`Proc::spawn`], with stdin a pipe the caller writes through [`Proc::stdin`].
    pub fn spawn_piped(name: &str, dir: &Path, cmd: &mut Command) -> Self {
        Self::spawn_with_stdin(name, dir, cmd, Stdio::piped())
    }

    fn spawn_with_stdin(name: &str, dir: &Path, cmd: &mut Command, stdin: Stdio) -> Self {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let create =
            |p: &Path| File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        let child = cmd
            .stdin(stdin)
            .stdout(create(&stdout))
            .stderr(create(&stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The write end of the child's stdin (from [`Proc::spawn_piped`]); `None` once closed.
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.child.stdin.as_mut()
    }

    /// Closes the child's stdin (end of input).
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The exit status if the child has exited (reaping it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("wait for {}: {e}", self.name));
        }
        self.status
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        crate::poll(timeout, || self.try_status())
    }

    /// Sends SIGTERM and waits up to `timeout`; panics (after SIGKILL) if the child did not exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.try_status() {
            return status;
        }
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_timeout(timeout) {
            return status;
        }
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        panic!(
            "{} (pid {}) did not exit within {timeout:?} of SIGTERM",
            self.name,
            self.pid()
        );
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet, so the pid
        // still names it.
        unsafe { libc::kill(pid, signal) };
    }

    /// The tails of stdout and stderr, labelled, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {name} stdout ({out}) ---\n{}\n--- {name} stderr ({err}) ---\n{}",
            tail(&self.stdout()),
            tail(&self.stderr()),
            name = self.name,
            out = self.stdout.display(),
            err = self.stderr.display(),
        )
    }

    /// Waits until `127.0.0.1:port` accepts a connection; panics if the child exits or `timeout` passes.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) {
        self.wait_for_addr(SocketAddr::from(([127, 0, 0, 1], port)), timeout);
    }

    /// Waits until `addr` accepts a connection; panics if the child exits or `timeout` passes.
    pub fn wait_for_addr(&mut self, addr: SocketAddr, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect(addr).is_ok() {
                return;
            }
            if let Some(status) = self.try_status() {
                panic!("{} exited ({status}) before listening on {addr}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {addr} within {timeout:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

fn tail(s: &str) -> &str {
    if s.len() <= LOG_TAIL_BYTES {
        return s;
    }
    let mut start = s.len() - LOG_TAIL_BYTES;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Runs `cmd` to completion (stdin closed, output captured); panics with its output unless it
/// exits 0. Returns the pid it ran as, its stdout and its wall time.
pub fn run_to_completion(
    name: &str,
    cmd: &mut Command,
    timeout: Duration,
) -> (u32, String, Duration) {
    let run = run_captured(name, cmd, timeout);
    assert!(
        run.status.success(),
        "{name} ({cmd:?}) failed ({})\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    (run.pid, run.stdout, run.wall)
}

/// A finished command: how it exited and what it printed.
#[derive(Debug, Clone)]
pub struct Captured {
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub wall: Duration,
}

/// Runs `cmd` to completion (stdin closed, output captured) whatever its exit status, e.g. a client
/// that must fail; panics only if it does not finish within `timeout`.
pub fn run_captured(name: &str, cmd: &mut Command, timeout: Duration) -> Captured {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
    let pid = child.id();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let out = thread::spawn(move || read_all(stdout));
    let err = thread::spawn(move || read_all(stderr));
    let status = crate::poll(timeout, || child.try_wait().ok().flatten());
    let wall = started.elapsed();
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{name} ({cmd:?}) did not finish within {timeout:?}");
    };
    Captured {
        pid,
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        wall,
    }
}

fn read_all(pipe: Option<impl io::Read>) -> String {
    let mut s = String::new();
    if let Some(mut p) = pipe {
        let _ = io::Read::read_to_string(&mut p, &mut s);
    }
    s
}
