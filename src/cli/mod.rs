//! The command line: `serve` runs the server; every other subcommand is a client of a running
//! server. Exit codes: 0 ok, 1 error, 2 usage, 3 no work available, 4 lease lost.

mod agent;
mod config;
mod loops;
mod notifications;
pub(crate) mod output;
mod reservations;
mod runs;
mod task;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::{Client, ClientError};
use crate::config::{LogFormat, Overrides};

/// Exit code: the command worked.
pub const EXIT_OK: u8 = 0;
/// Exit code: something went wrong.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: claim-next found no work.
pub const EXIT_NO_WORK: u8 = 3;
/// Exit code: the lease is gone (`lease_lost`): stop working on the task.
pub const EXIT_LEASE_LOST: u8 = 4;

/// taskyard: a coordination server for fleets of AI coding agents.
#[derive(Debug, Parser)]
#[command(name = "taskyard", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the server keeps and reads its things (`serve` and `config`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// Config file. Default ./taskyard.toml when present.
    #[arg(long, global = true, env = "TASKYARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data folder (database, logs, admin token). Default ./.taskyard
    #[arg(long, global = true, env = "TASKYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The registry's database: sqlite://PATH, or postgres://USER:PASSWORD@HOST:PORT/DATABASE.
    /// Default: the SQLite file in the data folder.
    #[arg(
        long = "database",
        global = true,
        env = "TASKYARD_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Loop definitions folder (each file adds a loop or replaces the built-in one of its name).
    /// Default ./loops
    #[arg(long, global = true, env = "TASKYARD_LOOPS_DIR")]
    pub loops_dir: Option<PathBuf>,
    /// Address to listen on. Default 127.0.0.1:7311
    #[arg(long, global = true, env = "TASKYARD_BIND")]
    pub bind: Option<SocketAddr>,
    /// Log format.
    #[arg(long, global = true, env = "TASKYARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

impl ServerArgs {
    /// The config overrides these flags and variables make.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            bind: self.bind,
            data_dir: self.data_dir.clone(),
            loops_dir: self.loops_dir.clone(),
            database_url: self.database_url.clone(),
            log_format: self.log_format,
            admin_token: std::env::var("TASKYARD_ADMIN_TOKEN").ok(),
        }
    }
}

/// How a client command reaches the server and prints its answer.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Connection")]
pub struct ClientArgs {
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "TASKYARD_URL",
        default_value = "http://127.0.0.1:7311"
    )]
    pub url: String,
    /// Bearer token (default: <data-dir>/admin.token).
    #[arg(long, global = true, env = "TASKYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Data folder whose admin.token is used when no token is given. Default ./.taskyard
    #[arg(long, global = true, env = "TASKYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl ClientArgs {
    /// A client for the configured server, with the given token or the local admin token.
    pub fn client(&self) -> Client {
        let token = self.token.clone().or_else(|| {
            let dir = self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(".taskyard"));
            crate::app::local_admin_token(&dir)
        });
        Client::new(&self.url, token)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServerArgs),
    /// Work with tasks.
    Task {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: task::TaskCommand,
    },
    /// Register and list agents.
    Agent {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: agent::AgentCommand,
    },
    /// Spawned agent processes: list, show, log, kill.
    Runs {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: runs::RunsCommand,
    },
    /// List loops or run one now.
    Loops {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: loops::LoopsCommand,
    },
    /// The outbox of emails to people.
    Notifications {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: notifications::NotificationsCommand,
    },
    /// Reserve paths under your lease, so no other agent edits them meanwhile.
    Reserve {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: reservations::ReserveArgs,
    },
    /// Path reservations: list who holds what, release one.
    Reservations {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: reservations::ReservationsCommand,
    },
    /// Measure throughput and latency against a fresh server (or --target URL).
    Bench(crate::bench::BenchArgs),
    /// Show or check the configuration (and the loop definitions).
    Config {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
}

/// Runs a client subcommand and turns its outcome into an exit code.
pub async fn run_client(command: Command) -> ExitCode {
    let result = match command {
        Command::Task { client, command } => task::run(&client, command).await,
        Command::Agent { client, command } => agent::run(&client, command).await,
        Command::Loops { client, command } => loops::run(&client, command).await,
        Command::Runs { client, command } => runs::run(&client, command).await,
        Command::Notifications { client, command } => notifications::run(&client, command).await,
        Command::Reserve { client, args } => reservations::reserve(&client, args).await,
        Command::Reservations { client, command } => reservations::run(&client, command).await,
        Command::Bench(args) => {
            return match crate::bench::run(&args).await {
                Ok(report) => {
                    if args.json {
                        output::json(&report);
                    }
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Config { server, command } => return config::run(&server, command).await,
        Command::Serve(_) => unreachable!("serve is not a client command"),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(match err.code() {
                Some("lease_lost") => EXIT_LEASE_LOST,
                _ => EXIT_ERROR,
            })
        }
    }
}

/// Result of a client command: an exit code, or the error to report.
pub type CliResult = Result<u8, ClientError>;
