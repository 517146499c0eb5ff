//! Humans in the loop: the notifier turns events that need a person into rows of the outbox,
//! sends them (with retries), and carries out the take and decline links of its emails.
//! Who is told lives in `people.rs`, links in `links.rs`, rendering in `email.rs`, the
//! transports in `mailer.rs`, the daily digest in `digest.rs`.

mod digest;
pub mod email;
pub mod links;
pub mod mailer;
pub mod people;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::domain::{
    BlockedBy, Change, Event, LinkAction, NewNotification, Notification, Principal, Reason, Refused, Routed,
    Status, Task, TaskRef, Timestamp,
};
use crate::store::{Claimed, Outgoing, Store, StoreError, StoreResult};

pub use digest::DigestOutcome;
pub use links::{LinkError, LinkSigner};
use mailer::Mailer;
use people::Person;

/// Events read from the log per round.
const EVENT_BATCH: i64 = 500;
/// Notifications sent per round.
const SEND_BATCH: i64 = 100;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3_600);

/// What one dispatch round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DispatchOutcome {
    /// Newly queued.
    pub queued: usize,
    /// Delivered.
    pub sent: usize,
    /// Failed this round, to be tried again.
    pub retrying: usize,
    /// Given up on.
    pub failed: usize,
}

/// The notifier: queueing, sending, and the links.
pub struct Notifier {
    store: Store,
    config: Arc<Config>,
    mailer: Mailer,
    links: LinkSigner,
    url: String,
}

impl Notifier {
    /// Builds the mailer, loads (or creates) the link key, and registers the configured people
    /// as agents of kind `human`.
    pub async fn new(
        store: Store,
        config: Arc<Config>,
        data_dir: &Path,
        url: String,
    ) -> anyhow::Result<Self> {
        let mailer = Mailer::from_config(&config.notify, data_dir)?;
        let links = LinkSigner::load_or_create(data_dir)?;
        let people: Vec<(String, Vec<String>)> = people::everyone(&config)
            .into_iter()
            .map(|p| (p.name, p.capabilities))
            .collect();
        store.sync_humans(&people).await?;
        if !people.is_empty() && config.server.public_url.is_none() && config.server.bind.ip().is_loopback() {
            tracing::warn!(%url, "links in emails point at a loopback address; set server.public_url \
                so people can open them");
        }
        Ok(Self {
            store,
            config,
            mailer,
            links,
            url,
        })
    }

    /// The link signer.
    pub fn links(&self) -> &LinkSigner {
        &self.links
    }

    /// One round: queue notifications for new trigger events, then send what is due. A failure
    /// to queue does not hold back sending; it is reported after.
    pub async fn dispatch(&self) -> StoreResult<DispatchOutcome> {
        let queueing = self.queue_from_events().await;
        let mut out = DispatchOutcome {
            queued: *queueing.as_ref().unwrap_or(&0),
            ..Default::default()
        };
        'rounds: loop {
            let due = self.store.due_notifications(Timestamp::now(), SEND_BATCH).await?;
            if due.is_empty() {
                break;
            }
            let count = due.len();
            for outgoing in due {
                match self.send(&outgoing).await {
                    Ok(()) => {
                        self.store.notification_sent(outgoing.notification.id).await?;
                        out.sent += 1;
                    }
                    Err(err) => {
                        let n = &outgoing.notification;
                        let attempts = n.attempts + 1;
                        let retry = !err.permanent && attempts < i64::from(self.config.notify.max_attempts);
                        let retry_at = retry.then(|| Timestamp::now().plus_millis(self.backoff(attempts)));
                        tracing::warn!(notification = n.id, to = %n.to, attempts, retry, error = %err.message,
                            "a notification was not sent");
                        self.store
                            .notification_attempt_failed(n.id, &err.message, retry_at)
                            .await?;
                        if retry {
                            out.retrying += 1;
                        } else {
                            out.failed += 1;
                        }
                        // The rest would fail the same way: they keep their attempts for later.
                        if err.server_fault {
                            break 'rounds;
                        }
                    }
                }
            }
            if (count as i64) < SEND_BATCH {
                break;
            }
        }
        queueing.map(|_| out)
    }

    /// Milliseconds to wait after `attempts` failed attempts: the base, doubling, capped.
    fn backoff(&self, attempts: i64) -> i64 {
        let base = self.config.notify.retry_backoff.0.as_millis() as i64;
        let doubled = base.saturating_mul(1i64 << (attempts - 1).clamp(0, 20));
        doubled.min(MAX_BACKOFF.as_millis() as i64)
    }

    /// Turns trigger events after the cursor into queued notifications, moving the cursor in
    /// the same transaction. Returns how many were queued.
    async fn queue_from_events(&self) -> StoreResult<usize> {
        let mut queued = 0;
        let mut cursor = self.store.notify_cursor().await?;
        loop {
            // Only the kinds that may concern people are read: on a busy registry most events
            // are claims and progress.
            let (events, last) = self.store.people_events_after(cursor, EVENT_BATCH).await?;
            if last <= cursor {
                break;
            }
            let mut items = Vec::new();
            for event in &events {
                match self.notification_for(event).await {
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => {}
                    // A task that cannot be read back will not be readable next time either.
                    Err(err @ StoreError::Corrupt(_)) => {
                        tracing::error!(event = event.id, error = %err, "no notification for an unreadable task");
                    }
                    // The database failed: keep what came before, try this event again next round.
                    Err(err) => {
                        self.store.queue_notifications(Some(event.id - 1), &items).await?;
                        return Err(err);
                    }
                }
            }
            queued += self.store.queue_notifications(Some(last), &items).await?;
            cursor = last;
        }
        Ok(queued)
    }

    /// The notification an event calls for, if any.
    async fn notification_for(&self, event: &Event) -> StoreResult<Option<NewNotification>> {
        let Some(task_id) = event.task_id else {
            return Ok(None);
        };
        let (reason, wanted) = match &event.change {
            // A decline queues the next person itself.
            Change::TaskRouted {
                decision: Some(decision),
                fallback,
                declined: false,
                ..
            } if decision == Routed::Human.as_str() => {
                let reason = if *fallback {
                    Reason::SpawnFallback
                } else {
                    Reason::Routed
                };
                (reason, Status::Available)
            }
            Change::TaskFailed { last: true, .. } => (Reason::Failed, Status::Failed),
            // Only a block by a holder or an admin is a decision to make; a block by a failed
            // dependency is the dependency's news.
            Change::TaskBlocked {
                by: BlockedBy::Decision { .. },
                ..
            } => (Reason::Blocked, Status::Blocked),
            Change::TaskStalled { .. } if self.config.notify.on_stall => {
                (Reason::Stalled, Status::InProgress)
            }
            _ => return Ok(None),
        };
        let task = match self.store.task(&TaskRef::Id(task_id)).await {
            Ok(task) => task,
            Err(StoreError::Refused(Refused::NotFound(_))) => return Ok(None),
            Err(e) => return Err(e),
        };
        // The news is old: the task has moved on since.
        if task.status != wanted {
            return Ok(None);
        }
        let Some(person) = self.recipient(&task, reason).await? else {
            return Ok(None);
        };
        let (fence, _) = self.store.task_routing(task_id).await?;
        Ok(Some(task_notification(&task, fence, reason, &person)))
    }

    /// Who hears about `task` for `reason`: an offer goes to the first person who has not
    /// declined it (nobody when all have); other news to the first who matches.
    async fn recipient(&self, task: &Task, reason: Reason) -> StoreResult<Option<Person>> {
        if matches!(reason, Reason::Routed | Reason::SpawnFallback) {
            let declined = self.store.declined_by(task.id).await?;
            return Ok(people::next_person(task, &self.config, &declined));
        }
        Ok(people::candidates(task, &self.config).into_iter().next())
    }

    /// Sends one notification, rendering task emails now so links are fresh.
    async fn send(&self, outgoing: &Outgoing) -> Result<(), mailer::SendError> {
        let n = &outgoing.notification;
        let body = match (&outgoing.body, n.task_id) {
            (Some((text, html)), _) => email::Body {
                text: text.clone(),
                html: html.clone(),
            },
            (None, Some(task_id)) => self
                .render(n, task_id)
                .await
                .map_err(|message| mailer::SendError {
                    permanent: false,
                    server_fault: false,
                    message,
                })?,
            (None, None) => {
                return Err(mailer::SendError {
                    permanent: true,
                    server_fault: false,
                    message: "the notification has no body and no task".into(),
                })
            }
        };
        let message = email::message(
            &self.config.notify.from,
            &n.to,
            &n.subject,
            &body,
            self.mailer.writes_files(),
        )
        .map_err(|message| mailer::SendError {
            permanent: true,
            server_fault: false,
            message,
        })?;
        self.mailer.send(message).await
    }

    async fn render(&self, n: &Notification, task_id: i64) -> Result<email::Body, String> {
        let task = self
            .store
            .task(&TaskRef::Id(task_id))
            .await
            .map_err(|e| format!("cannot read task #{task_id}: {e}"))?;
        let (_, routed_reason) = self
            .store
            .task_routing(task_id)
            .await
            .map_err(|e| format!("cannot read task #{task_id}: {e}"))?;
        let why = match n.reason {
            Reason::Routed | Reason::SpawnFallback => routed_reason,
            Reason::Stalled => Some(format!(
                "{} holds it, but nothing has been reported since {}",
                task.lease.as_ref().map(|l| l.holder.as_str()).unwrap_or("nobody"),
                task.progress
                    .updated_at
                    .or(task.claimed_at)
                    .map(Timestamp::to_rfc3339)
                    .unwrap_or_default()
            )),
            _ => task.status_reason.clone(),
        }
        .unwrap_or_else(|| n.reason.as_str().replace('_', " "));
        let links = n.reason.offers_take().then(|| {
            let expires = Timestamp::now().plus_millis(self.config.notify.link_ttl.0.as_millis() as i64);
            email::Links {
                take: format!("{}{}", self.url, self.links.path(n.id, LinkAction::Take, expires)),
                decline: format!(
                    "{}{}",
                    self.url,
                    self.links.path(n.id, LinkAction::Decline, expires)
                ),
                expires,
            }
        });
        Ok(email::task_body(&task, n.reason, &why, links.as_ref(), &self.url))
    }

    /// Carries out a take link: the task becomes the notified person's.
    pub async fn take(&self, notification: &Notification) -> StoreResult<(Principal, Claimed)> {
        let who = self.store.person(&notification.human).await?;
        let claim = self
            .store
            .take_by_link(notification.id, &who, self.config.notify.human_lease.0)
            .await?;
        Ok((who, claim))
    }

    /// Carries out a decline link: the task is offered to the next person, if any. Returns
    /// who that is.
    pub async fn decline(&self, notification: &Notification) -> StoreResult<Option<Person>> {
        let task_id = notification
            .task_id
            .ok_or_else(|| StoreError::conflict("this email is not about one task"))?;
        let task = self.store.task(&TaskRef::Id(task_id)).await?;
        let mut declined = self.store.declined_by(task_id).await?;
        declined.push(notification.human.clone());
        let next = people::next_person(&task, &self.config, &declined);
        let (fence, _) = self.store.task_routing(task_id).await?;
        let item = next
            .as_ref()
            .map(|p| task_notification(&task, fence, notification.reason, p));
        self.store.decline_by_link(notification.id, item.as_ref()).await?;
        Ok(next)
    }

    /// The public URL of this server.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The notification about `task` for `person`; one per task, reason, claim and person.
fn task_notification(task: &Task, fence: i64, reason: Reason, person: &Person) -> NewNotification {
    NewNotification {
        task_id: Some(task.id),
        human: person.name.clone(),
        to: person.email.clone(),
        subject: email::subject(task, reason),
        reason,
        dedupe_key: format!("{}:{}:{}:{}", reason.as_str(), task.id, fence, person.name),
        body: None,
    }
}
