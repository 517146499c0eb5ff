//! What the command line says to a newcomer: errors in CLI terms, quiet exits on a closed
//! pipe, help that lists a command's own flags, empty lists that say so, `config check`'s
//! loops and warnings, and the edit and reroute commands.

use std::process::Output;

use serde_json::{json, Value};

use crate::support::Server;

/// Runs the binary with `args` in `dir` against `url` (with `token`, when given), with none of
/// the caller's taskyard settings.
async fn taskyard(dir: &std::path::Path, url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskyard"));
    cmd.args(args)
        .current_dir(dir)
        .env("TASKYARD_URL", url)
        .env_remove("TASKYARD_TOKEN")
        .env_remove("TASKYARD_DATA_DIR")
        .env_remove("TASKYARD_CONFIG");
    if let Some(token) = token {
        cmd.env("TASKYARD_TOKEN", token);
    }
    cmd.output().await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn client_errors_speak_of_the_command_line() {
    let empty = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    let out = taskyard(empty.path(), &server.url, None, &["task", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no token: pass --token, set TASKYARD_TOKEN, or run from the folder that holds .taskyard/admin.token"),
        "{err}"
    );
    assert!(!err.contains("Authorization"), "no HTTP header advice: {err}");

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("http://127.0.0.1:{port}");
    let out = taskyard(empty.path(), &down, Some("ty_x"), &["task", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach taskyard at {down}: is `taskyard serve` running?"
        )),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    // Far more output than a pipe holds, so the writer meets the closed end.
    let long = "a long description line\n".repeat(2_500);
    for i in 0..4 {
        server
            .task(json!({"title": format!("long {i}"), "description": long}))
            .await;
    }
    let script = "\"$BIN\" task list --json | head -3 > /dev/null; echo \"status ${PIPESTATUS[0]}\"";
    let out = tokio::process::Command::new("bash")
        .args(["-c", script])
        .current_dir(dir.path())
        .env("BIN", env!("CARGO_BIN_EXE_taskyard"))
        .env("TASKYARD_URL", &server.url)
        .env("TASKYARD_TOKEN", &server.admin)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stdout.contains("status 0"), "{stdout} {stderr}");
    server.stop().await;
}

#[test]
fn bench_help_lists_only_bench_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(["bench", "--help"])
        .output()
        .unwrap();
    let help = text(&out.stdout);
    assert!(help.contains("--scenario") && help.contains("--target"), "{help}");
    for foreign in [
        "--url",
        "--data-dir",
        "--loops-dir",
        "--bind",
        "--log-format",
        "--config",
    ] {
        assert!(!help.contains(foreign), "{foreign} is not a bench flag:\n{help}");
    }
}

#[tokio::test]
async fn empty_lists_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    for (args, says) in [
        (&["runs", "list"][..], "no runs"),
        (&["task", "list"][..], "no tasks"),
        (&["notifications", "list"][..], "no notifications"),
    ] {
        let out = taskyard(dir.path(), &server.url, Some(&server.admin), args).await;
        assert!(out.status.success());
        assert_eq!(text(&out.stdout).trim(), says, "{args:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn config_check_lists_the_loops_and_warns_about_likely_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let loops = dir.path().join("loops");
    std::fs::create_dir_all(&loops).unwrap();
    std::fs::write(
        loops.join("nightly.toml"),
        "kind = \"command\"\nschedule = \"every 1h\"\ncommand = [\"true\"]\n",
    )
    .unwrap();
    std::fs::write(
        loops.join("lease-reaper.toml"),
        "kind = \"lease-reaper\"\nschedule = \"every 1m\"\nenabled = false\n",
    )
    .unwrap();
    let file = dir.path().join("taskyard.toml");
    std::fs::write(
        &file,
        "[agent_types.development-lead]\ncommand = [\"sh\", \"-c\", \"claude -p '{prompt}'\"]\n\
         [agent_types.backend-specialist]\ncommand = [\"no-such-agent-program\"]\n",
    )
    .unwrap();
    let check = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("TASKYARD_CONFIG")
            .env_remove("TASKYARD_LOOPS_DIR")
            .output()
            .unwrap()
    };
    let out = check(&["config", "check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // Every built-in loop stays beside the folder's own; a file of the same name replaces one.
    assert!(stdout.contains("loops (11;"), "{stdout}");
    assert!(stdout.contains("restart"), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} is listed: {stdout}"))
            .to_string()
    };
    assert!(line("nightly").contains("nightly.toml"));
    assert!(line("lease-reaper").contains("disabled") && line("lease-reaper").contains("lease-reaper.toml"));
    assert!(line("assignment").contains("built-in:assignment"));
    assert!(stdout.contains("spawner: on"), "{stdout}");
    assert!(
        stderr
            .contains("warning: agent_types.development-lead.command: a placeholder inside a `sh -c` script"),
        "{stderr}"
    );
    assert!(
        stderr.contains("agent_types.backend-specialist.command: the program \"no-such-agent-program\" is not found on PATH"),
        "{stderr}"
    );
    assert!(stderr.contains("nobody is emailed"), "{stderr}");

    // A TOML error reads as the parser prints it: on several lines, with the snippet.
    std::fs::write(&file, "[server]\nbind = \n").unwrap();
    let out = check(&["config", "check"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("line 2") && err.lines().count() >= 4, "{err}");
    std::fs::write(&file, "").unwrap();
    std::fs::write(
        loops.join("lease-reaper.toml"),
        "kind = \"lease-reaper\"\nschedule = \"every 1m\"\nenabeld = false\n",
    )
    .unwrap();
    let out = check(&["config", "check"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("enabeld: unknown setting (did you mean `enabled`?)"),
        "{err}"
    );
}

#[tokio::test]
async fn tasks_are_edited_and_rerouted_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    let task = server
        .task(json!({"title": "route me", "priority": "P3", "route": "human"}))
        .await;
    let id = task["id"].to_string();
    let out = taskyard(
        dir.path(),
        &server.url,
        Some(&server.admin),
        &[
            "task",
            "edit",
            &id,
            "--route",
            "agent",
            "--priority",
            "high",
            "-c",
            "rust",
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let edited: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&edited["route"], &edited["priority"], &edited["capabilities"]),
        (&json!("agent"), &json!("P1"), &json!(["rust"]))
    );
    let out = taskyard(
        dir.path(),
        &server.url,
        Some(&server.admin),
        &["task", "reroute", &id],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = taskyard(
        dir.path(),
        &server.url,
        Some(&server.admin),
        &["task", "why", &id],
    )
    .await;
    let why = text(&out.stdout);
    assert!(
        why.contains("decisions:") && why.contains("to be routed afresh"),
        "{why}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_log_has_no_colours_when_nobody_watches_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env_remove("TASKYARD_ADMIN_TOKEN")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    crate::support::wait_until_up(&format!("http://127.0.0.1:{port}/healthz"), "the server").await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let log = text(&out.stderr);
    assert!(log.contains("taskyard is listening"), "{log}");
    assert!(!log.contains('\u{1b}'), "no ANSI escapes in a piped log: {log:?}");
}

#[tokio::test]
async fn the_scale_scenario_warns_before_seeding_a_large_registry() {
    use tokio::io::AsyncBufReadExt;
    // Against a running server, so that stopping the bench leaves no server of its own behind.
    let server = Server::start().await;
    let mut bench = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args([
            "bench",
            "--scenario",
            "scale",
            "--large",
            "1000000",
            "--target",
            &server.url,
        ])
        .args(["--token", &server.admin])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(bench.stderr.take().unwrap()).lines();
    let note = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("note:") {
                return line;
            }
        }
        panic!("the bench ended without a note");
    })
    .await
    .expect("the note comes before any seeding");
    assert!(
        note.contains("1000000 tasks") && note.contains("--large"),
        "{note}"
    );
    bench.kill().await.unwrap();
    server.stop().await;
}
