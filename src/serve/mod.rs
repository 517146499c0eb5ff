//! Serving HTTP/1.1 on the bound listener: the accept loop, the cap on open connections, the
//! header and idle timeouts (`connections.rs`, enforced with what `activity.rs` reports), and
//! graceful shutdown. The router itself, with its body limit and request timeout, is
//! `http::router`; this module only decides which connections it gets to see.

mod activity;
mod connections;
pub mod fd_limit;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use connections::Limits;

use activity::{Service, Watched};
use connections::Connections;

/// How long the accept loop pauses after an error such as running out of file descriptors, so
/// it never spins; connections close meanwhile, or are closed to make room.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// True for accept errors that concern one connection only (it went away before its accept).
fn one_connection(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// True when the process (`EMFILE`) or the system (`ENFILE`) has no file descriptor left.
fn out_of_files(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(nix::libc::EMFILE) | Some(nix::libc::ENFILE)
    )
}

/// Serves `router` on `listener` within `limits` until `signal` completes; then stops
/// accepting, lets requests in flight finish (idle connections close at once) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    signal: impl Future<Output = ()> + Send + 'static,
) {
    let conns = Connections::new(limits);
    let sweeper = tokio::spawn(conns.clone().sweep());
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(signal);
    // Set while accept keeps failing for want of file descriptors, so that is logged once.
    let mut starved = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                starved = false;
                pair
            }
            Err(err) if one_connection(&err) => continue,
            Err(err) => {
                if out_of_files(&err) {
                    if !starved {
                        tracing::warn!(error = %err, open = conns.len(),
                            "out of file descriptors: closing idle connections to make room");
                        starved = true;
                    }
                    conns.evict_one();
                } else {
                    tracing::error!(error = %err, "accept failed");
                }
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let Some(conn) = conns.admit() else {
            tracing::debug!(%peer, "every connection is busy: refusing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = Service {
            router: router.clone(),
            conn: conn.clone(),
            peer,
        };
        let io = TokioIo::new(Watched {
            inner: stream,
            conn: conn.clone(),
        });
        let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
        let connection = graceful.watch(connection);
        let conns = conns.clone();
        tokio::spawn(async move {
            tokio::select! {
                served = connection => {
                    if let Err(err) = served {
                        tracing::trace!(%peer, error = %err, "connection ended with an error");
                    }
                }
                () = conn.closed() => {}
            }
            conns.remove(&conn);
        });
    }
    drop(listener);
    // The sweeper keeps timing connections out while the last requests finish.
    graceful.shutdown().await;
    sweeper.abort();
}

/// The limits to serve with: `max_connections`, but kept within the file descriptors this
/// process may open (its soft limit raised to the hard one first), and the two timeouts.
pub fn limits(max_connections: usize, header_timeout: Duration, idle_timeout: Duration) -> Limits {
    let soft = fd_limit::raise();
    let effective = fd_limit::effective_max(max_connections, soft);
    tracing::info!(
        max_connections = effective,
        configured = max_connections,
        open_files_limit = soft,
        "connection limit"
    );
    Limits {
        max_connections: effective,
        header_timeout,
        idle_timeout,
    }
}
