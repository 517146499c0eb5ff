//! SQLite rows as the backend-neutral readers of `store::rows` see them ([`Columns`]), and
//! those readers in the shape rusqlite's `query_row`/`query_map` take: a driver error outside,
//! the registry's answer inside.

use rusqlite::Row;

use crate::domain::webhook::Delivery;
use crate::domain::{Agent, Event, Principal, Reservation, Run, Task};
use crate::store::rows::{self as neutral, Columns};
use crate::store::{LoopRun, Outgoing, StoreResult};

pub use crate::store::rows::{
    json, to_json, AGENT_COLUMNS, DELIVERY_COLUMNS, EVENT_COLUMNS, LOOP_RUN_COLUMNS, NOTIFICATION_COLUMNS,
    RUN_COLUMNS, TASK_COLUMNS, TASK_COLUMN_COUNT,
};

impl Columns for Row<'_> {
    fn int(&self, i: usize) -> StoreResult<i64> {
        Ok(self.get(i)?)
    }

    fn int_or_null(&self, i: usize) -> StoreResult<Option<i64>> {
        Ok(self.get(i)?)
    }

    fn text(&self, i: usize) -> StoreResult<String> {
        Ok(self.get(i)?)
    }

    fn text_or_null(&self, i: usize) -> StoreResult<Option<String>> {
        Ok(self.get(i)?)
    }

    fn real_or_null(&self, i: usize) -> StoreResult<Option<f64>> {
        Ok(self.get(i)?)
    }

    fn flag(&self, i: usize) -> StoreResult<bool> {
        Ok(self.get(i)?)
    }
}

/// A task, from a row selected with [`TASK_COLUMNS`].
pub fn task(row: &Row<'_>) -> rusqlite::Result<StoreResult<Task>> {
    Ok(neutral::task(row))
}

/// An agent, from a row selected with [`AGENT_COLUMNS`].
pub fn agent(row: &Row<'_>) -> rusqlite::Result<StoreResult<Agent>> {
    Ok(neutral::agent(row))
}

/// A token's principal and its agent's status, from a row selected with [`AGENT_COLUMNS`].
pub fn principal(row: &Row<'_>) -> rusqlite::Result<StoreResult<(Principal, String)>> {
    Ok(neutral::principal(row))
}

/// An event, from a row selected with [`EVENT_COLUMNS`].
pub fn event(row: &Row<'_>) -> rusqlite::Result<StoreResult<Event>> {
    Ok(neutral::event(row))
}

/// A spawned run, from a row selected with [`RUN_COLUMNS`].
pub fn run(row: &Row<'_>) -> rusqlite::Result<StoreResult<Run>> {
    Ok(neutral::run(row))
}

/// A notification with its bodies, from a row selected with [`NOTIFICATION_COLUMNS`].
pub fn outgoing(row: &Row<'_>) -> rusqlite::Result<StoreResult<Outgoing>> {
    Ok(neutral::outgoing(row))
}

/// A webhook delivery, from a row selected with [`DELIVERY_COLUMNS`].
pub fn delivery(row: &Row<'_>) -> rusqlite::Result<StoreResult<Delivery>> {
    Ok(neutral::delivery(row))
}

/// A loop run, from a row selected with [`LOOP_RUN_COLUMNS`].
pub fn loop_run(row: &Row<'_>) -> rusqlite::Result<StoreResult<LoopRun>> {
    Ok(neutral::loop_run(row))
}

/// A reservation, from a row selected with the reservation columns (`reservations.rs`).
pub fn reservation(row: &Row<'_>) -> rusqlite::Result<StoreResult<Reservation>> {
    Ok(neutral::reservation(row))
}
