//! Outgoing webhooks: the deliverer turns committed events into rows of the webhook outbox
//! (`store::Webhooks`) and POSTs them, signed, with retries. A delivery keeps its id across
//! attempts (`taskyard-delivery`), so a receiver can drop the duplicates an acknowledgement lost
//! on the way back would cause.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::domain::webhook::{Delivery, DeliveryStatus, Hook};
use crate::domain::Timestamp;
use crate::store::{Store, StoreResult};

/// Events read from the log per step.
const EVENT_BATCH: i64 = 500;
/// Deliveries attempted at once, per webhook.
const SEND_BATCH: i64 = 16;
/// Attempts before a delivery is given up.
const MAX_ATTEMPTS: i64 = 25;
/// The first retry's wait; each later one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(3_600);
/// How long a receiver has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a refusal's body is kept.
const KEPT_ANSWER: usize = 1_000;
/// How often the outbox is looked at when nothing wakes the deliverer.
const IDLE: Duration = Duration::from_secs(1);
/// How often the cursor is moved to the end of the log when no webhook is configured.
const NO_HOOKS_CURSOR: Duration = Duration::from_secs(60);

/// The `taskyard-signature` header's value for `body` sent at `t` (unix seconds):
/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body.as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait before attempt `attempts + 1`.
fn backoff(attempts: i64) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << attempts.clamp(0, 20) as u32);
    doubled.min(MAX_BACKOFF)
}

/// Queues and delivers webhook events until shutdown.
pub struct Deliverer {
    store: Store,
    hooks: Vec<Hook>,
    http: reqwest::Client,
}

impl Deliverer {
    /// A deliverer for the configured `[[webhooks]]`.
    pub fn new(store: Store, config: &Config) -> anyhow::Result<Deliverer> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("taskyard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let hooks = config
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, hook)| hook.hook(i))
            .collect();
        Ok(Deliverer { store, hooks, http })
    }

    /// Runs until `shutdown` turns true: queues new events and starts a lane for each webhook
    /// with deliveries due, then waits for the next event, the next retry, or a second. Each
    /// webhook's lane runs on its own, so a receiver that hangs delays only its own deliveries.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if self.hooks.is_empty() {
            return self.keep_cursor_at_the_end(shutdown).await;
        }
        let this = Arc::new(self);
        let mut lanes: HashMap<String, JoinHandle<()>> = HashMap::new();
        let mut events = this.store.bus().subscribe();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            lanes.retain(|_, lane| !lane.is_finished());
            let wait = match this.round(&mut lanes, &shutdown).await {
                Ok(wait) => wait,
                Err(err) => {
                    tracing::warn!(error = %err, "webhook deliveries could not be queued or recorded");
                    IDLE
                }
            };
            tokio::select! {
                _ = shutdown.changed() => break,
                got = events.recv() => {
                    if matches!(got, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        break;
                    }
                    // One round takes in every event committed so far.
                    while events.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // An attempt cut short is made again after the restart, under the same delivery id.
        for (_, lane) in lanes {
            lane.abort();
            let _ = lane.await;
        }
    }

    /// With no webhook configured, nothing is queued; the cursor follows the end of the log (at
    /// start, every minute, and at shutdown), so a webhook configured later does not replay it.
    async fn keep_cursor_at_the_end(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(err) = self.store.queue_webhook_deliveries(&[], EVENT_BATCH).await {
                tracing::warn!(error = %err, "the webhook cursor could not be moved");
            }
            if *shutdown.borrow_and_update() {
                return;
            }
            tokio::select! {
                changed = shutdown.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(NO_HOOKS_CURSOR) => {}
            }
        }
    }

    /// One round: queues new events, starts a lane for each webhook with deliveries due and
    /// none running; returns how long to wait before the next round.
    async fn round(
        self: &Arc<Self>,
        lanes: &mut HashMap<String, JoinHandle<()>>,
        shutdown: &watch::Receiver<bool>,
    ) -> StoreResult<Duration> {
        while self
            .store
            .queue_webhook_deliveries(&self.hooks, EVENT_BATCH)
            .await?
            == EVENT_BATCH as usize
        {}
        for name in self.store.due_webhooks(Timestamp::now()).await? {
            if lanes.contains_key(&name) {
                continue;
            }
            let (this, stop) = (self.clone(), shutdown.clone());
            let lane = name.clone();
            lanes.insert(
                name,
                tokio::spawn(async move {
                    if let Err(err) = this.lane(&lane, &stop).await {
                        tracing::warn!(webhook = %lane, error = %err, "webhook deliveries could not be recorded");
                    }
                }),
            );
        }
        // What is due now is in a lane's hands; the next retry may be sooner than a second.
        let now = Timestamp::now().millis();
        Ok(match self.store.next_webhook_due().await? {
            Some(at) if at.millis() > now => Duration::from_millis((at.millis() - now) as u64).min(IDLE),
            _ => IDLE,
        })
    }

    /// Delivers what is due for `webhook`, [`SEND_BATCH`] at a time, until nothing is due, a
    /// whole batch failed (the receiver is not taking any now: its retries wait their turn), or
    /// shutdown.
    async fn lane(&self, webhook: &str, shutdown: &watch::Receiver<bool>) -> StoreResult<()> {
        loop {
            let due = self
                .store
                .due_webhook_deliveries(webhook, Timestamp::now(), SEND_BATCH)
                .await?;
            let n = due.len();
            let outcomes = futures::future::join_all(due.into_iter().map(|d| self.deliver(d))).await;
            let delivered = outcomes
                .into_iter()
                .collect::<StoreResult<Vec<DeliveryStatus>>>()?
                .into_iter()
                .filter(|o| *o == DeliveryStatus::Delivered)
                .count();
            if n < SEND_BATCH as usize || delivered == 0 || *shutdown.borrow() {
                return Ok(());
            }
        }
    }

    /// One attempt at `delivery`, recorded; returns where it stands now.
    async fn deliver(&self, delivery: Delivery) -> StoreResult<DeliveryStatus> {
        let (outcome, answer, error) = self.attempt(&delivery).await;
        let (outcome, retry_at) = match outcome {
            DeliveryStatus::Queued if delivery.attempts + 1 >= MAX_ATTEMPTS => (DeliveryStatus::Failed, None),
            DeliveryStatus::Queued => {
                let wait = i64::try_from(backoff(delivery.attempts).as_millis()).unwrap_or(i64::MAX);
                (DeliveryStatus::Queued, Some(Timestamp::now().plus_millis(wait)))
            }
            done => (done, None),
        };
        if outcome == DeliveryStatus::Failed {
            tracing::warn!(delivery = delivery.id, webhook = %delivery.webhook, error = ?error, "a webhook delivery was given up");
        }
        self.store
            .webhook_attempted(delivery.id, outcome, answer, error, retry_at)
            .await?;
        Ok(outcome)
    }

    /// POSTs `delivery`: delivered on 2xx; given up on another answer that retrying cannot
    /// change (4xx but 408 and 429, 3xx); queued again on 5xx, 408, 429, a timeout or no
    /// connection.
    async fn attempt(&self, delivery: &Delivery) -> (DeliveryStatus, Option<u16>, Option<String>) {
        let mut request = self
            .http
            .post(&delivery.url)
            .header("content-type", "application/json")
            .header("taskyard-delivery", delivery.id.to_string())
            .body(delivery.body.clone());
        if let Some(var) = &delivery.secret_env {
            match std::env::var(var) {
                Ok(secret) if !secret.is_empty() => {
                    let t = chrono::Utc::now().timestamp();
                    request = request.header("taskyard-signature", signature(&secret, t, &delivery.body));
                }
                _ => {
                    return (
                        DeliveryStatus::Queued,
                        None,
                        Some(format!("the signing secret's variable {var} is not set")),
                    )
                }
            }
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return (DeliveryStatus::Delivered, Some(status.as_u16()), None);
                }
                let kept = answer_start(response).await;
                let error = Some(format!("answered {status}: {kept}"));
                let retry = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
                let outcome = if retry {
                    DeliveryStatus::Queued
                } else {
                    DeliveryStatus::Failed
                };
                (outcome, Some(status.as_u16()), error)
            }
            Err(err) => (
                DeliveryStatus::Queued,
                None,
                Some(crate::client::error_chain(&err)),
            ),
        }
    }
}

/// The start of an answer's body (at most [`KEPT_ANSWER`] characters), read no further.
async fn answer_start(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < KEPT_ANSWER * 4 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    String::from_utf8_lossy(&bytes)
        .chars()
        .take(KEPT_ANSWER)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_time_dot_body() {
        // Reference value: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec
        assert_eq!(
            signature("whsec", 1_700_000_000, "{\"a\":1}"),
            "t=1700000000,v1=8ad37ba156048ae0e0a5533c75cdf26fee88b07f93cb57ee4c80adb053012032"
        );
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(24), MAX_BACKOFF);
    }
}
