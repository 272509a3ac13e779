//! [`Ctx`]: what a middleware knows about the request it is handling, and the policies it
//! sets for the attempts (route, fallbacks, retries, timeouts, upstream headers).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Extensions, HeaderMap};
use sllmp_core::{Operation, ProviderRegistry, Request, Route, Usage};

use crate::policy::{RetryPolicy, Timeouts};

/// Prices a request's usage: what [`Ctx::cost_nanos`] asks. The limits middleware sets
/// one (from its price table) so that every completion hook sees the same cost.
pub trait Pricer: Send + Sync + 'static {
    /// The cost of `usage` at `route`, in nano-USD (1e-9 USD); `None` when the price is not
    /// known.
    fn cost_nanos(&self, route: &Route, usage: &Usage) -> Option<u64>;
}

/// The per-request context every hook receives.
///
/// It carries the request id, the operation and what the client asked for (model, stream,
/// stream usage), the client's headers, the providers the request may use, where the request
/// goes (a [`Route`], its fallbacks), how attempts are retried and bounded
/// ([`RetryPolicy`], [`Timeouts`]), the attempt number, timings, the usage once known, and
/// typed [`Extensions`] through which middleware share data (a type is the key, as in
/// axum's request extensions; no string-keyed maps).
pub struct Ctx {
    request_id: String,
    operation: Operation,
    requested_model: String,
    stream: bool,
    stream_usage: bool,
    headers: HeaderMap,
    /// Boxed when set: most requests add none, and the context is moved a few times.
    upstream_headers: Option<Box<HeaderMap>>,
    pub(crate) response_headers: Option<Box<HeaderMap>>,
    providers: Arc<ProviderRegistry>,
    feature: Option<String>,
    extensions: Extensions,
    route: Option<Route>,
    /// `None` rather than an empty `Arc`: most requests have none, and an empty `Arc` is
    /// still an allocation.
    fallbacks: Option<Arc<[Route]>>,
    retry: RetryPolicy,
    timeouts: Timeouts,
    record_stream: bool,
    pub(crate) recorded: Vec<Bytes>,
    pricer: Option<Arc<dyn Pricer>>,
    pub(crate) attempt: u32,
    pub(crate) target: Option<Route>,
    pub(crate) fallback_index: usize,
    started_at: Instant,
    pub(crate) first_chunk_at: Option<Instant>,
    pub(crate) provider_time: Duration,
    pub(crate) usage: Option<Usage>,
    pub(crate) usage_estimated: bool,
    pub(crate) short_circuited: bool,
}

impl Ctx {
    /// A context for `request` as the client sent it, answered through `providers`.
    pub fn new(
        request_id: impl Into<String>,
        request: &Request,
        providers: Arc<ProviderRegistry>,
    ) -> Ctx {
        Ctx {
            request_id: request_id.into(),
            operation: request.operation(),
            requested_model: request.model().to_string(),
            stream: request.is_stream(),
            stream_usage: request.wants_stream_usage(),
            headers: HeaderMap::new(),
            upstream_headers: None,
            response_headers: None,
            providers,
            feature: None,
            extensions: Extensions::new(),
            route: None,
            fallbacks: None,
            retry: RetryPolicy::none(),
            timeouts: Timeouts::default(),
            record_stream: false,
            recorded: Vec::new(),
            pricer: None,
            attempt: 0,
            target: None,
            fallback_index: 0,
            started_at: Instant::now(),
            first_chunk_at: None,
            provider_time: Duration::ZERO,
            usage: None,
            usage_estimated: false,
            short_circuited: false,
        }
    }

    /// An empty context, left behind when a driver hands its context to another task.
    pub(crate) fn detached() -> Ctx {
        static NO_PROVIDERS: std::sync::LazyLock<Arc<ProviderRegistry>> =
            std::sync::LazyLock::new(Arc::default);
        static NO_REQUEST: std::sync::LazyLock<Request> =
            std::sync::LazyLock::new(|| Request::from(sllmp_core::ChatRequest::default()));
        Ctx::new(String::new(), &NO_REQUEST, Arc::clone(&NO_PROVIDERS))
    }

    /// Attaches the client's HTTP request headers.
    pub fn with_headers(mut self, headers: HeaderMap) -> Ctx {
        self.headers = headers;
        self
    }

    /// The request id (the client's `x-request-id`, or one the server generated).
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The operation (chat, embeddings).
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The model the client asked for, before any middleware rewrote or re-routed it.
    pub fn requested_model(&self) -> &str {
        &self.requested_model
    }

    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// Whether the client asked for the usage chunk of a stream
    /// (`stream_options.include_usage`).
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_usage
    }

    /// The client's HTTP request headers. They may hold client keys: never log them whole.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Headers added to every provider call of this request (W3C `traceparent`, an alias's
    /// own headers).
    pub fn upstream_headers(&self) -> &HeaderMap {
        static NONE: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);
        self.upstream_headers.as_deref().unwrap_or(&NONE)
    }

    /// The headers added to provider calls, mutably. Set in `on_request` for every
    /// attempt, or in `on_attempt` for this one and the next.
    pub fn upstream_headers_mut(&mut self) -> &mut HeaderMap {
        self.upstream_headers.get_or_insert_default()
    }

    /// Headers for the client's response, success or error (`x-ratelimit-*`, a cache's
    /// `x-sllmp-cache`). Set them before the answer leaves: in `on_request`, `on_attempt`,
    /// `on_response` or `on_error`, not in `on_complete`.
    pub fn response_headers_mut(&mut self) -> &mut HeaderMap {
        self.response_headers.get_or_insert_default()
    }

    /// The providers this request may be sent to.
    pub fn providers(&self) -> &Arc<ProviderRegistry> {
        &self.providers
    }

    /// Replaces the providers this request may be sent to (a feature's own aliases and keys).
    pub fn set_providers(&mut self, providers: Arc<ProviderRegistry>) {
        self.providers = providers;
    }

    /// The configured feature this request belongs to, once a middleware decided it.
    pub fn feature(&self) -> Option<&str> {
        self.feature.as_deref()
    }

    /// Records the feature this request belongs to.
    pub fn set_feature(&mut self, feature: impl Into<String>) {
        self.feature = Some(feature.into());
    }

    /// Typed data shared between middleware.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Typed data shared between middleware, mutably.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The route chosen for the request in place of its model string, if a middleware
    /// chose one.
    pub fn route(&self) -> Option<&Route> {
        self.route.as_ref()
    }

    /// Sends the request's attempts to `route` instead of the model the request names (the
    /// request itself is not touched, so the client's bytes are still forwarded). Set in
    /// `on_request`, or in `on_attempt` to re-target this attempt and the next ones.
    /// Fallbacks, once they start, go to their own routes.
    pub fn set_route(&mut self, route: Route) {
        self.route = Some(route);
    }

    /// The routes tried, in order, when the request's own target fails.
    pub fn fallbacks(&self) -> &[Route] {
        self.fallbacks.as_deref().unwrap_or(&[])
    }

    /// Sets the fallbacks: when a target's attempts end in a retryable error (after its
    /// retries), the next route is tried, as long as nothing reached the client.
    pub fn set_fallbacks(&mut self, fallbacks: impl Into<Arc<[Route]>>) {
        let fallbacks = fallbacks.into();
        self.fallbacks = (!fallbacks.is_empty()).then_some(fallbacks);
    }

    /// How failed attempts are retried (by default: not at all).
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Sets how failed attempts are retried, for each target.
    pub fn set_retry_policy(&mut self, retry: RetryPolicy) {
        self.retry = retry;
    }

    /// The time limits of each attempt.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Sets the time limits of each attempt.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// Asks the pipeline to keep the chunks of a stream as they were sent (each chunk's
    /// JSON, the usage chunk included), for [`Ctx::recorded_stream`] at completion: what a
    /// cache stores. Off by default: it holds the whole answer in memory while it streams.
    pub fn record_stream(&mut self) {
        self.record_stream = true;
    }

    pub(crate) fn records_stream(&self) -> bool {
        self.record_stream
    }

    /// The chunks of the stream, as JSON, when [`Ctx::record_stream`] was asked for and the
    /// answer was streamed (replay them with [`Flow::Replay`](crate::Flow::Replay)).
    pub fn recorded_stream(&self) -> &[Bytes] {
        &self.recorded
    }

    /// The current attempt, from 1, counting every target; 0 before the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Where the current (or last) attempt went.
    pub fn target(&self) -> Option<&Route> {
        self.target.as_ref()
    }

    /// Which fallback the current attempt goes to: 0 for the request's own target, 1 for
    /// the first fallback, and so on.
    pub fn fallback_index(&self) -> usize {
        self.fallback_index
    }

    /// Whether a middleware answered without calling a provider ([`Flow::Respond`](crate::Flow::Respond)
    /// or [`Flow::Replay`](crate::Flow::Replay)).
    pub fn is_short_circuited(&self) -> bool {
        self.short_circuited
    }

    /// When the pipeline started.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// Time since the pipeline started.
    pub fn elapsed(&self) -> Duration {
        self.started_at.elapsed()
    }

    /// Time from the start to the first streamed chunk, for streams that produced one.
    pub fn time_to_first_chunk(&self) -> Option<Duration> {
        self.first_chunk_at.map(|at| at - self.started_at)
    }

    /// Time spent waiting on providers: every attempt's call, and for a stream the reads
    /// of its chunks. `elapsed() - provider_time()` is the proxy's own share.
    pub fn provider_time(&self) -> Duration {
        self.provider_time
    }

    /// The token usage, once the provider reported it (or, for a stream that ended without
    /// reporting it or a request the client left, an estimate: see
    /// [`Ctx::usage_is_estimated`]). Set before `on_response` and `on_complete` run.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Whether [`Ctx::usage`] is an estimate rather than the provider's report.
    pub fn usage_is_estimated(&self) -> bool {
        self.usage_estimated
    }

    /// Sets how [`Ctx::cost_nanos`] prices the usage.
    pub fn set_pricer(&mut self, pricer: Arc<dyn Pricer>) {
        self.pricer = Some(pricer);
    }

    /// What the request cost, in nano-USD (1e-9 USD): 0 when a middleware answered it and
    /// no provider was called; the usage priced at the target otherwise. `None` without a
    /// [`Pricer`], without usage, or when the price is unknown.
    pub fn cost_nanos(&self) -> Option<u64> {
        if self.short_circuited && self.attempt == 0 {
            return Some(0);
        }
        let (route, usage) = (self.target.as_ref()?, self.usage.as_ref()?);
        self.pricer.as_ref()?.cost_nanos(route, usage)
    }
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Headers are left out on purpose: they may carry client keys.
        f.debug_struct("Ctx")
            .field("request_id", &self.request_id)
            .field("operation", &self.operation)
            .field("model", &self.requested_model)
            .field("stream", &self.is_stream())
            .field("feature", &self.feature)
            .field("attempt", &self.attempt)
            .field("target", &self.target)
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}
