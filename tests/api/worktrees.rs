//! Runs in git worktrees of their own, with a real repository, real git and real agent
//! processes: each run commits on its own branch, which becomes a deliverable of the task it
//! completes; a repository that is not one fails the start; a restart and a failed run keep the
//! branch and leave no worktree behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use taskyard::config::{AgentTypeConfig, Config, Isolation, OnRestart};

use crate::spawn::{agent_type, dead, exited, wait_for};
use crate::support::{test_config, Server};

/// Runs git in `dir` (with an identity: a test machine may have none); returns its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com", "-C"])
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository on branch `main` with one commit (of `README`).
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("README"), "the project\n").unwrap();
    git(dir.path(), &["add", "README"]);
    git(dir.path(), &["commit", "-q", "-m", "start"]);
    dir
}

/// Commits a file of its own (`task-<id>.txt`) in the run's worktree, as an agent would.
const COMMITS: &str = r#"cd "$TASKYARD_WORKTREE" || exit 3
echo "work of task $TASKYARD_TASK_ID" > "task-$TASKYARD_TASK_ID.txt"
git add "task-$TASKYARD_TASK_ID.txt" || exit 4
git -c user.name=agent -c user.email=agent@example.com commit -q -m "task $TASKYARD_TASK_ID" || exit 5"#;

/// An agent type running `body` in a worktree of `repo`.
fn isolated(scripts: &Path, repo: &Path, name: &str, body: &str) -> AgentTypeConfig {
    agent_type(scripts, name, body, |t| {
        t.isolation = Isolation::Worktree;
        t.repo = Some(repo.to_path_buf());
    })
}

/// A test config on `data` whose development-lead is `agent`.
fn config_with(data: &Path, agent: AgentTypeConfig) -> Config {
    let mut config = test_config(data);
    config.agent_types.insert("development-lead".into(), agent);
    config
}

/// The entries left in `<data-dir>/worktrees/`.
fn worktree_folders(data: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(data.join("worktrees")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The worktrees `git worktree list` names in `repo`.
fn listed_worktrees(repo: &Path) -> Vec<String> {
    git(repo, &["worktree", "list", "--porcelain"])
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .map(str::to_string)
        .collect()
}

/// The one run of task `task`.
async fn run_of(server: &Server, task: &Value) -> Value {
    let (_, runs) = server
        .get(&server.admin, &format!("/runs?task_id={}", task["id"]))
        .await;
    let items = runs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{runs}");
    items[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_commit_on_their_own_branches_which_become_deliverables() {
    let repo = repository();
    let scripts = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    // The script checks what it was given: its working folder, the placeholders, the prompt.
    let body = format!(
        r#"[ "$(pwd -P)" = "$(cd "$TASKYARD_WORKTREE" && pwd -P)" ] || exit 10
[ "$2" = "$TASKYARD_BRANCH" ] && [ "$3" = "$TASKYARD_WORKTREE" ] || exit 11
grep -q "on the branch $TASKYARD_BRANCH" "$TASKYARD_PROMPT_FILE" || exit 12
{COMMITS}
"$TASKYARD_BIN" task complete --summary "committed on $TASKYARD_BRANCH" \
  --deliverable "file:task-$TASKYARD_TASK_ID.txt" --deliverable "branch:$TASKYARD_BRANCH" || exit 6"#
    );
    let mut agent = isolated(scripts.path(), repo.path(), "committer", &body);
    agent.command.extend(["{branch}".into(), "{worktree}".into()]);
    let server = Server::boot(config_with(data.path(), agent)).await;
    let mut events = server.app_store.bus().subscribe();
    let first = server.task(json!({"title": "one", "priority": "P0"})).await;
    let second = server.task(json!({"title": "two", "priority": "P0"})).await;
    let spawned = server.loops.context().spawner.assign().await.unwrap().spawned;
    assert_eq!(spawned, 2, "both start at once");
    let mut ended = Vec::new();
    while ended.len() < 2 {
        ended.push(wait_for(&mut events, |e| e.kind() == "run.exited").await);
    }

    let mut branches = Vec::new();
    for (task, other) in [(&first, &second), (&second, &first)] {
        let run = run_of(&server, task).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        let branch = run["branch"].as_str().unwrap().to_string();
        assert_eq!(branch, format!("taskyard/{}-{}", task["id"], run["id"]));
        let head = git(repo.path(), &["rev-parse", &branch]);
        assert_eq!(run["base"], git(repo.path(), &["rev-parse", "main"]));
        assert_eq!(
            (run["branch_head"].as_str(), run["branch_commits"].as_i64()),
            (Some(head.as_str()), Some(1))
        );
        let event = ended.iter().find(|e| e.task_id == task["id"].as_i64()).unwrap();
        assert_eq!(
            (
                event.data()["branch"].as_str(),
                event.data()["branch_commits"].as_i64()
            ),
            (Some(branch.as_str()), Some(1)),
            "{:?}",
            event.data()
        );

        let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
        assert_eq!(t["status"], "completed");
        // The branch the agent named itself is not listed twice: the server's entry, with its
        // head, replaces it.
        assert_eq!(
            t["result"]["deliverables"],
            json!([
                {"kind": "file", "ref": format!("task-{}.txt", task["id"])},
                {"kind": "branch", "ref": branch, "note": format!("{head} (+1 commits)")}
            ]),
            "{t}"
        );
        // The branch holds the base and its own run's file, nothing of the other's.
        let files = git(repo.path(), &["ls-tree", "-r", "--name-only", &branch]);
        assert_eq!(
            files.lines().collect::<Vec<_>>(),
            ["README", &format!("task-{}.txt", task["id"])],
            "{branch}: {files}"
        );
        assert!(!files.contains(&format!("task-{}.txt", other["id"])));
        branches.push(branch);
    }
    assert_ne!(branches[0], branches[1]);
    assert_eq!(
        worktree_folders(data.path()),
        Vec::<PathBuf>::new(),
        "no worktree is left"
    );
    let main = std::fs::canonicalize(repo.path()).unwrap();
    assert_eq!(
        listed_worktrees(repo.path()),
        [main.to_str().unwrap()],
        "git knows only the main one"
    );
    assert_eq!(
        git(repo.path(), &["status", "--porcelain"]),
        "",
        "the main checkout is untouched"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repo_that_is_not_a_git_repository_fails_the_start() {
    let not_a_repo = tempfile::tempdir().unwrap();
    let scripts = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let agent = isolated(
        scripts.path(),
        not_a_repo.path(),
        "never",
        r#"touch "$OUT/started""#,
    );
    let server = Server::boot(config_with(data.path(), agent)).await;
    let task = server.task(json!({"title": "t", "priority": "P0"})).await;
    let outcome = server.loops.context().spawner.assign().await.unwrap();
    assert_eq!((outcome.spawned, outcome.to_people), (0, 1), "{outcome:?}");

    let run = run_of(&server, &task).await;
    assert_eq!(run["status"], "failed");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("not a git repository") && error.contains(not_a_repo.path().to_str().unwrap()),
        "git's message: {error}"
    );
    assert!(run.get("branch").is_none(), "{run}");
    let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_i64()),
        (Some("available"), Some(0)),
        "handed back whole, as any start that fails"
    );
    let (_, why) = server
        .get(&server.admin, &format!("/tasks/{}/why", task["id"]))
        .await;
    let last = why["decisions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["data"]["decision"], "human", "{why}");
    assert!(!scripts.path().join("started").exists(), "the agent never ran");
    assert_eq!(worktree_folders(data.path()), Vec::<PathBuf>::new());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_removes_a_dead_runs_worktree_and_keeps_its_branch() {
    let repo = repository();
    let scripts = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let body = format!(
        "{COMMITS}\n\"$TASKYARD_BIN\" task progress --percent 50 --note committed || exit 6\nsleep 300"
    );
    let mut config = config_with(data.path(), isolated(scripts.path(), repo.path(), "dies", &body));
    config.spawner.on_restart = OnRestart::Terminate;
    let server = Server::boot(config.clone()).await;
    let mut events = server.app_store.bus().subscribe();
    let task = server.task(json!({"title": "t", "priority": "P0"})).await;
    assert_eq!(server.loops.context().spawner.assign().await.unwrap().spawned, 1);
    wait_for(&mut events, |e| {
        e.kind() == "task.progress" && e.task_id == task["id"].as_i64()
    })
    .await;
    let run = run_of(&server, &task).await;
    let pid = run["pid"].as_i64().unwrap();
    let worktree = PathBuf::from(run["worktree"].as_str().unwrap());
    assert!(worktree.join(format!("task-{}.txt", task["id"])).exists());
    assert_eq!(worktree_folders(data.path()), std::slice::from_ref(&worktree));
    server.stop().await;

    // The run dies while no server watches it.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !dead(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the run's process dies");

    let server = Server::boot(config).await;
    let run = run_of(&server, &task).await;
    assert_eq!(run["status"], "lost", "{run}");
    let branch = run["branch"].as_str().unwrap();
    let head = git(repo.path(), &["rev-parse", branch]);
    assert_eq!(
        (run["branch_head"].as_str(), run["branch_commits"].as_i64()),
        (Some(head.as_str()), Some(1)),
        "its commits are recorded before the worktree goes"
    );
    assert!(!worktree.exists(), "the worktree is gone");
    assert_eq!(worktree_folders(data.path()), Vec::<PathBuf>::new());
    assert_eq!(listed_worktrees(repo.path()).len(), 1);
    let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(t["status"], "available", "handed back");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_keeps_its_branch_and_shows_it() {
    let repo = repository();
    let scripts = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let body = format!("{COMMITS}\nexit 1");
    let server = Server::boot(config_with(
        data.path(),
        isolated(scripts.path(), repo.path(), "fails", &body),
    ))
    .await;
    let mut events = server.app_store.bus().subscribe();
    let task = server
        .task(json!({"title": "t", "priority": "P0", "max_attempts": 1}))
        .await;
    assert_eq!(server.loops.context().spawner.assign().await.unwrap().spawned, 1);
    let ended = wait_for(&mut events, exited(&task)).await;
    assert_eq!(ended.data()["status"], "failed");

    let run = run_of(&server, &task).await;
    let branch = run["branch"].as_str().unwrap().to_string();
    let head = git(repo.path(), &["rev-parse", &branch]);
    assert_eq!(
        (run["branch_head"].as_str(), run["branch_commits"].as_i64()),
        (Some(head.as_str()), Some(1)),
        "{run}"
    );
    assert_eq!(
        git(repo.path(), &["log", "-1", "--format=%s", &branch]),
        format!("task {}", task["id"])
    );
    assert_eq!(worktree_folders(data.path()), Vec::<PathBuf>::new());
    let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(t["status"], "failed");
    assert!(
        t["result"].is_null(),
        "no deliverable for work not completed: {t}"
    );

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(["runs", "show", &run["id"].to_string()])
        .env("TASKYARD_URL", &server.url)
        .env("TASKYARD_TOKEN", &server.admin)
        .output()
        .await
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("branch {branch} at {head} (+1 commits")),
        "{shown}"
    );
    // The next holder is handed the branch.
    let (_, handoff) = server
        .get(&server.admin, &format!("/tasks/{}/handoff", task["id"]))
        .await;
    let left = &handoff["attempts"][0]["branch"];
    assert_eq!(
        (left["kind"].as_str(), left["ref"].as_str()),
        (Some("branch"), Some(branch.as_str())),
        "{handoff}"
    );
    server.stop().await;
}

#[test]
fn config_check_names_a_worktree_without_a_repo() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("taskyard.toml");
    // `taskyard config check` of an agent type with `isolation = …` and no repo: its stderr.
    let refused = |isolation: &str| {
        let toml = format!("[agent_types.coder]\ncommand = [\"claude\"]\nisolation = \"{isolation}\"\n");
        std::fs::write(&file, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
            .args(["config", "check", "--config", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let said = refused("worktree");
    assert!(said.contains("agent_types.coder.repo"), "{said}");
    let said = refused("container");
    assert!(said.contains("isolation") && said.contains("worktree"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_loop_removes_worktrees_left_by_runs_that_are_over() {
    let repo = repository();
    let scripts = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let agent = isolated(scripts.path(), repo.path(), "unused", "exit 0");
    let server = Server::boot(config_with(data.path(), agent)).await;
    // A worktree of a run this database does not know (a folder from before it, say), and a
    // folder that is no run's.
    let leftover = data.path().join("worktrees").join("run-77");
    git(
        repo.path(),
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "old",
            leftover.to_str().unwrap(),
            "main",
        ],
    );
    let other = data.path().join("worktrees").join("notes");
    std::fs::create_dir(&other).unwrap();
    assert_eq!(listed_worktrees(repo.path()).len(), 2);

    let table: toml::Table = toml::from_str("backups_keep = 0").unwrap();
    let retention = taskyard::loops::build("retention", "retention-backup", &table).unwrap();
    let outcome = retention.run_once(server.loops.context()).await.unwrap();
    assert_eq!(outcome.details["worktrees_removed"], 1, "{:?}", outcome.details);
    assert!(!leftover.exists());
    assert!(other.exists(), "only runs' worktrees are touched");
    assert_eq!(listed_worktrees(repo.path()).len(), 1, "the repository forgot it");
    git(repo.path(), &["rev-parse", "--verify", "old"]);
    server.stop().await;
}
