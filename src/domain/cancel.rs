//! Who may cancel a task: the rule behind `POST /tasks/{id}/cancel`, in one place. Cancelling
//! a task cancels its unfinished subtasks too, so the rule looks at the whole subtree: an admin
//! may always cancel; anyone else only work that is entirely theirs — they created every
//! unfinished task in it, and nobody else holds a live lease in it. Finished tasks are not
//! touched by a cancel and do not count.

use super::Principal;

/// One unfinished task of the subtree being cancelled, as the rule needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// Its id.
    pub id: i64,
    /// Who created it (`None` for tasks from before creators were recorded).
    pub created_by: Option<String>,
    /// The holder of its lease, when that lease is live (an expired lease holds nothing).
    pub holder: Option<String>,
}

/// Decides whether `actor` may cancel task `root`, whose subtree's unfinished tasks (`root`
/// itself included while unfinished) are `unfinished`. `Err` says why not, in words.
pub fn may_cancel(actor: &Principal, root: i64, unfinished: &[Unfinished]) -> Result<(), String> {
    if actor.is_admin() {
        return Ok(());
    }
    let refuse = |why: String| {
        Err(format!(
            "only an admin, or the agent that created every unfinished task under task #{root} \
             while nobody else holds a lease in it, may cancel it: {why}"
        ))
    };
    for task in unfinished {
        match task.created_by.as_deref() {
            Some(creator) if creator == actor.name => {}
            Some(creator) => return refuse(format!("task #{} was created by {creator}", task.id)),
            None => return refuse(format!("task #{} has no recorded creator", task.id)),
        }
    }
    for task in unfinished {
        if let Some(holder) = task.holder.as_deref().filter(|h| *h != actor.name) {
            return refuse(format!("task #{} is held by {holder}", task.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn agent(name: &str) -> Principal {
        Principal {
            agent_id: Some(1),
            name: name.into(),
            role: Role::Agent,
            kind: "script".into(),
            capabilities: Vec::new(),
            scope: None,
        }
    }

    fn task(id: i64, creator: &str, holder: Option<&str>) -> Unfinished {
        Unfinished {
            id,
            created_by: Some(creator.into()),
            holder: holder.map(Into::into),
        }
    }

    #[test]
    fn admins_always_may() {
        let subtree = [task(1, "alice", Some("bob")), task(2, "bob", None)];
        assert_eq!(may_cancel(&Principal::admin(), 1, &subtree), Ok(()));
    }

    #[test]
    fn the_creator_of_everything_unfinished_may_while_it_holds_any_lease() {
        let alice = agent("alice");
        let subtree = [task(1, "alice", Some("alice")), task(2, "alice", None)];
        assert_eq!(may_cancel(&alice, 1, &subtree), Ok(()));
        assert_eq!(may_cancel(&alice, 1, &[]), Ok(()), "nothing unfinished");
    }

    #[test]
    fn a_task_created_by_someone_else_refuses_whoever_it_is_in_the_tree() {
        let alice = agent("alice");
        let root = may_cancel(&alice, 1, &[task(1, "bob", None)]).unwrap_err();
        assert!(root.contains("task #1 was created by bob"), "{root}");
        let deep = may_cancel(&alice, 1, &[task(1, "alice", None), task(3, "bob", None)]).unwrap_err();
        assert!(deep.contains("task #3 was created by bob"), "{deep}");
        let unknown = Unfinished {
            created_by: None,
            ..task(4, "", None)
        };
        assert!(may_cancel(&alice, 4, &[unknown]).is_err());
    }

    #[test]
    fn a_lease_held_by_someone_else_refuses() {
        let alice = agent("alice");
        let err = may_cancel(
            &alice,
            1,
            &[task(1, "alice", None), task(2, "alice", Some("bob"))],
        )
        .unwrap_err();
        assert!(err.contains("task #2 is held by bob"), "{err}");
    }
}
