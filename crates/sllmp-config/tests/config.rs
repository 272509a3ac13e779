//! End-to-end tests of `sllmp-config`: full error texts (insta snapshots) and behaviour.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sllmp_config::{
    BudgetLimit, BudgetWindow, Config, ConfigError, Dimension, FeatureError, Gateway, ModelPrice,
    PriceKey, Prices, RateLimit, UnknownModels,
};
use sllmp_core::{ChatRequest, Message, Request};
use sllmp_pipeline::{Ctx, Flow, Hooks, Pipeline, PipelineFactory, Reply, RetryPolicy, Timeouts};

/// A fixed environment: tests never read or change the process environment.
fn test_env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some("sk-openai-s3cr3t".to_owned()),
        "ANTHROPIC_API_KEY" => Some("sk-ant-s3cr3t".to_owned()),
        "LANGFUSE_PUBLIC_KEY" => Some("pk-lf-s3cr3t".to_owned()),
        "LANGFUSE_SECRET_KEY" => Some("sk-lf-s3cr3t".to_owned()),
        "HOST" => Some("llm.internal".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn load(yaml: &str) -> Config {
    match Config::from_yaml_with_env(yaml, "config.yaml", &test_env) {
        Ok(config) => config,
        Err(err) => panic!("expected a valid configuration, got:\n{err}"),
    }
}

fn error(yaml: &str) -> String {
    let err: ConfigError = Config::from_yaml_with_env(yaml, "config.yaml", &test_env)
        .expect_err("expected a configuration error");
    let text = err.to_string();
    assert!(!text.contains("s3cr3t"), "a secret leaked into:\n{text}");
    assert_eq!(text.lines().count(), err.problems().len());
    text
}

// ---------------------------------------------------------------------------------------
// Error texts.
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_key() {
    insta::assert_snapshot!(error(
        "defaults: {}\nfeatures:\n  chat:\n    modle: \"openai:gpt-4\"\n"
    ));
}

#[test]
fn unknown_top_level_key() {
    insta::assert_snapshot!(error(
        "defaults: {}\nfeature:\n  chat: {}\nfeatures:\n  chat: {}\n"
    ));
}

#[test]
fn bad_model() {
    insta::assert_snapshot!(error(
        "defaults: {}\nfeatures:\n  chat:\n    model: gpt-4\n"
    ));
}

#[test]
fn bad_window() {
    insta::assert_snapshot!(error(
        "defaults: {}
features:
  chat:
    budget_constraints:
      daily:
        dimensions: [user_id]
        budget_limit: {limit: 5, window: 24h}
"
    ));
}

#[test]
fn missing_env_var() {
    insta::assert_snapshot!(error(
        "defaults:
  provider_api_keys:
    openai: \"${OPENAI_API_KEY}\"
    mistral: \"${MISTRAL_API_KEY}\"
features:
  chat: {}
"
    ));
}

#[test]
fn yaml_syntax_error() {
    insta::assert_snapshot!(error(
        "defaults:\n  provider_api_keys:\n    openai: \"sk-openai-s3cr3t\nfeatures: {}\n"
    ));
}

#[test]
fn yaml_syntax_error_bad_indentation() {
    insta::assert_snapshot!(error("defaults: {}\nfeatures:\n  chat: {}\n   code: {}\n"));
}

#[test]
fn empty_file() {
    insta::assert_snapshot!(error(""));
    assert_eq!(error("# nothing yet\n"), error(""));
    assert_eq!(error("~\n"), error(""));
}

#[test]
fn top_level_not_a_mapping() {
    insta::assert_snapshot!(error("- defaults\n- features\n"));
}

#[test]
fn no_features() {
    insta::assert_snapshot!(error("defaults: {}\nfeatures: {}\n"));
    assert_eq!(
        error("defaults: {}\nfeatures:\n"),
        error("defaults: {}\nfeatures: {}\n")
    );
}

#[test]
fn missing_sections() {
    insta::assert_snapshot!(error("defaults:\n  model: \"openai:gpt-4o\"\n"));
}

#[test]
fn bad_feature_name() {
    insta::assert_snapshot!(error(
        "defaults: {}\nfeatures:\n  chat bot: {}\n  ok_name-2: {}\n"
    ));
}

#[test]
fn constraint_with_no_limit() {
    insta::assert_snapshot!(error(
        "defaults:
  budget_constraints:
    daily_budget:
      dimensions: [user_id]
      description: Daily budget
features:
  chat: {}
"
    ));
}

#[test]
fn every_problem_at_once() {
    insta::assert_snapshot!(error(
        "defaults:
  model: gpt-4
  providers:
    \"my openai\": {provider: openai}
    local: {api_base: \"http://${HOST}\"}
  budget_constraints:
    daily:
      dimensions: [user_id, users, meta:, \"meta:\"]
      budget_limit: {limit: -1, window: 1d}
    burst:
      dimensions: [feature]
      rate_limit: {per_minute: 0}
  langfuse:
    public_key: ${LANGFUSE_PUBLIC_KEY}
    secret_key: \"  \"
features:
  chat:
    owner: 42
    langfuse: {enabled: yes, base_url: \"${LANGFUSE_HOST}\"}
    custom: {note: \"${UNTERMINATED\"}
"
    ));
}

#[test]
fn wrong_types_do_not_echo_values() {
    insta::assert_snapshot!(error(
        "defaults:
  provider_api_keys: sk-openai-s3cr3t
  langfuse:
    public_key: [sk-lf-s3cr3t]
    secret_key: 123456
features:
  chat: sk-ant-s3cr3t
"
    ));
}

#[test]
fn unreadable_file() {
    let err = Config::load(Path::new("config.yaml")).expect_err("no such file here");
    assert_eq!(
        err.to_string(),
        "config.yaml: cannot read the file: No such file or directory (os error 2)"
    );
    assert_eq!(err.origin(), "config.yaml");
}

// ---------------------------------------------------------------------------------------
// Behaviour.
// ---------------------------------------------------------------------------------------

/// The Python original's README example, corrected: its `budget_constraints` used keys
/// the original never accepted (`max_cost`, `window_seconds`, `max_requests`).
const README_EXAMPLE: &str = r#"
defaults:
  # Global defaults applied to all features
  provider_api_keys:
    openai: "${OPENAI_API_KEY}"
    anthropic: "${ANTHROPIC_API_KEY}"

  # Default budget constraints
  budget_constraints:
    daily_budget:
      dimensions: [feature]
      budget_limit:
        limit: 100.0
        window: 1d
    rate_limit:
      dimensions: [user_id]
      rate_limit:
        per_minute: 1000

  # Default Langfuse config
  langfuse:
    public_key: "${LANGFUSE_PUBLIC_KEY}"
    secret_key: "${LANGFUSE_SECRET_KEY}"
    base_url: "https://cloud.langfuse.com"
    enabled: true

features:
  chat_assistant:
    description: "Main chat assistant feature"
    owner: "ai-team"
    model: "openai:gpt-4"
    # Inherits defaults, can override specific values

  code_assistant:
    description: "Code generation and review"
    owner: "dev-tools-team"
    model: "anthropic:claude-3.5-sonnet"
    budget_constraints:
      # Override default rate limit for this feature
      rate_limit:
        dimensions: [user_id]
        rate_limit:
          per_minute: 500
"#;

#[test]
fn readme_example_loads() {
    let config = load(README_EXAMPLE);
    assert_eq!(config.origin(), "config.yaml");
    let names: Vec<&str> = config.features().map(|f| f.name.as_str()).collect();
    assert_eq!(names, vec!["chat_assistant", "code_assistant"]);

    let chat = config.feature("chat_assistant").unwrap();
    assert_eq!(chat.description, "Main chat assistant feature");
    assert_eq!(chat.owner, "ai-team");
    assert_eq!(chat.model.as_deref(), Some("openai:gpt-4"));
    assert_eq!(
        chat.provider_api_keys["openai"].expose(),
        "sk-openai-s3cr3t"
    );
    assert_eq!(
        chat.provider_api_keys["anthropic"].expose(),
        "sk-ant-s3cr3t"
    );
    assert_eq!(
        chat.budget_constraints["rate_limit"].rate_limit,
        Some(RateLimit {
            per_minute: Some(1000),
            tokens_per_minute: None
        })
    );
    let daily = &chat.budget_constraints["daily_budget"];
    assert_eq!(daily.name, "daily_budget");
    assert_eq!(daily.dimensions, vec![Dimension::Feature]);
    assert_eq!(
        daily.budget_limit,
        Some(BudgetLimit {
            limit: 100.0,
            window: BudgetWindow::Day
        })
    );
    let langfuse = chat.langfuse.as_ref().unwrap();
    assert_eq!(langfuse.public_key.expose(), "pk-lf-s3cr3t");
    assert_eq!(langfuse.base_url, "https://cloud.langfuse.com");
    assert_eq!(langfuse.default_prompt_label, "latest");

    let code = config.feature("code_assistant").unwrap();
    assert_eq!(code.model.as_deref(), Some("anthropic:claude-3.5-sonnet"));
    assert_eq!(
        code.budget_constraints["rate_limit"].rate_limit,
        Some(RateLimit {
            per_minute: Some(500),
            tokens_per_minute: None
        })
    );
    assert_eq!(code.budget_constraints["daily_budget"], *daily);
    assert!(code.langfuse.is_some());
}

#[test]
fn the_original_readme_example_is_rejected_with_useful_messages() {
    let original = README_EXAMPLE
        .replace(
            "      dimensions: [feature]\n      budget_limit:\n        limit: 100.0\n        window: 1d\n",
            "      max_cost: 100.0\n      window_seconds: 86400\n",
        )
        .replace(
            "        dimensions: [user_id]\n        rate_limit:\n          per_minute: 500\n",
            "        max_requests: 500\n        window_seconds: 60\n",
        );
    let message = "`max_cost`, `window_seconds` and `max_requests` are not keys of a constraint (the Python original's README showed them, but its code never accepted them); write budget_limit: {limit: 10.0, window: 1d} and/or rate_limit: {per_minute: 60}, with dimensions: [feature]";
    // One problem per constraint, at the constraint; nothing "missing" on top.
    assert_eq!(
        error(&original).lines().collect::<Vec<_>>(),
        [
            format!("config.yaml: defaults.budget_constraints.daily_budget: {message}"),
            format!(
                "config.yaml: features.code_assistant.budget_constraints.rate_limit: {message}"
            ),
        ]
    );
}

#[test]
fn constraint_errors_name_the_key_and_the_fix() {
    let text = error(
        "defaults:
  budget_constraints:
    empty_rate: {dimensions: [user_id], rate_limit: {}}
    zero_tokens: {dimensions: [api_key], rate_limit: {tokens_per_minute: 0}}
    old_rate: {dimensions: [model], rate_limit: {requests_per_minute: 5}}
    typo: {dimensions: [provider, users], rate_limit: {per_minute: 5}, descripton: x}
features:
  chat: {}
",
    );
    let expected = [
        "config.yaml: defaults.budget_constraints.empty_rate.rate_limit: sets neither per_minute nor tokens_per_minute, so it limits nothing; add per_minute: 60 or tokens_per_minute: 100000",
        "config.yaml: defaults.budget_constraints.old_rate.rate_limit: sets neither per_minute nor tokens_per_minute, so it limits nothing; add per_minute: 60 or tokens_per_minute: 100000",
        "config.yaml: defaults.budget_constraints.old_rate.rate_limit.requests_per_minute: unknown key; expected one of: per_minute, tokens_per_minute",
        "config.yaml: defaults.budget_constraints.typo.descripton: unknown key; expected one of: dimensions, budget_limit, rate_limit, description (did you mean \"description\"?)",
        "config.yaml: defaults.budget_constraints.typo.dimensions[1]: \"users\" is not a dimension; use one of feature, user_id, organization, team, api_key, model, provider, meta:<key>",
        "config.yaml: defaults.budget_constraints.zero_tokens.rate_limit.tokens_per_minute: expected a whole number from 1 to 18446744073709551615, found 0; write a count such as 100000",
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn new_dimensions_and_token_rates_load() {
    let config = load(
        "defaults:
  budget_constraints:
    per-key: {dimensions: [api_key, model, provider], rate_limit: {per_minute: \"${RPM:-60}\", tokens_per_minute: 100000}}
features:
  chat: {}
",
    );
    let constraint = &config.feature("chat").unwrap().budget_constraints["per-key"];
    assert_eq!(
        constraint.dimensions,
        [Dimension::ApiKey, Dimension::Model, Dimension::Provider]
    );
    assert_eq!(
        constraint.rate_limit,
        Some(RateLimit {
            per_minute: Some(60),
            tokens_per_minute: Some(100_000)
        })
    );
}

#[test]
fn prices_load() {
    let config = load(
        r#"
defaults: {}
features:
  chat: {}
prices:
  unknown: {input: 1.0, output: 4.0}
  models:
    "openai:gpt-4o": {input: 2.5, output: 10.0, cached_input: 1.25, cache_write: 3.125}
    "my-local:*": {input: 0, output: 0}
"#,
    );
    let prices = config.prices();
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
    assert_eq!(keys, ["my-local:*", "openai:gpt-4o"]);
    let gpt = &prices.models[&PriceKey {
        provider: "openai".into(),
        model: Some("gpt-4o".into()),
    }];
    assert_eq!(
        *gpt,
        ModelPrice {
            input: 2.5,
            output: 10.0,
            cached_input: 1.25,
            cache_write: 3.125
        }
    );
    // Without the block: reject unknown prices, no overrides.
    let config = load("defaults: {}\nfeatures: {chat: {}}\n");
    assert_eq!(*config.prices(), Prices::default());
    assert_eq!(config.prices().unknown, UnknownModels::Reject);
    let config = load("defaults: {}\nfeatures: {chat: {}}\nprices: {unknown: reject}\n");
    assert_eq!(config.prices().unknown, UnknownModels::Reject);
}

#[test]
fn price_errors_name_the_key_and_the_fix() {
    let text = error(
        r#"
defaults: {}
features:
  chat: {}
prices:
  unknown: free
  model: {}
  models:
    gpt-4o: {input: 1, output: 1}
    "openai:gpt-4o": {input: -1, output: "1e999"}
    "openai:gpt-4o-mini": {input: 1}
    "mock:*": {input: 1, output: 1, cached: 0.5}
    "mock:echo": {input: "${PRICE}", output: 1}
"#,
    );
    let expected = [
        "config.yaml: prices.model: unknown key; expected one of: unknown, models (did you mean \"models\"?)",
        "config.yaml: prices.models.gpt-4o: \"gpt-4o\" is not written as provider:model or provider:*; write it as e.g. \"openai:gpt-4o\", or \"openai:*\" for every model of a provider",
        "config.yaml: prices.models.\"mock:*\".cached: unknown key; expected one of: input, output, cached_input, cache_write",
        "config.yaml: prices.models.\"mock:echo\".input: environment variable PRICE is not set; set it, or give a default with ${PRICE:-default}",
        "config.yaml: prices.models.\"openai:gpt-4o\".input: must be a number of 0 or more, found -1; write a price in USD per million tokens, e.g. 2.5 (0 for a free model)",
        "config.yaml: prices.models.\"openai:gpt-4o\".output: must be a number of 0 or more, found inf; write a price in USD per million tokens, e.g. 2.5 (0 for a free model)",
        "config.yaml: prices.models.\"openai:gpt-4o-mini\".output: missing; add it, e.g. output: 10.0",
        "config.yaml: prices.unknown: \"free\" is not a policy for unknown prices; write unknown: reject, or a price such as unknown: {input: 1.0, output: 4.0}",
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn inheritance_and_merge_follow_the_python_rules() {
    let config = load(
        r#"
defaults:
  model: "openai:gpt-4o-mini"
  provider_api_keys: {openai: "${OPENAI_API_KEY}", anthropic: "${ANTHROPIC_API_KEY}"}
  providers:
    fast: {provider: groq, api_base: "https://groq.example"}
    local: {provider: openai, api_base: "http://localhost:8000"}
  budget_constraints:
    daily: {dimensions: [user_id], budget_limit: {limit: 10, window: 1d}}
    rpm: {dimensions: [feature], rate_limit: {per_minute: 60}}
features:
  inherits:
    description: "takes everything from defaults"
  overrides:
    model: "anthropic:claude-sonnet-4"
    provider_api_keys: {openai: "sk-feature-own"}
    providers:
      local: {provider: vllm}
      extra: {provider: openai, client_args: {timeout: 30}}
    budget_constraints:
      daily: {dimensions: [team], rate_limit: {per_minute: 5}}
      monthly: {dimensions: ["meta:project"], budget_limit: {limit: 500, window: 30d}}
    custom: {tier: gold, tags: [a, b]}
  explicit_nulls:
    model: null
    provider_api_keys: null
    providers: {}
    budget_constraints:
"#,
    );

    let inherits = config.feature("inherits").unwrap();
    assert_eq!(inherits.model.as_deref(), Some("openai:gpt-4o-mini"));
    assert_eq!(inherits.provider_api_keys.len(), 2);
    assert_eq!(inherits.providers.len(), 2);
    assert_eq!(inherits.budget_constraints.len(), 2);
    assert!(inherits.custom.is_empty());
    assert_eq!(inherits.owner, "");

    let overrides = config.feature("overrides").unwrap();
    assert_eq!(
        overrides.model.as_deref(),
        Some("anthropic:claude-sonnet-4")
    );
    // Merged by key; the feature's entry wins.
    assert_eq!(
        overrides.provider_api_keys["openai"].expose(),
        "sk-feature-own"
    );
    assert_eq!(
        overrides.provider_api_keys["anthropic"].expose(),
        "sk-ant-s3cr3t"
    );
    let aliases: Vec<&str> = overrides.providers.keys().map(String::as_str).collect();
    assert_eq!(aliases, vec!["extra", "fast", "local"]);
    // Replaced whole, not deep-merged: the default api_base is gone.
    assert_eq!(overrides.providers["local"].provider, "vllm");
    assert!(overrides.providers["local"].options.is_empty());
    assert_eq!(
        overrides.providers["fast"].options["api_base"],
        "https://groq.example"
    );
    assert_eq!(
        overrides.providers["extra"].options["client_args"],
        json!({"timeout": 30})
    );
    let names: Vec<&str> = overrides
        .budget_constraints
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, vec!["daily", "monthly", "rpm"]);
    let daily = &overrides.budget_constraints["daily"];
    assert_eq!(daily.dimensions, vec![Dimension::Team]);
    assert_eq!(daily.budget_limit, None);
    assert_eq!(
        overrides.budget_constraints["monthly"].dimensions,
        vec![Dimension::Meta("project".to_owned())]
    );
    assert_eq!(
        overrides.budget_constraints["monthly"]
            .budget_limit
            .as_ref()
            .unwrap()
            .window
            .seconds(),
        30 * 86_400
    );
    assert_eq!(overrides.custom["tier"], "gold");
    assert_eq!(overrides.custom["tags"], json!(["a", "b"]));

    // Null and empty inherit.
    let nulls = config.feature("explicit_nulls").unwrap();
    assert_eq!(nulls.model, inherits.model);
    assert_eq!(nulls.provider_api_keys, inherits.provider_api_keys);
    assert_eq!(nulls.providers, inherits.providers);
    assert_eq!(nulls.budget_constraints, inherits.budget_constraints);
}

#[test]
fn langfuse_enabled_false_disables_a_feature() {
    let config = load(
        r#"
defaults:
  langfuse:
    public_key: "${LANGFUSE_PUBLIC_KEY}"
    secret_key: "${LANGFUSE_SECRET_KEY}"
    default_prompt_label: production
features:
  traced: {}
  untraced:
    langfuse: {enabled: false}
  own_project:
    langfuse: {public_key: pk-other, secret_key: sk-other, base_url: "https://${HOST}"}
"#,
    );
    let traced = config.feature("traced").unwrap().langfuse.as_ref().unwrap();
    assert!(traced.enabled);
    assert_eq!(traced.default_prompt_label, "production");
    assert!(config.feature("untraced").unwrap().langfuse.is_none());
    let own = config
        .feature("own_project")
        .unwrap()
        .langfuse
        .as_ref()
        .unwrap();
    assert_eq!(own.public_key.expose(), "pk-other");
    assert_eq!(own.base_url, "https://llm.internal");
    // Replaced whole: the default's label is not inherited.
    assert_eq!(own.default_prompt_label, "latest");

    // Disabled in defaults: off everywhere unless a feature turns it on.
    let config = load(
        "defaults:\n  langfuse: {enabled: false}\nfeatures:\n  a: {}\n  b: {langfuse: {public_key: p, secret_key: s}}\n",
    );
    assert!(config.feature("a").unwrap().langfuse.is_none());
    assert!(config.feature("b").unwrap().langfuse.is_some());
}

#[test]
fn env_substitution_forms() {
    let config = load(
        r#"
defaults:
  model: "${MODEL_PROVIDER:-openai}:gpt-4o"
  provider_api_keys:
    whole: "${OPENAI_API_KEY}"
    unquoted: ${ANTHROPIC_API_KEY}
    partial: "Bearer ${OPENAI_API_KEY} (${HOST})"
    default_used: "${NOT_SET:-fallback-key}"
    default_for_empty: "${EMPTY:-was-empty}"
    default_unused: "${HOST:-unused}"
    escaped: "$${OPENAI_API_KEY}"
    dollars: "cost: $5 $$ $"
  providers:
    local: {provider: openai, api_base: "https://${HOST}/v1", client_args: {headers: ["x-host: ${HOST}"]}}
  budget_constraints:
    from_env:
      dimensions: [user_id]
      budget_limit: {limit: "${DAILY_LIMIT:-2.5}", window: "${WINDOW:-7d}"}
      rate_limit: {per_minute: "${RPM:-30}"}
features:
  chat:
    description: "served by ${HOST}"
    custom: {note: "literal $${HOST}"}
"#,
    );
    let chat = config.feature("chat").unwrap();
    assert_eq!(chat.model.as_deref(), Some("openai:gpt-4o"));
    let keys: BTreeMap<&str, &str> = chat
        .provider_api_keys
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(keys["whole"], "sk-openai-s3cr3t");
    assert_eq!(keys["unquoted"], "sk-ant-s3cr3t");
    assert_eq!(keys["partial"], "Bearer sk-openai-s3cr3t (llm.internal)");
    assert_eq!(keys["default_used"], "fallback-key");
    assert_eq!(keys["default_for_empty"], "was-empty");
    assert_eq!(keys["default_unused"], "llm.internal");
    assert_eq!(keys["escaped"], "${OPENAI_API_KEY}");
    assert_eq!(keys["dollars"], "cost: $5 $$ $");
    let local = &chat.providers["local"];
    assert_eq!(local.options["api_base"], "https://llm.internal/v1");
    assert_eq!(
        local.options["client_args"]["headers"][0],
        "x-host: llm.internal"
    );
    let from_env = &chat.budget_constraints["from_env"];
    assert_eq!(
        from_env.budget_limit,
        Some(BudgetLimit {
            limit: 2.5,
            window: BudgetWindow::Week
        })
    );
    assert_eq!(
        from_env.rate_limit,
        Some(RateLimit {
            per_minute: Some(30),
            tokens_per_minute: None
        })
    );
    assert_eq!(chat.description, "served by llm.internal");
    assert_eq!(chat.custom["note"], "literal ${HOST}");
}

#[test]
fn env_is_not_applied_to_keys() {
    let config = load("defaults:\n  provider_api_keys: {\"${HOST}\": x}\nfeatures: {chat: {}}\n");
    assert!(
        config
            .feature("chat")
            .unwrap()
            .provider_api_keys
            .contains_key("${HOST}")
    );
}

const DETECT: &str = "defaults: {}\nfeatures: {chat: {}, code: {}, default: {}}\n";

fn meta(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().cloned().expect("an object")
}

#[test]
fn feature_detection_order() {
    let config = load(DETECT);
    let name = |m: Option<&serde_json::Map<String, Value>>, h: Option<&str>| {
        config.detect_feature(m, h).map(|f| f.name.clone())
    };
    let both = meta(json!({"feature": "chat", "x-ai-feature": "code"}));
    assert_eq!(name(Some(&both), Some("default")), Ok("chat".to_owned()));
    let key = meta(json!({"x-ai-feature": "code", "user_id": "u1"}));
    assert_eq!(name(Some(&key), Some("chat")), Ok("code".to_owned()));
    assert_eq!(
        name(Some(&meta(json!({"user_id": "u1"}))), Some("code")),
        Ok("code".to_owned())
    );
    assert_eq!(name(None, None), Ok("default".to_owned()));
}

#[test]
fn feature_detection_errors() {
    let config = load(DETECT);
    let unknown = config
        .detect_feature(Some(&meta(json!({"feature": "foo"}))), Some("chat"))
        .unwrap_err();
    assert_eq!(
        unknown,
        FeatureError::Unknown {
            name: "foo".to_owned(),
            source_key: "metadata.feature",
            known: vec!["chat".to_owned(), "code".to_owned(), "default".to_owned()],
        }
    );
    assert_eq!(
        unknown.to_string(),
        "unknown feature \"foo\" in metadata.feature; known features: chat, code, default"
    );
    let err = config
        .detect_feature(Some(&meta(json!({"x-ai-feature": "Chat"}))), None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown feature \"Chat\" in metadata.x-ai-feature; known features: chat, code, default"
    );
    let err = config.detect_feature(None, Some("nope")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown feature \"nope\" in x-ai-feature header; known features: chat, code, default"
    );

    let config = load("defaults: {}\nfeatures: {chat: {}, code: {}}\n");
    let err = config.detect_feature(None, None).unwrap_err();
    assert_eq!(
        err,
        FeatureError::Undetermined {
            known: vec!["chat".to_owned(), "code".to_owned()]
        }
    );
    assert_eq!(
        err.to_string(),
        "unable to determine the feature: set metadata.feature to one of: chat, code (no feature is named \"default\")"
    );
}

#[test]
fn secrets_are_redacted_in_debug() {
    let yaml = format!(
        "{README_EXAMPLE}\n  with_alias:\n    providers:\n      p: {{provider: openai, api_key: \"${{OPENAI_API_KEY}}\", client_args: {{headers: {{Authorization: \"Bearer ${{ANTHROPIC_API_KEY}}\"}}}}}}\n    custom: {{token: \"${{LANGFUSE_SECRET_KEY}}\"}}\n"
    );
    let config = load(&yaml);
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
    assert!(debug.contains("[REDACTED]"), "{debug}");
    assert!(debug.contains("chat_assistant"), "{debug}");
    let pretty = format!("{config:#?}");
    assert!(!pretty.contains("s3cr3t"), "{pretty}");
}

#[test]
fn load_reads_a_file() {
    let dir = std::env::temp_dir().join(format!("sllmp-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        "defaults: {}\nfeatures:\n  chat: {model: \"openai:gpt-4o\"}\n",
    )
    .unwrap();
    let config = Config::load(&path).expect("valid");
    assert_eq!(config.origin(), path.display().to_string());
    assert_eq!(
        config.feature("chat").unwrap().model.as_deref(),
        Some("openai:gpt-4o")
    );

    std::fs::write(&path, "defaults: {}\nfeatures:\n  chat: {model: gpt}\n").unwrap();
    let err = Config::load(&path).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: features.chat.model:", path.display())),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// Attempt policies: retry, timeouts, fallbacks.
// ---------------------------------------------------------------------------------------

const POLICIES: &str = r#"
defaults:
  retry: {max_attempts: 4, base_delay: 2s, max_delay: 1m}
  timeouts: {connect: 5s, first_token: 60s, total: 600s}
  fallbacks: ["openai:gpt-4o-mini", "mock:echo"]
features:
  inherits: {model: "openai:gpt-4o"}
  own:
    model: "openai:gpt-4o"
    retry: {max_attempts: 5}
    timeouts: {first_token: 1500ms}
    fallbacks: ["local:llama"]
    providers:
      local: {provider: openai, api_base: "http://localhost:8000/v1"}
  nulls: {retry: null, timeouts: null, fallbacks: null}
  none: {retry: {max_attempts: 1}, fallbacks: []}
"#;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn retry_timeouts_and_fallbacks_parse_and_inherit() {
    let config = load(POLICIES);
    let inherits = config.feature("inherits").unwrap();
    let defaults_retry = RetryPolicy {
        max_attempts: 4,
        base_delay: secs(2),
        max_delay: secs(60),
    };
    let defaults_timeouts = Timeouts {
        connect: secs(5),
        first_token: secs(60),
        total: secs(600),
    };
    assert_eq!(inherits.retry, defaults_retry);
    assert_eq!(inherits.timeouts, defaults_timeouts);
    assert_eq!(inherits.fallbacks, ["openai:gpt-4o-mini", "mock:echo"]);

    // A feature's block replaces the default's whole: the keys it leaves out take the
    // built-in values, not the defaults' block's.
    let own = config.feature("own").unwrap();
    assert_eq!(
        own.retry,
        RetryPolicy {
            max_attempts: 5,
            ..RetryPolicy::standard()
        }
    );
    assert_eq!(
        own.timeouts,
        Timeouts {
            first_token: Duration::from_millis(1500),
            ..Timeouts::default()
        }
    );
    assert_eq!(own.fallbacks, ["local:llama"]);

    // Null inherits, like absent.
    let nulls = config.feature("nulls").unwrap();
    assert_eq!(nulls.retry, defaults_retry);
    assert_eq!(nulls.timeouts, defaults_timeouts);
    assert_eq!(nulls.fallbacks, inherits.fallbacks);

    // An empty list turns fallbacks off; one attempt turns retries off.
    let none = config.feature("none").unwrap();
    assert_eq!(none.retry.max_attempts, 1);
    assert!(none.fallbacks.is_empty());
}

#[test]
fn without_policy_keys_retries_are_standard_and_timeouts_default() {
    let config = load("defaults: {}\nfeatures:\n  chat: {}\n  own: {retry: {}, timeouts: {}}\n");
    for name in ["chat", "own"] {
        let feature = config.feature(name).unwrap();
        assert_eq!(feature.retry, RetryPolicy::standard());
        assert_eq!(feature.timeouts, Timeouts::default());
        assert!(feature.fallbacks.is_empty());
    }
}

#[test]
fn every_duration_form() {
    let config = load(
        "defaults: {}\nfeatures:\n  chat:\n    retry: {base_delay: 0s, max_delay: 250ms}\n    timeouts: {connect: 1.5s, first_token: 2m, total: \"${TOTAL:-1h}\"}\n",
    );
    let chat = config.feature("chat").unwrap();
    assert_eq!(chat.retry.base_delay, Duration::ZERO);
    assert_eq!(chat.retry.max_delay, Duration::from_millis(250));
    assert_eq!(chat.timeouts.connect, Duration::from_millis(1500));
    assert_eq!(chat.timeouts.first_token, secs(120));
    assert_eq!(chat.timeouts.total, secs(3600));
}

#[test]
fn policy_errors_name_the_key_and_the_fix() {
    let text = error(
        "defaults:
  retry: {max_attempts: 0, base_dealy: 1s}
  timeouts: {connect: 5, first_token: \"30\", total: 0s, idle: 5s}
  fallbacks: [gpt-4o-mini, \"mock:echo\"]
features:
  chat:
    retry: {base_delay: 10s, max_delay: 5s}
    timeouts: {total: 10 minutes}
    fallbacks: \"openai:gpt-4o\"
  code:
    retry: {base_delay: 1m}
",
    );
    let expected = [
        "config.yaml: defaults.fallbacks[0]: \"gpt-4o-mini\" is not written as provider:model; write it as e.g. \"openai:gpt-4o-mini\"",
        "config.yaml: defaults.retry.base_dealy: unknown key; expected one of: max_attempts, base_delay, max_delay (did you mean \"base_delay\"?)",
        "config.yaml: defaults.retry.max_attempts: expected a whole number from 1 to 4294967295, found 0; write a count such as 3 (1 turns retries off)",
        "config.yaml: defaults.timeouts.connect: a bare number is not a duration; write it with a unit (ms, s, m or h), e.g. \"5s\"",
        "config.yaml: defaults.timeouts.first_token: \"30\" has no unit; write it with one (ms, s, m or h), e.g. \"30s\"",
        "config.yaml: defaults.timeouts.idle: unknown key; expected one of: connect, first_token, total",
        "config.yaml: defaults.timeouts.total: must be greater than 0; a timeout of 0 would fail every call, write e.g. \"30s\"",
        "config.yaml: features.chat.fallbacks: expected a list, found text; write a list, e.g. [user_id]",
        "config.yaml: features.chat.retry: max_delay (5s) is shorter than base_delay (10s); raise max_delay to at least 10s, e.g. max_delay: 10s, or lower base_delay",
        "config.yaml: features.chat.timeouts.total: \"10 minutes\" is not a duration; write a number and a unit (ms, s, m or h), e.g. \"5s\" or \"250ms\"",
        "config.yaml: features.code.retry: max_delay (30s, the default) is shorter than base_delay (60s); raise max_delay to at least 60s, e.g. max_delay: 60s, or lower base_delay",
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn unknown_policy_key_in_a_feature_is_suggested() {
    assert_eq!(
        error("defaults: {}\nfeatures:\n  chat:\n    timeout: {total: 5s}\n"),
        "config.yaml: features.chat.timeout: unknown key; expected one of: description, owner, model, provider_api_keys, providers, budget_constraints, langfuse, retry, timeouts, fallbacks, custom (did you mean \"timeouts\"?)"
    );
}

fn gateway(yaml: &str) -> Result<Gateway, ConfigError> {
    let client = sllmp_providers::http_client(&Default::default());
    Gateway::build_with_env(load(yaml), &client, &|_| None)
}

#[tokio::test]
async fn a_fallback_provider_must_be_configured_for_its_feature() {
    let err = gateway(
        "defaults:
  fallbacks: [\"mock:echo\", \"anthropic:claude\"]
features:
  chat: {}
  code:
    providers: {local: {provider: openai, api_base: \"http://localhost:1/v1\"}}
    fallbacks: [\"local:llama\", \"remote:llama\"]
",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.yaml: features.chat.fallbacks[1]: unknown provider \"anthropic\" in \"anthropic:claude\"; use one of the feature's providers (mock, openai), or add an alias for it under providers\n\
         config.yaml: features.code.fallbacks[1]: unknown provider \"remote\" in \"remote:llama\"; use one of the feature's providers (mock, openai, local), or add an alias for it under providers"
    );
    assert_eq!(err.problems()[0].path(), Some("features.chat.fallbacks[1]"));
}

#[tokio::test]
async fn models_include_fallbacks() {
    let gateway = gateway(POLICIES).unwrap();
    let models: Vec<String> = gateway
        .models()
        .into_iter()
        .map(|m| format!("{} by {}", m.id, m.owned_by))
        .collect();
    assert_eq!(
        models,
        [
            "local:llama by local",
            "mock:echo by mock",
            "openai:gpt-4o by openai",
            "openai:gpt-4o-mini by openai"
        ]
    );
}

/// What the middleware after the gateway's saw of the request's policies.
type Seen = Arc<Mutex<Option<(RetryPolicy, Timeouts, Vec<String>)>>>;

async fn policies_seen(gateway: &Gateway, feature: &str) -> (RetryPolicy, Timeouts, Vec<String>) {
    let req = ChatRequest {
        model: "mock:echo".into(),
        messages: vec![Message::new("user", "hello")],
        metadata: Some(meta(json!({"feature": feature}))),
        ..ChatRequest::default()
    };
    let ctx = Ctx::new("req_test", &Request::from(req.clone()), gateway.providers());
    let mut pipeline = Pipeline::new(ctx);
    gateway.build(&mut pipeline);
    assert!(
        !pipeline.middleware_names().contains(&"retry"),
        "the feature sets the policy; no separate retry middleware"
    );
    let seen = Seen::default();
    let write = Arc::clone(&seen);
    pipeline.add(Hooks::new("peek").on_request(move |ctx, _| {
        let fallbacks = ctx.fallbacks().iter().map(ToString::to_string).collect();
        *write.lock().unwrap() = Some((*ctx.retry_policy(), *ctx.timeouts(), fallbacks));
        Ok(Flow::Continue)
    }));
    pipeline.run(req).await.expect("the mock answers");
    let seen = seen.lock().unwrap().take();
    seen.expect("the peek hook ran")
}

#[tokio::test]
async fn the_gateway_applies_each_features_policies() {
    let yaml = POLICIES
        .replace(
            "  inherits: {model: \"openai:gpt-4o\"}",
            "  inherits: {model: \"mock:echo\"}",
        )
        .replace(
            "  own:\n    model: \"openai:gpt-4o\"",
            "  own:\n    model: \"mock:echo\"",
        );
    let gateway = gateway(&yaml).unwrap();

    let (retry, timeouts, fallbacks) = policies_seen(&gateway, "inherits").await;
    assert_eq!(retry.max_attempts, 4);
    assert_eq!(retry.max_delay, secs(60));
    assert_eq!(timeouts.connect, secs(5));
    assert_eq!(fallbacks, ["openai:gpt-4o-mini", "mock:echo"]);

    let (retry, timeouts, fallbacks) = policies_seen(&gateway, "own").await;
    assert_eq!(
        retry,
        RetryPolicy {
            max_attempts: 5,
            ..RetryPolicy::standard()
        }
    );
    assert_eq!(timeouts.first_token, Duration::from_millis(1500));
    assert_eq!(timeouts.connect, Timeouts::default().connect);
    assert_eq!(fallbacks, ["local:llama"]);

    let (retry, _, fallbacks) = policies_seen(&gateway, "none").await;
    assert_eq!(retry.max_attempts, 1);
    assert!(fallbacks.is_empty());
}

#[tokio::test]
async fn without_policy_keys_the_gateway_keeps_standard_retries() {
    let gateway = gateway("defaults: {}\nfeatures:\n  default: {model: \"mock:echo\"}\n").unwrap();
    let (retry, timeouts, fallbacks) = policies_seen(&gateway, "default").await;
    assert_eq!(retry, RetryPolicy::standard());
    assert_eq!(timeouts, Timeouts::default());
    assert!(fallbacks.is_empty());
}

// ---------------------------------------------------------------------------------------
// Limits and prices in the gateway.
// ---------------------------------------------------------------------------------------

/// Runs `model` for `feature` through the gateway's pipeline; the reply and the cost every
/// completion hook saw.
async fn run_priced(gateway: &Gateway, feature: &str, model: &str) -> (Reply, Option<u64>) {
    let req = ChatRequest {
        model: model.into(),
        messages: vec![Message::new("user", "hello")],
        metadata: Some(meta(json!({"feature": feature}))),
        ..ChatRequest::default()
    };
    let ctx = Ctx::new("req_test", &Request::from(req.clone()), gateway.providers());
    let mut pipeline = Pipeline::new(ctx);
    gateway.build(&mut pipeline);
    let seen = Arc::new(Mutex::new(None));
    let write = Arc::clone(&seen);
    pipeline.add(Hooks::new("peek").on_complete(move |ctx, _| {
        *write.lock().unwrap() = Some(ctx.cost_nanos());
    }));
    let reply = pipeline.start(Request::from(req)).await;
    // A non-streamed request completes in a task after its answer.
    for _ in 0..400 {
        if let Some(cost) = *seen.lock().unwrap() {
            return (reply, cost);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the completion hooks never ran");
}

fn error_code(reply: &Reply) -> Option<&str> {
    reply.result.as_ref().err().and_then(|e| e.code())
}

const PRICED: &str = r#"
defaults: {}
prices:
  models:
    "mock:*": {input: 1000, output: 2000}
    "mock:exact": {input: 1, output: 1}
    "cheap:*": {input: 0, output: 0}
features:
  plain:
    budget_constraints:
      all: {dimensions: [], budget_limit: {limit: 1000, window: 1d}}
  aliased:
    providers:
      my-mock: {provider: mock}
      cheap: {provider: mock}
    budget_constraints:
      all: {dimensions: [feature], budget_limit: {limit: 1000, window: 1d}}
  unlimited: {}
  strict:
    budget_constraints:
      all: {dimensions: [], budget_limit: {limit: 1000, window: 1d}}
      two: {dimensions: [feature], rate_limit: {per_minute: 2}}
"#;

#[tokio::test]
async fn prices_override_the_embedded_table_per_provider_and_alias() {
    let gateway = gateway(PRICED).unwrap();
    // "hello" is 8 prompt tokens and 2 completion tokens at the mock.
    let (reply, cost) = run_priced(&gateway, "plain", "mock:echo").await;
    assert!(reply.result.is_ok());
    assert_eq!(cost, Some(8 * 1_000_000 + 2 * 2_000_000));
    let (_, cost) = run_priced(&gateway, "plain", "mock:exact").await;
    assert_eq!(cost, Some(8 * 1_000 + 2 * 1_000));
    // An alias without its own price costs what its provider type's model costs.
    let (_, cost) = run_priced(&gateway, "aliased", "my-mock:echo").await;
    assert_eq!(cost, Some(12_000_000));
    // An alias priced by its own name.
    let (_, cost) = run_priced(&gateway, "aliased", "cheap:echo").await;
    assert_eq!(cost, Some(0));
    // A feature without constraints runs no limits (and prices nothing).
    let (reply, cost) = run_priced(&gateway, "unlimited", "mock:echo").await;
    assert!(reply.result.is_ok());
    assert_eq!(cost, None);
    assert!(!reply.headers.contains_key("x-ratelimit-limit-requests"));
}

#[tokio::test]
async fn the_gateway_enforces_each_features_constraints() {
    let gateway = gateway(PRICED).unwrap();
    for remaining in ["1", "0"] {
        let (reply, _) = run_priced(&gateway, "strict", "mock:echo").await;
        assert!(reply.result.is_ok());
        assert_eq!(reply.headers["x-ratelimit-remaining-requests"], remaining);
    }
    let (reply, _) = run_priced(&gateway, "strict", "mock:echo").await;
    let err = reply.result.as_ref().unwrap_err();
    assert_eq!(err.status(), 429);
    assert_eq!(
        err.message(),
        "Rate limit exceeded: two. Current usage: 2 requests/minute, Limit: 2 requests/minute"
    );
    // Another feature is not limited by it.
    let (reply, _) = run_priced(&gateway, "plain", "mock:echo").await;
    assert!(reply.result.is_ok());
    // The gateway's backend holds the counters.
    let counters = gateway.limit_backend().counters().await.unwrap();
    let names: Vec<String> = counters.iter().map(|c| c.key.to_string()).collect();
    assert_eq!(names, ["all", "two[strict]"]);
}

#[tokio::test]
async fn unknown_prices_are_refused_or_charged_as_configured() {
    let yaml = "defaults:\n  budget_constraints:\n    all: {dimensions: [], budget_limit: {limit: 10, window: 1h}}\nfeatures:\n  default: {}\n";
    let gateway = gateway(yaml).unwrap();
    let (reply, _) = run_priced(&gateway, "default", "openai:no-such-model").await;
    assert_eq!(error_code(&reply), Some("unknown_model_price"));
    assert_eq!(
        reply.result.as_ref().unwrap_err().message(),
        "no price is known for model 'openai:no-such-model', which the budget 'all' needs; add it under prices: in the configuration, or set a price for unknown models"
    );

    // Charged: admitted, so the call goes out (and fails for want of a key).
    let gateway = self::gateway(&format!(
        "{yaml}prices: {{unknown: {{input: 1, output: 1}}}}\n"
    ))
    .unwrap();
    let (reply, _) = run_priced(&gateway, "default", "openai:no-such-model").await;
    assert_eq!(reply.result.as_ref().unwrap_err().status(), 401);
}

#[tokio::test]
async fn budgets_of_one_name_must_share_their_window() {
    let err = gateway(
        "defaults:
  budget_constraints:
    daily: {dimensions: [user_id], budget_limit: {limit: 10, window: 1d}}
features:
  a: {}
  b:
    budget_constraints:
      daily: {dimensions: [user_id], budget_limit: {limit: 20, window: 1d}}
  c:
    budget_constraints:
      daily: {dimensions: [user_id], budget_limit: {limit: 5, window: 1h}}
",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.yaml: features.c.budget_constraints.daily.budget_limit.window: the budget \"daily\" of feature \"a\" has window 1d, and budgets of one name share their spend; use window: 1d here too, or give this budget another name"
    );
}

#[test]
fn the_server_block_reads_redis_settings() {
    use sllmp_config::{OnRedisError, ServerSettings};
    use std::time::Duration;
    let config = load("defaults: {}\nfeatures:\n  chat: {}\n");
    assert_eq!(config.server(), &ServerSettings::default());
    assert_eq!(config.server().redis_timeout, Duration::from_millis(100));
    assert_eq!(config.server().redis_prefix, "sllmp:limits:");
    let config = load(
        "server:\n  redis_url: \"redis://:s3cr3t@127.0.0.1:6379\"\n  redis_timeout: 250ms\n  \
         on_redis_error: fail_closed\n  redis_prefix: \"gw1:\"\n  redis_cluster: true\n\
         defaults: {}\nfeatures:\n  chat: {}\n",
    );
    let server = config.server();
    assert_eq!(
        server.redis_url.as_ref().map(|u| u.expose()),
        Some("redis://:s3cr3t@127.0.0.1:6379")
    );
    assert!(!format!("{config:?}").contains("s3cr3t"));
    assert_eq!(server.redis_timeout, Duration::from_millis(250));
    assert_eq!(server.on_redis_error, OnRedisError::FailClosed);
    assert_eq!(server.redis_prefix, "gw1:");
    assert!(server.redis_cluster);
    // Empty is unset.
    let config = load("server: {redis_url: \"\"}\ndefaults: {}\nfeatures:\n  chat: {}\n");
    assert_eq!(config.server().redis_url, None);
}

#[test]
fn bad_server_settings() {
    let text = error(
        "server:\n  redis_timeot: 1s\n  on_redis_error: open\n  redis_prefix: \"{x}\"\n  \
         redis_timeout: 100\ndefaults: {}\nfeatures:\n  chat: {}\n",
    );
    assert!(
        text.contains("server.redis_timeot: unknown key")
            && text.contains("did you mean \"redis_timeout\"?"),
        "{text}"
    );
    let text = error("server:\n  on_redis_error: open\ndefaults: {}\nfeatures:\n  chat: {}\n");
    assert!(
        text.contains("server.on_redis_error: \"open\" is not a policy; write fail_open"),
        "{text}"
    );
    let text = error("server:\n  redis_prefix: \"{x}\"\ndefaults: {}\nfeatures:\n  chat: {}\n");
    assert!(
        text.contains("server.redis_prefix: a key prefix must be non-empty and without braces"),
        "{text}"
    );
    let text = error("server:\n  redis_timeout: 100\ndefaults: {}\nfeatures:\n  chat: {}\n");
    assert!(
        text.contains("server.redis_timeout: a bare number is not a duration"),
        "{text}"
    );
    let text = error("server:\n  redis_timeout: 0s\ndefaults: {}\nfeatures:\n  chat: {}\n");
    assert!(
        text.contains("server.redis_timeout: must be greater than 0"),
        "{text}"
    );
}
