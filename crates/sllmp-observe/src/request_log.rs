//! [`RequestLog`]: one `tracing` event per request.

use std::fmt;
use std::sync::OnceLock;
use std::time::SystemTime;

use sllmp_pipeline::{Ctx, HookSet, Middleware, Outcome};
use tracing::Level;

use crate::BatchWriter;
use crate::line_format::{with_line, write_f64, write_quoted, write_timestamp};

/// Logs one `tracing` event per request, at completion, on the `sllmp::request` target:
/// request id, operation (`chat`, `embeddings`), feature, requested model, provider and provider model, stream or not, outcome,
/// status, error type, attempts, token usage (flagged when estimated), cost in USD (from
/// the limits' prices, [`Ctx::cost_nanos`]; `-1.0` when no price is known or no limits are
/// configured), latency and time to first chunk. Never the messages, never a header, never a key.
///
/// Requests that failed with a 5xx (provider or internal failures) log at `warn`; the rest,
/// client errors and cancellations included, at `info`.
///
/// The event is emitted from `on_complete`, which runs after the answer is out, in a task of
/// its own; the subscriber formats it there. Under [`init_logging`](crate::init_logging)'s
/// uncoloured text format (the `sllmp` binary's, logging to a file), the middleware writes
/// the very line [`LineFormat`](crate::LineFormat) would write straight into the same
/// [`BatchWriter`], skipping `tracing`'s field-by-field dispatch (a third of the cost);
/// `RUST_LOG` filters it all the same. Deferring the formatting to a thread of its own was
/// measured and made things worse (see docs/benchmarks.md).
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestLog;

impl RequestLog {
    /// The request log middleware.
    pub fn new() -> RequestLog {
        RequestLog
    }
}

/// The request's `tracing` event.
macro_rules! request_event {
    ($line:expr, $level:expr) => {
        tracing::event!(
            target: "sllmp::request",
            $level,
            request_id = $line.request_id,
            operation = $line.operation,
            feature = $line.feature,
            model = $line.model,
            provider = $line.provider,
            provider_model = $line.provider_model,
            stream = $line.stream,
            outcome = $line.outcome,
            status = $line.status,
            error_type = $line.error_type,
            error = $line.error,
            attempts = $line.attempts,
            prompt_tokens = $line.prompt_tokens,
            completion_tokens = $line.completion_tokens,
            usage_estimated = $line.usage_estimated,
            cost_usd = $line.cost_usd,
            latency_ms = $line.latency_ms,
            ttft_ms = $line.ttft_ms,
            "request completed"
        )
    };
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
        let line = Line::of(ctx, outcome);
        macro_rules! log_at {
            ($level:expr) => {
                match LINES.get() {
                    Some(lines)
                        if tracing::enabled!(target: "sllmp::request", $level)
                            && tracing::Span::current().is_none() =>
                    {
                        line.write_to(lines, $level)
                    }
                    _ => request_event!(line, $level),
                }
            };
        }
        if line.status >= 500 {
            log_at!(Level::WARN);
        } else {
            log_at!(Level::INFO);
        }
    }
}

/// Where [`init_logging`](crate::init_logging)'s uncoloured text format writes, once it is
/// installed: request lines go there directly.
static LINES: OnceLock<BatchWriter> = OnceLock::new();

/// Makes every [`RequestLog`] write its line into `writer` itself, as [`LineFormat`] would
/// write the event (`init_logging` calls it when it installs that format without colours).
///
/// [`LineFormat`]: crate::LineFormat
pub(crate) fn write_lines_to(writer: BatchWriter) {
    let _ = LINES.set(writer);
}

/// The fields of a request's line.
struct Line<'a> {
    request_id: &'a str,
    operation: &'static str,
    feature: &'a str,
    model: &'a str,
    provider: &'a str,
    provider_model: &'a str,
    stream: bool,
    outcome: &'static str,
    status: u16,
    error_type: &'a str,
    error: &'a str,
    attempts: u32,
    prompt_tokens: u64,
    completion_tokens: u64,
    usage_estimated: bool,
    cost_usd: f64,
    latency_ms: f64,
    ttft_ms: f64,
}

impl<'a> Line<'a> {
    fn of(ctx: &'a Ctx, outcome: &'a Outcome<'_>) -> Line<'a> {
        let (status, error_type, error) = match outcome {
            Outcome::Success(_) => (200, "", ""),
            Outcome::Failed(err) => (err.status(), err.error_type(), err.message()),
            Outcome::Cancelled => (499, "", ""),
        };
        let target = ctx.target();
        let usage = ctx.usage();
        Line {
            request_id: ctx.request_id(),
            operation: ctx.operation().as_str(),
            feature: ctx.feature().unwrap_or(""),
            model: ctx.requested_model(),
            provider: target.map_or("", |t| t.provider()),
            provider_model: target.map_or("", |t| t.model()),
            stream: ctx.is_stream(),
            outcome: outcome.as_str(),
            status,
            error_type,
            error,
            attempts: ctx.attempt(),
            prompt_tokens: usage.map_or(0, |u| u.prompt_tokens),
            completion_tokens: usage.map_or(0, |u| u.completion_tokens),
            usage_estimated: ctx.usage_is_estimated(),
            cost_usd: ctx.cost_nanos().map_or(-1.0, |nanos| nanos as f64 / 1e9),
            latency_ms: ctx.elapsed().as_secs_f64() * 1000.0,
            ttft_ms: ctx
                .time_to_first_chunk()
                .map_or(-1.0, |d| d.as_secs_f64() * 1000.0),
        }
    }

    /// Writes the line into `lines`, built in a buffer of this thread's.
    fn write_to(&self, lines: &BatchWriter, level: Level) {
        with_line(|line| {
            if self.format(line, level, SystemTime::now()).is_ok() {
                lines.append(line.as_bytes());
            }
        });
    }

    /// The line as [`LineFormat`](crate::LineFormat) formats the event.
    fn format(&self, line: &mut String, level: Level, now: SystemTime) -> fmt::Result {
        write_timestamp(line, now)?;
        line.push_str(if level == Level::WARN {
            "  WARN sllmp::request: request completed request_id="
        } else {
            "  INFO sllmp::request: request completed request_id="
        });
        write_quoted(line, self.request_id)?;
        let mut number = itoa::Buffer::new();
        for (key, value) in [
            (" operation=", self.operation),
            (" feature=", self.feature),
            (" model=", self.model),
            (" provider=", self.provider),
            (" provider_model=", self.provider_model),
        ] {
            line.push_str(key);
            write_quoted(line, value)?;
        }
        line.push_str(if self.stream {
            " stream=true outcome="
        } else {
            " stream=false outcome="
        });
        write_quoted(line, self.outcome)?;
        line.push_str(" status=");
        line.push_str(number.format(self.status));
        line.push_str(" error_type=");
        write_quoted(line, self.error_type)?;
        line.push_str(" error=");
        write_quoted(line, self.error)?;
        for (key, value) in [
            (" attempts=", u64::from(self.attempts)),
            (" prompt_tokens=", self.prompt_tokens),
            (" completion_tokens=", self.completion_tokens),
        ] {
            line.push_str(key);
            line.push_str(number.format(value));
        }
        line.push_str(if self.usage_estimated {
            " usage_estimated=true cost_usd="
        } else {
            " usage_estimated=false cost_usd="
        });
        write_f64(line, self.cost_usd)?;
        line.push_str(" latency_ms=");
        write_f64(line, self.latency_ms)?;
        line.push_str(" ttft_ms=");
        write_f64(line, self.ttft_ms)?;
        line.push('\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LineFormat;
    use sllmp_test_support::LogCapture as Capture;

    /// The line written directly is, to the byte, the line `LineFormat` writes for the event.
    #[test]
    fn the_direct_line_is_the_events_line() {
        let plain = Line {
            request_id: "req_1",
            operation: "chat",
            feature: "default",
            model: "openai:gpt-4o",
            provider: "openai",
            provider_model: "gpt-4o",
            stream: false,
            outcome: "success",
            status: 200,
            error_type: "",
            error: "",
            attempts: 1,
            prompt_tokens: 46,
            completion_tokens: 29,
            usage_estimated: false,
            cost_usd: 0.000123,
            latency_ms: 6.804762,
            ttft_ms: -1.0,
        };
        let failed = Line {
            stream: true,
            outcome: "error",
            status: 502,
            error_type: "api_error",
            error: "upstream said \"no\"\nthen: 🦀 \\ done",
            attempts: 3,
            usage_estimated: true,
            cost_usd: -1.0,
            latency_ms: 1234.5,
            ttft_ms: 12.25,
            ..plain
        };
        for (line, level) in [(&plain, Level::INFO), (&failed, Level::WARN)] {
            let mut direct = String::new();
            line.format(&mut direct, level, SystemTime::now()).unwrap();
            let capture = Capture::default();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(capture.clone())
                .event_format(LineFormat)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                if level == Level::WARN {
                    request_event!(line, Level::WARN);
                } else {
                    request_event!(line, Level::INFO);
                }
            });
            let event = capture.text();
            assert_eq!(direct[27..], event[27..]);
        }
    }
}
