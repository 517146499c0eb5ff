//! A full disk under the data folder: on a small tmpfs, a filler file takes the free space while
//! the server runs. Changes are then refused with `507 storage_full`, reads still work, a backup
//! and a mail file fail without leaving half a file, and once the filler is deleted everything
//! works again without a restart; the database passes SQLite's integrity check and keeps every
//! acknowledged task, also across a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;

use taskyard::config::NotifyConfig;
use taskyard::notify::email::{message, Body};
use taskyard::notify::mailer::Mailer;

use crate::support::{test_config, Server};

/// A tmpfs mounted on a temporary folder, unmounted when dropped (even when the test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it), or says why not: without the
    /// right to mount the test is skipped outside CI and fails under `CI=true`.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                let message =
                    format!("the full-disk test mounts a tmpfs, which needs root or CAP_SYS_ADMIN ({why})");
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{message}, and CI=true");
                }
                println!("SKIPPED: {message}");
                eprintln!("SKIPPED: {message}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a failed test's server may hold files open): detach it now, and the
            // kernel frees it once the last file closes.
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

/// Writes `path` until the disk is full; returns how many bytes it took.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => return written,
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return written,
            Err(e) => panic!("filling the disk failed otherwise: {e}"),
        }
    }
}

/// A task body with a large description that names it.
fn big_task(n: usize) -> Value {
    json!({
        "title": format!("big task {n}"),
        "description": format!("task {n}: {}", "lorem ipsum ".repeat(5_000)),
    })
}

/// Checks that every acknowledged task is there with its title and description.
async fn assert_all_there(server: &Server, acked: &[(i64, Value)]) {
    for (id, body) in acked {
        let (status, task) = server.get(&server.admin, &format!("/tasks/{id}")).await;
        assert_eq!(status, StatusCode::OK, "task {id}: {task}");
        assert_eq!(task["title"], body["title"], "task {id}");
        let description = body["description"].as_str().unwrap_or_default();
        assert_eq!(task["description"], description, "task {id}");
    }
}

/// Runs SQLite's integrity check on the database file of a stopped server.
async fn integrity_check(db: &Path) -> Vec<String> {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(db);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    rows
}

/// The names of the files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A message large enough not to fit in what a full disk has left.
fn large_mail() -> lettre::Message {
    let text = "a line of a long message\n".repeat(10_000);
    let body = Body {
        html: format!("<pre>{text}</pre>"),
        text,
    };
    message("taskyard@example.com", "ada@example.com", "Large", &body, true).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_changes_clearly_and_recovers_without_a_restart() {
    if crate::backend::sqlite_only("filling the data folder's disk") {
        return;
    }
    let Some(tmpfs) = Tmpfs::mount("32m") else {
        return;
    };
    let data = tmpfs.path().to_path_buf();
    // Configuration lives elsewhere: only the data folder is on the small disk.
    let config_dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut config = test_config(&data);
        config.server.loops_dir = config_dir.path().to_path_buf();
        config
    };
    std::fs::write(
        config_dir.path().join("backup.toml"),
        "kind = \"retention-backup\"\nschedule = \"every 1h\"\nenabled = false\n",
    )
    .unwrap();
    let server = Server::boot(config()).await;
    let agent = server.agent("reader", &[]).await;
    let mut acked: Vec<(i64, Value)> = Vec::new();
    for n in 0..5 {
        let body = big_task(n);
        let task = server.task(body.clone()).await;
        acked.push((task["id"].as_i64().unwrap(), body));
    }

    // The disk fills up; tasks keep coming until one is refused.
    let filler = data.join("filler");
    assert!(fill(&filler) > 0, "the filler took the free space");
    let mut refused = None;
    for n in 5..1_000 {
        let body = big_task(n);
        let (status, answer) = server.post(&server.admin, "/tasks", body.clone()).await;
        if status == StatusCode::CREATED {
            acked.push((answer["id"].as_i64().unwrap(), body));
        } else {
            refused = Some((status, answer));
            break;
        }
    }
    let (status, problem) = refused.expect("a full disk refuses a change");
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{problem}");
    assert_eq!(problem["code"], "storage_full", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("storage is full"),
        "{problem}"
    );
    // A larger change is refused the same way.
    let batch: Vec<Value> = (0..10).map(|n| big_task(10_000 + n)).collect();
    let (status, problem) = server
        .post(&server.admin, "/tasks/batch", json!({"tasks": batch}))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::INSUFFICIENT_STORAGE, Some("storage_full")),
        "{problem}"
    );

    // Reads still work, for the admin and for an agent (whose visit cannot be written down).
    let (status, _) = server.get(&server.admin, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, page) = server.get(&agent, "/tasks").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!page["items"].as_array().unwrap().is_empty(), "{page}");
    assert_eq!(server.all_tasks().await.len(), acked.len());
    assert_all_there(&server, &acked).await;

    // A backup cannot be written: the run is refused or recorded as failed, and no half backup
    // is left taking space.
    let (status, run) = server.post(&server.admin, "/loops/backup/run", json!({})).await;
    match status {
        StatusCode::OK => assert_eq!(run["ok"], false, "{run}"),
        _ => assert_eq!(
            (status, run["code"].as_str()),
            (StatusCode::INSUFFICIENT_STORAGE, Some("storage_full")),
            "{run}"
        ),
    }
    assert!(
        !files_in(&data.join("backups"))
            .iter()
            .any(|f| f.ends_with(".partial")),
        "{:?}",
        files_in(&data.join("backups"))
    );
    // Mail into the data folder (the `file` transport) fails, leaving no half message.
    let mailer = Mailer::from_config(&NotifyConfig::default(), &data).unwrap();
    let failed = mailer.send(large_mail()).await.unwrap_err();
    assert!(failed.message.contains("space"), "{failed:?}");
    assert_eq!(files_in(&data.join("mail")), Vec::<String>::new());

    // Space comes back: changes work again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    for n in 2_000..2_003 {
        let body = big_task(n);
        let task = server.task(body.clone()).await;
        acked.push((task["id"].as_i64().unwrap(), body));
    }
    let agent_task = json!({"title": "from the agent"});
    let (status, task) = server.post(&agent, "/tasks", agent_task.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    acked.push((task["id"].as_i64().unwrap(), agent_task));
    let (status, claim) = server
        .post(&agent, &format!("/tasks/{}/claim", acked[0].0), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{claim}");
    let (status, run) = server.post(&server.admin, "/loops/backup/run", json!({})).await;
    assert_eq!((status, &run["ok"]), (StatusCode::OK, &json!(true)), "{run}");
    mailer.send(large_mail()).await.unwrap();
    let mail = files_in(&data.join("mail"));
    assert!(mail.len() == 1 && mail[0].ends_with(".eml"), "{mail:?}");
    let backup = PathBuf::from(run["details"]["backup"].as_str().unwrap());
    assert_all_there(&server, &acked).await;
    let tasks = server.all_tasks().await;
    assert_eq!(tasks.len(), acked.len(), "no task beyond those acknowledged");
    server.stop().await;

    // The stopped server's database and its backup are sound.
    let db = data.join(taskyard::config::DATABASE_FILE);
    assert_eq!(integrity_check(&db).await, ["ok"]);
    assert_eq!(integrity_check(&backup).await, ["ok"]);

    // A restart on the same folder finds everything as it was, and takes changes.
    let server = Server::boot(config()).await;
    assert_eq!(server.all_tasks().await, tasks, "every task as it was");
    assert_all_there(&server, &acked).await;
    server.task(json!({"title": "after the restart"})).await;
    server.stop().await;
    assert_eq!(integrity_check(&db).await, ["ok"]);
}
