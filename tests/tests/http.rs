//! The HTTP surface on the built-in default configuration: routes, error shapes, request
//! ids, validation and body limits.

use serde_json::json;
use sllmp::{Server, ServerSettings};
use sllmp_integration::{TestServer, stable};

async fn default_server() -> TestServer {
    TestServer::from_yaml(sllmp::DEFAULT_CONFIG, &[]).await
}

fn hello() -> serde_json::Value {
    json!({"model": "mock:echo", "messages": [{"role": "user", "content": "Hello!"}]})
}

#[tokio::test]
async fn health_and_models() {
    let server = default_server().await;
    let health = server.get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(stable(&health.body), r#"{"status":"ok","timestamp":0}"#);
    assert!(health.json()["timestamp"].as_u64().unwrap() > 1_700_000_000);

    let models = server.get("/v1/models").await;
    assert_eq!(models.status, 200);
    assert_eq!(
        stable(&models.body),
        r#"{"object":"list","data":[{"id":"mock:echo","object":"model","created":0,"owned_by":"mock"}]}"#
    );
}

#[tokio::test]
async fn a_completion_from_the_mock_provider() {
    let server = default_server().await;
    let answer = server.chat(&hello()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    insta::assert_snapshot!(stable(&answer.body), @r#"{"id":"chatcmpl-mock-9224fce07c59fabe","object":"chat.completion","created":0,"model":"echo","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":10},"system_fingerprint":"fp_sllmp_mock"}"#);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let server = default_server().await;
    let answer = server
        .chat_with(&hello(), &[("x-request-id", "client-chosen-42")])
        .await;
    assert_eq!(answer.header("x-request-id"), Some("client-chosen-42"));

    let answer = server.chat(&json!({"model": "mock:echo"})).await;
    let id = answer
        .header("x-request-id")
        .expect("a generated id")
        .to_string();
    assert!(id.starts_with("req_") && id.len() == 36, "{id}");
    assert_eq!(answer.json()["error"]["request_id"], id.as_str());

    // An id a client cannot be trusted with is replaced.
    let answer = server
        .chat_with(&hello(), &[("x-request-id", "has space")])
        .await;
    assert!(answer.header("x-request-id").unwrap().starts_with("req_"));

    let answer = server.get("/nowhere").await;
    assert!(answer.header("x-request-id").unwrap().starts_with("req_"));
}

#[tokio::test]
async fn malformed_bodies_are_invalid_requests() {
    let server = default_server().await;
    let answer = server
        .post_raw("/v1/chat/completions", "{not json".into(), &[])
        .await;
    assert_eq!(answer.status, 400);
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"the request body is not valid JSON: key must be a string at line 1 column 2","type":"invalid_request_error","param":null,"code":"invalid_json","request_id":"[request_id]"}}"#);

    let answer = server
        .post_raw("/v1/chat/completions", "".into(), &[])
        .await;
    assert_eq!(
        (answer.status, answer.json()["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );

    let answer = server
        .post_raw("/v1/chat/completions", "[1]".into(), &[])
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"]["code"], "invalid_type");

    let answer = server
        .chat(&json!({"model": "mock:echo", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}))
        .await;
    assert_eq!(answer.status, 400);
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"invalid type for 'temperature': invalid type: string \"hot\", expected f64","type":"invalid_request_error","param":"temperature","code":"invalid_type","request_id":"[request_id]"}}"#);

    let answer = server
        .chat(&json!({"model": "mock:echo", "messages": "hi"}))
        .await;
    assert_eq!(answer.json()["error"]["param"], "messages");
}

#[tokio::test]
async fn validation_errors_name_the_parameter() {
    let server = default_server().await;
    let cases = [
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            "model",
            "missing_required_parameter",
        ),
        (
            json!({"model": "mock:echo"}),
            "messages",
            "missing_required_parameter",
        ),
        (
            json!({"model": "mock:echo", "messages": []}),
            "messages",
            "missing_required_parameter",
        ),
        (
            json!({"model": "mock:echo", "messages": [{"content": "x"}]}),
            "messages[0].role",
            "missing_required_parameter",
        ),
        (
            json!({"model": "mock:echo", "messages": [{"role": "user"}]}),
            "messages[0].content",
            "missing_required_parameter",
        ),
        (
            json!({"model": "mock:echo", "messages": [{"role": "user", "content": "x"}], "temperature": 2.5}),
            "temperature",
            "invalid_value",
        ),
        (
            json!({"model": "mock:echo", "messages": [{"role": "user", "content": "x"}], "top_p": -1}),
            "top_p",
            "invalid_value",
        ),
        (
            json!({"model": "mock:echo", "messages": [{"role": "user", "content": "x"}], "presence_penalty": 3}),
            "presence_penalty",
            "invalid_value",
        ),
        (
            json!({"model": "mock:echo", "messages": [{"role": "user", "content": "x"}], "frequency_penalty": -2.1}),
            "frequency_penalty",
            "invalid_value",
        ),
        (
            json!({"model": "mock:echo", "messages": [{"role": "user", "content": "x"}], "n": 0}),
            "n",
            "invalid_value",
        ),
        (
            json!({"model": "mock:echo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "max_tokens",
            "invalid_value",
        ),
        (
            json!({"model": "mock:echo", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}),
            "max_completion_tokens",
            "invalid_value",
        ),
    ];
    for (body, param, code) in cases {
        for stream in [false, true] {
            let mut body = body.clone();
            body["stream"] = json!(stream);
            let answer = server.chat(&body).await;
            // A stream that fails before its first chunk is a plain HTTP error, not a 200.
            assert_eq!(answer.status, 400, "{body}");
            assert_eq!(answer.header("content-type"), Some("application/json"));
            let error = &answer.json()["error"];
            assert_eq!(
                (error["param"].as_str(), error["code"].as_str()),
                (Some(param), Some(code)),
                "{body}"
            );
            assert_eq!(error["type"], "invalid_request_error");
        }
    }
}

#[tokio::test]
async fn models_must_name_a_configured_provider() {
    let server = default_server().await;
    let mut body = hello();
    body["model"] = json!("gpt-4o");
    let answer = server.chat(&body).await;
    assert_eq!(answer.status, 404);
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"model 'gpt-4o' must be written as provider:model, e.g. 'openai:gpt-4o'","type":"invalid_request_error","param":"model","code":"model_not_found","request_id":"[request_id]"}}"#);

    body["model"] = json!("acme:big-model");
    let answer = server.chat(&body).await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.json()["error"]["message"],
        "unknown provider 'acme' in model 'acme:big-model'; configured providers: mock, openai"
    );
}

#[tokio::test]
async fn openai_without_a_key_is_an_authentication_error() {
    let server = default_server().await;
    let mut body = hello();
    body["model"] = json!("openai:gpt-4o");
    let answer = server.chat(&body).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"]["type"], "authentication_error");
    assert_eq!(
        answer.json()["error"]["code"],
        "provider_authentication_failed"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_openai_errors() {
    let server = default_server().await;
    let answer = server.get("/v1/audio/speech").await;
    assert_eq!(answer.status, 404);
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"Invalid URL (/v1/audio/speech): no such route","type":"invalid_request_error","param":null,"code":"unknown_url","request_id":"[request_id]"}}"#);

    let answer = server.get("/v1/chat/completions").await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("allow"), Some("POST"));
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"method GET is not allowed on /v1/chat/completions","type":"invalid_request_error","param":null,"code":"method_not_allowed","request_id":"[request_id]"}}"#);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let providers = sllmp::ProviderRegistry::new().with(sllmp::providers::Mock::new("mock"));
    let server = TestServer::start(Server::new(providers).settings(ServerSettings {
        body_limit: 1024,
        ..ServerSettings::default()
    }))
    .await;
    let big = "x".repeat(2000);
    let answer = server
        .chat(&json!({"model": "mock:echo", "messages": [{"role": "user", "content": big}]}))
        .await;
    assert_eq!(answer.status, 413);
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"the request body is larger than the limit of 1024 bytes","type":"invalid_request_error","param":null,"code":"request_too_large","request_id":"[request_id]"}}"#);
    // Just under the limit is fine.
    let answer = server
        .chat(&json!({"model": "mock:echo", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn the_default_body_limit_is_ten_mebibytes() {
    assert_eq!(ServerSettings::default().body_limit, 10 * 1024 * 1024);
    let server = default_server().await;
    // A 3 MB image-sized body passes (axum's own 2 MiB default would refuse it).
    let big = "x".repeat(3_000_000);
    let answer = server
        .chat(&json!({"model": "mock:echo", "messages": [{"role": "user", "content": big}]}))
        .await;
    assert_eq!(answer.status, 200);
}
