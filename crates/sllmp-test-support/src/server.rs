//! The HTTP side: shared state, routes, scripted replies and small response
//! helpers used by the default behaviour too.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use axum::http::{Method, StatusCode, Uri, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::{Recorded, Reply, embeddings, openai, sse};

/// Largest request body accepted; far above anything a test sends.
const MAX_BODY_BYTES: usize = 64 << 20;

/// State shared by the [`MockUpstream`](crate::MockUpstream) handle and the
/// request handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Whether requests are kept in `script.recorded`.
    record: bool,
    /// Scripted replies and recorded requests.
    script: Mutex<Script>,
    /// `script.replies.len()`, readable without the lock so that the
    /// benchmark's hot path (no recording, no script) never takes it.
    queued: AtomicUsize,
    /// Counter behind the `chatcmpl-mock-<n>` ids.
    next_id: AtomicU64,
    /// SSE bodies dropped before their last frame.
    pub(crate) cancelled: AtomicUsize,
    /// Notified whenever `cancelled` grows.
    pub(crate) cancelled_changed: Notify,
    /// Becomes `true` (or closed) when the mock shuts down.
    shutdown: watch::Receiver<bool>,
}

/// The script queue and the recorded requests, behind one short-held mutex.
#[derive(Debug, Default)]
struct Script {
    replies: VecDeque<Reply>,
    recorded: Vec<Recorded>,
}

impl Shared {
    pub(crate) fn new(record: bool, shutdown: watch::Receiver<bool>) -> Shared {
        Shared {
            record,
            script: Mutex::default(),
            queued: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            cancelled: AtomicUsize::new(0),
            cancelled_changed: Notify::new(),
            shutdown,
        }
    }

    /// The script, even if a panicking thread poisoned the lock (the data is
    /// still consistent: every critical section is a single push or pop).
    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn enqueue(&self, reply: Reply) {
        let mut script = self.script();
        script.replies.push_back(reply);
        self.queued.store(script.replies.len(), Ordering::Release);
    }

    pub(crate) fn recorded(&self) -> Vec<Recorded> {
        self.script().recorded.clone()
    }

    /// Records the request (if recording) and takes the next scripted reply,
    /// in one critical section so both stay in the same order.
    fn record_and_take(&self, parts: &Parts, body: &Bytes) -> Option<Reply> {
        if !self.record && self.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        // Build the record before taking the lock.
        let recorded = self.record.then(|| record(parts, body));
        let mut script = self.script();
        if let Some(recorded) = recorded {
            script.recorded.push(recorded);
        }
        let reply = script.replies.pop_front();
        self.queued.store(script.replies.len(), Ordering::Release);
        reply
    }

    /// A fresh completion id, `chatcmpl-mock-<n>`.
    pub(crate) fn next_completion_id(&self) -> String {
        format!(
            "chatcmpl-mock-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Counts one cancelled stream and wakes `wait_streams_cancelled`.
    pub(crate) fn stream_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::AcqRel);
        self.cancelled_changed.notify_waiters();
    }

    /// A receiver for the shutdown signal (see [`sleep_unless_shutdown`]).
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Sleeps for `delay` unless the mock shuts down first; returns whether
    /// the whole delay elapsed. A zero delay returns at once.
    pub(crate) async fn sleep(&self, delay: Duration) -> bool {
        if delay.is_zero() {
            return true;
        }
        sleep_unless_shutdown(&mut self.shutdown_signal(), delay).await
    }
}

/// Sleeps for `delay` unless `shutdown` fires first; returns whether the whole
/// delay elapsed.
pub(crate) async fn sleep_unless_shutdown(
    shutdown: &mut watch::Receiver<bool>,
    delay: Duration,
) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        // An error means the sender is gone, which is a shutdown as well.
        _ = shutdown.wait_for(|&down| down) => false,
    }
}

/// Turns a request's head and body into a [`Recorded`].
fn record(parts: &Parts, body: &Bytes) -> Recorded {
    let raw_body = String::from_utf8_lossy(body).into_owned();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    };
    Recorded {
        received_at: std::time::Instant::now(),
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        raw_body,
    }
}

/// The mock's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings_route))
        .route("/embeddings", post(embeddings_route))
        .route("/health", get(|| async { "ok" }))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(shared)
}

/// `POST /v1/chat/completions`: the next scripted reply, or the default
/// behaviour.
async fn chat_completions(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = match read(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    match shared.record_and_take(&parts, &body) {
        Some(reply) => scripted(&shared, reply).await,
        None => openai::default_reply(&shared, &body).await,
    }
}

/// `POST /v1/embeddings`: the next scripted reply (the queue is shared with chat
/// completions), or deterministic vectors.
async fn embeddings_route(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = match read(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    match shared.record_and_take(&parts, &body) {
        Some(reply) => scripted(&shared, reply).await,
        None => embeddings::default_reply(&body),
    }
}

/// The request's head and whole body; a body that cannot be read is a 400.
async fn read(request: Request) -> Result<(Parts, Bytes), Response> {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => Ok((parts, body)),
        Err(err) => Err(error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("cannot read request body: {err}"),
            None,
        )),
    }
}

/// Serves a scripted [`Reply`].
async fn scripted(shared: &Arc<Shared>, reply: Reply) -> Response {
    match reply {
        Reply::Json {
            status,
            body,
            headers,
        } => scripted_json(status, &body, headers),
        Reply::Sse { frames } => sse::response(
            shared,
            frames
                .into_iter()
                .map(|frame| (frame.delay, Bytes::from(frame.raw)))
                .collect(),
        ),
        Reply::Chunked {
            content_type,
            frames,
        } => match HeaderValue::try_from(content_type.as_str()) {
            Ok(content_type) => {
                let mut response = sse::response(
                    shared,
                    frames
                        .into_iter()
                        .map(|frame| (frame.delay, Bytes::from(frame.raw)))
                        .collect(),
                );
                response.headers_mut().insert(CONTENT_TYPE, content_type);
                response
                    .headers_mut()
                    .remove(axum::http::header::CACHE_CONTROL);
                response
            }
            Err(_) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &format!("invalid scripted reply: content-type {content_type}"),
                None,
            ),
        },
        Reply::Hang => {
            let _ = shared.shutdown_signal().wait_for(|&down| down).await;
            broken_response()
        }
        Reply::Raw { content_type, body } => match HeaderValue::try_from(content_type.as_str()) {
            Ok(content_type) => {
                let mut response = Response::new(Body::from(body));
                response.headers_mut().insert(CONTENT_TYPE, content_type);
                response
            }
            Err(_) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &format!("invalid scripted reply: content-type {content_type}"),
                None,
            ),
        },
    }
}

/// Builds a [`Reply::Json`] response; a malformed script (bad status or
/// header) is reported as a 500 rather than a panic in the server.
fn scripted_json(status: u16, body: &Value, headers: Vec<(String, String)>) -> Response {
    let invalid = |what: String| {
        error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &format!("invalid scripted reply: {what}"),
            None,
        )
    };
    let Ok(status) = StatusCode::from_u16(status) else {
        return invalid(format!("status {status}"));
    };
    let mut response = json_response(status, body);
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            return invalid(format!("header {name}: {value}"));
        };
        // A scripted content-type replaces the default; others add up.
        if name == CONTENT_TYPE {
            response.headers_mut().insert(name, value);
        } else {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Any unknown route or method: 404 with OpenAI's error body.
async fn not_found(method: Method, uri: Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        &format!("Invalid URL ({method} {})", uri.path()),
        None,
    )
}

/// A JSON response with `content-type: application/json`.
pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            bytes,
        )
            .into_response(),
        // Only possible with non-string map keys, which the mock never builds.
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// OpenAI's error body, borrowed, for serializing without building a `Value`.
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: (),
    code: Option<&'a str>,
}

impl<'a> ErrorBody<'a> {
    pub(crate) fn new(kind: &'a str, message: &'a str, code: Option<&'a str>) -> ErrorBody<'a> {
        ErrorBody {
            error: ErrorDetail {
                message,
                kind,
                param: (),
                code,
            },
        }
    }
}

/// A response with OpenAI's error body.
pub(crate) fn error_response(
    status: StatusCode,
    kind: &str,
    message: &str,
    code: Option<&str>,
) -> Response {
    json_response(status, &ErrorBody::new(kind, message, code))
}

/// The error injected by `mock.status`: OpenAI's error type for the status
/// class, plus `retry-after: 1` on a 429.
pub(crate) fn injected_error(status: StatusCode) -> Response {
    let message = format!("mock upstream error {}", status.as_u16());
    if status == StatusCode::TOO_MANY_REQUESTS {
        let mut response =
            error_response(status, "requests", &message, Some("rate_limit_exceeded"));
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    error_response(status, kind, &message, None)
}

/// What an interrupted reply turns into when the mock shuts down: a body that
/// fails at once, so the connection is dropped instead of answered.
pub(crate) fn broken_response() -> Response {
    let failed = futures_util::stream::once(async {
        Err::<Bytes, _>(io::Error::other("mock upstream shut down"))
    });
    (StatusCode::SERVICE_UNAVAILABLE, Body::from_stream(failed)).into_response()
}
