//! The HTTP edge of SLLMP: an axum [`Router`] serving OpenAI's API over a pipeline.
//!
//! `POST /v1/chat/completions` (JSON, or server-sent events ending in `data: [DONE]`),
//! `POST /v1/embeddings`, `GET /v1/models`, `GET /health`; every error in OpenAI's shape
//! (`{"error":{"message","type","param","code","request_id"}}`), every response with an
//! `x-request-id`, and every answer from a provider with an `x-sllmp-model` naming it. This is the only SLLMP crate that knows axum and HTTP statuses; it takes
//! providers and a [`PipelineFactory`] and never reads configuration files.
//!
//! ```no_run
//! use sllmp_core::ProviderRegistry;
//! use sllmp_pipeline::Retry;
//! use sllmp_providers::Mock;
//! use sllmp_server::Server;
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = Server::new(ProviderRegistry::new().with(Mock::new("mock")))
//!     .pipeline(|pipeline| {
//!         pipeline.add(Retry::new());
//!     });
//! // Embed it in your own app...
//! let router: axum::Router = server.clone().router();
//! // ...or serve it, shutting down gracefully on Ctrl-C or SIGTERM.
//! server.serve("127.0.0.1:8000".parse().unwrap()).await
//! # }
//! ```

mod error;
mod request_id;
mod routes;
mod runtime;
mod serve;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use sllmp_core::{ModelInfo, ProviderRegistry};
use sllmp_pipeline::{CompletionTracker, Pipeline, PipelineFactory, Settings};

/// The axum version this crate is built on, for embedding the router in your app.
pub use axum;
pub use error::ApiError;
pub use request_id::{RequestId, X_REQUEST_ID};
pub use routes::X_SLLMP_MODEL;
pub use runtime::runtime;
pub use serve::{bind, shutdown_signal};

/// Server settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// The largest request body accepted; larger ones get 413. 10 MiB by default.
    pub body_limit: usize,
    /// How long in-flight requests may run after a shutdown signal. 30 s by default.
    pub shutdown_grace: Duration,
    /// How long, after the connections closed, the server waits for completion work still
    /// running (request logs, budget settlements, traces). 10 s by default.
    pub completion_grace: Duration,
    /// The pipeline's limits.
    pub pipeline: Settings,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            body_limit: 10 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            completion_grace: Duration::from_secs(10),
            pipeline: Settings::default(),
        }
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    providers: Arc<ProviderRegistry>,
    models: Vec<ModelInfo>,
    factory: Arc<dyn PipelineFactory>,
    settings: ServerSettings,
    tracker: CompletionTracker,
    started: u64,
}

/// The simple server: providers plus a pipeline factory, as a [`Router`] or served on an
/// address. The Rust spelling of the Python original's `SimpleProxyServer(pipeline_factory)`.
#[derive(Clone)]
pub struct Server {
    providers: Arc<ProviderRegistry>,
    models: Vec<ModelInfo>,
    factory: Arc<dyn PipelineFactory>,
    settings: ServerSettings,
    tracker: CompletionTracker,
}

impl Server {
    /// A server answering through `providers`, with only the built-in validation middleware.
    pub fn new(providers: ProviderRegistry) -> Server {
        Server::from_shared(Arc::new(providers))
    }

    /// Like [`Server::new`], with providers already shared.
    pub fn from_shared(providers: Arc<ProviderRegistry>) -> Server {
        Server {
            providers,
            models: Vec::new(),
            factory: Arc::new(|_: &mut Pipeline| {}),
            settings: ServerSettings::default(),
            tracker: CompletionTracker::new(),
        }
    }

    /// A server for a factory that knows its providers and models, such as a YAML
    /// configuration's `sllmp::config::Gateway`: one call from a configuration to a server.
    pub fn from_gateway(gateway: impl PipelineFactory) -> Server {
        let providers = gateway.providers().unwrap_or_default();
        let models = gateway.models();
        Server::from_shared(providers)
            .models(models)
            .factory(gateway)
    }

    /// Sets the closure that adds middleware to each request's pipeline (called once per
    /// request, after the built-in validation).
    pub fn pipeline<F>(self, factory: F) -> Server
    where
        F: Fn(&mut Pipeline) + Send + Sync + 'static,
    {
        self.factory(factory)
    }

    /// Sets the factory that adds middleware to each request's pipeline.
    pub fn factory(mut self, factory: impl PipelineFactory) -> Server {
        self.factory = Arc::new(factory);
        self
    }

    /// Sets the factory, already shared.
    pub fn pipeline_shared(mut self, factory: Arc<dyn PipelineFactory>) -> Server {
        self.factory = factory;
        self
    }

    /// Adds models to `GET /v1/models`, besides those the providers advertise.
    pub fn models(mut self, models: impl IntoIterator<Item = ModelInfo>) -> Server {
        self.models.extend(models);
        self
    }

    /// Replaces the settings.
    pub fn settings(mut self, settings: ServerSettings) -> Server {
        self.settings = settings;
        self
    }

    /// The tracker of the requests whose completion hooks are still to run: a server
    /// embedded in another app waits on it at shutdown ([`CompletionTracker::wait_idle`]);
    /// [`Server::serve_on`] does so itself.
    pub fn completions(&self) -> &CompletionTracker {
        &self.tracker
    }

    /// The axum router, to serve or to nest in your own app.
    pub fn router(self) -> Router {
        self.routes().layer(request_id::RequestIdLayer)
    }

    /// The routes without the request-id middleware: [`Server::serve_on`] wraps the whole
    /// router in it instead of each route (a layer on a `Router` boxes every route's
    /// future once more).
    fn routes(self) -> Router {
        let mut models = self.models;
        models.extend(self.providers.models());
        models.sort();
        models.dedup();
        let state = Arc::new(AppState {
            providers: self.providers,
            models,
            factory: self.factory,
            settings: self.settings,
            tracker: self.tracker,
            started: routes::started_now(),
        });
        Router::new()
            .route("/", get(routes::health))
            .route("/health", get(routes::health))
            .route("/v1/models", get(routes::models))
            .route("/v1/chat/completions", post(routes::chat_completions))
            .route("/v1/embeddings", post(routes::embeddings))
            .fallback(routes::unknown_url)
            .method_not_allowed_fallback(routes::method_not_allowed)
            .with_state(state)
    }
}
