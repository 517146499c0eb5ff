//! Integration tests: each boots the real server on port 0 with a fresh registry (a SQLite
//! file, or in the `api_postgres` run a PostgreSQL database: see `backend.rs`) and talks to it
//! over real HTTP (and, for the CLI, through the real binary).

mod auth;
mod backend;
mod cancel;
mod cli;
mod cli_messages;
mod clock;
mod cluster;
mod concurrency;
mod connections;
mod crash;
mod dashboard;
mod db_restart;
mod deps;
mod disk;
mod environment;
mod events;
mod faults;
mod files;
mod fuzz;
mod handoff;
mod inbox;
mod input;
mod leases;
mod logins;
mod loops;
mod mcp;
mod metrics;
mod notify;
mod prompts;
mod props;
mod reservations;
mod restart;
mod revoke;
mod routing;
mod smtp;
mod spawn;
mod streams;
mod support;
mod wakeups;
mod walkthrough;
mod webhooks;
mod why_props;
mod worktrees;
