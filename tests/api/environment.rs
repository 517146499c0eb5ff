//! What programs the server starts inherit: a real `taskyard serve` started with secrets in its
//! environment runs an agent and a command loop, which see a clean environment (plus what the
//! config passes through) and find the `taskyard` CLI on their PATH.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;

use serde_json::{json, Value};

use crate::loops::script;
use crate::notify::eventually;
use crate::support::{serve_child, ADMIN_TOKEN};

/// The variables a program wrote with `env` into `file`.
fn read_env(file: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn check(vars: &BTreeMap<String, String>, who: &str) {
    for secret in [
        "TASKYARD_SMTP_PASSWORD",
        "TASKYARD_ADMIN_TOKEN",
        "SOME_OTHER_SECRET",
    ] {
        assert!(!vars.contains_key(secret), "{who} got {secret}: {vars:?}");
    }
    assert_eq!(
        vars.get("AGENT_API_KEY").map(String::as_str),
        Some("agent-key"),
        "{who}"
    );
    assert_eq!(
        vars.get("TASKYARD_BIN").map(String::as_str),
        Some(env!("CARGO_BIN_EXE_taskyard")),
        "{who}"
    );
    assert!(
        vars.contains_key("TASKYARD_TOKEN") && vars.contains_key("PATH"),
        "{who}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_command_loops_get_a_clean_environment_and_find_taskyard() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let agent = script(
        dir.path(),
        "agent.sh",
        "env > \"$OUT/run.env\"\ntaskyard task complete --summary \"found taskyard on PATH\" || exit 9",
    );
    let scan = script(dir.path(), "scan.sh", "env > \"$OUT/loop.env\"");
    let config = dir.path().join("taskyard.toml");
    std::fs::write(
        &config,
        format!(
            "[agent_types.development-lead]\ncommand = [{agent:?}]\nenv = {{ OUT = {out:?} }}\n\
             env_passthrough = [\"AGENT_API_KEY\"]\n"
        ),
    )
    .unwrap();
    let loops = dir.path().join("loops");
    std::fs::create_dir(&loops).unwrap();
    std::fs::write(
        loops.join("assignment.toml"),
        "kind = \"assignment\"\nschedule = \"every 1h\"\n",
    )
    .unwrap();
    std::fs::write(
        loops.join("scan.toml"),
        format!(
            "kind = \"command\"\nschedule = \"every 1h\"\ncommand = [{scan:?}]\n\
             env = {{ OUT = {out:?} }}\nenv_passthrough = [\"AGENT_API_KEY\"]\n"
        ),
    )
    .unwrap();
    let (mut server, url) = serve_child(
        &dir.path().join("data"),
        &loops,
        &[
            ("TASKYARD_CONFIG", config.as_os_str()),
            ("TASKYARD_SMTP_PASSWORD", OsStr::new("smtp-secret")),
            ("SOME_OTHER_SECRET", OsStr::new("other-secret")),
            ("AGENT_API_KEY", OsStr::new("agent-key")),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{url}/api/v1{path}");
    let created: Value = http
        .post(api("/tasks"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"title": "urgent", "priority": "P0"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_i64().unwrap();
    let run: Value = eventually(|| async {
        let page: Value = http
            .get(api(&format!("/runs?task_id={id}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let run = page["items"].get(0)?.clone();
        (!["starting", "running"].contains(&run["status"].as_str()?)).then_some(run)
    })
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    check(&read_env(&out.join("run.env")), "the run");

    let ran = http
        .post(api("/loops/scan/run"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(ran.status().is_success(), "{}", ran.text().await.unwrap());
    let vars = read_env(&out.join("loop.env"));
    check(&vars, "the command loop");
    server.kill().await.unwrap();
}
