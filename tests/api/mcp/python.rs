//! The official Python MCP SDK works a task through `/mcp`. The test needs `python3` with the SDK
//! at the major version `tests/mcp/python_client.py --check` asks for. Outside CI it is skipped
//! (with a SKIPPED line, seen with `cargo test -- --nocapture`) where that is missing; under
//! `CI=true`, where `.ci/run` installs the SDK, a missing SDK fails it.

use std::time::Duration;

use serde_json::{json, Value};

use super::{task_id, TOOLS};
use crate::support::Server;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/python_client.py");

/// Why the script cannot run here, or `None` when it can.
async fn sdk_missing() -> Option<String> {
    let probe = tokio::process::Command::new("python3")
        .args([SCRIPT, "--check"])
        .output()
        .await;
    match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) if out.status.code() == Some(3) => {
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok(out) => Some(format!(
            "python3 cannot run the check: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(err) => Some(format!("no python3: {err}")),
    }
}

#[tokio::test]
async fn the_python_sdk_works_a_task_skipped_without_the_sdk_outside_ci() {
    if let Some(why) = sdk_missing().await {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI needs the Python MCP SDK (python3 -m pip install mcp==2.3.0): {why}"
        );
        let notice = format!(
            "SKIPPED the_python_sdk_works_a_task_skipped_without_the_sdk_outside_ci: {why} \
             (python3 -m pip install mcp==2.3.0)"
        );
        println!("{notice}");
        eprintln!("{notice}");
        return;
    }
    let server = Server::start().await;
    let token = server.agent("py-1", &[]).await;
    let id = task_id(&server, json!({"title": "from python"})).await;
    let run = tokio::process::Command::new("python3")
        .arg(SCRIPT)
        .arg(format!("{}/mcp", server.url))
        .arg(&token)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the Python client finishes")
        .unwrap();
    assert!(
        out.status.success(),
        "the Python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON report");
    let mut tools = TOOLS.to_vec();
    tools.sort_unstable();
    assert_eq!(seen["tools"], json!(tools));
    assert_eq!(seen["task"], id);
    assert_eq!(seen["progress"]["is_error"], false, "{seen}");
    assert_eq!(seen["done"]["content"]["status"], "completed", "{seen}");
    assert_eq!(seen["stale"]["is_error"], true, "{seen}");
    assert_eq!(seen["stale"]["content"]["code"], "lease_lost", "{seen}");
    let (_, task) = server.get(&server.admin, &format!("/tasks/{id}")).await;
    assert_eq!(task["status"], "completed");
    assert_eq!(task["result"]["summary"], "done from python");
    assert_eq!(task["progress"]["note"], "half way");
    server.stop().await;
}
