//! How many connections the process can hold: each is a file descriptor, and running out of
//! them stops `accept` (and the database, logs and runs with it). At start the soft
//! `RLIMIT_NOFILE` is raised to the hard limit, and the connection cap is kept below it with a
//! reserve for everything else the server opens.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft limit on open files to the hard limit; returns the soft limit now in force
/// (`None` when it cannot be read).
pub fn raise() -> Option<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return Some(hard),
            Err(err) => tracing::warn!(soft, hard, error = %err, "cannot raise the limit on open files"),
        }
    }
    Some(soft)
}

/// File descriptors kept for the database, logs, runs and mail when `soft` is the limit: a
/// quarter of it, at least 64 and at most 1,024.
pub fn reserve(soft: u64) -> u64 {
    (soft / 4).clamp(64, 1_024)
}

/// The connection cap in force: `configured`, but never more than the file limit `soft` less
/// the [`reserve`] (and at least a few, however low the limit).
pub fn effective_max(configured: usize, soft: Option<u64>) -> usize {
    match soft {
        Some(soft) => {
            let room = soft.saturating_sub(reserve(soft)).max(8);
            configured.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_everything_else() {
        assert_eq!(effective_max(10_000, Some(1_048_576)), 10_000);
        assert_eq!(effective_max(10_000, Some(20_000)), 10_000);
        assert_eq!(effective_max(10_000, Some(1_024)), 768);
        assert_eq!(effective_max(10_000, Some(128)), 64);
        assert_eq!(effective_max(10_000, Some(16)), 8);
        assert_eq!(effective_max(500, None), 500);
        assert!(raise().is_some());
    }
}
