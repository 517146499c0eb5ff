//! Path reservations: the files a lease's holder works on, held under that lease and ended
//! with it. Exclusive reservations exclude every other lease's reservations of an overlapping
//! path; shared ones exclude only exclusive ones. A claim reserves a task's declared paths
//! exclusively, so claim-next skips a task while another lease holds any of them.

use serde::Serialize;
use utoipa::ToSchema;

use super::paths::first_overlap;
use super::Timestamp;

/// A live reservation.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Reservation {
    /// Its id.
    pub id: i64,
    /// The task whose lease holds it.
    pub task_id: i64,
    /// That lease's holder.
    pub holder: String,
    /// That lease's fence.
    pub fence: i64,
    /// The patterns reserved.
    pub paths: Vec<String>,
    /// Exclusive (no other lease may reserve an overlapping path) or shared.
    pub exclusive: bool,
    /// When it was made.
    pub created_at: Timestamp,
}

/// Why a reservation (or a claim that would make one) is refused: another lease holds an
/// overlapping path.
#[derive(Debug, Clone, PartialEq)]
pub struct Clash {
    /// The reservation in the way.
    pub theirs: Reservation,
    /// Our pattern that overlaps.
    pub ours: String,
    /// Their pattern it overlaps.
    pub pattern: String,
    /// A path both cover.
    pub path: String,
}

impl Clash {
    /// For a `409 conflict`: who holds what, and where the two meet.
    pub fn message(&self) -> String {
        let meet = if self.path.is_empty() {
            "too intricate to tell apart, so taken to overlap".to_string()
        } else {
            format!("both cover {}", self.path)
        };
        format!(
            "{} overlaps {}, reserved{} by task #{} ({}): {meet}",
            self.ours,
            self.pattern,
            if self.theirs.exclusive { "" } else { " (shared)" },
            self.theirs.task_id,
            self.theirs.holder,
        )
    }

    /// For `why`: what the task waits for.
    pub fn waiting(&self) -> String {
        format!(
            "waiting: {} is reserved by task #{} ({})",
            self.pattern, self.theirs.task_id, self.theirs.holder
        )
    }
}

/// Most patterns one lease may hold in all its reservations.
pub const MAX_PATTERNS_PER_LEASE: usize = 256;

/// The first live reservation that `paths`, reserved (exclusively or not) for a task, would
/// clash with. Reservations of the tasks in `kin` never do: the task itself, and the tasks
/// above and below it (a parent delegates its paths to its subtasks).
pub fn clash(kin: &[i64], paths: &[String], exclusive: bool, live: &[Reservation]) -> Option<Clash> {
    live.iter()
        .filter(|r| !kin.contains(&r.task_id) && (exclusive || r.exclusive))
        .find_map(|r| {
            first_overlap(paths, &r.paths).map(|(ours, pattern, path)| Clash {
                theirs: r.clone(),
                ours: ours.to_string(),
                pattern: pattern.to_string(),
                path,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(task_id: i64, paths: &[&str], exclusive: bool) -> Reservation {
        Reservation {
            id: task_id * 10,
            task_id,
            holder: format!("agent-{task_id}"),
            fence: 1,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            exclusive,
            created_at: Timestamp(0),
        }
    }

    fn ours(p: &[&str]) -> Vec<String> {
        p.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn exclusive_excludes_all_and_shared_excludes_exclusive() {
        let live = [held(1, &["src/auth/**"], true), held(2, &["docs/**"], false)];
        let c = clash(&[9], &ours(&["src/auth/login.rs"]), false, &live).unwrap();
        assert_eq!(c.theirs.task_id, 1);
        assert_eq!(
            c.message(),
            "src/auth/login.rs overlaps src/auth/**, reserved by task #1 (agent-1): both cover src/auth/login.rs"
        );
        assert_eq!(
            c.waiting(),
            "waiting: src/auth/** is reserved by task #1 (agent-1)"
        );
        // Two shared reservations may overlap; an exclusive one may not overlap a shared one.
        assert_eq!(clash(&[9], &ours(&["docs/a.md"]), false, &live), None);
        assert_eq!(
            clash(&[9], &ours(&["docs/a.md"]), true, &live)
                .unwrap()
                .theirs
                .task_id,
            2
        );
        // A lease never clashes with its own task's reservations, nor with paths elsewhere.
        assert_eq!(clash(&[1], &ours(&["src/auth/x.rs"]), true, &live), None);
        assert_eq!(clash(&[9], &ours(&["src/billing/**"]), true, &live), None);
        // Nor with its parent's or subtasks' (kin).
        assert_eq!(clash(&[9, 1], &ours(&["src/auth/x.rs"]), true, &live), None);
    }
}
