//! Handoff: what earlier attempts at a task left for the next holder — who held it, how the
//! attempt ended and why, how far it got, its notes, and for spawned runs their branch and the
//! end of their log. Read from the task's events; the run details are filled in by the caller.

use serde::Serialize;
use utoipa::ToSchema;

use super::task::Deliverable;
use super::{BlockedBy, Change, Event, Timestamp};

/// Most progress notes kept per attempt (the latest).
pub const NOTES_KEPT: usize = 10;
/// How much of a spawned run's log is handed on: its last 4 KiB.
pub const LOG_TAIL_BYTES: u64 = 4 * 1024;
/// Earlier attempts told of in a prompt (the latest); the JSON handoff has them all.
pub const PROSE_ATTEMPTS: usize = 5;
/// Longest note or reason quoted in a prompt, in characters.
pub const PROSE_QUOTE: usize = 300;

/// `text` cut to [`PROSE_QUOTE`] characters.
fn quote(text: &str) -> String {
    match text.char_indices().nth(PROSE_QUOTE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// An earlier attempt at a task.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Attempt {
    /// Who held it (or, for a person who declined, who was asked).
    pub holder: String,
    /// The fence of its claim (none for a decline).
    pub fence: Option<i64>,
    /// When it began.
    pub started_at: Timestamp,
    /// When it ended, if it has.
    pub ended_at: Option<Timestamp>,
    /// How it ended: `expired`, `failed`, `released`, `blocked`, `cancelled`, `completed`,
    /// `declined`, or `unknown` when its end is older than the events kept.
    pub outcome: String,
    /// Why, when it was said.
    pub reason: Option<String>,
    /// Its last progress, percent.
    pub percent: Option<i64>,
    /// Its progress notes, oldest first (the last ten).
    pub notes: Vec<String>,
    /// The spawned run that held it, if one did.
    pub run_id: Option<i64>,
    /// That run's agent type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_type: Option<String>,
    /// The branch the run left its work on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<Deliverable>,
    /// The last 4 KiB of the run's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

/// What the next holder of a task is handed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Handoff {
    /// The task.
    pub task_id: i64,
    /// Earlier attempts, oldest first.
    pub attempts: Vec<Attempt>,
}

impl Handoff {
    /// The handoff as a paragraph for an agent's prompt, or `None` when nothing came before.
    /// `attempt` is the current attempt's number, `max` the task's limit.
    pub fn prose(&self, attempt: i64, max: i64) -> Option<String> {
        let last = self.attempts.last()?;
        let mut out = format!("Attempt {attempt} of {max}.");
        let skipped = self.attempts.len().saturating_sub(PROSE_ATTEMPTS);
        if skipped > 0 {
            out.push_str(&format!(
                " {skipped} earlier attempts are left out here (see the task's handoff)."
            ));
        }
        for a in &self.attempts[skipped..] {
            let who = match (&a.agent_type, a.run_id) {
                (Some(agent_type), Some(run)) => format!("{agent_type} run {run}"),
                _ => a.holder.clone(),
            };
            let reached = match a.percent {
                Some(p) => format!(" reached {p}%"),
                None => String::new(),
            };
            let note = a
                .notes
                .last()
                .map(|n| format!(": '{}'", quote(n)))
                .unwrap_or_default();
            let why = a
                .reason
                .as_deref()
                .map(|r| format!(" ({})", quote(r)))
                .unwrap_or_default();
            let ended = match a.outcome.as_str() {
                "expired" => "its lease ran out".to_string(),
                "declined" => "declined it".to_string(),
                other => other.to_string(),
            };
            out.push_str(&format!(
                " An earlier attempt by {who}{reached}{note}, then {ended}{why}."
            ));
            if let Some(branch) = &a.branch {
                out.push_str(&format!(" Its work is on branch {}.", branch.reference));
            }
        }
        if let Some(branch) = &last.branch {
            out.push_str(&format!(
                " Continue from branch {0} rather than starting over: read its commits and bring \
                 them into your work (git merge {0}).",
                branch.reference
            ));
        } else {
            out.push_str(" Check what the earlier attempt left before starting over.");
        }
        Some(out)
    }
}

/// The earlier attempts `events` (a task's, oldest first) record, leaving out the lease with
/// fence `current` (the one being handed the work).
pub fn attempts(events: &[Event], current: Option<i64>) -> Vec<Attempt> {
    let mut out: Vec<Attempt> = Vec::new();
    for e in events {
        let end = |outcome: &str, reason: Option<String>| (outcome.to_string(), reason);
        let (fence, ending) = match &e.change {
            Change::TaskClaimed { holder, fence, .. } => {
                if Some(*fence) != current {
                    out.push(Attempt {
                        holder: holder.clone(),
                        fence: Some(*fence),
                        started_at: e.at,
                        ended_at: None,
                        outcome: "unknown".into(),
                        reason: None,
                        percent: None,
                        notes: Vec::new(),
                        run_id: run_of(holder),
                        agent_type: None,
                        branch: None,
                        log_tail: None,
                    });
                }
                continue;
            }
            Change::TaskProgress { percent, note, fence } => {
                if let Some(a) = out
                    .iter_mut()
                    .rev()
                    .find(|a| a.fence == Some(*fence) && a.ended_at.is_none())
                {
                    a.percent = Some(*percent);
                    if let Some(n) = note {
                        a.notes.push(n.clone());
                        if a.notes.len() > NOTES_KEPT {
                            a.notes.remove(0);
                        }
                    }
                }
                continue;
            }
            Change::TaskLeaseExpired { fence, .. } => (Some(*fence), end("expired", None)),
            Change::TaskFailed { fence, reason, .. } => (Some(*fence), end("failed", Some(reason.clone()))),
            Change::TaskReleased { fence, note, .. } => (Some(*fence), end("released", note.clone())),
            Change::TaskBlocked {
                reason,
                by: BlockedBy::Decision {
                    fence: Some(fence), ..
                },
            } => (Some(*fence), end("blocked", Some(reason.clone()))),
            Change::TaskCompleted { fence, summary, .. } => {
                (Some(*fence), end("completed", Some(summary.clone())))
            }
            Change::TaskCancelled { note, .. } => (None, end("cancelled", note.clone())),
            Change::TaskRouted {
                declined: true,
                reason,
                ..
            } => {
                out.push(Attempt {
                    holder: e.actor.clone().unwrap_or_else(|| "a person".into()),
                    fence: None,
                    started_at: e.at,
                    ended_at: Some(e.at),
                    outcome: "declined".into(),
                    reason: Some(reason.clone()),
                    percent: None,
                    notes: Vec::new(),
                    run_id: None,
                    agent_type: None,
                    branch: None,
                    log_tail: None,
                });
                continue;
            }
            _ => continue,
        };
        let (outcome, reason) = ending;
        let target = out
            .iter_mut()
            .rev()
            .find(|a| a.ended_at.is_none() && a.fence.is_some() && (fence.is_none() || a.fence == fence));
        if let Some(a) = target {
            a.ended_at = Some(e.at);
            a.outcome = outcome;
            a.reason = reason;
        }
    }
    out
}

/// The run id of a spawned run's holder name (`run-<id>`).
pub fn run_of(holder: &str) -> Option<i64> {
    holder.strip_prefix("run-")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, actor: &str, change: Change) -> Event {
        Event {
            id,
            task_id: Some(7),
            actor: Some(actor.into()),
            at: Timestamp(id * 1000),
            change,
        }
    }

    fn claimed(id: i64, holder: &str, fence: i64) -> Event {
        event(
            id,
            holder,
            Change::TaskClaimed {
                holder: holder.into(),
                fence,
                attempt: fence,
                expires_at: Timestamp(0),
            },
        )
    }

    #[test]
    fn each_earlier_attempt_says_how_far_it_got_and_how_it_ended() {
        let progress = |id, holder: &str, fence, percent, note: &str| {
            event(
                id,
                holder,
                Change::TaskProgress {
                    percent,
                    note: Some(note.into()),
                    fence,
                },
            )
        };
        let events = vec![
            claimed(1, "claude-1", 1),
            progress(2, "claude-1", 1, 30, "reading the middleware"),
            progress(3, "claude-1", 1, 60, "middleware written, tests next"),
            event(
                4,
                "lease-reaper",
                Change::TaskLeaseExpired {
                    holder: "claude-1".into(),
                    fence: 1,
                    last: false,
                },
            ),
            claimed(5, "run-41", 2),
            event(
                6,
                "run-41",
                Change::TaskFailed {
                    holder: Some("run-41".into()),
                    fence: 2,
                    reason: "tests do not build".into(),
                    last: false,
                    retry_at: None,
                },
            ),
            claimed(7, "codex-2", 3),
        ];
        let found = attempts(&events, Some(3));
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].holder, "claude-1");
        assert_eq!(found[0].outcome, "expired");
        assert_eq!(found[0].percent, Some(60));
        assert_eq!(
            found[0].notes,
            ["reading the middleware", "middleware written, tests next"]
        );
        assert_eq!(found[0].ended_at, Some(Timestamp(4000)));
        assert_eq!((found[1].run_id, found[1].outcome.as_str()), (Some(41), "failed"));
        assert_eq!(found[1].reason.as_deref(), Some("tests do not build"));

        let mut handoff = Handoff {
            task_id: 7,
            attempts: found,
        };
        handoff.attempts[1].agent_type = Some("backend-specialist".into());
        handoff.attempts[1].branch = Some(Deliverable {
            kind: "branch".into(),
            reference: "taskyard/7-41".into(),
            note: None,
        });
        let prose = handoff.prose(3, 5).unwrap();
        assert!(
            prose.starts_with(
                "Attempt 3 of 5. An earlier attempt by claude-1 reached 60%: \
            'middleware written, tests next', then its lease ran out."
            ),
            "{prose}"
        );
        assert!(prose.contains("Continue from branch taskyard/7-41"), "{prose}");
        assert!(
            prose.contains(
                "An earlier attempt by backend-specialist run 41, then failed (tests do not build). \
            Its work is on branch taskyard/7-41."
            ),
            "{prose}"
        );
        assert_eq!(
            Handoff {
                task_id: 7,
                attempts: vec![]
            }
            .prose(1, 3),
            None
        );

        // A prompt quotes at most 300 characters of a note and tells of the last five attempts.
        let mut long = handoff.attempts[0].clone();
        long.notes = vec!["n".repeat(5_000)];
        let many = Handoff {
            task_id: 7,
            attempts: vec![long; 7],
        };
        let prose = many.prose(8, 9).unwrap();
        assert!(prose.contains("2 earlier attempts are left out"), "{prose}");
        assert_eq!(prose.matches("An earlier attempt").count(), 5);
        assert!(prose.len() < 5 * 450, "{}", prose.len());
    }

    #[test]
    fn a_person_who_declined_is_an_earlier_attempt() {
        let events = vec![event(
            1,
            "dana",
            Change::TaskRouted {
                decision: Some("human".into()),
                reason: "declined by dana; nobody else matches".into(),
                fallback: false,
                declined: true,
                previous: None,
            },
        )];
        let found = attempts(&events, Some(1));
        assert_eq!(
            (found[0].holder.as_str(), found[0].outcome.as_str()),
            ("dana", "declined")
        );
    }
}
