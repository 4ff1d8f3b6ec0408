//! `sonde`: parse the command line, set up logging, run the agent until SIGINT/SIGTERM.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error and its causes, one per line; no backtrace (this is the user's answer).
            eprintln!("sonde: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = agent::config::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).context("invalid --log filter")?)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: journald and `kubectl logs` get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = agent::config::Config::from_cli(&cli)?;
    if cli.check {
        let (report, usable) = agent::probe::check::report(&agent::pipeline::load_params(&config));
        print!("{report}");
        if !usable {
            std::process::exit(1);
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sonde")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // The handlers exist before the pipeline logs `capture ready`: a supervisor that stops
        // the agent as soon as it is ready must not have its SIGTERM lost.
        let shutdown = shutdown_signal();
        agent::run(config, shutdown).await
    })?;
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now (inside the runtime); the future resolves on the
/// first of them.
///
/// Installing them lazily, at the future's first poll after `capture ready` was logged, lost a
/// SIGTERM sent right then (a signal delivered between tokio enabling the handler and
/// registering its listener is not seen by that listener): the agent kept running, idle, and the
/// VM stage's `capture_modes` test waited for it until the 600 s silence limit (fresh-machine run
/// 3, Debian 6.1, fentry mode).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
