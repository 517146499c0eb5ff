//! `taskyard config show|check`: the effective configuration, and validating it.

use super::output::say;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::{backend_of, Backend, Config};

use super::ServerArgs;

/// Config subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective config (defaults < file < env < flags), secrets redacted.
    Show,
    /// Validate the config and the loop definitions, and reach the database; exits non-zero
    /// naming the file and field (or the database failure) at fault.
    Check,
}

/// Runs a config subcommand (locally; no server needed).
pub async fn run(global: &ServerArgs, cmd: ConfigCommand) -> ExitCode {
    let (config, file) = match Config::load(&global.overrides()) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let source = file
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "none (defaults)".into());
    match cmd {
        ConfigCommand::Show => {
            say!("# config file: {source}");
            say!("{}", config.to_redacted_toml().trim_end());
        }
        ConfigCommand::Check => {
            let loops =
                match crate::loops::load_definitions(&config.server.loops_dir, config.server.builtin_loops) {
                    Ok(loops) => loops,
                    Err(err) => {
                        eprintln!("error: {err}");
                        return ExitCode::FAILURE;
                    }
                };
            say!("config ok (file: {source})");
            match backend_of(config.server.database_url.as_ref(), &config.server.data_dir) {
                Backend::Sqlite(file) => say!("database: SQLite, {}", file.display()),
                Backend::Postgres(url) => {
                    let shown = crate::store::postgres::redact(&url);
                    match crate::store::postgres::check(&url).await {
                        Ok(server) => say!("database: {server} at {shown}"),
                        Err(err) => {
                            eprintln!("error: database {shown}: {err}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
            }
            if config.spawner_on() {
                let types: Vec<&str> = config
                    .agent_types
                    .iter()
                    .filter(|(_, t)| !t.command.is_empty())
                    .map(|(name, _)| name.as_str())
                    .collect();
                say!("spawner: on (agent types with a command: {})", types.join(", "));
            } else {
                say!("spawner: off (no agent type has a command): P0/P1 work is pulled by agents");
            }
            say!(
                "loops ({}; changes take effect when the server restarts):",
                loops.len()
            );
            for def in &loops {
                say!(
                    "  {:<20} {:<18} {:<14} {:<8} {}",
                    def.name,
                    def.kind,
                    def.schedule.to_string(),
                    if def.enabled { "enabled" } else { "disabled" },
                    def.source
                );
            }
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
        }
    }
    ExitCode::SUCCESS
}
