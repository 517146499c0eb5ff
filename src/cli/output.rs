//! Printing server answers for people (text) or machines (`--json`).

use serde_json::Value;

pub(crate) use crate::stdout::say;

/// The path of a list request: `base?limit=…`, with `status` and `task_id` when given.
pub fn list_path(base: &str, limit: i64, status: Option<&str>, task: Option<i64>) -> String {
    let mut path = format!("{base}?limit={limit}");
    if let Some(s) = status {
        path.push_str(&format!("&status={s}"));
    }
    if let Some(t) = task {
        path.push_str(&format!("&task_id={t}"));
    }
    path
}

/// Says "no THINGS" when a list answer holds no items, so an empty answer is not mistaken for
/// a command that did nothing.
pub fn none_if_empty(page: &Value, things: &str) {
    if page["items"].as_array().is_none_or(|items| items.is_empty()) {
        say!("no {things}");
    }
}

/// Prints `value` as pretty JSON.
pub fn json(value: &Value) {
    say!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// One line per task: id, priority, status, title, and the lease when held.
pub fn task_line(task: &Value) -> String {
    let lease = task
        .get("lease")
        .filter(|l| !l.is_null())
        .map(|l| format!("  [{} fence {}]", s(l, "holder"), l["fence"]))
        .unwrap_or_default();
    let key = task
        .get("key")
        .and_then(Value::as_str)
        .map(|k| format!(" ({k})"))
        .unwrap_or_default();
    format!(
        "#{:<6} {:<3} {:<12} {}{}{}",
        task["id"],
        s(task, "priority"),
        s(task, "status"),
        s(task, "title"),
        key,
        lease
    )
}

/// A task in full, for `task show`.
pub fn task_detail(task: &Value) {
    say!("{}", task_line(task));
    let list = |key: &str| {
        task.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    say!("  project:      {}", s(task, "project"));
    say!(
        "  kind:         {}   route: {}",
        s(task, "kind"),
        s(task, "route")
    );
    say!("  capabilities: {}", list("capabilities"));
    say!("  depends on:   {}", list("depends_on"));
    if let Some(parent) = task.get("parent_id").filter(|p| !p.is_null()) {
        say!("  parent:       #{parent}");
    }
    say!("  attempts:     {}/{}", task["attempts"], task["max_attempts"]);
    if let Some(reason) = task.get("status_reason").and_then(Value::as_str) {
        say!("  reason:       {reason}");
    }
    if let Some(lease) = task.get("lease").filter(|l| !l.is_null()) {
        say!(
            "  lease:        {} fence {} until {}",
            s(lease, "holder"),
            lease["fence"],
            s(lease, "expires_at")
        );
    }
    let progress = &task["progress"];
    say!("  progress:     {}% {}", progress["percent"], s(progress, "note"));
    if let Some(result) = task.get("result").filter(|r| !r.is_null()) {
        say!("  result:       {}", s(result, "summary"));
    }
    let description = s(task, "description");
    if !description.is_empty() {
        say!("\n{description}");
    }
    if let Some(criteria) = task
        .get("acceptance_criteria")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    {
        say!("\nAcceptance criteria:");
        for c in criteria {
            say!("  - {}", c.as_str().unwrap_or(""));
        }
    }
    if let Some(events) = task
        .get("events")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    {
        say!("\nEvents:");
        for e in events {
            say!(
                "  {}  {:<20} {}",
                s(e, "at"),
                s(e, "kind"),
                e.get("actor").and_then(Value::as_str).unwrap_or("-")
            );
        }
    }
}

/// The earlier attempts of a handoff, one paragraph each.
pub fn handoff(h: &Value) {
    let attempts = h["attempts"].as_array().filter(|a| !a.is_empty());
    let Some(attempts) = attempts else {
        say!("no earlier attempts");
        return;
    };
    for a in attempts {
        let run = a["run_id"]
            .as_i64()
            .map(|r| format!(" (run {r})"))
            .unwrap_or_default();
        let percent = a["percent"]
            .as_i64()
            .map(|p| format!(", reached {p}%"))
            .unwrap_or_default();
        let why = a["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default();
        say!("{}{run}{percent}, {}{why}", s(a, "holder"), s(a, "outcome"));
        for note in a["notes"].as_array().into_iter().flatten() {
            say!("  note: {}", note.as_str().unwrap_or(""));
        }
        if let Some(branch) = a["branch"]["ref"].as_str() {
            say!("  branch: {branch} {}", s(&a["branch"], "note"));
        }
        if let Some(log) = a["log_tail"].as_str() {
            say!("  end of its log:");
            for line in log.lines() {
                say!("    {line}");
            }
        }
    }
}
