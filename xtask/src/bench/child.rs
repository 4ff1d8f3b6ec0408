//! A process the benchmark starts (nginx, rotel, the agent): its output goes to a log file, and it
//! is stopped (signal, grace period, then SIGKILL) when dropped, so an error anywhere in the
//! benchmark leaves nothing running. If xtask itself is killed, the kernel sends the same signal
//! (`PR_SET_PDEATHSIG`).

use std::{
    fs::{self, File},
    io,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::exec;

/// How long a stopped process gets between its signal and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A running child process that is stopped when dropped.
pub(super) struct Child {
    name: &'static str,
    child: std::process::Child,
    log: PathBuf,
    /// Signal that asks it to exit cleanly (SIGINT for the agent, which then flushes its spans).
    stop_signal: libc::c_int,
}

impl Child {
    /// Starts `cmd` with stdout and stderr appended to `log` (stdout to /dev/null when `quiet_stdout`).
    pub(super) fn spawn(
        name: &'static str,
        cmd: &mut Command,
        log: &Path,
        stop_signal: libc::c_int,
        quiet_stdout: bool,
    ) -> Result<Self> {
        let line = exec::display(cmd);
        println!("$ {line} 2>{}", log.display());
        let file = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let stdout = if quiet_stdout {
            Stdio::null()
        } else {
            Stdio::from(file.try_clone()?)
        };
        // SAFETY: between fork and exec the closure only calls prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                // Stopped with the same signal if xtask dies without running its destructors
                // (SIGKILL, or a SIGTERM sent to xtask alone).
                if libc::prctl(libc::PR_SET_PDEATHSIG, stop_signal) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("failed to start `{line}`"))?;
        Ok(Self {
            name,
            child,
            log: log.to_owned(),
            stop_signal,
        })
    }

    /// The process id (the tgid: every child here is a process, not a thread).
    pub(super) fn tgid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the end of its log, when the process has exited.
    pub(super) fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited early ({status}); end of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// Waits until something accepts TCP connections on `127.0.0.1:port`.
    pub(super) fn wait_for_port(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on {addr} within {timeout:?}; end of {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(20)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the log contains `needle` and returns the whole log.
    pub(super) fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(needle) {
                return Ok(log);
            }
            self.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not log {needle:?} within {timeout:?}; end of {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(20)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends the stop signal, waits up to [`STOP_GRACE`], then kills.
    pub(super) fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let tgid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(tgid, self.stop_signal) };
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        println!(
            "xtask: {} did not exit within {STOP_GRACE:?}; killing it",
            self.name
        );
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            println!("xtask: stopping {}: {e:#}", self.name);
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it).
pub(super) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("bind 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}
