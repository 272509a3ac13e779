//! The YAML configuration driving the server: features, model overrides, aliases, keys.

use serde_json::json;
use sllmp_integration::{TestServer, stable};
use sllmp_test_support::MockUpstream;

fn config(upstream: &MockUpstream) -> String {
    format!(
        r#"
defaults:
  provider_api_keys:
    my-openai: "${{ALIAS_KEY}}"
  providers:
    my-openai:
      provider: openai
      api_base: "{base}"
features:
  default:
    description: "anything"
  summarize:
    model: "my-openai:gpt-4o-mini"
  local:
    providers:
      local-llm:
        provider: openai
        api_base: "{base}"
    model: "local-llm:llama"
"#,
        base = upstream.base_url()
    )
}

fn request(metadata: serde_json::Value) -> serde_json::Value {
    json!({
        "model": "my-openai:gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": metadata
    })
}

#[tokio::test]
async fn an_alias_sends_to_its_api_base_with_its_own_key() {
    let upstream = MockUpstream::start().await;
    let server = TestServer::from_yaml(
        &config(&upstream),
        &[("ALIAS_KEY", "sk-alias"), ("OPENAI_API_KEY", "sk-openai")],
    )
    .await;
    let answer = server.chat(&request(json!({}))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = upstream.requests();
    assert_eq!(seen[0].body["model"], "gpt-4o");
    assert_eq!(seen[0].header("authorization"), Some("Bearer sk-alias"));
}

#[tokio::test]
async fn the_feature_model_overrides_the_clients() {
    let upstream = MockUpstream::start().await;
    let server = TestServer::from_yaml(&config(&upstream), &[("ALIAS_KEY", "sk-alias")]).await;
    let answer = server.chat(&request(json!({"feature": "summarize"}))).await;
    assert_eq!(answer.status, 200);
    assert_eq!(upstream.requests()[0].body["model"], "gpt-4o-mini");

    // The same through metadata["x-ai-feature"] and through the header.
    server
        .chat(&request(json!({"x-ai-feature": "summarize"})))
        .await;
    server
        .chat_with(&request(json!({})), &[("x-ai-feature", "summarize")])
        .await;
    let models: Vec<_> = upstream
        .requests()
        .iter()
        .map(|r| r.body["model"].clone())
        .collect();
    assert_eq!(models, ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini"]);
}

/// A feature's model keeps the client's bytes: only the routed members are rewritten.
#[tokio::test]
async fn a_feature_model_is_spliced_into_the_clients_bytes() {
    let upstream = MockUpstream::start().await;
    let server = TestServer::from_yaml(&config(&upstream), &[("ALIAS_KEY", "sk-alias")]).await;
    let client = r#"{"model":"my-openai:gpt-4o", "messages":[{"role": "user", "content": "caf\u00e9"}], "temperature":0.50}"#;
    let answer = server
        .post_raw(
            "/v1/chat/completions",
            client.into(),
            &[("x-ai-feature", "summarize")],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        upstream.requests()[0].raw_body,
        r#"{"model":"gpt-4o-mini","messages":[{"role": "user", "content": "caf\u00e9"}],"temperature":0.50}"#
    );
}

#[tokio::test]
async fn a_keyless_alias_to_another_host_never_gets_the_openai_key() {
    let upstream = MockUpstream::start().await;
    let server = TestServer::from_yaml(
        &config(&upstream),
        &[("ALIAS_KEY", "sk-alias"), ("OPENAI_API_KEY", "sk-openai")],
    )
    .await;
    let answer = server.chat(&request(json!({"feature": "local"}))).await;
    assert_eq!(answer.status, 200);
    let seen = &upstream.requests()[0];
    assert_eq!(seen.body["model"], "llama");
    assert_eq!(seen.header("authorization"), None);
}

#[tokio::test]
async fn an_unknown_feature_is_an_error_not_a_silent_default() {
    let upstream = MockUpstream::start().await;
    let server = TestServer::from_yaml(&config(&upstream), &[("ALIAS_KEY", "k")]).await;
    let answer = server.chat(&request(json!({"feature": "nope"}))).await;
    assert_eq!(answer.status, 400);
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"unknown feature \"nope\" in metadata.feature; known features: default, local, summarize","type":"invalid_request_error","param":"metadata.feature","code":"unknown_feature","request_id":"[request_id]"}}"#);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn models_lists_what_the_configuration_names() {
    let upstream = MockUpstream::start().await;
    let server = TestServer::from_yaml(&config(&upstream), &[("ALIAS_KEY", "k")]).await;
    let ids: Vec<String> = server.get("/v1/models").await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{} by {}",
                m["id"].as_str().unwrap(),
                m["owned_by"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            "local-llm:llama by local-llm",
            "mock:echo by mock",
            "my-openai:gpt-4o-mini by my-openai"
        ]
    );
}

#[test]
fn a_bad_provider_option_names_the_file_and_key() {
    let yaml = "defaults:\n  providers:\n    my-openai: {provider: openai, api_version: '1'}\nfeatures:\n  default: {}\n";
    let config =
        sllmp::config::Config::from_yaml_with_env(yaml, "gateway.yaml", &|_| None).unwrap();
    let err =
        sllmp::config::Gateway::build(config, &sllmp::providers::http_client(&Default::default()))
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "gateway.yaml: features.default.providers.my-openai: api_version: unknown option for an openai provider; known options: api_base, organization, project, headers, timeout; fix or remove this option"
    );
}
