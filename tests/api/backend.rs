//! Which registry the suite runs against. This suite is compiled twice (see Cargo.toml): the
//! `api` target runs it on the embedded SQLite file of each test's data folder, `api_postgres`
//! on a fresh PostgreSQL database per data folder, created on the server that
//! `TASKYARD_TEST_DATABASE_URL` names (any database there; its user may create databases).
//! Without that variable the PostgreSQL run is skipped, saying so, except under `CI=true`,
//! where it fails.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

/// The file in a data folder naming the database its registry lives in.
const DATABASE_URL_FILE: &str = ".test-database-url";

/// True in the `api_postgres` run.
pub fn postgres() -> bool {
    env!("CARGO_CRATE_NAME") == "api_postgres"
}

/// True (after saying so) when a test is about the SQLite file itself and this is the
/// PostgreSQL run, where it does not apply.
pub fn sqlite_only(what: &str) -> bool {
    if postgres() {
        println!("not on PostgreSQL: {what} is about the embedded SQLite file");
    }
    postgres()
}

/// True (after saying so) when a test is about several nodes on one database server and this
/// is the SQLite run, where one server holds the file.
pub fn postgres_only(what: &str) -> bool {
    if !postgres() {
        println!("only on PostgreSQL: {what} needs several servers on one database");
    }
    !postgres()
}

/// Makes the registry of data folder `to` the one of `from` (made first if need be): two
/// servers on these folders share one database, as nodes do.
pub fn share_database(from: &Path, to: &Path) {
    use_database(to, &database_url(from).expect("a PostgreSQL run"));
}

/// Makes the registry of data folder `to` live in the database `url`.
pub fn use_database(to: &Path, url: &str) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::write(to.join(DATABASE_URL_FILE), url).unwrap();
}

/// The database URL the registry of `data_dir` uses in this run: none for SQLite (the data
/// folder's file); on PostgreSQL, a database made for this folder the first time it is asked.
pub fn database_url(data_dir: &Path) -> Option<String> {
    if !postgres() {
        return None;
    }
    let file = data_dir.join(DATABASE_URL_FILE);
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url);
    }
    let server = match std::env::var("TASKYARD_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => unset(),
    };
    static MADE: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "taskyard_test_{}_{}_{}",
        std::process::id(),
        MADE.fetch_add(1, Ordering::Relaxed),
        rand_suffix()
    );
    let url = with_database(&server, &name);
    // On a thread of its own: the caller may be inside a runtime, or not.
    let admin = server.clone();
    let create = name.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach TASKYARD_TEST_DATABASE_URL: {e}"));
                sqlx::query(&format!("CREATE DATABASE {create}"))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("cannot create database {create}: {e}"));
                let _ = conn.close().await;
            })
    })
    .join()
    .expect("the test database is created");
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::write(&file, &url).unwrap();
    Some(url)
}

/// The PostgreSQL run without a server to run on.
fn unset() -> ! {
    let message = "the PostgreSQL run of the suite needs TASKYARD_TEST_DATABASE_URL \
                   (e.g. postgres://postgres@127.0.0.1:5432/postgres)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}, and CI=true");
    }
    // Straight to the process's stderr: the test harness captures `println!` and `eprintln!`,
    // and what it captured is lost when the process ends here.
    let line = format!("SKIPPED: {message}; the whole PostgreSQL run is skipped\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    std::process::exit(0);
}

/// A few random letters, so databases of runs that overlap never share a name.
fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("{nanos:x}")
}

/// `server` with its database replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let mut url = url::Url::parse(server).expect("TASKYARD_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}
