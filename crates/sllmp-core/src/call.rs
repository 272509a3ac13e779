//! [`Call`]: what a provider is told about one attempt besides the request.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::Route;

/// The context of one provider call: where it goes, which request it serves, how long it may
/// take, and the headers to add upstream.
///
/// The pipeline builds one per attempt. A provider sends `headers` with its request (W3C
/// `traceparent`, an alias's own headers), connects within `connect_timeout`, expects the
/// response head (a non-streamed answer) or the first chunk (a stream) within `first_token`,
/// and ends the whole exchange by `deadline`. The pipeline enforces the first chunk, the
/// silences between chunks and the deadline itself; a provider uses the values for what only
/// it can see (connecting, the response head).
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The provider and model of this attempt.
    pub route: &'a Route,
    /// The request id, for the provider's own logs and headers.
    pub request_id: &'a str,
    /// When the attempt must be over, stream included.
    pub deadline: Option<Instant>,
    /// The longest wait for the first token: the response head of a non-streamed answer,
    /// the first chunk of a stream, and the longest silence between two chunks.
    pub first_token: Option<Duration>,
    /// The longest wait for a new connection.
    pub connect_timeout: Option<Duration>,
    /// Headers to add to the upstream request.
    pub headers: &'a HeaderMap,
    /// The client's request headers, for providers that pass some on (`anthropic-beta`).
    /// They may hold the client's key: never forward them whole.
    pub client_headers: &'a HeaderMap,
}

static NO_HEADERS: LazyLock<HeaderMap> = LazyLock::new(HeaderMap::new);

impl<'a> Call<'a> {
    /// A call to `route` with no limits and no extra headers (tests, direct callers).
    pub fn new(route: &'a Route, request_id: &'a str) -> Call<'a> {
        Call {
            route,
            request_id,
            deadline: None,
            first_token: None,
            connect_timeout: None,
            headers: &NO_HEADERS,
            client_headers: &NO_HEADERS,
        }
    }

    /// How long the response head may take: the first-token limit, or what is left before
    /// the deadline if that is sooner. `None` when neither is set.
    pub fn head_timeout(&self) -> Option<Duration> {
        self.limits().0
    }

    /// [`Call::head_timeout`] and [`Call::remaining`] from one clock read.
    pub fn limits(&self) -> (Option<Duration>, Option<Duration>) {
        let left = self.remaining();
        let head = match (self.first_token, left) {
            (Some(first), Some(left)) => Some(first.min(left)),
            (first, left) => first.or(left),
        };
        (head, left)
    }

    /// What is left before the deadline, if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }
}
