//! Rendering the prompt and the command's argv for a run. Placeholders are replaced inside
//! each argv element; nothing is ever passed through a shell, so task text cannot become a
//! command.

use crate::domain::Task;

/// The prompt used when an agent type sets none.
pub const DEFAULT_PROMPT: &str = "You are working on task #{task.id} from the taskyard task registry.

Title: {task.title}
Priority: {task.priority}   Kind: {task.kind}   Project: {task.project}

{task.description}

Acceptance criteria:
{task.acceptance_criteria}

You hold this task's lease as run {run.id}. These variables are set for you: TASKYARD_URL,
TASKYARD_TOKEN (valid for this task and its subtasks only), TASKYARD_TASK_ID, TASKYARD_FENCE,
TASKYARD_RUN_ID.

Report progress every few minutes (it also keeps your lease alive):
  taskyard task progress --percent 50 --note \"what you are doing\"
  (or: curl -X POST \"$TASKYARD_URL/api/v1/tasks/$TASKYARD_TASK_ID/progress\" -H \"Authorization: Bearer $TASKYARD_TOKEN\" -d '{\"fence\": '$TASKYARD_FENCE', \"percent\": 50, \"note\": \"…\"}')
When done:
  taskyard task complete --summary \"what you did\" --deliverable commit:<sha>
If you cannot finish:
  taskyard task fail --reason \"why\"          (another attempt may follow)
If a person must decide something:
  taskyard task block --reason \"the question\"
To split work, create subtasks with --parent {task.id}. Exit code 4 from taskyard means your
lease is gone: stop working on this task.";

/// What placeholders can refer to.
pub struct Context<'a> {
    /// The task.
    pub task: &'a Task,
    /// The run id.
    pub run_id: i64,
    /// The claim's fence.
    pub fence: i64,
    /// The rendered prompt (empty while rendering the prompt itself).
    pub prompt: &'a str,
}

/// Replaces `{task.id}`, `{task.title}`, `{task.description}`, `{task.priority}`,
/// `{task.kind}`, `{task.project}`, `{task.key}`, `{task.acceptance_criteria}`, `{run.id}`,
/// `{fence}` and `{prompt}` in `template`. Unknown braces are left as they are. Values are
/// inserted once (a title containing `{prompt}` is not expanded again).
pub fn render(template: &str, ctx: &Context<'_>) -> String {
    let t = ctx.task;
    let criteria = if t.acceptance_criteria.is_empty() {
        "- (none given)".to_string()
    } else {
        t.acceptance_criteria
            .iter()
            .map(|c| format!("- {c}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let values: [(&str, String); 11] = [
        ("{task.id}", t.id.to_string()),
        ("{task.title}", t.title.clone()),
        ("{task.description}", t.description.clone()),
        ("{task.priority}", t.priority.to_string()),
        ("{task.kind}", t.kind.clone()),
        ("{task.project}", t.project.clone()),
        ("{task.key}", t.key.clone().unwrap_or_default()),
        ("{task.acceptance_criteria}", criteria),
        ("{run.id}", ctx.run_id.to_string()),
        ("{fence}", ctx.fence.to_string()),
        ("{prompt}", ctx.prompt.to_string()),
    ];
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    'scan: while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        for (name, value) in &values {
            if let Some(after) = tail.strip_prefix(name) {
                out.push_str(value);
                rest = after;
                continue 'scan;
            }
        }
        out.push('{');
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::router::tests_support::sample_task;

    #[test]
    fn placeholders_expand_once_and_only_known_ones() {
        let mut task = sample_task();
        task.title = "Fix {prompt} and `rm -rf /`".into();
        let ctx = Context {
            task: &task,
            run_id: 7,
            fence: 3,
            prompt: "PROMPT",
        };
        assert_eq!(render("{task.id}:{run.id}:{fence}", &ctx), "1:7:3");
        assert_eq!(
            render("{task.title}", &ctx),
            "Fix {prompt} and `rm -rf /`",
            "inserted text is not expanded"
        );
        assert_eq!(render("{prompt} {unknown} {", &ctx), "PROMPT {unknown} {");
        assert!(render(DEFAULT_PROMPT, &ctx).contains("TASKYARD_FENCE"));
    }
}
