//! Booting the server: prepare the data folder and admin token, open and migrate the store,
//! bind the listener (port 0 works, for tests), then serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::{resolve_node_id, Membership};
use crate::config::{backend_of, Backend, Config, Secret, ADMIN_TOKEN_FILE};
use crate::host::HostMonitor;
use crate::http::{self, AppState};
use crate::loops::{LoopContext, Loops};
use crate::service::Service;
use crate::spawn::Spawner;
use crate::store::{Store, StoreOptions};

/// Opens the registry the config names, migrated and ready: the embedded SQLite file in the
/// data folder, or a PostgreSQL database. (The one place a backend is chosen.)
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let data_dir = &config.server.data_dir;
    let options = StoreOptions {
        durability: config.server.durability,
        readers: 4,
        retry_backoff: Duration::from_secs(config.server.retry_backoff_seconds),
        human_kinds: config.routing.human_kinds.clone(),
        max_depth: config.spawner.max_depth,
        max_fanout: config.spawner.max_fanout,
        telemetry: Arc::default(),
        node: resolve_node_id(config.server.node_id.as_deref(), data_dir)?,
    };
    match backend_of(config.server.database_url.as_ref(), data_dir) {
        Backend::Sqlite(file) => crate::store::sqlite::open(&file, options)
            .await
            .with_context(|| format!("cannot open the database {}", file.display())),
        Backend::Postgres(url) => crate::store::postgres::open(&url, options)
            .await
            .with_context(|| {
                format!(
                    "cannot open the PostgreSQL database {}",
                    crate::store::postgres::redact(&url)
                )
            }),
    }
}

/// A server that is bound and ready to run.
pub struct App {
    listener: TcpListener,
    state: AppState,
    shutdown: watch::Sender<bool>,
    url: String,
}

impl App {
    /// Prepares everything and binds the listener; nothing is served until [`App::run`].
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let data_dir = config.server.data_dir.clone();
        crate::files::private_dir(&data_dir)
            .with_context(|| format!("cannot create the data folder {}", data_dir.display()))?;
        let admin_token = match &config.server.admin_token {
            Some(token) => token.clone(),
            None => admin_token_from_file(&data_dir)?,
        };
        let store = open_store(&config).await?;
        let shortened = store.bound_leases().await?;
        if shortened > 0 {
            tracing::warn!(
                shortened,
                "leases ended further away than their own length (the clock was set back while \
                 taskyard was stopped); they now end one lease length from now"
            );
        }
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        if !config.spawner_on() {
            tracing::info!(
                "no agent type has a command: the spawner is off, and P0/P1 work is pulled by agents"
            );
        }
        let loop_defs =
            crate::loops::load_definitions(&config.server.loops_dir, config.server.builtin_loops)?;
        let listener = TcpListener::bind(config.server.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.bind))?;
        let url = config.public_url(listener.local_addr()?);
        let config = Arc::new(config);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let host = Arc::new(HostMonitor::default());
        let cluster = Membership::new(store.clone(), store.options().node.clone());
        let spawner = Arc::new(Spawner::new(
            store.clone(),
            config.clone(),
            url.clone(),
            data_dir.clone(),
            host.clone(),
            shutdown_rx.clone(),
        ));
        let notifier = Arc::new(
            crate::notify::Notifier::new(store.clone(), config.clone(), &data_dir, url.clone())
                .await
                .context("cannot set up notifications")?,
        );
        let loops = Arc::new(Loops::new(
            loop_defs,
            LoopContext {
                store: store.clone(),
                config: config.clone(),
                data_dir: data_dir.clone(),
                url: url.clone(),
                host,
                spawner,
                notifier: notifier.clone(),
                cluster,
            },
        ));
        let service = Service::new(
            store,
            config,
            crate::token::hash_token(admin_token.expose()),
            shutdown_rx,
            loops,
            notifier,
        );
        let state = AppState::new(service);
        Ok(App {
            listener,
            state,
            shutdown,
            url,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The base URL clients use.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store, for tests and loops.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The loops, for tests that run them by hand.
    pub fn loops(&self) -> Arc<Loops> {
        self.state.loops.clone()
    }

    /// Serves until `signal` completes, then stops accepting, ends long polls and event
    /// streams, finishes in-flight requests and closes the database.
    pub async fn run(self, signal: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let App {
            listener,
            state,
            shutdown,
            url,
        } = self;
        tracing::info!(
            %url,
            data_dir = %state.config.server.data_dir.display(),
            node = %state.store.options().node,
            "taskyard is listening"
        );
        let code = state.sessions.login_code(state.admin_token_hash).await?;
        tracing::info!("dashboard: {url}/ (one-time login link, valid for an hour: {url}/login?code={code})");
        let store = state.store.clone();
        let loops = state.loops.clone();
        let cluster = loops.context().cluster.clone();
        cluster.join().await?;
        // Beats until the loops have stopped: leadership passes on only once no loop run of
        // this node's is still going.
        let (leave, leaving) = watch::channel(false);
        let membership = tokio::spawn(cluster.clone().run(leaving));
        loops.context().spawner.reconcile().await?;
        loops.start().await?;
        let deliverer = crate::webhooks::Deliverer::new(store.clone(), &state.config)?;
        let webhooks = tokio::spawn(deliverer.run(state.shutdown.clone()));
        let server = &state.config.server;
        let limits = crate::serve::limits(
            server.max_connections,
            server.header_timeout.0,
            server.idle_timeout.0,
        );
        let mcp = crate::mcp::router(&state);
        let router = http::router(state, mcp);
        crate::serve::serve(listener, router, limits, async move {
            signal.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = shutdown.send(true);
        })
        .await;
        loops.stop().await;
        let _ = webhooks.await;
        leave.send_replace(true);
        let _ = membership.await;
        store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Reads `<data-dir>/admin.token`, creating it (mode 0600) with a random token on first start.
fn admin_token_from_file(data_dir: &Path) -> anyhow::Result<Secret> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim();
            anyhow::ensure!(
                token.len() >= 16,
                "{} holds no usable token (at least 16 characters); delete it to get a new one",
                path.display()
            );
            Ok(Secret::new(token))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let token = crate::token::new_token();
            crate::files::create_secret_file(&path, &token)?;
            tracing::info!(path = %path.display(), "created a new admin token");
            Ok(Secret::new(token))
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Reads the admin token a local CLI should use: `<data-dir>/admin.token`.
pub fn local_admin_token(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}
