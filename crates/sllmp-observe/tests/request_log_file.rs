//! The request log as the `sllmp` binary runs it: `init_logging`'s text format into a file,
//! where `RequestLog` writes its line itself. The line must be the one `LineFormat` writes
//! for the event (`tests/request_log.rs` pins that one).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sllmp_core::{ChatCompletion, ChatRequest, ProviderRegistry};
use sllmp_observe::{LogFormat, RequestLog, init_logging};
use sllmp_pipeline::{Ctx, Flow, Hooks, Pipeline};

#[tokio::test]
async fn under_init_logging_the_request_line_reaches_the_log_file() {
    let path = std::env::temp_dir().join(format!("sllmp-request-log-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let guard = init_logging(Some(&path), LogFormat::Text).expect("logging starts");

    let req: ChatRequest = serde_json::from_value(json!({
        "model": "cache:m", "messages": [{"role": "user", "content": "secret prompt"}]
    }))
    .unwrap();
    let answer: ChatCompletion = serde_json::from_value(json!({
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    }))
    .unwrap();
    let req = sllmp_core::Request::from(req);
    let mut pipeline = Pipeline::new(Ctx::new(
        "req_file_1",
        &req,
        Arc::new(ProviderRegistry::new()),
    ));
    pipeline.add(RequestLog::new());
    pipeline
        .add(Hooks::new("cache").on_request(move |_, _| Ok(Flow::Respond(answer.clone().into()))));
    pipeline.run(req).await.expect("answered");

    // `on_complete` runs in a task of its own; the writer flushes every 100 ms.
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("req_file_1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(guard);
    let _ = std::fs::remove_file(&path);
    let line = text
        .lines()
        .find(|line| line.contains("request_id=\"req_file_1\""))
        .unwrap_or_else(|| panic!("no request line in {text:?}"));
    let (fixed, timing) = line[27..].split_once(" latency_ms=").unwrap();
    assert_eq!(
        fixed,
        "  INFO sllmp::request: request completed request_id=\"req_file_1\" operation=\"chat\" feature=\"\" \
         model=\"cache:m\" provider=\"\" provider_model=\"\" stream=false outcome=\"success\" \
         status=200 error_type=\"\" error=\"\" attempts=0 prompt_tokens=3 completion_tokens=2 \
         usage_estimated=false cost_usd=0.0"
    );
    assert!(timing.ends_with(" ttft_ms=-1.0"), "{timing}");
    assert!(!text.contains("secret prompt"), "never the messages");
}
