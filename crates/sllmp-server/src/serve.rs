//! Serving on a socket: TCP_NODELAY, graceful shutdown with a bounded grace period.

use std::future::Future;
use std::net::SocketAddr;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::Server;

impl Server {
    /// Binds `addr` and serves until Ctrl-C or SIGTERM, then lets in-flight requests finish
    /// for at most the shutdown grace period.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<()> {
        let listener = TcpListener::bind(addr).await?;
        self.serve_on(listener, shutdown_signal()).await
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
    /// requests and streams finish for at most the shutdown grace period, and waits (for at
    /// most the completion grace period) for the completion hooks still running, so that
    /// what they record is not lost with the process.
    pub async fn serve_on(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let grace = self.settings.shutdown_grace;
        let completion_grace = self.settings.completion_grace;
        let tracker = self.tracker.clone();
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stopping_tx.send(());
        };
        // Nagle's algorithm would hold small SSE frames back for the peer's delayed ACK.
        let listener = listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        // `into_make_service` builds the route table once; serving the `Router` itself
        // rebuilds it for every connection (a few KiB each, for the connection's life).
        // The request-id middleware wraps the router whole, not each route.
        let service = tower::Layer::layer(&crate::request_id::RequestIdLayer, self.routes());
        let server = axum::serve(listener, axum::ServiceExt::into_make_service(service))
            .with_graceful_shutdown(signal);
        let deadline = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            result = server => result,
            () = deadline => {
                tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace period over; dropping requests still in flight");
                Ok(())
            }
        };
        // Requests still running are stopped (each ends with a 503 and runs its
        // completion hooks); then the completion work still running is waited for.
        tracker.abort();
        if !tracker.wait_idle(completion_grace).await {
            tracing::warn!(
                pending = tracker.active(),
                "completion grace period over; exiting with completion work unfinished"
            );
        }
        result
    }
}

/// Resolves on Ctrl-C, or SIGTERM on Unix. Call it (within the runtime) before announcing
/// that the server is ready: the SIGTERM handler is installed by the call.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // The SIGTERM handler is installed now, not when the future is first polled: a signal
    // that arrives in between (the ready line is printed before the server polls anything)
    // would otherwise kill the process.
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let terminate = async move {
            match terminate {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {}
            () = terminate => {}
        }
    }
}

/// Binds `addr`, for callers that want the port before serving (`127.0.0.1:0`).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
