//! SLLMP's configuration file: a feature-centric YAML document that says, per *feature*
//! (an application use case such as "chat" or "code review"), which model, provider keys,
//! provider aliases, budgets, Langfuse project, retry policy, time limits and fallback
//! models its requests use.
//!
//! This crate reads and checks the file, substitutes `${VAR}` environment variables,
//! applies the inheritance from `defaults` to every feature, and picks the feature of a
//! request; [`Gateway`] then builds the providers and the pipeline the file describes. It
//! does no network IO itself and knows nothing of HTTP servers.
//!
//! ```
//! use sllmp_config::Config;
//!
//! let yaml = r#"
//! defaults:
//!   model: "openai:gpt-4o-mini"
//!   provider_api_keys:
//!     openai: "${OPENAI_API_KEY}"
//!   budget_constraints:
//!     per-user-daily:
//!       dimensions: [user_id]
//!       budget_limit: {limit: 10.0, window: 1d}
//! features:
//!   chat:
//!     description: "Customer chat"
//!   code:
//!     model: "anthropic:claude-sonnet-4"
//!     budget_constraints:
//!       burst:
//!         dimensions: [feature]
//!         rate_limit: {per_minute: 60}
//! "#;
//!
//! // Tests inject the environment; `Config::load` and `Config::from_yaml` use the real one.
//! let env = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-test".to_owned());
//! let config = Config::from_yaml_with_env(yaml, "config.yaml", &env)?;
//!
//! let chat = config.detect_feature(None, Some("chat"))?;
//! assert_eq!(chat.model.as_deref(), Some("openai:gpt-4o-mini"));
//! assert_eq!(chat.provider_api_keys["openai"].expose(), "sk-test");
//!
//! // `code` inherits the daily budget and adds its own rate limit.
//! let code = config.feature("code").unwrap();
//! assert_eq!(code.budget_constraints.len(), 2);
//!
//! // Errors name the file, the key path, what is wrong and how to fix it.
//! let err = Config::from_yaml_with_env(
//!     "defaults: {}\nfeatures:\n  chat:\n    model: gpt-4\n",
//!     "config.yaml",
//!     &env,
//! )
//! .unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     r#"config.yaml: features.chat.model: "gpt-4" is not written as provider:model; write it as e.g. "openai:gpt-4""#
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The file
//!
//! ```yaml
//! defaults:                  # required (may be {}); a feature without description/owner/custom
//!   model: "provider:model"
//!   provider_api_keys: {openai: "${OPENAI_API_KEY}"}
//!   providers:               # aliases: "my-openai:gpt-4o" calls openai with these options
//!     my-openai: {provider: openai, api_base: "https://..."}
//!   budget_constraints:
//!     daily:
//!       dimensions: [user_id]    # feature|user_id|organization|team|api_key|model|provider|meta:<key>
//!       budget_limit: {limit: 10.0, window: 1d}    # USD; window: 1h|1d|7d|30d
//!       rate_limit: {per_minute: 60, tokens_per_minute: 100000}   # either or both
//!       description: "..."                         # at least one of the two limits
//!   langfuse: {public_key: "...", secret_key: "...", base_url: "...", enabled: true,
//!              default_prompt_label: latest}
//!   retry: {max_attempts: 3, base_delay: 1s, max_delay: 30s}   # RetryPolicy::standard()
//!   timeouts: {connect: 10s, first_token: 120s, total: 600s}   # Timeouts::default()
//!   fallbacks: ["openai:gpt-4o-mini", "mock:echo"]             # tried after retries
//! features:                  # required, at least one; names match ^[a-zA-Z0-9_-]+$
//!   chat: {description: "", owner: "", model: ..., provider_api_keys: ..., providers: ...,
//!          budget_constraints: ..., langfuse: ..., retry: ..., timeouts: ...,
//!          fallbacks: ..., custom: {free: form}}
//! prices:                    # optional, global: USD per million tokens, for budgets
//!   unknown: reject          # the default; or a price: {input: 1.0, output: 4.0}
//!   models:                  # over the embedded table; cached_input, cache_write default to input
//!     "openai:gpt-4o": {input: 2.5, output: 10.0, cached_input: 1.25, cache_write: 3.125}
//!     "my-local:*": {input: 0, output: 0}   # every model of a provider or alias
//! server:                    # optional, global: the gateway process
//!   redis_url: "${REDIS_URL}"   # limit counters in Redis (shared by replicas); empty: in memory
//!   redis_cluster: false     # true: redis_url is a node of a Redis Cluster
//!   redis_timeout: 100ms     # the longest a request waits on Redis
//!   on_redis_error: fail_open   # or fail_closed (503 limits_unavailable)
//!   redis_prefix: "sllmp:limits:"   # every key starts with {prefix} (its hash tag)
//! ```
//!
//! Inheritance: `provider_api_keys`, `providers` and `budget_constraints` merge by key (a
//! feature's entry replaces the default's of the same name); `model`, `langfuse`, `retry`,
//! `timeouts` and `fallbacks` replace the default, whole, when the feature sets them
//! (absent or null inherits); `langfuse: {enabled: false}` turns Langfuse off for a
//! feature. Keys a `retry` or `timeouts` block leaves out take the built-in values, and
//! without any `retry` block requests are retried by [`sllmp_pipeline::RetryPolicy::standard`].
//! Durations need a unit (`250ms`, `5s`, `1m`, `1h`).
//!
//! # Differences from the Python original, on purpose
//!
//! - Unknown keys are errors, and every problem of a file is reported at once.
//! - `${VAR}` works inside any string value (`"https://${HOST}/v1"`), with
//!   `${VAR:-default}` and the escape `$${` for a literal `${`.
//! - A budget constraint must set `budget_limit` or `rate_limit`; the keys the original's
//!   README showed (`max_cost`, `window_seconds`, `max_requests`), which its code never
//!   read, are refused with the right ones.
//! - `prices` and `server` are new top-level keys.
//! - Numbers and booleans may be written as strings, so `${VAR}` can supply them.
//! - `retry`, `timeouts` and `fallbacks` are new keys.
//! - An unknown feature named by a request is an error, not a fall-back to `default`, and
//!   the `x-ai-feature` HTTP header is honoured.
//! - Errors and `Debug` output never contain a secret.

mod env;
mod error;
mod feature;
mod gateway;
mod load;
mod resolve;
mod schema;

use std::collections::BTreeMap;
use std::path::Path;

pub use error::{ConfigError, Problem};
pub use feature::FeatureError;
pub use gateway::Gateway;
pub use resolve::ResolvedFeature;
pub use schema::{
    BudgetLimit, BudgetWindow, Constraint, Dimension, LangfuseConfig, ModelPrice, OnRedisError,
    PriceKey, Prices, ProviderAlias, RateLimit, ServerSettings, UnknownModels,
};

/// A loaded, checked configuration, with every feature already resolved against
/// `defaults`.
///
/// `Debug` redacts every secret.
#[derive(Clone, Debug)]
pub struct Config {
    features: BTreeMap<String, ResolvedFeature>,
    prices: Prices,
    server: ServerSettings,
    origin: String,
}

impl Config {
    /// Reads and checks the file at `path`, substituting variables from the process
    /// environment. Problems are reported under the path as given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::new(
                &origin,
                vec![Problem::document(format!("cannot read the file: {err}"))],
            )
        })?;
        Config::from_yaml(&src, &origin)
    }

    /// Checks YAML text, substituting variables from the process environment. `origin`
    /// names the source in error messages (usually the file name).
    pub fn from_yaml(src: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(src, origin, &|name| std::env::var(name).ok())
    }

    /// Checks YAML text, looking variables up with `env` (`None` means "not set").
    pub fn from_yaml_with_env(
        src: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut raw =
            load::load(src, env).map_err(|problems| ConfigError::new(origin, problems))?;
        let prices = raw.prices.take().unwrap_or_default();
        let server = raw.server.take().unwrap_or_default();
        Ok(Config {
            features: resolve::resolve(raw),
            prices,
            server,
            origin: origin.to_owned(),
        })
    }

    /// The name of the source the configuration came from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Every feature, resolved, in name order. There is at least one.
    pub fn features(&self) -> impl Iterator<Item = &ResolvedFeature> {
        self.features.values()
    }

    /// The top-level `prices:` block (empty when the file has none): overrides of the
    /// embedded price table, and what a model with no price costs.
    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    /// The top-level `server:` block (the defaults when the file has none): where the limit
    /// counters live.
    pub fn server(&self) -> &ServerSettings {
        &self.server
    }

    /// The resolved feature named `name` (case-sensitive).
    pub fn feature(&self, name: &str) -> Option<&ResolvedFeature> {
        self.features.get(name)
    }
}
