//! The request log, through the process's subscriber (`on_complete` runs in a task of its
//! own, possibly on another thread): one line per request with the fields a user greps
//! for, at the right level.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::json;
use sllmp_core::{
    Call, ChatCompletion, ChatRequest, ChunkStream, Completion, Error, ErrorKind, Provider,
    ProviderRegistry, Request, UpstreamRequest,
};
use sllmp_observe::{LineFormat, RequestLog};
use sllmp_pipeline::{Ctx, Pipeline};
use sllmp_test_support::LogCapture as Capture;

/// The process's subscriber: `LineFormat` lines into a buffer (installed once per test binary).
fn captured() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(capture.clone())
            .event_format(LineFormat)
            .init();
        capture
    })
}

/// The captured lines about `request_id`, without their timestamps.
fn lines_of(request_id: &str) -> Vec<String> {
    let text = captured().text();
    text.lines()
        .filter(|line| line.contains(&format!("request_id=\"{request_id}\"")))
        .map(|line| line[27..].to_string())
        .collect()
}

/// Answers every call with a fixed completion, or fails with 503.
struct Fixed {
    fail: bool,
}

#[async_trait::async_trait]
impl Provider for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }

    async fn chat(
        &self,
        _call: &Call<'_>,
        _req: &UpstreamRequest<'_>,
    ) -> Result<Completion, Error> {
        if self.fail {
            return Err(Error::new(
                ErrorKind::ProviderUnavailable,
                "fixed returned 503: busy",
            ));
        }
        let answer: ChatCompletion = serde_json::from_value(json!({
            "id": "r", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
        }))
        .unwrap();
        Ok(answer.into())
    }

    async fn chat_stream(
        &self,
        _call: &Call<'_>,
        _req: &UpstreamRequest<'_>,
    ) -> Result<ChunkStream, Error> {
        unreachable!("the tests ask for no stream")
    }
}

async fn run(request_id: &str, fail: bool) {
    captured();
    let req: ChatRequest = serde_json::from_value(json!({
        "model": "fixed:m", "messages": [{"role": "user", "content": "secret prompt"}]
    }))
    .unwrap();
    let req = Request::from(req);
    let registry = ProviderRegistry::new().with(Fixed { fail });
    let mut pipeline = Pipeline::new(Ctx::new(request_id, &req, Arc::new(registry)));
    pipeline.add(RequestLog::new());
    let _ = pipeline.run(req).await;
}

/// Waits for the request's `on_complete` (a task of its own) to have recorded its line.
async fn line_of(request_id: &str) -> String {
    for _ in 0..500 {
        if let [line] = lines_of(request_id).as_slice() {
            return line.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "no single line for {request_id}: {:?}",
        lines_of(request_id)
    );
}

#[tokio::test]
async fn a_completed_request_is_one_info_line_with_its_fields() {
    run("req_log_ok", false).await;
    let line = line_of("req_log_ok").await;
    let (fixed, timing) = line.split_once(" latency_ms=").unwrap();
    assert_eq!(
        fixed,
        "  INFO sllmp::request: request completed request_id=\"req_log_ok\" operation=\"chat\" feature=\"\" \
         model=\"fixed:m\" provider=\"fixed\" provider_model=\"m\" stream=false \
         outcome=\"success\" status=200 error_type=\"\" error=\"\" attempts=1 prompt_tokens=7 \
         completion_tokens=2 usage_estimated=false cost_usd=-1.0"
    );
    assert!(timing.ends_with(" ttft_ms=-1.0"), "{timing}");
    assert!(!line.contains("secret prompt"), "never the messages");
}

#[tokio::test]
async fn a_provider_failure_is_a_warn_line_with_the_error() {
    run("req_log_fail", true).await;
    let line = line_of("req_log_fail").await;
    assert!(
        line.starts_with("  WARN sllmp::request: request completed"),
        "{line}"
    );
    assert!(
        line.contains(
            "outcome=\"error\" status=503 error_type=\"service_unavailable_error\" \
             error=\"fixed returned 503: busy\" attempts=1"
        ),
        "{line}"
    );
}
