//! Tests of the mock upstream over real HTTP.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sllmp_test_support::{Frame, MockOptions, MockUpstream, Reply, SilentListener};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

fn completions_url(mock: &MockUpstream) -> String {
    format!("{}/chat/completions", mock.base_url())
}

async fn post(mock: &MockUpstream, body: Value) -> reqwest::Response {
    client()
        .post(completions_url(mock))
        .json(&body)
        .send()
        .await
        .expect("request to mock")
}

/// Splits an SSE body into its `data:` payloads, checking every event is a
/// single `data: ...` line followed by a blank line.
fn data_payloads(body: &str) -> Vec<&str> {
    assert!(
        body.ends_with("\n\n"),
        "body must end with a blank line: {body:?}"
    );
    body.strip_suffix("\n\n")
        .expect("checked above")
        .split("\n\n")
        .map(|event| event.strip_prefix("data: ").expect("data event"))
        .collect()
}

/// The `id` and `created` of the first chunk of a streamed body.
fn id_and_created(body: &str) -> (String, u64) {
    let first: Value = serde_json::from_str(data_payloads(body)[0]).expect("json chunk");
    (
        first["id"].as_str().expect("id").to_owned(),
        first["created"].as_u64().expect("created"),
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[tokio::test]
async fn default_non_streaming_reply_has_openai_shape() {
    let mock = MockUpstream::start().await;
    let response = post(
        &mock,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hello there"}
            ]
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let mut body: Value = response.json().await.unwrap();

    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-mock-"), "{id}");
    let created = body["created"].as_u64().unwrap();
    assert!(created.abs_diff(unix_now()) < 60);
    body["id"] = json!("ID");
    body["created"] = json!(0);

    // Prompt: 14 + 11 chars -> ceil(25 / 4) = 7, plus 3 per message = 13.
    // Reply: "Mock reply to: Hello there" is 26 chars -> 7.
    assert_eq!(
        body,
        json!({
            "id": "ID",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Mock reply to: Hello there", "refusal": null},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 13, "completion_tokens": 7, "total_tokens": 20},
            "system_fingerprint": "fp_mock"
        })
    );
}

#[tokio::test]
async fn content_parts_and_mock_content() {
    let mock = MockUpstream::start().await;
    let body: Value = post(
        &mock,
        json!({
            "model": "m",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Hel"},
                {"type": "image_url", "image_url": {"url": "data:,"}},
                {"type": "text", "text": "lo"}
            ]}]
        }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Mock reply to: Hello"
    );

    let body: Value = post(
        &mock,
        json!({
            "model": "m",
            "messages": [{"role": "user", "content": "ignored"}],
            "mock": {"content": "exactly this"}
        }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "exactly this");
    assert_eq!(body["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn completion_ids_are_unique() {
    let mock = MockUpstream::start().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let body: Value = post(&mock, json!({"model": "m", "messages": []}))
            .await
            .json()
            .await
            .unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
}

#[tokio::test]
async fn streaming_frames_are_exact_without_usage() {
    let mock = MockUpstream::start().await;
    let response = post(
        &mock,
        json!({
            "model": "gpt-4o",
            "stream": true,
            "messages": [{"role": "user", "content": "hi"}],
            "mock": {"content": "abcdefghij", "chunks": 3}
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let body = response.text().await.unwrap();
    let (id, created) = id_and_created(&body);
    assert!(id.starts_with("chatcmpl-mock-"));

    let head = format!(
        r#"{{"id":"{id}","object":"chat.completion.chunk","created":{created},"model":"gpt-4o","system_fingerprint":"fp_mock","choices":"#
    );
    let expected = [
        format!(
            r#"data: {head}[{{"index":0,"delta":{{"role":"assistant","content":"","refusal":null}},"logprobs":null,"finish_reason":null}}]}}"#
        ),
        format!(
            r#"data: {head}[{{"index":0,"delta":{{"content":"abcd"}},"logprobs":null,"finish_reason":null}}]}}"#
        ),
        format!(
            r#"data: {head}[{{"index":0,"delta":{{"content":"efg"}},"logprobs":null,"finish_reason":null}}]}}"#
        ),
        format!(
            r#"data: {head}[{{"index":0,"delta":{{"content":"hij"}},"logprobs":null,"finish_reason":null}}]}}"#
        ),
        format!(
            r#"data: {head}[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}]}}"#
        ),
        "data: [DONE]".to_owned(),
    ]
    .map(|frame| frame + "\n\n")
    .concat();
    assert_eq!(body, expected);
}

#[tokio::test]
async fn streaming_frames_are_exact_with_usage() {
    let mock = MockUpstream::start().await;
    let body = post(
        &mock,
        json!({
            "model": "gpt-4o",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "abcdef"}],
            "mock": {"content": "xyz", "chunks": 2}
        }),
    )
    .await
    .text()
    .await
    .unwrap();
    let (id, created) = id_and_created(&body);

    let head = format!(
        r#"{{"id":"{id}","object":"chat.completion.chunk","created":{created},"model":"gpt-4o","system_fingerprint":"fp_mock","choices":"#
    );
    // Prompt: ceil(6 / 4) + 3 = 5; reply: ceil(3 / 4) = 1.
    let expected = [
        format!(
            r#"data: {head}[{{"index":0,"delta":{{"role":"assistant","content":"","refusal":null}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
        ),
        format!(
            r#"data: {head}[{{"index":0,"delta":{{"content":"xy"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
        ),
        format!(
            r#"data: {head}[{{"index":0,"delta":{{"content":"z"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
        ),
        format!(
            r#"data: {head}[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}],"usage":null}}"#
        ),
        format!(
            r#"data: {head}[],"usage":{{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}}}"#
        ),
        "data: [DONE]".to_owned(),
    ]
    .map(|frame| frame + "\n\n")
    .concat();
    assert_eq!(body, expected);
}

#[tokio::test]
async fn streaming_default_content_is_split_into_five_chunks() {
    let mock = MockUpstream::start().await;
    let body = post(
        &mock,
        json!({
            "model": "m",
            "stream": true,
            "messages": [{"role": "user", "content": "what is up"}]
        }),
    )
    .await
    .text()
    .await
    .unwrap();
    let payloads = data_payloads(&body);
    // Role chunk, 5 content chunks, finish chunk, [DONE].
    assert_eq!(payloads.len(), 8, "{body}");
    assert_eq!(payloads[7], "[DONE]");
    let content: String = payloads[1..6]
        .iter()
        .map(|p| {
            let chunk: Value = serde_json::from_str(p).unwrap();
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(content, "Mock reply to: what is up");
}

#[tokio::test]
async fn fail_after_chunks_ends_with_an_error_event() {
    let mock = MockUpstream::start().await;
    let started = Instant::now();
    let body = post(
        &mock,
        json!({
            "model": "m",
            "stream": true,
            "messages": [{"role": "user", "content": "x"}],
            "mock": {"content": "abcdefgh", "chunks": 4, "fail_after_chunks": 2, "chunk_interval_ms": 30}
        }),
    )
    .await
    .text()
    .await
    .unwrap();
    // Two intervals: before the second chunk and before the error.
    assert!(started.elapsed() >= Duration::from_millis(60));

    let payloads = data_payloads(&body);
    assert_eq!(payloads.len(), 4, "{body}");
    let deltas: Vec<Value> = payloads[..3]
        .iter()
        .map(|p| serde_json::from_str::<Value>(p).unwrap()["choices"][0]["delta"].clone())
        .collect();
    assert_eq!(
        deltas,
        [
            json!({"role": "assistant", "content": "", "refusal": null}),
            json!({"content": "ab"}),
            json!({"content": "cd"}),
        ]
    );
    assert_eq!(
        payloads[3],
        r#"{"error":{"message":"mock upstream failed mid-stream","type":"server_error","param":null,"code":null}}"#
    );
    assert!(!body.contains("[DONE]"));
    // A stream that ends with its error frame is not a cancelled one.
    assert_eq!(mock.streams_cancelled(), 0);
}

#[tokio::test]
async fn status_injection() {
    let mock = MockUpstream::start().await;
    let request = |status: u16| json!({"model": "m", "messages": [], "mock": {"status": status}});

    let response = post(&mock, request(429)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {
            "message": "mock upstream error 429",
            "type": "requests",
            "param": null,
            "code": "rate_limit_exceeded"
        }})
    );

    let response = post(&mock, request(503)).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {
            "message": "mock upstream error 503",
            "type": "server_error",
            "param": null,
            "code": null
        }})
    );

    let response = post(&mock, request(400)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // 200 means "no injection".
    assert_eq!(post(&mock, request(200)).await.status(), 200);
}

#[tokio::test]
async fn latency_delays_the_response() {
    let mock = MockUpstream::start().await;
    let started = Instant::now();
    let response = post(
        &mock,
        json!({"model": "m", "messages": [], "mock": {"latency_ms": 150}}),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn invalid_requests_get_a_400() {
    let mock = MockUpstream::start().await;
    let response = client()
        .post(completions_url(&mock))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // A typo in the control object is reported rather than ignored.
    let response = post(&mock, json!({"messages": [], "mock": {"latency": 5}})).await;
    assert_eq!(response.status(), 400);

    // The invalid body is still recorded, as text.
    assert_eq!(mock.requests()[0].body, json!("not json"));
}

#[tokio::test]
async fn scripted_replies_are_used_in_order_then_the_default() {
    let mock = MockUpstream::start().await;
    mock.enqueue(Reply::error(429, "requests", "slow down").with_header("retry-after", "7"));
    mock.enqueue(Reply::json_status(201, json!({"scripted": true})));
    // One event split in the middle of its JSON, delivered in two writes.
    mock.enqueue(Reply::sse(vec![
        Frame::raw("data: {\"a\":"),
        Frame::raw("1}\n\n").after(Duration::from_millis(20)),
        Frame::data(json!({"b": 2})),
        Frame::done(),
    ]));
    let request = json!({"model": "m", "messages": [{"role": "user", "content": "q"}]});

    let response = post(&mock, request.clone()).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": {"message": "slow down", "type": "requests", "param": null, "code": null}})
    );

    let response = post(&mock, request.clone()).await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"scripted": true})
    );

    let response = post(&mock, request.clone()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    assert_eq!(
        response.text().await.unwrap(),
        "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n"
    );

    // Queue empty: the default answers.
    let body: Value = post(&mock, request).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Mock reply to: q");
}

#[tokio::test]
async fn requests_are_recorded_with_headers_and_body() {
    let mock = MockUpstream::start().await;
    let first = json!({"model": "m", "messages": [{"role": "user", "content": "one"}], "extra": 1});
    client()
        .post(completions_url(&mock))
        .bearer_auth("sk-upstream")
        .header("X-Custom", "Value")
        .json(&first)
        .send()
        .await
        .unwrap();
    // The unversioned path reaches the same handler.
    let second = json!({"model": "m", "messages": []});
    let response = client()
        .post(format!("http://{}/chat/completions", mock.addr()))
        .json(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].body, first);
    assert_eq!(seen[0].header("authorization"), Some("Bearer sk-upstream"));
    assert_eq!(seen[0].header("Authorization"), Some("Bearer sk-upstream"));
    assert_eq!(seen[0].header("x-custom"), Some("Value"));
    assert!(seen[0].headers.iter().any(|(name, _)| name == "x-custom"));
    assert_eq!(seen[1].path, "/chat/completions");
    assert_eq!(seen[1].body, second);
    assert_eq!(seen[1].header("authorization"), None);
}

#[tokio::test]
async fn other_routes() {
    let mock = MockUpstream::start().await;
    let health = client()
        .get(format!("http://{}/health", mock.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let missing = client()
        .post(format!("{}/moderations", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let wrong_method = client().get(completions_url(&mock)).send().await.unwrap();
    assert_eq!(wrong_method.status(), 404);
    // Neither counts as a request.
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn dropped_streams_are_counted() {
    let mock = MockUpstream::start().await;
    // A stream read to the end is not cancelled.
    post(&mock, json!({"model": "m", "stream": true, "messages": []}))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(mock.streams_cancelled(), 0);

    let mut response = post(
        &mock,
        json!({
            "model": "m",
            "stream": true,
            "messages": [],
            "mock": {"chunks": 50, "chunk_interval_ms": 20}
        }),
    )
    .await;
    let first = response.chunk().await.unwrap().expect("a first frame");
    assert!(first.starts_with(b"data: "));
    drop(response);

    assert!(
        mock.wait_streams_cancelled(1, Duration::from_secs(10))
            .await,
        "the dropped stream was not counted"
    );
    assert_eq!(mock.streams_cancelled(), 1);
    // Nothing more to wait for: a higher target times out.
    assert!(
        !mock
            .wait_streams_cancelled(2, Duration::from_millis(50))
            .await
    );
}

#[tokio::test]
async fn hang_never_answers_until_the_mock_is_dropped() {
    let mock = MockUpstream::start().await;
    mock.enqueue(Reply::Hang);
    mock.enqueue(Reply::Hang);
    let request = json!({"model": "m", "messages": []});

    let timed_out = client()
        .post(completions_url(&mock))
        .timeout(Duration::from_millis(200))
        .json(&request)
        .send()
        .await
        .expect_err("a hanging reply must time out");
    assert!(timed_out.is_timeout(), "{timed_out}");

    // Dropping the mock cuts the hanging request off instead of leaving it
    // open forever.
    let url = completions_url(&mock);
    let pending = tokio::spawn(async move {
        let response = client().post(url).json(&request).send().await?;
        response.bytes().await
    });
    while mock.requests().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let addr = mock.addr();
    drop(mock);
    let outcome = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the hanging request ends once the mock is dropped")
        .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");

    // And nothing listens any more: the port can be bound again at once (and is held,
    // not listening, so no other test's server can take it while we check).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket
        .bind(addr)
        .expect("the mock's port is free once it is dropped");
    let refused = client()
        .get(format!("http://{addr}/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn recording_can_be_turned_off() {
    let mock = MockUpstream::start_with(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        MockOptions::new().record_requests(false),
    )
    .await
    .unwrap();
    mock.enqueue(Reply::json_status(202, json!({})));
    let request = json!({"model": "m", "messages": []});
    assert_eq!(post(&mock, request.clone()).await.status(), 202);
    assert_eq!(post(&mock, request).await.status(), 200);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn embeddings_get_deterministic_vectors_and_share_the_script() {
    let mock = MockUpstream::start().await;
    let url = format!("{}/embeddings", mock.base_url());
    let embed = |body: Value| {
        let url = url.clone();
        async move {
            let response = client().post(url).json(&body).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, body) =
        embed(json!({"model": "e", "input": ["a", "b", "a"], "dimensions": 3})).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "e");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["object"], "embedding");
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 3);
    assert_eq!(data[0]["embedding"], data[2]["embedding"]);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    // `"a"` is 3 JSON characters: 9 in all, 3 tokens.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );
    let (_, one) = embed(json!({"model": "e", "input": "a"})).await;
    assert_eq!(one["data"][0]["embedding"].as_array().unwrap().len(), 8);

    // One script for both routes, in arrival order.
    mock.enqueue(Reply::error(503, "server_error", "busy"));
    let (status, _) = embed(json!({"model": "e", "input": "a"})).await;
    assert_eq!(status, 503);
    let paths: Vec<_> = mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/embeddings"; 3]);
    let seen = mock.requests();
    assert!(seen[0].received_at <= seen[1].received_at);
}

#[tokio::test]
async fn chunked_replies_have_no_content_length() {
    let mock = MockUpstream::start().await;
    mock.enqueue(Reply::Chunked {
        content_type: "application/json".into(),
        frames: vec![
            Frame::raw("{\"a\":"),
            Frame::raw("1}").after(Duration::from_millis(50)),
        ],
    });
    let started = Instant::now();
    let response = post(&mock, json!({"model": "m", "messages": []})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(response.text().await.unwrap(), r#"{"a":1}"#);
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[tokio::test]
async fn a_silent_listener_accepts_and_never_answers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let silent = SilentListener::start().await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(silent.addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
    assert!(read.is_err(), "no answer: {read:?}");
    assert_eq!(silent.accepted(), 1);
    // Dropped, it closes what it held.
    drop(silent);
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
}
