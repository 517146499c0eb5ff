//! The batching writer: a thread with its own SQLite connection that runs the agent work cycle
//! (claim-next, progress, complete). Operations queued while a transaction runs go into the
//! next one together (group commit), each inside its own savepoint, so one refused operation
//! undoes only itself. Nobody learns of a change before the transaction holding it commits.
//!
//! The writer and the async (sqlx) writes share one gate, so only one of them writes at a time
//! and events reach subscribers in commit order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::domain::event::NewEvent;
use crate::domain::{Event, Timestamp};

use super::waiters::{claimable_on, Work};
use super::{Durability, Publisher, StoreError, StoreResult};

/// Most operations in one transaction.
const MAX_BATCH: usize = 256;

/// What one operation produced: its events and the work it made claimable (published after
/// the commit), and how to answer it.
struct Staged {
    events: Vec<Event>,
    work: Vec<Work>,
    /// Its changes could not be undone: the transaction must not commit.
    poisoned: bool,
    /// The database error the operation failed with, if it failed with one.
    failure: Option<rusqlite::Error>,
    answer: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

/// An operation: run on the writer's connection inside the open transaction, or refused with
/// the error that kept the transaction from beginning.
type Job = Box<dyn FnOnce(Context<'_>, Timestamp) -> Staged + Send>;

/// What an operation runs with: the writer's connection inside the open transaction (or the
/// error that kept the transaction from beginning), and the kinds meant for people as JSON.
type Context<'a> = (Result<&'a Connection, &'a rusqlite::Error>, &'a str);

enum Message {
    Run(Job),
    Stop(oneshot::Sender<()>),
}

/// A handle on the writer thread. Cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::UnboundedSender<Message>,
}

impl Writer {
    /// Opens a connection to the (already migrated) database at `path` and starts the thread.
    pub(super) fn start(
        path: &Path,
        durability: Durability,
        gate: Arc<Mutex<()>>,
        publisher: Publisher,
        human_kinds: String,
    ) -> anyhow::Result<Writer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match durability {
                Durability::Normal => "NORMAL",
                Durability::Full => "FULL",
            },
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.set_prepared_statement_cache_capacity(64);
        let (jobs, inbox) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("taskyard-writer".into())
            .spawn(move || run(conn, inbox, gate, publisher, human_kinds))?;
        Ok(Writer { jobs })
    }

    /// Runs `op` in the writer's next transaction and answers once that transaction committed.
    /// `op` returns its result, the events to record and the tasks it may have made claimable.
    pub(super) async fn write<R, F>(&self, op: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection, Timestamp) -> StoreResult<(R, Vec<NewEvent>, Vec<i64>)> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |(conn, human_kinds), now| match conn {
            Ok(conn) => stage(conn, now, human_kinds, op, tx),
            Err(err) => refuse(StoreError::Sqlite(copy_error(err)), tx),
        });
        self.jobs
            .send(Message::Run(job))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Finishes the operations taken so far and stops the thread, closing its connection; any
    /// still waiting are refused with [`StoreError::Closed`].
    pub(super) async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Message::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Runs one operation inside its own savepoint; a refusal rolls back only this operation.
fn stage<R, F>(
    conn: &Connection,
    now: Timestamp,
    human_kinds: &str,
    op: F,
    reply: oneshot::Sender<StoreResult<R>>,
) -> Staged
where
    R: Send + 'static,
    F: FnOnce(&Connection, Timestamp) -> StoreResult<(R, Vec<NewEvent>, Vec<i64>)>,
{
    // The caller went away (a dropped request, a timeout): nobody could learn of the change, so
    // it is not made — a claim nobody receives would hold a task and spend an attempt.
    if reply.is_closed() {
        return Staged {
            events: Vec::new(),
            work: Vec::new(),
            poisoned: false,
            failure: None,
            answer: Box::new(|_| {}),
        };
    }
    let mut poisoned = false;
    let attempt = (|| {
        conn.execute_batch("SAVEPOINT op")?;
        // A panic in one operation must not take the writer (and every later change) down.
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(conn, now)))
            .unwrap_or_else(|_| {
                Err(StoreError::Corrupt(
                    "a write operation panicked; it was undone".into(),
                ))
            })
            .and_then(|(value, events, ready)| {
                let work = claimable_on(conn, &ready, now, human_kinds)?;
                Ok((value, insert_events(conn, now, events)?, work))
            })
            .and_then(|done| Ok(conn.execute_batch("RELEASE op").map(|()| done)?));
        if done.is_err() && !conn.is_autocommit() {
            // Undo this operation only; if even that fails, the whole transaction goes (the
            // writer sees it ended and runs the rest again in the next one).
            if conn.execute_batch("ROLLBACK TO op; RELEASE op").is_err()
                && conn.execute_batch("ROLLBACK").is_err()
            {
                poisoned = true;
            }
        }
        done
    })();
    match attempt {
        Ok((value, events, work)) => Staged {
            events,
            work,
            poisoned,
            failure: None,
            answer: Box::new(move |committed| {
                let _ = reply.send(committed.map(|()| value));
            }),
        },
        Err(err) => Staged {
            poisoned,
            ..refuse(err, reply)
        },
    }
}

/// An operation that failed (or never ran). It is answered with its own error when the rest of
/// its transaction committed; otherwise with the transaction's, since its own may have been
/// judged against changes that were then undone.
fn refuse<R: Send + 'static>(err: StoreError, reply: oneshot::Sender<StoreResult<R>>) -> Staged {
    Staged {
        events: Vec::new(),
        work: Vec::new(),
        poisoned: false,
        failure: match &err {
            StoreError::Sqlite(e) => Some(copy_error(e)),
            _ => None,
        },
        answer: Box::new(move |committed| {
            let _ = reply.send(Err(committed.err().unwrap_or(err)));
        }),
    }
}

/// The writer thread: waits for work, takes everything queued, runs it in one transaction.
fn run(
    conn: Connection,
    mut inbox: mpsc::UnboundedReceiver<Message>,
    gate: Arc<Mutex<()>>,
    publisher: Publisher,
    human_kinds: String,
) {
    let mut stopped = None;
    // Operations a transaction lost before running them: they go first into the next one.
    let mut retry: Vec<Job> = Vec::new();
    while stopped.is_none() {
        let first = match retry.is_empty() {
            true => match inbox.blocking_recv() {
                Some(first) => Some(first),
                None => break,
            },
            false => None,
        };
        let _gate = gate.blocking_lock();
        let mut batch = std::mem::take(&mut retry);
        let mut next = first.or_else(|| inbox.try_recv().ok());
        while let Some(message) = next.take() {
            match message {
                Message::Run(job) => batch.push(job),
                Message::Stop(done) => {
                    stopped = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = inbox.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let now = Timestamp::now();
        let begun = conn.execute_batch("BEGIN IMMEDIATE");
        let mut staged: Vec<Staged> = Vec::with_capacity(batch.len());
        let mut lost = None;
        if begun.is_ok() {
            let mut jobs = batch.into_iter();
            for job in jobs.by_ref() {
                let done = job((Ok(&conn), &human_kinds), now);
                // SQLite ends the whole transaction on some errors (a full disk, say): what ran
                // before is undone, and what has not run yet waits for the next transaction.
                if done.poisoned {
                    // Rolling back failed twice: drop the connection's transaction however
                    // possible and commit nothing of this batch.
                    let _ = conn.execute_batch("ROLLBACK");
                }
                if done.poisoned || conn.is_autocommit() {
                    lost = Some(done.failure.as_ref().map(copy_error).unwrap_or_else(|| {
                        rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                            Some("the transaction was rolled back".into()),
                        )
                    }));
                    staged.push(done);
                    retry.extend(jobs);
                    break;
                }
                staged.push(done);
            }
        } else if let Err(err) = &begun {
            staged.extend(batch.into_iter().map(|job| job((Err(err), &human_kinds), now)));
        }
        let committed = match lost {
            Some(err) => Err(err),
            None => begun.and_then(|()| conn.execute_batch("COMMIT")),
        };
        match committed {
            Ok(()) => {
                for staged in staged {
                    publisher.publish(staged.events, staged.work, false);
                    (staged.answer)(Ok(()));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "a write transaction failed; its operations are refused");
                let _ = conn.execute_batch("ROLLBACK");
                for staged in staged {
                    (staged.answer)(Err(StoreError::Sqlite(copy_error(&err))));
                }
            }
        }
    }
    drop(conn);
    if let Some(done) = stopped {
        let _ = done.send(());
    }
}

/// The same failure again, for each operation of a batch that could not commit.
fn copy_error(err: &rusqlite::Error) -> rusqlite::Error {
    match err {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// Appends events inside the writer's transaction.
fn insert_events(conn: &Connection, now: Timestamp, events: Vec<NewEvent>) -> StoreResult<Vec<Event>> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (kind, task_id, actor, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
    )?;
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let id: i64 = insert.query_row(
            rusqlite::params![
                event.kind,
                event.task_id,
                event.actor,
                event.data.to_string(),
                now.millis()
            ],
            |row| row.get(0),
        )?;
        out.push(event.recorded(id, now));
    }
    Ok(out)
}
