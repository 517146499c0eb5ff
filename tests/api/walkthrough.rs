//! The README's first steps, run as written against a fresh install: `taskyard serve` with no
//! config in an empty folder (the default config: built-in loops, no agent types, no people),
//! then the quick start's CLI lines and the curl walk-through, taken from README.md itself.

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use crate::support::{skipped, wait_until_up};

/// The first ```sh block after the line `heading` in the README.
fn readme_block(heading: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let after = &readme[readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has {heading}"))..];
    let start = after.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + after[start..].find("```").expect("the block ends");
    after[start..end].to_string()
}

/// Runs `script` with bash in `dir`; returns stdout, failing the test with stderr on an error.
async fn bash(dir: &Path, script: &str, env: &[(&str, &str)]) -> String {
    let out = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env_remove("TASKYARD_TOKEN")
        .env_remove("TASKYARD_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script}\nfailed: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walk_through_works_on_a_fresh_install() {
    let tools = ["bash", "curl", "jq"];
    if let Some(missing) = tools.iter().find(|t| {
        !std::process::Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) {
        if skipped(&format!(
            "the README walk-through needs {missing} (.ci/run installs it)"
        )) {
            return;
        }
    }
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let bin = env!("CARGO_BIN_EXE_taskyard");
    // As a newcomer starts it: no config file, no loops folder, no token in the environment.
    let _server = tokio::process::Command::new(bin)
        .args(["serve", "--bind", &address])
        .current_dir(home.path())
        .env_remove("TASKYARD_ADMIN_TOKEN")
        .env_remove("TASKYARD_CONFIG")
        .env_remove("TASKYARD_DATA_DIR")
        .env_remove("TASKYARD_LOOPS_DIR")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until_up(&format!("http://{address}/healthz"), "the fresh server").await;
    let url = format!("http://{address}");

    // The quick start's CLI lines, run from the same folder (they find the admin token there).
    let quick = readme_block("CLI commands\nrun from the same folder");
    assert!(quick.contains("task add"), "{quick}");
    let quick = quick.replace("cargo run --release --", bin);
    let listed = bash(home.path(), &quick, &[("TASKYARD_URL", &url)]).await;
    assert!(listed.contains("Fix the login redirect"), "{listed}");

    // The curl walk-through, exactly as written but for the port.
    let walk = readme_block("## An agent's cycle with curl");
    assert!(walk.contains("127.0.0.1:7311"), "{walk}");
    let out = bash(home.path(), &walk.replace("127.0.0.1:7311", &address), &[]).await;
    // curl prints each answer without a line break after it: read them as a stream of values.
    let claim = serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .map(|v| v.unwrap_or_else(|e| panic!("{e}: {out}")))
        .find(|v| v.get("task").is_some())
        .unwrap_or_else(|| panic!("the claim is printed: {out}"));
    assert_eq!(claim["lease"]["holder"], "claude-1", "{claim}");
    assert_eq!(
        claim["task"]["priority"], "P1",
        "urgent work is pulled on a fresh install"
    );

    let admin = std::fs::read_to_string(home.path().join(".taskyard/admin.token")).unwrap();
    let task: Value = reqwest::Client::new()
        .get(format!("{url}/api/v1/tasks/{}", claim["task"]["id"]))
        .bearer_auth(admin.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"]["summary"], "Token-bucket limiter on /api");
    assert_eq!(task["progress"]["percent"], 100);
    assert!(
        task["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "task.progress" && e["data"]["note"] == "middleware written, tests next"),
        "{task}"
    );
}
