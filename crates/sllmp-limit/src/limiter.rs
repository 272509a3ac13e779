//! [`Limiter`]: the limit-enforcement middleware (the Python original's
//! `limit_enforcement_middleware(constraints, backend)`): reserve in admission, settle at
//! completion.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;
use serde_json::Value;
use sllmp_core::{Error, Request, Route, Usage};
use sllmp_pipeline::{Ctx, Flow, HookSet, Middleware, Outcome, Pricer};

use crate::backend::{
    Actual, Admission, Claim, CounterKey, LimitBackend, LimitKind, Rejection, Ticket,
};
use crate::estimate::{DEFAULT_OUTPUT_TOKENS, estimate_tokens};
use crate::price::{Price, PriceTable, UnknownPrice};
use crate::{Constraint, Dimension, nanos_to_usd};

/// The client key a request came with, by name (or a hash), never in clear: what the
/// `api_key` dimension counts per. The client-key middleware puts it in the request's
/// extensions, with the key's own metadata (`organization`, `team`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeyId {
    /// The key's name, or `sha256:<first 16 hex digits>` of an unnamed key.
    pub name: Arc<str>,
    /// The key's metadata, read by the `organization`, `team` and `meta:<key>` dimensions
    /// when the request's own metadata has none.
    pub metadata: Arc<serde_json::Map<String, Value>>,
}

/// What a Redis failure does to a request: serve it, counting locally (`FailOpen`), or
/// refuse it with a 503 `limits_unavailable` (`FailClosed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBackendError {
    /// Serve it (the default); the failure is logged once per outage.
    #[default]
    FailOpen,
    /// Refuse it.
    FailClosed,
}

/// How requests are priced: a price table (the embedded one, with overrides), the provider
/// type of each alias (`my-openai` → `openai`), and what to do for a model with no price.
#[derive(Debug, Clone)]
pub struct Pricing {
    table: Arc<PriceTable>,
    provider_types: HashMap<String, String>,
    unknown: UnknownPrice,
    default_output_tokens: u64,
}

impl Default for Pricing {
    fn default() -> Self {
        Pricing::new(Arc::new(PriceTable::embedded().clone()))
    }
}

impl Pricing {
    /// Prices from `table`; unknown models are refused.
    pub fn new(table: Arc<PriceTable>) -> Pricing {
        Pricing {
            table,
            provider_types: HashMap::new(),
            unknown: UnknownPrice::default(),
            default_output_tokens: DEFAULT_OUTPUT_TOKENS,
        }
    }

    /// Prices `alias:<model>` as `provider_type:<model>`.
    pub fn alias(mut self, alias: impl Into<String>, provider_type: impl Into<String>) -> Pricing {
        self.provider_types
            .insert(alias.into(), provider_type.into());
        self
    }

    /// What a model with no price costs.
    pub fn unknown(mut self, unknown: UnknownPrice) -> Pricing {
        self.unknown = unknown;
        self
    }

    /// The output tokens assumed when a request sets no cap (1024 by default).
    pub fn default_output_tokens(mut self, tokens: u64) -> Pricing {
        self.default_output_tokens = tokens;
        self
    }

    /// The price of `route`: the table's for the provider as addressed (an override for an
    /// alias), else for its provider type; the built-in `mock` provider is free unless the
    /// table prices it; else the unknown-price policy's (`None`: refuse).
    pub fn price(&self, route: &Route) -> Option<Price> {
        if let Some(price) = self.table.lookup(route.provider(), route.model()) {
            return Some(price);
        }
        let provider = self.provider_types.get(route.provider());
        if let Some(provider) = provider
            && let Some(price) = self.table.lookup(provider, route.model())
        {
            return Some(price);
        }
        if provider.map_or(route.provider(), String::as_str) == "mock" {
            return Some(Price::new(0.0, 0.0));
        }
        match self.unknown {
            UnknownPrice::Reject => None,
            UnknownPrice::Charge(price) => Some(price),
        }
    }
}

impl Pricer for Pricing {
    fn cost_nanos(&self, route: &Route, usage: &Usage) -> Option<u64> {
        self.price(route).map(|price| price.cost_nanos(usage))
    }
}

/// Enforces rate limits and budgets: before the call, every constraint the request matches
/// reserves one request, its estimated tokens and its estimated cost in one atomic step
/// (all or nothing; a refusal is a 429 naming the constraint, with `Retry-After`); when the
/// request completes, the reservation is settled to the actual cost and tokens (the
/// provider's usage, or the pipeline's estimate for a client that left; zero for a request
/// no provider answered or a middleware answered itself).
///
/// Build it once and add [`Limiter::middleware`] to each request's pipeline, after feature
/// selection (the `feature` dimension reads the feature it chose).
///
/// ```
/// use std::sync::Arc;
/// use sllmp_limit::{Constraint, Dimension, InMemory, Limiter, Window};
/// use sllmp_pipeline::Pipeline;
///
/// let limiter = Limiter::new(
///     [
///         Constraint::new("daily-budget", vec![Dimension::Feature]).budget(100.0, Window::Day),
///         Constraint::new("per-user", vec![Dimension::UserId]).requests_per_minute(60),
///     ],
///     Arc::new(InMemory::new()),
/// );
/// let factory = move |pipeline: &mut Pipeline| {
///     pipeline.add(limiter.middleware());
/// };
/// # let _ = factory;
/// ```
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    constraints: Vec<Arc<Constraint>>,
    backend: Arc<dyn LimitBackend>,
    pricing: Arc<Pricing>,
    on_error: OnBackendError,
    /// Whether the backend is failing (an outage is logged once).
    failing: AtomicBool,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field(
                "constraints",
                &self
                    .inner
                    .constraints
                    .iter()
                    .map(|c| &c.name)
                    .collect::<Vec<_>>(),
            )
            .field("on_error", &self.inner.on_error)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// Enforces `constraints`, counted in `backend`, with the embedded prices.
    pub fn new(
        constraints: impl IntoIterator<Item = Constraint>,
        backend: Arc<dyn LimitBackend>,
    ) -> Limiter {
        Limiter::with(
            constraints,
            backend,
            Pricing::default(),
            OnBackendError::default(),
        )
    }

    /// Enforces `constraints` in `backend`, priced by `pricing`, with `on_error` for a
    /// failing backend.
    pub fn with(
        constraints: impl IntoIterator<Item = Constraint>,
        backend: Arc<dyn LimitBackend>,
        pricing: Pricing,
        on_error: OnBackendError,
    ) -> Limiter {
        Limiter {
            inner: Arc::new(Inner {
                constraints: constraints.into_iter().map(Arc::new).collect(),
                backend,
                pricing: Arc::new(pricing),
                on_error,
                failing: AtomicBool::new(false),
            }),
        }
    }

    /// The constraints enforced.
    pub fn constraints(&self) -> impl Iterator<Item = &Constraint> {
        self.inner.constraints.iter().map(|c| &**c)
    }

    /// The backend counting them.
    pub fn backend(&self) -> &Arc<dyn LimitBackend> {
        &self.inner.backend
    }

    /// This request's middleware.
    pub fn middleware(&self) -> LimitMiddleware {
        LimitMiddleware {
            limiter: Arc::clone(&self.inner),
            ticket: None,
        }
    }
}

/// Ticket ids, unique in the process: limiters of several features may share a backend,
/// which tells reservations apart by id.
static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);

/// One request's side of a [`Limiter`]: its reservation, settled at completion.
pub struct LimitMiddleware {
    limiter: Arc<Inner>,
    ticket: Option<Ticket>,
}

impl std::fmt::Debug for LimitMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitMiddleware")
            .field("ticket", &self.ticket.as_ref().map(|t| t.id))
            .finish()
    }
}

#[async_trait::async_trait]
impl Middleware for LimitMiddleware {
    fn name(&self) -> &'static str {
        "limits"
    }

    fn hooks(&self) -> HookSet {
        HookSet::REQUEST | HookSet::COMPLETE
    }

    async fn on_request(&mut self, ctx: &mut Ctx, req: &mut Request) -> Result<Flow, Error> {
        let limiter = &self.limiter;
        ctx.set_pricer(limiter.pricing.clone());
        if limiter.constraints.is_empty() {
            return Ok(Flow::Continue);
        }
        // A model that is not `provider:model` fails later with its own error; it counts
        // against nothing.
        let Some(route) = ctx.route().cloned().or_else(|| Route::parse(req.model())) else {
            return Ok(Flow::Continue);
        };
        let claims: Vec<Claim> = limiter
            .constraints
            .iter()
            .map(|constraint| Claim {
                key: counter_key(constraint, ctx, req, &route),
                constraint: Arc::clone(constraint),
            })
            .collect();
        let (input, output) = estimate_tokens(req, limiter.pricing.default_output_tokens);
        let cost_nanos = if claims.iter().any(|c| c.constraint.budget.is_some()) {
            match limiter.pricing.price(&route) {
                Some(price) => price.estimate_nanos(input, output),
                None => return Err(unknown_price(&route, &claims)),
            }
        } else {
            0
        };
        let ticket = Ticket {
            id: NEXT_TICKET.fetch_add(1, Ordering::Relaxed),
            claims,
            cost_nanos,
            tokens: input + output,
        };
        match limiter.backend.reserve(&ticket).await {
            Ok(Ok(admission)) => {
                limiter.recovered();
                rate_headers(ctx, &admission);
                self.ticket = Some(ticket);
                Ok(Flow::Continue)
            }
            Ok(Err(rejection)) => Err(rejected(&rejection)),
            Err(err) => {
                limiter.failed(&err.message);
                match limiter.on_error {
                    OnBackendError::FailOpen => Ok(Flow::Continue),
                    OnBackendError::FailClosed => Err(Error::custom(
                        503,
                        "service_unavailable_error",
                        Some("limits_unavailable"),
                        "rate limits and budgets cannot be checked right now; retry shortly",
                    )
                    .with_retry_after(Duration::from_secs(1))),
                }
            }
        }
    }

    async fn on_complete(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let usage = match outcome {
            // Nothing reached a provider, or a middleware answered (a cache hit): one
            // request, no cost.
            _ if ctx.attempt() == 0 => None,
            _ => ctx.usage(),
        };
        let actual = match usage {
            None => Actual {
                cost_nanos: 0,
                tokens: 0,
            },
            Some(usage) => Actual {
                cost_nanos: ctx.cost_nanos().unwrap_or(0),
                tokens: usage.total_tokens,
            },
        };
        if let Err(err) = self.limiter.backend.settle(&ticket, actual).await {
            self.limiter.failed(&err.message);
        }
    }
}

impl Inner {
    fn failed(&self, message: &str) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::error!(error = message, "the limit backend is failing");
        }
    }

    fn recovered(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("the limit backend is answering again");
        }
    }
}

/// The counter of `constraint` for this request: its name and its dimensions' values.
fn counter_key(constraint: &Constraint, ctx: &Ctx, req: &Request, route: &Route) -> CounterKey {
    let client = ctx.extensions().get::<ClientKeyId>();
    let metadata = |key: &str| -> Option<String> {
        let from = |map: &serde_json::Map<String, Value>| {
            map.get(key).and_then(|value| match value {
                Value::Null => None,
                Value::String(s) if s.is_empty() => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            })
        };
        req.metadata()
            .and_then(from)
            .or_else(|| client.and_then(|c| from(&c.metadata)))
    };
    let values = constraint
        .dimensions
        .iter()
        .map(|dimension| {
            let value = match dimension {
                Dimension::Feature => ctx.feature().map(str::to_string),
                Dimension::UserId => metadata("user_id").or_else(|| req.user().map(str::to_string)),
                Dimension::Organization => metadata("organization"),
                Dimension::Team => metadata("team"),
                Dimension::ApiKey => client.map(|c| c.name.to_string()),
                Dimension::Model => Some(route.model().to_string()),
                Dimension::Provider => Some(route.provider().to_string()),
                Dimension::Meta(key) => metadata(key),
            };
            value.unwrap_or_else(|| dimension.placeholder().to_string())
        })
        .collect();
    CounterKey {
        constraint: Arc::clone(&constraint.name),
        values,
    }
}

/// The 429 of a refused ticket, naming the constraint, its usage and limit.
fn rejected(rejection: &Rejection) -> Error {
    let label = rejection.constraint.label();
    let retry_after =
        Duration::from_secs(rejection.retry_after.as_secs_f64().ceil().max(1.0) as u64);
    let (error_type, message) = match rejection.kind {
        LimitKind::Requests => (
            "rate_limit_exceeded",
            format!(
                "Rate limit exceeded: {label}. Current usage: {} requests/minute, Limit: {} requests/minute",
                rejection.usage, rejection.limit
            ),
        ),
        LimitKind::Tokens => (
            "rate_limit_exceeded",
            format!(
                "Token rate limit exceeded: {label}. Current usage: {} tokens/minute, Limit: {} tokens/minute, This request: {} tokens",
                rejection.usage, rejection.limit, rejection.asked
            ),
        ),
        LimitKind::Budget => (
            "budget_limit_exceeded",
            format!(
                "Budget limit exceeded: {label}. Current usage: ${:.4}, Limit: ${:.4}, Estimated cost: ${:.4}",
                nanos_to_usd(rejection.usage),
                nanos_to_usd(rejection.limit),
                nanos_to_usd(rejection.asked)
            ),
        ),
    };
    let code = if rejection.kind == LimitKind::Budget {
        "budget_limit_exceeded"
    } else {
        "rate_limit_exceeded"
    };
    Error::custom(429, error_type, Some(code), message).with_retry_after(retry_after)
}

/// A budget needs a price the table does not have, and the policy is to refuse.
fn unknown_price(route: &Route, claims: &[Claim]) -> Error {
    let budget = claims
        .iter()
        .find(|c| c.constraint.budget.is_some())
        .map_or("", |c| c.constraint.label());
    Error::invalid_request(
        "unknown_model_price",
        Some("model".into()),
        format!(
            "no price is known for model '{route}', which the budget '{budget}' needs; add it under \
             prices: in the configuration, or set a price for unknown models"
        ),
    )
}

/// `x-ratelimit-*` headers of the most constrained rate counters, as OpenAI writes them.
fn rate_headers(ctx: &mut Ctx, admission: &Admission) {
    let headers = ctx.response_headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    if let Some(requests) = admission.requests {
        set("x-ratelimit-limit-requests", requests.limit.to_string());
        set(
            "x-ratelimit-remaining-requests",
            requests.remaining.to_string(),
        );
        set("x-ratelimit-reset-requests", reset_text(requests.reset));
    }
    if let Some(tokens) = admission.tokens {
        set("x-ratelimit-limit-tokens", tokens.limit.to_string());
        set("x-ratelimit-remaining-tokens", tokens.remaining.to_string());
        set("x-ratelimit-reset-tokens", reset_text(tokens.reset));
    }
}

/// A reset time as OpenAI writes it: `1s`, `6m0s`, `250ms`.
fn reset_text(reset: Duration) -> String {
    let ms = reset.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}s", ms.div_ceil(1000))
    } else {
        let secs = ms.div_ceil(1000);
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_read_like_openais() {
        assert_eq!(reset_text(Duration::from_millis(250)), "250ms");
        assert_eq!(reset_text(Duration::from_millis(1200)), "2s");
        assert_eq!(reset_text(Duration::from_secs(60)), "1m0s");
        assert_eq!(reset_text(Duration::from_secs(361)), "6m1s");
    }
}
