//! A scriptable mock of OpenAI's chat-completions API, served over real HTTP.
//!
//! [`MockUpstream`] is what SLLMP's integration tests put behind the proxy as
//! its upstream, and what the benchmark harness runs (as the
//! `sllmp-mock-upstream` binary) as a fast, predictable upstream.
//!
//! It serves `POST /v1/chat/completions` and `POST /v1/embeddings` (also
//! without the `/v1` prefix) plus `GET /health`. Each request to either is
//! answered by the next scripted [`Reply`] if one was
//! [enqueued](MockUpstream::enqueue) (one queue for both), and otherwise by a
//! default behaviour. Embeddings get one deterministic vector per input
//! (`dimensions` long, 8 by default; equal inputs, equal vectors). Chat
//! completions speak OpenAI's exact wire format (JSON or SSE, see below) and
//! can be steered per request with an optional `"mock"` object in the request
//! body:
//!
//! ```json
//! {"mock": {"latency_ms": 50, "chunks": 5, "chunk_interval_ms": 10,
//!           "status": 429, "fail_after_chunks": 2, "content": "hi"}}
//! ```
//!
//! | field | effect |
//! | --- | --- |
//! | `latency_ms` | sleep before the response headers (JSON) or the first chunk (SSE) |
//! | `chunks` | number of content chunks a streamed reply is split into (default 5) |
//! | `chunk_interval_ms` | pause between two content chunks |
//! | `status` | answer this status (≠ 200) with OpenAI's error body; 429 adds `retry-after: 1` |
//! | `fail_after_chunks` | after that many content chunks, send an error event and end the stream without `[DONE]` |
//! | `content` | the assistant's reply; default `"Mock reply to: <last user message>"` |
//!
//! Token usage is deterministic: `prompt_tokens` is the total number of
//! characters of the messages' text divided by 4 (rounded up) plus 3 per
//! message, and `completion_tokens` is the reply's characters divided by 4
//! (rounded up).
//!
//! # Example
//!
//! ```no_run
//! use sllmp_test_support::{Frame, MockUpstream, Reply};
//!
//! # async fn demo() {
//! let mock = MockUpstream::start().await;
//! // Point the proxy's `api_base` at `mock.base_url()`.
//!
//! // The first request gets a 429, the second a hand-written stream, and every
//! // later one the default OpenAI-shaped answer.
//! mock.enqueue(Reply::error(429, "requests", "slow down").with_header("retry-after", "1"));
//! mock.enqueue(Reply::Sse {
//!     frames: vec![
//!         Frame::raw("data: {\"choices\":[{\"index\":0,\"del"),
//!         Frame::raw("ta\":{\"content\":\"hi\"}}]}\n\n"),
//!         Frame::done(),
//!     ],
//! });
//!
//! // ... drive the proxy ...
//!
//! let seen = mock.requests();
//! assert_eq!(seen[0].header("authorization"), Some("Bearer upstream-key"));
//! # }
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod embeddings;
mod log_capture;
mod openai;
mod server;
mod silent;
mod sse;

pub use log_capture::LogCapture;
pub use silent::SilentListener;

use server::Shared;

/// Listen backlog of the mock's socket: large enough for a benchmark that
/// opens a thousand connections at once.
const LISTEN_BACKLOG: u32 = 4096;

/// Settings for [`MockUpstream::start_with`].
///
/// The default records every request, which is what tests want. Benchmarks
/// turn recording off so that memory does not grow with the number of
/// requests served.
#[derive(Debug, Clone)]
pub struct MockOptions {
    record_requests: bool,
}

impl Default for MockOptions {
    fn default() -> MockOptions {
        MockOptions {
            record_requests: true,
        }
    }
}

impl MockOptions {
    /// The default options: requests are recorded.
    pub fn new() -> MockOptions {
        MockOptions::default()
    }

    /// Whether chat-completions requests are kept for [`MockUpstream::requests`].
    /// When off, `requests()` always returns an empty list.
    pub fn record_requests(mut self, record: bool) -> MockOptions {
        self.record_requests = record;
        self
    }
}

/// A running mock OpenAI upstream.
///
/// The server runs in a spawned tokio task; dropping the `MockUpstream` stops
/// it: the listener closes, idle connections are closed, and requests still
/// in flight (hanging replies, streams) are cut off.
#[derive(Debug)]
pub struct MockUpstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MockUpstream {
    /// Binds `127.0.0.1:0` (a free port) and serves in a spawned tokio task.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound, or when called outside a tokio runtime.
    pub async fn start() -> MockUpstream {
        MockUpstream::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("mock upstream: cannot bind 127.0.0.1:0")
    }

    /// Binds `addr` and serves in a spawned tokio task, recording requests.
    pub async fn start_on(addr: SocketAddr) -> io::Result<MockUpstream> {
        MockUpstream::start_with(addr, MockOptions::default()).await
    }

    /// Binds `addr` and serves in a spawned tokio task with the given options
    /// (e.g. without recording, as the benchmark binary does).
    pub async fn start_with(addr: SocketAddr, options: MockOptions) -> io::Result<MockUpstream> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(options.record_requests, shutdown_rx.clone()));
        let app = server::router(Arc::clone(&shared));

        // Small SSE frames must not wait for Nagle's algorithm.
        let listener = listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        let mut signal = shutdown_rx;
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            // Resolves on `true` and also if the sender is gone.
            let _ = signal.wait_for(|&down| down).await;
        });
        let task = tokio::spawn(async move {
            // `serve` only returns errors from the listener setup, which
            // already succeeded; nothing useful can be done with one here.
            let _ = serve.await;
        });

        Ok(MockUpstream {
            shared,
            addr,
            shutdown,
            task,
        })
    }

    /// The address the mock is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-style base URL, `http://127.0.0.1:PORT/v1`: what a proxy's
    /// `api_base` points at.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues a scripted reply. Replies are used first in, first out, one per
    /// chat-completions or embeddings request; when the queue is empty the
    /// default behaviour answers.
    pub fn enqueue(&self, reply: Reply) {
        self.shared.enqueue(reply);
    }

    /// Every chat-completions and embeddings request received so far, in order
    /// of arrival.
    /// Always empty when recording was turned off with [`MockOptions`].
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded()
    }

    /// Number of SSE responses whose body was dropped (the client went away,
    /// or the mock was shut down) before its last frame was written.
    pub fn streams_cancelled(&self) -> usize {
        self.shared.cancelled.load(Ordering::Acquire)
    }

    /// Waits, at most `timeout`, until [`streams_cancelled`](Self::streams_cancelled)
    /// reaches `n`. Returns whether it did.
    pub async fn wait_streams_cancelled(&self, n: usize, timeout: Duration) -> bool {
        let shared = &self.shared;
        let reached = async {
            loop {
                // Register interest before checking, so that an increment
                // between the check and the wait is not missed.
                let notified = shared.cancelled_changed.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if shared.cancelled.load(Ordering::Acquire) >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, reached).await.is_ok()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // Wakes hanging handlers and sleeping streams, and makes every open
        // connection shut down; then stop accepting.
        self.shutdown.send_replace(true);
        self.task.abort();
    }
}

/// Binds a listening socket with a large backlog.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Lets the benchmark binary restart on the same port right away.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A chat-completions or embeddings request as the mock received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// When its body had been read.
    pub received_at: std::time::Instant,
    /// The HTTP method, e.g. `"POST"`.
    pub method: String,
    /// The request path, without the query string, e.g. `"/v1/chat/completions"`.
    pub path: String,
    /// The request headers in arrival order, names in lowercase. Values that
    /// are not UTF-8 are converted lossily.
    pub headers: Vec<(String, String)>,
    /// The request body parsed as JSON; `Null` for an empty body and a JSON
    /// string holding the raw text if the body is not valid JSON.
    pub body: Value,
    /// The request body as it arrived (converted lossily if not UTF-8).
    pub raw_body: String,
}

impl Recorded {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted answer to one chat-completions request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Any status with a JSON body and extra headers (e.g. `retry-after`).
    /// `content-type: application/json` is set unless `headers` sets one.
    Json {
        /// The HTTP status code.
        status: u16,
        /// The response body.
        body: Value,
        /// Extra response headers, `(name, value)`.
        headers: Vec<(String, String)>,
    },
    /// A `200 text/event-stream` response whose raw frames are written as
    /// given, each after its delay; frames need not be whole SSE events, so
    /// tests can split events at arbitrary boundaries.
    Sse {
        /// The body, piece by piece.
        frames: Vec<Frame>,
    },
    /// Accepts the request and never answers (for timeout tests).
    Hang,
    /// A `200` with this `content-type` whose body is written piece by piece
    /// (chunked, no `content-length`), each piece after its delay: a JSON
    /// answer whose size is not declared, or an event stream with any
    /// content type.
    Chunked {
        /// The `content-type` header.
        content_type: String,
        /// The body, piece by piece.
        frames: Vec<Frame>,
    },
    /// A `200` whose body is these exact bytes, with this `content-type` (for tests of what
    /// the proxy does with the upstream's own formatting).
    Raw {
        /// The `content-type` header.
        content_type: String,
        /// The body, byte for byte.
        body: String,
    },
}

impl Reply {
    /// A `200` JSON reply with `body`.
    pub fn json(body: Value) -> Reply {
        Reply::Json {
            status: 200,
            body,
            headers: Vec::new(),
        }
    }

    /// A JSON reply with any status.
    pub fn json_status(status: u16, body: Value) -> Reply {
        Reply::Json {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// An error reply with OpenAI's error body,
    /// `{"error":{"message":..,"type":..,"param":null,"code":null}}`.
    pub fn error(status: u16, type_: &str, message: &str) -> Reply {
        Reply::json_status(status, error_body(type_, message, None))
    }

    /// A `200 text/event-stream` reply made of `frames`.
    pub fn sse(frames: Vec<Frame>) -> Reply {
        Reply::Sse { frames }
    }

    /// Adds a response header to a [`Reply::Json`].
    ///
    /// # Panics
    ///
    /// On any other variant, which has no headers to add to.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Reply {
        match &mut self {
            Reply::Json { headers, .. } => headers.push((name.into(), value.into())),
            other => panic!("Reply::with_header only applies to Reply::Json, not {other:?}"),
        }
        self
    }
}

/// OpenAI's error body: `{"error":{"message":..,"type":..,"param":null,"code":..}}`.
pub fn error_body(type_: &str, message: &str, code: Option<&str>) -> Value {
    serde_json::json!({
        "error": {
            "message": message,
            "type": type_,
            "param": null,
            "code": code,
        }
    })
}

/// One piece of a scripted [`Reply::Sse`] body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// How long to wait before writing this piece.
    pub delay: Duration,
    /// The bytes to write, verbatim.
    pub raw: String,
}

impl Frame {
    /// A piece written as is, without delay.
    pub fn raw(raw: impl Into<String>) -> Frame {
        Frame {
            delay: Duration::ZERO,
            raw: raw.into(),
        }
    }

    /// A whole SSE data event: `data: <compact json>\n\n`.
    pub fn data(json: Value) -> Frame {
        Frame::raw(format!("data: {json}\n\n"))
    }

    /// The stream terminator, `data: [DONE]\n\n`.
    pub fn done() -> Frame {
        Frame::raw("data: [DONE]\n\n")
    }

    /// The same frame, written after `delay`.
    pub fn after(mut self, delay: Duration) -> Frame {
        self.delay = delay;
        self
    }
}
