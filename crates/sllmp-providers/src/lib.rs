//! LLM provider adapters for SLLMP, behind [`sllmp_core::Provider`]: [`OpenAi`] (OpenAI and
//! every OpenAI-compatible server) and the built-in [`Mock`], plus the SSE reader they use.
//!
//! Depend on this crate to call providers; it knows vendor wire formats and outbound HTTP,
//! and nothing of the pipeline, limits or the server.
//!
//! ```
//! use sllmp_core::{ProviderRegistry, Secret};
//! use sllmp_providers::{HttpSettings, Mock, OpenAi, OpenAiConfig, http_client};
//!
//! let client = http_client(&HttpSettings::default());
//! let registry = ProviderRegistry::new()
//!     .with(Mock::new("mock"))
//!     .with(OpenAi::new("openai", OpenAiConfig { api_key: Some(Secret::new("sk-...")), ..Default::default() }, client));
//! assert_eq!(registry.names().collect::<Vec<_>>(), ["mock", "openai"]);
//! ```

mod client;
mod http;
mod mock;
mod openai;
mod pool;
mod proxy;
pub mod sse;

use std::sync::Arc;

pub use client::{
    BodyStream, Endpoint, HttpClient, HttpResponse, InvalidUri, TransportError, TransportErrorKind,
};
pub use http::{HttpSettings, http_client, retry_after, status_error, transport_error};
pub use mock::Mock;
pub use openai::{DEFAULT_API_BASE, OpenAi, OpenAiConfig};
pub use proxy::{NoProxy, Proxies, Proxy, ProxyError};
use sllmp_core::{JsonMap, Provider, Secret};

/// The provider types SLLMP can build from configuration.
pub const PROVIDER_TYPES: &[&str] = &["mock", "openai"];

/// Builds the provider `kind` (`openai`, `mock`) under the name `name` from its configured
/// options. An unknown kind or option is an error message naming it.
pub fn build(
    name: &str,
    kind: &str,
    options: &JsonMap,
    api_key: Option<Secret>,
    client: &HttpClient,
) -> Result<Arc<dyn Provider>, String> {
    match kind {
        "openai" => {
            let config = OpenAiConfig::from_options(options, api_key)?;
            Ok(Arc::new(OpenAi::new(name, config, client.clone())))
        }
        "mock" => match options.keys().next() {
            Some(key) => Err(format!("{key}: the mock provider takes no options")),
            None => Ok(Arc::new(Mock::new(name))),
        },
        other => Err(format!(
            "unknown provider type '{other}'; known types: {}",
            PROVIDER_TYPES.join(", ")
        )),
    }
}
