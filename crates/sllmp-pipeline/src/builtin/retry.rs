//! The retry middleware: exponential backoff with jitter, honouring `Retry-After`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sllmp_core::Error;

use crate::{Ctx, ErrorAction, HookSet, Middleware, RetryWindow};

/// Retries failed provider calls whose error is retryable (provider rate limits, 5xx and
/// overload, network failures and timeouts), before anything has reached the client.
///
/// The delay before retry `n` is `base_delay × multiplier^(n−1)`, capped at `max_delay`,
/// with "equal jitter" (a random value between half and all of it), and never shorter than
/// the provider's `Retry-After`. `max_retries` counts retries: the provider is called at most
/// `max_retries + 1` times. Bad requests and internal errors are never retried.
///
/// Each request gets its own instance, so attempts are never shared between requests.
///
/// ```
/// use std::time::Duration;
/// use sllmp_pipeline::{Pipeline, Retry};
///
/// fn factory(pipeline: &mut Pipeline) {
///     pipeline.add(Retry::new().max_retries(2).base_delay(Duration::from_millis(200)));
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Retry {
    max_retries: u32,
    base_delay: Duration,
    max_delay: Duration,
    multiplier: f64,
    jitter: bool,
    retries: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry::new()
    }
}

impl Retry {
    /// 3 retries, 1 s base delay doubling up to 60 s, with jitter: the Python original's
    /// defaults, plus jitter.
    pub fn new() -> Retry {
        Retry {
            max_retries: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: true,
            retries: 0,
        }
    }

    /// How many times to retry after the first call.
    pub fn max_retries(mut self, max_retries: u32) -> Retry {
        self.max_retries = max_retries;
        self
    }

    /// The delay before the first retry.
    pub fn base_delay(mut self, base_delay: Duration) -> Retry {
        self.base_delay = base_delay;
        self
    }

    /// The longest delay computed by the backoff (a provider's `Retry-After` may be longer).
    pub fn max_delay(mut self, max_delay: Duration) -> Retry {
        self.max_delay = max_delay;
        self
    }

    /// The factor between consecutive delays.
    pub fn multiplier(mut self, multiplier: f64) -> Retry {
        self.multiplier = multiplier;
        self
    }

    /// Whether to randomise delays (on by default, so retries from many clients spread out).
    pub fn jitter(mut self, jitter: bool) -> Retry {
        self.jitter = jitter;
        self
    }

    /// The delay before retry number `retry` (from 1), before jitter and `Retry-After`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = self.multiplier.powi(retry.saturating_sub(1) as i32);
        let delay = self.base_delay.as_secs_f64() * factor;
        Duration::from_secs_f64(delay.min(self.max_delay.as_secs_f64()).max(0.0))
    }
}

#[async_trait::async_trait]
impl Middleware for Retry {
    fn name(&self) -> &'static str {
        "retry"
    }

    fn hooks(&self) -> HookSet {
        HookSet::ERROR
    }

    async fn on_error(&mut self, ctx: &mut Ctx, err: &Error, window: RetryWindow) -> ErrorAction {
        let RetryWindow::Open { attempt } = window else {
            return ErrorAction::Propagate;
        };
        if !err.is_retryable() {
            return ErrorAction::Propagate;
        }
        if self.retries >= self.max_retries {
            tracing::warn!(
                request_id = ctx.request_id(),
                attempts = attempt,
                error = err.message(),
                "retries exhausted"
            );
            return ErrorAction::Propagate;
        }
        self.retries += 1;
        let mut delay = self.backoff(self.retries);
        if self.jitter {
            delay = delay.mul_f64(0.5 + 0.5 * random_unit());
        }
        if let Some(retry_after) = err.retry_after() {
            delay = delay.max(retry_after);
        }
        tracing::info!(
            request_id = ctx.request_id(),
            retry = self.retries,
            max_retries = self.max_retries,
            delay_ms = delay.as_millis() as u64,
            error = err.message(),
            "retrying the provider call"
        );
        ErrorAction::Retry { after: delay }
    }
}

/// A number in [0, 1) good enough to spread retries; not for anything secret.
fn random_unit() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut x = nanos ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let retry = Retry::new()
            .base_delay(Duration::from_secs(1))
            .max_delay(Duration::from_secs(5));
        let delays: Vec<u64> = (1..=5).map(|n| retry.backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            let x = random_unit();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
