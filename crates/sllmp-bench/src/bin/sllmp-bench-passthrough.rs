//! `sllmp-bench-passthrough`: the floor of SLLMP's HTTP stack, for the benchmark's profile.
//!
//! ```text
//! sllmp-bench-passthrough --upstream http://127.0.0.1:9000 --listen ADDR [--workers N]
//! ```
//!
//! The same axum server (TCP_NODELAY) and the same pooled HTTP client
//! (`sllmp::providers::http_client`) as SLLMP, on the same tokio runtime, but it forwards
//! `POST /v1/chat/completions` bytes to the upstream untouched and streams the answer back:
//! no parsing, no pipeline, no spawned task, no logging. The gap between it and nginx is
//! the cost of the stack SLLMP is built on; the gap between it and sllmp is SLLMP's own.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};

// The same allocator as the `sllmp` binary, so the floor is measured like for like.
#[global_allocator]
static ALLOCATOR: sllmp_alloc::MiMalloc = sllmp_alloc::MiMalloc;
use sllmp::providers::{Endpoint, HttpSettings, http_client};
use sllmp::server::axum::body::{Body, Bytes};
use sllmp::server::axum::extract::State;
use sllmp::server::axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use sllmp::server::axum::response::{IntoResponse, Response};
use sllmp::server::axum::routing::{get, post};
use sllmp::server::axum::serve::ListenerExt;
use sllmp::server::axum::{self, Router};

const USAGE: &str =
    "usage: sllmp-bench-passthrough --upstream http://HOST:PORT --listen ADDR [--workers N]";

struct App {
    upstream: Endpoint,
}

fn main() -> anyhow::Result<()> {
    let mut upstream = None;
    let mut listen: Option<SocketAddr> = None;
    let mut workers = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--upstream" => upstream = args.next(),
            "--listen" => listen = args.next().map(|a| a.parse()).transpose()?,
            "--workers" => workers = args.next().map(|a| a.parse()).transpose()?,
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    let upstream = upstream.context(USAGE)?;
    let listen = listen.context(USAGE)?;
    sllmp::server::runtime(workers)?.block_on(async move {
        let uri: Uri = format!("{}/v1/chat/completions", upstream.trim_end_matches('/')).parse()?;
        let app = Arc::new(App {
            upstream: http_client(&HttpSettings::default()).endpoint(uri)?,
        });
        let router = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/v1/chat/completions", post(forward))
            .with_state(app);
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!(
            "sllmp-bench-passthrough listening on http://{}",
            listener.local_addr()?
        );
        let listener = listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        axum::serve(listener, router.into_make_service()).await?;
        Ok(())
    })
}

async fn forward(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let sent = app.upstream.post(headers, body, None).await;
    match sent {
        Ok(upstream) => {
            let status = upstream.status().as_u16();
            let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
            let mut response = Response::new(Body::from_stream(upstream.into_stream()));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            if let Some(value) = content_type
                && let Ok(value) = HeaderValue::from_bytes(value.as_bytes())
            {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        }
        Err(err) => (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    }
}
