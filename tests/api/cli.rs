//! The `taskyard` binary as a shell-based agent uses it.

use std::process::Output;

use serde_json::{json, Value};

use crate::support::Server;

async fn taskyard(server: &Server, token: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskyard"));
    cmd.args(args)
        .env("TASKYARD_URL", &server.url)
        .env("TASKYARD_TOKEN", token)
        .env_remove("TASKYARD_TASK_ID")
        .env_remove("TASKYARD_FENCE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_agent_claims_reports_and_completes() {
    let server = Server::start().await;
    let admin = server.admin.clone();
    let out = taskyard(
        &server,
        &admin,
        &["agent", "add", "shell-1", "--capability", "rust", "--json"],
        &[],
    )
    .await;
    let token = stdout_json(&out)["token"].as_str().unwrap().to_string();

    let out = taskyard(&server, &token, &["task", "next", "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(3), "no work is exit code 3");

    let out = taskyard(
        &server,
        &token,
        &[
            "task",
            "add",
            "Port the parser",
            "-p",
            "P1-HIGH",
            "-c",
            "rust",
            "--criterion",
            "tests pass",
            "--json",
        ],
        &[],
    )
    .await;
    let task = stdout_json(&out);
    assert_eq!(task["priority"], "P1");
    let id = task["id"].to_string();

    let out = taskyard(&server, &token, &["task", "next", "--json"], &[]).await;
    let claim = stdout_json(&out);
    assert_eq!(claim["task"]["id"], task["id"]);
    let fence = claim["lease"]["fence"].to_string();
    let env = [
        ("TASKYARD_TASK_ID", id.as_str()),
        ("TASKYARD_FENCE", fence.as_str()),
    ];

    let out = taskyard(
        &server,
        &token,
        &["task", "progress", "--percent", "40", "--note", "halfway"],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = taskyard(
        &server,
        &token,
        &[
            "task",
            "complete",
            "--summary",
            "ported",
            "--deliverable",
            "commit:abc123",
            "--json",
        ],
        &env,
    )
    .await;
    let done = stdout_json(&out);
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["result"]["deliverables"],
        json!([{"kind": "commit", "ref": "abc123"}])
    );

    let out = taskyard(&server, &token, &["task", "progress", "--percent", "50"], &env).await;
    assert_eq!(out.status.code(), Some(4), "a lost lease is exit code 4");
    assert!(String::from_utf8_lossy(&out.stderr).contains("lease_lost"));

    let out = taskyard(&server, &token, &["task", "show", &id], &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Port the parser") && text.contains("task.completed"),
        "{text}"
    );
    let out = taskyard(&server, &token, &["task", "list", "--status", "completed"], &[]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("Port the parser"));
}

#[tokio::test]
async fn config_check_names_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("taskyard.toml");
    std::fs::write(&file, "[server]\nlease_seconds = 0\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(["config", "check", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.lease_seconds"));

    std::fs::write(&file, "[server]\nbind = \"127.0.0.1:9999\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(["config", "show", "--config", file.to_str().unwrap()])
        .env("TASKYARD_ADMIN_TOKEN", "a-very-secret-admin-token-0123456789")
        .env("TASKYARD_BIND", "127.0.0.1:8888")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("127.0.0.1:8888"), "env beats file: {text}");
    assert!(!text.contains("a-very-secret"), "secrets are redacted: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_its_own_server_and_checks_exactly_once() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args([
            "bench",
            "--scenario",
            "throughput",
            "--tasks",
            "300",
            "--agents",
            "8",
            "--json",
        ])
        .output()
        .await
        .unwrap();
    let report = stdout_json(&out);
    let throughput = &report["throughput"];
    assert_eq!(throughput["tasks"], 300);
    assert_eq!(throughput["not_exactly_once"], 0);
    assert_eq!(throughput["report"]["cycles"], 300);
    assert_eq!(throughput["report"]["duplicates"], 0);
    assert_eq!(throughput["report"]["errors"], 0);
    assert!(throughput["report"]["claim"]["count"].as_u64().unwrap() >= 300);
    assert!(
        throughput["report"]["progress"].is_null(),
        "a cycle is claim-next → complete: {throughput}"
    );

    // The three-request cycle, on request.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(["bench", "--tasks", "100", "--agents", "4", "--progress", "--json"])
        .output()
        .await
        .unwrap();
    let report = stdout_json(&out);
    let r = &report["throughput"]["report"];
    assert_eq!(r["cycles"], 100);
    assert_eq!(r["progress"]["count"], 100, "{r}");
    assert_eq!(r["errors"], 0);
}
