//! The per-request middleware pipeline of SLLMP: the library's heart.
//!
//! Use this crate to write middleware (the [`Middleware`] trait, or [`Hooks`] made of
//! closures) and to run requests through providers without an HTTP server. It depends only
//! on `sllmp-core`: no HTTP server, no concrete provider, no YAML, no Redis.
//!
//! The Python original's custom-middleware example — a pre and a post hook around the LLM
//! call — is a few lines:
//!
//! ```
//! use sllmp_pipeline::{Hooks, Pipeline};
//!
//! fn pipeline_factory(pipeline: &mut Pipeline) {
//!     pipeline.add(
//!         Hooks::new("custom")
//!             .on_attempt(|_ctx, req| {
//!                 println!("Processing request to {}", req.model());
//!                 Ok(())
//!             })
//!             .on_complete(|ctx, _outcome| println!("Request completed for {}", ctx.request_id())),
//!     );
//! }
//! ```
//!
//! One pipeline serves every operation (chat completions, embeddings): the phases they
//! share (admission, attempts, errors and retries, completion) are written once, and the
//! chat-only ones (chunks, the final chat response) run only for chat.
//!
//! Key types: [`Pipeline`] (one request's middleware), [`PipelineFactory`] (builds it per
//! request), [`Middleware`] (the hooks), [`Ctx`] (what a hook knows, and the policies it
//! sets: [`Route`](sllmp_core::Route), [`RetryPolicy`], [`Timeouts`], fallbacks),
//! [`Reply`] and [`Output`] (the answer), [`CompletionTracker`] (shutdown waits for
//! completions), and the built-in [`Validation`], [`Retry`], [`Fallbacks`] and
//! [`SetTimeouts`].
//!
#![doc = include_str!("../docs/phases.md")]

mod attempt;
mod builtin;
mod ctx;
mod hooks;
mod middleware;
mod pipeline;
mod policy;
mod tracker;

/// The attribute for `impl Middleware` blocks (hooks are async trait methods).
pub use async_trait::async_trait;
pub use attempt::AttemptRequest;
pub use builtin::{Fallbacks, Retry, SetTimeouts, Validation};
pub use ctx::{Ctx, Pricer};
pub use hooks::Hooks;
pub use middleware::{ErrorAction, Flow, HookSet, Middleware, Outcome, ResponseView, RetryWindow};
pub use pipeline::{
    Output, Pipeline, PipelineFactory, Reply, ResponseStream, Running, Settings, StreamItem,
};
pub use policy::{RetryPolicy, Timeouts};
pub use tracker::CompletionTracker;
