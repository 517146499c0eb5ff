//! Files that hold live secrets or work (emails with live take links, backups of the whole
//! database, run logs, the prompts given to runs) are readable by the server's user only, in
//! folders only that user can enter.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;
use taskyard::config::HumanConfig;
use taskyard::loops;

use crate::spawn::{agent_type, exited, wait_for};
use crate::support::Server;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The files directly in `dir` whose names end in `suffix`.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

async fn run(server: &Server, kind: &str, settings: &str) {
    let table: toml::Table = toml::from_str(settings).unwrap();
    let imp = loops::build("test", kind, &table).unwrap();
    imp.run_once(server.loops.context()).await.unwrap();
}

/// Checks that `dir` is 0700 and holds at least one `suffix` file, every one of them 0600.
fn private(dir: &Path, suffix: &str) {
    assert_eq!(mode(dir), 0o700, "{} is private", dir.display());
    let found = files(dir, suffix);
    assert!(!found.is_empty(), "{} holds {suffix} files", dir.display());
    for file in found {
        assert_eq!(mode(&file), 0o600, "{} is private", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_backups_and_run_logs_are_private() {
    let scripts = tempfile::tempdir().unwrap();
    let server = Server::start_with(|c| {
        c.humans = vec![HumanConfig {
            name: "ana".into(),
            email: "ana@example.com".into(),
            capabilities: vec!["architecture".into()],
            projects: vec![],
        }];
        c.agent_types.insert(
            "development-lead".into(),
            agent_type(scripts.path(), "talker", "echo working", |_| {}),
        );
    })
    .await;
    let data = server.loops.context().data_dir.clone();

    // An email with live take links, written by the file transport.
    server
        .task(json!({"title": "Choose a queue", "kind": "architecture", "capabilities": ["architecture"]}))
        .await;
    run(&server, "assignment", "").await;
    run(&server, "notify", "").await;
    private(&data.join("mail"), ".eml");

    // A backup: the whole database (a PostgreSQL registry is backed up with pg_dump instead).
    run(&server, "retention-backup", "backups_keep = 2").await;
    if crate::backend::postgres() {
        assert!(!data.join("backups").exists());
    } else {
        private(&data.join("backups"), ".db");
    }

    // A run's log.
    let mut events = server.app_store.bus().subscribe();
    let task = server.task(json!({"title": "urgent", "priority": "P0"})).await;
    server.loops.context().spawner.assign().await.unwrap();
    wait_for(&mut events, exited(&task)).await;
    private(&data.join("runs"), ".log");

    // The inbox folder the server creates for itself.
    run(&server, "inbox", "").await;
    assert_eq!(mode(&data.join("inbox")), 0o700);
}
