//! Group commit on PostgreSQL for the work cycle: claim-next and agents' completions that
//! arrive at the same moment are done together — one transaction, one statement for all the
//! claims of callers who want the same work, one for all the completions, one event append and
//! one commit — instead of a transaction each. Each of a few lanes takes whatever is waiting
//! when it is free, so a lone request goes at once and a busy moment makes bigger groups.
//!
//! What a group cannot do in one statement goes alone, each in a change of its own exactly as
//! without grouping: claims while paths are reserved or ready tasks declare paths, claims by an
//! agent that was deactivated, an admin's completion, and a second completion of a task already
//! in the group. When the group's change fails before its commit (a lost connection, a
//! deadlock, a refusal in what a completion sets off) nothing of it happened, and every request
//! in it is done again alone, so each gets its own answer.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::Row;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::domain::input::CompleteSpec;
use crate::domain::{Principal, Task};
use crate::store::{ClaimFilter, Claimed, StoreError, StoreResult};

use super::super::deps::{self, Dependents};
use super::super::rows::{self, to_json, TASK_COLUMNS, TASK_COLUMN_COUNT};
use super::super::tx::Tx;
use super::super::{reservations, Postgres};
use super::claim::{claim_set, claimed, reap, record_claim, Wanted, SITUATION};
use super::{lease_refusal, millis, Completion};

/// How many lanes take groups: each holds one connection while its group runs.
const LANES: usize = 2;

/// The most requests one group takes.
const MOST: usize = 128;

/// A request waiting for its group, with where its answer goes.
enum Job {
    ClaimNext {
        who: Principal,
        filter: ClaimFilter,
        lease: Duration,
        reply: oneshot::Sender<StoreResult<Option<Claimed>>>,
    },
    Complete {
        id: i64,
        who: Principal,
        spec: CompleteSpec,
        reply: oneshot::Sender<StoreResult<Task>>,
    },
}

impl Job {
    /// Whether the caller stopped waiting (its connection closed): nothing is done for it.
    fn abandoned(&self) -> bool {
        match self {
            Job::ClaimNext { reply, .. } => reply.is_closed(),
            Job::Complete { reply, .. } => reply.is_closed(),
        }
    }

    /// Does the request in a change of its own and answers it.
    async fn alone(self, store: &Postgres) {
        match self {
            Job::ClaimNext {
                who,
                filter,
                lease,
                reply,
            } => {
                let _ = reply.send(store.claim_next_alone(&who, &filter, lease).await);
            }
            Job::Complete { id, who, spec, reply } => {
                let _ = reply.send(store.complete_alone(id, &who, spec).await);
            }
        }
    }
}

/// What a group did for one of its requests.
enum Answer {
    Claim(Option<Claimed>),
    Complete(StoreResult<Task>),
    /// Left for a change of its own.
    Alone,
}

/// Where a group's change failed.
enum Failure {
    /// Before its commit: nothing of it happened.
    Before(StoreError),
    /// At its commit: whether it happened is unknown.
    Commit(StoreError),
}

/// The queue requests wait in for a lane.
pub(in crate::store::postgres) struct Batcher {
    queue: mpsc::UnboundedSender<Job>,
}

/// The answer when the lanes are gone (the registry is closing).
fn closing() -> StoreError {
    StoreError::Closed
}

/// `err` again, for another caller of a group that failed with it.
fn again(err: &StoreError) -> StoreError {
    match err {
        StoreError::StorageFull(m) => StoreError::StorageFull(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Database(m) => StoreError::Database(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Closed => StoreError::Closed,
        StoreError::Refused(_) => StoreError::Database(err.to_string()),
    }
}

impl Batcher {
    /// Starts the lanes for `store`; they end when it is dropped.
    pub fn start(store: &Arc<Postgres>) -> Batcher {
        let (queue, waiting) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..LANES {
            tokio::spawn(lane(Arc::downgrade(store), waiting.clone()));
        }
        Batcher { queue }
    }

    /// Claim-next for `who`, done with whatever else is waiting.
    pub async fn claim_next(
        &self,
        who: Principal,
        filter: ClaimFilter,
        lease: Duration,
    ) -> StoreResult<Option<Claimed>> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job::ClaimNext {
                who,
                filter,
                lease,
                reply,
            })
            .map_err(|_| closing())?;
        answer.await.map_err(|_| closing())?
    }

    /// `who`'s completion of its lease on task `id`, done with whatever else is waiting.
    pub async fn complete(&self, id: i64, who: Principal, spec: CompleteSpec) -> StoreResult<Task> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job::Complete { id, who, spec, reply })
            .map_err(|_| closing())?;
        answer.await.map_err(|_| closing())?
    }
}

/// One lane: takes every request waiting (up to [`MOST`]) and runs them as a group, again and
/// again, until the store is gone.
async fn lane(store: Weak<Postgres>, waiting: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    loop {
        let jobs = {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            let mut jobs = vec![first];
            while jobs.len() < MOST {
                match waiting.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            jobs
        };
        let Some(store) = store.upgrade() else {
            return;
        };
        // A group that panics fails its own callers (their answers are dropped), not the lane.
        let _ = tokio::spawn(run(store, jobs)).await;
    }
}

/// Runs `jobs` as one group and answers each.
async fn run(store: Arc<Postgres>, jobs: Vec<Job>) {
    let jobs: Vec<Job> = jobs.into_iter().filter(|job| !job.abandoned()).collect();
    if jobs.is_empty() {
        return;
    }
    match together(&store, &jobs).await {
        Ok(answers) => {
            let mut alone = Vec::new();
            for (job, answer) in jobs.into_iter().zip(answers) {
                match (job, answer) {
                    (Job::ClaimNext { reply, .. }, Answer::Claim(claim)) => {
                        let _ = reply.send(Ok(claim));
                    }
                    (Job::Complete { reply, .. }, Answer::Complete(done)) => {
                        let _ = reply.send(done);
                    }
                    (job, _) => alone.push(job),
                }
            }
            each_alone(&store, alone);
        }
        Err(Failure::Before(err)) => {
            tracing::debug!(error = %err, requests = jobs.len(), "a group's change failed; each request goes alone");
            each_alone(&store, jobs);
        }
        Err(Failure::Commit(err)) => {
            for job in jobs {
                let err = again(&err);
                match job {
                    Job::ClaimNext { reply, .. } => {
                        let _ = reply.send(Err(err));
                    }
                    Job::Complete { reply, .. } => {
                        let _ = reply.send(Err(err));
                    }
                }
            }
        }
    }
}

/// Does each of `jobs` in a change of its own, all at once, and answers it.
fn each_alone(store: &Arc<Postgres>, jobs: Vec<Job>) {
    for job in jobs {
        let store = store.clone();
        tokio::spawn(async move { job.alone(&store).await });
    }
}

/// The group's change: its claims, then its completions, one commit. One answer per job.
async fn together(store: &Postgres, jobs: &[Job]) -> Result<Vec<Answer>, Failure> {
    let mut tx = store.begin().await.map_err(Failure::Before)?;
    let mut answers: Vec<Answer> = jobs.iter().map(|_| Answer::Alone).collect();
    claims(&mut tx, store, jobs, &mut answers)
        .await
        .map_err(Failure::Before)?;
    completions(&mut tx, jobs, &mut answers)
        .await
        .map_err(Failure::Before)?;
    tx.grouped(jobs.len());
    tx.commit(store).await.map_err(Failure::Commit)?;
    Ok(answers)
}

/// The group's claim-nexts: callers who want the same work are handed the best ready tasks in
/// one statement, the first to ask the best.
async fn claims(tx: &mut Tx, store: &Postgres, jobs: &[Job], answers: &mut [Answer]) -> StoreResult<()> {
    let claimers: Vec<usize> = (0..jobs.len())
        .filter(|&i| matches!(jobs[i], Job::ClaimNext { .. }))
        .collect();
    if claimers.is_empty() {
        return Ok(());
    }
    let mut agents: Vec<i64> = claimers
        .iter()
        .filter_map(|&i| match &jobs[i] {
            Job::ClaimNext { who, .. } => who.agent_id,
            Job::Complete { .. } => None,
        })
        .collect();
    agents.sort_unstable();
    agents.dedup();
    let now = tx.now;
    // The claimers' agent rows are share-locked before any task row, as a lone claim does.
    let (active, expired, reserved, declaring): (Vec<i64>, bool, bool, bool) = sqlx::query_as(&format!(
        "SELECT ARRAY(SELECT id FROM agents WHERE id = ANY($2) AND deactivated_at IS NULL \
             ORDER BY id FOR SHARE), {SITUATION}"
    ))
    .bind(now.millis())
    .bind(&agents)
    .fetch_one(tx.db())
    .await?;
    let reserved = match expired {
        true => {
            reap(tx, None).await?;
            reservations::any(tx.db()).await?
        }
        false => reserved,
    };
    if reserved || declaring {
        return Ok(());
    }
    let human_kinds = &store.options.human_kinds;
    let mut groups: Vec<(Wanted, Vec<usize>)> = Vec::new();
    for &i in &claimers {
        let Job::ClaimNext { who, filter, .. } = &jobs[i] else {
            continue;
        };
        if who.agent_id.is_some_and(|id| active.binary_search(&id).is_err()) {
            continue;
        }
        let wanted = Wanted::new(who, filter, human_kinds);
        match groups.iter_mut().find(|(w, _)| *w == wanted) {
            Some((_, members)) => members.push(i),
            None => groups.push((wanted, vec![i])),
        }
    }
    for (wanted, members) in groups {
        let mut taken = claim_many(tx, &wanted, jobs, &members).await?;
        for (n, &i) in members.iter().enumerate() {
            let claim = taken[n].take();
            if let Some(claim) = &claim {
                record_claim(tx, claim).await?;
            }
            answers[i] = Answer::Claim(claim);
        }
    }
    Ok(())
}

/// Claims for the claim-nexts `members` of `jobs`, all wanting `wanted`, the best ready tasks
/// nobody else holds, in one statement; the claim of each member, in order (`None` once the
/// ready tasks ran out).
async fn claim_many(
    tx: &mut Tx,
    wanted: &Wanted,
    jobs: &[Job],
    members: &[usize],
) -> StoreResult<Vec<Option<Claimed>>> {
    let now = tx.now;
    let (mut holders, mut untils, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
    for &i in members {
        if let Job::ClaimNext { who, lease, .. } = &jobs[i] {
            holders.push(who.name.clone());
            untils.push(now.plus_millis(millis(*lease)).millis());
            lengths.push(millis(*lease));
        }
    }
    // $1 now, $2 holders, $3 lease ends, $4 lease lengths, $5 how many; then the condition's.
    let (filter, _) = wanted.condition(6);
    let sql = format!(
        "WITH pick AS (SELECT p.id AS pick_id, row_number() OVER (ORDER BY p.priority, p.id) AS n \
             FROM (SELECT t.id, t.priority FROM tasks t WHERE {filter} AND t.paths = '[]' \
                 ORDER BY t.priority, t.id LIMIT $5 FOR UPDATE SKIP LOCKED) AS p), \
         w AS (SELECT * FROM unnest($2::text[], $3::int8[], $4::int8[]) WITH ORDINALITY \
             AS w(w_holder, w_until, w_length, n)) \
         UPDATE tasks SET {} FROM pick JOIN w USING (n) WHERE tasks.id = pick.pick_id \
         RETURNING {TASK_COLUMNS}, w.n",
        claim_set("w.w_holder", "w.w_until", "w.w_length")
    );
    let found = wanted
        .bind(
            sqlx::query(&sql)
                .bind(now.millis())
                .bind(&holders)
                .bind(&untils)
                .bind(&lengths)
                .bind(members.len() as i64),
        )
        .fetch_all(tx.db())
        .await?;
    let mut taken: Vec<Option<Claimed>> = members.iter().map(|_| None).collect();
    for row in &found {
        let n: i64 = row.try_get(TASK_COLUMN_COUNT)?;
        let slot = usize::try_from(n - 1)
            .ok()
            .and_then(|n| taken.get_mut(n))
            .ok_or_else(|| StoreError::Corrupt(format!("a grouped claim came back for caller {n}")))?;
        *slot = Some(claimed(rows::task(row)?)?);
    }
    Ok(taken)
}

/// The group's agents' completions of their own leases, in one statement; a second completion
/// of the same task goes alone.
async fn completions(tx: &mut Tx, jobs: &[Job], answers: &mut [Answer]) -> StoreResult<()> {
    let mut members: Vec<usize> = Vec::new();
    let mut ids: Vec<i64> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if let Job::Complete { id, who, .. } = job {
            if !who.is_admin() && !ids.contains(id) {
                members.push(i);
                ids.push(*id);
            }
        }
    }
    if members.is_empty() {
        return Ok(());
    }
    // Rows are taken in id order, as other changes take several.
    members.sort_by_key(|&i| match &jobs[i] {
        Job::Complete { id, .. } => *id,
        Job::ClaimNext { .. } => 0,
    });
    let (mut ids, mut fences, mut holders, mut results) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &i in &members {
        if let Job::Complete { id, who, spec, .. } = &jobs[i] {
            ids.push(*id);
            fences.push(spec.fence);
            holders.push(who.name.clone());
            results.push(to_json(&spec.result()));
        }
    }
    let now = tx.now;
    let found = sqlx::query(&format!(
        "UPDATE tasks SET status = 'completed', status_reason = NULL, result = u.c_result, \
             progress_percent = 100, lease_holder = NULL, lease_expires_at = NULL, \
             completed_at = $1, updated_at = $1 \
         FROM unnest($2::int8[], $3::int8[], $4::text[], $5::text[]) AS u(c_id, c_fence, c_holder, c_result) \
         WHERE tasks.id = u.c_id AND tasks.status = 'in_progress' AND tasks.fence = u.c_fence \
             AND tasks.lease_holder = u.c_holder \
         RETURNING {TASK_COLUMNS}, \
             EXISTS (SELECT 1 FROM reservations r WHERE r.task_id = tasks.id), \
             EXISTS (SELECT 1 FROM task_deps d WHERE d.depends_on_id = tasks.id)"
    ))
    .bind(now.millis())
    .bind(&ids)
    .bind(&fences)
    .bind(&holders)
    .bind(&results)
    .fetch_all(tx.db())
    .await?;
    let mut done = Vec::with_capacity(found.len());
    for row in &found {
        done.push((
            rows::task(row)?,
            row.try_get::<bool, _>(TASK_COLUMN_COUNT)?,
            row.try_get::<bool, _>(TASK_COLUMN_COUNT + 1)?,
        ));
    }
    // The first completion that ends reservations takes the reserving lock: every dependent's
    // row is locked before it (see `deps::lock_dependents`).
    if done.iter().any(|(_, reserved, _)| *reserved) {
        let waited_on: Vec<i64> = done
            .iter()
            .filter(|(_, _, depended_on)| *depended_on)
            .map(|(task, _, _)| task.id)
            .collect();
        if !waited_on.is_empty() {
            deps::lock_dependents(tx, &waited_on, Dependents::Release).await?;
        }
    }
    for &i in &members {
        let Job::Complete { id, who, spec, .. } = &jobs[i] else {
            continue;
        };
        let answer = match done.iter().position(|(task, _, _)| task.id == *id) {
            Some(at) => {
                let (task, reserved, depended_on) = done.swap_remove(at);
                let completion = Completion {
                    holder: who.name.clone(),
                    fence: spec.fence,
                    summary: spec.summary.clone(),
                    reserved,
                    depended_on,
                };
                completion.record(tx, &task, who).await?;
                Ok(task)
            }
            // Only a refusal is this caller's answer; a fault of the database is the group's.
            None => match lease_refusal(tx, *id, who, spec.fence).await {
                refusal if refusal.is_refusal() => Err(refusal),
                fault => return Err(fault),
            },
        };
        answers[i] = Answer::Complete(answer);
    }
    Ok(())
}
