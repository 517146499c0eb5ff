//! The lease lifecycle's rules: who may claim a task or act under its lease, and what a
//! failure, an expired lease, a block and an unblock make of it. Plain functions over domain
//! types; a store only applies their verdicts (and its SQL conditions mirror them). Who
//! claim-next hands a task to is in `claim.rs`; who may cancel, in `cancel.rs`.

use std::time::Duration;

use super::claim::meant_for_people;
use super::{Principal, Refused, Route, Status, Task, Timestamp};

/// Longest retry backoff.
const MAX_BACKOFF_MS: i64 = 3_600_000;

/// Checks that `who` holds the lease `fence` on `task` (admins may act for any holder).
pub fn check_hold(task: &Task, who: &Principal, fence: i64) -> Result<(), Refused> {
    match &task.lease {
        Some(lease) if lease.fence == fence => {
            if who.may_act_for(&lease.holder) {
                Ok(())
            } else {
                Err(Refused::Forbidden(format!(
                    "task #{} is leased to {}, not to {}",
                    task.id, lease.holder, who.name
                )))
            }
        }
        Some(lease) => Err(Refused::LeaseLost(format!(
            "fence {fence} on task #{} is stale: the task was claimed again (fence {}); stop work on it",
            task.id, lease.fence
        ))),
        None => Err(Refused::LeaseLost(format!(
            "fence {fence} on task #{} is stale: the task is now {}; stop work on it",
            task.id, task.status
        ))),
    }
}

/// Checks that `who` may claim `task` by its id now. `task` is as it stands once an expired
/// lease on it has been returned (see [`expiring`]), so an expired lease is taken over at once.
pub fn check_claim(
    task: &Task,
    who: &Principal,
    human_kinds: &[String],
    now: Timestamp,
) -> Result<(), Refused> {
    let id = task.id;
    if task.route == Route::Spawn && !who.is_person() && who.kind != "spawned" {
        return Err(Refused::Forbidden(format!(
            "task #{id} has route spawn: it is for an agent process the server starts"
        )));
    }
    if task.status == Status::Available && task.attempts >= task.max_attempts {
        return Err(Refused::NotReady(format!(
            "task #{id} has used all {} attempts; raise max_attempts to run it again",
            task.max_attempts
        )));
    }
    if meant_for_people(task, human_kinds) && !who.is_person() {
        return Err(Refused::Forbidden(format!(
            "task #{id} is meant for a person (route {}, kind {}); agents cannot claim it",
            task.route.as_str(),
            task.kind
        )));
    }
    match task.status {
        Status::Available if task.not_before.is_none_or(|t| t <= now) => Ok(()),
        Status::Available => Err(Refused::NotReady(format!(
            "task #{id} is backing off after a failed attempt until {}",
            task.not_before.map(Timestamp::to_rfc3339).unwrap_or_default()
        ))),
        Status::InProgress => Err(Refused::AlreadyClaimed {
            holder: task.lease.as_ref().map(|l| l.holder.clone()).unwrap_or_default(),
        }),
        Status::Pending => Err(Refused::NotReady(format!(
            "task #{id} is waiting for its dependencies; see GET /api/v1/tasks/{id}/why"
        ))),
        other => {
            let reason = task
                .status_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            Err(Refused::NotReady(format!("task #{id} is {other}{reason}")))
        }
    }
}

/// The backoff before retry number `attempts + 1`, in milliseconds: base × 2^(attempts − 1),
/// at most an hour.
pub fn backoff(base: Duration, attempts: i64) -> i64 {
    let base = i64::try_from(base.as_millis()).unwrap_or(i64::MAX);
    base.saturating_mul(1i64 << (attempts - 1).clamp(0, 20))
        .min(MAX_BACKOFF_MS)
}

/// What a failed attempt makes of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    /// When the task may be claimed again; `None`: it fails for good.
    pub retry_at: Option<Timestamp>,
    /// Its status reason from now on.
    pub status_reason: String,
}

/// A failed attempt on `task` (for `reason`): back to available after a backoff when
/// `retryable` with attempts left, otherwise failed for good.
pub fn failing(task: &Task, reason: &str, retryable: bool, base: Duration, now: Timestamp) -> Failing {
    if retryable && task.attempts < task.max_attempts {
        Failing {
            retry_at: Some(now.plus_millis(backoff(base, task.attempts))),
            status_reason: format!("attempt {} failed: {reason}", task.attempts),
        }
    } else if retryable {
        Failing {
            retry_at: None,
            status_reason: format!("{reason} (all {} attempts used)", task.max_attempts),
        }
    } else {
        Failing {
            retry_at: None,
            status_reason: reason.to_string(),
        }
    }
}

/// What an expired lease makes of its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    /// Its attempts are used: the task fails (and its dependents are blocked).
    pub last: bool,
    /// Its status reason from now on.
    pub reason: String,
}

/// The lease of `holder` on a task that has used `attempts` of `max_attempts` expired.
pub fn expiring(holder: &str, attempts: i64, max_attempts: i64) -> Expiring {
    let last = attempts >= max_attempts;
    Expiring {
        last,
        reason: if last {
            format!("the lease of {holder} expired and all {max_attempts} attempts are used")
        } else {
            format!("the lease of {holder} expired")
        },
    }
}

/// Checks that `who` may block `task`: the holder under its fence; an admin also a task nobody
/// holds (without a fence).
pub fn check_block(task: &Task, who: &Principal, fence: Option<i64>) -> Result<(), Refused> {
    match (task.status, fence) {
        (Status::InProgress, Some(fence)) => check_hold(task, who, fence),
        (Status::InProgress, None) => {
            Err(super::InputError::new("fence", "required: the task is in progress").into())
        }
        (_, Some(fence)) => check_hold(task, who, fence),
        (Status::Pending | Status::Available, None) if who.is_admin() => Ok(()),
        (Status::Pending | Status::Available, None) => Err(Refused::Forbidden(
            "only an admin may block a task it does not hold".into(),
        )),
        (status, None) => Err(Refused::Conflict(format!(
            "task #{} is {status}; it cannot be blocked",
            task.id
        ))),
    }
}

/// Checks that `who` may lift the block on `task`: people and admins, on a blocked task.
pub fn check_unblock(task: &Task, who: &Principal) -> Result<(), Refused> {
    if !who.is_person() {
        return Err(Refused::Forbidden(
            "only a person or an admin may lift a block".into(),
        ));
    }
    if task.status != Status::Blocked {
        return Err(Refused::Conflict(format!(
            "task #{} is {}, not blocked",
            task.id, task.status
        )));
    }
    Ok(())
}

/// The status a task starts in (or returns to, unblocked) given its dependencies' statuses,
/// and why: available when all are completed, blocked when one failed or was cancelled,
/// pending otherwise.
pub fn waiting_on(dependencies: &[(i64, Status)]) -> (Status, Option<String>) {
    let mut all_done = true;
    for (id, status) in dependencies {
        match status {
            Status::Completed => {}
            Status::Failed | Status::Cancelled => {
                return (Status::Blocked, Some(format!("dependency #{id} is {status}")))
            }
            _ => all_done = false,
        }
    }
    if all_done {
        (Status::Available, None)
    } else {
        (Status::Pending, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Lease, Role};
    use crate::spawn::router::tests_support::sample_task;

    fn agent(name: &str) -> Principal {
        Principal {
            agent_id: Some(1),
            name: name.into(),
            role: Role::Agent,
            kind: "script".into(),
            capabilities: vec![],
            scope: None,
        }
    }

    fn held(by: &str, fence: i64) -> Task {
        Task {
            status: Status::InProgress,
            attempts: 1,
            lease: Some(Lease {
                holder: by.into(),
                fence,
                expires_at: Timestamp(10_000),
            }),
            ..sample_task()
        }
    }

    #[test]
    fn only_the_holder_of_the_current_fence_acts() {
        let task = held("ana", 2);
        assert_eq!(check_hold(&task, &agent("ana"), 2), Ok(()));
        assert_eq!(check_hold(&task, &Principal::admin(), 2), Ok(()));
        assert!(matches!(
            check_hold(&task, &agent("bo"), 2),
            Err(Refused::Forbidden(_))
        ));
        assert!(
            matches!(check_hold(&task, &agent("ana"), 1), Err(Refused::LeaseLost(m)) if m.contains("fence 2"))
        );
        let free = sample_task();
        assert!(
            matches!(check_hold(&free, &agent("ana"), 2), Err(Refused::LeaseLost(m)) if m.contains("now available"))
        );
    }

    #[test]
    fn claims_by_id_follow_status_route_and_attempts() {
        let now = Timestamp(1_000);
        let kinds = vec!["architecture".to_string()];
        let ana = agent("ana");
        assert_eq!(check_claim(&sample_task(), &ana, &kinds, now), Ok(()));
        assert_eq!(
            check_claim(&held("bo", 1), &ana, &kinds, now),
            Err(Refused::AlreadyClaimed { holder: "bo".into() })
        );
        let spawn = Task {
            route: Route::Spawn,
            ..sample_task()
        };
        assert!(matches!(
            check_claim(&spawn, &ana, &kinds, now),
            Err(Refused::Forbidden(_))
        ));
        let run = Principal {
            kind: "spawned".into(),
            ..agent("run-1")
        };
        assert_eq!(check_claim(&spawn, &run, &kinds, now), Ok(()));
        let design = Task {
            kind: "architecture".into(),
            ..sample_task()
        };
        assert!(matches!(
            check_claim(&design, &ana, &kinds, now),
            Err(Refused::Forbidden(_))
        ));
        assert_eq!(check_claim(&design, &Principal::admin(), &kinds, now), Ok(()));
        let used = Task {
            attempts: 3,
            ..sample_task()
        };
        assert!(
            matches!(check_claim(&used, &ana, &kinds, now), Err(Refused::NotReady(m)) if m.contains("all 3 attempts"))
        );
        let backing = Task {
            not_before: Some(Timestamp(2_000)),
            ..sample_task()
        };
        assert!(
            matches!(check_claim(&backing, &ana, &kinds, now), Err(Refused::NotReady(m)) if m.contains("backing off"))
        );
        let pending = Task {
            status: Status::Pending,
            ..sample_task()
        };
        assert!(matches!(
            check_claim(&pending, &ana, &kinds, now),
            Err(Refused::NotReady(_))
        ));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_secs(30);
        assert_eq!(backoff(base, 1), 30_000);
        assert_eq!(backoff(base, 2), 60_000);
        assert_eq!(backoff(base, 3), 120_000);
        assert_eq!(backoff(base, 50), 3_600_000);
        assert_eq!(backoff(Duration::ZERO, 5), 0);
    }

    #[test]
    fn failures_retry_while_attempts_last() {
        let now = Timestamp(0);
        let base = Duration::from_secs(30);
        let task = held("ana", 1);
        let retry = failing(&task, "flaky", true, base, now);
        assert_eq!(retry.retry_at, Some(Timestamp(30_000)));
        assert_eq!(retry.status_reason, "attempt 1 failed: flaky");
        let last = Task {
            attempts: 3,
            ..held("ana", 3)
        };
        let done = failing(&last, "flaky", true, base, now);
        assert_eq!(
            (done.retry_at, done.status_reason.as_str()),
            (None, "flaky (all 3 attempts used)")
        );
        let final_ = failing(&task, "impossible", false, base, now);
        assert_eq!(
            (final_.retry_at, final_.status_reason.as_str()),
            (None, "impossible")
        );
    }

    #[test]
    fn expired_leases_return_work_or_fail_it() {
        assert_eq!(
            expiring("ana", 1, 3),
            Expiring {
                last: false,
                reason: "the lease of ana expired".into()
            }
        );
        assert!(expiring("ana", 3, 3).last);
    }

    #[test]
    fn blocks_and_unblocks() {
        let ana = agent("ana");
        let task = held("ana", 4);
        assert_eq!(check_block(&task, &ana, Some(4)), Ok(()));
        assert!(matches!(check_block(&task, &ana, None), Err(Refused::Invalid(e)) if e.field == "fence"));
        let free = sample_task();
        assert_eq!(check_block(&free, &Principal::admin(), None), Ok(()));
        assert!(matches!(
            check_block(&free, &ana, None),
            Err(Refused::Forbidden(_))
        ));
        let done = Task {
            status: Status::Completed,
            ..sample_task()
        };
        assert!(matches!(
            check_block(&done, &Principal::admin(), None),
            Err(Refused::Conflict(_))
        ));
        let blocked = Task {
            status: Status::Blocked,
            ..sample_task()
        };
        assert!(matches!(
            check_unblock(&blocked, &ana),
            Err(Refused::Forbidden(_))
        ));
        assert_eq!(check_unblock(&blocked, &Principal::admin()), Ok(()));
        assert!(matches!(
            check_unblock(&free, &Principal::admin()),
            Err(Refused::Conflict(_))
        ));
    }

    #[test]
    fn dependencies_decide_the_starting_status() {
        assert_eq!(waiting_on(&[]), (Status::Available, None));
        assert_eq!(
            waiting_on(&[(1, Status::Completed), (2, Status::InProgress)]),
            (Status::Pending, None)
        );
        assert_eq!(
            waiting_on(&[(1, Status::Pending), (2, Status::Cancelled)]),
            (Status::Blocked, Some("dependency #2 is cancelled".into()))
        );
    }
}
