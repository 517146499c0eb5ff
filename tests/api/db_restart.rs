//! The database restarting under load (PostgreSQL): while it is down, calls are answered
//! `503 unavailable` and change nothing; once it is back the server carries on by itself; and
//! every change acknowledged before, during or after is there, with each task completed once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::support::{test_config, Server};

/// What the agents saw.
#[derive(Default)]
struct Seen {
    created: Mutex<Vec<i64>>,
    completed: Mutex<Vec<i64>>,
    completions: AtomicUsize,
    unavailable: AtomicUsize,
    /// Answers that were neither success, a refusal, nor 503 unavailable.
    wrong: Mutex<Vec<(StatusCode, Value)>>,
}

impl Seen {
    /// Notes a failed answer: 503 must say `unavailable`; a refusal (4xx) is the registry's
    /// answer to work that changed hands meanwhile; anything else is wrong.
    fn failed(&self, status: StatusCode, body: Value) {
        if status == StatusCode::SERVICE_UNAVAILABLE && body["code"] == "unavailable" {
            self.unavailable.fetch_add(1, Ordering::SeqCst);
        } else if !status.is_client_error() {
            self.wrong.lock().unwrap().push((status, body));
        }
    }
}

/// One agent: files a task, claims the next, completes it; again until `stop`.
async fn agent(server: Arc<Server>, token: String, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let (status, task) = server
            .post(&server.admin, "/tasks", json!({"title": "work"}))
            .await;
        match status {
            StatusCode::CREATED => seen.created.lock().unwrap().push(task["id"].as_i64().unwrap()),
            _ => seen.failed(status, task),
        }
        let (status, claim) = server.post(&token, "/claims/next", json!({})).await;
        if status != StatusCode::OK {
            if status != StatusCode::NO_CONTENT {
                seen.failed(status, claim);
            }
            continue;
        }
        let id = claim["task"]["id"].as_i64().unwrap();
        let body = json!({"fence": claim["lease"]["fence"], "summary": "done"});
        let (status, answer) = server.post(&token, &format!("/tasks/{id}/complete"), body).await;
        match status {
            StatusCode::OK => {
                seen.completed.lock().unwrap().push(id);
                seen.completions.fetch_add(1, Ordering::SeqCst);
            }
            _ => seen.failed(status, answer),
        }
    }
}

/// Waits until `done` holds, looking every 20 ms (at most 120 s).
async fn until(what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while !done() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} never happened"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarting_under_load_loses_nothing_acknowledged() {
    if !crate::backend::postgres() {
        println!("not on SQLite: this test restarts a PostgreSQL server");
        return;
    }
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.server.database_url = Some(taskyard::config::DatabaseUrl::parse(&cluster.url()).unwrap());
    let server = Arc::new(Server::boot(config).await);
    let (seen, stop) = (Arc::new(Seen::default()), Arc::new(AtomicBool::new(false)));
    let mut agents = Vec::new();
    for n in 0..4 {
        let token = server.agent(&format!("worker-{n}"), &[]).await;
        agents.push(tokio::spawn(agent(
            server.clone(),
            token,
            seen.clone(),
            stop.clone(),
        )));
    }
    until("work before the restart", || {
        seen.completions.load(Ordering::SeqCst) >= 40
    })
    .await;

    cluster.down();
    until("503s while the database is down", || {
        seen.unavailable.load(Ordering::SeqCst) >= 4
    })
    .await;
    let (status, health) = server.get(&server.admin, "/tasks?limit=1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["code"], "unavailable", "{health}");

    cluster.up();
    let before = seen.completions.load(Ordering::SeqCst);
    until("work after the restart", || {
        seen.completions.load(Ordering::SeqCst) >= before + 40
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for agent in agents {
        agent.await.unwrap();
    }

    let wrong = seen.wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "answers other than success, refusal or 503: {wrong:?}"
    );
    let created = seen.created.lock().unwrap().clone();
    for id in &created {
        let (status, _) = server.get(&server.admin, &format!("/tasks/{id}")).await;
        assert_eq!(status, StatusCode::OK, "acknowledged task #{id} is gone");
    }
    let completed = seen.completed.lock().unwrap().clone();
    for id in &completed {
        let (_, task) = server.get(&server.admin, &format!("/tasks/{id}")).await;
        assert_eq!(
            task["status"], "completed",
            "acknowledged completion of #{id}: {task}"
        );
    }
    let events = server.all_events().await;
    for id in &completed {
        let times = events
            .iter()
            .filter(|e| e.task_id == Some(*id) && e.change.kind() == "task.completed")
            .count();
        assert_eq!(times, 1, "task #{id} completed {times} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_statement_is_cancelled_and_answered_unavailable() {
    if !crate::backend::postgres() {
        println!("not on SQLite: this test holds a lock on a PostgreSQL server");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    let url = crate::backend::database_url(dir.path()).unwrap();
    // The operator's statement timeout, from the URL, instead of the default 30 s.
    let join = if url.contains('?') { '&' } else { '?' };
    let short = format!("{url}{join}options=-c%20statement_timeout%3D1s");
    config.server.database_url = Some(taskyard::config::DatabaseUrl::parse(&short).unwrap());
    let server = Server::boot(config).await;
    server.task(json!({"title": "behind a lock"})).await;

    // Someone else holds the tasks table: every statement on it waits.
    let mut other = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .execute(&mut other)
        .await
        .unwrap();
    let (status, problem) = server.get(&server.admin, "/tasks").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    // (The database answers; only the timeout's cancellation can have made this a 503.)
    assert_eq!(problem["code"], "unavailable", "{problem}");
    let (status, problem) = server
        .post(&server.admin, "/tasks", json!({"title": "waits"}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");

    // The lock goes; the connection the stuck statement held serves again.
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let (status, page) = server.get(&server.admin, "/tasks").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let titles: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["behind a lock"], "the refused create changed nothing");
}
