//! Streaming `text/event-stream` bodies: pre-built frames written one by one,
//! each after its delay, with cancellation counting.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::server::{Shared, sleep_unless_shutdown};

/// A `200 text/event-stream` response writing `frames` in order, each after
/// its delay.
///
/// If the body is dropped before the last frame was handed to hyper (the
/// client disconnected, or the mock shut down), the mock's
/// `streams_cancelled` counter grows by one.
pub(crate) fn response(shared: &Arc<Shared>, frames: Vec<(Duration, Bytes)>) -> Response {
    let state = StreamState {
        guard: CancelGuard {
            shared: Arc::clone(shared),
            finished: frames.is_empty(),
        },
        frames: frames.into_iter(),
        shutdown: shared.shutdown_signal(),
    };
    let body = futures_util::stream::unfold(state, |mut state| async move {
        let (delay, frame) = state.frames.next()?;
        if !delay.is_zero() && !sleep_unless_shutdown(&mut state.shutdown, delay).await {
            // Shutting down: fail the body so hyper drops the connection, and
            // end the stream after that.
            state.frames = Vec::new().into_iter();
            return Some((Err(io::Error::other("mock upstream shut down")), state));
        }
        if state.frames.as_slice().is_empty() {
            state.guard.finished = true;
        }
        Some((Ok(frame), state))
    });
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Everything a streaming body owns; dropped together with the body.
struct StreamState {
    frames: std::vec::IntoIter<(Duration, Bytes)>,
    shutdown: watch::Receiver<bool>,
    guard: CancelGuard,
}

/// Counts the stream as cancelled if dropped before its last frame went out.
struct CancelGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.stream_cancelled();
        }
    }
}
