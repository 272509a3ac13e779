//! [`LimitBackend`]: where counters live, and what the middleware asks of it: reserve
//! every matching constraint at once, settle after.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::Constraint;

/// One counter: a constraint and the values of its dimensions for a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    /// The constraint's name.
    pub constraint: Arc<str>,
    /// Its dimensions' values, in the constraint's order (placeholders for missing ones).
    pub values: Vec<String>,
}

impl fmt::Display for CounterKey {
    /// `name` or `name[value,value]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.constraint)?;
        if !self.values.is_empty() {
            write!(f, "[{}]", self.values.join(","))?;
        }
        Ok(())
    }
}

/// What one request asks of every constraint it matches, reserved in one step.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// Identifies the reservation, for the settlement.
    pub id: u64,
    /// The counters, one per matching constraint.
    pub claims: Vec<Claim>,
    /// The estimated cost, nano-USD (charged to every budget claim).
    pub cost_nanos: u64,
    /// The estimated tokens, input and output (charged to every token-rate claim).
    pub tokens: u64,
}

/// One constraint's counter in a [`Ticket`].
#[derive(Debug, Clone)]
pub struct Claim {
    /// The counter.
    pub key: CounterKey,
    /// The constraint it counts for.
    pub constraint: Arc<Constraint>,
}

/// What a settlement charges, replacing the ticket's estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actual {
    /// The actual cost, nano-USD (0 for a request no provider billed).
    pub cost_nanos: u64,
    /// The actual tokens, input and output.
    pub tokens: u64,
}

/// A ticket was admitted: the state of its most constrained rate counters, for the
/// `x-ratelimit-*` headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Requests: the limit, what is left after this one, and when all of it is back.
    pub requests: Option<RateState>,
    /// Tokens: the same.
    pub tokens: Option<RateState>,
}

/// One rate counter's state after an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    /// The limit per minute.
    pub limit: u64,
    /// What is left now.
    pub remaining: u64,
    /// When the counter is back to its full limit.
    pub reset: Duration,
}

/// A ticket was refused by one constraint; nothing was counted anywhere.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The constraint that refused.
    pub constraint: Arc<Constraint>,
    /// The counter it refused on.
    pub key: CounterKey,
    /// Which of its limits.
    pub kind: LimitKind,
    /// The usage counted now (requests, tokens, or nano-USD spent and reserved).
    pub usage: u64,
    /// The limit, in the same unit.
    pub limit: u64,
    /// What the ticket asked for, in the same unit.
    pub asked: u64,
    /// When enough capacity is back for the ticket, if it ever fits.
    pub retry_after: Duration,
}

/// Which limit of a constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Spend per window.
    Budget,
}

/// A live counter, for `GET /v1/limits`.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterView {
    /// The counter.
    pub key: CounterKey,
    /// Which limit it counts.
    pub kind: LimitKind,
    /// Its usage now (for budgets, spent plus reserved, nano-USD).
    pub usage: u64,
    /// Of which reserved by requests still running (budgets).
    pub reserved: u64,
    /// The limit.
    pub limit: u64,
    /// When it resets (the end of the budget window; for rates, when all is back).
    pub resets_in: Duration,
}

/// A backend could not answer (Redis down or slow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    /// What happened, without secrets.
    pub message: String,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {}

/// Where counters live: in this process ([`InMemory`](crate::InMemory)) or shared by
/// every replica (Redis).
///
/// `reserve` is all or nothing: either every claim of the ticket is counted, or none is and
/// the first refusing claim is returned. `settle` replaces a ticket's estimates by what it
/// actually cost.
#[async_trait::async_trait]
pub trait LimitBackend: Send + Sync + 'static {
    /// Reserves `ticket` on every claim, or none.
    async fn reserve(&self, ticket: &Ticket) -> Result<Result<Admission, Rejection>, BackendError>;

    /// Settles `ticket` to `actual`.
    async fn settle(&self, ticket: &Ticket, actual: Actual) -> Result<(), BackendError>;

    /// Every live counter.
    async fn counters(&self) -> Result<Vec<CounterView>, BackendError>;

    /// Drops every counter of `constraint`; how many there were.
    async fn reset(&self, constraint: &str) -> Result<usize, BackendError>;
}
