//! What a change announces once it commits, gathered while it runs in either backend: its
//! events, tasks that may have become claimable, freed spawn capacity, changed agents or
//! tokens, and the work it counts in the metrics.

use crate::domain::event::NewEvent;
use crate::telemetry::Telemetry;

/// Work counted in the metrics once its change commits, by project.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    Claim,
    Completion,
    Failure,
    LeaseExpiry,
}

/// Counts committed work in `telemetry`.
pub(crate) fn record<'a>(telemetry: &Telemetry, counts: impl IntoIterator<Item = &'a (Count, String)>) {
    for (what, project) in counts {
        let family = match what {
            Count::Claim => &telemetry.claims,
            Count::Completion => &telemetry.completions,
            Count::Failure => &telemetry.failures,
            Count::LeaseExpiry => &telemetry.lease_expiries,
        };
        telemetry.count(family, project);
    }
}

/// What one change announces.
#[derive(Default)]
pub(crate) struct Announcements {
    pub events: Vec<NewEvent>,
    pub ready: Vec<i64>,
    pub capacity: bool,
    pub agents_changed: bool,
    pub tokens_changed: bool,
    pub counts: Vec<(Count, String)>,
}

impl Announcements {
    /// Whether tasks became available or capacity was freed: the loops woken by work look again.
    pub fn wakes_loops(&self) -> bool {
        self.capacity || !self.ready.is_empty()
    }
}

/// A change in progress, as the store's operations tell it what to announce.
pub(crate) trait Announce {
    /// What the change announces so far.
    fn announcements(&mut self) -> &mut Announcements;

    /// Records `event` with the change (written in the same transaction).
    fn event(&mut self, event: NewEvent) {
        self.announcements().events.push(event);
    }

    /// Records `events` with the change.
    fn events(&mut self, events: impl IntoIterator<Item = NewEvent>) {
        self.announcements().events.extend(events);
    }

    /// Task `id` may have become claimable: a fitting long poll and the assignment loop are
    /// woken once the change commits.
    fn ready(&mut self, id: i64) {
        self.announcements().ready.push(id);
    }

    /// Spawn capacity was freed (a run ended): the assignment loop looks again.
    fn capacity_freed(&mut self) {
        self.announcements().capacity = true;
    }

    /// Agents changed (a token, role, capabilities): remembered principals are forgotten.
    fn agents_changed(&mut self) {
        self.announcements().agents_changed = true;
    }

    /// A token was replaced or revoked: open streams look again whether theirs still works.
    fn tokens_changed(&mut self) {
        let said = self.announcements();
        said.agents_changed = true;
        said.tokens_changed = true;
    }

    /// Counts `what` for `project` in the metrics, once the change commits.
    fn count(&mut self, what: Count, project: &str) {
        self.announcements().counts.push((what, project.to_string()));
    }
}
