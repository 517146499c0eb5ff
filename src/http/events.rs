//! `/events`: Server-Sent Events of every committed change. A client resumes after a
//! disconnect with `Last-Event-ID`; a subscriber that falls behind is refilled from the
//! database, so it never misses an event silently. A stream ends when the session or token
//! that opened it stops being valid, and counts against the stream limits while open.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{Event, InputError, Principal};
use crate::error::{ApiResult, Problem};
use crate::store::Store;

use super::credential::Credential;
use super::extract::Query;
use super::AppState;

/// The routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Where to start the stream.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Replay events after this id (like `Last-Event-ID`); `0` replays everything kept.
    after: Option<i64>,
    /// Only these kinds, comma-separated: exact (`task.completed`) or a family (`task.*`).
    kinds: Option<String>,
}

/// Which event kinds a stream carries.
#[derive(Debug, Clone, Default)]
struct Kinds(Vec<String>);

/// Most kind patterns in one filter.
const MAX_KIND_PATTERNS: usize = 32;

impl Kinds {
    /// Parses `task.*,run.exited`; every kind when absent or empty.
    fn parse(text: Option<&str>) -> Result<Kinds, InputError> {
        let mut patterns = Vec::new();
        for pattern in text
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let name = pattern.strip_suffix(".*").unwrap_or(pattern);
            let valid = pattern == "*"
                || (!name.is_empty()
                    && name.split('.').all(|part| {
                        !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }));
            if !valid {
                return Err(InputError::new(
                    "kinds",
                    format!("{pattern:?} is not an event kind like task.completed or a family like task.*"),
                ));
            }
            patterns.push(pattern.to_string());
        }
        if patterns.len() > MAX_KIND_PATTERNS {
            return Err(InputError::new(
                "kinds",
                format!("at most {MAX_KIND_PATTERNS} kinds or families"),
            ));
        }
        Ok(Kinds(patterns))
    }

    fn wants(&self, kind: &str) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|p| match p.strip_suffix('*') {
                Some(family) => kind.starts_with(family),
                None => p == kind,
            })
    }
}

/// Stream every change as it commits (`text/event-stream`); each message's `id` is the
/// event id, its `event` the kind, its `data` the event as JSON.
#[utoipa::path(get, path = "/events", tag = "events", params(EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "resume after this event id")),
    responses((status = 200, content_type = "text/event-stream", description = "the event stream"),
              (status = 422, body = Problem),
              (status = 429, body = Problem, description = "too many open streams")),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    who: Principal,
    credential: Credential,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| InputError::new("Last-Event-ID", "must be an event id"))
        })
        .transpose()?;
    let slot = state.streams.open_stream(&who.name)?;
    // Subscribe before reading the starting point, so nothing falls between the two.
    let live = state.store.bus().subscribe();
    let newest = state.store.last_event_id().await?;
    // A cursor beyond the newest event (say, from before the database was replaced) would
    // silence the stream; it starts from the newest instead.
    let after = header.or(query.after).map_or(newest, |id| id.clamp(0, newest));
    let kinds = Kinds::parse(query.kinds.as_deref())?;
    let (tx, rx) = mpsc::channel::<Event>(256);
    tokio::spawn(pump(
        state.store.clone(),
        live,
        after,
        Sender { tx, kinds },
        state.shutdown.clone(),
    ));
    let stream = ReceiverStream::new(rx).map(|event| {
        Ok(SseEvent::default()
            .id(event.id.to_string())
            .event(event.change.kind())
            .json_data(&event)
            .unwrap_or_else(|_| SseEvent::default().comment("unserialisable event")))
    });
    // Cut off, the stream drops its receiver, and the pump stops.
    let stream = slot.hold(credential.limit(state, stream));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The subscriber's end: the events of the kinds it asked for.
struct Sender {
    tx: mpsc::Sender<Event>,
    kinds: Kinds,
}

impl Sender {
    /// Passes `event` on if it is of a wanted kind; `Err` once the subscriber is gone.
    async fn send(&self, event: Event) -> Result<(), ()> {
        if !self.kinds.wants(&event.change.kind()) {
            return Ok(());
        }
        self.tx.send(event).await.map_err(|_| ())
    }
}

/// Feeds one subscriber: the backlog from the database, then live events in id order.
async fn pump(
    store: Store,
    mut live: broadcast::Receiver<Event>,
    mut cursor: i64,
    tx: Sender,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if refill(&store, &mut cursor, &tx).await.is_err() {
        return;
    }
    loop {
        let next = tokio::select! {
            next = live.recv() => next,
            _ = tx.tx.closed() => return,
            _ = shutdown.changed() => return,
        };
        let ok = match next {
            Ok(event) if event.id <= cursor => Ok(()),
            Ok(event) if event.id == cursor + 1 => {
                cursor = event.id;
                tx.send(event).await
            }
            // Out of order or fallen behind: the database has everything, in order.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => refill(&store, &mut cursor, &tx).await,
            Err(broadcast::error::RecvError::Closed) => Err(()),
        };
        if ok.is_err() {
            return;
        }
    }
}

/// Sends every stored event after `cursor`, advancing it.
async fn refill(store: &Store, cursor: &mut i64, tx: &Sender) -> Result<(), ()> {
    loop {
        let batch = match store.events_after(*cursor, 500).await {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(error = %err, "event stream could not read the backlog");
                return Err(());
            }
        };
        let done = batch.len() < 500;
        for event in batch {
            *cursor = event.id;
            tx.send(event).await?;
        }
        if done {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_filter_by_name_and_family() {
        let all = Kinds::parse(None).unwrap();
        assert!(all.wants("loop.ran"));
        let tasks = Kinds::parse(Some("task.*, run.exited")).unwrap();
        assert!(tasks.wants("task.completed") && tasks.wants("run.exited"));
        assert!(!tasks.wants("loop.ran") && !tasks.wants("run.started") && !tasks.wants("tasks.x"));
        assert!(Kinds::parse(Some("*")).unwrap().wants("loop.ran"));
        for bad in ["task.", "TASK.*", "task*", ".x", "a..b", "a b"] {
            assert!(Kinds::parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
