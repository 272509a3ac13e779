//! The [`Provider`] trait every LLM backend implements, and the registry that maps the
//! `provider` half of `provider:model` to one.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;

use crate::{ChatChunk, Completion, Error, UpstreamRequest};

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
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The name the provider is addressed by (`openai`, or an alias such as `my-openai`);
    /// it appears in error messages and logs.
    fn name(&self) -> &str;

    /// Models this provider advertises on `GET /v1/models`, without the provider prefix.
    fn models(&self) -> Vec<String> {
        Vec::new()
    }

    /// A non-streamed completion. A provider that received OpenAI's JSON returns
    /// [`Completion::from_json`], so that the client gets those bytes as they came while no
    /// middleware changes the answer; a translating provider returns its
    /// [`ChatCompletion`](crate::ChatCompletion) `.into()` a [`Completion`].
    async fn chat(&self, req: &UpstreamRequest<'_>) -> Result<Completion, Error>;

    /// A streamed completion. Errors before the first chunk are returned here; errors
    /// later are items of the stream.
    async fn chat_stream(&self, req: &UpstreamRequest<'_>) -> Result<ChunkStream, Error>;
}

/// A model listed on `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModelInfo {
    /// The full id, `provider:model`.
    pub id: String,
    /// The provider name (OpenAI's `owned_by`).
    pub owned_by: String,
}

/// Where an attempt goes: a provider and the model name it knows.
#[derive(Clone)]
pub struct Target {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// The name the request used for it (`openai`, `my-openai`).
    pub provider_name: String,
    /// The model as the provider names it (`gpt-4o`).
    pub model: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("provider", &self.provider_name)
            .field("model", &self.model)
            .finish()
    }
}

/// Named providers, resolving `provider:model` ids.
///
/// ```
/// use sllmp_core::ProviderRegistry;
///
/// let registry = ProviderRegistry::new();
/// let err = registry.resolve("gpt-4o").unwrap_err();
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

    /// Splits `provider:model` at the first `:` and finds the provider.
    ///
    /// A model without a provider prefix, with nothing after it, or with an unknown
    /// provider is a 404 `model_not_found` naming the fix.
    pub fn resolve(&self, model: &str) -> Result<Target, Error> {
        let Some((provider_name, model_name)) = model.split_once(':') else {
            let known = if self.providers.is_empty() || self.providers.contains_key("openai") {
                "openai"
            } else {
                self.names().next().unwrap_or("openai")
            };
            return Err(Error::model_not_found(format!(
                "model '{model}' must be written as provider:model, e.g. '{known}:{model}'"
            )));
        };
        if model_name.is_empty() {
            return Err(Error::model_not_found(format!(
                "model '{model}' names no model after the provider '{provider_name}:'"
            )));
        }
        let Some(provider) = self.providers.get(provider_name) else {
            let known: Vec<&str> = self.names().collect();
            return Err(Error::model_not_found(format!(
                "unknown provider '{provider_name}' in model '{model}'; configured providers: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        Ok(Target {
            provider: Arc::clone(provider),
            provider_name: provider_name.to_string(),
            model: model_name.to_string(),
        })
    }
}

impl fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.providers.keys()).finish()
    }
}
