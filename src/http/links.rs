//! The signed take and decline links of emails to people: `GET` shows what the link will do
//! and changes nothing (mail scanners follow links); `POST` to the same URL acts. No login:
//! the signature is the credential, and it acts only as the person the email went to.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::domain::{LinkAction, Notification, Refused, Task, TaskRef, Timestamp};
use crate::notify::email::{dashboard_link, escape};
use crate::store::StoreError;

use super::AppState;

/// The routes of this file.
pub fn router() -> Router<AppState> {
    Router::new().route("/act/{id}/{action}", get(confirm).post(act))
}

/// The signature part of a link.
#[derive(Debug, Deserialize)]
pub struct Signed {
    /// Expiry, seconds since the epoch.
    e: Option<String>,
    /// HMAC-SHA256, hex.
    s: Option<String>,
}

/// A page for people, with a status.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{title} · taskyard</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;\
         line-height:1.5;color-scheme:light dark}}button{{font-size:1rem;padding:.5rem 1.25rem;\
         border-radius:6px;cursor:pointer}}.muted{{opacity:.7}}</style></head>\
         <body><h1>{title}</h1>\n{body}\n</body></html>\n",
        title = escape(title),
    );
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert("cache-control", "no-store".parse().expect("static header"));
    headers.insert("x-frame-options", "DENY".parse().expect("static header"));
    response
}

/// Checks the link; on success returns the notification and its task.
async fn check(
    state: &AppState,
    id: &str,
    action: &str,
    signed: &Signed,
) -> Result<(LinkAction, Notification, Task), Response> {
    let refused = |status, message: &str| {
        page(
            status,
            "This link cannot be used",
            &format!("<p>{}</p>", escape(message)),
        )
    };
    let e = signed.e.as_deref().and_then(|e| e.parse::<i64>().ok());
    let (Ok(id), Some(action), Some(e), Some(s)) =
        (id.parse::<i64>(), LinkAction::parse(action), e, &signed.s)
    else {
        return Err(refused(StatusCode::NOT_FOUND, "This is not a taskyard link."));
    };
    if let Err(err) = state.notifier.links().verify(id, action, e, s, Timestamp::now()) {
        let status = match err {
            crate::notify::LinkError::Invalid => StatusCode::FORBIDDEN,
            crate::notify::LinkError::Expired(_) => StatusCode::GONE,
        };
        return Err(refused(status, &err.to_string()));
    }
    let found = async {
        let n = state.store.notification(id).await?;
        let task_id = n
            .task_id
            .ok_or_else(|| StoreError::not_found(format!("the task of notification #{id}")))?;
        let task = state.store.task(&TaskRef::Id(task_id)).await?;
        Ok::<_, StoreError>((n, task))
    };
    match found.await {
        Ok((n, task)) => Ok((action, n, task)),
        Err(StoreError::Refused(Refused::NotFound(what))) => Err(refused(
            StatusCode::NOT_FOUND,
            &format!("{what} no longer exists."),
        )),
        Err(err) => {
            tracing::error!(error = %err, "cannot read a link's notification");
            Err(refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server could not read this link; try again.",
            ))
        }
    }
}

fn summary(task: &Task) -> String {
    format!(
        "<p><b>#{} {}</b><br><span class=\"muted\">{} · {} · {} · {}</span></p>",
        task.id,
        escape(&task.title),
        task.priority.as_str(),
        escape(&task.kind),
        escape(&task.project),
        task.status
    )
}

/// Shows what the link will do; changes nothing.
async fn confirm(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    Query(signed): Query<Signed>,
) -> Response {
    let (action, n, task) = match check(&state, &id, &action, &signed).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    if let Some(done) = n.action {
        return page(
            StatusCode::CONFLICT,
            "This link was already used",
            &format!(
                "<p>{} chose <b>{}</b> at {}.</p>{}",
                escape(&n.human),
                done.as_str(),
                n.acted_at.map(Timestamp::to_rfc3339).unwrap_or_default(),
                summary(&task)
            ),
        );
    }
    let (title, what, button) = match action {
        LinkAction::Take => (
            "Take this task?",
            format!(
                "It becomes yours, <b>{}</b>: nobody else will be given it.",
                escape(&n.human)
            ),
            "Take it",
        ),
        LinkAction::Decline => (
            "Decline this task?",
            "It goes to the next person who matches, or back to the queue.".to_string(),
            "Decline",
        ),
    };
    page(
        StatusCode::OK,
        title,
        &format!(
            "{}<p>{what}</p><form method=\"post\"><button type=\"submit\" autofocus>{button}</button></form>",
            summary(&task)
        ),
    )
}

/// Carries the link out.
async fn act(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    Query(signed): Query<Signed>,
) -> Response {
    let (action, n, task) = match check(&state, &id, &action, &signed).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let dashboard = dashboard_link(state.notifier.url(), task.id);
    let result = match action {
        LinkAction::Take => state.notifier.take(&n).await.map(|(who, claim)| {
            page(
                StatusCode::OK,
                "The task is yours",
                &format!(
                    "{}<p>{} holds it until {} (fence {}); progress renews the lease. Record the \
                     outcome with <code>taskyard task complete {} --fence {} -s \"…\"</code> (an admin \
                     token may act for you). <a href=\"{}\">Open the task</a>.</p>",
                    summary(&claim.task),
                    escape(&who.name),
                    claim.lease.expires_at.to_rfc3339(),
                    claim.lease.fence,
                    claim.task.id,
                    claim.lease.fence,
                    escape(&dashboard)
                ),
            )
        }),
        LinkAction::Decline => state.notifier.decline(&n).await.map(|next| {
            let after = match next {
                Some(p) => format!("It was offered to <b>{}</b>.", escape(&p.name)),
                None => "Nobody else matches: it waits in the manual queue.".into(),
            };
            page(
                StatusCode::OK,
                "Declined",
                &format!("{}<p>Thank you. {after}</p>", summary(&task)),
            )
        }),
    };
    result.unwrap_or_else(|err| {
        // The same status a REST caller would get for this refusal.
        let err = crate::error::ApiError::from(err);
        let (status, _) = err.status_and_code();
        err.log_internal();
        let message = match status {
            StatusCode::INTERNAL_SERVER_ERROR => "The server could not do this; try again.".to_string(),
            _ => err.to_string(),
        };
        page(
            status,
            "Nothing was changed",
            &format!("{}<p>{}</p>", summary(&task), escape(&message)),
        )
    })
}
