//! The `taskyard` binary: parse the command line, set up logging, hand off.

use std::process::ExitCode;

use clap::Parser;
use taskyard::cli::{self, Cli, Command};
use taskyard::config::{Config, LogFormat};
use taskyard::App;
use tracing_subscriber::EnvFilter;

/// jemalloc instead of the system allocator: glibc keeps memory freed by many threads in its
/// per-thread arenas, so a server that held thousands of streams stayed that large after they
/// closed. jemalloc's background threads hand freed pages back to the system within seconds,
/// whether or not the server is busy.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(&args)),
        command => runtime.block_on(cli::run_client(command)),
    }
}

async fn serve(args: &cli::ServerArgs) -> ExitCode {
    let config = match Config::load(&args.overrides()) {
        Ok((config, _)) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(config.server.log_format);
    let result = async {
        let app = App::build(config).await?;
        app.run(shutdown_signal()).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "taskyard stopped with an error");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_cron_scheduler=warn"));
    // Colours only for a person watching: not in a file, a pipe or a service's journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
