//! What each tool does. Arguments are read into the REST API's own input types, so bad input is
//! refused with the same field and message; then the same functions as the REST handlers do the
//! work. Errors become tool errors carrying the REST API's stable codes.

use rmcp::model::{CallToolResult, JsonObject};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::domain::input::parse_json;
use crate::domain::{InputError, Principal, TaskRef};
use crate::error::{ApiError, ApiResult};
use crate::service::{claims, reservations, tasks, Service};
use crate::store::Claimed;

use super::tools::{NoFields, ToolName};

/// What a call did.
#[derive(Debug)]
pub enum Done {
    /// The tool's JSON answer.
    Answer(Value),
    /// A claim: the caller now holds this lease, and must pass it on to the client or hand it back.
    Claimed(Box<Claimed>),
}

impl Done {
    /// The tool's JSON answer.
    pub fn into_answer(self) -> ApiResult<Value> {
        match self {
            Done::Answer(value) => Ok(value),
            Done::Claimed(claimed) => answer(claimed),
        }
    }
}

/// Runs `tool` with `args` as `who`. A waiting claim_next stops waiting once `give_up` is
/// cancelled; no call is cut off half-done.
pub async fn call(
    service: &Service,
    who: &Principal,
    tool: ToolName,
    args: JsonObject,
    give_up: &CancellationToken,
) -> ApiResult<Done> {
    let value = match tool {
        ToolName::ListTasks => answer(tasks::list(service, read(args)?).await?),
        ToolName::GetTask => {
            let (task, NoFields {}) = on_task(args)?;
            answer(tasks::detail(service, &task).await?)
        }
        ToolName::Why => {
            let (task, NoFields {}) = on_task(args)?;
            answer(tasks::explain(service, &task).await?)
        }
        ToolName::ClaimTask => {
            let (task, body) = on_task(args)?;
            let claimed = claims::claim(service, who, &task, body).await?;
            return Ok(Done::Claimed(Box::new(claimed)));
        }
        ToolName::ClaimNext => match claims::claim_next_unless(service, who, read(args)?, give_up).await? {
            Some(claimed) => return Ok(Done::Claimed(Box::new(claimed))),
            None => Ok(json!({
                "task": null,
                "lease": null,
                "detail": "no ready task fits you now; call claim_next again later, or with wait_seconds \
                           to wait for work"
            })),
        },
        ToolName::UpdateProgress => {
            let (task, body) = on_task(args)?;
            answer(claims::progress(service, who, &task, body).await?)
        }
        ToolName::CompleteTask => {
            let (task, body) = on_task(args)?;
            answer(claims::complete(service, who, &task, body).await?)
        }
        ToolName::FailTask => {
            let (task, body) = on_task(args)?;
            answer(claims::fail(service, who, &task, body).await?)
        }
        ToolName::ReleaseTask => {
            let (task, body) = on_task(args)?;
            answer(claims::release(service, who, &task, body).await?)
        }
        ToolName::BlockTask => {
            let (task, body) = on_task(args)?;
            answer(claims::block(service, who, &task, body).await?)
        }
        ToolName::ReservePaths => {
            let (task, body) = on_task(args)?;
            answer(reservations::reserve(service, who, &task, body).await?)
        }
        ToolName::ReleasePaths => {
            let (task, body) = on_task(args)?;
            answer(reservations::unreserve(service, who, &task, body).await?)
        }
        ToolName::CreateTask => {
            let (task, created) = tasks::create(service, who, read(args)?).await?;
            Ok(json!({ "created": created, "task": answer(task)? }))
        }
    };
    value.map(Done::Answer)
}

/// Hands back a lease whose answer can reach nobody, giving the attempt back, so the task is
/// at once available to others instead of waiting for the lease to expire.
pub async fn hand_back(service: &Service, who: &Principal, claimed: &Claimed) {
    let note = "the MCP request that claimed it was cancelled before its answer was sent";
    let (id, fence) = (claimed.task.id, claimed.lease.fence);
    match service.store.release(id, who, fence, Some(note.into())).await {
        Ok(_) => tracing::info!(
            task = id,
            fence,
            "handed back a claim whose MCP request was cancelled"
        ),
        Err(err) => {
            tracing::warn!(error = %err, task = id, fence, "cannot hand back a claim nobody received")
        }
    }
}

/// The tool result for an answer: structured content and the same JSON as text, or a tool error
/// `{"code", "detail"}` (with `field` or `holder` when the REST API would name them).
pub fn reply(result: ApiResult<Value>) -> CallToolResult {
    match result {
        Ok(value) => CallToolResult::structured(value),
        Err(err) => {
            err.log_internal();
            let problem = err.problem();
            let mut body = json!({ "code": problem.code, "detail": problem.detail });
            if let Some(field) = problem.field {
                body["field"] = field.into();
            }
            if let Some(holder) = problem.holder {
                body["holder"] = holder.into();
            }
            CallToolResult::structured_error(body)
        }
    }
}

/// Reads arguments as the REST API reads a JSON body.
fn read<T: DeserializeOwned>(args: JsonObject) -> ApiResult<T> {
    let bytes = serde_json::to_vec(&args).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(parse_json(&bytes)?)
}

/// Splits off the `task` argument (an id or a key, as in a REST path) and reads the rest.
fn on_task<T: DeserializeOwned>(mut args: JsonObject) -> ApiResult<(String, T)> {
    let task = args
        .remove("task")
        .ok_or_else(|| InputError::new("task", "missing field `task`"))?;
    let task = match serde_json::from_value::<TaskRef>(task) {
        Ok(TaskRef::Id(id)) => id.to_string(),
        Ok(TaskRef::Key(key)) => key,
        Err(err) => return Err(InputError::new("task", err.to_string()).into()),
    };
    Ok((task, read(args)?))
}

fn answer<T: Serialize>(value: T) -> ApiResult<Value> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::input::ReportProgress;

    fn args(value: Value) -> JsonObject {
        value.as_object().cloned().unwrap()
    }

    fn field_of(err: ApiError) -> String {
        match err {
            ApiError::Invalid(e) => e.field,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn the_task_is_an_id_or_a_key() {
        let (task, body): (String, ReportProgress) = on_task(args(json!({"task": 7, "fence": 2}))).unwrap();
        assert_eq!((task.as_str(), body.fence), ("7", 2));
        let (task, NoFields {}) = on_task(args(json!({"task": "login-fix"}))).unwrap();
        assert_eq!(task, "login-fix");
    }

    #[test]
    fn bad_arguments_name_the_field_as_rest_does() {
        let missing = on_task::<NoFields>(args(json!({}))).unwrap_err();
        assert_eq!(field_of(missing), "task");
        let negative = on_task::<NoFields>(args(json!({"task": -1}))).unwrap_err();
        assert_eq!(field_of(negative), "task");
        let unknown =
            on_task::<ReportProgress>(args(json!({"task": 1, "fence": 1, "colour": "red"}))).unwrap_err();
        assert_eq!(field_of(unknown), "colour");
        let wrong = on_task::<ReportProgress>(args(json!({"task": 1, "fence": "one"}))).unwrap_err();
        assert_eq!(field_of(wrong), "fence");
    }

    #[test]
    fn errors_become_tool_errors_with_stable_codes() {
        let result = reply(Err(ApiError::LeaseLost("fence 1 is stale".into())));
        assert_eq!(result.is_error, Some(true));
        let body = result.structured_content.unwrap();
        assert_eq!(body["code"], "lease_lost");
        assert_eq!(body["detail"], "fence 1 is stale");
        let taken = reply(Err(ApiError::AlreadyClaimed { holder: "a".into() }));
        assert_eq!(taken.structured_content.unwrap()["holder"], "a");
        let ok = reply(Ok(json!({"id": 1})));
        assert_eq!(ok.is_error, Some(false));
    }
}
