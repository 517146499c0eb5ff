//! Prompts of any size the API accepts reach a run: always as a file in the run's folder, in
//! `TASKYARD_PROMPT` and argv only when they fit. A command that insists on `{prompt}` too big
//! for one argument fails to start with a reason that names `{prompt_file}`.

use std::os::unix::fs::PermissionsExt;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::spawn::{agent_type, exited, wait_for};
use crate::support::Server;

/// A task body with the most text the API takes: a 64 KiB description and 100 criteria of
/// 2,000 characters, about 264 KB in all (an argument may hold 128 KiB).
fn huge_task() -> Value {
    let description = format!("START {} END", "d".repeat(64 * 1024 - 10));
    let criteria: Vec<String> = (0..100)
        .map(|i| format!("{i:03} {}", "c".repeat(1_996)))
        .collect();
    json!({"title": "huge", "priority": "P0", "description": description, "acceptance_criteria": criteria})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_prompt_reaches_the_run_through_its_prompt_file() {
    let scripts = tempfile::tempdir().unwrap();
    let out = scripts.path().to_str().unwrap().to_string();
    let server = Server::start_with(|c| {
        c.agent_types.insert(
            "development-lead".into(),
            agent_type(
                scripts.path(),
                "reader",
                r#"test "$1" = "$TASKYARD_PROMPT_FILE" || exit 3
test -z "$TASKYARD_PROMPT" || exit 4
cp "$1" "$OUT/got.md"
"$TASKYARD_BIN" task complete --summary "read it" || exit 5"#,
                |t| t.command = vec![t.command[0].clone(), "{prompt_file}".into()],
            ),
        );
    })
    .await;
    let mut events = server.app_store.bus().subscribe();
    let task = server.task(huge_task()).await;
    server.loops.context().spawner.assign().await.unwrap();
    let ended = wait_for(&mut events, exited(&task)).await;
    assert_eq!(ended.data()["status"], "succeeded", "{:?}", ended.data());
    let got = std::fs::read_to_string(format!("{out}/got.md")).unwrap();
    assert!(got.len() > 200_000, "{} bytes", got.len());
    assert!(got.contains(task["description"].as_str().unwrap()));
    assert!(got.contains(task["acceptance_criteria"][99].as_str().unwrap()));

    // The prompt stays with the run, readable by the server's user only.
    let run_id = ended.data()["run_id"].as_i64().unwrap();
    let folder = server.loops.context().data_dir.join(format!("runs/{run_id}"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&folder), 0o700);
    assert_eq!(mode(&folder.join("prompt.md")), 0o600);
    assert_eq!(std::fs::read_to_string(folder.join("prompt.md")).unwrap(), got);

    // Retention removes a run's folder with its log.
    let table: toml::Table = toml::from_str("run_logs_max_age = \"0s\"\nbackups_keep = 0").unwrap();
    let retention = taskyard::loops::build("retention", "retention-backup", &table).unwrap();
    let outcome = retention.run_once(server.loops.context()).await.unwrap();
    assert_eq!(outcome.details["run_folders_pruned"], 1, "{:?}", outcome.details);
    assert!(!folder.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_prompt_in_an_argument_fails_the_start_and_names_prompt_file() {
    let scripts = tempfile::tempdir().unwrap();
    let server = Server::start_with(|c| {
        c.agent_types.insert(
            "development-lead".into(),
            agent_type(scripts.path(), "claude", "exit 0", |t| {
                t.command = vec![t.command[0].clone(), "-p".into(), "{prompt}".into()]
            }),
        );
    })
    .await;
    let task = server.task(huge_task()).await;
    let outcome = server.loops.context().spawner.assign().await.unwrap();
    assert_eq!(outcome.to_people, 1, "{outcome:?}");
    let (status, why) = server
        .get(&server.admin, &format!("/tasks/{}/why", task["id"]))
        .await;
    assert_eq!(status, StatusCode::OK);
    let reason = why["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["data"]["reason"].as_str())
        .find(|r| r.contains("could not start"))
        .unwrap_or_else(|| panic!("no failed start in {why}"))
        .to_string();
    assert!(
        reason.contains("{prompt_file}") && reason.contains("{prompt}"),
        "{reason}"
    );

    // A prompt that fits still goes into the argument and TASKYARD_PROMPT, as before.
    let small = server.task(json!({"title": "small", "priority": "P0"})).await;
    let mut events = server.app_store.bus().subscribe();
    server.loops.context().spawner.assign().await.unwrap();
    let ended = wait_for(&mut events, exited(&small)).await;
    assert!(
        ended.data()["error"]
            .as_str()
            .unwrap_or("")
            .contains("without completing"),
        "{:?}",
        ended.data()
    );
}
