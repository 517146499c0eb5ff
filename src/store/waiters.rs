//! Long polls waiting for work, in arrival order. A commit that makes tasks claimable announces
//! each of them ([`Work`]) here, and each wakes at most the first waiter that could take it (by
//! capabilities, project, and whether it is meant for people), so a new task costs one claim
//! attempt, not one per waiter. A waiter woken for a task that then claims another announces
//! the first again, and one that leaves before using its wake-up passes it on, so no wake-up is
//! lost. (Backoffs and leases that run out are timed by the waiters themselves.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::domain::claim::{refusal, Routed};
use crate::domain::{Task, Timestamp};

/// The work `task` (routed as `routed`) offers claim-next now, if any: who may take it
/// follows `domain::claim`'s rule, for agents and for people.
pub fn work_of(task: &Task, routed: Option<Routed>, human_kinds: &[String], now: Timestamp) -> Option<Work> {
    let for_agents = refusal(task, routed, human_kinds, false, now).is_none();
    let for_people = refusal(task, routed, human_kinds, true, now).is_none();
    (for_agents || for_people).then(|| Work {
        id: task.id,
        capabilities: task.capabilities.clone(),
        project: task.project.clone(),
        for_people: !for_agents,
    })
}

/// A task that became claimable, as waiters need to judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    /// Its id.
    pub id: i64,
    /// The capabilities a claimer needs.
    pub capabilities: Vec<String>,
    /// Its project.
    pub project: String,
    /// Only people (and admins) may take it by claim-next.
    pub for_people: bool,
}

/// What a waiter would take.
#[derive(Debug, Clone)]
pub struct Wants {
    /// Its capabilities: a task's must be among them.
    pub capabilities: Vec<String>,
    /// Only these projects, if given.
    pub projects: Option<Vec<String>>,
    /// A person (or an admin): may take work meant for people.
    pub person: bool,
}

impl Wants {
    /// True when claim-next for this waiter could hand out `work`.
    pub fn fits(&self, work: &Work) -> bool {
        (self.person || !work.for_people)
            && work.capabilities.iter().all(|c| self.capabilities.contains(c))
            && self.projects.as_ref().is_none_or(|p| p.contains(&work.project))
    }
}

struct Waiter {
    wants: Arc<Wants>,
    wake: oneshot::Sender<Work>,
}

#[derive(Default)]
struct State {
    next: u64,
    /// Armed waiters by arrival.
    armed: BTreeMap<u64, Waiter>,
}

/// The waiting long polls. Cheap to clone.
#[derive(Clone, Default)]
pub struct Waiters {
    state: Arc<Mutex<State>>,
}

impl Waiters {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new waiter wanting `wants`; it keeps its place in line for as long as it lives.
    pub fn waiter(&self, wants: Wants) -> Waiting {
        let mut state = self.state();
        let seq = state.next;
        state.next += 1;
        Waiting {
            waiters: self.clone(),
            seq,
            wants: Arc::new(wants),
            woken: None,
            pending: None,
        }
    }

    /// Wakes, for each of `work`, the first armed waiter that fits it.
    pub fn announce(&self, work: Vec<Work>) {
        if work.is_empty() {
            return;
        }
        let mut state = self.state();
        for mut item in work {
            let first_fitting = |state: &State, item: &Work| {
                state
                    .armed
                    .iter()
                    .find(|(_, w)| w.wants.fits(item))
                    .map(|(seq, _)| *seq)
            };
            while let Some(waiter) = first_fitting(&state, &item).and_then(|seq| state.armed.remove(&seq)) {
                // A waiter that has gone hands the work to the next one.
                match waiter.wake.send(item) {
                    Ok(()) => break,
                    Err(back) => item = back,
                }
            }
        }
    }

    /// How many waiters are armed now (for tests and diagnostics).
    pub fn armed(&self) -> usize {
        self.state().armed.len()
    }
}

/// One long poll's place in line.
pub struct Waiting {
    waiters: Waiters,
    seq: u64,
    wants: Arc<Wants>,
    /// The receiving end while armed.
    woken: Option<oneshot::Receiver<Work>>,
    /// Work this waiter was woken for and has not yet tried to claim.
    pending: Option<Work>,
}

impl Waiting {
    /// Puts this waiter in line (again, at its own place) to be woken by fitting work; call
    /// before each claim attempt, so work announced during the attempt is not missed.
    pub fn arm(&mut self) {
        if self.woken.is_some() {
            return;
        }
        let (wake, woken) = oneshot::channel();
        self.waiters.state().armed.insert(
            self.seq,
            Waiter {
                wants: self.wants.clone(),
                wake,
            },
        );
        self.woken = Some(woken);
    }

    /// Work delivered to this waiter and not yet used; it is then no longer armed.
    fn delivered(&mut self) -> Option<Work> {
        if let Some(work) = self.pending.take() {
            return Some(work);
        }
        let work = self.woken.as_mut()?.try_recv().ok()?;
        self.woken = None;
        Some(work)
    }

    /// After a claim attempt that got `claimed` (a task id, or nothing): whether to try again
    /// at once, because this waiter was woken while it tried (the work may have committed after
    /// the attempt looked). Work it was woken for while it claimed another task goes on to the
    /// next fitting waiter; a waiter that claimed something leaves the line.
    pub fn after_attempt(&mut self, claimed: Option<i64>) -> bool {
        let delivered = self.delivered();
        let Some(got) = claimed else {
            return delivered.is_some();
        };
        if let Some(work) = delivered.filter(|w| w.id != got) {
            self.waiters.announce(vec![work]);
        }
        self.leave();
        false
    }

    /// Waits until fitting work is announced for this waiter (forever if it is not armed).
    pub async fn woken(&mut self) {
        let Some(woken) = self.woken.as_mut() else {
            return std::future::pending().await;
        };
        let got = woken.await.ok();
        self.woken = None;
        self.pending = got;
    }

    /// Leaves the line, passing on a wake-up it can no longer use.
    fn leave(&mut self) {
        self.waiters.state().armed.remove(&self.seq);
        if let Some(work) = self.delivered() {
            self.waiters.announce(vec![work]);
        }
        self.woken = None;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(id: i64, caps: &[&str], project: &str) -> Work {
        Work {
            id,
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            project: project.into(),
            for_people: false,
        }
    }

    fn wants(caps: &[&str], projects: Option<&[&str]>) -> Wants {
        Wants {
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            projects: projects.map(|p| p.iter().map(|s| s.to_string()).collect()),
            person: false,
        }
    }

    #[test]
    fn who_fits() {
        let w = wants(&["rust", "backend"], Some(&["api"]));
        assert!(w.fits(&work(1, &["rust"], "api")));
        assert!(!w.fits(&work(1, &["go"], "api")), "capabilities");
        assert!(!w.fits(&work(1, &[], "web")), "project");
        let people = Work {
            for_people: true,
            ..work(1, &[], "api")
        };
        assert!(!w.fits(&people));
        assert!(Wants { person: true, ..w }.fits(&people));
    }

    #[tokio::test]
    async fn each_task_wakes_the_first_fitting_waiter_only() {
        let waiters = Waiters::default();
        let mut first = waiters.waiter(wants(&["rust"], None));
        let mut second = waiters.waiter(wants(&["rust"], None));
        let mut other = waiters.waiter(wants(&[], Some(&["web"])));
        for w in [&mut first, &mut second, &mut other] {
            w.arm();
        }
        waiters.announce(vec![work(1, &["rust"], "api")]);
        first.woken().await;
        assert_eq!(waiters.armed(), 2, "one task, one waiter woken");
        assert!(!first.after_attempt(Some(1)));
        // Nothing fits: nobody wakes.
        waiters.announce(vec![work(2, &["go"], "api")]);
        assert_eq!(waiters.armed(), 2);
        // Woken for task 3, `second` claims task 9 instead: 3 goes on to the next fitting waiter.
        waiters.announce(vec![work(3, &["rust"], "api")]);
        first.arm();
        assert!(!second.after_attempt(Some(9)));
        first.woken().await;
        assert!(!first.after_attempt(Some(3)));
        // A waiter that leaves passes its wake-up on.
        first.arm();
        second.arm();
        waiters.announce(vec![work(4, &[], "api")]);
        drop(first);
        second.woken().await;
        assert!(second.after_attempt(None), "woken and found nothing: try again");
        drop(other);
        assert_eq!(waiters.armed(), 0);
    }
}
