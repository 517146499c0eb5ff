//! The SQLite engine: one writer thread that runs every change, and a small pool of read-only
//! connections. Changes queued while a transaction runs go into the next one together (group
//! commit), each inside its own savepoint, so a refused change undoes only itself (a change
//! alone in its transaction needs none: it is undone with the transaction); its events are
//! appended with it, and nobody learns of a change before the transaction holding it commits.
//! Committed events are published in commit order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::domain::{Event, Timestamp};
use crate::store::announce::{self, Announce, Announcements, Count};
use crate::store::{Durability, EventBus, StoreError, StoreResult, Work};
use crate::telemetry::Telemetry;

use super::claimable_work;
use super::events::insert_events;
use crate::store::principals::PrincipalCache;

/// Most operations in one transaction.
const MAX_BATCH: usize = 256;

/// What a write operation works with: the connection inside the open transaction (in its own
/// savepoint), the batch's time, and what the operation announces once committed.
pub(super) struct Tx<'c> {
    conn: &'c Connection,
    /// The time of the whole batch.
    pub now: Timestamp,
    said: Announcements,
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Announce for Tx<'_> {
    fn announcements(&mut self) -> &mut Announcements {
        &mut self.said
    }
}

/// What one operation produced: its events (published after the commit) and how to answer it.
struct Staged {
    events: Vec<Event>,
    work: Vec<Work>,
    /// Tasks became available or capacity was freed: the loops woken by work look again.
    loops: bool,
    agents_changed: bool,
    tokens_changed: bool,
    counts: Vec<(Count, String)>,
    /// Its changes could not be undone: the transaction must not commit.
    poisoned: bool,
    /// It failed, and the transaction it had alone was rolled back with it: nothing to commit.
    undone: bool,
    answer: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

/// How an operation that fails is undone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Undo {
    /// Inside its own savepoint: the others of its transaction stand.
    Savepoint,
    /// With its whole transaction, which holds nothing else (a savepoint would cost a batch of
    /// one about an eighth of the writer's time: two statements and a copy of each page it
    /// touches).
    Transaction,
}

/// An operation: run on the writer's connection inside the open transaction, or refused with
/// the error that kept the transaction from beginning.
type Job = Box<dyn FnOnce(Result<&Connection, &StoreError>, Timestamp, Undo) -> Staged + Send>;

enum Message {
    Run(Job),
    Stop(oneshot::Sender<()>),
}

/// What the writer shares with the rest of the store.
pub(super) struct Shared {
    /// Where committed events go.
    pub bus: EventBus,
    /// Principals by token hash, forgotten when agents change.
    pub principals: PrincipalCache,
    /// False once the writer thread has ended.
    pub writing: AtomicBool,
    /// Where committed work is counted.
    pub telemetry: Arc<Telemetry>,
}

/// A handle on the writer thread. Cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::UnboundedSender<Message>,
    /// The kinds meant for people (who may take work that became claimable).
    human_kinds: Arc<Vec<String>>,
}

/// Applies the connection settings every connection of the store uses.
pub(super) fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
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
    // 16 MiB. A bigger cache costs the writer more than it saves: SQLite scans the whole cache
    // at every commit after a b-tree rebalance (which briefly renumbers a page past the end).
    conn.pragma_update(None, "cache_size", -16384)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(())
}

impl Writer {
    /// Opens a connection to the (already migrated) database at `path` and starts the thread.
    pub(super) fn start(
        path: &Path,
        durability: Durability,
        human_kinds: Vec<String>,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Writer> {
        // The connection is used by this thread alone: SQLite's own locking is not needed.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn, durability)?;
        let (jobs, inbox) = mpsc::unbounded_channel();
        shared.writing.store(true, Ordering::SeqCst);
        std::thread::Builder::new()
            .name("taskyard-writer".into())
            .spawn(move || {
                run(&conn, inbox, &shared);
                shared.writing.store(false, Ordering::SeqCst);
            })?;
        Ok(Writer {
            jobs,
            human_kinds: Arc::new(human_kinds),
        })
    }

    /// Runs `op` in the writer's next transaction and answers once that transaction committed.
    pub(super) async fn write<R, F>(&self, op: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let kinds = self.human_kinds.clone();
        let job: Job = Box::new(move |conn, now, undo| match conn {
            Ok(conn) => stage(conn, now, undo, &kinds, op, tx),
            Err(err) => refuse(copy(err), tx),
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

/// The same error again, for each operation of a batch that could not commit.
fn copy(err: &StoreError) -> StoreError {
    match err {
        StoreError::StorageFull(m) => StoreError::StorageFull(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Closed => StoreError::Closed,
        StoreError::Refused(r) => StoreError::Refused(r.clone()),
        StoreError::Database(m) => StoreError::Database(m.clone()),
    }
}

/// Runs one operation; a refusal rolls back only this operation (see [`Undo`]).
fn stage<R, F>(
    conn: &Connection,
    now: Timestamp,
    undo: Undo,
    human_kinds: &[String],
    op: F,
    reply: oneshot::Sender<StoreResult<R>>,
) -> Staged
where
    R: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> StoreResult<R>,
{
    // The caller went away (a dropped request, a timeout): nobody could learn of the change, so
    // it is not made — a claim nobody receives would hold a task and spend an attempt.
    if reply.is_closed() {
        return Staged {
            events: Vec::new(),
            work: Vec::new(),
            loops: false,
            agents_changed: false,
            tokens_changed: false,
            counts: Vec::new(),
            poisoned: false,
            undone: false,
            answer: Box::new(|_| {}),
        };
    }
    let (mut poisoned, mut undone) = (false, false);
    let savepoint = undo == Undo::Savepoint;
    let mut tx = Tx {
        conn,
        now,
        said: Announcements::default(),
    };
    let attempt = (|| {
        if savepoint {
            run_sql(conn, "SAVEPOINT op")?;
        }
        // A panic in one operation must not take the writer (and every later change) down.
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(&mut tx)))
            .unwrap_or_else(|_| {
                Err(StoreError::Corrupt(
                    "a write operation panicked; it was undone".into(),
                ))
            })
            .and_then(|value| {
                // Who may take what became claimable is read in the same change.
                let work = claimable_work(conn, &tx.said.ready, human_kinds, now)?;
                let events = insert_events(conn, now, std::mem::take(&mut tx.said.events))?;
                Ok((value, events, work))
            })
            .and_then(|done| match savepoint {
                true => Ok(run_sql(conn, "RELEASE op").map(|()| done)?),
                false => Ok(done),
            });
        if done.is_err() && !conn.is_autocommit() {
            if !savepoint {
                // The transaction holds this operation alone.
                match run_sql(conn, "ROLLBACK") {
                    Ok(()) => undone = true,
                    Err(_) => poisoned = true,
                }
            // Undo this operation only; if even that fails, the whole transaction goes (the
            // writer sees it ended and runs the rest again in the next one).
            } else if (run_sql(conn, "ROLLBACK TO op").is_err() || run_sql(conn, "RELEASE op").is_err())
                && run_sql(conn, "ROLLBACK").is_err()
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
            loops: tx.said.wakes_loops(),
            agents_changed: tx.said.agents_changed,
            tokens_changed: tx.said.tokens_changed,
            counts: tx.said.counts,
            poisoned,
            undone: false,
            answer: Box::new(move |committed| {
                let _ = reply.send(committed.map(|()| value));
            }),
        },
        Err(err) => Staged {
            poisoned,
            undone,
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
        loops: false,
        agents_changed: false,
        tokens_changed: false,
        counts: Vec::new(),
        poisoned: false,
        undone: false,
        answer: Box::new(move |committed| {
            let _ = reply.send(Err(committed.err().unwrap_or(err)));
        }),
    }
}

/// Runs one statement without results (transaction control, above all) from the statement
/// cache: parsing `SAVEPOINT` anew for every operation shows in the writer's profile.
fn run_sql(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The writer thread: waits for work, takes everything queued, runs it in one transaction.
fn run(conn: &Connection, mut inbox: mpsc::UnboundedReceiver<Message>, shared: &Shared) {
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
        let begun = run_sql(conn, "BEGIN IMMEDIATE").map_err(StoreError::from);
        let mut staged: Vec<Staged> = Vec::with_capacity(batch.len());
        let mut lost = None;
        // A batch of one is undone, if it fails, with its transaction.
        let undo = match batch.len() {
            1 => Undo::Transaction,
            _ => Undo::Savepoint,
        };
        let mut undone = false;
        match &begun {
            Ok(()) => {
                let mut jobs = batch.into_iter();
                for job in jobs.by_ref() {
                    let done = job(Ok(conn), now, undo);
                    if done.undone {
                        undone = true;
                        staged.push(done);
                        break;
                    }
                    // SQLite ends the whole transaction on some errors (a full disk, say): what
                    // ran before is undone, and what has not run yet waits for the next one.
                    if done.poisoned {
                        let _ = run_sql(conn, "ROLLBACK");
                    }
                    if done.poisoned || conn.is_autocommit() {
                        lost = Some(StoreError::Database(
                            "the transaction was rolled back by the database".into(),
                        ));
                        staged.push(done);
                        retry.extend(jobs);
                        break;
                    }
                    staged.push(done);
                }
            }
            Err(err) => staged.extend(batch.into_iter().map(|job| job(Err(err), now, undo))),
        }
        let commit = Instant::now();
        let committed = match (lost, undone) {
            (Some(err), _) => Err(err),
            // Its one operation failed and was rolled back: it is answered with its own error.
            (None, true) => Ok(()),
            (None, false) => begun.and_then(|()| run_sql(conn, "COMMIT").map_err(StoreError::from)),
        };
        match committed {
            Ok(()) => {
                let metrics = &shared.telemetry;
                if !undone {
                    metrics.writer_commit.observe(commit.elapsed().as_secs_f64());
                    metrics.writer_batch.observe(staged.len() as f64);
                }
                announce::record(metrics, staged.iter().flat_map(|s| &s.counts));
                let changed = staged.iter().any(|s| s.agents_changed);
                if changed {
                    shared.principals.forget();
                }
                if staged.iter().any(|s| s.tokens_changed) {
                    shared.bus.tokens_changed();
                }
                for staged in staged {
                    shared.bus.publish(staged.events, staged.work, staged.loops);
                    (staged.answer)(Ok(()));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "a write transaction failed; its operations are refused");
                let _ = run_sql(conn, "ROLLBACK");
                for staged in staged {
                    (staged.answer)(Err(copy(&err)));
                }
            }
        }
    }
    if let Some(done) = stopped {
        let _ = done.send(());
    }
}

/// Read-only connections, used on blocking threads so a long read never holds up the async
/// workers. Opened as needed, at most `limit` at once, and kept for reuse.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    /// A pool of at most `limit` read-only connections to `path`.
    pub(super) fn new(path: &Path, limit: u32) -> Readers {
        Readers {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(limit.max(1) as usize),
        }
    }

    fn take(&self) -> StoreResult<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(Duration::from_secs(10))?;
                conn.set_prepared_statement_cache_capacity(64);
                Ok(conn)
            }
        }
    }

    /// Runs `query` on a read-only connection, on a blocking thread.
    pub(super) async fn read<R, F>(self: &Arc<Self>, query: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|_| StoreError::Closed)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.take()?;
            // One snapshot per query, even when it runs several statements.
            let answer = (|| {
                run_sql(&conn, "BEGIN")?;
                let answer = query(&conn);
                run_sql(&conn, "COMMIT")?;
                answer
            })();
            if conn.is_autocommit() {
                this.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            }
            answer
        })
        .await
        .map_err(|e| StoreError::Database(format!("a read failed: {e}")))?
    }

    /// Closes the idle connections; later reads open new ones.
    pub(super) fn close(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.permits.close();
    }
}
