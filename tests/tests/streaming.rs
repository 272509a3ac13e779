//! Server-sent events: exact frames, usage as OpenAI specifies it, client disconnects.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use sllmp::{Hooks, Pipeline, Server};
use sllmp_integration::{TestServer, stable, upstream_providers};
use sllmp_test_support::MockUpstream;

fn stream_body(include_usage: Option<bool>) -> serde_json::Value {
    let mut body = json!({
        "model": "mock:echo",
        "messages": [{"role": "user", "content": "Stream this please"}],
        "stream": true
    });
    if let Some(include_usage) = include_usage {
        body["stream_options"] = json!({"include_usage": include_usage});
    }
    body
}

#[tokio::test]
async fn frames_without_usage() {
    let server = TestServer::from_yaml(sllmp::DEFAULT_CONFIG, &[]).await;
    let answer = server.chat(&stream_body(None)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    assert_eq!(answer.header("cache-control"), Some("no-cache"));
    assert_eq!(answer.header("x-accel-buffering"), Some("no"));
    insta::assert_snapshot!(stable(&answer.body));
}

#[tokio::test]
async fn frames_with_include_usage() {
    let server = TestServer::from_yaml(sllmp::DEFAULT_CONFIG, &[]).await;
    let answer = server.chat(&stream_body(Some(true))).await;
    insta::assert_snapshot!(stable(&answer.body));
    // OpenAI's rule: every chunk carries "usage": null but the last, which has empty
    // choices and the usage of the whole stream.
    let frames = answer.sse_data();
    let (done, chunks) = frames.split_last().unwrap();
    assert_eq!(done, "[DONE]");
    let (last, rest) = chunks.split_last().unwrap();
    let last: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 16);
    for chunk in rest {
        let chunk: serde_json::Value = serde_json::from_str(chunk).unwrap();
        assert_eq!(chunk["usage"], serde_json::Value::Null);
        assert!(chunk.as_object().unwrap().contains_key("usage"));
    }
}

#[tokio::test]
async fn include_usage_false_is_like_not_asking() {
    let server = TestServer::from_yaml(sllmp::DEFAULT_CONFIG, &[]).await;
    let without = server.chat(&stream_body(None)).await;
    let with_false = server.chat(&stream_body(Some(false))).await;
    assert_eq!(stable(&without.body), stable(&with_false.body));
    assert!(!without.body.contains("usage"));
}

#[tokio::test]
async fn a_client_that_disconnects_stops_the_upstream_and_completion_still_runs() {
    let upstream = MockUpstream::start().await;
    let providers = upstream_providers(&upstream, |_| {});
    let outcomes = Arc::new(Mutex::new(Vec::<(String, Option<u64>, bool)>::new()));
    let seen = Arc::clone(&outcomes);
    let server = Server::new(providers).pipeline(move |pipeline: &mut Pipeline| {
        let seen = Arc::clone(&seen);
        pipeline.add(Hooks::new("record").on_complete(move |ctx, outcome| {
            seen.lock().unwrap().push((
                outcome.as_str().to_string(),
                ctx.usage().map(|u| u.completion_tokens),
                ctx.usage_is_estimated(),
            ));
        }));
    });
    let server = TestServer::start(server).await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url()))
        .json(&json!({
            "model": "openai:gpt-4o",
            "messages": [{"role": "user", "content": "a long answer please"}],
            "stream": true,
            "mock": {"chunks": 50, "chunk_interval_ms": 100}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    // Read the first frames, then hang up.
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(body);
    assert!(
        upstream
            .wait_streams_cancelled(1, Duration::from_secs(5))
            .await,
        "the upstream stream was not stopped"
    );
    for _ in 0..100 {
        if !outcomes.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 1, "on_complete runs exactly once");
    let (outcome, completion_tokens, estimated) = &outcomes[0];
    assert_eq!(outcome, "cancelled");
    // Usage is estimated from what was received, never lost.
    assert!(completion_tokens.is_some());
    assert!(*estimated);
}
