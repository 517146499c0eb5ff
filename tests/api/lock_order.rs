//! Locks on PostgreSQL are taken in one order, rows before the reserving lock: a change that ends
//! a lease's reservations and then changes the task's dependents (a completion, a last failure,
//! a cancellation) waits for a dependent's row before it takes that lock. So claims that need the
//! lock go on while it waits, and two such changes cannot deadlock.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::support::{test_config, Server};

/// Waits until a session of this database waits for a lock in a statement about dependents.
async fn until_someone_waits_for_a_lock(watcher: &mut PgConnection) {
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE '%task_deps%' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut *watcher)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the lease on the depended-on task ends.
enum Ending {
    Complete,
    FailForGood,
    Cancel,
}

/// A lease that holds a reservation ends while someone else holds the row of a task that depends
/// on it: a claim-next by another agent meanwhile is answered at once, and once the row is let go
/// the ending goes through and the dependent becomes `dependent_becomes`.
async fn ending_waits_for_a_dependent_without_the_reserving_lock(ending: Ending, dependent_becomes: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    let url = crate::backend::database_url(dir.path()).unwrap();
    // No statement timeout: a waiting statement would otherwise be cancelled after 30 s, end its
    // transaction and so let go of whatever it held.
    let join = if url.contains('?') { '&' } else { '?' };
    let patient = format!("{url}{join}options=-c%20statement_timeout%3D0");
    config.server.database_url = Some(taskyard::config::DatabaseUrl::parse(&patient).unwrap());
    let server = Server::boot(config).await;
    let a = server.agent("claude-1", &[]).await;
    let b = server.agent("codex-2", &[]).await;
    let schema = server
        .task(json!({"title": "schema", "priority": "P0", "paths": ["db/**"]}))
        .await["id"]
        .as_i64()
        .unwrap();
    let queries = server
        .task(json!({"title": "queries", "priority": "P0", "depends_on": [schema]}))
        .await["id"]
        .as_i64()
        .unwrap();
    let docs = server.task(json!({"title": "docs", "priority": "P3"})).await["id"]
        .as_i64()
        .unwrap();
    let (status, claim) = server
        .post(&a, &format!("/tasks/{schema}/claim"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{claim}");
    let fence = claim["lease"]["fence"].as_i64().unwrap();
    let (_, reserved) = server.get(&server.admin, "/reservations").await;
    assert_eq!(reserved["items"].as_array().unwrap().len(), 1, "{reserved}");

    // Someone else holds the dependent's row, as another change to it would.
    let mut other = PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT id FROM tasks WHERE id = $1 FOR UPDATE")
        .bind(queries)
        .execute(&mut other)
        .await
        .unwrap();

    let (token, path, body): (&str, String, Value) = match ending {
        Ending::Complete => (
            &a,
            format!("/tasks/{schema}/complete"),
            json!({"fence": fence, "summary": "tables"}),
        ),
        Ending::FailForGood => (
            &a,
            format!("/tasks/{schema}/fail"),
            json!({"fence": fence, "reason": "no database", "retryable": false}),
        ),
        Ending::Cancel => (&server.admin, format!("/tasks/{schema}/cancel"), json!({})),
    };
    let ending = server.post(token, &path, body);
    tokio::pin!(ending);
    let mut watcher = PgConnection::connect(&url).await.unwrap();
    tokio::select! {
        answer = &mut ending => panic!("went past a locked dependent: {answer:?}"),
        () = until_someone_waits_for_a_lock(&mut watcher) => {}
    }

    // A claim-next while a reservation exists takes the reserving lock: the waiting change must
    // not hold it. (That change cannot finish before the row is let go.)
    let claiming = tokio::time::timeout(
        Duration::from_secs(60),
        server.post(&b, "/claims/next", json!({})),
    );
    let (status, next) = tokio::select! {
        answer = &mut ending => panic!("went past a locked dependent: {answer:?}"),
        claimed = claiming => claimed.expect("claim-next waited behind a change that waits for a row"),
    };
    assert_eq!(status, StatusCode::OK, "{next}");
    assert_eq!(next["task"]["id"], docs, "{next}");

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let (status, ended) = ending.await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    let (status, dependent) = server.get(&server.admin, &format!("/tasks/{queries}")).await;
    assert_eq!(status, StatusCode::OK, "{dependent}");
    assert_eq!(dependent["status"], dependent_becomes, "{dependent}");
    let (_, reservations) = server.get(&server.admin, "/reservations").await;
    assert_eq!(reservations["items"], json!([]), "{reservations}");
}

fn on_postgres() -> bool {
    if !crate::backend::postgres() {
        println!("not on SQLite: this test holds a row lock on a PostgreSQL server");
    }
    crate::backend::postgres()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_waiting_for_a_dependent_keeps_nobody_from_claiming() {
    if on_postgres() {
        ending_waits_for_a_dependent_without_the_reserving_lock(Ending::Complete, "available").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_failure_waiting_for_a_dependent_keeps_nobody_from_claiming() {
    if on_postgres() {
        ending_waits_for_a_dependent_without_the_reserving_lock(Ending::FailForGood, "blocked").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_waiting_for_a_dependent_keeps_nobody_from_claiming() {
    if on_postgres() {
        ending_waits_for_a_dependent_without_the_reserving_lock(Ending::Cancel, "blocked").await;
    }
}
