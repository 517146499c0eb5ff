//! Limits on what a token may hold open: streams (the event stream, a followed run log, an MCP
//! session's message stream) per principal (`server.max_streams_per_token`) and in all
//! (`server.max_streams`), and waiting long polls per principal
//! (`server.max_long_polls_per_token`). A [`Slot`] counts one of them from the moment it is
//! granted until it is dropped with the stream or the poll, however that ends. A refusal is
//! `429 rate_limited` naming the setting and its value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt};

use crate::error::ApiError;

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Open streams over all principals.
    pub streams: usize,
    /// Open streams for one principal.
    pub streams_per_token: usize,
    /// Waiting long polls for one principal.
    pub long_polls_per_token: usize,
}

/// What a slot counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Stream,
    LongPoll,
}

/// When a refused client may try again, in seconds: a stream frees its slot when its client
/// leaves, a long poll within a minute.
const STREAM_RETRY: u64 = 5;
const POLL_RETRY: u64 = 1;

#[derive(Debug, Default)]
struct Counts {
    streams: usize,
    by_principal: HashMap<(String, Kind), usize>,
}

/// The open streams and waiting long polls.
#[derive(Debug)]
pub struct Streams {
    limits: StreamLimits,
    counts: Mutex<Counts>,
}

impl Streams {
    /// No streams yet, within `limits`.
    pub fn new(limits: StreamLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a stream `who` opens, or why not.
    pub fn open_stream(self: &Arc<Self>, who: &str) -> Result<Slot, ApiError> {
        let mut counts = self.counts();
        if counts.streams >= self.limits.streams {
            return Err(ApiError::RateLimited {
                detail: format!(
                    "the server already has {} open streams (event streams, followed run logs, MCP \
                     message streams), the most it allows (server.max_streams = {}); try again later",
                    counts.streams, self.limits.streams
                ),
                retry_after: STREAM_RETRY,
            });
        }
        self.take(&mut counts, who, Kind::Stream, self.limits.streams_per_token)
            .map_err(|held| ApiError::RateLimited {
                detail: format!(
                    "{who} already has {held} open streams (event streams, followed run logs, MCP \
                     message streams), the most one token may have (server.max_streams_per_token = \
                     {}); close one first",
                    self.limits.streams_per_token
                ),
                retry_after: STREAM_RETRY,
            })
    }

    /// A slot for a long poll `who` starts, or why not.
    pub fn start_long_poll(self: &Arc<Self>, who: &str) -> Result<Slot, ApiError> {
        let mut counts = self.counts();
        self.take(&mut counts, who, Kind::LongPoll, self.limits.long_polls_per_token)
            .map_err(|held| ApiError::RateLimited {
                detail: format!(
                    "{who} already has {held} long polls waiting for work, the most one token may \
                     have (server.max_long_polls_per_token = {}); wait for one to end",
                    self.limits.long_polls_per_token
                ),
                retry_after: POLL_RETRY,
            })
    }

    /// Counts one more of `kind` for `who` if that stays within `limit`; else how many it holds.
    fn take(
        self: &Arc<Self>,
        counts: &mut Counts,
        who: &str,
        kind: Kind,
        limit: usize,
    ) -> Result<Slot, usize> {
        let held = counts.by_principal.entry((who.to_string(), kind)).or_default();
        if *held >= limit {
            return Err(*held);
        }
        *held += 1;
        if kind == Kind::Stream {
            counts.streams += 1;
        }
        Ok(Slot {
            streams: self.clone(),
            who: who.to_string(),
            kind,
        })
    }

    /// Open streams in all (for tests and diagnostics).
    pub fn open(&self) -> usize {
        self.counts().streams
    }
}

/// One open stream or waiting long poll; dropping it frees its place.
#[derive(Debug)]
pub struct Slot {
    streams: Arc<Streams>,
    who: String,
    kind: Kind,
}

impl Slot {
    /// `stream`, holding this slot for as long as it lives.
    pub fn hold<S: Stream>(self, stream: S) -> impl Stream<Item = S::Item> {
        stream.map(move |item| {
            let _held = &self;
            item
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.streams.counts();
        let key = (std::mem::take(&mut self.who), self.kind);
        if let Some(held) = counts.by_principal.get_mut(&key) {
            *held -= 1;
            if *held == 0 {
                counts.by_principal.remove(&key);
            }
        }
        if self.kind == Kind::Stream {
            counts.streams = counts.streams.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_principal_and_total_limits_free_on_drop() {
        let streams = Streams::new(StreamLimits {
            streams: 3,
            streams_per_token: 2,
            long_polls_per_token: 1,
        });
        let a1 = streams.open_stream("a").unwrap();
        let _a2 = streams.open_stream("a").unwrap();
        let err = streams.open_stream("a").unwrap_err().to_string();
        assert!(err.contains("server.max_streams_per_token = 2"), "{err}");
        let _b1 = streams.open_stream("b").unwrap();
        let err = streams.open_stream("c").unwrap_err().to_string();
        assert!(err.contains("server.max_streams = 3"), "{err}");
        drop(a1);
        assert_eq!(streams.open(), 2);
        let _c1 = streams.open_stream("c").unwrap();

        let poll = streams.start_long_poll("a").unwrap();
        let err = streams.start_long_poll("a").unwrap_err().to_string();
        assert!(err.contains("server.max_long_polls_per_token = 1"), "{err}");
        assert!(streams.start_long_poll("b").is_ok(), "polls count per principal");
        drop(poll);
        assert!(streams.start_long_poll("a").is_ok());
        assert_eq!(streams.open(), 3, "long polls are not streams");
    }
}
