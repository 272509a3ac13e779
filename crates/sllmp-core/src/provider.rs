//! The [`Provider`] trait every LLM backend implements, and the registry that maps the
//! `provider` half of `provider:model` to one.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;

use crate::{
    Call, ChatChunk, Completion, Embeddings, EmbeddingsRequest, Error, Route, UpstreamRequest,
};

/// The chunks of a streamed completion. Dropping it stops the upstream call.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, Error>> + Send>>;

/// An LLM backend behind the OpenAI-shaped interface.
///
/// A provider receives an [`UpstreamRequest`]: a [`ChatRequest`](crate::ChatRequest) whose
/// `model` is already the provider's own model name (`gpt-4o`, not `openai:gpt-4o`), with
/// the client's bytes when no middleware changed the request. It returns OpenAI-shaped
/// answers, translating both ways when its API differs. A provider speaking OpenAI's format
/// sends [`UpstreamRequest::to_json`] (the client's bytes with the routed fields rewritten);
/// others translate the value. It borrows the request: the pipeline keeps it for a retry.
/// Errors are mapped onto [`crate::ErrorKind`]'s provider kinds.
///
/// When a stream was asked for, the pipeline sets `stream_options.include_usage` so that a
/// provider reports the usage of every stream in its last chunk.
///
/// Each call also gets a [`Call`]: the route, the request id, the attempt's deadline and
/// first-token limit, and headers to add upstream. An adapter chooses its own URL and auth
/// style from its configuration and the route (a deployment URL, a model in the path, a key
/// in `api-key`, `x-api-key` or `Authorization`).
///
/// An operation a provider does not implement answers a 400 `unsupported_operation`.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The name the provider is addressed by (`openai`, or an alias such as `my-openai`);
    /// it appears in error messages and logs.
    fn name(&self) -> &str;

    /// Models this provider advertises on `GET /v1/models`, without the provider prefix.
    fn models(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether this provider ends a non-streamed call by [`Call::deadline`] and bounds its
    /// response head by [`Call::first_token`] itself. When it does not (the default, always
    /// correct), the pipeline wraps the call in a timer of its own; one that does saves that
    /// timer on every request.
    fn enforces_deadlines(&self) -> bool {
        false
    }

    /// A non-streamed completion. A provider that received OpenAI's JSON returns
    /// [`Completion::from_json`], so that the client gets those bytes as they came while no
    /// middleware changes the answer; a translating provider returns its
    /// [`ChatCompletion`](crate::ChatCompletion) `.into()` a [`Completion`].
    async fn chat(&self, call: &Call<'_>, req: &UpstreamRequest<'_>) -> Result<Completion, Error>;

    /// A streamed completion. Errors before the first chunk are returned here; errors
    /// later are items of the stream. A stream that ends without the provider's end marker
    /// (`data: [DONE]` for OpenAI) must end with an error, never as if it were complete.
    async fn chat_stream(
        &self,
        call: &Call<'_>,
        req: &UpstreamRequest<'_>,
    ) -> Result<ChunkStream, Error>;

    /// Embedding vectors for `req` (its `model` already the provider's own name, its
    /// `metadata` taken out). A provider that returns OpenAI's JSON returns
    /// [`Embeddings::from_json`], so the client gets those bytes.
    async fn embeddings(
        &self,
        call: &Call<'_>,
        req: &EmbeddingsRequest,
    ) -> Result<Embeddings, Error> {
        let _ = req;
        Err(unsupported(self.name(), call.route, "embeddings"))
    }
}

/// The error for an operation a provider does not serve.
pub fn unsupported(provider: &str, route: &Route, operation: &str) -> Error {
    Error::invalid_request(
        "unsupported_operation",
        Some("model".to_string()),
        format!("provider '{provider}' does not serve {operation} (model '{route}')"),
    )
    .with_provider(provider)
}

/// A model listed on `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModelInfo {
    /// The full id, `provider:model`.
    pub id: String,
    /// The provider name (OpenAI's `owned_by`).
    pub owned_by: String,
}

/// Named providers, resolving `provider:model` ids.
///
/// ```
/// use sllmp_core::ProviderRegistry;
///
/// let registry = ProviderRegistry::new();
/// let err = registry.resolve("gpt-4o").err().unwrap();
/// assert_eq!(err.status(), 404);
/// assert_eq!(err.code(), Some("model_not_found"));
/// ```
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

impl ProviderRegistry {
    /// An empty registry.
    pub fn new() -> ProviderRegistry {
        ProviderRegistry::default()
    }

    /// Registers `provider` under `name`, replacing any provider of that name.
    pub fn insert(&mut self, name: impl Into<String>, provider: Arc<dyn Provider>) {
        self.providers.insert(name.into(), provider);
    }

    /// Registers `provider` under its own name; builder style.
    pub fn with(mut self, provider: impl Provider) -> ProviderRegistry {
        let name = provider.name().to_string();
        self.insert(name, Arc::new(provider));
        self
    }

    /// The provider registered as `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }

    /// The models every provider advertises, as `provider:model`.
    pub fn models(&self) -> Vec<ModelInfo> {
        self.providers
            .iter()
            .flat_map(|(name, provider)| {
                provider.models().into_iter().map(move |model| ModelInfo {
                    id: format!("{name}:{model}"),
                    owned_by: name.clone(),
                })
            })
            .collect()
    }

    /// Reads `model` as a [`Route`] (`provider:model`, or `provider/model`).
    ///
    /// A model without a provider prefix, or with nothing after it, is a 404
    /// `model_not_found` naming the fix. The provider is not looked up yet
    /// ([`ProviderRegistry::provider`]).
    pub fn route(&self, model: &str) -> Result<Route, Error> {
        if let Some(route) = Route::parse(model) {
            return Ok(route);
        }
        match model.split_once(':').or_else(|| model.split_once('/')) {
            Some((provider, _)) if !provider.is_empty() => Err(Error::model_not_found(format!(
                "model '{model}' names no model after the provider '{provider}:'"
            ))),
            _ => {
                let known = if self.providers.is_empty() || self.providers.contains_key("openai") {
                    "openai"
                } else {
                    self.names().next().unwrap_or("openai")
                };
                Err(Error::model_not_found(format!(
                    "model '{model}' must be written as provider:model, e.g. '{known}:{model}'"
                )))
            }
        }
    }

    /// The provider `route` names; an unknown one is a 404 `model_not_found` listing the
    /// configured providers.
    pub fn provider(&self, route: &Route) -> Result<&Arc<dyn Provider>, Error> {
        self.providers.get(route.provider()).ok_or_else(|| {
            let known: Vec<&str> = self.names().collect();
            Error::model_not_found(format!(
                "unknown provider '{}' in model '{route}'; configured providers: {}",
                route.provider(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// [`ProviderRegistry::route`], then [`ProviderRegistry::provider`].
    pub fn resolve(&self, model: &str) -> Result<(Route, Arc<dyn Provider>), Error> {
        let route = self.route(model)?;
        let provider = Arc::clone(self.provider(&route)?);
        Ok((route, provider))
    }
}

impl fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.providers.keys()).finish()
    }
}
