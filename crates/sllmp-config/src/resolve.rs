//! Inheritance: each feature is `defaults` with the feature's own settings on top
//! (the Python original's rules, §4.4).
//!
//! - `provider_api_keys`, `providers`, `budget_constraints`: merged by key; a feature entry
//!   replaces the default entry of the same name, whole (no deep merge).
//! - `model`, `langfuse`: the feature's replaces the default when set; absent or null
//!   inherits. A `langfuse` with `enabled: false` turns Langfuse off.
//! - `retry`, `timeouts`, `fallbacks`: the feature's block replaces the default's whole
//!   (no merge inside a block); absent or null inherits. With neither set, retries follow
//!   [`RetryPolicy::standard`], timeouts [`Timeouts::default`], and there are no fallbacks.
//! - `custom`: the feature's own (defaults have none).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};
use sllmp_core::Secret;
use sllmp_pipeline::{RetryPolicy, Timeouts};

use crate::schema::{
    Constraint, KeysOnly, LangfuseConfig, LangfuseSetting, ProviderAlias, RawConfig, RawDefaults,
    RawFeature,
};

/// A feature with everything it inherits from `defaults` applied: what a request for this
/// feature runs with.
///
/// `Debug` redacts secrets and prints only the keys of `custom`.
#[derive(Clone, PartialEq)]
pub struct ResolvedFeature {
    /// The feature's name (its key under `features`).
    pub name: String,
    /// Free text from the file; empty when not set.
    pub description: String,
    /// The owning team or person; empty when not set.
    pub owner: String,
    /// `provider:model` to use instead of the client's model, if any.
    pub model: Option<String>,
    /// API keys by provider or alias name.
    pub provider_api_keys: BTreeMap<String, Secret>,
    /// Provider aliases by name.
    pub providers: BTreeMap<String, ProviderAlias>,
    /// Budget and rate constraints by name ([`Constraint::name`] is the key).
    pub budget_constraints: BTreeMap<String, Constraint>,
    /// Langfuse settings; `None` when not configured or disabled.
    pub langfuse: Option<LangfuseConfig>,
    /// How failed provider calls are retried (`retry`); [`RetryPolicy::standard`] when
    /// neither the feature nor `defaults` sets it. Keys a block leaves out take the
    /// standard values; `max_attempts: 1` turns retries off.
    pub retry: RetryPolicy,
    /// The time limits of each attempt (`timeouts`); [`Timeouts::default`] when neither the
    /// feature nor `defaults` sets them, and for each key a block leaves out.
    pub timeouts: Timeouts,
    /// `provider:model` routes tried in order when the feature's model fails with a
    /// retryable error after its retries (`fallbacks`); empty when not set. Each names a
    /// provider of the feature (checked by [`Gateway::build`](crate::Gateway::build)).
    pub fallbacks: Vec<String>,
    /// The feature's free-form `custom` mapping.
    pub custom: Map<String, Value>,
}

impl fmt::Debug for ResolvedFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedFeature")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("owner", &self.owner)
            .field("model", &self.model)
            .field("provider_api_keys", &self.provider_api_keys)
            .field("providers", &self.providers)
            .field("budget_constraints", &self.budget_constraints)
            .field("langfuse", &self.langfuse)
            .field("retry", &self.retry)
            .field("timeouts", &self.timeouts)
            .field("fallbacks", &self.fallbacks)
            .field("custom", &KeysOnly(&self.custom))
            .finish()
    }
}

/// Resolves every feature of a checked document.
pub(crate) fn resolve(raw: RawConfig) -> BTreeMap<String, ResolvedFeature> {
    let defaults = raw.defaults.unwrap_or_default();
    raw.features
        .unwrap_or_default()
        .into_iter()
        .map(|(name, feature)| {
            let resolved = resolve_feature(&defaults, name.0, feature.unwrap_or_default());
            (resolved.name.clone(), resolved)
        })
        .collect()
}

fn resolve_feature(defaults: &RawDefaults, name: String, feature: RawFeature) -> ResolvedFeature {
    let providers = merge(&defaults.providers, feature.providers)
        .into_iter()
        .map(|(alias, provider)| (alias.0, provider))
        .collect();
    let budget_constraints = merge(&defaults.budget_constraints, feature.budget_constraints)
        .into_iter()
        .map(|(key, mut constraint)| {
            constraint.name.clone_from(&key);
            (key, constraint)
        })
        .collect();
    let langfuse = match feature.langfuse.as_ref().or(defaults.langfuse.as_ref()) {
        Some(LangfuseSetting::Enabled(config)) => Some(config.clone()),
        Some(LangfuseSetting::Disabled) | None => None,
    };
    ResolvedFeature {
        name,
        description: feature.description.unwrap_or_default(),
        owner: feature.owner.unwrap_or_default(),
        model: feature
            .model
            .or_else(|| defaults.model.clone())
            .map(|model| model.0),
        provider_api_keys: merge(&defaults.provider_api_keys, feature.provider_api_keys),
        providers,
        budget_constraints,
        langfuse,
        retry: feature
            .retry
            .or(defaults.retry)
            .map_or_else(RetryPolicy::standard, |setting| setting.0),
        timeouts: feature
            .timeouts
            .or(defaults.timeouts)
            .map_or_else(Timeouts::default, |setting| setting.0),
        fallbacks: feature
            .fallbacks
            .or_else(|| defaults.fallbacks.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|model| model.0)
            .collect(),
        custom: feature.custom.unwrap_or_default(),
    }
}

/// The defaults' entries, then the feature's on top (replacing same-named ones).
fn merge<K: Ord + Clone, V: Clone>(
    defaults: &Option<BTreeMap<K, V>>,
    feature: Option<BTreeMap<K, V>>,
) -> BTreeMap<K, V> {
    let mut merged = defaults.clone().unwrap_or_default();
    merged.extend(feature.unwrap_or_default());
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve_json(doc: Value) -> BTreeMap<String, ResolvedFeature> {
        resolve(serde_json::from_value(doc).expect("a valid document"))
    }

    #[test]
    fn maps_merge_by_key_and_scalars_replace() {
        let features = resolve_json(json!({
            "defaults": {
                "model": "openai:gpt-4o-mini",
                "provider_api_keys": {"openai": "sk-default", "anthropic": "sk-ant"},
                "providers": {"fast": {"provider": "groq"}},
                "budget_constraints": {
                    "daily": {"dimensions": ["user_id"], "budget_limit": {"limit": 10, "window": "1d"}},
                    "rpm": {"dimensions": ["feature"], "rate_limit": {"per_minute": 60}}
                }
            },
            "features": {
                "plain": {},
                "custom": {
                    "model": "anthropic:claude",
                    "provider_api_keys": {"openai": "sk-feature"},
                    "providers": {"local": {"provider": "openai", "api_base": "http://localhost"}},
                    "budget_constraints": {"daily": {"dimensions": ["team"], "rate_limit": {"per_minute": 5}}},
                    "custom": {"tier": "gold"}
                },
                "nulls": {"model": null, "budget_constraints": null, "providers": {}}
            }
        }));
        let plain = &features["plain"];
        assert_eq!(plain.model.as_deref(), Some("openai:gpt-4o-mini"));
        assert_eq!(plain.provider_api_keys["openai"].expose(), "sk-default");
        assert_eq!(plain.budget_constraints.len(), 2);
        assert_eq!(plain.budget_constraints["daily"].name, "daily");
        assert!(plain.custom.is_empty());

        let custom = &features["custom"];
        assert_eq!(custom.model.as_deref(), Some("anthropic:claude"));
        assert_eq!(custom.provider_api_keys["openai"].expose(), "sk-feature");
        assert_eq!(custom.provider_api_keys["anthropic"].expose(), "sk-ant");
        assert_eq!(
            custom.providers.keys().collect::<Vec<_>>(),
            vec!["fast", "local"]
        );
        // Replaced whole: no budget_limit survives from the default "daily".
        let daily = &custom.budget_constraints["daily"];
        assert_eq!(daily.budget_limit, None);
        assert_eq!(daily.name, "daily");
        assert_eq!(custom.budget_constraints["rpm"].name, "rpm");
        assert_eq!(custom.custom["tier"], "gold");

        let nulls = &features["nulls"];
        assert_eq!(nulls.model.as_deref(), Some("openai:gpt-4o-mini"));
        assert_eq!(nulls.budget_constraints.len(), 2);
        assert_eq!(nulls.providers.len(), 1);
    }

    #[test]
    fn langfuse_replaces_whole_and_can_be_disabled() {
        let features = resolve_json(json!({
            "defaults": {"langfuse": {"public_key": "pk", "secret_key": "sk", "default_prompt_label": "prod"}},
            "features": {
                "inherits": {},
                "own": {"langfuse": {"public_key": "pk2", "secret_key": "sk2"}},
                "off": {"langfuse": {"enabled": false}},
                "null": {"langfuse": null}
            }
        }));
        assert_eq!(
            features["inherits"]
                .langfuse
                .as_ref()
                .unwrap()
                .default_prompt_label,
            "prod"
        );
        let own = features["own"].langfuse.as_ref().unwrap();
        assert_eq!(own.public_key.expose(), "pk2");
        // Replaced whole: the label is the default again, not "prod".
        assert_eq!(own.default_prompt_label, "latest");
        assert!(features["off"].langfuse.is_none());
        assert!(features["null"].langfuse.is_some());
    }

    #[test]
    fn debug_hides_secrets_and_custom_values() {
        let features = resolve_json(json!({
            "defaults": {"provider_api_keys": {"openai": "sk-live-abc"}},
            "features": {"chat": {"custom": {"token": "tok-123"}}}
        }));
        let debug = format!("{:?}", features["chat"]);
        assert!(!debug.contains("sk-live-abc"), "{debug}");
        assert!(!debug.contains("tok-123"), "{debug}");
        assert!(debug.contains("token"), "{debug}");
    }
    #[test]
    fn policy_blocks_replace_whole_and_null_inherits() {
        let features = resolve_json(json!({
            "defaults": {
                "retry": {"max_attempts": 2, "base_delay": "5s"},
                "timeouts": {"connect": "1s"},
                "fallbacks": ["mock:echo"]
            },
            "features": {
                "inherits": {},
                "null": {"retry": null, "timeouts": null, "fallbacks": null},
                "own": {"retry": {"max_delay": "1m"}, "timeouts": {"total": "30s"}, "fallbacks": []}
            }
        }));
        let inherited = RetryPolicy {
            max_attempts: 2,
            base_delay: std::time::Duration::from_secs(5),
            ..RetryPolicy::standard()
        };
        for name in ["inherits", "null"] {
            assert_eq!(features[name].retry, inherited);
            assert_eq!(features[name].timeouts.connect.as_secs(), 1);
            assert_eq!(features[name].fallbacks, ["mock:echo"]);
        }
        let own = &features["own"];
        assert_eq!(own.retry.max_attempts, 3);
        assert_eq!(own.retry.base_delay.as_secs(), 1);
        assert_eq!(own.retry.max_delay.as_secs(), 60);
        assert_eq!(own.timeouts.connect, Timeouts::default().connect);
        assert_eq!(own.timeouts.total.as_secs(), 30);
        assert!(own.fallbacks.is_empty());
    }
}
