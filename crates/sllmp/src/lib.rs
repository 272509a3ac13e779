//! SLLMP, the Simple LLM Proxy: build OpenAI-compatible LLM gateways in Rust, or run the
//! ready server (`sllmp serve`).
//!
//! This facade re-exports the SLLMP crates behind cargo features, so you pull in only what
//! you need: the core types and the pipeline always, and `server`, `config`, `providers`,
//! `observe`, `limit` on demand.
//!
//! A gateway with your own middleware around the LLM call, in a few lines:
//!
//! ```no_run
//! use sllmp::providers::{Mock, OpenAi, OpenAiConfig, http_client};
//! use sllmp::{Hooks, ProviderRegistry, Retry, Server};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let client = http_client(&Default::default());
//!     let providers = ProviderRegistry::new()
//!         .with(Mock::new("mock"))
//!         .with(OpenAi::new("openai", OpenAiConfig::default(), client));
//!     Server::new(providers)
//!         .pipeline(|pipeline| {
//!             pipeline.add(Retry::new());
//!             pipeline.add(
//!                 Hooks::new("custom")
//!                     .on_attempt(|_ctx, req| {
//!                         println!("Processing request to {}", req.model());
//!                         Ok(())
//!                     })
//!                     .on_complete(|ctx, _| println!("Request completed for {}", ctx.request_id())),
//!             );
//!         })
//!         .serve("127.0.0.1:8000".parse().unwrap())
//!         .await
//! }
//! ```
//!
//! Or from the YAML configuration, as the `sllmp` binary does:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use sllmp::config::{Config, Gateway};
//!
//! let config = Config::from_yaml(sllmp::DEFAULT_CONFIG, "built-in").unwrap();
//! let gateway = Gateway::build(config, &sllmp::providers::http_client(&Default::default())).unwrap();
//! let router: sllmp::server::axum::Router = sllmp::Server::from_gateway(gateway).router();
//! # let _ = router;
//! # }
//! ```
//!
//! # Features
//!
//! | Name | Description | Default |
//! |---|---|---|
//! | `server` | The axum HTTP server: [`Server`] | yes |
//! | `config` | The YAML configuration and the [`config::Gateway`] it builds (implies `providers`, `observe`) | yes |
//! | `providers` | Provider adapters: `openai`, `mock` | yes |
//! | `observe` | Observability middleware (request logging) | yes |
//! | `limit` | Rate limits and budgets: `Limiter`, `InMemory`, prices | yes |
//! | `full` | All of the above | no |
//! | `cli` | What the `sllmp` binary needs (clap, mimalloc) | yes |
//!
//! The root exports what a gateway written in Rust uses every day; everything else is in
//! the modules ([`core`], [`pipeline`], and the features' modules).

pub use sllmp_core::{
    ChatChunk, ChatCompletion, ChatInput, ChatRequest, Completion, EmbeddingsRequest, Error,
    ErrorKind, Message, ModelInfo, Operation, Provider, ProviderRegistry, Request, Response, Route,
    Secret, Usage,
};
pub use sllmp_pipeline::{
    AttemptRequest, Ctx, ErrorAction, Fallbacks, Flow, HookSet, Hooks, Middleware, Outcome, Output,
    Pipeline, PipelineFactory, ResponseView, Retry, RetryPolicy, RetryWindow, SetTimeouts,
    Timeouts, Validation, async_trait,
};

/// The shared vocabulary: wire types, errors, the provider trait (all of `sllmp-core`).
pub mod core {
    pub use sllmp_core::*;
}

/// The per-request pipeline (all of `sllmp-pipeline`).
pub mod pipeline {
    pub use sllmp_pipeline::*;
}

/// The HTTP server (`sllmp-server`).
#[cfg(feature = "server")]
pub mod server {
    pub use sllmp_server::*;
}
#[cfg(feature = "server")]
pub use sllmp_server::{Server, ServerSettings};

/// The YAML configuration (`sllmp-config`).
#[cfg(feature = "config")]
pub mod config {
    pub use sllmp_config::*;
}

/// Provider adapters (`sllmp-providers`).
#[cfg(feature = "providers")]
pub mod providers {
    pub use sllmp_providers::*;
}

/// Observability middleware (`sllmp-observe`).
#[cfg(feature = "observe")]
pub mod observe {
    pub use sllmp_observe::*;
}

/// Rate limits and budgets (`sllmp-limit`).
#[cfg(feature = "limit")]
pub use sllmp_limit as limit;

/// The built-in configuration `sllmp serve` uses without `--config`: the `mock` provider,
/// and `openai` once `OPENAI_API_KEY` is set.
pub const DEFAULT_CONFIG: &str = include_str!("../default-config.yaml");

/// The README's Rust examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The Rust examples of `docs/middleware.md`, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/middleware.md")]
pub struct MiddlewareDocTests;
