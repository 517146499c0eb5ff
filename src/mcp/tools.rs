//! The tool catalogue: each tool's name, its description (written for the language model that
//! decides when to call it) and its input schema, generated from the very input types the REST
//! API reads, so the schema and the validation cannot drift apart.

use std::sync::LazyLock;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::domain::input::{
    BlockTask, ClaimNext, ClaimTask, CompleteTask, CreateTask, FailTask, ReleasePaths, ReleaseTask,
    ReportProgress, ReservePaths,
};
use crate::domain::TaskRef;
use crate::service::tasks::ListQuery;

/// The arguments of a tool that names a task and takes nothing else.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// The tools, in the order they are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolName {
    /// `list_tasks`
    ListTasks,
    /// `get_task`
    GetTask,
    /// `why`
    Why,
    /// `claim_task`
    ClaimTask,
    /// `claim_next`
    ClaimNext,
    /// `update_progress`
    UpdateProgress,
    /// `complete_task`
    CompleteTask,
    /// `fail_task`
    FailTask,
    /// `release_task`
    ReleaseTask,
    /// `block_task`
    BlockTask,
    /// `create_task`
    CreateTask,
    /// `reserve_paths`
    ReservePaths,
    /// `release_paths`
    ReleasePaths,
}

/// Said once in every tool that works under a lease.
const FENCE: &str = "Pass the `fence` from your claim (lease.fence). An error with code `lease_lost` means \
    your lease is gone (it expired, or the task was taken away or cancelled): stop working on the task \
    at once, do not retry, and get new work with claim_next.";

impl ToolName {
    /// Every tool.
    pub const ALL: [ToolName; 13] = [
        ToolName::ListTasks,
        ToolName::GetTask,
        ToolName::Why,
        ToolName::ClaimTask,
        ToolName::ClaimNext,
        ToolName::UpdateProgress,
        ToolName::CompleteTask,
        ToolName::FailTask,
        ToolName::ReleaseTask,
        ToolName::BlockTask,
        ToolName::CreateTask,
        ToolName::ReservePaths,
        ToolName::ReleasePaths,
    ];

    /// The name clients call it by.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolName::ListTasks => "list_tasks",
            ToolName::GetTask => "get_task",
            ToolName::Why => "why",
            ToolName::ClaimTask => "claim_task",
            ToolName::ClaimNext => "claim_next",
            ToolName::UpdateProgress => "update_progress",
            ToolName::CompleteTask => "complete_task",
            ToolName::FailTask => "fail_task",
            ToolName::ReleaseTask => "release_task",
            ToolName::BlockTask => "block_task",
            ToolName::CreateTask => "create_task",
            ToolName::ReservePaths => "reserve_paths",
            ToolName::ReleasePaths => "release_paths",
        }
    }

    /// The tool called `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tool| tool.as_str() == name)
    }

    /// True for tools that act on one task named by the `task` argument.
    pub fn names_a_task(self) -> bool {
        !matches!(
            self,
            ToolName::ListTasks | ToolName::ClaimNext | ToolName::CreateTask
        )
    }

    fn description(self) -> String {
        match self {
            ToolName::ListTasks => "List tasks, newest first, to see what exists or to find a task's id. \
                All filters are optional; `status` and `priority` take one value or a comma-separated \
                list (\"available,in_progress\", \"P0,P1\"). For the next page pass the answer's \
                `next_cursor` as `cursor`. Read-only: to get work for yourself, call claim_next."
                .into(),
            ToolName::GetTask => "Show one task by id or key: title, description, acceptance criteria, \
                status, lease, progress and its recent events. Read-only. Call it after a claim to read \
                what the task asks for."
                .into(),
            ToolName::Why => "Explain whether a task can be claimed right now and, if not, why: \
                unfinished dependencies, another agent's lease, a retry backoff, routing to a person. \
                Read-only. Call it when claim_task answers `not_ready` or claim_next finds nothing you \
                expected."
                .into(),
            ToolName::ClaimTask => "Claim one specific task for yourself (an exclusive lease). Answers \
                {task, lease} (and `handoff` when earlier attempts left notes, a branch or a log: \
                read it and continue their work): remember task.id and lease.fence, because every later call on this task \
                (update_progress, complete_task, fail_task, release_task, block_task) must pass that \
                fence. The lease runs out after lease_seconds (default from the server) unless you call \
                update_progress. Errors: `already_claimed` (another agent holds it: pick other work), \
                `not_ready` (dependencies, backoff or final status: see why), `forbidden`. To simply get \
                the best work for you, call claim_next instead."
                .into(),
            ToolName::ClaimNext => "Get work: claim the best ready task for you (its capabilities must \
                be among yours, then the highest priority, then the oldest). Answers {task, lease} \
                (with `handoff` when the task changed hands: read it and continue that work); \
                remember task.id and lease.fence, because every later call on the task must pass that \
                fence. When nothing fits, answers {task: null, lease: null}. With wait_seconds (at most \
                60) it waits for work to appear before answering. The lease runs out after lease_seconds \
                unless you call update_progress."
                .into(),
            ToolName::UpdateProgress => format!(
                "Report progress on a task you hold (percent 0-100 and a short note); this also renews \
                 your lease. Call it every few minutes while you work: a lease that runs out hands the \
                 task to someone else. With only the fence it is a bare heartbeat that renews the lease. \
                 {FENCE}"
            ),
            ToolName::CompleteTask => format!(
                "Finish a task you hold: a summary of what you did, and deliverables such as \
                 {{\"kind\": \"commit\", \"ref\": \"<sha>\"}} or {{\"kind\": \"pr\", \"ref\": \"<url>\"}}. \
                 Call it only when the acceptance criteria are met. {FENCE}"
            ),
            ToolName::FailTask => format!(
                "Give up on a task you hold because the attempt failed, with the reason. Retryable \
                 failures (the default) come back for another attempt after a backoff; \
                 retryable=false fails the task for good. {FENCE}"
            ),
            ToolName::ReleaseTask => format!(
                "Hand a task you hold back untouched (you cannot or should not do it now); the attempt \
                 is not counted and another agent can claim it at once. {FENCE}"
            ),
            ToolName::BlockTask => format!(
                "Block a task you hold on a decision only a person can make (say what must be \
                 decided in `reason`); a person lifts the block. Your lease ends. {FENCE}"
            ),
            ToolName::CreateTask => "File a new task, or with parent_id a subtask of the task you are \
                working on (to split work). Creating with a `key` that already exists returns the \
                existing task instead of a duplicate (answer: {created: false, task}). depends_on lists \
                ids or keys of tasks that must complete first. A token given to a spawned run may only \
                create subtasks of its own task."
                .into(),
            ToolName::ReservePaths => format!(
                "Reserve the files you are about to edit in a task you hold, as glob patterns relative \
                 to the repository's root (\"src/auth/**\", \"docs/*.md\"), so no other agent edits \
                 them meanwhile. Exclusive by default; exclusive=false shares them with other shared \
                 reservations. Answers the reservation (keep its id). Error `conflict` names who holds \
                 an overlapping path, on which task: work on something else or wait. Reservations end \
                 with your lease (complete, fail, release, expiry). {FENCE}"
            ),
            ToolName::ReleasePaths => format!(
                "Release a reservation you made with reserve_paths before your lease ends (when you \
                 are done with those files), so others may edit them. {FENCE}"
            ),
        }
    }

    fn schema(self) -> JsonObject {
        let mut schema = match self {
            ToolName::ListTasks => schema_of::<ListQuery>(),
            ToolName::GetTask | ToolName::Why => schema_of::<NoFields>(),
            ToolName::ClaimTask => schema_of::<ClaimTask>(),
            ToolName::ClaimNext => schema_of::<ClaimNext>(),
            ToolName::UpdateProgress => schema_of::<ReportProgress>(),
            ToolName::CompleteTask => schema_of::<CompleteTask>(),
            ToolName::FailTask => schema_of::<FailTask>(),
            ToolName::ReleaseTask => schema_of::<ReleaseTask>(),
            ToolName::BlockTask => schema_of::<BlockTask>(),
            ToolName::CreateTask => schema_of::<CreateTask>(),
            ToolName::ReservePaths => schema_of::<ReservePaths>(),
            ToolName::ReleasePaths => schema_of::<ReleasePaths>(),
        };
        if self.names_a_task() {
            add_task_argument(&mut schema);
        }
        schema
    }

    fn annotations(self) -> ToolAnnotations {
        let read_only = matches!(self, ToolName::ListTasks | ToolName::GetTask | ToolName::Why);
        ToolAnnotations::new()
            .read_only(read_only)
            .destructive(false)
            .open_world(false)
    }

    fn tool(self) -> Tool {
        Tool::new(self.as_str(), self.description(), self.schema()).with_annotations(self.annotations())
    }
}

/// Every tool's definition, built once.
pub fn all() -> &'static [Tool] {
    static TOOLS: LazyLock<Vec<Tool>> =
        LazyLock::new(|| ToolName::ALL.into_iter().map(ToolName::tool).collect());
    &TOOLS
}

/// The definition of the tool called `name`.
pub fn find(name: &str) -> Option<Tool> {
    all().iter().find(|tool| tool.name == name).cloned()
}

/// The JSON Schema of `T` with every subschema inlined (some clients do not follow `$ref`).
fn schema_of<T: JsonSchema>() -> JsonObject {
    let schema = SchemaSettings::draft2020_12()
        .with(|settings| settings.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>();
    let mut object = match schema.to_value() {
        Value::Object(object) => object,
        _ => JsonObject::new(),
    };
    // The type's name and the meta-schema mean nothing to a caller.
    object.remove("title");
    object.remove("$schema");
    object
}

/// Adds the required `task` argument (an id or a key) to a tool's schema.
fn add_task_argument(schema: &mut JsonObject) {
    let task = schema_of::<TaskRef>();
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        properties.insert("task".into(), Value::Object(task));
    } else {
        schema.insert("properties".into(), json!({ "task": task }));
    }
    match schema.get_mut("required") {
        Some(Value::Array(required)) => required.insert(0, json!("task")),
        _ => {
            schema.insert("required".into(), json!(["task"]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input_schema(tool: ToolName) -> std::sync::Arc<JsonObject> {
        find(tool.as_str()).unwrap().input_schema
    }

    #[test]
    fn every_tool_has_a_distinct_name_and_an_object_schema() {
        let tools = all();
        assert_eq!(tools.len(), ToolName::ALL.len());
        for tool in ToolName::ALL {
            assert_eq!(ToolName::parse(tool.as_str()), Some(tool));
            let schema = input_schema(tool);
            assert_eq!(schema["type"], "object", "{}", tool.as_str());
            assert!(
                !schema.contains_key("$defs"),
                "{} inlines its subschemas",
                tool.as_str()
            );
        }
        assert_eq!(ToolName::parse("nope"), None);
    }

    #[test]
    fn task_tools_require_the_task_and_refuse_unknown_fields() {
        let schema = input_schema(ToolName::UpdateProgress);
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(required, ["task", "fence"]);
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["properties"]["task"]["type"], json!(["integer", "string"]));
        assert_eq!(schema["properties"]["percent"]["maximum"], 100);
        let why = input_schema(ToolName::Why);
        assert_eq!(why["required"], json!(["task"]));
        let list = input_schema(ToolName::ListTasks);
        assert!(list.get("required").is_none());
        assert!(list["properties"]["status"].is_object());
    }
}
