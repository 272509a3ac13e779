//! The server's life: graceful shutdown lets in-flight streams finish; a panicking
//! middleware becomes an OpenAI-shaped 500.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use sllmp::providers::Mock;
use sllmp::{Flow, Hooks, Pipeline, ProviderRegistry, Server, ServerSettings};
use sllmp_integration::{TestServer, stable, upstream_providers};
use sllmp_test_support::MockUpstream;

#[tokio::test]
async fn shutdown_lets_in_flight_streams_finish() {
    let upstream = MockUpstream::start().await;
    let providers = upstream_providers(&upstream, |_| {});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::new(providers).serve_on(listener, async {
        let _ = stopped.await;
    }));

    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&json!({
            "model": "openai:gpt-4o",
            "messages": [{"role": "user", "content": "slowly"}],
            "stream": true,
            "mock": {"chunks": 5, "chunk_interval_ms": 60}
        }))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    // Shut down while the stream is in flight: it still ends properly.
    stop.send(()).unwrap();
    let mut rest = Vec::new();
    while let Some(piece) = body.next().await {
        rest.extend_from_slice(&piece.unwrap());
    }
    assert!(
        String::from_utf8(rest)
            .unwrap()
            .ends_with("data: [DONE]\n\n")
    );
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops once the stream is done")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_waits_no_longer_than_the_grace_period() {
    let upstream = MockUpstream::start().await;
    upstream.enqueue(sllmp_test_support::Reply::Hang);
    let providers = upstream_providers(&upstream, |_| {});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let settings = ServerSettings {
        shutdown_grace: Duration::from_millis(200),
        ..ServerSettings::default()
    };
    let server = tokio::spawn(Server::new(providers).settings(settings).serve_on(
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let request = tokio::spawn(
        reqwest::Client::new()
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&json!({"model": "openai:gpt-4o", "messages": [{"role": "user", "content": "hang"}]}))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the grace period bounds the shutdown")
        .unwrap()
        .unwrap();
    request.abort();
}

#[tokio::test]
async fn a_panic_outside_the_pipeline_is_a_500_with_the_request_id() {
    // The pipeline factory is the user's code too, and runs in the handler.
    let server = Server::new(ProviderRegistry::new().with(Mock::new("mock"))).pipeline(
        |pipeline: &mut Pipeline| {
            if pipeline.ctx().requested_model() == "mock:boom" {
                panic!("a bug in a pipeline factory");
            }
        },
    );
    let server = TestServer::start(server).await;
    let answer = server
        .chat_with(
            &json!({"model": "mock:boom", "messages": [{"role": "user", "content": "x"}]}),
            &[("x-request-id", "req-panic-2")],
        )
        .await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.header("x-request-id"), Some("req-panic-2"));
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"the server failed while handling the request","type":"internal_error","param":null,"code":"internal_error","request_id":"[request_id]"}}"#);
    let answer = server
        .chat(&json!({"model": "mock:echo", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(answer.status, 200);
    assert!(answer.header("x-request-id").is_some());
}

#[tokio::test]
async fn a_panicking_middleware_is_a_500_with_the_request_id() {
    let server = Server::new(ProviderRegistry::new().with(Mock::new("mock"))).pipeline(
        |pipeline: &mut Pipeline| {
            pipeline.add(Hooks::new("buggy").on_request(|_, req| {
                if req.model() == "mock:boom" {
                    panic!("a bug in a middleware");
                }
                Ok(Flow::Continue)
            }));
        },
    );
    let server = TestServer::start(server).await;
    let answer = server
        .chat_with(
            &json!({"model": "mock:boom", "messages": [{"role": "user", "content": "x"}]}),
            &[("x-request-id", "req-panic-1")],
        )
        .await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.header("x-request-id"), Some("req-panic-1"));
    insta::assert_snapshot!(stable(&answer.body), @r#"{"error":{"message":"'buggy' panicked while handling the request","type":"internal_error","param":null,"code":"internal_error","request_id":"[request_id]"}}"#);
    // The server keeps serving.
    let answer = server
        .chat(&json!({"model": "mock:echo", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(answer.status, 200);
}
