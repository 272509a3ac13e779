//! The `openai` provider through the whole proxy, against a real mock upstream: what
//! reaches the upstream, how each upstream failure is reported, retries.

use std::time::Duration;

use serde_json::json;
use sllmp::providers::{HttpSettings, OpenAi, OpenAiConfig, http_client};
use sllmp::{Hooks, Pipeline, ProviderRegistry, ResponseView, Retry, Secret, Server};
use sllmp_integration::{Answer, TestServer, stable, upstream_providers};
use sllmp_test_support::{Frame, MockUpstream, Reply};

/// A proxy whose `openai` provider talks to `upstream`, with a fast retry middleware.
async fn proxy(upstream: &MockUpstream, timeout: Option<Duration>) -> TestServer {
    let providers = upstream_providers(upstream, |config| {
        config.api_key = Some(Secret::new("sk-upstream-secret-key"));
        if let Some(timeout) = timeout {
            config.timeout = timeout;
        }
    });
    let server = Server::new(providers).pipeline(|pipeline: &mut Pipeline| {
        pipeline.add(
            Retry::new()
                .max_attempts(3)
                .base_delay(Duration::from_millis(5)),
        );
    });
    TestServer::start(server).await
}

fn body() -> serde_json::Value {
    json!({
        "model": "openai:gpt-4o",
        "messages": [{"role": "user", "content": "Hello!"}],
        "temperature": 0.5,
        "metadata": {"feature": "chat", "user_id": "u1"},
        "reasoning_effort": "low",
        "some_future_param": {"nested": [1, 2, 3]}
    })
}

#[tokio::test]
async fn forwards_the_request_with_unknown_fields_and_without_metadata() {
    let upstream = MockUpstream::start().await;
    let server = proxy(&upstream, None).await;
    let answer = server.chat(&body()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json()["choices"][0]["message"]["content"],
        "Mock reply to: Hello!"
    );

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer sk-upstream-secret-key")
    );
    assert_eq!(
        seen[0].header("user-agent"),
        Some(concat!("sllmp/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(
        seen[0].body,
        json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "Hello!"}],
            "temperature": 0.5,
            "reasoning_effort": "low",
            "some_future_param": {"nested": [1, 2, 3]}
        })
    );
}

/// A request no middleware wrote to reaches the upstream as the client wrote it: number
/// spellings, escapes and field order kept; only the routed members rewritten.
#[tokio::test]
async fn forwards_the_clients_bytes_with_the_routed_members_rewritten() {
    let upstream = MockUpstream::start().await;
    let server = proxy(&upstream, None).await;
    let client = r#"{"model": "openai:gpt-4o", "temperature": 0.50, "messages": [{"role": "user", "content": "caf\u00e9"}], "metadata": {"feature": "chat"}, "seed": 12345678901234567890}"#;
    let answer = server
        .post_raw("/v1/chat/completions", client.into(), &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = upstream.requests();
    assert_eq!(
        seen[0].raw_body,
        r#"{"model":"gpt-4o","temperature": 0.50,"messages": [{"role": "user", "content": "caf\u00e9"}],"seed": 12345678901234567890}"#
    );

    // A stream asks for usage in a member added at the end.
    upstream.enqueue(Reply::sse(vec![
        Frame::data(json!({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]
        })),
        Frame::done(),
    ]));
    let client =
        r#"{"model":"openai:gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let answer = server
        .post_raw("/v1/chat/completions", client.into(), &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        upstream.requests()[1].raw_body,
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}"#
    );
}

/// A request a middleware wrote to reaches the upstream as the middleware left it, encoded.
#[tokio::test]
async fn a_rewritten_request_is_encoded_from_the_value() {
    let upstream = MockUpstream::start().await;
    let server =
        Server::new(upstream_providers(&upstream, |_| {})).pipeline(|pipeline: &mut Pipeline| {
            pipeline.add(Hooks::new("cap_temperature").on_request(|_, req| {
                if let Some(chat) = req.chat_mut()
                    && chat.temperature.is_some_and(|t| t > 1.0)
                {
                    chat.temperature = Some(1.0);
                }
                Ok(sllmp::Flow::Continue)
            }));
        });
    let server = TestServer::start(server).await;
    let client = r#"{"temperature": 1.50, "model": "openai:gpt-4o", "messages": [{"role": "user", "content": "caf\u00e9"}]}"#;
    let answer = server
        .post_raw("/v1/chat/completions", client.into(), &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        upstream.requests()[0].raw_body,
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"café"}],"temperature":1.0}"#
    );
}

/// OpenAI's own layout: pretty-printed, its field order, fields SLLMP does not model.
const OPENAI_ANSWER: &str = r#"{
  "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "gpt-4o-2024-08-06",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I help?",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 9,
    "completion_tokens": 7,
    "total_tokens": 16,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}
"#;

/// The answer of a proxy whose pipeline `factory` builds, in front of an upstream that sends
/// [`OPENAI_ANSWER`].
async fn answer_through(factory: impl Fn(&mut Pipeline) + Send + Sync + 'static) -> Answer {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::Raw {
        content_type: "application/json".into(),
        body: OPENAI_ANSWER.into(),
    });
    let server = Server::new(upstream_providers(&upstream, |_| {})).pipeline(factory);
    TestServer::start(server).await.chat(&body()).await
}

#[tokio::test]
async fn an_unchanged_answer_reaches_the_client_byte_for_byte() {
    // A middleware that reads the response (and the usage) but does not change it.
    let answer = answer_through(|pipeline: &mut Pipeline| {
        pipeline.add(Hooks::new("reader").on_response(|ctx, response| {
            assert_eq!(
                response.response().choices[0].finish_reason.as_deref(),
                Some("stop")
            );
            assert_eq!(ctx.usage().map(|u| u.total_tokens), Some(16));
            Ok(())
        }));
    })
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.body, OPENAI_ANSWER);
}

#[tokio::test]
async fn an_answer_a_middleware_rewrites_is_sent_as_rewritten() {
    let answer = answer_through(|pipeline: &mut Pipeline| {
        pipeline.add(Hooks::new("redact").on_response(|_ctx, response| {
            if let ResponseView::Complete(response) = response {
                response.extra.remove("system_fingerprint");
            }
            Ok(())
        }));
    })
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let mut expected: serde_json::Value = serde_json::from_str(OPENAI_ANSWER).unwrap();
    expected
        .as_object_mut()
        .unwrap()
        .remove("system_fingerprint");
    assert_eq!(answer.json(), expected);
    assert!(!answer.body.contains("fp_fc9f1d7035"));
}

#[tokio::test]
async fn streams_ask_the_upstream_for_usage_and_pass_chunks_through() {
    let upstream = MockUpstream::start().await;
    let server = proxy(&upstream, None).await;
    let mut request = body();
    request["stream"] = json!(true);
    request["mock"] = json!({"chunks": 3});
    let answer = server.chat(&request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    let sent = &upstream.requests()[0].body;
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    insta::assert_snapshot!(stable(&answer.body));
}

#[tokio::test]
async fn each_upstream_failure_maps_to_its_row_of_the_error_table() {
    let cases: [(Reply, u16, &str, Option<&str>); 8] = [
        (
            Reply::json_status(
                400,
                json!({"error": {"message": "bad logit_bias", "type": "invalid_request_error", "param": "logit_bias", "code": "invalid_logit_bias"}}),
            ),
            400,
            "provider_bad_request",
            Some("invalid_logit_bias"),
        ),
        (
            Reply::error(
                401,
                "invalid_request_error",
                "Incorrect API key provided: sk-upstream-secret-key",
            ),
            401,
            "authentication_error",
            Some("provider_authentication_failed"),
        ),
        (
            Reply::error(403, "invalid_request_error", "forbidden"),
            401,
            "authentication_error",
            Some("provider_authentication_failed"),
        ),
        (
            Reply::error(
                404,
                "invalid_request_error",
                "The model `gpt-9` does not exist",
            ),
            404,
            "model_not_found_error",
            Some("model_not_found"),
        ),
        (
            Reply::error(422, "invalid_request_error", "unprocessable"),
            400,
            "provider_bad_request",
            None,
        ),
        (
            Reply::error(500, "server_error", "boom"),
            503,
            "service_unavailable_error",
            Some("provider_unavailable"),
        ),
        (
            Reply::error(503, "server_error", "overloaded"),
            503,
            "service_unavailable_error",
            Some("provider_unavailable"),
        ),
        (
            Reply::json(json!("not a completion")),
            502,
            "llm_provider_error",
            Some("provider_invalid_response"),
        ),
    ];
    for (reply, status, kind, code) in cases {
        let upstream = MockUpstream::start().await;
        // Retryable failures are retried twice: script all three attempts.
        for _ in 0..3 {
            upstream.enqueue(reply.clone());
        }
        let server = proxy(&upstream, None).await;
        let answer = server.chat(&body()).await;
        let error = &answer.json()["error"];
        assert_eq!(
            (
                answer.status,
                error["type"].as_str(),
                error["code"].as_str()
            ),
            (status, Some(kind), code),
            "{reply:?}"
        );
        assert!(
            error["message"].as_str().unwrap().starts_with("openai "),
            "{error}"
        );
        assert!(
            !answer.body.contains("sk-upstream-secret-key"),
            "{}",
            answer.body
        );
    }
}

#[tokio::test]
async fn error_bodies_quote_the_provider() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::error(
        401,
        "invalid_request_error",
        "Incorrect API key provided: sk-upstream-secret-key",
    ));
    let server = proxy(&upstream, None).await;
    let answer = server.chat(&body()).await;
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"openai returned 401: Incorrect API key provided: [REDACTED]","type":"authentication_error","param":null,"code":"provider_authentication_failed","request_id":"[request_id]"}}"#);
}

#[tokio::test]
async fn a_rate_limited_upstream_passes_retry_after_on() {
    let upstream = MockUpstream::start().await;
    for _ in 0..3 {
        upstream.enqueue(
            Reply::error(429, "requests", "Rate limit reached").with_header("retry-after", "0"),
        );
    }
    let server = proxy(&upstream, None).await;
    let answer = server.chat(&body()).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.json()["error"]["type"], "provider_rate_limit_error");
    assert_eq!(answer.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(upstream.requests().len(), 3, "429 is retried");
}

#[tokio::test]
async fn retries_a_failing_upstream_before_answering() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::error(503, "server_error", "overloaded"));
    let server = proxy(&upstream, None).await;
    let answer = server.chat(&body()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(upstream.requests().len(), 2);

    // A bad request is never retried.
    upstream.enqueue(Reply::error(400, "invalid_request_error", "bad"));
    let answer = server.chat(&body()).await;
    assert_eq!(answer.status, 400);
    assert_eq!(upstream.requests().len(), 3);
}

#[tokio::test]
async fn retries_a_stream_that_fails_before_its_first_chunk_but_not_after() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::error(503, "server_error", "overloaded"));
    let server = proxy(&upstream, None).await;
    let mut request = body();
    request["stream"] = json!(true);
    let answer = server.chat(&request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.sse_data().last().unwrap(), "[DONE]");
    assert_eq!(upstream.requests().len(), 2);

    // The upstream fails after two chunks: the client gets them, then one error frame and
    // the end of the stream. No retry: the client already has part of the answer.
    let mut request = body();
    request["stream"] = json!(true);
    request["mock"] = json!({"chunks": 4, "fail_after_chunks": 2});
    let answer = server.chat(&request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(upstream.requests().len(), 3);
    let frames = answer.sse_data();
    assert_ne!(frames.last().unwrap(), "[DONE]");
    insta::assert_snapshot!(stable(frames.last().unwrap()), @r#"{"error":{"message":"openai failed mid-stream: mock upstream failed mid-stream","type":"service_unavailable_error","param":null,"code":"provider_unavailable","request_id":"[request_id]"}}"#);
    assert_eq!(
        frames.len(),
        1 + 2 + 1,
        "role chunk, two content chunks, the error"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_network_error() {
    // A port bound but not listening, held for the whole test: connecting is refused, and
    // no other test's server can be given the port meanwhile (freeing it would allow that).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let providers = ProviderRegistry::new().with(OpenAi::new(
        "openai",
        OpenAiConfig {
            api_base: format!("http://127.0.0.1:{port}/v1"),
            ..OpenAiConfig::default()
        },
        http_client(&Default::default()),
    ));
    let server = TestServer::start(Server::new(providers)).await;
    let answer = server.chat(&body()).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json()["error"]["type"], "network_error");
    assert_eq!(answer.json()["error"]["code"], "provider_unreachable");
    drop(socket);
}

#[tokio::test]
async fn a_silent_upstream_is_a_timeout() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::Hang);
    let providers = upstream_providers(&upstream, |config| {
        config.timeout = Duration::from_millis(200)
    });
    let server = TestServer::start(Server::new(providers)).await;
    let answer = server.chat(&body()).await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.json()["error"]["type"], "timeout_error");
    assert_eq!(answer.json()["error"]["code"], "provider_timeout");
}

#[tokio::test]
async fn a_stream_that_goes_silent_ends_with_a_timeout_error() {
    let upstream = MockUpstream::start().await;
    let client = http_client(&HttpSettings {
        read_timeout: Duration::from_millis(200),
        ..HttpSettings::default()
    });
    let providers = ProviderRegistry::new().with(OpenAi::new(
        "openai",
        OpenAiConfig {
            api_base: upstream.base_url(),
            ..OpenAiConfig::default()
        },
        client,
    ));
    let server = TestServer::start(Server::new(providers)).await;
    let mut request = body();
    request["stream"] = json!(true);
    // The role chunk and the first content chunk come at once, then nothing for a second.
    request["mock"] = json!({"chunks": 3, "chunk_interval_ms": 1000});
    let answer = server.chat(&request).await;
    assert_eq!(answer.status, 200);
    let frames = answer.sse_data();
    insta::assert_snapshot!(stable(frames.last().unwrap()), @r#"{"error":{"message":"openai timed out: no answer within the timeout","type":"timeout_error","param":null,"code":"provider_timeout","request_id":"[request_id]"}}"#);
    assert_eq!(
        frames.len(),
        1 + 1 + 1,
        "role chunk, first content chunk, the error"
    );
}

#[tokio::test]
async fn an_https_upstream_is_called_over_tls() {
    // The mock speaks plain HTTP: a TLS handshake with it fails, which shows the client
    // starts one for an https:// api_base, and that the failure is reported as such.
    let upstream = MockUpstream::start().await;
    let api_base = upstream.base_url().replace("http://", "https://");
    let providers = ProviderRegistry::new().with(OpenAi::new(
        "openai",
        OpenAiConfig {
            api_base,
            ..OpenAiConfig::default()
        },
        http_client(&HttpSettings::default()),
    ));
    let server = TestServer::start(Server::new(providers)).await;
    let answer = server.chat(&body()).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "provider_unreachable");
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with("openai could not be reached: connection failed: ")
            && message.contains("InvalidContentType"),
        "{message}"
    );
    assert!(
        upstream.requests().is_empty(),
        "no plain-HTTP request was made"
    );
}

#[tokio::test]
async fn reads_events_split_at_any_byte() {
    let upstream = MockUpstream::start().await;
    let chunk = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"split"},"finish_reason":null}]}"#;
    let whole = format!("data: {chunk}\r\n\r\n: keep-alive\n\ndata: [DONE]");
    let frames = whole
        .as_bytes()
        .chunks(7)
        .map(|piece| Frame::raw(String::from_utf8(piece.to_vec()).unwrap()))
        .collect();
    upstream.enqueue(Reply::sse(frames));
    let server = proxy(&upstream, None).await;
    let mut request = body();
    request["stream"] = json!(true);
    let answer = server.chat(&request).await;
    assert_eq!(answer.sse_data(), [chunk.to_string(), "[DONE]".to_string()]);
}
