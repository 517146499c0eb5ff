//! Reaching the database: the pool (with a statement timeout, so one stuck query cannot hold a
//! connection for ever), the schema brought up to date under PostgreSQL's advisory lock (two
//! servers starting at once do not both migrate), the oldest server version supported, and
//! what each failure to connect means in words a person can act on.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::store::StoreError;

/// The oldest PostgreSQL supported (`server_version_num`).
const OLDEST_SUPPORTED: i64 = 140_000;

/// How long one statement may run before the database cancels it.
const STATEMENT_TIMEOUT: &str = "30s";

/// How long a caller waits for a pooled connection (the database may be down).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most connections one server opens.
const MAX_CONNECTIONS: u32 = 32;

/// Connection options for `url`, with the settings every connection of the store uses.
fn options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.application_name("taskyard").disable_statement_logging();
    // A timeout the URL sets (`?options=-c%20statement_timeout%3D5s`) is the operator's choice.
    Ok(
        match options
            .get_options()
            .is_some_and(|o| o.contains("statement_timeout"))
        {
            true => options,
            false => options.options([("statement_timeout", STATEMENT_TIMEOUT)]),
        },
    )
}

/// A pool of one connection for the follower to listen on (`follow.rs`): its own, so that a
/// busy pool never keeps hints from arriving. Connects when first used.
pub(super) fn listener_pool(url: &str) -> anyhow::Result<PgPool> {
    let options = options(url).map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
    Ok(PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options))
}

/// A pool on `url`, after checking the server's version and migrating its schema.
pub(super) async fn pool(url: &str, readers: u32) -> anyhow::Result<PgPool> {
    check(url).await?;
    let options = options(url).map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS.max(readers))
        .min_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
    sqlx::migrate!("migrations/postgres").run(&pool).await?;
    Ok(pool)
}

/// Connects to `url` once, on a connection of its own (so that a refusal is told as it is, not
/// as a pool's timeout), and says what the server is; refuses one older than
/// `OLDEST_SUPPORTED` (also `taskyard config check`).
pub async fn check(url: &str) -> anyhow::Result<String> {
    let options = options(url).map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
    let connecting = PgConnection::connect_with(&options);
    let mut conn = tokio::time::timeout(ACQUIRE_TIMEOUT, connecting)
        .await
        .map_err(|_| anyhow::anyhow!("{}", describe(&sqlx::Error::PoolTimedOut)))?
        .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
    let (number, text): (String, String) =
        sqlx::query_as("SELECT current_setting('server_version_num'), current_setting('server_version')")
            .fetch_one(&mut conn)
            .await?;
    let _ = conn.close().await;
    if number.parse::<i64>().unwrap_or(0) < OLDEST_SUPPORTED {
        anyhow::bail!("PostgreSQL {text} is too old: taskyard needs PostgreSQL 14 or newer");
    }
    Ok(format!("PostgreSQL {text}"))
}

/// `err`, from connecting, in words: refused, authentication, a missing database, a bad URL.
fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Configuration(e) => format!("the database URL is not valid: {e}"),
        sqlx::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!(
                "the database server refused the connection (is it running, and on that host and port?): {e}"
            )
        }
        sqlx::Error::Io(e) => format!("the database server cannot be reached: {e}"),
        sqlx::Error::PoolTimedOut => "the database server did not answer in time".into(),
        sqlx::Error::Tls(e) => format!("TLS to the database server failed: {e}"),
        sqlx::Error::Database(e) => match e.code().as_deref() {
            Some("28P01") | Some("28000") => {
                format!("the database server refused the credentials: {}", e.message())
            }
            Some("3D000") => format!("the database does not exist: {}", e.message()),
            _ => format!("the database server refused the connection: {}", e.message()),
        },
        other => format!("cannot connect to the database: {other}"),
    }
}

/// A database error as the store reports it: the database unreachable or restarting is
/// `Unavailable` (answered 503), a full disk `StorageFull`, a lost race a conflict to retry.
pub(super) fn classify(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(err.to_string()),
        sqlx::Error::Database(e) => match e.code().as_deref().unwrap_or("") {
            // Disk full, out of memory, too many connections.
            "53100" | "53200" => StoreError::StorageFull(e.message().to_string()),
            "53300" => StoreError::Unavailable(e.message().to_string()),
            // Serialization failure, deadlock: nothing changed; the caller may try again.
            "40001" | "40P01" => StoreError::conflict(format!(
                "the change met a concurrent one and was undone; try again ({})",
                e.message()
            )),
            // Shut down, crashed, restarting, cannot connect now.
            code if code.starts_with("57P") || code.starts_with("08") => {
                StoreError::Unavailable(e.message().to_string())
            }
            // Statement timeout (query canceled).
            "57014" => StoreError::Unavailable(format!("a statement ran too long: {}", e.message())),
            _ => StoreError::Database(err.to_string()),
        },
        _ => StoreError::Database(err.to_string()),
    }
}

/// `url` with its password (if any) replaced, for printing. The user information ends at the
/// URL's last `@`, so a password holding `/`, `?` or `@` is still hidden; a string that is not
/// a URL at all is not printed.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL: redacted>".to_string();
    };
    let (userinfo, tail) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let userinfo = match userinfo.map(|u| u.split_once(':').map_or(u, |(user, _)| user)) {
        Some(user) if userinfo.is_some_and(|u| u.contains(':')) => format!("{user}:<redacted>@"),
        Some(user) => format!("{user}@"),
        None => String::new(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=<redacted>"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{userinfo}{tail}")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted_wherever_the_url_carries_them() {
        assert_eq!(
            redact("postgres://ty:s3cret@db.example:5432/taskyard"),
            "postgres://ty:<redacted>@db.example:5432/taskyard"
        );
        assert_eq!(
            redact("postgresql://ty@db/taskyard?sslmode=require&password=x"),
            "postgresql://ty@db/taskyard?sslmode=require&password=<redacted>"
        );
        assert_eq!(redact("postgres://db/taskyard"), "postgres://db/taskyard");
        assert_eq!(redact("postgres://a:b:c@h/d"), "postgres://a:<redacted>@h/d");
        assert_eq!(redact("postgres://u:pa/ss?x@h/d"), "postgres://u:<redacted>@h/d");
        assert_eq!(redact("postgres:/u:pw@h/d"), "<not a URL: redacted>");
    }
}
