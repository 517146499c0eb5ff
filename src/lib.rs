//! taskyard: a coordination server for fleets of AI coding agents.
//!
//! Where things live:
//! - [`domain`]: tasks, statuses, priorities, agents, events and validated input, and the rules
//!   on them as plain functions (the lease lifecycle in `domain::lifecycle`, claim-next in
//!   `domain::claim`, creation limits in `domain::plan`, cancelling in `domain::cancel`, path
//!   patterns and reservations in `domain::paths` and `domain::reservation`, the handoff in
//!   `domain::handoff`); no I/O.
//! - [`store`]: the registry behind traits named for what callers use (`store::leases`, …), the
//!   event bus, and its backends: `store::sqlite` holds every SQL statement; the whole lease
//!   lifecycle (claim, claim-next, progress, complete, fail, release, block, unblock, cancel,
//!   reaping) is `store::sqlite::lifecycle` (`claim.rs` takes work, `mod.rs` holds and ends it);
//!   on PostgreSQL `store::postgres::lifecycle`, where `batch.rs` groups the work cycle.
//! - [`service`]: the work behind every endpoint (access checks, tasks, claims, reservations,
//!   handoff, stream limits),
//!   whatever protocol asked for it.
//! - [`http`]: the REST API (one file per resource, each adapting the service), authentication,
//!   dashboard sessions, SSE and the OpenAPI document.
//! - [`mcp`]: MCP over streamable HTTP at `/mcp`: tools that adapt the same service.
//! - [`error`]: the problem+json error every HTTP caller sees.
//! - [`config`]: defaults < file < env < flags.
//! - [`token`]: bearer tokens and the hashes they are stored by.
//! - [`telemetry`]: the Prometheus metrics (served at `/metrics` by `http::metrics`).
//! - [`files`]: private files and folders (0600 / 0700) for secrets, backups, logs and prompts.
//! - [`app`]: boot (data folder, admin token, the backend, listener), composing the routers, and
//!   graceful shutdown.
//! - [`serve`]: the accept loop: connection cap, header and idle timeouts, graceful shutdown.
//! - [`client`]: the HTTP client behind the CLI.
//! - [`loops`]: scheduled loops, one file per kind.
//! - [`cluster`]: several nodes on one registry: the node id, heartbeats and the leader lease.
//! - [`host`]: the host's CPU, memory and disk, and whether it is overloaded.
//! - [`spawn`]: routing available work and supervising spawned agent processes.
//! - [`notify`]: emails to people (outbox, SMTP or files, signed take/decline links, digest).
//! - [`webhooks`]: outgoing webhooks: the deliverer of the webhook outbox, and its signatures.
//! - [`bench`]: `taskyard bench`, the load generator and its scenarios.
//! - [`cli`]: the command line (`serve` and the client subcommands).
//! - [`stdout`]: command output that ends quietly when its reader has gone.

pub mod app;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
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
pub mod service;
pub mod spawn;
pub mod stdout;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod webhooks;

pub use app::App;
pub use config::Config;
