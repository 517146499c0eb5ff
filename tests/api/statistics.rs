//! PostgreSQL's statistics of the task table follow a burst of new tasks: the server analyzes
//! the table itself once a node has created enough of them (`store/postgres/statistics.rs`),
//! rather than leaving claim-next to a plan made for a small table until autovacuum comes.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

use crate::support::{test_config, Server};

/// How often the server itself (not autovacuum) has analyzed the task table.
async fn analyses(db: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'tasks'")
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_new_tasks_get_the_task_table_analyzed() {
    if !crate::backend::postgres() {
        println!("not on SQLite: this test reads a PostgreSQL server's statistics");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = crate::backend::database_url(dir.path()).unwrap();
    let server = Server::boot(test_config(dir.path())).await;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();

    let tasks: Vec<_> = (0..999).map(|i| json!({"title": format!("task {i}")})).collect();
    let (status, body) = server
        .post(&server.admin, "/tasks/batch", json!({"tasks": tasks}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(analyses(&mut db).await, 0, "999 new tasks are not yet a burst");

    server.task(json!({"title": "the thousandth"})).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while analyses(&mut db).await == 0 {
        assert!(Instant::now() < deadline, "the task table was never analyzed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counted: f32 = sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'tasks'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(counted >= 1_000.0, "the analysis counted {counted} tasks");

    let agent = server.agent("worker", &[]).await;
    let (status, claim) = server.post(&agent, "/claims/next", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{claim}");
}
