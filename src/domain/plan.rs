//! Rules for filing work: how deep subtasks may nest and how many one task may have, and
//! dependency cycles in a plan. Plain functions; a store applies them while creating tasks.

use std::collections::HashMap;

use super::Status;

/// What creating a subtask needs to know of its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// The parent's id.
    pub id: i64,
    /// Its level (0 for a top-level task).
    pub depth: i64,
    /// How many subtasks it has.
    pub children: i64,
    /// Its status.
    pub status: Status,
}

/// The level a new subtask of `parent` gets, or why it cannot have one.
pub fn subtask_depth(parent: Parent, max_depth: i64, max_fanout: i64) -> Result<i64, String> {
    let Parent {
        id,
        depth,
        children,
        status,
    } = parent;
    if status.is_final() {
        return Err(format!("task #{id} is {status}; it takes no new subtasks"));
    }
    if depth + 1 > max_depth {
        return Err(format!(
            "subtasks may nest {max_depth} levels deep; #{id} is at level {depth}"
        ));
    }
    if children >= max_fanout {
        return Err(format!(
            "task #{id} already has {children} subtasks (the limit is {max_fanout})"
        ));
    }
    Ok(depth + 1)
}

/// Finds a cycle among new edges (task → its dependencies), returning it as a path.
/// Only the tasks in `edges` can be on a cycle: older tasks never depend on new ones.
pub fn find_cycle(edges: &HashMap<i64, Vec<i64>>) -> Option<Vec<i64>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: i64,
        edges: &HashMap<i64, Vec<i64>>,
        marks: &mut HashMap<i64, Mark>,
        path: &mut Vec<i64>,
    ) -> Option<Vec<i64>> {
        match marks.get(&node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node);
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node, Mark::Open);
        path.push(node);
        for next in edges.get(&node).into_iter().flatten() {
            if let Some(cycle) = visit(*next, edges, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = HashMap::new();
    let mut nodes: Vec<i64> = edges.keys().copied().collect();
    nodes.sort_unstable();
    for node in nodes {
        if let Some(cycle) = visit(node, edges, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtasks_nest_and_fan_out_within_limits() {
        let parent = |depth, children, status| Parent {
            id: 4,
            depth,
            children,
            status,
        };
        assert_eq!(subtask_depth(parent(0, 0, Status::Available), 3, 50), Ok(1));
        assert!(subtask_depth(parent(3, 0, Status::Available), 3, 50)
            .unwrap_err()
            .contains("3 levels"));
        assert!(subtask_depth(parent(0, 50, Status::InProgress), 3, 50)
            .unwrap_err()
            .contains("50 subtasks"));
        assert!(subtask_depth(parent(0, 0, Status::Completed), 3, 50)
            .unwrap_err()
            .contains("is completed"));
    }

    #[test]
    fn finds_cycles_and_only_cycles() {
        let chain = HashMap::from([(1, vec![2]), (2, vec![3]), (3, vec![])]);
        assert_eq!(find_cycle(&chain), None);
        let diamond = HashMap::from([(1, vec![2, 3]), (2, vec![4]), (3, vec![4]), (4, vec![])]);
        assert_eq!(find_cycle(&diamond), None);
        let looped = HashMap::from([(1, vec![2]), (2, vec![3]), (3, vec![1])]);
        assert_eq!(find_cycle(&looped), Some(vec![1, 2, 3, 1]));
        let selfish = HashMap::from([(7, vec![7])]);
        assert_eq!(find_cycle(&selfish), Some(vec![7, 7]));
    }
}
