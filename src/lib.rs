//! taskyard: a coordination server for fleets of AI coding agents.
//!
//! Where things live:
//! - [`domain`]: tasks, statuses, priorities, agents and validated input; no I/O.
//! - [`store`]: the SQLite registry; every SQL statement, behind functions named for intent.
//! - [`http`]: the REST API (one file per resource), auth, SSE and the OpenAPI document.
//! - [`mcp`]: MCP over streamable HTTP at `/mcp`: tools that call the REST API's own functions.
//! - [`error`]: the problem+json error every HTTP caller sees.
//! - [`config`]: defaults < file < env < flags.
//! - [`files`]: private files and folders (0600 / 0700) for secrets, backups, logs and prompts.
//! - [`app`]: boot (data folder, admin token, store, listener) and graceful shutdown.
//! - [`serve`]: the accept loop: connection cap, header and idle timeouts, graceful shutdown.
//! - [`client`]: the HTTP client behind the CLI.
//! - [`loops`]: scheduled loops, one file per kind.
//! - [`host`]: the host's CPU, memory and disk, and whether it is overloaded.
//! - [`spawn`]: routing available work and supervising spawned agent processes.
//! - [`notify`]: emails to people (outbox, SMTP or files, signed take/decline links, digest).
//! - [`bench`]: `taskyard bench`, the load generator and its scenarios.
//! - [`cli`]: the command line (`serve` and the client subcommands).
//! - [`stdout`]: command output that ends quietly when its reader has gone.

pub mod app;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod error;
pub mod files;
pub mod host;
pub mod http;
pub mod loops;
pub mod mcp;
pub mod notify;
pub mod serve;
pub mod spawn;
pub mod stdout;
pub mod store;

pub use app::App;
pub use config::Config;
