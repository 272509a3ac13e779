//! [`Ctx`]: what a middleware knows about the request it is handling.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Extensions, HeaderMap};
use sllmp_core::{ChatRequest, ProviderRegistry, Usage};

/// The per-request context every hook receives.
///
/// It carries the request id, what the client asked for (model, stream, stream usage), the
/// client's headers, the providers the request may use, the attempt number, timings, the usage once known, and
/// typed [`Extensions`] through which middleware share data (a type is the key, as in
/// axum's request extensions; no string-keyed maps).
pub struct Ctx {
    request_id: String,
    requested_model: String,
    stream: bool,
    stream_usage: bool,
    headers: HeaderMap,
    providers: Arc<ProviderRegistry>,
    feature: Option<String>,
    extensions: Extensions,
    pub(crate) attempt: u32,
    pub(crate) target: Option<TargetInfo>,
    started_at: Instant,
    pub(crate) first_chunk_at: Option<Instant>,
    pub(crate) usage: Option<Usage>,
    pub(crate) usage_estimated: bool,
}

/// The provider and model an attempt went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// The provider name as addressed (`openai`, `my-openai`).
    pub provider: String,
    /// The model as the provider names it (`gpt-4o`).
    pub model: String,
}

impl Ctx {
    /// A context for `request` as the client sent it, answered through `providers`.
    pub fn new(
        request_id: impl Into<String>,
        request: &ChatRequest,
        providers: Arc<ProviderRegistry>,
    ) -> Ctx {
        Ctx {
            request_id: request_id.into(),
            requested_model: request.model.clone(),
            stream: request.is_stream(),
            stream_usage: request.wants_stream_usage(),
            headers: HeaderMap::new(),
            providers,
            feature: None,
            extensions: Extensions::new(),
            attempt: 0,
            target: None,
            started_at: Instant::now(),
            first_chunk_at: None,
            usage: None,
            usage_estimated: false,
        }
    }

    /// An empty context, left behind when a driver hands its context to another task.
    pub(crate) fn detached() -> Ctx {
        static NO_PROVIDERS: std::sync::LazyLock<Arc<ProviderRegistry>> =
            std::sync::LazyLock::new(Arc::default);
        Ctx::new(
            String::new(),
            &ChatRequest::default(),
            Arc::clone(&NO_PROVIDERS),
        )
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

    /// The model the client asked for, before any middleware rewrote it.
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

    /// The current attempt, from 1; 0 before the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Where the current (or last) attempt went.
    pub fn target(&self) -> Option<&TargetInfo> {
        self.target.as_ref()
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

    /// The token usage, once the provider reported it (or, for a stream that ended without
    /// reporting it, an estimate: see [`Ctx::usage_is_estimated`]). Set before
    /// `on_response` and `on_complete` run.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Whether [`Ctx::usage`] is an estimate rather than the provider's report.
    pub fn usage_is_estimated(&self) -> bool {
        self.usage_estimated
    }
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Headers are left out on purpose: they may carry client keys.
        f.debug_struct("Ctx")
            .field("request_id", &self.request_id)
            .field("model", &self.requested_model)
            .field("stream", &self.is_stream())
            .field("feature", &self.feature)
            .field("attempt", &self.attempt)
            .field("target", &self.target)
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}
