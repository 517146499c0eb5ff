//! Who claim-next hands a task to: the one rule that the claim query implements, that `why`
//! explains, and that the property tests check the two against.

use std::fmt;
use std::str::FromStr;

use super::{Route, Status, Task, Timestamp};

/// Where the assignment loop last sent an available task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Routed {
    /// To a person: only people (and admins) may claim it.
    Human,
    /// To a new agent process (a run now holds it).
    Spawn,
    /// Left for agents to pull.
    Pull,
    /// Waiting for spawn capacity or a calmer host; agents may still pull it.
    Wait,
}

impl Routed {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Routed::Human => "human",
            Routed::Spawn => "spawn",
            Routed::Pull => "pull",
            Routed::Wait => "wait",
        }
    }

    /// A routing decision as a sentence: what happened and why. (A wait's reason already says
    /// what it waits for: "waiting for capacity: …".)
    pub fn sentence(self, reason: &str) -> String {
        let what = match self {
            Routed::Human => "sent to people",
            Routed::Spawn => "spawned",
            Routed::Pull => "left for agents to pull",
            Routed::Wait => return reason.to_string(),
        };
        format!("{what}: {reason}")
    }
}

impl fmt::Display for Routed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Routed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Routed::Human, Routed::Spawn, Routed::Pull, Routed::Wait]
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown routing decision {s:?}"))
    }
}

/// Why claim-next would not hand a task to a caller whose capabilities and projects fit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not available: pending, blocked, final, or held under a live lease.
    NotAvailable(Status),
    /// Backing off after a failed attempt until then.
    BackingOff(Timestamp),
    /// Every attempt is used (an expired lease would fail it, not return it).
    AttemptsUsed(i64),
    /// Meant for a person (route `human` or a kind for people).
    ForPeople,
    /// The router sent it to people (a spawn that could not happen, a decline chain…).
    RoutedToPeople,
    /// Route `spawn`: only a process the server starts takes it.
    ForSpawner,
}

/// True for work meant for people: route `human`, or route `auto` with a kind in `human_kinds`.
pub fn meant_for_people(task: &Task, human_kinds: &[String]) -> bool {
    task.route == Route::Human || (task.route == Route::Auto && human_kinds.contains(&task.kind))
}

/// Whether claim-next, asked now by a caller whose capabilities and projects fit `task`, would
/// hand it out; `person` is true for people and admins. `routed` is the router's last decision.
/// Claim-next first returns expired leases, so an in-progress task whose lease has run out
/// counts as available again (or failed, when its attempts are used).
pub fn refusal(
    task: &Task,
    routed: Option<Routed>,
    human_kinds: &[String],
    person: bool,
    now: Timestamp,
) -> Option<Refusal> {
    let expired = task.lease.as_ref().is_some_and(|l| l.expires_at <= now);
    match task.status {
        Status::Available => {}
        Status::InProgress if expired => {}
        other => return Some(Refusal::NotAvailable(other)),
    }
    if task.attempts >= task.max_attempts {
        return Some(Refusal::AttemptsUsed(task.max_attempts));
    }
    if let Some(at) = task.not_before.filter(|at| *at > now) {
        return Some(Refusal::BackingOff(at));
    }
    let with_people = routed == Some(Routed::Human);
    if task.route == Route::Spawn && !(person && with_people) {
        return Some(Refusal::ForSpawner);
    }
    if person {
        return None;
    }
    if with_people {
        return Some(Refusal::RoutedToPeople);
    }
    if meant_for_people(task, human_kinds) {
        return Some(Refusal::ForPeople);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Lease;
    use crate::spawn::router::tests_support::sample_task;

    fn task(status: Status, route: Route, kind: &str) -> Task {
        Task {
            status,
            route,
            kind: kind.into(),
            ..sample_task()
        }
    }

    #[test]
    fn agents_get_ready_pull_and_waiting_work_only() {
        let kinds = vec!["architecture".to_string()];
        let now = Timestamp(1_000);
        let agent = |t: &Task, routed| refusal(t, routed, &kinds, false, now);
        let person = |t: &Task, routed| refusal(t, routed, &kinds, true, now);
        let plain = task(Status::Available, Route::Auto, "bug");
        assert_eq!(agent(&plain, None), None);
        assert_eq!(agent(&plain, Some(Routed::Pull)), None);
        assert_eq!(
            agent(&plain, Some(Routed::Wait)),
            None,
            "waiting for spawn capacity"
        );
        assert_eq!(agent(&plain, Some(Routed::Human)), Some(Refusal::RoutedToPeople));
        assert_eq!(person(&plain, Some(Routed::Human)), None);

        let design = task(Status::Available, Route::Auto, "architecture");
        assert_eq!(agent(&design, None), Some(Refusal::ForPeople));
        assert_eq!(person(&design, None), None);
        let forced = task(Status::Available, Route::Agent, "architecture");
        assert_eq!(agent(&forced, None), None, "route agent overrides the kind");
        let human = task(Status::Available, Route::Human, "bug");
        assert_eq!(agent(&human, None), Some(Refusal::ForPeople));

        let spawn = task(Status::Available, Route::Spawn, "bug");
        assert_eq!(agent(&spawn, None), Some(Refusal::ForSpawner));
        assert_eq!(person(&spawn, None), Some(Refusal::ForSpawner));
        assert_eq!(
            person(&spawn, Some(Routed::Human)),
            None,
            "a fallen-back spawn is a person's"
        );

        let mut used = plain.clone();
        used.attempts = 3;
        assert_eq!(agent(&used, None), Some(Refusal::AttemptsUsed(3)));
        let mut backing = plain.clone();
        backing.not_before = Some(Timestamp(2_000));
        assert_eq!(agent(&backing, None), Some(Refusal::BackingOff(Timestamp(2_000))));
        backing.not_before = Some(Timestamp(1_000));
        assert_eq!(agent(&backing, None), None, "a backoff ending now is over");

        for status in [
            Status::Pending,
            Status::Blocked,
            Status::Completed,
            Status::Cancelled,
        ] {
            assert_eq!(
                agent(&task(status, Route::Auto, "bug"), None),
                Some(Refusal::NotAvailable(status))
            );
        }
        let mut held = task(Status::InProgress, Route::Auto, "bug");
        held.attempts = 1;
        held.lease = Some(Lease {
            holder: "a".into(),
            fence: 1,
            expires_at: Timestamp(5_000),
        });
        assert_eq!(
            agent(&held, None),
            Some(Refusal::NotAvailable(Status::InProgress))
        );
        held.lease = Some(Lease {
            holder: "a".into(),
            fence: 1,
            expires_at: Timestamp(1_000),
        });
        assert_eq!(agent(&held, None), None, "an expired lease is returned first");
        held.attempts = 3;
        assert_eq!(agent(&held, None), Some(Refusal::AttemptsUsed(3)));
    }

    #[test]
    fn routing_decisions_read_as_sentences() {
        assert_eq!(
            Routed::Human.sentence("its route is human"),
            "sent to people: its route is human"
        );
        assert_eq!(
            Routed::Wait.sentence("waiting for capacity: a 2/2 running"),
            "waiting for capacity: a 2/2 running"
        );
        for r in [Routed::Human, Routed::Spawn, Routed::Pull, Routed::Wait] {
            assert_eq!(r.as_str().parse::<Routed>(), Ok(r));
        }
    }
}
