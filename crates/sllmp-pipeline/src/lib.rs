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
//!                 println!("Processing request to {}", req.model);
//!                 Ok(())
//!             })
//!             .on_complete(|ctx, _outcome| println!("Request completed for {}", ctx.request_id())),
//!     );
//! }
//! ```
//!
//! Key types: [`Pipeline`] (one request's middleware), [`PipelineFactory`] (builds it per
//! request), [`Middleware`] (the hooks), [`Ctx`] (what a hook knows), [`Output`] (the answer),
//! and the built-in [`Validation`] and [`Retry`].
//!
#![doc = include_str!("../docs/phases.md")]

mod attempt;
mod builtin;
mod ctx;
mod hooks;
mod middleware;
mod pipeline;

/// The attribute for `impl Middleware` blocks (hooks are async trait methods).
pub use async_trait::async_trait;
pub use attempt::AttemptRequest;
pub use builtin::{Retry, Validation};
pub use ctx::{Ctx, TargetInfo};
pub use hooks::Hooks;
pub use middleware::{ErrorAction, Flow, HookSet, Middleware, Outcome, ResponseView, RetryWindow};
pub use pipeline::{
    Output, Pipeline, PipelineFactory, ResponseStream, Running, Settings, StreamItem,
};
