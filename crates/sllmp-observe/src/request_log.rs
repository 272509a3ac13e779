//! [`RequestLog`]: one `tracing` event per request.

use sllmp_pipeline::{Ctx, HookSet, Middleware, Outcome};
use tracing::Level;

/// Logs one `tracing` event per request, at completion, on the `sllmp::request` target:
/// request id, feature, requested model, provider and provider model, stream or not, outcome,
/// status, error type, attempts, token usage (flagged when estimated), latency and time to
/// first chunk. Never the messages, never a header, never a key.
///
/// Requests that failed with a 5xx (provider or internal failures) log at `warn`; the rest,
/// client errors and cancellations included, at `info`.
///
/// The event is emitted from `on_complete`, which runs after the answer is out, in a task of
/// its own; the subscriber formats it there (the `sllmp` binary's [`LineFormat`](crate::LineFormat)
/// and [`BatchWriter`](crate::BatchWriter) keep that to about 6 k instructions and no system
/// call). Deferring the formatting to a thread of its own was measured and made things worse
/// (see docs/benchmarks.md).
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestLog;

impl RequestLog {
    /// The request log middleware.
    pub fn new() -> RequestLog {
        RequestLog
    }
}

#[async_trait::async_trait]
impl Middleware for RequestLog {
    fn name(&self) -> &'static str {
        "logging"
    }

    fn hooks(&self) -> HookSet {
        HookSet::COMPLETE
    }

    async fn on_complete(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) {
        let (status, error_type, error) = match outcome {
            Outcome::Success(_) => (200, "", ""),
            Outcome::Failed(err) => (err.status(), err.error_type(), err.message()),
            Outcome::Cancelled => (499, "", ""),
        };
        let target = ctx.target();
        let usage = ctx.usage();
        let ttft_ms = ctx
            .time_to_first_chunk()
            .map_or(-1.0, |d| d.as_secs_f64() * 1000.0);
        macro_rules! log_at {
            ($level:expr) => {
                tracing::event!(
                    target: "sllmp::request",
                    $level,
                    request_id = ctx.request_id(),
                    feature = ctx.feature().unwrap_or(""),
                    model = ctx.requested_model(),
                    provider = target.map_or("", |t| t.provider.as_str()),
                    provider_model = target.map_or("", |t| t.model.as_str()),
                    stream = ctx.is_stream(),
                    outcome = outcome.as_str(),
                    status,
                    error_type,
                    error,
                    attempts = ctx.attempt(),
                    prompt_tokens = usage.map_or(0, |u| u.prompt_tokens),
                    completion_tokens = usage.map_or(0, |u| u.completion_tokens),
                    usage_estimated = ctx.usage_is_estimated(),
                    latency_ms = ctx.elapsed().as_secs_f64() * 1000.0,
                    ttft_ms,
                    "request completed"
                )
            };
        }
        if status >= 500 {
            log_at!(Level::WARN);
        } else {
            log_at!(Level::INFO);
        }
    }
}
