//! The MCP server handler. rmcp makes one per session (and one per request for clients of the
//! session-less protocol revision): it lists the tools, runs each call as the principal the
//! bearer-token middleware attached to that HTTP request, and once a session is initialized
//! starts the watcher that tells it about lost leases; every lease the session claims is passed
//! to that watcher. A claim whose request was cancelled meanwhile is handed back at once.
#![expect(
    deprecated,
    reason = "the logging capability and level belong to session-based clients"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::request::Parts;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ErrorCode, Extensions, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, SetLevelRequestParams, Tool,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler};
use tokio::sync::mpsc;

use crate::domain::{Principal, Role};
use crate::error::ApiError;
use crate::service::Service;

use super::calls::{self, Done};
use super::tools::{self, ToolName};
use super::watch::{self, Claim, Watcher};

/// What every client is told when it connects, for the model that uses the tools.
const INSTRUCTIONS: &str = "taskyard hands out tasks under exclusive leases. To work: call claim_next \
    (or claim_task for a given task), and keep task.id and lease.fence from the answer. Read the task \
    with get_task. While you work, call update_progress every few minutes: it renews your lease. \
    Finish with complete_task, or fail_task, release_task or block_task. Every call on a claimed task \
    must pass its fence. A tool error with code `lease_lost` (or a `lease_lost` log message from this \
    server) means your lease is gone: stop working on that task at once and get new work. Errors come \
    as {\"code\", \"detail\"} with the same codes as the REST API.";

/// The handler of one MCP session.
pub struct Taskyard {
    /// The service.
    service: Service,
    /// The session's lease watcher, once the client is initialized.
    watcher: Mutex<Option<Watcher>>,
    /// Set when the client asked for errors only: lease warnings are then not sent.
    quiet: Arc<AtomicBool>,
    /// Tells the watcher about each lease this session claims.
    claims: mpsc::UnboundedSender<Claim>,
    /// The other end of `claims`, until the watcher takes it (claims made before it starts wait).
    claims_to_watch: Mutex<Option<mpsc::UnboundedReceiver<Claim>>>,
}

impl Taskyard {
    /// A handler for a new session. Cheap: rmcp also makes one for each request it validates.
    pub fn new(service: Service) -> Self {
        let (claims, claims_to_watch) = mpsc::unbounded_channel();
        Self {
            service,
            watcher: Mutex::new(None),
            quiet: Arc::new(AtomicBool::new(false)),
            claims,
            claims_to_watch: Mutex::new(Some(claims_to_watch)),
        }
    }
}

/// The answer to a request the client cancelled; rmcp does not send it (the protocol says a
/// cancelled request gets no answer), but it ends the call.
fn cancelled() -> McpError {
    McpError::new(ErrorCode::INVALID_REQUEST, "the client cancelled the call", None)
}

/// The principal the authentication middleware attached to the HTTP request behind a message.
fn principal(extensions: &Extensions) -> Option<Principal> {
    extensions.get::<Parts>()?.extensions.get::<Principal>().cloned()
}

impl ServerHandler for Taskyard {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new("taskyard", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools::all().to_vec()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::find(name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let Some(tool) = ToolName::parse(&request.name) else {
            return Err(McpError::invalid_params(
                format!("unknown tool {:?}", request.name),
                None,
            ));
        };
        let Some(who) = principal(&context.extensions) else {
            let refused =
                ApiError::Unauthorized("this MCP request carries no authenticated principal".into());
            return Ok(calls::reply(Err(refused)).into());
        };
        if context.ct.is_cancelled() {
            return Err(cancelled());
        }
        let args = request.arguments.unwrap_or_default();
        // The call is never dropped part-way on cancellation: a claim cut off after its commit
        // would leave a lease nobody knows of. A waiting claim_next watches the token instead.
        let done = calls::call(&self.service, &who, tool, args, &context.ct).await;
        if let Ok(Done::Claimed(claimed)) = &done {
            if context.ct.is_cancelled() {
                // rmcp drops the answer to a cancelled request, so the lease would reach nobody.
                // (A cancel landing after this check still loses the answer; that lease then
                // expires as any abandoned one does.)
                calls::hand_back(&self.service, &who, claimed).await;
            } else {
                // The watcher may have stopped, or never started for a session-less request.
                let _ = self.claims.send((claimed.task.id, claimed.lease.fence));
            }
        }
        if context.ct.is_cancelled() {
            return Err(cancelled());
        }
        Ok(calls::reply(done.and_then(Done::into_answer)).into())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.quiet
            .store(watch::mutes_warnings(request.level), Ordering::Relaxed);
        Ok(())
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let Some(who) = principal(&context.extensions) else {
            return;
        };
        if who.role < Role::Agent {
            // A viewer holds no leases.
            return;
        }
        let Some(claims) = self
            .claims_to_watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let watcher = watch::spawn(
            self.service.clone(),
            who.name,
            context.peer,
            self.quiet.clone(),
            claims,
        );
        *self.watcher.lock().unwrap_or_else(PoisonError::into_inner) = Some(watcher);
    }
}
