//! `POST /v1/embeddings` through the whole proxy: what reaches the upstream, what the client
//! gets back, validation, the built-in mock's vectors, retries and the request log, which
//! every operation shares with chat completions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sllmp::observe::{LineFormat, RequestLog};
use sllmp::providers::{HttpSettings, Mock, OpenAi, OpenAiConfig, http_client};
use sllmp::{
    Fallbacks, Hooks, Pipeline, ProviderRegistry, Retry, Route, Server, SetTimeouts, Timeouts,
};
use sllmp_integration::{TestServer, stable, upstream_providers};
use sllmp_test_support::{LogCapture, MockUpstream, Reply};

/// OpenAI's answer, as OpenAI lays it out (pretty-printed, its field order, a number
/// spelling serde would not write back).
const OPENAI_EMBEDDINGS: &str = r#"{
  "object": "list",
  "data": [
    {
      "object": "embedding",
      "index": 0,
      "embedding": [0.0023064255, -0.009327292, 1.5e-7, 0.0]
    },
    {
      "object": "embedding",
      "index": 1,
      "embedding": [-0.0028842222, 0.011183523, 0.0, -1E-3]
    }
  ],
  "model": "text-embedding-3-small",
  "usage": {
    "prompt_tokens": 2,
    "total_tokens": 2
  }
}
"#;

fn request() -> Value {
    json!({
        "model": "openai:text-embedding-3-small",
        "input": ["a", "b"],
        "dimensions": 8,
        "metadata": {"feature": "x"}
    })
}

#[tokio::test]
async fn embeddings_reach_the_upstream_routed_and_come_back_byte_for_byte() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::Raw {
        content_type: "application/json".into(),
        body: OPENAI_EMBEDDINGS.into(),
    });
    let server = TestServer::start(Server::new(upstream_providers(&upstream, |_| {}))).await;
    let answer = server.embeddings(&request()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, OPENAI_EMBEDDINGS);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(
        answer.header("x-sllmp-model"),
        Some("openai:text-embedding-3-small")
    );

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/embeddings");
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(
        seen[0].raw_body, r#"{"model":"text-embedding-3-small","input":["a","b"],"dimensions":8}"#,
        "the routed model, no metadata"
    );
}

#[tokio::test]
async fn embeddings_forward_unknown_fields_and_the_upstreams_own_answer() {
    let upstream = MockUpstream::start().await;
    let server = TestServer::start(Server::new(upstream_providers(&upstream, |_| {}))).await;
    let answer = server
        .embeddings(&json!({
            "model": "openai:text-embedding-3-large",
            "input": "hello",
            "encoding_format": "float",
            "user": "u1",
            "some_future_param": {"nested": [1, 2]}
        }))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        upstream.requests()[0].body,
        json!({
            "model": "text-embedding-3-large",
            "input": "hello",
            "encoding_format": "float",
            "user": "u1",
            "some_future_param": {"nested": [1, 2]}
        })
    );
    // The mock upstream's default answer: one 8-dimensional vector, its model name.
    let body = answer.json();
    assert_eq!(body["model"], "text-embedding-3-large");
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 2, "total_tokens": 2})
    );
}

/// A proxy with only the built-in `mock` provider.
async fn mock_proxy() -> TestServer {
    TestServer::start(Server::new(ProviderRegistry::new().with(Mock::new("mock")))).await
}

#[tokio::test]
async fn invalid_embeddings_requests_are_rejected_before_any_provider() {
    let upstream = MockUpstream::start().await;
    let server = TestServer::start(Server::new(upstream_providers(&upstream, |_| {}))).await;
    let model = "openai:text-embedding-3-small";
    let cases = [
        json!({"model": model}),
        json!({"model": model, "input": ""}),
        json!({"model": model, "input": []}),
        json!({"model": model, "input": ["a", ""]}),
        json!({"model": model, "input": 5}),
        json!({"model": model, "input": [[1, 2], ["x"]]}),
        json!({"model": model, "input": "a", "dimensions": "8"}),
        json!({"model": model, "input": "a", "dimensions": 0}),
        json!({"model": model, "input": "a", "encoding_format": "int8"}),
        json!({"input": "a"}),
    ];
    let mut bodies = Vec::new();
    for case in &cases {
        let answer = server.embeddings(case).await;
        assert_eq!(answer.status, 400, "{case}: {}", answer.body);
        assert!(answer.header("x-sllmp-model").is_none(), "{case}");
        bodies.push(stable(&answer.body));
    }
    assert!(upstream.requests().is_empty(), "no provider was called");
    insta::assert_snapshot!(bodies.join("\n"), @r#"
    {"error":{"message":"Missing required parameter: 'input'.","type":"invalid_request_error","param":"input","code":"missing_required_parameter","request_id":"[request_id]"}}
    {"error":{"message":"Invalid value for 'input': the input must not be empty.","type":"invalid_request_error","param":"input","code":"invalid_value","request_id":"[request_id]"}}
    {"error":{"message":"Invalid value for 'input': the input must not be an empty array.","type":"invalid_request_error","param":"input","code":"invalid_value","request_id":"[request_id]"}}
    {"error":{"message":"Invalid value for 'input[1]': the input must not be empty.","type":"invalid_request_error","param":"input[1]","code":"invalid_value","request_id":"[request_id]"}}
    {"error":{"message":"Invalid type for 'input': expected a string, an array of strings, or an array of token ids.","type":"invalid_request_error","param":"input","code":"invalid_type","request_id":"[request_id]"}}
    {"error":{"message":"Invalid value for 'input[1][0]': expected a token id (an integer from 0).","type":"invalid_request_error","param":"input[1][0]","code":"invalid_value","request_id":"[request_id]"}}
    {"error":{"message":"invalid type for 'dimensions': invalid type: string \"8\", expected i64","type":"invalid_request_error","param":"dimensions","code":"invalid_type","request_id":"[request_id]"}}
    {"error":{"message":"Invalid value for 'dimensions': 0 is less than the minimum of 1.","type":"invalid_request_error","param":"dimensions","code":"invalid_value","request_id":"[request_id]"}}
    {"error":{"message":"Invalid value for 'encoding_format': 'int8' is not one of 'float', 'base64'.","type":"invalid_request_error","param":"encoding_format","code":"invalid_value","request_id":"[request_id]"}}
    {"error":{"message":"Missing required parameter: 'model'.","type":"invalid_request_error","param":"model","code":"missing_required_parameter","request_id":"[request_id]"}}
    "#);
}

/// Decodes standard base64 (with padding).
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = ALPHABET
            .iter()
            .position(|a| *a == byte)
            .unwrap_or_else(|| panic!("not base64: {text}")) as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

fn vector(answer: &Value, index: usize) -> Vec<f64> {
    answer["data"][index]["embedding"]
        .as_array()
        .unwrap_or_else(|| panic!("no vector {index}: {answer}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn the_mock_provider_embeds_deterministically() {
    let server = mock_proxy().await;
    let answer = server
        .embeddings(
            &json!({"model": "mock:embed", "input": ["same", "other", "same"], "dimensions": 8}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-sllmp-model"), Some("mock:embed"));
    let body = answer.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "embed");
    let indices: Vec<_> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["object"].clone(), d["index"].clone()))
        .collect();
    assert_eq!(
        indices,
        [
            (json!("embedding"), json!(0)),
            (json!("embedding"), json!(1)),
            (json!("embedding"), json!(2))
        ]
    );
    let (same, other, again) = (vector(&body, 0), vector(&body, 1), vector(&body, 2));
    assert_eq!(same.len(), 8, "dimensions is honoured");
    assert_eq!(same, again, "the same input, the same vector");
    assert_ne!(same, other);
    let norm: f64 = same.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "a unit vector: {norm}");

    // Another request, the same input: the same vector; without dimensions, 16.
    let again = server
        .embeddings(&json!({"model": "mock:embed", "input": "same"}))
        .await
        .json();
    let default = vector(&again, 0);
    assert_eq!(default.len(), 16);
    let one = server
        .embeddings(&json!({"model": "mock:embed", "input": "same", "dimensions": 8}))
        .await
        .json();
    assert_eq!(vector(&one, 0), same);

    // base64: the same floats, little-endian f32.
    let encoded = server
        .embeddings(&json!({"model": "mock:embed", "input": "same", "dimensions": 8, "encoding_format": "base64"}))
        .await;
    assert_eq!(encoded.status, 200, "{}", encoded.body);
    let text = encoded.json()["data"][0]["embedding"]
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {}", encoded.body))
        .to_string();
    let bytes = base64_decode(&text);
    assert_eq!(bytes.len(), 8 * 4);
    let decoded: Vec<f64> = bytes
        .chunks(4)
        .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect();
    assert_eq!(decoded, same);
}

#[tokio::test]
async fn embeddings_are_retried_like_every_operation() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::error(503, "server_error", "overloaded"));
    let server =
        Server::new(upstream_providers(&upstream, |_| {})).pipeline(|pipeline: &mut Pipeline| {
            pipeline.add(
                Retry::new()
                    .max_attempts(3)
                    .base_delay(Duration::from_millis(1))
                    .max_delay(Duration::from_millis(10)),
            );
        });
    let server = TestServer::start(server).await;
    let answer = server.embeddings(&request()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["data"].as_array().unwrap().len(), 2);
    let paths: Vec<_> = upstream.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/embeddings", "/v1/embeddings"]);

    // A 400 is not retried, and is reported as the provider's.
    upstream.enqueue(Reply::json_status(
        400,
        json!({"error": {"message": "dimensions too large", "type": "invalid_request_error", "param": "dimensions", "code": null}}),
    ));
    let answer = server.embeddings(&request()).await;
    assert_eq!(upstream.requests().len(), 3);
    assert_eq!(answer.status, 400);
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"openai returned 400: dimensions too large","type":"provider_bad_request","param":"dimensions","code":null,"request_id":"[request_id]"}}"#);
}

#[tokio::test]
async fn on_complete_sees_the_embeddings_operation_and_its_usage() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::Raw {
        content_type: "application/json".into(),
        body: OPENAI_EMBEDDINGS.into(),
    });
    type Seen = (String, String, Option<(u64, u64)>, bool, Option<String>);
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let record = Arc::clone(&seen);
    let server = Server::new(upstream_providers(&upstream, |_| {})).pipeline(
        move |pipeline: &mut Pipeline| {
            let record = Arc::clone(&record);
            pipeline.add(Hooks::new("record").on_complete(move |ctx, outcome| {
                record.lock().unwrap().push((
                    ctx.operation().as_str().to_string(),
                    outcome.as_str().to_string(),
                    ctx.usage().map(|u| (u.prompt_tokens, u.completion_tokens)),
                    ctx.usage_is_estimated(),
                    ctx.target().map(ToString::to_string),
                ));
            }));
        },
    );
    let server = TestServer::start(server).await;
    let answer = server.embeddings(&request()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = wait_for(|| seen.lock().unwrap().first().cloned()).await;
    assert_eq!(
        seen,
        (
            "embeddings".to_string(),
            "success".to_string(),
            Some((2, 0)),
            false,
            Some("openai:text-embedding-3-small".to_string())
        )
    );
}

/// Polls `probe` (every 10 ms, for at most 2 s) until it yields something.
async fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(found) = probe() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing turned up within 2 s");
}

#[tokio::test]
async fn the_request_log_names_the_embeddings_operation() {
    let capture = LogCapture::global(|| LineFormat);
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::Raw {
        content_type: "application/json".into(),
        body: OPENAI_EMBEDDINGS.into(),
    });
    let server =
        Server::new(upstream_providers(&upstream, |_| {})).pipeline(|pipeline: &mut Pipeline| {
            pipeline.add(RequestLog::new());
        });
    let server = TestServer::start(server).await;
    let answer = server
        .post_raw(
            "/v1/embeddings",
            request().to_string(),
            &[("x-request-id", "req_embeddings_log")],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let line = wait_for(|| {
        capture
            .text()
            .lines()
            .find(|line| line.contains("request_id=\"req_embeddings_log\""))
            .map(str::to_string)
    })
    .await;
    // Past the timestamp; up to the timings.
    let fixed = line[27..].split(" latency_ms=").next().unwrap();
    assert_eq!(
        fixed,
        "  INFO sllmp::request: request completed request_id=\"req_embeddings_log\" \
         operation=\"embeddings\" feature=\"\" model=\"openai:text-embedding-3-small\" \
         provider=\"openai\" provider_model=\"text-embedding-3-small\" stream=false \
         outcome=\"success\" status=200 error_type=\"\" error=\"\" attempts=1 prompt_tokens=2 \
         completion_tokens=0 usage_estimated=false cost_usd=-1.0"
    );
}

#[tokio::test]
async fn embeddings_fall_back_to_another_provider() {
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    primary.enqueue(Reply::error(503, "server_error", "overloaded"));
    let client = http_client(&HttpSettings::direct());
    let config = |upstream: &MockUpstream| OpenAiConfig {
        api_base: upstream.base_url(),
        ..OpenAiConfig::default()
    };
    let providers = ProviderRegistry::new()
        .with(OpenAi::new("primary", config(&primary), client.clone()))
        .with(OpenAi::new("backup", config(&backup), client));
    let server = Server::new(providers).pipeline(|pipeline: &mut Pipeline| {
        pipeline.add(Fallbacks::new([Route::new(
            "backup",
            "text-embedding-3-large",
        )]));
    });
    let server = TestServer::start(server).await;
    let mut body = request();
    body["model"] = json!("primary:text-embedding-3-small");
    let answer = server.embeddings(&body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.header("x-sllmp-model"),
        Some("backup:text-embedding-3-large")
    );
    assert_eq!(answer.json()["model"], "text-embedding-3-large");
    assert_eq!(primary.requests().len(), 1);
    let seen = backup.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/embeddings");
    assert_eq!(
        seen[0].raw_body,
        r#"{"model":"text-embedding-3-large","input":["a","b"],"dimensions":8}"#
    );
}

#[tokio::test]
async fn embeddings_failures_are_reported_like_chat_failures() {
    let upstream = MockUpstream::start().await;
    // A silent upstream, an error sent with a 200, an answer over the size limit.
    upstream.enqueue(Reply::Hang);
    upstream.enqueue(Reply::json(
        json!({"error": {"message": "slow down", "type": "requests", "code": 429}}),
    ));
    upstream.enqueue(Reply::Raw {
        content_type: "application/json".into(),
        body: format!(
            r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[{}]}}],"model":"m"}}"#,
            vec!["0.5"; 1000].join(",")
        ),
    });
    let settings = HttpSettings {
        max_body_bytes: 1024,
        ..HttpSettings::direct()
    };
    let providers = ProviderRegistry::new().with(OpenAi::new(
        "openai",
        OpenAiConfig {
            api_base: upstream.base_url(),
            ..OpenAiConfig::default()
        },
        http_client(&settings),
    ));
    let server = Server::new(providers).pipeline(|pipeline: &mut Pipeline| {
        pipeline.add(SetTimeouts(Timeouts {
            first_token: Duration::from_millis(200),
            ..Timeouts::default()
        }));
    });
    let server = TestServer::start(server).await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let answer = server.embeddings(&request()).await;
        assert_eq!(
            answer.header("x-sllmp-model"),
            Some("openai:text-embedding-3-small")
        );
        bodies.push(format!("{} {}", answer.status, stable(&answer.body)));
    }
    insta::assert_snapshot!(bodies.join("\n"), @r#"
    504 {"error":{"message":"openai timed out: no answer within the timeout","type":"timeout_error","param":null,"code":"provider_timeout","request_id":"[request_id]"}}
    429 {"error":{"message":"openai returned 429: slow down","type":"provider_rate_limit_error","param":null,"code":"rate_limit_exceeded","request_id":"[request_id]"}}
    502 {"error":{"message":"openai sent an answer over the size limit: answer too large: larger than the limit of 1024 bytes","type":"llm_provider_error","param":null,"code":"provider_invalid_response","request_id":"[request_id]"}}
    "#);
    assert_eq!(upstream.requests().len(), 3);
}
