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
    let live = state.store.subscribe();
    let newest = state.store.last_event_id().await?;
    // A cursor beyond the newest event (say, from before the database was replaced) would
    // silence the stream; it starts from the newest instead.
    let after = header.or(query.after).map_or(newest, |id| id.clamp(0, newest));
    let (tx, rx) = mpsc::channel::<Event>(256);
    tokio::spawn(pump(state.store.clone(), live, after, tx, state.shutdown.clone()));
    let stream = ReceiverStream::new(rx).map(|event| {
        Ok(SseEvent::default()
            .id(event.id.to_string())
            .event(event.kind.clone())
            .json_data(&event)
            .unwrap_or_else(|_| SseEvent::default().comment("unserialisable event")))
    });
    // Cut off, the stream drops its receiver, and the pump stops.
    let stream = slot.hold(credential.limit(state, stream));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Feeds one subscriber: the backlog from the database, then live events in id order.
async fn pump(
    store: Store,
    mut live: broadcast::Receiver<Event>,
    mut cursor: i64,
    tx: mpsc::Sender<Event>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if refill(&store, &mut cursor, &tx).await.is_err() {
        return;
    }
    loop {
        let next = tokio::select! {
            next = live.recv() => next,
            _ = tx.closed() => return,
            _ = shutdown.changed() => return,
        };
        let ok = match next {
            Ok(event) if event.id <= cursor => Ok(()),
            Ok(event) if event.id == cursor + 1 => {
                cursor = event.id;
                tx.send(event).await.map_err(|_| ())
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
async fn refill(store: &Store, cursor: &mut i64, tx: &mpsc::Sender<Event>) -> Result<(), ()> {
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
            tx.send(event).await.map_err(|_| ())?;
        }
        if done {
            return Ok(());
        }
    }
}
