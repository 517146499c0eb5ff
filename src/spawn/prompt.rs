//! Rendering the prompt and the command's argv for a run. Placeholders are replaced inside
//! each argv element; nothing is ever passed through a shell, so task text cannot become a
//! command. The prompt always reaches the run as a file (`{prompt_file}`,
//! `TASKYARD_PROMPT_FILE`); in an argument or `TASKYARD_PROMPT` only when it fits there.

use std::borrow::Cow;

use crate::domain::Task;

/// The prompt used when an agent type sets none.
pub const DEFAULT_PROMPT: &str = "You are working on task #{task.id} from the taskyard task registry.

Title: {task.title}
Priority: {task.priority}   Kind: {task.kind}   Project: {task.project}

{task.description}

Acceptance criteria:
{task.acceptance_criteria}

{handoff}You hold this task's lease as run {run.id}. These variables are set for you: TASKYARD_URL,
TASKYARD_TOKEN (valid for this task and its subtasks only), TASKYARD_TASK_ID, TASKYARD_FENCE,
TASKYARD_RUN_ID, TASKYARD_PROMPT_FILE (this prompt, as a file). The taskyard command is on your
PATH (its full path is in TASKYARD_BIN).

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

/// Added to the default prompt for a run in a git worktree of its own.
pub const WORKTREE_PROMPT: &str = "

You work in your own git worktree, {worktree} (your working directory), on the branch {branch},
made for this run. Commit your work on that branch there, as you go. When the run ends the
branch is kept and, if it has commits, recorded as a deliverable of this task; the worktree
folder is removed, with anything not committed. Do not switch to another branch. The worktree
and the branch are also in TASKYARD_WORKTREE and TASKYARD_BRANCH.";

/// The prompt template of an agent type that sets none: [`DEFAULT_PROMPT`], and
/// [`WORKTREE_PROMPT`] for a run in a worktree.
pub fn default_prompt(in_worktree: bool) -> Cow<'static, str> {
    if in_worktree {
        Cow::Owned(format!("{DEFAULT_PROMPT}{WORKTREE_PROMPT}"))
    } else {
        Cow::Borrowed(DEFAULT_PROMPT)
    }
}

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
    /// The path of the file holding the rendered prompt.
    pub prompt_file: &'a str,
    /// The run's git worktree (empty when it has none).
    pub worktree: &'a str,
    /// The run's branch (empty when it works in no worktree).
    pub branch: &'a str,
    /// What earlier attempts left, as a paragraph (empty for a first attempt).
    pub handoff: &'a str,
}

/// The longest single argument, or `NAME=value` environment string, Linux passes to a program
/// (`MAX_ARG_STRLEN`, 128 KiB), less a margin.
pub const MAX_ARG_BYTES: usize = 128 * 1024 - 1024;

/// True when `value` fits into the environment as `name=value`.
pub fn fits_env(name: &str, value: &str) -> bool {
    name.len() + 1 + value.len() < MAX_ARG_BYTES
}

/// The command's argv with placeholders expanded, or why it cannot be passed to a program: an
/// argument longer than one may be. The message names `{prompt_file}` when a `{prompt}` made it
/// so, since that is the way out.
pub fn argv(command: &[String], ctx: &Context<'_>) -> Result<Vec<String>, String> {
    command
        .iter()
        .enumerate()
        .map(|(i, template)| {
            let arg = render(template, ctx);
            if arg.len() < MAX_ARG_BYTES {
                return Ok(arg);
            }
            let cure = if template.contains("{prompt}") {
                "; pass {prompt_file} (the path of a file holding the prompt) instead of {prompt}, \
                 or have the program read TASKYARD_PROMPT_FILE"
            } else {
                "; pass less of the task in the command, or have the program read \
                 TASKYARD_PROMPT_FILE"
            };
            Err(format!(
                "argument {i} of the command would be {} bytes, more than the {} one argument may \
                 hold{cure}",
                arg.len(),
                MAX_ARG_BYTES
            ))
        })
        .collect()
}

/// Replaces `{task.id}`, `{task.title}`, `{task.description}`, `{task.priority}`,
/// `{task.kind}`, `{task.project}`, `{task.key}`, `{task.acceptance_criteria}`, `{run.id}`,
/// `{fence}`, `{prompt}`, `{prompt_file}`, `{worktree}`, `{branch}` and `{handoff}` in
/// `template`. Unknown braces are left as they are. Values are inserted once (a title
/// containing `{prompt}` is not expanded again). A handoff ends with a blank line, so the
/// default prompt reads well with it and without it.
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
    let handoff = if ctx.handoff.is_empty() {
        String::new()
    } else {
        format!("{}\n\n", ctx.handoff)
    };
    let values: [(&str, String); 15] = [
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
        ("{prompt_file}", ctx.prompt_file.to_string()),
        ("{prompt}", ctx.prompt.to_string()),
        ("{worktree}", ctx.worktree.to_string()),
        ("{branch}", ctx.branch.to_string()),
        ("{handoff}", handoff),
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
            prompt_file: "/runs/7/prompt.md",
            worktree: "/data/worktrees/run-7",
            branch: "taskyard/1-7",
            handoff: "",
        };
        assert_eq!(render("{task.id}:{run.id}:{fence}", &ctx), "1:7:3");
        assert_eq!(
            render("{task.title}", &ctx),
            "Fix {prompt} and `rm -rf /`",
            "inserted text is not expanded"
        );
        assert_eq!(render("{prompt} {unknown} {", &ctx), "PROMPT {unknown} {");
        assert!(render(DEFAULT_PROMPT, &ctx).contains("TASKYARD_FENCE"));
        assert_eq!(render("{prompt_file}|{prompt}", &ctx), "/runs/7/prompt.md|PROMPT");
        assert_eq!(
            render("{worktree} {branch}", &ctx),
            "/data/worktrees/run-7 taskyard/1-7"
        );
        let isolated = render(&default_prompt(true), &ctx);
        assert!(
            isolated.contains("own git worktree, /data/worktrees/run-7")
                && isolated.contains("on the branch taskyard/1-7"),
            "{isolated}"
        );
        assert!(!render(&default_prompt(false), &ctx).contains("worktree"));
        assert!(render(DEFAULT_PROMPT, &ctx).contains("- (none given)\n\nYou hold this task's lease"));
        let handed = Context {
            handoff: "Attempt 2 of 3. An earlier attempt by run-4 (run 4) reached 60%.",
            ..ctx
        };
        assert!(render(DEFAULT_PROMPT, &handed).contains(
            "- (none given)\n\nAttempt 2 of 3. An earlier \
            attempt by run-4 (run 4) reached 60%.\n\nYou hold this task's lease"
        ));
    }

    #[test]
    fn arguments_too_long_for_a_program_are_refused_with_the_way_out() {
        let task = sample_task();
        let big = "p".repeat(MAX_ARG_BYTES);
        let ctx = Context {
            task: &task,
            run_id: 7,
            fence: 3,
            prompt: &big,
            prompt_file: "/runs/7/prompt.md",
            worktree: "",
            branch: "",
            handoff: "",
        };
        let command = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(
            argv(&command(&["claude", "-p", "{prompt_file}"]), &ctx).unwrap(),
            ["claude", "-p", "/runs/7/prompt.md"]
        );
        let err = argv(&command(&["claude", "-p", "{prompt}"]), &ctx).unwrap_err();
        assert!(
            err.contains("argument 2") && err.contains("{prompt_file}"),
            "{err}"
        );
        assert!(fits_env("TASKYARD_PROMPT", "short"));
        assert!(!fits_env("TASKYARD_PROMPT", &big));
    }
}
