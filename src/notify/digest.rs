//! The daily digest: one email per person with the tasks waiting on them, blocked, and
//! failed in the last day. A person with nothing waiting gets no email.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::{NewNotification, Reason, Status, Task, Timestamp};
use crate::store::StoreResult;

use super::{email, people, Notifier};

/// Most tasks one digest round looks at.
const DIGEST_TASKS: i64 = 1_000;
/// A day, in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// What one digest round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DigestOutcome {
    /// Digests queued (at most one per person per day).
    pub queued: usize,
    /// Tasks covered.
    pub tasks: usize,
}

#[derive(Default)]
struct Sections<'a> {
    email: String,
    waiting: Vec<&'a Task>,
    blocked: Vec<&'a Task>,
    failed: Vec<&'a Task>,
}

impl Notifier {
    /// Queues today's digest for every person something waits on (once per person and day).
    pub async fn queue_digests(&self, now: Timestamp) -> StoreResult<DigestOutcome> {
        let tasks = self
            .store
            .tasks_for_people(now.plus_millis(-DAY_MS), DIGEST_TASKS)
            .await?;
        let mut by_person: BTreeMap<String, Sections> = BTreeMap::new();
        for task in &tasks {
            // The person it is offered to; when everyone declined, still the first who matches.
            let declined = self.store.declined_by(task.id).await?;
            let person = people::next_person(task, &self.config, &declined)
                .or_else(|| people::candidates(task, &self.config).into_iter().next());
            let Some(person) = person else {
                continue;
            };
            let sections = by_person.entry(person.name).or_default();
            sections.email = person.email;
            match task.status {
                Status::Available => sections.waiting.push(task),
                Status::Blocked => sections.blocked.push(task),
                _ => sections.failed.push(task),
            }
        }
        let day = chrono::DateTime::from_timestamp_millis(now.millis())
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let items: Vec<NewNotification> = by_person
            .into_iter()
            .map(|(name, s)| {
                let subject = format!(
                    "[taskyard] Your digest for {day}: {} waiting, {} blocked, {} failed",
                    s.waiting.len(),
                    s.blocked.len(),
                    s.failed.len()
                );
                let body = email::digest_body(
                    &name,
                    &[
                        ("Waiting for you", s.waiting),
                        ("Blocked", s.blocked),
                        ("Failed in the last day", s.failed),
                    ],
                    &self.url,
                );
                NewNotification {
                    task_id: None,
                    dedupe_key: format!("digest:{name}:{day}"),
                    human: name,
                    to: s.email,
                    subject,
                    reason: Reason::Digest,
                    body: Some((body.text, body.html)),
                }
            })
            .collect();
        let queued = self.store.queue_notifications(None, &items).await?;
        if queued > 0 {
            self.store.bus().wake_outbox();
        }
        Ok(DigestOutcome {
            queued,
            tasks: tasks.len(),
        })
    }
}
