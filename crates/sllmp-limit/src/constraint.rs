//! What a limit is: [`Constraint`]s over [`Dimension`]s, with a [`BudgetLimit`] and/or a
//! [`RateLimit`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A budget or rate-limit rule: usage is counted per combination of its dimensions' values
/// (`[user_id]`: each user their own counter; `[]`: one counter for everyone), under the
/// constraint's own name, so two constraints never share a counter.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    /// Its name (the key in `budget_constraints`).
    pub name: Arc<str>,
    /// Shown in rejections instead of the name, when set.
    pub description: Option<String>,
    /// What usage is counted per.
    pub dimensions: Vec<Dimension>,
    /// A spending limit over a fixed window.
    pub budget: Option<BudgetLimit>,
    /// Request and token rates over a sliding minute.
    pub rate: Option<RateLimit>,
}

impl Constraint {
    /// A constraint called `name` over `dimensions`, limiting nothing yet.
    pub fn new(name: impl Into<Arc<str>>, dimensions: Vec<Dimension>) -> Constraint {
        Constraint {
            name: name.into(),
            description: None,
            dimensions,
            budget: None,
            rate: None,
        }
    }

    /// Sets the description shown in rejections.
    pub fn description(mut self, description: impl Into<String>) -> Constraint {
        self.description = Some(description.into());
        self
    }

    /// Limits spending to `usd` per `window`.
    pub fn budget(mut self, usd: f64, window: Window) -> Constraint {
        self.budget = Some(BudgetLimit {
            limit_nanos: usd_to_nanos(usd),
            window,
        });
        self
    }

    /// Limits requests per minute.
    pub fn requests_per_minute(mut self, per_minute: u32) -> Constraint {
        self.rate.get_or_insert_with(RateLimit::default).per_minute = Some(per_minute);
        self
    }

    /// Limits tokens (input and output) per minute.
    pub fn tokens_per_minute(mut self, tokens: u64) -> Constraint {
        self.rate
            .get_or_insert_with(RateLimit::default)
            .tokens_per_minute = Some(tokens);
        self
    }

    /// What rejections call it: its description, else its name.
    pub fn label(&self) -> &str {
        self.description.as_deref().unwrap_or(&self.name)
    }
}

/// One thing usage is counted per.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// The feature (`feature`); `unknown` when none was chosen.
    Feature,
    /// `metadata.user_id`, else the OpenAI `user` field (`user_id`); `anonymous` when neither.
    UserId,
    /// `metadata.organization`, else the client key's (`organization`); `unknown` when none.
    Organization,
    /// `metadata.team`, else the client key's (`team`); `unknown` when none.
    Team,
    /// The client key, by its name or hash, never in clear (`api_key`); `none` when the
    /// request had none.
    ApiKey,
    /// The model as the provider names it (`model`).
    Model,
    /// The provider as addressed (`provider`).
    Provider,
    /// `metadata.<key>` (`meta:<key>`); `unknown` when absent.
    Meta(String),
}

impl Dimension {
    /// Reads a dimension as written in a configuration (`user_id`, `meta:project`).
    pub fn parse(text: &str) -> Option<Dimension> {
        Some(match text {
            "feature" => Dimension::Feature,
            "user_id" => Dimension::UserId,
            "organization" => Dimension::Organization,
            "team" => Dimension::Team,
            "api_key" => Dimension::ApiKey,
            "model" => Dimension::Model,
            "provider" => Dimension::Provider,
            other => {
                let key = other.strip_prefix("meta:")?;
                if key.is_empty() {
                    return None;
                }
                Dimension::Meta(key.to_string())
            }
        })
    }

    /// The value used when a request has none for this dimension.
    pub fn placeholder(&self) -> &'static str {
        match self {
            Dimension::UserId => "anonymous",
            Dimension::ApiKey => "none",
            _ => "unknown",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dimension::Feature => f.write_str("feature"),
            Dimension::UserId => f.write_str("user_id"),
            Dimension::Organization => f.write_str("organization"),
            Dimension::Team => f.write_str("team"),
            Dimension::ApiKey => f.write_str("api_key"),
            Dimension::Model => f.write_str("model"),
            Dimension::Provider => f.write_str("provider"),
            Dimension::Meta(key) => write!(f, "meta:{key}"),
        }
    }
}

/// At most `limit_nanos` (nano-USD: money is whole nano-dollars in this crate) per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimit {
    /// The amount, in nano-USD.
    pub limit_nanos: u64,
    /// The fixed window it applies to.
    pub window: Window,
}

/// The fixed UTC window of a budget. `1h` and `1d` start on the hour and at 00:00 UTC;
/// `7d` on Monday 00:00 UTC; `30d` every 30 days from 1970-01-01 00:00 UTC (not calendar
/// months). Spend resets when a new window starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    /// `1h`.
    Hour,
    /// `1d`.
    Day,
    /// `7d`.
    Week,
    /// `30d`.
    Days30,
}

impl Window {
    /// The window's length.
    pub fn length(self) -> Duration {
        Duration::from_secs(match self {
            Window::Hour => 3_600,
            Window::Day => 86_400,
            Window::Week => 7 * 86_400,
            Window::Days30 => 30 * 86_400,
        })
    }

    /// As written in a configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "1d",
            Window::Week => "7d",
            Window::Days30 => "30d",
        }
    }

    /// The start of the window holding `at`, in Unix seconds.
    pub fn start(self, at: SystemTime) -> u64 {
        let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let length = self.length().as_secs();
        // 1970-01-01 was a Thursday: Mondays are 4 days later.
        let offset = if self == Window::Week { 4 * 86_400 } else { 0 };
        (secs + length - offset) / length * length + offset - length
    }

    /// When the window holding `at` ends, in Unix seconds.
    pub fn end(self, at: SystemTime) -> u64 {
        self.start(at) + self.length().as_secs()
    }
}

/// Requests and tokens per sliding minute (at least one of them is set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests admitted in any 60 seconds.
    pub per_minute: Option<u32>,
    /// Tokens (input and output, estimated at admission, actual once known) in any 60
    /// seconds.
    pub tokens_per_minute: Option<u64>,
}

/// `usd` as nano-USD, rounded to the nearest; negative or not finite is 0.
pub fn usd_to_nanos(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e9).round().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// Nano-USD as USD.
pub fn nanos_to_usd(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn windows_are_fixed_utc_periods() {
        // 2026-12-04 13:45:10 UTC is 1796391910.
        let now = at(1_796_391_910);
        assert_eq!(Window::Day.start(now), 1_796_342_400); // 00:00 UTC that day
        assert_eq!(Window::Hour.start(now), 1_796_389_200); // 13:00
        assert_eq!(Window::Week.start(now), 1_795_996_800); // Monday 2026-11-30 00:00
        assert_eq!(Window::Day.end(now) - Window::Day.start(now), 86_400);
        assert_eq!(Window::Days30.start(now) % (30 * 86_400), 0);
        // The last second of a day is in that day; the next starts a new window.
        assert_eq!(Window::Day.start(at(1_796_428_799)), 1_796_342_400);
        assert_eq!(Window::Day.start(at(1_796_428_800)), 1_796_428_800);
    }

    #[test]
    fn dimensions_read_as_written() {
        for text in [
            "feature",
            "user_id",
            "organization",
            "team",
            "api_key",
            "model",
            "provider",
            "meta:project",
        ] {
            assert_eq!(Dimension::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Dimension::parse("meta:"), None);
        assert_eq!(Dimension::parse("user"), None);
    }

    #[test]
    fn money_is_whole_nano_dollars() {
        assert_eq!(usd_to_nanos(100.0), 100_000_000_000);
        assert_eq!(usd_to_nanos(0.0000015), 1_500);
        assert_eq!(usd_to_nanos(f64::NAN), 0);
        assert_eq!(usd_to_nanos(-1.0), 0);
        assert_eq!(nanos_to_usd(2_500_000_000), 2.5);
    }
}
