//! Each loop kind's `run_once` against a real database, and the scheduler really firing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::StatusCode;
use serde_json::{json, Value};
use taskyard::loops::{self, Loop, LoopContext, LoopDef, Loops, Outcome, Schedule};

use crate::support::Server;

/// Builds a loop of `kind` from TOML settings and runs it once.
async fn run(server: &Server, kind: &str, settings: &str) -> anyhow::Result<Outcome> {
    let table: toml::Table = toml::from_str(settings).unwrap();
    let imp = loops::build("test", kind, &table).unwrap();
    imp.run_once(server.loops.context()).await
}

/// A moment so that "now" is strictly later than what was just written.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[tokio::test]
async fn silent_agents_go_offline_and_come_back() {
    let server = Server::start().await;
    let token = server.agent("quiet", &[]).await;
    server.get(&token, "/tasks").await;
    tick().await;
    let outcome = run(&server, "agent-liveness", "offline_after = \"1h\"")
        .await
        .unwrap();
    assert_eq!(outcome.details["offline"], json!([]), "heard from recently");
    let outcome = run(&server, "agent-liveness", "offline_after = 0").await.unwrap();
    assert_eq!(outcome.details["offline"], json!(["quiet"]));
    let (_, agents) = server.get(&server.admin, "/agents").await;
    assert_eq!(agents["items"][0]["status"], "offline");

    server.get(&token, "/tasks").await;
    let (_, agents) = server.get(&server.admin, "/agents").await;
    assert_eq!(agents["items"][0]["status"], "online");
    let kinds: Vec<String> = server.all_events().await.into_iter().map(|e| e.kind()).collect();
    assert!(
        kinds.contains(&"agent.offline".into()) && kinds.contains(&"agent.online".into()),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn expired_leases_come_back() {
    let server = Server::start().await;
    let agent = server.agent("a", &[]).await;
    let task = server.task(json!({"title": "t"})).await;
    let (_, claim) = server
        .post(
            &agent,
            &format!("/tasks/{}/claim", task["id"]),
            json!({"lease_seconds": 1}),
        )
        .await;
    assert_eq!(
        run(&server, "lease-reaper", "").await.unwrap().details["reaped"],
        0
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        run(&server, "lease-reaper", "").await.unwrap().details["reaped"],
        1
    );
    let (_, now) = server.get(&agent, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(now["status"], "available");
    let (status, body) = server
        .post(
            &agent,
            &format!("/tasks/{}/progress", task["id"]),
            json!({"fence": claim["lease"]["fence"]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("lease_lost"))
    );
}

#[tokio::test]
async fn quiet_holders_are_flagged_stalled_until_they_report() {
    let server = Server::start().await;
    let agent = server.agent("a", &[]).await;
    let task = server.task(json!({"title": "t"})).await;
    let id = task["id"].as_i64().unwrap();
    let (_, claim) = server
        .post(&agent, &format!("/tasks/{id}/claim"), json!({}))
        .await;
    tick().await;
    assert_eq!(
        run(&server, "stall-detector", "stall_after = \"1h\"")
            .await
            .unwrap()
            .details["stalled"],
        json!([])
    );
    assert_eq!(
        run(&server, "stall-detector", "stall_after = 0")
            .await
            .unwrap()
            .details["stalled"],
        json!([id])
    );
    assert_eq!(
        run(&server, "stall-detector", "stall_after = 0")
            .await
            .unwrap()
            .details["stalled"],
        json!([]),
        "once per stall"
    );
    let (_, t) = server.get(&agent, &format!("/tasks/{id}")).await;
    assert!(t["stalled_since"].is_string());
    let (_, why) = server.get(&agent, &format!("/tasks/{id}/why")).await;
    assert!(why["reasons"][0].as_str().unwrap().contains("stalled"), "{why}");
    assert_eq!(why["decisions"][0]["kind"], "task.stalled");

    // A bare heartbeat keeps the lease alive but is not progress.
    let heartbeat = json!({"fence": claim["lease"]["fence"]});
    let (status, _) = server
        .post(&agent, &format!("/tasks/{id}/progress"), heartbeat)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, t) = server.get(&agent, &format!("/tasks/{id}")).await;
    assert!(
        t["stalled_since"].is_string(),
        "a heartbeat does not clear the flag"
    );

    server
        .post(
            &agent,
            &format!("/tasks/{id}/progress"),
            json!({"fence": claim["lease"]["fence"], "percent": 10}),
        )
        .await;
    let (_, t) = server.get(&agent, &format!("/tasks/{id}")).await;
    assert!(t["stalled_since"].is_null(), "progress clears the flag");
}

#[tokio::test]
async fn dependency_release_settles_what_was_left_pending() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::boot(crate::support::test_config(dir.path())).await;
    let agent = server.agent("x", &[]).await;
    let finish = |id: Value, how: &'static str| {
        let (server, agent) = (&server, &agent);
        async move {
            let (_, claim) = server.post(agent, &format!("/tasks/{id}/claim"), json!({})).await;
            let body = match how {
                "complete" => json!({"fence": claim["lease"]["fence"], "summary": "ok"}),
                _ => json!({"fence": claim["lease"]["fence"], "reason": "no", "retryable": false}),
            };
            let (status, _) = server.post(agent, &format!("/tasks/{id}/{how}"), body).await;
            assert_eq!(status, StatusCode::OK);
        }
    };
    let done = server.task(json!({"title": "done"})).await;
    let dead = server.task(json!({"title": "dead"})).await;
    let waiting = server
        .task(json!({"title": "waiting", "depends_on": [done["id"]]}))
        .await;
    let doomed = server
        .task(json!({"title": "doomed", "depends_on": [dead["id"]]}))
        .await;
    finish(done["id"].clone(), "complete").await;
    finish(dead["id"].clone(), "fail").await;
    let outcome = run(&server, "dependency-release", "").await.unwrap();
    assert_eq!(
        outcome.details,
        json!({"released": 0, "blocked": 0}),
        "settled inline already"
    );

    // Put both back to `pending` behind the server's back, as a crash in an older version could
    // have left them: the safety net must settle them.
    let sql = "UPDATE tasks SET status = 'pending', status_reason = NULL WHERE id IN ($1, $2)";
    let ids = (waiting["id"].as_i64(), doomed["id"].as_i64());
    match crate::backend::database_url(dir.path()) {
        Some(url) => {
            let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            sqlx::query(sql)
                .bind(ids.0)
                .bind(ids.1)
                .execute(&mut db)
                .await
                .unwrap();
        }
        None => {
            let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
                "sqlite://{}",
                dir.path().join("taskyard.db").display()
            ))
            .await
            .unwrap();
            sqlx::query(sql)
                .bind(ids.0)
                .bind(ids.1)
                .execute(&mut db)
                .await
                .unwrap();
        }
    }
    let outcome = run(&server, "dependency-release", "").await.unwrap();
    assert_eq!(outcome.details, json!({"released": 1, "blocked": 1}));
    let (_, w) = server.get(&agent, &format!("/tasks/{}", waiting["id"])).await;
    assert_eq!(w["status"], "available");
    let (_, d) = server.get(&agent, &format!("/tasks/{}", doomed["id"])).await;
    assert_eq!(d["status"], "blocked");
    assert!(d["status_reason"].as_str().unwrap().contains("failed"));
}

#[tokio::test]
async fn backups_are_real_databases_and_old_ones_are_dropped() {
    let server = Server::start().await;
    server.task(json!({"title": "keep me", "key": "precious"})).await;
    let outcome = run(&server, "retention-backup", "backups_keep = 2")
        .await
        .unwrap();
    if crate::backend::postgres() {
        // A database server's registry is backed up with its own tools; the run says so.
        assert!(outcome.summary.contains("pg_dump"), "{}", outcome.summary);
        assert_eq!(outcome.details["backup"], Value::Null);
        return;
    }
    let backup = std::path::PathBuf::from(outcome.details["backup"].as_str().unwrap());
    assert!(backup.exists());
    run(&server, "retention-backup", "backups_keep = 2")
        .await
        .unwrap();
    let outcome = run(&server, "retention-backup", "backups_keep = 2")
        .await
        .unwrap();
    assert_eq!(outcome.details["backups_removed"], 1);
    assert!(!backup.exists(), "the oldest backup went");
    let backup = std::path::PathBuf::from(outcome.details["backup"].as_str().unwrap());
    let count = std::fs::read_dir(backup.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".db"))
        .count();
    assert_eq!(count, 2);

    // The backup opens as the database of a fresh server.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&backup, restored.path().join("taskyard.db")).unwrap();
    let other = Server::boot(crate::support::test_config(restored.path())).await;
    let (status, task) = other.get(&other.admin, "/tasks/precious").await;
    assert_eq!(
        (status, task["title"].as_str()),
        (StatusCode::OK, Some("keep me"))
    );
    other.stop().await;

    let outcome = run(
        &server,
        "retention-backup",
        "events_max_age = 0\nbackups_keep = 0",
    )
    .await
    .unwrap();
    assert!(outcome.details["events_pruned"].as_u64().unwrap() > 0);
    assert!(server.all_events().await.is_empty());
}

#[tokio::test]
async fn inbox_files_become_tasks_with_responses() {
    let server = Server::start().await;
    let inbox = tempfile::tempdir().unwrap();
    let dir = inbox.path();
    let settings = format!("dir = {:?}", dir.to_str().unwrap());
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    let write = |name: &str, body: &str, aged: bool| {
        std::fs::write(dir.join(name), body).unwrap();
        if aged {
            std::fs::File::options()
                .write(true)
                .open(dir.join(name))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    };
    write(
        "fix-login.json",
        r#"{"title": "Fix login", "priority": "P1"}"#,
        true,
    );
    write("broken.json", r#"{"title": "Broken", "#, true);
    write("half.json", r#"{"title": "Still being wri"#, false);
    write("wrong.json", r#"{"title": "Wrong", "priority": "P9"}"#, true);
    write("notes.txt", "not a task", true);

    let outcome = run(&server, "inbox", &settings).await.unwrap();
    assert_eq!(outcome.details, json!({"ingested": 1, "failed": 2, "waiting": 1}));
    let read =
        |name: &str| -> Value { serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap() };
    let ok = read("fix-login.response.json");
    assert_eq!(ok["ok"], true);
    assert!(
        ok["task"]["key"]
            .as_str()
            .unwrap()
            .starts_with("inbox-fix-login-"),
        "{ok}"
    );
    assert!(dir.join("processed/fix-login.json").exists());
    let broken = read("broken.response.json");
    assert_eq!(broken["error"]["code"], "invalid_input");
    assert!(dir.join("failed/broken.json").exists());
    assert_eq!(read("wrong.response.json")["error"]["field"], "priority");
    assert!(
        dir.join("half.json").exists() && !dir.join("half.response.json").exists(),
        "a half-written file waits"
    );
    assert!(dir.join("notes.txt").exists());

    // The same request dropped again is not a second task.
    write(
        "fix-login.json",
        r#"{"title": "Fix login", "priority": "P1"}"#,
        true,
    );
    run(&server, "inbox", &settings).await.unwrap();
    assert_eq!(read("fix-login.response.json")["created"], false);
    let tasks = server.all_tasks().await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["created_by"], "loop:inbox");

    // A different request under a reused file name is a new task, not the old one.
    write("fix-login.json", r#"{"title": "Fix logout"}"#, true);
    run(&server, "inbox", &settings).await.unwrap();
    let again = read("fix-login.response.json");
    assert_eq!(
        (again["created"].as_bool(), again["task"]["title"].as_str()),
        (Some(true), Some("Fix logout"))
    );
    assert_eq!(server.all_tasks().await.len(), 2);
}

pub(crate) fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test]
async fn command_loops_upsert_printed_tasks_once() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let title = dir.path().join("title");
    std::fs::write(&title, "Triage flaky test").unwrap();
    let program = script(
        dir.path(),
        "scan.sh",
        &format!(
            r#"test -n "$TASKYARD_TOKEN" || exit 9
echo "{{\"key\": \"flaky-1\", \"title\": \"$(cat {})\", \"kind\": \"bug\"}}"
echo '{{"key": "flaky-2", "title": "Second"}}'
echo 'not json'
echo '{{"title": "no key"}}'
echo "scanned" >&2"#,
            title.display()
        ),
    );
    let settings = format!("command = [{program:?}]\ntimeout = \"30s\"");
    let first = run(&server, "command", &settings).await.unwrap();
    assert_eq!(
        (
            first.details["created"].as_u64(),
            first.details["invalid"].as_array().map(Vec::len)
        ),
        (Some(2), Some(2))
    );
    assert_eq!(first.details["exit_code"], 0);
    assert!(first.details["stderr_tail"].as_str().unwrap().contains("scanned"));
    let second = run(&server, "command", &settings).await.unwrap();
    assert_eq!(
        (
            second.details["created"].as_u64(),
            second.details["unchanged"].as_u64()
        ),
        (Some(0), Some(2))
    );
    assert_eq!(
        server.all_tasks().await.len(),
        2,
        "upserted once, though it ran twice"
    );

    std::fs::write(&title, "Triage the flaky test").unwrap();
    let third = run(&server, "command", &settings).await.unwrap();
    assert_eq!(third.details["updated"], 1);
    let (_, t) = server.get(&server.admin, "/tasks/flaky-1").await;
    assert_eq!(t["title"], "Triage the flaky test");
}

#[tokio::test]
async fn command_loop_failures_and_timeouts_are_reported() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let failing = script(dir.path(), "fail.sh", "echo 'database unreachable' >&2\nexit 3");
    let err = run(&server, "command", &format!("command = [{failing:?}]"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exit code 3") && err.contains("database unreachable"),
        "{err}"
    );

    let hanging = script(dir.path(), "hang.sh", "sleep 300 &\nsleep 300");
    let err = run(
        &server,
        "command",
        &format!("command = [{hanging:?}]\ntimeout = \"1s\""),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("timeout"), "{err}");

    let err = run(&server, "command", "command = [\"/no/such/program\"]")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot start"), "{err}");
}

/// A loop that panics on every run.
struct Panicky;

impl Loop for Panicky {
    fn run_once<'a>(&'a self, _ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async { panic!("boom") })
    }
}

/// A loop that counts its runs.
struct Counter(Arc<AtomicUsize>);

impl Loop for Counter {
    fn run_once<'a>(&'a self, _ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move { Ok(Outcome::new(format!("run {n}"), json!({"n": n}))) })
    }
}

fn def(name: &str, imp: Arc<dyn Loop>) -> LoopDef {
    LoopDef {
        name: name.into(),
        kind: "test".into(),
        schedule: Schedule::Every(Duration::from_secs(1)),
        enabled: true,
        source: "test".into(),
        imp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_fires_records_runs_and_survives_a_panicking_loop() {
    let server = Server::start().await;
    let count = Arc::new(AtomicUsize::new(0));
    let scheduled = Loops::new(
        vec![
            def("counter", Arc::new(Counter(count.clone()))),
            def("panicky", Arc::new(Panicky)),
        ],
        server.loops.context().clone(),
    );
    let mut events = server.app_store.bus().subscribe();
    scheduled.start().await.unwrap();
    // Wait (bounded) until the counter has run three times and the panicky loop at least twice.
    let (mut counted, mut panicked) = (0, 0);
    tokio::time::timeout(Duration::from_secs(60), async {
        while counted < 3 || panicked < 2 {
            let event = events.recv().await.unwrap();
            if event.kind() == "loop.ran" {
                match event.data()["loop"].as_str() {
                    Some("counter") => counted += 1,
                    Some("panicky") => panicked += 1,
                    _ => {}
                }
            }
        }
    })
    .await
    .expect("both loops kept running");
    let infos = scheduled.list().await.unwrap();
    scheduled.stop().await;
    let counter = infos.iter().find(|l| l.name == "counter").unwrap();
    assert!(counter.last_run.as_ref().unwrap().ok);
    assert!(counter.next_run_at.is_some());
    let panicky = infos.iter().find(|l| l.name == "panicky").unwrap();
    let last = panicky.last_run.as_ref().unwrap();
    assert!(!last.ok && last.summary.contains("boom"), "{}", last.summary);
    assert!(panicky.failures >= 2);
    let runs = server.app_store.loop_runs("counter", 10).await.unwrap();
    assert!(runs.len() >= 3 && runs.iter().all(|r| r.ok));
}

#[tokio::test]
async fn loops_are_listed_and_run_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::test_config(dir.path());
    let loops_dir = dir.path().join("loops");
    std::fs::create_dir_all(&loops_dir).unwrap();
    std::fs::write(
        loops_dir.join("reaper.toml"),
        "kind = \"lease-reaper\"\nschedule = \"every 1h\"\n",
    )
    .unwrap();
    std::fs::write(
        loops_dir.join("idle.toml"),
        "kind = \"stall-detector\"\nschedule = \"0 0 4 * * *\"\nenabled = false\n",
    )
    .unwrap();
    config.server.loops_dir = loops_dir;
    let server = Server::boot(config).await;
    let (status, page) = server.get(&server.admin, "/loops").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["idle", "reaper"]);
    assert!(
        page["items"][0]["next_run_at"].is_null(),
        "disabled loops are not scheduled"
    );
    assert!(page["items"][1]["next_run_at"].is_string());
    let (status, run) = server.post(&server.admin, "/loops/reaper/run", json!({})).await;
    assert_eq!(
        (status, run["ok"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{run}"
    );
    let (status, _) = server.post(&server.admin, "/loops/nope/run", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let agent = server.agent("a", &[]).await;
    let (status, _) = server.post(&agent, "/loops/reaper/run", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, page) = server.get(&server.admin, "/loops").await;
    assert_eq!(page["items"][1]["last_run"]["id"], run["id"]);
    let (status, system) = server.get(&agent, "/system").await;
    assert_eq!(status, StatusCode::OK);
    assert!(system["samples"].is_array());
    server.stop().await;
}

#[tokio::test]
async fn a_bad_loop_file_stops_startup_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::test_config(dir.path());
    let loops_dir = dir.path().join("loops");
    std::fs::create_dir_all(&loops_dir).unwrap();
    std::fs::write(
        loops_dir.join("typo.toml"),
        "kind = \"agent-liveness\"\nschedule = \"every 10s\"\nofline_after = \"5m\"\n",
    )
    .unwrap();
    config.server.loops_dir = loops_dir;
    let err = taskyard::App::build(config).await.err().unwrap().to_string();
    assert!(err.contains("typo.toml") && err.contains("ofline_after"), "{err}");
}
