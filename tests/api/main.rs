//! Integration tests: each boots the real server on port 0 with a fresh SQLite file and talks
//! to it over real HTTP (and, for the CLI, through the real binary).

mod auth;
mod cancel;
mod cli;
mod cli_messages;
mod clock;
mod concurrency;
mod connections;
mod crash;
mod dashboard;
mod deps;
mod disk;
mod environment;
mod events;
mod faults;
mod files;
mod fuzz;
mod inbox;
mod input;
mod leases;
mod logins;
mod loops;
mod mcp;
mod notify;
mod prompts;
mod props;
mod restart;
mod revoke;
mod routing;
mod smtp;
mod spawn;
mod streams;
mod support;
mod wakeups;
mod walkthrough;
mod why_props;
