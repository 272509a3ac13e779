//! The retry middleware: sets the request's [`RetryPolicy`].

use std::time::Duration;

use sllmp_core::{Error, Request};

use crate::{Ctx, Flow, HookSet, Middleware, RetryPolicy};

/// Retries failed provider calls whose error is retryable (provider rate limits, 5xx and
/// overload, network failures and timeouts), before anything has reached the client, with
/// exponential backoff and full jitter; see [`RetryPolicy`] for the exact rules, and
/// `Retry-After`.
///
/// It only sets the policy (in `on_request`); the pipeline runs the attempts, so retries and
/// [`Fallbacks`](crate::Fallbacks) compose: each target gets its attempts, then the next
/// target is tried.
///
/// ```
/// use std::time::Duration;
/// use sllmp_pipeline::{Pipeline, Retry};
///
/// fn factory(pipeline: &mut Pipeline) {
///     pipeline.add(Retry::new().max_attempts(3).base_delay(Duration::from_millis(200)));
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    policy: RetryPolicy,
}

impl Default for Retry {
    fn default() -> Self {
        Retry::new()
    }
}

impl Retry {
    /// 3 attempts, waits capped at 1 s doubling up to 30 s ([`RetryPolicy::standard`]).
    pub fn new() -> Retry {
        Retry {
            policy: RetryPolicy::standard(),
        }
    }

    /// Retries by `policy`.
    pub fn with_policy(policy: RetryPolicy) -> Retry {
        Retry { policy }
    }

    /// Attempts per target, the first included (at least 1).
    pub fn max_attempts(mut self, max_attempts: u32) -> Retry {
        self.policy.max_attempts = max_attempts.max(1);
        self
    }

    /// The cap of the first wait.
    pub fn base_delay(mut self, base_delay: Duration) -> Retry {
        self.policy.base_delay = base_delay;
        self
    }

    /// The cap of every wait, and the longest provider `Retry-After` honoured.
    pub fn max_delay(mut self, max_delay: Duration) -> Retry {
        self.policy.max_delay = max_delay;
        self
    }

    /// The policy this middleware sets.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }
}

#[async_trait::async_trait]
impl Middleware for Retry {
    fn name(&self) -> &'static str {
        "retry"
    }

    fn hooks(&self) -> HookSet {
        HookSet::REQUEST
    }

    async fn on_request(&mut self, ctx: &mut Ctx, _req: &mut Request) -> Result<Flow, Error> {
        ctx.set_retry_policy(self.policy);
        Ok(Flow::Continue)
    }
}
