//! Prometheus metrics: the counters, gauges and histograms one server keeps about its work, and
//! their exposition in the OpenMetrics text format for `GET /metrics`. Counters move where the
//! work happens; gauges of the registry's contents are set from a snapshot just before a scrape.

use std::fmt;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Labels: a task status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The status.
    pub status: String,
}

/// Labels: a priority.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabel {
    /// P0 … P3.
    pub priority: String,
}

/// Labels: a project.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectLabel {
    /// The task's project.
    pub project: String,
}

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template (`/api/v1/tasks/{id}`), or `unmatched`.
    pub route: String,
    /// GET, POST, …
    pub method: String,
    /// The answer's status code.
    pub status: u16,
}

/// Labels: an agent type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentTypeLabel {
    /// The configured agent type.
    pub agent_type: String,
}

/// Labels of a run that ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunEndLabels {
    /// The configured agent type.
    pub agent_type: String,
    /// How it ended.
    pub status: String,
}

/// Labels: an outcome (`ok`, `failed`, `sent`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome.
    pub outcome: String,
}

/// Labels of a loop run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoopLabels {
    /// The loop's name.
    pub loop_name: String,
    /// `ok` or `failed`.
    pub outcome: String,
}

/// Most distinct projects counted by name.
pub const MAX_PROJECTS: usize = 1_000;

/// `value` escaped for a label (the encoder writes label values as they are): a quote, a
/// backslash or a line break in a project's name must not break the whole exposition.
pub fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Every metric of one server.
pub struct Telemetry {
    registry: Registry,
    /// Tasks per status (snapshot).
    pub tasks: Family<StatusLabel, Gauge>,
    /// Unfinished tasks per priority (snapshot).
    pub open_tasks: Family<PriorityLabel, Gauge>,
    /// Claims, by project.
    pub claims: Family<ProjectLabel, Counter>,
    /// Completions, by project.
    pub completions: Family<ProjectLabel, Counter>,
    /// Failed attempts, by project.
    pub failures: Family<ProjectLabel, Counter>,
    /// Leases that ran out, by project.
    pub lease_expiries: Family<ProjectLabel, Counter>,
    /// How long a claim-next took, waiting included.
    pub claim_next_wait: Histogram,
    /// How long one claim-next attempt on the registry took.
    pub claim_next_latency: Histogram,
    /// HTTP requests by route, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Changes per write transaction.
    pub writer_batch: Histogram,
    /// Commit time of a write transaction.
    pub writer_commit: Histogram,
    /// Claim-next calls waiting for work now.
    pub long_polls: Gauge,
    /// Event streams (SSE, run logs followed, MCP streams) open now.
    pub streams: Gauge,
    /// Spawned runs starting or running, by agent type (snapshot).
    pub runs_live: Family<AgentTypeLabel, Gauge>,
    /// Runs started, by agent type.
    pub runs_started: Family<AgentTypeLabel, Counter>,
    /// Runs ended, by agent type and status.
    pub runs_ended: Family<RunEndLabels, Counter>,
    /// Emails queued, sent, and failed attempts.
    pub notifications: Family<OutcomeLabel, Counter>,
    /// Loop runs by loop and outcome.
    pub loop_runs: Family<LoopLabels, Counter>,
    /// Hints of other nodes' changes heard (PostgreSQL `NOTIFY`).
    pub node_hints: Counter,
    /// 1 while this node holds the leader lease, else 0.
    pub leader: Gauge,
    /// Resident memory of this process.
    pub resident_memory: Gauge,
    /// CPU time this process used.
    pub cpu_seconds: Counter<f64>,
    /// The projects counted by name so far.
    projects: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

/// Latency buckets: 0.5 ms to about 65 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

impl Telemetry {
    /// All metrics at zero, registered under `taskyard_` (process figures under `process_`).
    pub fn new() -> Telemetry {
        let mut root = Registry::default();
        let t = Telemetry {
            registry: Registry::default(),
            tasks: Family::default(),
            open_tasks: Family::default(),
            claims: Family::default(),
            completions: Family::default(),
            failures: Family::default(),
            lease_expiries: Family::default(),
            claim_next_wait: seconds(),
            claim_next_latency: seconds(),
            http_requests: Family::default(),
            writer_batch: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            writer_commit: seconds(),
            long_polls: Gauge::default(),
            streams: Gauge::default(),
            runs_live: Family::default(),
            runs_started: Family::default(),
            runs_ended: Family::default(),
            notifications: Family::default(),
            loop_runs: Family::default(),
            node_hints: Counter::default(),
            leader: Gauge::default(),
            resident_memory: Gauge::default(),
            cpu_seconds: Counter::default(),
            projects: Default::default(),
        };
        let r = root.sub_registry_with_prefix("taskyard");
        r.register("tasks", "Tasks per status", t.tasks.clone());
        r.register(
            "open_tasks",
            "Unfinished tasks per priority",
            t.open_tasks.clone(),
        );
        r.register("claims", "Claims, by project", t.claims.clone());
        r.register(
            "completions",
            "Completed tasks, by project",
            t.completions.clone(),
        );
        r.register("failures", "Failed attempts, by project", t.failures.clone());
        r.register(
            "lease_expiries",
            "Leases that ran out, by project",
            t.lease_expiries.clone(),
        );
        r.register_with_unit(
            "claim_next_wait",
            "Time a claim-next call took, waiting for work included",
            Unit::Seconds,
            t.claim_next_wait.clone(),
        );
        r.register_with_unit(
            "claim_next_latency",
            "Time one claim-next attempt on the registry took",
            Unit::Seconds,
            t.claim_next_latency.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests by route, method and status",
            t.http_requests.clone(),
        );
        r.register(
            "writer_batch_changes",
            "Changes per write transaction",
            t.writer_batch.clone(),
        );
        r.register_with_unit(
            "writer_commit",
            "Commit time of a write transaction",
            Unit::Seconds,
            t.writer_commit.clone(),
        );
        r.register(
            "long_polls",
            "Claim-next calls waiting for work",
            t.long_polls.clone(),
        );
        r.register("streams", "Event streams open", t.streams.clone());
        r.register(
            "runs_live",
            "Spawned runs starting or running, by agent type",
            t.runs_live.clone(),
        );
        r.register(
            "runs_started",
            "Spawned runs started, by agent type",
            t.runs_started.clone(),
        );
        r.register(
            "runs_ended",
            "Spawned runs ended, by agent type and status",
            t.runs_ended.clone(),
        );
        r.register(
            "notifications",
            "Emails queued, sent, and delivery attempts that failed",
            t.notifications.clone(),
        );
        r.register("loop_runs", "Loop runs by loop and outcome", t.loop_runs.clone());
        r.register(
            "node_hints",
            "Hints of other nodes' changes heard (PostgreSQL NOTIFY)",
            t.node_hints.clone(),
        );
        r.register(
            "leader",
            "1 while this node holds the leader lease",
            t.leader.clone(),
        );
        let p = root.sub_registry_with_prefix("process");
        p.register_with_unit(
            "resident_memory",
            "Resident memory of the server process",
            Unit::Bytes,
            t.resident_memory.clone(),
        );
        p.register_with_unit(
            "cpu",
            "CPU time the server process used",
            Unit::Seconds,
            t.cpu_seconds.clone(),
        );
        Telemetry { registry: root, ..t }
    }

    /// Counts one more for `project` in `family`. Past [`MAX_PROJECTS`] distinct projects, the
    /// rest are counted as `other`: every label value is a series kept for good.
    pub fn count(&self, family: &Family<ProjectLabel, Counter>, project: &str) {
        let project = {
            let mut known = self.projects.lock().unwrap_or_else(|p| p.into_inner());
            if known.contains(project) || known.len() < MAX_PROJECTS {
                known.insert(project.to_string());
                label(project)
            } else {
                "other".to_string()
            }
        };
        family.get_or_create(&ProjectLabel { project }).inc();
    }

    /// Counts a loop run.
    pub fn loop_ran(&self, name: &str, ok: bool) {
        self.loop_runs
            .get_or_create(&LoopLabels {
                loop_name: label(name),
                outcome: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
    }

    /// Counts a run that started.
    pub fn run_started(&self, agent_type: &str) {
        self.runs_started
            .get_or_create(&AgentTypeLabel {
                agent_type: label(agent_type),
            })
            .inc();
    }

    /// Counts a run that ended with `status`.
    pub fn run_ended(&self, agent_type: &str, status: &str) {
        self.runs_ended
            .get_or_create(&RunEndLabels {
                agent_type: label(agent_type),
                status: label(status),
            })
            .inc();
    }

    /// Counts `n` notifications with `outcome`.
    pub fn notifications(&self, outcome: &str, n: u64) {
        self.notifications
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc_by(n);
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Telemetry::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_projects_bounded() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
        let t = Telemetry::new();
        for i in 0..MAX_PROJECTS + 5 {
            t.count(&t.claims, &format!("p{i}"));
        }
        t.count(&t.claims, "p0");
        let text = t.render();
        assert!(text.contains("taskyard_claims_total{project=\"p0\"} 2"), "{text}");
        assert!(text.contains("taskyard_claims_total{project=\"other\"} 5"));
    }
}
