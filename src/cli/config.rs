//! `taskyard config show|check`: the effective configuration, and validating it.

use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;

use super::Global;

/// Config subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective config (defaults < file < env < flags), secrets redacted.
    Show,
    /// Validate the config; exits non-zero with the file and field at fault.
    Check,
}

/// Runs a config subcommand (locally; no server needed).
pub fn run(global: &Global, cmd: ConfigCommand) -> ExitCode {
    match Config::load(&global.overrides()) {
        Ok((config, file)) => {
            match cmd {
                ConfigCommand::Show => {
                    let source = file
                        .map(|f| f.display().to_string())
                        .unwrap_or_else(|| "none (defaults)".into());
                    println!("# config file: {source}");
                    print!("{}", config.to_redacted_toml());
                }
                ConfigCommand::Check => {
                    let source = file
                        .map(|f| f.display().to_string())
                        .unwrap_or_else(|| "defaults".into());
                    println!("config ok ({source})");
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
