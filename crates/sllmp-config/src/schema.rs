//! The YAML schema as serde types.
//!
//! The file format is the Python original's (same keys). Where it differs, on purpose:
//!
//! - unknown keys are errors (`deny_unknown_fields`), except inside a provider alias, whose
//!   options the provider adapter validates, and inside `custom`;
//! - every value is checked where it is read, so each error carries its key path: feature
//!   and alias names, `provider:model` strings, dimensions, windows, limits;
//! - a budget constraint needs `budget_limit` or `rate_limit` (and a rate limit
//!   `per_minute` or `tokens_per_minute`); the keys the original's README showed
//!   (`max_cost`, `window_seconds`, `max_requests`) are refused with the right ones;
//! - `prices` (top level) is this project's own key;
//! - `langfuse: {enabled: false}` needs no keys;
//! - numbers and booleans may also be written as strings, so `${VAR}` can supply them;
//! - an empty mapping written as `key:` (null) counts as `{}`;
//! - `retry`, `timeouts` and `fallbacks` are this project's own keys (the original had
//!   none); durations are written with a unit (`250ms`, `5s`, `1m`, `1h`).
//!
//! Error messages raised here are final problem text (`<what is wrong>; <how to fix it>`);
//! the loader adds the key path. They never repeat a value that could be a secret.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use sllmp_core::Secret;
use sllmp_pipeline::{RetryPolicy, Timeouts};

use crate::error::is_plain_name;

// ---------------------------------------------------------------------------------------
// Document structure (crate-private).
// ---------------------------------------------------------------------------------------

/// The whole document. `defaults` and `features` are `Option` so that their absence is
/// reported by the loader, after every other problem has been collected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) defaults: Option<RawDefaults>,
    /// A feature written as `name:` (null) is a feature that sets nothing.
    pub(crate) features: Option<BTreeMap<FeatureName, Option<RawFeature>>>,
    /// Prices for budgets, for every feature.
    pub(crate) prices: Option<Prices>,
    /// Settings of the gateway process (the Redis behind the limits).
    pub(crate) server: Option<ServerSettings>,
}

/// `defaults:`: a feature without `description`, `owner` and `custom`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    pub(crate) model: Option<ModelRef>,
    pub(crate) provider_api_keys: Option<BTreeMap<String, Secret>>,
    pub(crate) providers: Option<BTreeMap<AliasName, ProviderAlias>>,
    pub(crate) budget_constraints: Option<BTreeMap<String, Constraint>>,
    pub(crate) langfuse: Option<LangfuseSetting>,
    pub(crate) retry: Option<RetrySetting>,
    pub(crate) timeouts: Option<TimeoutsSetting>,
    pub(crate) fallbacks: Option<Vec<ModelRef>>,
}

/// One entry of `features:`. `None` (absent or null) inherits from `defaults`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFeature {
    pub(crate) description: Option<String>,
    pub(crate) owner: Option<String>,
    pub(crate) model: Option<ModelRef>,
    pub(crate) provider_api_keys: Option<BTreeMap<String, Secret>>,
    pub(crate) providers: Option<BTreeMap<AliasName, ProviderAlias>>,
    pub(crate) budget_constraints: Option<BTreeMap<String, Constraint>>,
    pub(crate) langfuse: Option<LangfuseSetting>,
    pub(crate) retry: Option<RetrySetting>,
    pub(crate) timeouts: Option<TimeoutsSetting>,
    pub(crate) fallbacks: Option<Vec<ModelRef>>,
    pub(crate) custom: Option<Map<String, Value>>,
}

/// A feature name: `^[a-zA-Z0-9_-]+$`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct FeatureName(pub(crate) String);

impl<'de> Deserialize<'de> for FeatureName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if is_plain_name(&name) {
            Ok(FeatureName(name))
        } else {
            Err(de::Error::custom(format!(
                "invalid feature name; use only letters, digits, \"_\" and \"-\"{}",
                suggest_name(&name)
            )))
        }
    }
}

/// A provider alias name: `^[a-zA-Z0-9_-]+$`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AliasName(pub(crate) String);

impl<'de> Deserialize<'de> for AliasName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if is_plain_name(&name) {
            Ok(AliasName(name))
        } else {
            Err(de::Error::custom(format!(
                "invalid provider alias name; use only letters, digits, \"_\" and \"-\"{}",
                suggest_name(&name)
            )))
        }
    }
}

/// `(e.g. "chat-bot")` for `chat bot`: the name with every other character replaced by `-`.
fn suggest_name(name: &str) -> String {
    let fixed: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if fixed.trim_matches('-').is_empty() {
        String::new()
    } else {
        format!(" (e.g. {fixed:?})")
    }
}

/// A `provider:model` string, checked: both sides of the first `:` are non-empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ModelRef(pub(crate) String);

impl<'de> Deserialize<'de> for ModelRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let model = String::deserialize(deserializer)?;
        match model.split_once(':') {
            Some((provider, name)) if !provider.is_empty() && !name.is_empty() => {
                Ok(ModelRef(model))
            }
            _ => {
                let example = if model.is_empty() || model.contains(':') {
                    "openai:gpt-4o".to_owned()
                } else {
                    format!("openai:{model}")
                };
                Err(de::Error::custom(format!(
                    "{model:?} is not written as provider:model; write it as e.g. {example:?}"
                )))
            }
        }
    }
}

/// A feature's `langfuse:` after reading: off, or on with its settings.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LangfuseSetting {
    /// `enabled: false`: no Langfuse for the feature, whatever the defaults say.
    Disabled,
    /// Langfuse on, with these settings.
    Enabled(LangfuseConfig),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLangfuse {
    public_key: Option<Secret>,
    #[serde(default, deserialize_with = "non_blank_secret")]
    secret_key: Option<Secret>,
    #[serde(default = "default_base_url")]
    base_url: String,
    #[serde(default = "yes", deserialize_with = "flexible_bool")]
    enabled: bool,
    #[serde(default = "default_prompt_label")]
    default_prompt_label: String,
}

fn default_base_url() -> String {
    LangfuseConfig::DEFAULT_BASE_URL.to_owned()
}

fn default_prompt_label() -> String {
    LangfuseConfig::DEFAULT_PROMPT_LABEL.to_owned()
}

fn yes() -> bool {
    true
}

impl<'de> Deserialize<'de> for LangfuseSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawLangfuse::deserialize(deserializer)?;
        if !raw.enabled {
            return Ok(LangfuseSetting::Disabled);
        }
        match (raw.public_key, raw.secret_key) {
            (Some(public_key), Some(secret_key)) => Ok(LangfuseSetting::Enabled(LangfuseConfig {
                public_key,
                secret_key,
                base_url: raw.base_url,
                enabled: true,
                default_prompt_label: raw.default_prompt_label,
            })),
            // The loader turns `missing field` messages into one problem per named field,
            // at the field's own path.
            (None, Some(_)) => Err(de::Error::missing_field("public_key")),
            (Some(_), None) => Err(de::Error::missing_field("secret_key")),
            (None, None) => Err(de::Error::custom("missing field `public_key` `secret_key`")),
        }
    }
}

fn non_blank_secret<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Secret>, D::Error> {
    let secret = Secret::deserialize(deserializer)?;
    if secret.expose().trim().is_empty() {
        Err(de::Error::custom(
            "is empty; set it to the Langfuse secret key, e.g. secret_key: \"${LANGFUSE_SECRET_KEY}\"",
        ))
    } else {
        Ok(Some(secret))
    }
}

// ---------------------------------------------------------------------------------------
// Public types that are read directly from the file.
// ---------------------------------------------------------------------------------------

/// A provider alias (`providers.<alias>`): a name that stands for a provider plus options.
///
/// A model `my-openai:gpt-4o` with alias `my-openai: {provider: openai, api_base: ...}`
/// calls provider `openai` with the alias's options. The options are not checked here: the
/// provider adapter validates them.
///
/// `Debug` prints the option names only: an option value can be a credential.
#[derive(Clone, PartialEq)]
pub struct ProviderAlias {
    /// The underlying provider, such as `openai`. Never empty.
    pub provider: String,
    /// Every other key of the alias, as written (after `${VAR}` substitution).
    pub options: Map<String, Value>,
}

impl fmt::Debug for ProviderAlias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderAlias")
            .field("provider", &self.provider)
            .field("options", &KeysOnly(&self.options))
            .finish()
    }
}

/// Debug-prints a map as its keys, each with a redacted value.
pub(crate) struct KeysOnly<'a>(pub(crate) &'a Map<String, Value>);

impl fmt::Debug for KeysOnly<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, format_args!(".."))))
            .finish()
    }
}

impl<'de> Deserialize<'de> for ProviderAlias {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AliasVisitor;

        impl<'de> Visitor<'de> for AliasVisitor {
            type Value = ProviderAlias;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping with a provider key")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ProviderAlias, A::Error> {
                let mut provider = None;
                let mut options = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "provider" {
                        provider = Some(map.next_value::<ProviderName>()?.0);
                    } else {
                        let value = map.next_value::<Value>()?;
                        options.insert(key, value);
                    }
                }
                let provider = provider.ok_or_else(|| de::Error::missing_field("provider"))?;
                Ok(ProviderAlias { provider, options })
            }
        }

        deserializer.deserialize_map(AliasVisitor)
    }
}

/// An alias's `provider`: a non-blank string.
struct ProviderName(String);

impl<'de> Deserialize<'de> for ProviderName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if name.trim().is_empty() {
            Err(de::Error::custom(
                "is empty; name the provider the alias stands for, e.g. provider: openai",
            ))
        } else {
            Ok(ProviderName(name))
        }
    }
}

/// A budget or rate-limit rule (`budget_constraints.<name>`).
///
/// Usage is counted per combination of the [`dimensions`](Self::dimensions) values, so
/// `[user_id]` gives each user their own budget, and `[]` gives one budget for everyone.
/// At least one of `budget_limit` and `rate_limit` is set.
#[derive(Clone, Debug, PartialEq)]
pub struct Constraint {
    /// The constraint's key in `budget_constraints`.
    pub name: String,
    /// What usage is counted per.
    pub dimensions: Vec<Dimension>,
    /// A spending limit over a window.
    pub budget_limit: Option<BudgetLimit>,
    /// Request and token rates over a sliding minute.
    pub rate_limit: Option<RateLimit>,
    /// A human description, used in limit-exceeded messages.
    pub description: Option<String>,
}

/// The keys of a constraint, in the order unknown-key messages list them.
const CONSTRAINT_KEYS: &[&str] = &["dimensions", "budget_limit", "rate_limit", "description"];

/// The keys the Python original's README showed for a constraint; its code never read them.
const LEGACY_CONSTRAINT_KEYS: [&str; 3] = ["max_cost", "window_seconds", "max_requests"];

/// The problem text of a constraint written with [`LEGACY_CONSTRAINT_KEYS`].
pub(crate) const LEGACY_CONSTRAINT_MESSAGE: &str = "`max_cost`, `window_seconds` and \
    `max_requests` are not keys of a constraint (the Python original's README showed them, but \
    its code never accepted them); write budget_limit: {limit: 10.0, window: 1d} and/or \
    rate_limit: {per_minute: 60}, with dimensions: [feature]";

/// One key of a constraint mapping.
enum ConstraintKey {
    Dimensions,
    BudgetLimit,
    RateLimit,
    Description,
    /// One of [`LEGACY_CONSTRAINT_KEYS`].
    Legacy,
}

impl<'de> Deserialize<'de> for ConstraintKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = String::deserialize(deserializer)?;
        Ok(match key.as_str() {
            "dimensions" => ConstraintKey::Dimensions,
            "budget_limit" => ConstraintKey::BudgetLimit,
            "rate_limit" => ConstraintKey::RateLimit,
            "description" => ConstraintKey::Description,
            other if LEGACY_CONSTRAINT_KEYS.contains(&other) => ConstraintKey::Legacy,
            other => return Err(de::Error::unknown_field(other, CONSTRAINT_KEYS)),
        })
    }
}

impl<'de> Deserialize<'de> for Constraint {
    /// Read key by key (not derived) so that a constraint written with the Python README's
    /// keys is one problem, at the constraint, before anything is reported missing.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ConstraintVisitor;

        impl<'de> Visitor<'de> for ConstraintVisitor {
            type Value = Constraint;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Constraint, A::Error> {
                let mut dimensions = None;
                let mut budget_limit = None;
                let mut rate_limit = None;
                let mut description = None;
                while let Some(key) = map.next_key::<ConstraintKey>()? {
                    match key {
                        ConstraintKey::Dimensions => {
                            dimensions = Some(
                                map.next_value::<Vec<DimensionName>>()?
                                    .into_iter()
                                    .map(|d| d.0)
                                    .collect(),
                            );
                        }
                        ConstraintKey::BudgetLimit => {
                            budget_limit = map.next_value::<Option<BudgetLimit>>()?;
                        }
                        ConstraintKey::RateLimit => {
                            rate_limit = map.next_value::<Option<RateLimit>>()?;
                        }
                        ConstraintKey::Description => {
                            description = map.next_value::<Option<String>>()?;
                        }
                        ConstraintKey::Legacy => {
                            return Err(de::Error::custom(LEGACY_CONSTRAINT_MESSAGE));
                        }
                    }
                }
                let dimensions =
                    dimensions.ok_or_else(|| de::Error::missing_field("dimensions"))?;
                if budget_limit.is_none() && rate_limit.is_none() {
                    return Err(de::Error::custom(
                        "sets neither budget_limit nor rate_limit, so it limits nothing; add \
                         budget_limit: {limit: 10.0, window: 1d} or rate_limit: {per_minute: 60}",
                    ));
                }
                Ok(Constraint {
                    name: String::new(),
                    dimensions,
                    budget_limit,
                    rate_limit,
                    description,
                })
            }
        }

        deserializer.deserialize_map(ConstraintVisitor)
    }
}

/// What a constraint counts usage per: the limit crate's own type, read from its name as
/// written in the file (`user_id`, `meta:project`).
pub use sllmp_limit::Dimension;

/// A [`Dimension`] read from the file, with the fix in its error.
struct DimensionName(Dimension);

impl<'de> Deserialize<'de> for DimensionName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match Dimension::parse(&text) {
            Some(dimension) => Ok(DimensionName(dimension)),
            None if text == "meta:" => Err(de::Error::custom(
                "\"meta:\" names no metadata key; write it as meta:<key>, e.g. meta:project",
            )),
            None => Err(de::Error::custom(format!(
                "{text:?} is not a dimension; use one of feature, user_id, organization, \
                 team, api_key, model, provider, meta:<key>"
            ))),
        }
    }
}

/// A spending limit: at most `limit` (in the cost unit, USD) per `window`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetLimit {
    /// The amount; finite and greater than 0.
    #[serde(deserialize_with = "positive_f64")]
    pub limit: f64,
    /// The period the amount applies to.
    pub window: BudgetWindow,
}

/// The period of a [`BudgetLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BudgetWindow {
    /// One hour (`1h`).
    Hour,
    /// One day (`1d`).
    Day,
    /// Seven days (`7d`).
    Week,
    /// Thirty days (`30d`).
    Month30,
}

impl BudgetWindow {
    /// The window's length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            BudgetWindow::Hour => 3_600,
            BudgetWindow::Day => 86_400,
            BudgetWindow::Week => 7 * 86_400,
            BudgetWindow::Month30 => 30 * 86_400,
        }
    }

    /// The window as written in the file: `1h`, `1d`, `7d` or `30d`.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetWindow::Hour => "1h",
            BudgetWindow::Day => "1d",
            BudgetWindow::Week => "7d",
            BudgetWindow::Month30 => "30d",
        }
    }
}

impl fmt::Display for BudgetWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for BudgetWindow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "1h" => Ok(BudgetWindow::Hour),
            "1d" => Ok(BudgetWindow::Day),
            "7d" => Ok(BudgetWindow::Week),
            "30d" => Ok(BudgetWindow::Month30),
            other => Err(de::Error::custom(format!(
                "{other:?} is not a budget window; use one of 1h, 1d, 7d, 30d"
            ))),
        }
    }
}

/// Request and token rates over a sliding minute: at least one of the two is set.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRateLimit")]
pub struct RateLimit {
    /// Requests allowed in any 60 seconds; at least 1.
    pub per_minute: Option<u32>,
    /// Tokens (input and output) allowed in any 60 seconds; at least 1.
    pub tokens_per_minute: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default, deserialize_with = "some_positive_u32")]
    per_minute: Option<u32>,
    #[serde(default, deserialize_with = "some_positive_u64")]
    tokens_per_minute: Option<u64>,
}

impl TryFrom<RawRateLimit> for RateLimit {
    type Error = &'static str;

    fn try_from(raw: RawRateLimit) -> Result<Self, Self::Error> {
        if raw.per_minute.is_none() && raw.tokens_per_minute.is_none() {
            return Err(
                "sets neither per_minute nor tokens_per_minute, so it limits nothing; add \
                 per_minute: 60 or tokens_per_minute: 100000",
            );
        }
        Ok(RateLimit {
            per_minute: raw.per_minute,
            tokens_per_minute: raw.tokens_per_minute,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The top-level `server:` block.
// ---------------------------------------------------------------------------------------

/// What a Redis failure does to a request (`server.on_redis_error`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnRedisError {
    /// Serve it, counting in the process's memory until Redis answers (`fail_open`, the
    /// default); logged once per outage.
    #[default]
    FailOpen,
    /// Refuse it with a 503 `limits_unavailable` (`fail_closed`).
    FailClosed,
}

impl<'de> Deserialize<'de> for OnRedisError {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.trim() {
            "fail_open" => Ok(OnRedisError::FailOpen),
            "fail_closed" => Ok(OnRedisError::FailClosed),
            other => Err(de::Error::custom(format!(
                "{other:?} is not a policy; write fail_open (serve, counting locally) or \
                 fail_closed (answer 503)"
            ))),
        }
    }
}

/// The top-level `server:` block: settings of the gateway process, for every feature.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSettings {
    /// Where the limit counters live (`redis_url`): `redis://host:port`, or for a cluster
    /// any of its nodes with `redis_cluster: true`. `None` (absent or empty): in memory.
    pub redis_url: Option<Secret>,
    /// Whether `redis_url` is a node of a Redis Cluster (`redis_cluster`, default false).
    pub redis_cluster: bool,
    /// How long a request may wait on Redis (`redis_timeout`, default 100 ms).
    pub redis_timeout: Duration,
    /// What a Redis failure does (`on_redis_error`, default `fail_open`).
    pub on_redis_error: OnRedisError,
    /// What every key starts with (`redis_prefix`, default `sllmp:limits:`); it is the
    /// keys' hash tag.
    pub redis_prefix: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            redis_url: None,
            redis_cluster: false,
            redis_timeout: Duration::from_millis(100),
            on_redis_error: OnRedisError::FailOpen,
            redis_prefix: "sllmp:limits:".to_owned(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    redis_url: Option<Secret>,
    #[serde(default, deserialize_with = "some_bool")]
    redis_cluster: Option<bool>,
    #[serde(default, deserialize_with = "some_positive_duration")]
    redis_timeout: Option<Duration>,
    on_redis_error: Option<OnRedisError>,
    #[serde(default, deserialize_with = "some_prefix")]
    redis_prefix: Option<String>,
}

impl<'de> Deserialize<'de> for ServerSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawServer::deserialize(deserializer)?;
        let default = ServerSettings::default();
        Ok(ServerSettings {
            redis_url: raw.redis_url.filter(|url| !url.expose().trim().is_empty()),
            redis_cluster: raw.redis_cluster.unwrap_or(default.redis_cluster),
            redis_timeout: raw.redis_timeout.unwrap_or(default.redis_timeout),
            on_redis_error: raw.on_redis_error.unwrap_or_default(),
            redis_prefix: raw.redis_prefix.unwrap_or(default.redis_prefix),
        })
    }
}

fn some_prefix<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let prefix = String::deserialize(deserializer)?;
    if prefix.is_empty() || prefix.contains(['{', '}']) {
        Err(de::Error::custom(
            "a key prefix must be non-empty and without braces (it is the keys' hash tag); \
             write e.g. \"sllmp:limits:\"",
        ))
    } else {
        Ok(Some(prefix))
    }
}

fn some_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    struct V;

    impl Visitor<'_> for V {
        type Value = bool;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true or false")
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(E::custom(format!("{v:?} is not true or false"))),
            }
        }
    }

    deserializer.deserialize_any(V).map(Some)
}

// ---------------------------------------------------------------------------------------
// Prices: the top-level `prices:` block.
// ---------------------------------------------------------------------------------------

/// The top-level `prices:` block: what requests cost, for budgets. Global, not per
/// feature; overrides the embedded price table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prices {
    /// What a model with no known price costs (`unknown`).
    pub unknown: UnknownModels,
    /// Prices by `provider:model`, or `provider:*` for every model of a provider (or alias)
    /// without its own entry (`models`).
    pub models: BTreeMap<PriceKey, ModelPrice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrices {
    unknown: Option<UnknownModels>,
    models: Option<BTreeMap<PriceKey, ModelPrice>>,
}

impl<'de> Deserialize<'de> for Prices {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawPrices::deserialize(deserializer)?;
        Ok(Prices {
            unknown: raw.unknown.unwrap_or_default(),
            models: raw.models.unwrap_or_default(),
        })
    }
}

/// `prices.unknown`: what a model with no known price costs under a budget.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum UnknownModels {
    /// Refuse the request with 400 `unknown_model_price` (`reject`, the default).
    #[default]
    Reject,
    /// Charge this price (`{input: 1.0, output: 4.0}`).
    Charge(ModelPrice),
}

impl<'de> Deserialize<'de> for UnknownModels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;

        impl<'de> Visitor<'de> for V {
            type Value = UnknownModels;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("reject or a price mapping")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<UnknownModels, E> {
                if v.trim() == "reject" {
                    Ok(UnknownModels::Reject)
                } else {
                    Err(E::custom(format!(
                        "{v:?} is not a policy for unknown prices; write unknown: reject, or a \
                         price such as unknown: {{input: 1.0, output: 4.0}}"
                    )))
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UnknownModels, A::Error> {
                ModelPrice::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(UnknownModels::Charge)
            }
        }

        deserializer.deserialize_any(V)
    }
}

/// A key of `prices.models`: `provider:model`, or `provider:*` for every model of the
/// provider. The provider is an alias or a provider type, as requests address it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PriceKey {
    /// The provider, alias or type (before the first `:`).
    pub provider: String,
    /// The model; `None` for `provider:*`.
    pub model: Option<String>,
}

impl fmt::Display for PriceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.provider,
            self.model.as_deref().unwrap_or("*")
        )
    }
}

impl<'de> Deserialize<'de> for PriceKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = String::deserialize(deserializer)?;
        match key.split_once(':') {
            Some((provider, model)) if !provider.is_empty() && !model.is_empty() => Ok(PriceKey {
                provider: provider.to_owned(),
                model: (model != "*").then(|| model.to_owned()),
            }),
            _ => {
                let example = if key.is_empty() || key.contains(':') {
                    "openai:gpt-4o".to_owned()
                } else {
                    format!("openai:{key}")
                };
                Err(de::Error::custom(format!(
                    "{key:?} is not written as provider:model or provider:*; write it as e.g. \
                     {example:?}, or \"openai:*\" for every model of a provider"
                )))
            }
        }
    }
}

/// A model's price in USD per million tokens; every value finite and 0 or more.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelPrice {
    /// Prompt tokens (not read from or written to a prompt cache).
    pub input: f64,
    /// Completion tokens.
    pub output: f64,
    /// Prompt tokens read from a prompt cache; `input` when not set.
    pub cached_input: f64,
    /// Prompt tokens written to a prompt cache; `input` when not set.
    pub cache_write: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelPrice {
    #[serde(deserialize_with = "price_f64")]
    input: f64,
    #[serde(deserialize_with = "price_f64")]
    output: f64,
    #[serde(default, deserialize_with = "some_price_f64")]
    cached_input: Option<f64>,
    #[serde(default, deserialize_with = "some_price_f64")]
    cache_write: Option<f64>,
}

impl<'de> Deserialize<'de> for ModelPrice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawModelPrice::deserialize(deserializer)?;
        Ok(ModelPrice {
            input: raw.input,
            output: raw.output,
            cached_input: raw.cached_input.unwrap_or(raw.input),
            cache_write: raw.cache_write.unwrap_or(raw.input),
        })
    }
}

/// Langfuse tracing and prompt-management settings.
///
/// `Debug` redacts both keys.
#[derive(Clone, Debug, PartialEq)]
pub struct LangfuseConfig {
    /// The project's public key.
    pub public_key: Secret,
    /// The project's secret key; never blank.
    pub secret_key: Secret,
    /// The Langfuse server, default [`LangfuseConfig::DEFAULT_BASE_URL`].
    pub base_url: String,
    /// Always `true` in a resolved feature: a disabled Langfuse resolves to `None`.
    pub enabled: bool,
    /// The prompt label fetched by default, default [`LangfuseConfig::DEFAULT_PROMPT_LABEL`].
    pub default_prompt_label: String,
}

impl LangfuseConfig {
    /// `base_url` when the file does not set one.
    pub const DEFAULT_BASE_URL: &'static str = "https://cloud.langfuse.com";
    /// `default_prompt_label` when the file does not set one.
    pub const DEFAULT_PROMPT_LABEL: &'static str = "latest";
}

// ---------------------------------------------------------------------------------------
// Attempt policies: `retry`, `timeouts`, `fallbacks`.
// ---------------------------------------------------------------------------------------

/// A `retry:` block after reading: keys left out take [`RetryPolicy::standard`]'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetrySetting(pub(crate) RetryPolicy);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default, deserialize_with = "some_attempts")]
    max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "some_duration")]
    base_delay: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    max_delay: Option<Duration>,
}

impl<'de> Deserialize<'de> for RetrySetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawRetry::deserialize(deserializer)?;
        let standard = RetryPolicy::standard();
        let policy = RetryPolicy {
            max_attempts: raw.max_attempts.unwrap_or(standard.max_attempts),
            base_delay: raw.base_delay.unwrap_or(standard.base_delay),
            max_delay: raw.max_delay.unwrap_or(standard.max_delay),
        };
        if policy.max_delay < policy.base_delay {
            let base = format_duration(policy.base_delay);
            let max = format_duration(policy.max_delay);
            let max_origin = if raw.max_delay.is_some() {
                ""
            } else {
                ", the default"
            };
            return Err(de::Error::custom(format!(
                "max_delay ({max}{max_origin}) is shorter than base_delay ({base}); raise \
                 max_delay to at least {base}, e.g. max_delay: {base}, or lower base_delay"
            )));
        }
        Ok(RetrySetting(policy))
    }
}

/// A `timeouts:` block after reading: keys left out take [`Timeouts::default`]'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeoutsSetting(pub(crate) Timeouts);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    #[serde(default, deserialize_with = "some_positive_duration")]
    connect: Option<Duration>,
    #[serde(default, deserialize_with = "some_positive_duration")]
    first_token: Option<Duration>,
    #[serde(default, deserialize_with = "some_positive_duration")]
    total: Option<Duration>,
}

impl<'de> Deserialize<'de> for TimeoutsSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawTimeouts::deserialize(deserializer)?;
        let default = Timeouts::default();
        Ok(TimeoutsSetting(Timeouts {
            connect: raw.connect.unwrap_or(default.connect),
            first_token: raw.first_token.unwrap_or(default.first_token),
            total: raw.total.unwrap_or(default.total),
        }))
    }
}

/// `1.5s`, `250ms`: a duration as the file would write it.
pub(crate) fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{millis}ms")
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

/// Reads a duration written as a number and a unit: `250ms`, `5s`, `1.5m`, `1h`.
///
/// A bare number is refused, with the fix in the message: a timeout of `5` could mean
/// seconds or milliseconds, and a wrong guess is a thousand times off.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    const UNITS: &str = "ms, s, m or h";
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim_start() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" if !number.is_empty() && number.parse::<f64>().is_ok() => {
            return Err(format!(
                "{text:?} has no unit; write it with one ({UNITS}), e.g. \"{number}s\""
            ));
        }
        _ => {
            return Err(format!(
                "{text:?} is not a duration; write a number and a unit ({UNITS}), e.g. \"5s\" \
                 or \"250ms\""
            ));
        }
    };
    let value = number.parse::<f64>().map_err(|_| {
        format!(
            "{text:?} is not a duration; write a number and a unit ({UNITS}), e.g. \"5s\" or \
             \"250ms\""
        )
    })?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| {
        format!("{text:?} is too long to be a duration; write a shorter one, e.g. \"1h\"")
    })
}

/// A duration key: text with a unit; a bare number is an error that shows the fix.
struct DurationVisitor;

impl DurationVisitor {
    fn bare<E: de::Error>(number: impl fmt::Display) -> E {
        E::custom(format!(
            "a bare number is not a duration; write it with a unit (ms, s, m or h), e.g. \
             \"{number}s\""
        ))
    }
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as 5s")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(DurationVisitor::bare(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(DurationVisitor::bare(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(DurationVisitor::bare(v))
    }
}

fn some_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    deserializer.deserialize_any(DurationVisitor).map(Some)
}

fn some_positive_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let duration = deserializer.deserialize_any(DurationVisitor)?;
    if duration.is_zero() {
        Err(de::Error::custom(
            "must be greater than 0; a timeout of 0 would fail every call, write e.g. \"30s\"",
        ))
    } else {
        Ok(Some(duration))
    }
}

fn some_attempts<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    whole_number(
        deserializer,
        "write a count such as 3 (1 turns retries off)",
    )
    .map(Some)
}

// ---------------------------------------------------------------------------------------
// Lenient scalars: a number or boolean may also come as a string (from `${VAR}`).
// ---------------------------------------------------------------------------------------

fn positive_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    deserializer.deserialize_any(LenientNumber {
        expecting: "a number greater than 0",
        accept: |value| value > 0.0,
        out_of_range: |value| {
            format!("must be greater than 0, found {value}; set a positive amount, e.g. 10.0")
        },
        not_a_number: || {
            "expected a number greater than 0, found text that is not a number; \
             write a number such as 10.0"
                .to_string()
        },
    })
}

/// A finite number, written as a number or as text holding one, that `accept` takes; the
/// messages say what is wrong and how to fix it.
struct LenientNumber {
    expecting: &'static str,
    accept: fn(f64) -> bool,
    out_of_range: fn(f64) -> String,
    not_a_number: fn() -> String,
}

impl LenientNumber {
    fn check<E: de::Error>(&self, value: f64) -> Result<f64, E> {
        if value.is_finite() && (self.accept)(value) {
            Ok(value)
        } else {
            Err(E::custom((self.out_of_range)(value)))
        }
    }
}

impl Visitor<'_> for LenientNumber {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        self.check(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.check(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.check(v as f64)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        match v.trim().parse::<f64>() {
            Ok(value) => self.check(value),
            Err(_) => Err(E::custom((self.not_a_number)())),
        }
    }
}

fn some_positive_u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    whole_number(deserializer, "write a count such as 60").map(Some)
}

fn some_positive_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    whole_number_up_to(deserializer, u64::MAX, "write a count such as 100000").map(Some)
}

/// A whole number from 1 to `u32::MAX`; `fix` ends the error message.
fn whole_number<'de, D: Deserializer<'de>>(
    deserializer: D,
    fix: &'static str,
) -> Result<u32, D::Error> {
    let value = whole_number_up_to(deserializer, u64::from(u32::MAX), fix)?;
    Ok(u32::try_from(value).expect("checked against u32::MAX"))
}

/// A whole number from 1 to `max`; `fix` ends the error message.
fn whole_number_up_to<'de, D: Deserializer<'de>>(
    deserializer: D,
    max: u64,
    fix: &'static str,
) -> Result<u64, D::Error> {
    struct V {
        max: u64,
        fix: &'static str,
    }

    impl V {
        fn fail<E: de::Error>(&self, found: impl fmt::Display) -> E {
            E::custom(format!(
                "expected a whole number from 1 to {}, found {found}; {}",
                self.max, self.fix
            ))
        }

        fn check<E: de::Error>(&self, value: i128) -> Result<u64, E> {
            match u64::try_from(value) {
                Ok(v) if v > 0 && v <= self.max => Ok(v),
                _ => Err(self.fail(value)),
            }
        }
    }

    impl Visitor<'_> for V {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number greater than 0")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            self.check(i128::from(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            self.check(i128::from(v))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            if v.fract() == 0.0 && v.abs() < 1e20 {
                self.check(v as i128)
            } else {
                Err(self.fail(v))
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            match v.trim().parse::<i128>() {
                Ok(value) => self.check(value),
                Err(_) => Err(self.fail("text that is not a whole number")),
            }
        }
    }

    deserializer.deserialize_any(V { max, fix })
}

/// A price in USD per million tokens: finite and 0 or more.
fn price_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    const FIX: &str = "write a price in USD per million tokens, e.g. 2.5 (0 for a free model)";
    deserializer.deserialize_any(LenientNumber {
        expecting: "a number of 0 or more",
        accept: |value| value >= 0.0,
        out_of_range: |value| format!("must be a number of 0 or more, found {value}; {FIX}"),
        not_a_number: || {
            format!("expected a number of 0 or more, found text that is not a number; {FIX}")
        },
    })
}

fn some_price_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    price_f64(deserializer).map(Some)
}

fn flexible_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    struct V;

    impl Visitor<'_> for V {
        type Value = bool;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true or false")
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(E::custom(
                    "expected true or false, found other text; write true or false",
                )),
            }
        }
    }

    deserializer.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn windows_parse_and_know_their_length() {
        assert_eq!(read::<BudgetWindow>(json!("1h")), Ok(BudgetWindow::Hour));
        assert_eq!(
            read::<BudgetWindow>(json!("30d")),
            Ok(BudgetWindow::Month30)
        );
        assert_eq!(BudgetWindow::Week.seconds(), 604_800);
        assert_eq!(BudgetWindow::Month30.seconds(), 2_592_000);
        assert_eq!(BudgetWindow::Day.to_string(), "1d");
        let err = read::<BudgetWindow>(json!("2h")).unwrap_err();
        assert_eq!(
            err,
            "\"2h\" is not a budget window; use one of 1h, 1d, 7d, 30d"
        );
    }

    #[test]
    fn dimensions_parse() {
        let dims: Vec<DimensionName> = read(json!([
            "feature",
            "user_id",
            "organization",
            "team",
            "api_key",
            "model",
            "provider",
            "meta:project"
        ]))
        .unwrap();
        let dims: Vec<Dimension> = dims.into_iter().map(|d| d.0).collect();
        assert_eq!(
            dims,
            vec![
                Dimension::Feature,
                Dimension::UserId,
                Dimension::Organization,
                Dimension::Team,
                Dimension::ApiKey,
                Dimension::Model,
                Dimension::Provider,
                Dimension::Meta("project".into())
            ]
        );
        assert_eq!(Dimension::Meta("a:b".into()).to_string(), "meta:a:b");
        assert_eq!(
            read::<DimensionName>(json!("users"))
                .map(|d| d.0)
                .unwrap_err(),
            "\"users\" is not a dimension; use one of feature, user_id, organization, team, api_key, model, provider, meta:<key>"
        );
        for dimension in ["api_key", "model", "provider", "meta:project"] {
            assert_eq!(
                read::<DimensionName>(json!(dimension))
                    .unwrap()
                    .0
                    .to_string(),
                dimension
            );
        }
        assert!(
            read::<DimensionName>(json!("meta:"))
                .map(|d| d.0)
                .unwrap_err()
                .contains("names no metadata key")
        );
    }

    #[test]
    fn models_need_both_sides_of_the_colon() {
        assert_eq!(
            read::<ModelRef>(json!("openai:gpt-4")),
            Ok(ModelRef("openai:gpt-4".into()))
        );
        assert_eq!(
            read::<ModelRef>(json!("my-alias:org/model:v1")),
            Ok(ModelRef("my-alias:org/model:v1".into()))
        );
        assert_eq!(
            read::<ModelRef>(json!("gpt-4")).unwrap_err(),
            "\"gpt-4\" is not written as provider:model; write it as e.g. \"openai:gpt-4\""
        );
        assert!(read::<ModelRef>(json!(":gpt-4")).is_err());
        assert!(read::<ModelRef>(json!("openai:")).is_err());
        assert!(read::<ModelRef>(json!("")).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(read::<FeatureName>(json!("chat_v2-x")).is_ok());
        let err = read::<FeatureName>(json!("chat bot")).unwrap_err();
        assert!(err.contains("(e.g. \"chat-bot\")"), "{err}");
        let err = read::<AliasName>(json!("!!")).unwrap_err();
        assert!(err.starts_with("invalid provider alias name"), "{err}");
        assert!(!err.contains("e.g."), "{err}");
    }

    #[test]
    fn constraints_need_a_limit_and_read_lenient_numbers() {
        let c: Constraint = read(json!({
            "dimensions": ["user_id"],
            "budget_limit": {"limit": "2.5", "window": "1d"},
            "rate_limit": {"per_minute": "60"}
        }))
        .unwrap();
        assert_eq!(c.budget_limit.unwrap().limit, 2.5);
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                per_minute: Some(60),
                tokens_per_minute: None
            })
        );
        let err = read::<Constraint>(json!({"dimensions": []})).unwrap_err();
        assert!(
            err.starts_with("sets neither budget_limit nor rate_limit"),
            "{err}"
        );
        assert!(read::<BudgetLimit>(json!({"limit": 0, "window": "1h"})).is_err());
        assert!(read::<BudgetLimit>(json!({"limit": -1.5, "window": "1h"})).is_err());
        assert!(read::<RateLimit>(json!({"per_minute": 0})).is_err());
        assert!(read::<RateLimit>(json!({"per_minute": -3})).is_err());
        assert!(read::<RateLimit>(json!({"per_minute": 1.5})).is_err());
        assert!(read::<RateLimit>(json!({"per_minute": 5_000_000_000_u64})).is_err());
        assert_eq!(
            read::<RateLimit>(json!({"per_minute": 2.0})),
            Ok(RateLimit {
                per_minute: Some(2),
                tokens_per_minute: None
            })
        );
    }

    #[test]
    fn rate_limits_count_requests_and_or_tokens() {
        assert_eq!(
            read::<RateLimit>(json!({"tokens_per_minute": "100000"})),
            Ok(RateLimit {
                per_minute: None,
                tokens_per_minute: Some(100_000)
            })
        );
        assert_eq!(
            read::<RateLimit>(json!({"per_minute": 60, "tokens_per_minute": 5_000_000_000_u64})),
            Ok(RateLimit {
                per_minute: Some(60),
                tokens_per_minute: Some(5_000_000_000)
            })
        );
        assert_eq!(
            read::<RateLimit>(json!({})).unwrap_err(),
            "sets neither per_minute nor tokens_per_minute, so it limits nothing; add per_minute: 60 or tokens_per_minute: 100000"
        );
        assert_eq!(
            read::<RateLimit>(json!({"tokens_per_minute": 0})).unwrap_err(),
            "expected a whole number from 1 to 18446744073709551615, found 0; write a count such as 100000"
        );
        assert_eq!(
            read::<RateLimit>(json!({"per_minute": "lots"})).unwrap_err(),
            "expected a whole number from 1 to 4294967295, found text that is not a whole number; write a count such as 60"
        );
        assert!(
            read::<RateLimit>(json!({"requests_per_minute": 5}))
                .unwrap_err()
                .starts_with("unknown field `requests_per_minute`, expected `per_minute` or `tokens_per_minute`")
        );
    }

    #[test]
    fn the_python_readme_keys_are_refused_with_the_right_ones() {
        for key in ["max_cost", "window_seconds", "max_requests"] {
            let err = read::<Constraint>(json!({key: 10})).unwrap_err();
            assert_eq!(err, LEGACY_CONSTRAINT_MESSAGE);
        }
        assert_eq!(
            LEGACY_CONSTRAINT_MESSAGE,
            "`max_cost`, `window_seconds` and `max_requests` are not keys of a constraint (the Python original's README showed them, but its code never accepted them); write budget_limit: {limit: 10.0, window: 1d} and/or rate_limit: {per_minute: 60}, with dimensions: [feature]"
        );
        assert_eq!(
            read::<Constraint>(json!({"dimensions": [], "limit": 5})).unwrap_err(),
            "unknown field `limit`, expected one of `dimensions`, `budget_limit`, `rate_limit`, `description`"
        );
        assert_eq!(
            read::<Constraint>(json!({"rate_limit": {"per_minute": 1}})).unwrap_err(),
            "missing field `dimensions`"
        );
        let c: Constraint = read(json!({
            "dimensions": ["api_key", "model", "provider"],
            "rate_limit": {"tokens_per_minute": 1000},
            "budget_limit": null,
            "description": "tokens per key"
        }))
        .unwrap();
        assert_eq!(
            c.dimensions,
            [Dimension::ApiKey, Dimension::Model, Dimension::Provider]
        );
        assert_eq!(c.description.as_deref(), Some("tokens per key"));
        assert_eq!(c.budget_limit, None);
    }

    #[test]
    fn prices_read_models_providers_and_the_unknown_policy() {
        let prices: Prices = read(json!({
            "unknown": {"input": 1.0, "output": "4"},
            "models": {
                "openai:gpt-4o": {"input": 2.5, "output": 10.0, "cached_input": 1.25, "cache_write": 3.125},
                "my-local:*": {"input": 0, "output": 0},
                "groq:org/model:v1": {"input": 0.5, "output": 1}
            }
        }))
        .unwrap();
        assert_eq!(
            prices.unknown,
            UnknownModels::Charge(ModelPrice {
                input: 1.0,
                output: 4.0,
                cached_input: 1.0,
                cache_write: 1.0
            })
        );
        let keys: Vec<String> = prices.models.keys().map(ToString::to_string).collect();
        assert_eq!(keys, ["groq:org/model:v1", "my-local:*", "openai:gpt-4o"]);
        let local = PriceKey {
            provider: "my-local".into(),
            model: None,
        };
        assert_eq!(prices.models[&local].input, 0.0);
        let gpt = &prices.models[&PriceKey {
            provider: "openai".into(),
            model: Some("gpt-4o".into()),
        }];
        assert_eq!((gpt.cached_input, gpt.cache_write), (1.25, 3.125));

        assert_eq!(read::<Prices>(json!({})), Ok(Prices::default()));
        assert_eq!(
            read::<Prices>(json!({"unknown": "reject"}))
                .unwrap()
                .unknown,
            UnknownModels::Reject
        );
        assert_eq!(
            read::<UnknownModels>(json!("free")).unwrap_err(),
            "\"free\" is not a policy for unknown prices; write unknown: reject, or a price such as unknown: {input: 1.0, output: 4.0}"
        );
        assert_eq!(
            read::<PriceKey>(json!("gpt-4o")).unwrap_err(),
            "\"gpt-4o\" is not written as provider:model or provider:*; write it as e.g. \"openai:gpt-4o\", or \"openai:*\" for every model of a provider"
        );
        assert!(read::<PriceKey>(json!(":x")).is_err());
        assert!(read::<PriceKey>(json!("openai:")).is_err());
        assert_eq!(
            read::<ModelPrice>(json!({"input": -1, "output": 1})).unwrap_err(),
            "must be a number of 0 or more, found -1; write a price in USD per million tokens, e.g. 2.5 (0 for a free model)"
        );
        assert_eq!(
            read::<ModelPrice>(json!({"input": 1, "output": "x"})).unwrap_err(),
            "expected a number of 0 or more, found text that is not a number; write a price in USD per million tokens, e.g. 2.5 (0 for a free model)"
        );
        assert_eq!(
            read::<ModelPrice>(json!({"input": 1})).unwrap_err(),
            "missing field `output`"
        );
        assert_eq!(
            read::<ModelPrice>(json!({"input": 1, "output": 1, "cached": 1})).unwrap_err(),
            "unknown field `cached`, expected one of `input`, `output`, `cached_input`, `cache_write`"
        );
    }

    #[test]
    fn aliases_keep_their_options_and_need_a_provider() {
        let alias: ProviderAlias = read(json!({
            "provider": "openai", "api_base": "http://x", "client_args": {"a": 1}
        }))
        .unwrap();
        assert_eq!(alias.provider, "openai");
        assert_eq!(alias.options["api_base"], "http://x");
        assert_eq!(alias.options.len(), 2);
        assert_eq!(
            read::<ProviderAlias>(json!({"api_base": "x"})).unwrap_err(),
            "missing field `provider`"
        );
        assert!(
            read::<ProviderAlias>(json!({"provider": " "}))
                .unwrap_err()
                .starts_with("is empty")
        );
        let debug = format!(
            "{:?}",
            ProviderAlias {
                provider: "openai".into(),
                options: json!({"api_key": "sk-live"}).as_object().unwrap().clone(),
            }
        );
        assert!(!debug.contains("sk-live"), "{debug}");
        assert!(debug.contains("api_key"), "{debug}");
    }

    #[test]
    fn langfuse_defaults_and_disabling() {
        let on: LangfuseSetting = read(json!({"public_key": "pk", "secret_key": "sk"})).unwrap();
        let LangfuseSetting::Enabled(cfg) = on else {
            panic!("expected enabled");
        };
        assert_eq!(cfg.base_url, "https://cloud.langfuse.com");
        assert_eq!(cfg.default_prompt_label, "latest");
        assert!(cfg.enabled);
        assert_eq!(cfg.secret_key.expose(), "sk");
        assert_eq!(
            read::<LangfuseSetting>(json!({"enabled": false})),
            Ok(LangfuseSetting::Disabled)
        );
        assert_eq!(
            read::<LangfuseSetting>(json!({"enabled": "false"})),
            Ok(LangfuseSetting::Disabled)
        );
        assert_eq!(
            read::<LangfuseSetting>(json!({"public_key": "pk"})).unwrap_err(),
            "missing field `secret_key`"
        );
        assert!(
            read::<LangfuseSetting>(json!({"public_key": "pk", "secret_key": "  "}))
                .unwrap_err()
                .starts_with("is empty")
        );
    }
    #[test]
    fn durations_need_a_unit() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 2 s "), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("5").unwrap_err(),
            "\"5\" has no unit; write it with one (ms, s, m or h), e.g. \"5s\""
        );
        let bad = "is not a duration; write a number and a unit (ms, s, m or h), e.g. \"5s\" or \"250ms\"";
        for text in ["", "5 sec", "-1s", "s", "1d", "1e3s", "..s"] {
            assert_eq!(parse_duration(text).unwrap_err(), format!("{text:?} {bad}"));
        }
        assert_eq!(
            parse_duration(&format!("{}h", "9".repeat(30))).unwrap_err(),
            format!(
                "\"{}h\" is too long to be a duration; write a shorter one, e.g. \"1h\"",
                "9".repeat(30)
            )
        );
        assert_eq!(format_duration(ms(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
    }

    #[test]
    fn bare_numbers_are_not_durations() {
        assert_eq!(
            read::<TimeoutsSetting>(json!({"connect": 5})).unwrap_err(),
            "a bare number is not a duration; write it with a unit (ms, s, m or h), e.g. \"5s\""
        );
        assert_eq!(
            read::<RetrySetting>(json!({"base_delay": 0.5})).unwrap_err(),
            "a bare number is not a duration; write it with a unit (ms, s, m or h), e.g. \"0.5s\""
        );
    }

    #[test]
    fn retry_blocks_take_standard_values_for_missing_keys() {
        let standard = RetryPolicy::standard();
        assert_eq!(read::<RetrySetting>(json!({})), Ok(RetrySetting(standard)));
        assert_eq!(
            read::<RetrySetting>(json!({"max_attempts": 5})),
            Ok(RetrySetting(RetryPolicy {
                max_attempts: 5,
                ..standard
            }))
        );
        assert_eq!(
            read::<RetrySetting>(
                json!({"max_attempts": "2", "base_delay": "0s", "max_delay": "250ms"})
            ),
            Ok(RetrySetting(RetryPolicy {
                max_attempts: 2,
                base_delay: Duration::ZERO,
                max_delay: Duration::from_millis(250),
            }))
        );
        assert_eq!(
            read::<RetrySetting>(json!({"max_attempts": 0})).unwrap_err(),
            "expected a whole number from 1 to 4294967295, found 0; write a count such as 3 (1 turns retries off)"
        );
        assert_eq!(
            read::<RetrySetting>(json!({"base_delay": "2s", "max_delay": "1s"})).unwrap_err(),
            "max_delay (1s) is shorter than base_delay (2s); raise max_delay to at least 2s, e.g. max_delay: 2s, or lower base_delay"
        );
        assert_eq!(
            read::<RetrySetting>(json!({"base_delay": "1m"})).unwrap_err(),
            "max_delay (30s, the default) is shorter than base_delay (60s); raise max_delay to at least 60s, e.g. max_delay: 60s, or lower base_delay"
        );
        assert!(
            read::<RetrySetting>(json!({"attempts": 3}))
                .unwrap_err()
                .starts_with("unknown field `attempts`")
        );
    }

    #[test]
    fn timeouts_take_defaults_for_missing_keys_and_must_be_positive() {
        let default = Timeouts::default();
        assert_eq!(
            read::<TimeoutsSetting>(json!({})),
            Ok(TimeoutsSetting(default))
        );
        assert_eq!(
            read::<TimeoutsSetting>(json!({"first_token": "45s", "total": "1h"})),
            Ok(TimeoutsSetting(Timeouts {
                first_token: Duration::from_secs(45),
                total: Duration::from_secs(3600),
                ..default
            }))
        );
        assert_eq!(
            read::<TimeoutsSetting>(json!({"total": "0ms"})).unwrap_err(),
            "must be greater than 0; a timeout of 0 would fail every call, write e.g. \"30s\""
        );
    }
}
