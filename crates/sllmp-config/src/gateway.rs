//! [`Gateway`]: a loaded [`Config`] turned into providers and a pipeline factory.

use std::collections::BTreeMap;
use std::sync::Arc;

use sllmp_core::{Error, ModelInfo, ProviderRegistry, Request, Route, Secret};
use sllmp_limit::{
    InMemory, LimitBackend, LimitMiddleware, Limiter, OnBackendError, Price, PriceTable, Pricing,
    RedisBackend, RedisOptions, UnknownPrice, Window,
};
use sllmp_observe::RequestLog;
use sllmp_pipeline::{
    Ctx, Flow, HookSet, Middleware, Outcome, Pipeline, PipelineFactory, RetryPolicy, Timeouts,
};
use sllmp_providers::{DEFAULT_API_BASE, HttpClient, PROVIDER_TYPES};

use crate::error::{KeyPath, Problem, Seg};
use crate::{
    BudgetWindow, Config, ConfigError, Constraint, FeatureError, ModelPrice, OnRedisError, Prices,
    ResolvedFeature, ServerSettings, UnknownModels,
};

/// The providers and pipeline a configuration describes, ready to serve.
///
/// Every feature gets its own provider registry: the built-in `mock` and `openai`
/// providers, then the feature's `providers` aliases, each with the feature's
/// `provider_api_keys` baked in. Requests pick their feature at `on_request` time, and
/// with it the feature's `retry` policy, `timeouts` and `fallbacks`, all parsed here, once.
///
/// A feature with `budget_constraints` gets a [`Limiter`] (its constraints, priced by the
/// embedded table with the file's `prices:` on top, its aliases priced as their provider
/// type), all counted in one in-memory backend for the whole gateway
/// ([`Gateway::limit_backend`]): constraints of the same name and dimension values share a
/// counter across features, and counters are per process. With `server.redis_url`, the
/// counters are in Redis instead, shared by every replica (`server.on_redis_error` says what
/// a Redis failure does).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use sllmp_config::{Config, Gateway};
///
/// let config = Config::from_yaml_with_env(
///     "defaults: {}\nfeatures:\n  default:\n    model: mock:echo\n",
///     "config.yaml",
///     &|_| None,
/// )
/// .unwrap();
/// let gateway = Gateway::build(config, &sllmp_providers::http_client(&Default::default())).unwrap();
/// assert!(gateway.models().iter().any(|m| m.id == "mock:echo"));
/// # }
/// ```
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    features: BTreeMap<String, FeatureRuntime>,
    default_providers: Arc<ProviderRegistry>,
    models: Vec<ModelInfo>,
    /// Every feature's limit counters (in memory, or the Redis backend for views and resets).
    limits: Arc<dyn LimitBackend>,
    /// Whether some feature has constraints (otherwise no limit middleware is added).
    limited: bool,
}

struct FeatureRuntime {
    providers: Arc<ProviderRegistry>,
    /// The feature's `model`, parsed once.
    route: Option<Route>,
    retry: RetryPolicy,
    timeouts: Timeouts,
    /// The feature's `fallbacks`, parsed once; cloned per request as a pointer.
    fallbacks: Arc<[Route]>,
    /// The feature's `budget_constraints`, enforced; `None` without any.
    limiter: Option<Limiter>,
}

impl Gateway {
    /// Builds every feature's providers and limits. A provider option that is wrong, an
    /// alias of an unknown provider type, a fallback whose provider the feature does not
    /// have, or two budgets of one name (one counter) with different windows is an error
    /// naming the file and key.
    pub fn build(config: Config, client: &HttpClient) -> Result<Gateway, ConfigError> {
        Gateway::build_with_env(config, client, &|name| std::env::var(name).ok())
    }

    /// [`Gateway::build`] with the environment (`OPENAI_API_KEY`) injected, for tests.
    pub fn build_with_env(
        config: Config,
        client: &HttpClient,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Gateway, ConfigError> {
        let mut problems = Vec::new();
        let mut features = BTreeMap::new();
        let mut models = BTreeMap::new();
        let openai_env_key = env("OPENAI_API_KEY")
            .filter(|k| !k.is_empty())
            .map(Secret::new);
        let limits = LimitStore::new(config.server(), &mut problems);
        let prices = LimitPrices::new(config.prices());
        let mut windows = BTreeMap::new();
        for feature in config.features() {
            let path = KeyPath::root().key("features").key(&feature.name);
            check_windows(feature, &path, &mut windows, &mut problems);
            if feature.langfuse.is_some() {
                tracing::warn!(
                    feature = feature.name.as_str(),
                    "langfuse settings are read but this version of sllmp does not export to Langfuse yet"
                );
            }
            let providers = feature_providers(
                feature,
                client,
                openai_env_key.as_ref(),
                &path,
                &mut problems,
            );
            for name in feature.provider_api_keys.keys() {
                if providers.get(name).is_none() {
                    tracing::warn!(
                        feature = feature.name.as_str(),
                        provider = name.as_str(),
                        "provider_api_keys names a provider that is not configured; the key is unused"
                    );
                }
            }
            if let Some(model) = &feature.model {
                let owned_by = model.split(':').next().unwrap_or_default().to_string();
                models.insert(model.clone(), owned_by);
            }
            let fallbacks = fallback_routes(feature, &path, &mut problems);
            for route in fallbacks.iter() {
                models.insert(route.to_string(), route.provider().to_string());
            }
            let route = feature.model.as_deref().and_then(Route::parse);
            let limiter = feature_limiter(feature, route.as_ref(), &prices, &limits);
            features.insert(
                feature.name.clone(),
                FeatureRuntime {
                    providers: Arc::new(providers),
                    route,
                    retry: feature.retry,
                    timeouts: feature.timeouts,
                    fallbacks,
                    limiter,
                },
            );
        }
        if !problems.is_empty() {
            problems.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
            problems.dedup();
            return Err(ConfigError::new(config.origin(), problems));
        }
        let default_providers = features
            .get("default")
            .or_else(|| features.values().next())
            .map(|f| Arc::clone(&f.providers))
            .unwrap_or_default();
        let models = models
            .into_iter()
            .map(|(id, owned_by)| ModelInfo { id, owned_by })
            .collect();
        let limited = features.values().any(|f| f.limiter.is_some());
        let limits = limits.admin();
        Ok(Gateway {
            inner: Arc::new(Inner {
                config,
                features,
                default_providers,
                models,
                limits,
                limited,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The providers of the `default` feature (or the first), for requests no middleware
    /// assigned a feature to.
    pub fn providers(&self) -> Arc<ProviderRegistry> {
        Arc::clone(&self.inner.default_providers)
    }

    /// The models the configuration names (each feature's `model` and `fallbacks`), for
    /// `GET /v1/models`, each owned by its provider (the part before `:`).
    pub fn models(&self) -> Vec<ModelInfo> {
        self.inner.models.clone()
    }

    /// The backend counting every feature's `budget_constraints` (in this process's
    /// memory, or in Redis with `server.redis_url`), for reading or resetting the live
    /// counters.
    pub fn limit_backend(&self) -> Arc<dyn LimitBackend> {
        Arc::clone(&self.inner.limits)
    }

    /// Adds the configured middleware to `pipeline`, in order: feature selection (which
    /// applies the feature's model, providers, retry policy, timeouts and fallbacks), then
    /// the feature's rate limits and budgets (only when some feature has
    /// `budget_constraints`: it reserves on the feature's constraints, or refuses with a
    /// 429, and settles the reservation at completion), then request logging. Call it from
    /// your own factory to combine it with your middleware; a middleware added after it may
    /// change the policies it set (`Ctx::set_retry_policy`, `Ctx::set_timeouts`,
    /// `Ctx::set_fallbacks`), but not the route the limits reserved for.
    pub fn add_to(&self, pipeline: &mut Pipeline) {
        pipeline.add(SelectFeature {
            gateway: self.clone(),
        });
        if self.inner.limited {
            pipeline.add(FeatureLimits {
                gateway: self.clone(),
                limit: None,
            });
        }
        pipeline.add(RequestLog::new());
    }
}

impl PipelineFactory for Gateway {
    fn build(&self, pipeline: &mut Pipeline) {
        self.add_to(pipeline);
    }

    fn providers(&self) -> Option<Arc<ProviderRegistry>> {
        Some(Gateway::providers(self))
    }

    fn models(&self) -> Vec<ModelInfo> {
        Gateway::models(self)
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("origin", &self.inner.config.origin())
            .field("features", &self.inner.features.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The feature's `fallbacks` as routes; a fallback naming a provider the feature does not
/// have (a built-in or one of its aliases) is a problem at `fallbacks[i]`.
fn fallback_routes(
    feature: &ResolvedFeature,
    path: &KeyPath,
    problems: &mut Vec<Problem>,
) -> Arc<[Route]> {
    let known = |name: &str| BUILTINS.contains(&name) || feature.providers.contains_key(name);
    let mut routes = Vec::with_capacity(feature.fallbacks.len());
    for (index, model) in feature.fallbacks.iter().enumerate() {
        // The loader checked the `provider:model` form.
        let Some(route) = Route::parse(model) else {
            continue;
        };
        if known(route.provider()) {
            routes.push(route);
            continue;
        }
        let mut at = path.key("fallbacks");
        at.push(Seg::Index(index));
        let configured: Vec<&str> = BUILTINS
            .iter()
            .copied()
            .chain(feature.providers.keys().map(String::as_str))
            .collect();
        problems.push(Problem::at(
            &at,
            format!(
                "unknown provider \"{}\" in \"{model}\"; use one of the feature's providers \
                 ({}), or add an alias for it under providers",
                route.provider(),
                configured.join(", ")
            ),
        ));
    }
    routes.into()
}

/// The providers every feature has.
const BUILTINS: [&str; 2] = ["mock", "openai"];

/// The built-in providers plus the feature's aliases, with the feature's keys.
fn feature_providers(
    feature: &ResolvedFeature,
    client: &HttpClient,
    openai_env_key: Option<&Secret>,
    path: &KeyPath,
    problems: &mut Vec<Problem>,
) -> ProviderRegistry {
    let mut registry = ProviderRegistry::new();
    let key = |name: &str| feature.provider_api_keys.get(name).cloned();
    let empty = sllmp_core::JsonMap::new();
    let builtins = [
        (BUILTINS[0], None),
        (
            BUILTINS[1],
            key("openai").or_else(|| openai_env_key.cloned()),
        ),
    ];
    for (name, api_key) in builtins {
        match sllmp_providers::build(name, name, &empty, api_key, client) {
            Ok(provider) => registry.insert(name, provider),
            Err(message) => problems.push(Problem::at(path, message)),
        }
    }
    for (alias, config) in &feature.providers {
        let alias_path = path.key("providers").key(alias);
        if !PROVIDER_TYPES.contains(&config.provider.as_str()) {
            problems.push(Problem::at(
                &alias_path.key("provider"),
                format!(
                    "unknown provider type \"{}\"; use one of: {}",
                    config.provider,
                    PROVIDER_TYPES.join(", ")
                ),
            ));
            continue;
        }
        // An alias gets its own key. Only an alias that still talks to OpenAI itself may
        // fall back to the openai key: sending it to another host would leak it.
        let talks_to_openai = config.provider == "openai"
            && config
                .options
                .get("api_base")
                .and_then(|v| v.as_str())
                .is_none_or(|base| base.trim_end_matches('/') == DEFAULT_API_BASE);
        let api_key = key(alias).or_else(|| {
            talks_to_openai
                .then(|| key("openai").or_else(|| openai_env_key.cloned()))
                .flatten()
        });
        match sllmp_providers::build(alias, &config.provider, &config.options, api_key, client) {
            Ok(provider) => registry.insert(alias.clone(), provider),
            Err(message) => problems.push(Problem::at(
                &alias_path,
                format!("{message}; fix or remove this option"),
            )),
        }
    }
    registry
}

/// The prices every feature's limiter uses: one table (the embedded one with the file's
/// `prices:` on top) and the unknown-price policy.
struct LimitPrices {
    table: Arc<PriceTable>,
    unknown: UnknownPrice,
}

impl LimitPrices {
    fn new(prices: &Prices) -> LimitPrices {
        let mut table = PriceTable::embedded().clone();
        for (key, price) in &prices.models {
            // The provider as written (alias or type): `Pricing::price` looks the provider
            // up as addressed first, then as its provider type.
            match &key.model {
                Some(model) => table.insert(&key.provider, model, limit_price(price)),
                None => table.set_provider_default(&key.provider, limit_price(price)),
            }
        }
        let unknown = match prices.unknown {
            UnknownModels::Reject => UnknownPrice::Reject,
            UnknownModels::Charge(price) => UnknownPrice::Charge(limit_price(&price)),
        };
        LimitPrices {
            table: Arc::new(table),
            unknown,
        }
    }
}

fn limit_price(price: &ModelPrice) -> Price {
    Price {
        input: price.input,
        cached_input: price.cached_input,
        cache_write: price.cache_write,
        output: price.output,
    }
}

/// The feature's constraints as a [`Limiter`] counting in `backend`, its aliases priced as
/// their provider types; `None` for a feature without constraints.
fn feature_limiter(
    feature: &ResolvedFeature,
    route: Option<&Route>,
    prices: &LimitPrices,
    store: &LimitStore,
) -> Option<Limiter> {
    if feature.budget_constraints.is_empty() {
        return None;
    }
    let mut pricing = Pricing::new(Arc::clone(&prices.table)).unknown(prices.unknown);
    for (alias, config) in &feature.providers {
        pricing = pricing.alias(alias.clone(), config.provider.clone());
    }
    let budget = feature
        .budget_constraints
        .values()
        .find(|c| c.budget_limit.is_some());
    if let (Some(budget), Some(route)) = (budget, route)
        && pricing.price(route).is_none()
    {
        tracing::warn!(
            feature = feature.name.as_str(),
            model = %route,
            budget = budget.name.as_str(),
            "no price is known for the feature's model, so its budget refuses every request; \
             add the model under prices.models, or set prices.unknown"
        );
    }
    let constraints: Vec<sllmp_limit::Constraint> = feature
        .budget_constraints
        .values()
        .map(limit_constraint)
        .collect();
    let (backend, on_error) = store.feature_backend(&constraints);
    Some(Limiter::with(constraints, backend, pricing, on_error))
}

/// Where the limit counters live: one in-memory store for the gateway, or Redis.
enum LimitStore {
    Memory(Arc<InMemory>),
    /// One Redis backend for every feature (ticket ids are unique in the process, so
    /// features' limiters can share it, and with it one connection and one fail-open
    /// fallback); it knows every constraint, for the views.
    Redis {
        options: RedisOptions,
        admin: Arc<RedisBackend>,
    },
}

impl LimitStore {
    fn new(server: &ServerSettings, problems: &mut Vec<Problem>) -> LimitStore {
        let memory = || LimitStore::Memory(Arc::new(InMemory::new()));
        let Some(url) = &server.redis_url else {
            return memory();
        };
        let options = RedisOptions {
            urls: vec![url.expose().trim().to_owned()],
            cluster: server.redis_cluster,
            prefix: server.redis_prefix.clone(),
            timeout: server.redis_timeout,
            on_error: match server.on_redis_error {
                OnRedisError::FailOpen => OnBackendError::FailOpen,
                OnRedisError::FailClosed => OnBackendError::FailClosed,
            },
            ..RedisOptions::default()
        };
        match RedisBackend::new(options.clone()) {
            Ok(admin) => LimitStore::Redis {
                options,
                admin: Arc::new(admin),
            },
            Err(err) => {
                // The message never holds the URL (it may hold a password).
                problems.push(Problem::at(
                    &KeyPath::root().key("server").key("redis_url"),
                    format!("{err}; write e.g. \"redis://127.0.0.1:6379\""),
                ));
                memory()
            }
        }
    }

    /// The backend of one feature's limiter, and its policy for a failing backend.
    fn feature_backend(
        &self,
        constraints: &[sllmp_limit::Constraint],
    ) -> (Arc<dyn LimitBackend>, OnBackendError) {
        match self {
            LimitStore::Memory(memory) => (
                Arc::clone(memory) as Arc<dyn LimitBackend>,
                OnBackendError::FailOpen,
            ),
            LimitStore::Redis { options, admin } => {
                for constraint in constraints {
                    admin.know(Arc::new(constraint.clone()));
                }
                (Arc::clone(admin) as Arc<dyn LimitBackend>, options.on_error)
            }
        }
    }

    fn admin(self) -> Arc<dyn LimitBackend> {
        match self {
            LimitStore::Memory(memory) => memory,
            LimitStore::Redis { admin, .. } => admin,
        }
    }
}

/// A configured constraint as `sllmp-limit` enforces it.
fn limit_constraint(constraint: &Constraint) -> sllmp_limit::Constraint {
    let dimensions = constraint.dimensions.clone();
    let mut limit = sllmp_limit::Constraint::new(constraint.name.as_str(), dimensions);
    if let Some(description) = &constraint.description {
        limit = limit.description(description.clone());
    }
    if let Some(budget) = &constraint.budget_limit {
        limit = limit.budget(budget.limit, window(budget.window));
    }
    if let Some(rate) = &constraint.rate_limit {
        if let Some(per_minute) = rate.per_minute {
            limit = limit.requests_per_minute(per_minute);
        }
        if let Some(tokens) = rate.tokens_per_minute {
            limit = limit.tokens_per_minute(tokens);
        }
    }
    limit
}

fn window(window: BudgetWindow) -> Window {
    match window {
        BudgetWindow::Hour => Window::Hour,
        BudgetWindow::Day => Window::Day,
        BudgetWindow::Week => Window::Week,
        BudgetWindow::Month30 => Window::Days30,
    }
}

/// Budgets of one name share their counters (the counter is the name and the dimensions'
/// values), so they must agree on the window: a second window would start the spend over
/// whenever the other's request came. `windows` holds the first feature's window per name.
fn check_windows<'a>(
    feature: &'a ResolvedFeature,
    path: &KeyPath,
    windows: &mut BTreeMap<&'a str, (BudgetWindow, &'a str)>,
    problems: &mut Vec<Problem>,
) {
    for (name, constraint) in &feature.budget_constraints {
        let Some(budget) = &constraint.budget_limit else {
            continue;
        };
        let (window, first) = *windows
            .entry(name.as_str())
            .or_insert((budget.window, feature.name.as_str()));
        if window != budget.window {
            problems.push(Problem::at(
                &path
                    .key("budget_constraints")
                    .key(name)
                    .key("budget_limit")
                    .key("window"),
                format!(
                    "the budget \"{name}\" of feature \"{first}\" has window {window}, and \
                     budgets of one name share their spend; use window: {window} here too, \
                     or give this budget another name"
                ),
            ));
        }
    }
}

/// Enforces the request's feature's limits: finds its [`Limiter`] (a map lookup; nothing
/// more for a feature without constraints) and runs that request's [`LimitMiddleware`].
struct FeatureLimits {
    gateway: Gateway,
    limit: Option<LimitMiddleware>,
}

#[async_trait::async_trait]
impl Middleware for FeatureLimits {
    fn name(&self) -> &'static str {
        "limits"
    }

    fn hooks(&self) -> HookSet {
        HookSet::REQUEST | HookSet::COMPLETE
    }

    async fn on_request(&mut self, ctx: &mut Ctx, req: &mut Request) -> Result<Flow, Error> {
        let limiter = ctx
            .feature()
            .and_then(|name| self.gateway.inner.features.get(name))
            .and_then(|feature| feature.limiter.as_ref());
        let Some(limiter) = limiter else {
            return Ok(Flow::Continue);
        };
        let limit = self.limit.insert(limiter.middleware());
        limit.on_request(ctx, req).await
    }

    async fn on_complete(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) {
        if let Some(limit) = &mut self.limit {
            limit.on_complete(ctx, outcome).await;
        }
    }
}

/// Picks the request's feature and applies it: providers, keys, model override, retry
/// policy, timeouts and fallbacks (copies and a pointer clone; nothing is parsed here).
struct SelectFeature {
    gateway: Gateway,
}

#[async_trait::async_trait]
impl Middleware for SelectFeature {
    fn name(&self) -> &'static str {
        "configuration"
    }

    fn hooks(&self) -> HookSet {
        HookSet::REQUEST
    }

    async fn on_request(&mut self, ctx: &mut Ctx, req: &mut Request) -> Result<Flow, Error> {
        let inner = &self.gateway.inner;
        let header = ctx
            .headers()
            .get("x-ai-feature")
            .and_then(|v| v.to_str().ok());
        let feature = inner
            .config
            .detect_feature(req.metadata(), header)
            .map_err(feature_error)?;
        let runtime = &inner.features[&feature.name];
        ctx.set_feature(feature.name.clone());
        ctx.set_providers(Arc::clone(&runtime.providers));
        if let Some(route) = &runtime.route {
            // A route, not a model string: the request (and the client's bytes) stay as
            // they are.
            ctx.set_route(route.clone());
        }
        ctx.set_retry_policy(runtime.retry);
        ctx.set_timeouts(runtime.timeouts);
        ctx.set_fallbacks(Arc::clone(&runtime.fallbacks));
        Ok(Flow::Continue)
    }
}

fn feature_error(err: FeatureError) -> Error {
    let (code, param) = match &err {
        FeatureError::Unknown { source_key, .. } => (
            "unknown_feature",
            if source_key.ends_with("header") {
                "x-ai-feature"
            } else {
                source_key
            },
        ),
        FeatureError::Undetermined { .. } => ("feature_required", "metadata.feature"),
    };
    Error::invalid_request(code, Some(param.to_string()), err.to_string())
}
