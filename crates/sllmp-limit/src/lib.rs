//! Rate limits and cost budgets for SLLMP, exact under concurrency.
//!
//! A [`Constraint`] counts usage per combination of its [`Dimension`]s' values (`feature`,
//! `user_id`, `organization`, `team`, `api_key`, `model`, `provider`, `meta:<key>`), with a
//! [`BudgetLimit`] (spend per fixed UTC [`Window`]) and/or a [`RateLimit`] (requests and
//! tokens per sliding minute). The [`Limiter`] middleware reserves, before the provider
//! call, one request, the estimated tokens and the estimated cost on every constraint a
//! request matches, in one all-or-nothing step of its [`LimitBackend`]; at completion it
//! settles the reservation to the actual cost, priced from the embedded [`PriceTable`]
//! (streams, cancelled requests and shutdowns included: completion always runs).
//!
//! Two backends: [`InMemory`] (exact within a process) and [`RedisBackend`] (exact across
//! every replica sharing a Redis or a Redis Cluster: one script call to reserve, one to
//! settle; a short timeout and a fail-open or fail-closed policy when Redis fails).
//!
//! It depends on `sllmp-pipeline` and `sllmp-core`, never on axum, a provider or
//! `sllmp-observe`.

mod backend;
mod constraint;
mod estimate;
mod limiter;
mod memory;
mod price;
mod redis;

pub use crate::redis::{RedisBackend, RedisOptions};
pub use backend::{
    Actual, Admission, BackendError, Claim, CounterKey, CounterView, LimitBackend, LimitKind,
    RateState, Rejection, Ticket,
};
pub use constraint::{
    BudgetLimit, Constraint, Dimension, RateLimit, Window, nanos_to_usd, usd_to_nanos,
};
pub use estimate::{DEFAULT_OUTPUT_TOKENS, estimate_tokens};
pub use limiter::{ClientKeyId, LimitMiddleware, Limiter, OnBackendError, Pricing};
pub use memory::InMemory;
pub use price::{Price, PriceTable, UnknownPrice};
