//! Benchmarks of SLLMP.
//!
//! This crate holds what `cargo xtask bench` drives and measures:
//!
//! - the `sllmp-bench-proxy` binary: the production server (`sllmp serve`'s configuration,
//!   validation, feature selection, request logging and retry) plus [`production_hooks`], a
//!   middleware that does a little real work on every hook, with info-level logging to a
//!   file through a non-blocking writer. It is what the load scenarios put between the load
//!   generator and the mock upstream;
//! - criterion micro-benchmarks (`cargo bench -p sllmp-bench --bench micro`) of the request
//!   parse and validation, the SSE reader and the chunk path, over the [`fixtures`] here.
//!
//! Nothing here asserts on timings: the results go to `docs/benchmarks.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use sllmp::{Ctx, Flow, Hooks, Outcome, ResponseView};

pub mod fixtures;

/// Totals over every request the [`production_hooks`] saw, logged when the proxy stops so
/// that a run can check that its traffic really went through the middleware.
#[derive(Debug, Default)]
pub struct Totals {
    /// Requests that reached `on_complete`.
    pub requests: AtomicU64,
    /// Of which successful.
    pub succeeded: AtomicU64,
    /// Provider attempts.
    pub attempts: AtomicU64,
    /// Streamed chunks seen by `on_chunk`.
    pub chunks: AtomicU64,
    /// Bytes of streamed content seen by `on_chunk`.
    pub content_bytes: AtomicU64,
    /// Prompt tokens, from the usage at completion.
    pub prompt_tokens: AtomicU64,
    /// Completion tokens, from the usage at completion.
    pub completion_tokens: AtomicU64,
    /// Errors seen by `on_error`.
    pub errors: AtomicU64,
}

impl Totals {
    /// A one-line summary.
    pub fn summary(&self) -> String {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        format!(
            "requests={} succeeded={} attempts={} chunks={} content_bytes={} prompt_tokens={} completion_tokens={} errors={}",
            get(&self.requests),
            get(&self.succeeded),
            get(&self.attempts),
            get(&self.chunks),
            get(&self.content_bytes),
            get(&self.prompt_tokens),
            get(&self.completion_tokens),
            get(&self.errors),
        )
    }
}

/// Per-request state of [`production_hooks`], kept in the request's [`Ctx`] extensions as a
/// real middleware would share it.
#[derive(Debug, Clone, Default)]
struct Tally {
    messages: usize,
    prompt_bytes: usize,
    attempts: u32,
    chunks: u64,
    content_bytes: u64,
    finish_reason: Option<String>,
}

/// A middleware with a closure on every hook, each doing a little real work, like a
/// production gateway's accounting middleware:
///
/// - `on_request`: measures the prompt and stores a per-request tally in the extensions;
/// - `on_attempt`: counts the attempt and checks the model is routed (`provider:model`);
/// - `on_chunk`: counts chunks and content bytes;
/// - `on_response`: notes the finish reason;
/// - `on_error`: counts the error (and lets it through);
/// - `on_complete`: reads the usage and adds everything to `totals`.
pub fn production_hooks(totals: Arc<Totals>) -> Hooks {
    let on_error = Arc::clone(&totals);
    Hooks::new("bench_accounting")
        .on_request(|ctx: &mut Ctx, req| {
            let messages = req.chat().map_or(&[][..], |chat| &chat.messages[..]);
            let prompt_bytes = messages
                .iter()
                .map(|m| match &m.content {
                    Some(Value::String(text)) => text.len(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .map(str::len)
                        .sum(),
                    _ => 0,
                })
                .sum();
            ctx.extensions_mut().insert(Tally {
                messages: messages.len(),
                prompt_bytes,
                ..Tally::default()
            });
            Ok(Flow::Continue)
        })
        .on_attempt(|ctx, req| {
            if !req.model().contains(':') {
                tracing::debug!(model = req.model(), "model without a provider prefix");
            }
            if let Some(tally) = ctx.extensions_mut().get_mut::<Tally>() {
                tally.attempts += 1;
            }
            Ok(())
        })
        .on_chunk(|ctx, chunk| {
            let bytes: usize = chunk
                .choices
                .iter()
                .filter_map(|c| c.delta.content.as_deref())
                .map(str::len)
                .sum();
            if let Some(tally) = ctx.extensions_mut().get_mut::<Tally>() {
                tally.chunks += 1;
                tally.content_bytes += bytes as u64;
            }
            Ok(())
        })
        .on_response(|ctx, response: ResponseView<'_>| {
            let finish = response
                .response()
                .choices
                .first()
                .and_then(|c| c.finish_reason.clone());
            if let Some(tally) = ctx.extensions_mut().get_mut::<Tally>() {
                tally.finish_reason = finish;
            }
            Ok(())
        })
        .on_error(move |_ctx, _err, _window| {
            on_error.errors.fetch_add(1, Ordering::Relaxed);
            sllmp::ErrorAction::Propagate
        })
        .on_complete(move |ctx, outcome| {
            let add = |n: &AtomicU64, v: u64| {
                n.fetch_add(v, Ordering::Relaxed);
            };
            add(&totals.requests, 1);
            if let Outcome::Success(_) = outcome {
                add(&totals.succeeded, 1);
            }
            if let Some(tally) = ctx.extensions().get::<Tally>() {
                add(&totals.attempts, u64::from(tally.attempts));
                add(&totals.chunks, tally.chunks);
                add(&totals.content_bytes, tally.content_bytes);
                tracing::trace!(
                    messages = tally.messages,
                    prompt_bytes = tally.prompt_bytes,
                    finish_reason = tally.finish_reason.as_deref().unwrap_or(""),
                    "tally"
                );
            }
            if let Some(usage) = ctx.usage() {
                add(&totals.prompt_tokens, usage.prompt_tokens);
                add(&totals.completion_tokens, usage.completion_tokens);
            }
        })
}
