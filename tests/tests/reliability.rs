//! Reliability through the whole proxy, against real mock upstreams: retries and their
//! backoff, `Retry-After`, fallbacks to another provider, connect / first-token / total
//! timeouts, truncated streams, error bodies sent with a 200, and oversized answers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sllmp::providers::{HttpSettings, OpenAi, OpenAiConfig, http_client};
use sllmp::{Fallbacks, Pipeline, ProviderRegistry, Retry, Route, Server, SetTimeouts, Timeouts};
use sllmp_integration::{Answer, TestServer, stable};
use sllmp_test_support::{Frame, MockUpstream, Reply, SilentListener};

/// An `openai`-speaking provider called `name` at `api_base`.
fn provider(name: &str, api_base: String, settings: &HttpSettings) -> OpenAi {
    OpenAi::new(
        name,
        OpenAiConfig {
            api_base,
            ..OpenAiConfig::default()
        },
        http_client(settings),
    )
}

/// A registry with one provider, `openai`, at `api_base`.
fn one(api_base: String, settings: &HttpSettings) -> ProviderRegistry {
    ProviderRegistry::new().with(provider("openai", api_base, settings))
}

/// Fast retries: `attempts` per target, waits of at most a few milliseconds, `Retry-After`
/// honoured up to 1 s.
fn retry(attempts: u32) -> Retry {
    Retry::new()
        .max_attempts(attempts)
        .base_delay(Duration::from_millis(1))
        .max_delay(Duration::from_secs(1))
}

fn chat() -> Value {
    json!({"model": "openai:gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]})
}

fn streamed() -> Value {
    let mut body = chat();
    body["stream"] = json!(true);
    body
}

/// A chunk as the proxy writes it out, so the frames a client gets can be compared with
/// what the upstream sent.
fn chunk(content: &str) -> String {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
    })
    .to_string()
}

fn data(json: &str) -> Frame {
    Frame::raw(format!("data: {json}\n\n"))
}

/// The `data:` payloads of an SSE answer; asserts it is a 200 event stream.
fn frames(answer: &Answer) -> Vec<String> {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    answer.sse_data()
}

// ---------------------------------------------------------------------------------------
// Fallbacks

/// Two upstreams behind the providers `primary` and `backup`.
struct Pair {
    primary: MockUpstream,
    backup: MockUpstream,
    server: TestServer,
}

/// `primary:gpt-4o` requests, retried `attempts` times per target, falling back to
/// `backup:gpt-4o-mini`; the primary provider's base is `primary_base` if given.
async fn pair(attempts: u32, primary_base: Option<String>) -> Pair {
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    let settings = HttpSettings::direct();
    let providers = ProviderRegistry::new()
        .with(provider(
            "primary",
            primary_base.unwrap_or_else(|| primary.base_url()),
            &settings,
        ))
        .with(provider("backup", backup.base_url(), &settings));
    let fallbacks = Fallbacks::new([Route::new("backup", "gpt-4o-mini")]);
    let server = Server::new(providers).pipeline(move |pipeline: &mut Pipeline| {
        pipeline.add(retry(attempts)).add(fallbacks.clone());
    });
    Pair {
        primary,
        backup,
        server: TestServer::start(server).await,
    }
}

fn primary_chat() -> Value {
    json!({"model": "primary:gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]})
}

#[tokio::test]
async fn falls_back_after_the_retries_are_spent() {
    let pair = pair(3, None).await;
    for _ in 0..3 {
        pair.primary
            .enqueue(Reply::error(503, "server_error", "overloaded"));
    }
    let backup_answer = json!({
        "id": "chatcmpl-backup", "object": "chat.completion", "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "from the backup"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    });
    pair.backup.enqueue(Reply::json(backup_answer.clone()));
    let answer = pair.server.chat(&primary_chat()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-sllmp-model"), Some("backup:gpt-4o-mini"));
    assert_eq!(answer.json(), backup_answer, "the backup's own answer");
    let primary = pair.primary.requests();
    assert_eq!(primary.len(), 3, "every retry at the primary first");
    assert!(primary.iter().all(|r| r.body["model"] == "gpt-4o"));
    let backup = pair.backup.requests();
    assert_eq!(backup.len(), 1);
    assert_eq!(backup[0].body["model"], "gpt-4o-mini");
    assert_eq!(backup[0].body["messages"], primary_chat()["messages"]);
}

#[tokio::test]
async fn a_stream_falls_back_before_its_first_chunk() {
    let pair = pair(2, None).await;
    for _ in 0..2 {
        pair.primary
            .enqueue(Reply::error(500, "server_error", "boom"));
    }
    let mut request = primary_chat();
    request["stream"] = json!(true);
    request["mock"] = json!({"chunks": 2});
    let answer = pair.server.chat(&request).await;
    let frames = frames(&answer);
    assert_eq!(answer.header("x-sllmp-model"), Some("backup:gpt-4o-mini"));
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        frames.len(),
        1 + 2 + 1 + 1,
        "role, two chunks, finish, [DONE]"
    );
    let first: Value = serde_json::from_str(&frames[0]).unwrap();
    assert_eq!(first["model"], "gpt-4o-mini");
    assert_eq!(pair.primary.requests().len(), 2);
    let backup = pair.backup.requests();
    assert_eq!(backup.len(), 1);
    assert_eq!(backup[0].body["stream"], true);
    assert_eq!(backup[0].body["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn falls_back_from_an_unreachable_provider() {
    // A port bound but not listening, held for the whole test: connecting is refused.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let pair = pair(2, Some(format!("http://127.0.0.1:{port}/v1"))).await;
    let started = Instant::now();
    let answer = pair.server.chat(&primary_chat()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-sllmp-model"), Some("backup:gpt-4o-mini"));
    assert_eq!(
        answer.json()["choices"][0]["message"]["content"],
        "Mock reply to: Hello!"
    );
    assert_eq!(pair.backup.requests().len(), 1);
    assert!(pair.primary.requests().is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(socket);
}

#[tokio::test]
async fn a_bad_request_is_neither_retried_nor_sent_to_a_fallback() {
    let pair = pair(3, None).await;
    pair.primary.enqueue(Reply::json_status(
        400,
        json!({"error": {"message": "bad logit_bias", "type": "invalid_request_error", "param": "logit_bias", "code": "invalid_logit_bias"}}),
    ));
    let answer = pair.server.chat(&primary_chat()).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.header("x-sllmp-model"), Some("primary:gpt-4o"));
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"primary returned 400: bad logit_bias","type":"provider_bad_request","param":"logit_bias","code":"invalid_logit_bias","request_id":"[request_id]"}}"#);
    assert_eq!(pair.primary.requests().len(), 1);
    assert!(pair.backup.requests().is_empty());
}

#[tokio::test]
async fn when_every_target_fails_the_error_names_the_last_one() {
    let pair = pair(2, None).await;
    for _ in 0..2 {
        pair.primary
            .enqueue(Reply::error(503, "server_error", "primary down"));
        pair.backup
            .enqueue(Reply::error(503, "server_error", "backup down"));
    }
    let answer = pair.server.chat(&primary_chat()).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("x-sllmp-model"), Some("backup:gpt-4o-mini"));
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"backup returned 503: backup down","type":"service_unavailable_error","param":null,"code":"provider_unavailable","request_id":"[request_id]"}}"#);
    assert_eq!(pair.primary.requests().len(), 2);
    assert_eq!(pair.backup.requests().len(), 2);
}

// ---------------------------------------------------------------------------------------
// Retry-After

/// A proxy in front of `upstream` whose requests are retried by `retry`.
async fn retrying(upstream: &MockUpstream, retry: Retry) -> TestServer {
    let server = Server::new(one(upstream.base_url(), &HttpSettings::direct())).pipeline(
        move |pipeline: &mut Pipeline| {
            pipeline.add(retry);
        },
    );
    TestServer::start(server).await
}

#[tokio::test]
async fn a_retry_after_within_max_delay_is_waited_for() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(
        Reply::error(429, "requests", "Rate limit reached").with_header("retry-after", "0.2"),
    );
    let server = retrying(&upstream, retry(3)).await;
    let answer = server.chat(&chat()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].received_at - seen[0].received_at;
    assert!(
        waited >= Duration::from_millis(200),
        "retried after {waited:?}, before the 200 ms the upstream asked for"
    );
    assert!(waited < Duration::from_secs(1), "{waited:?}");
}

#[tokio::test]
async fn a_retry_after_over_max_delay_goes_back_to_the_client_at_once() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(
        Reply::error(429, "requests", "Rate limit reached").with_header("retry-after", "30"),
    );
    let server = retrying(&upstream, retry(3)).await;
    let started = Instant::now();
    let answer = server.chat(&chat()).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("30"));
    assert_eq!(answer.header("x-sllmp-model"), Some("openai:gpt-4o"));
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"openai returned 429: Rate limit reached","type":"provider_rate_limit_error","param":null,"code":"rate_limit_exceeded","request_id":"[request_id]"}}"#);
    assert_eq!(upstream.requests().len(), 1, "not retried");
}

#[tokio::test]
async fn a_retry_after_over_max_delay_moves_on_to_the_fallback() {
    let pair = pair(3, None).await;
    pair.primary.enqueue(
        Reply::error(429, "requests", "Rate limit reached").with_header("retry-after", "30"),
    );
    let started = Instant::now();
    let answer = pair.server.chat(&primary_chat()).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-sllmp-model"), Some("backup:gpt-4o-mini"));
    assert_eq!(pair.primary.requests().len(), 1);
    assert_eq!(pair.backup.requests().len(), 1);
}

// ---------------------------------------------------------------------------------------
// Timeouts

/// A proxy in front of `registry` whose attempts are bounded by `timeouts`.
async fn bounded(registry: ProviderRegistry, timeouts: Timeouts) -> TestServer {
    let server = Server::new(registry).pipeline(move |pipeline: &mut Pipeline| {
        pipeline.add(SetTimeouts(timeouts));
    });
    TestServer::start(server).await
}

fn timeouts(connect: u64, first_token: u64, total: u64) -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(connect),
        first_token: Duration::from_millis(first_token),
        total: Duration::from_millis(total),
    }
}

#[tokio::test]
async fn a_connection_that_cannot_be_made_in_time_is_given_up() {
    // TCP connects, the TLS handshake never completes: only the connect limit ends it.
    let silent = SilentListener::start().await.unwrap();
    let registry = one(
        format!("https://{}/v1", silent.addr()),
        &HttpSettings::direct(),
    );
    let server = bounded(registry, timeouts(200, 10_000, 20_000)).await;
    let started = Instant::now();
    let answer = server.chat(&chat()).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert_eq!(answer.header("x-sllmp-model"), Some("openai:gpt-4o"));
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"openai could not be reached: connection failed: no connection within the connect timeout","type":"network_error","param":null,"code":"provider_unreachable","request_id":"[request_id]"}}"#);
    assert_eq!(silent.accepted(), 1);
}

#[tokio::test]
async fn a_response_head_that_does_not_come_in_time_is_a_timeout() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::Hang);
    let registry = one(upstream.base_url(), &HttpSettings::direct());
    let server = bounded(registry, timeouts(1000, 200, 20_000)).await;
    let started = Instant::now();
    let answer = server.chat(&chat()).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(answer.status, 504, "{}", answer.body);
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"openai timed out: no answer within the timeout","type":"timeout_error","param":null,"code":"provider_timeout","request_id":"[request_id]"}}"#);
}

#[tokio::test]
async fn a_stream_whose_first_chunk_is_late_is_a_timeout_not_a_200() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::sse(vec![
        data(&chunk("late")).after(Duration::from_secs(1)),
        Frame::done(),
    ]));
    let registry = one(upstream.base_url(), &HttpSettings::direct());
    let server = bounded(registry, timeouts(1000, 200, 20_000)).await;
    let started = Instant::now();
    let answer = server.chat(&streamed()).await;
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(answer.status, 504, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"openai did not send its first chunk within 200ms","type":"timeout_error","param":null,"code":"provider_timeout","request_id":"[request_id]"}}"#);
}

#[tokio::test]
async fn a_stream_over_its_total_time_ends_with_one_error_frame() {
    let upstream = MockUpstream::start().await;
    // A chunk every 100 ms for 2 s.
    let mut sse: Vec<Frame> = (0..20)
        .map(|i| data(&chunk(&i.to_string())).after(Duration::from_millis(100)))
        .collect();
    sse.push(Frame::done());
    upstream.enqueue(Reply::sse(sse));
    let registry = one(upstream.base_url(), &HttpSettings::direct());
    let server = bounded(registry, timeouts(1000, 1000, 500)).await;
    let started = Instant::now();
    let answer = server.chat(&streamed()).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(1),
        "{took:?}"
    );
    let frames = frames(&answer);
    let (last, chunks) = frames.split_last().unwrap();
    assert!(
        (3..=5).contains(&chunks.len()),
        "about 4 chunks in 500 ms: {frames:?}"
    );
    for (i, sent) in chunks.iter().enumerate() {
        assert_eq!(sent, &chunk(&i.to_string()));
    }
    insta::assert_snapshot!(stable(last), @r#"{"error":{"message":"openai did not send its whole answer within 500ms","type":"timeout_error","param":null,"code":"provider_timeout","request_id":"[request_id]"}}"#);
}

#[tokio::test]
async fn a_stream_that_stalls_midway_ends_with_one_error_frame() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::sse(vec![
        data(&chunk("one")),
        data(&chunk("two")),
        data(&chunk("three")).after(Duration::from_secs(2)),
        Frame::done(),
    ]));
    let registry = one(upstream.base_url(), &HttpSettings::direct());
    let server = bounded(registry, timeouts(1000, 300, 20_000)).await;
    let started = Instant::now();
    let answer = server.chat(&streamed()).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    let frames = frames(&answer);
    assert_eq!(frames[..2], [chunk("one"), chunk("two")]);
    assert_eq!(frames.len(), 3, "{frames:?}");
    insta::assert_snapshot!(stable(&frames[2]), @r#"{"error":{"message":"openai did not send its next chunk within 300ms","type":"timeout_error","param":null,"code":"provider_timeout","request_id":"[request_id]"}}"#);
}

// ---------------------------------------------------------------------------------------
// What the upstream sends

/// A proxy in front of `upstream`, with `settings` for its client and no retries.
async fn plain(upstream: &MockUpstream, settings: &HttpSettings) -> TestServer {
    TestServer::start(Server::new(one(upstream.base_url(), settings))).await
}

#[tokio::test]
async fn a_stream_cut_before_done_ends_with_an_error_frame() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::sse(vec![data(&chunk("Hel")), data(&chunk("lo"))]));
    let server = plain(&upstream, &HttpSettings::direct()).await;
    let answer = server.chat(&streamed()).await;
    let frames = frames(&answer);
    assert_eq!(frames[..2], [chunk("Hel"), chunk("lo")]);
    assert_eq!(frames.len(), 3, "{frames:?}");
    insta::assert_snapshot!(stable(&frames[2]), @r#"{"error":{"message":"openai: the provider's stream ended before it was complete","type":"llm_provider_error","param":null,"code":"provider_invalid_response","request_id":"[request_id]"}}"#);
}

#[tokio::test]
async fn a_stream_cut_before_its_first_event_is_a_502() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(Reply::sse(vec![Frame::raw(": keep-alive\n\n")]));
    let server = plain(&upstream, &HttpSettings::direct()).await;
    let answer = server.chat(&streamed()).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"openai: the provider's stream ended before it was complete","type":"llm_provider_error","param":null,"code":"provider_invalid_response","request_id":"[request_id]"}}"#);
}

#[tokio::test]
async fn an_error_sent_with_a_200_is_an_error() {
    let cases = [
        (
            json!({"error": {"message": "boom", "type": "server_error", "code": 429}}),
            false,
        ),
        (
            json!({"error": {"message": "boom", "type": "server_error", "code": null}}),
            false,
        ),
        (
            json!({"error": {"message": "bad input", "type": "invalid_request_error", "status": 400}}),
            false,
        ),
        // A server that ignores `stream` and answers JSON.
        (
            json!({"error": {"message": "boom", "type": "server_error", "code": 429}}),
            true,
        ),
    ];
    let mut bodies = Vec::new();
    for (body, stream) in cases {
        let upstream = MockUpstream::start().await;
        upstream.enqueue(Reply::json(body));
        let server = plain(&upstream, &HttpSettings::direct()).await;
        let answer = server.chat(&if stream { streamed() } else { chat() }).await;
        assert_ne!(answer.status, 200, "{}", answer.body);
        bodies.push(format!("{} {}", answer.status, stable(&answer.body)));
    }
    insta::assert_snapshot!(bodies.join("\n"), @r#"
    429 {"error":{"message":"openai returned 429: boom","type":"provider_rate_limit_error","param":null,"code":"rate_limit_exceeded","request_id":"[request_id]"}}
    503 {"error":{"message":"openai returned 502: boom","type":"service_unavailable_error","param":null,"code":"provider_unavailable","request_id":"[request_id]"}}
    400 {"error":{"message":"openai returned 400: bad input","type":"provider_bad_request","param":null,"code":null,"request_id":"[request_id]"}}
    429 {"error":{"message":"openai returned 429: boom","type":"provider_rate_limit_error","param":null,"code":"rate_limit_exceeded","request_id":"[request_id]"}}
    "#);
}

/// A client whose answers may be 1 KiB at most, events included.
fn small() -> HttpSettings {
    HttpSettings {
        max_body_bytes: 1024,
        max_event_bytes: 1024,
        ..HttpSettings::direct()
    }
}

/// A completion whose content makes it about `size` bytes long.
fn completion_of(size: usize) -> String {
    json!({
        "id": "chatcmpl-big", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x".repeat(size)}, "finish_reason": "stop"}]
    })
    .to_string()
}

#[tokio::test]
async fn an_answer_over_the_size_limit_is_a_502() {
    let upstream = MockUpstream::start().await;
    // Declared with content-length, then chunked without one.
    upstream.enqueue(Reply::Raw {
        content_type: "application/json".into(),
        body: completion_of(2000),
    });
    let big = completion_of(2000);
    let (head, tail) = big.split_at(900);
    upstream.enqueue(Reply::Chunked {
        content_type: "application/json".into(),
        frames: vec![Frame::raw(head), Frame::raw(tail)],
    });
    // Within the limit: fine.
    upstream.enqueue(Reply::Raw {
        content_type: "application/json".into(),
        body: completion_of(800),
    });
    let server = plain(&upstream, &small()).await;
    let declared = server.chat(&chat()).await;
    let chunked = server.chat(&chat()).await;
    let fits = server.chat(&chat()).await;
    assert_eq!(declared.status, 502, "{}", declared.body);
    assert_eq!(chunked.status, 502, "{}", chunked.body);
    assert_eq!(fits.status, 200, "{}", fits.body);
    assert_eq!(fits.body, completion_of(800));
    insta::assert_snapshot!(stable(&declared.body), @r#"{"error":{"message":"openai sent an answer over the size limit: answer too large: larger than the limit of 1024 bytes","type":"llm_provider_error","param":null,"code":"provider_invalid_response","request_id":"[request_id]"}}"#);
    assert_eq!(stable(&chunked.body), stable(&declared.body));
    assert_eq!(upstream.requests().len(), 3, "not retried");
}

#[tokio::test]
async fn a_stream_event_over_the_size_limit_ends_the_stream() {
    let upstream = MockUpstream::start().await;
    // The first event too large: nothing was sent yet, so a 502.
    upstream.enqueue(Reply::sse(vec![
        data(&chunk(&"x".repeat(2000))),
        Frame::done(),
    ]));
    // After a first event: an error frame.
    upstream.enqueue(Reply::sse(vec![
        data(&chunk("fine")),
        data(&chunk(&"x".repeat(2000))),
        Frame::done(),
    ]));
    let server = plain(&upstream, &small()).await;
    let first = server.chat(&streamed()).await;
    assert_eq!(first.status, 502, "{}", first.body);
    insta::assert_snapshot!(stable(&first.body), @r#"{"error":{"message":"openai sent an answer over the size limit: answer too large: larger than the limit of 1024 bytes","type":"llm_provider_error","param":null,"code":"provider_invalid_response","request_id":"[request_id]"}}"#);
    let later = server.chat(&streamed()).await;
    let frames = frames(&later);
    assert_eq!(frames[0], chunk("fine"));
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(
        stable(&frames[1]),
        stable(&first.body),
        "the same error, as a frame"
    );
}

// ---------------------------------------------------------------------------------------
// Limits of retrying

#[tokio::test]
async fn no_request_makes_more_than_ten_attempts() {
    let upstream = MockUpstream::start().await;
    for _ in 0..20 {
        upstream.enqueue(Reply::error(503, "server_error", "overloaded"));
    }
    let server = retrying(&upstream, retry(20)).await;
    let answer = server.chat(&chat()).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(upstream.requests().len(), 10, "Settings::max_attempts");
}

#[tokio::test]
async fn a_stream_that_fails_after_its_first_chunk_does_not_fall_back() {
    let pair = pair(3, None).await;
    pair.primary.enqueue(Reply::sse(vec![
        data(&chunk("partial")),
        data(r#"{"error":{"message":"overloaded","type":"server_error"}}"#),
    ]));
    let mut request = primary_chat();
    request["stream"] = json!(true);
    let answer = pair.server.chat(&request).await;
    let frames = frames(&answer);
    assert_eq!(answer.header("x-sllmp-model"), Some("primary:gpt-4o"));
    assert_eq!(frames[0], chunk("partial"));
    assert_eq!(frames.len(), 2, "{frames:?}");
    insta::assert_snapshot!(stable(&frames[1]), @r#"{"error":{"message":"primary failed mid-stream: overloaded","type":"service_unavailable_error","param":null,"code":"provider_unavailable","request_id":"[request_id]"}}"#);
    assert_eq!(pair.primary.requests().len(), 1);
    assert!(pair.backup.requests().is_empty());
}

#[tokio::test]
async fn a_timeout_is_retried_then_falls_back() {
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    primary.enqueue(Reply::Hang);
    primary.enqueue(Reply::Hang);
    let settings = HttpSettings::direct();
    let providers = ProviderRegistry::new()
        .with(provider("primary", primary.base_url(), &settings))
        .with(provider("backup", backup.base_url(), &settings));
    let server = Server::new(providers).pipeline(|pipeline: &mut Pipeline| {
        pipeline
            .add(retry(2))
            .add(Fallbacks::new([Route::new("backup", "gpt-4o-mini")]))
            .add(SetTimeouts(timeouts(1000, 150, 20_000)));
    });
    let server = TestServer::start(server).await;
    let started = Instant::now();
    let answer = server.chat(&primary_chat()).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-sllmp-model"), Some("backup:gpt-4o-mini"));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "two attempts of 150 ms, then the backup: {took:?}"
    );
    assert_eq!(primary.requests().len(), 2);
    assert_eq!(backup.requests().len(), 1);
}
