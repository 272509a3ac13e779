//! How attempts are retried ([`RetryPolicy`]) and bounded in time ([`Timeouts`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How the pipeline retries a target's failed attempts.
///
/// Only retryable errors are retried: a provider's 429, 5xx and overload, connection
/// failures and timeouts ([`sllmp_core::Error::is_retryable`]); never another 4xx, never
/// the proxy's own rejections, never after the first chunk reached the client.
/// `max_attempts` counts every attempt at one target (the first included); each fallback
/// target gets as many. Before attempt `n + 1` the pipeline waits a random time between 0
/// and `min(max_delay, base_delay × 2^(n−1))` ("full jitter", so that clients retrying
/// together spread out). A provider's `Retry-After` is honoured when it is within
/// `max_delay` (the wait is then at least that long); a longer one ends the target's
/// attempts at once, and the error goes back with it (or the next fallback is tried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per target, the first included; 1 means no retry.
    pub max_attempts: u32,
    /// The cap of the first wait.
    pub base_delay: Duration,
    /// The cap of every wait, and the longest `Retry-After` honoured.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// No retries: one attempt per target.
    pub const fn none() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        }
    }

    /// 3 attempts, waits capped at 1 s, 2 s, … up to 30 s.
    pub const fn standard() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }

    /// The longest wait after failed attempt `attempt` (from 1) before jitter.
    pub fn backoff_cap(&self, attempt: u32) -> Duration {
        let factor = 2f64.powi(attempt.saturating_sub(1).min(62) as i32);
        let cap = self.base_delay.as_secs_f64() * factor;
        Duration::from_secs_f64(cap.min(self.max_delay.as_secs_f64()).max(0.0))
    }

    /// The wait before retrying after failed attempt `attempt` (from 1), for a unit random
    /// number `unit` in [0, 1); `None` when the provider's `retry_after` is longer than
    /// `max_delay` (do not retry this target).
    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Option<Duration> {
        let jittered = self.backoff_cap(attempt).mul_f64(unit.clamp(0.0, 1.0));
        match retry_after {
            Some(after) if after > self.max_delay => None,
            Some(after) => Some(after.max(jittered)),
            None => Some(jittered),
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::none()
    }
}

/// The time limits of each attempt.
///
/// - `connect`: a new connection to the provider (TCP and TLS).
/// - `first_token`: the first chunk of a stream, or the response head of a non-streamed
///   answer; also the longest silence between two chunks of a stream.
/// - `total`: the whole attempt, its stream included.
///
/// A limit hit before anything reached the client is a 504 `timeout_error`
/// (`provider_timeout`), retryable and open to fallbacks; after the first chunk, one error
/// frame ends the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// 10 s by default.
    pub connect: Duration,
    /// 120 s by default (reasoning models can think for long before their first token).
    pub first_token: Duration,
    /// 600 s by default.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_token: Duration::from_secs(120),
            total: Duration::from_secs(600),
        }
    }
}

/// A number in [0, 1) good enough to spread retries; not for anything secret.
pub(crate) fn random_unit() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    // splitmix64
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let policy = RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
        };
        let caps: Vec<u64> = (1..=5).map(|n| policy.backoff_cap(n).as_secs()).collect();
        assert_eq!(caps, [1, 2, 4, 5, 5]);
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_cap() {
        let policy = RetryPolicy::standard();
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..10_000 {
            let unit = random_unit();
            assert!((0.0..1.0).contains(&unit));
            let delay = policy.delay(3, None, unit).unwrap();
            assert!(delay <= Duration::from_secs(4), "{delay:?}");
            seen_low |= delay < Duration::from_millis(400);
            seen_high |= delay > Duration::from_millis(3600);
        }
        assert!(seen_low && seen_high, "the jitter covers the whole range");
        assert_eq!(policy.delay(1, None, 0.0), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_is_honoured_within_max_delay_only() {
        let policy = RetryPolicy::standard();
        let after = Duration::from_secs(7);
        assert_eq!(policy.delay(1, Some(after), 0.5), Some(after));
        assert_eq!(policy.delay(1, Some(Duration::from_secs(31)), 0.5), None);
        // A wait longer than the provider asked for is kept.
        let policy = RetryPolicy {
            base_delay: Duration::from_secs(20),
            ..policy
        };
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(1)), 0.5),
            Some(Duration::from_secs(10))
        );
    }
}
