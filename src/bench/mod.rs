//! `taskyard bench`: how many agents one taskyard serves. Starts its own server (a child
//! process on a temporary data folder) or uses `--url`, drives it over real HTTP, checks that
//! every task was completed exactly once, and reports throughput and latency percentiles.

mod scenarios;
mod server;
mod stats;

use std::time::Duration;

use serde_json::{json, Value};

use crate::client::Client;
use crate::stdout::say;

pub use stats::{summarise, Summary};

use server::BenchServer;

/// Which scenarios to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// (a) claim-next → complete throughput with many agents.
    Throughput,
    /// (b) claim latency with a small and a very large registry.
    Scale,
    /// (c) many idle long-polling agents while work trickles in.
    LongPoll,
    /// (d) from a P0 task's creation to its spawned agent's start.
    Spawn,
    /// (e) from a change to its delivery over SSE.
    Sse,
    /// All of them.
    All,
}

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Scenario to run.
    #[arg(long, value_enum, default_value = "throughput")]
    pub scenario: Scenario,
    /// Tasks for the throughput scenario.
    #[arg(long, default_value_t = 60_000)]
    pub tasks: usize,
    /// Report progress between claim and complete (three requests per cycle instead of two).
    #[arg(long)]
    pub progress: bool,
    /// Concurrent agents for the throughput and scale scenarios.
    #[arg(long, default_value_t = 64)]
    pub agents: usize,
    /// Registry size for the large half of the scale scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub large: usize,
    /// Long-polling agents.
    #[arg(long, default_value_t = 1_000)]
    pub pollers: usize,
    /// Durability of the server the benchmark starts: normal or full.
    #[arg(long, default_value = "normal")]
    pub durability: String,
    /// The database of the server the benchmark starts (`postgres://…` for PostgreSQL); default
    /// a SQLite file in a temporary data folder.
    #[arg(long = "database", conflicts_with = "target")]
    pub database: Option<String>,
    /// Use a running server instead of starting one (needs an admin --token). Give it again
    /// for more nodes of the same registry: the agents are spread over them.
    #[arg(long = "target")]
    pub target: Vec<String>,
    /// The admin token of the --target server.
    #[arg(long, env = "TASKYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

const SPAWN_CONFIG: &str =
    "[spawner]\nmax_concurrent = 8\n[agent_types.development-lead]\ncommand = [\"true\"]\n";

/// Counts the tasks of `project` that are not completed after exactly one claim.
async fn not_exactly_once(admin: &Client, project: &str) -> anyhow::Result<(usize, usize)> {
    let (mut total, mut bad, mut cursor) = (0, 0, None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("/tasks?project={project}&limit=500&cursor={c}"),
            None => format!("/tasks?project={project}&limit=500"),
        };
        let page = admin.get(&path).await?;
        for t in page["items"].as_array().into_iter().flatten() {
            total += 1;
            if t["status"] != "completed" || t["attempts"] != 1 {
                bad += 1;
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok((total, bad)),
        }
    }
}

fn rss_mib(server: &mut BenchServer) -> Option<f64> {
    server.usage().map(|(rss, _)| rss as f64 / (1024.0 * 1024.0))
}

/// Runs the chosen scenarios; prints a report (JSON with `json`).
pub async fn run(args: &BenchArgs) -> anyhow::Result<Value> {
    let (token, json_out) = (args.token.clone(), args.json);
    let want = |s: Scenario| args.scenario == s || args.scenario == Scenario::All;
    let mut server = match args.target.as_slice() {
        [_, ..] => BenchServer::existing(
            &args.target,
            &token.ok_or_else(|| anyhow::anyhow!("--target needs an admin --token"))?,
        ),
        [] => BenchServer::start(SPAWN_CONFIG, &args.durability, args.database.as_deref()).await?,
    };
    let admin = server.admin();
    let backend = match &args.database {
        Some(url) if !url.starts_with("sqlite://") => "postgres",
        _ if !args.target.is_empty() => "target",
        _ => "sqlite",
    };
    let mut report = json!({"durability": args.durability, "backend": backend, "nodes": server.nodes.len(), "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)});
    let say = |text: String| {
        if !json_out {
            say!("{text}");
        }
    };

    if want(Scenario::Throughput) {
        let seeded = scenarios::seed(&admin, args.tasks, "bench-a", 4).await?;
        let clients = scenarios::agents(&server, "a", args.agents).await?;
        let r = scenarios::cycles(&clients, "bench-a", usize::MAX, args.progress).await;
        let (total, bad) = not_exactly_once(&admin, "bench-a").await?;
        say(format!(
            "(a) throughput: {} agents, {} tasks (seeded in {:.1} s)",
            r.agents,
            args.tasks,
            seeded.as_secs_f64()
        ));
        let cycle = match args.progress {
            true => "claim→progress→complete",
            false => "claim→complete",
        };
        say(format!(
            "    {:.0} {cycle} cycles/s over {:.2} s, {} errors",
            r.cycles_per_second, r.seconds, r.errors
        ));
        say(format!("    claim    {}", r.claim));
        if let Some(progress) = &r.progress {
            say(format!("    progress {progress}"));
        }
        say(format!("    complete {}", r.complete));
        say(format!("    exactly once: {total} tasks, {bad} not completed after exactly one claim, {} completed twice", r.duplicates));
        let rss = rss_mib(&mut server);
        if let Some(rss) = rss {
            say(format!("    server RSS {rss:.0} MiB"));
        }
        report["throughput"] =
            json!({"report": r, "tasks": total, "not_exactly_once": bad, "server_rss_mib": rss});
        anyhow::ensure!(
            bad == 0 && r.duplicates == 0 && total == args.tasks,
            "exactly-once check failed"
        );
    }

    if want(Scenario::Scale) {
        let small = 10_000.min(args.large);
        if args.large > 100_000 {
            eprintln!(
                "note: the scale scenario seeds {} tasks through the API into the bench server, \
                 which takes minutes for a million; pass --large to seed fewer",
                args.large
            );
        }
        let clients = scenarios::agents(&server, "b", args.agents).await?;
        scenarios::seed(&admin, small, "bench-b", 4).await?;
        let at_small = scenarios::cycles(&clients, "bench-b", 5_000, false).await;
        let seeded = scenarios::seed(&admin, args.large - small, "bench-b", 4).await?;
        let at_large = scenarios::cycles(&clients, "bench-b", 5_000, false).await;
        let rss = rss_mib(&mut server);
        say(format!(
            "(b) claim latency, {} agents, 5,000 cycles each size",
            args.agents
        ));
        say(format!("    {small:>9} tasks: claim {}", at_small.claim));
        say(format!(
            "    {:>9} tasks: claim {}  (seeded in {:.0} s)",
            args.large,
            at_large.claim,
            seeded.as_secs_f64()
        ));
        let ratio = at_large.claim.p99_ms / at_small.claim.p99_ms;
        say(format!(
            "    p99 ratio {ratio:.2}; server RSS {} MiB",
            rss.map(|r| format!("{r:.0}")).unwrap_or("?".into())
        ));
        report["scale"] = json!({"small": small, "large": args.large, "at_small": at_small, "at_large": at_large,
                                 "p99_ratio": ratio, "server_rss_mib": rss});
    }

    if want(Scenario::LongPoll) {
        let clients = scenarios::agents(&server, "c", args.pollers).await?;
        let r = scenarios::long_poll(&mut server, &clients, 100, Duration::from_millis(50)).await?;
        say(format!(
            "(c) {} long-polling agents: idle server CPU {:.1}% of one core",
            r.agents, r.idle_cpu_percent
        ));
        say(format!("    pickup of {} trickled tasks: {}", r.tasks, r.pickup));
        let ms = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.2} ms"));
        say(format!(
            "    server CPU per create no agent can take: {} with no agent waiting, {} with all {} waiting",
            ms(r.unmatched_create_cpu_ms.no_waiters),
            ms(r.unmatched_create_cpu_ms.all_waiting),
            r.agents
        ));
        report["long_poll"] = json!(r);
    }

    if want(Scenario::Spawn) && args.target.is_empty() {
        let s = scenarios::spawn_latency(&admin, 50).await?;
        say(format!("(d) P0 task created → agent process started: {s}"));
        report["spawn"] = json!(s);
    }

    if want(Scenario::Sse) {
        let s = scenarios::sse_latency(&server, 200).await?;
        say(format!("(e) change → SSE delivery: {s}"));
        report["sse"] = json!(s);
    }

    server.stop().await;
    Ok(report)
}
