//! The inbox against whoever else can write into its folder: links and other things that are not
//! regular files are never followed, read or written through, and are answered with an error.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use taskyard::loops::{self, Outcome};

use crate::support::Server;

async fn run_inbox(server: &Server, dir: &Path) -> anyhow::Result<Outcome> {
    let table: toml::Table = toml::from_str(&format!("dir = {:?}", dir.to_str().unwrap())).unwrap();
    let imp = loops::build("inbox", "inbox", &table).unwrap();
    tokio::time::timeout(Duration::from_secs(60), imp.run_once(server.loops.context()))
        .await
        .expect("the inbox never waits on what it finds")
}

fn answer(dir: &Path, stem: &str) -> Value {
    let path = dir.join(format!("{stem}.response.json"));
    assert!(
        std::fs::symlink_metadata(&path).unwrap().file_type().is_file(),
        "{} is a regular file",
        path.display()
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Asserts `stem`'s answer is the "not a regular file" error and the entry itself went to
/// `failed/`.
fn refused(dir: &Path, name: &str) {
    let stem = name.trim_end_matches(".json");
    let got = answer(dir, stem);
    assert_eq!(got["ok"], false, "{got}");
    assert_eq!(got["error"]["code"], "invalid_input", "{got}");
    assert!(
        got["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("is not a regular file"),
        "{got}"
    );
    assert!(std::fs::symlink_metadata(dir.join("failed").join(name)).is_ok());
    assert!(std::fs::symlink_metadata(dir.join(name)).is_err());
}

#[tokio::test]
async fn a_linked_temporary_answer_file_overwrites_nothing() {
    let server = Server::start().await;
    let inbox = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = elsewhere.path().join("taskyard.db");
    let key = elsewhere.path().join("link.key");
    std::fs::write(&victim, "precious database").unwrap();
    std::fs::write(&key, "precious key").unwrap();
    // The name the answer used to be written under first, and the answer's own name.
    symlink(&victim, inbox.path().join("plan.response.json.tmp")).unwrap();
    symlink(&key, inbox.path().join("plan.response.json")).unwrap();
    std::fs::write(inbox.path().join("plan.json"), r#"{"title": "A plan"}"#).unwrap();

    run_inbox(&server, inbox.path()).await.unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious database");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "precious key");
    assert_eq!(answer(inbox.path(), "plan")["ok"], true);
    assert_eq!(server.all_tasks().await.len(), 1);
}

#[tokio::test]
async fn links_pipes_and_folders_are_answered_and_never_read() {
    let server = Server::start().await;
    let inbox = tempfile::tempdir().unwrap();
    let dir = inbox.path();
    let elsewhere = tempfile::tempdir().unwrap();
    let secret = elsewhere.path().join("secret.json");
    std::fs::write(&secret, r#"{"title": "SECRET from outside the inbox"}"#).unwrap();
    symlink(&secret, dir.join("leak.json")).unwrap();
    symlink(elsewhere.path().join("nothing"), dir.join("dangling.json")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(dir.join("pipe.json"))
        .status()
        .unwrap();
    assert!(fifo.success());
    std::fs::create_dir(dir.join("folder.json")).unwrap();
    std::fs::write(dir.join("fine.json"), r#"{"title": "A regular request"}"#).unwrap();

    let outcome = run_inbox(&server, dir).await.unwrap();
    assert_eq!(outcome.details["ingested"], 1, "{:?}", outcome.details);
    assert_eq!(outcome.details["failed"], 4, "{:?}", outcome.details);
    for name in ["leak.json", "dangling.json", "pipe.json", "folder.json"] {
        refused(dir, name);
    }
    // The link itself moved, not what it points to.
    assert!(std::fs::symlink_metadata(dir.join("failed/leak.json"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(secret.exists());
    let tasks = server.all_tasks().await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["title"], "A regular request");
}

#[tokio::test]
async fn linked_processed_and_failed_folders_are_refused() {
    let server = Server::start().await;
    let inbox = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    symlink(elsewhere.path(), inbox.path().join("processed")).unwrap();
    std::fs::write(inbox.path().join("plan.json"), r#"{"title": "A plan"}"#).unwrap();
    let err = run_inbox(&server, inbox.path()).await.unwrap_err().to_string();
    assert!(err.contains("processed") && err.contains("not a folder"), "{err}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    assert!(inbox.path().join("plan.json").exists(), "the request waits");
    assert!(server.all_tasks().await.is_empty());
}
