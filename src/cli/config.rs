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
    /// Validate the config and the loop definitions; exits non-zero naming the file and field at fault.
    Check,
}

/// Runs a config subcommand (locally; no server needed).
pub fn run(global: &Global, cmd: ConfigCommand) -> ExitCode {
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
            println!("# config file: {source}");
            print!("{}", config.to_redacted_toml());
        }
        ConfigCommand::Check => match crate::loops::load_definitions(&config.server.loops_dir) {
            Ok(loops) => println!("config ok (file: {source}); {} loops ok", loops.len()),
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        },
    }
    ExitCode::SUCCESS
}
