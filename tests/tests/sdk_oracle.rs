//! What SLLMP emits is accepted by a strict OpenAI SDK's types (async-openai), streaming and
//! not, usage chunk included, and through the mock upstream as well as the mock provider.

use async_openai::types::chat::{CreateChatCompletionResponse, CreateChatCompletionStreamResponse};
use serde_json::json;
use sllmp_integration::TestServer;
use sllmp_test_support::MockUpstream;

fn config(upstream: &MockUpstream) -> String {
    format!(
        "defaults:\n  providers:\n    up: {{provider: openai, api_base: \"{}\"}}\nfeatures:\n  default: {{}}\n",
        upstream.base_url()
    )
}

#[tokio::test]
async fn completions_and_chunks_parse_as_the_sdk_types() {
    let upstream = MockUpstream::start().await;
    let server = TestServer::from_yaml(&config(&upstream), &[]).await;
    for model in ["mock:echo", "up:gpt-4o"] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "Hi there"}]});
        let answer = server.chat(&body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let parsed: CreateChatCompletionResponse = serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("{model}: {e}: {}", answer.body));
        assert!(parsed.usage.is_some());

        let mut body = body.clone();
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let answer = server.chat(&body).await;
        let frames = answer.sse_data();
        assert_eq!(frames.last().unwrap(), "[DONE]");
        let mut usage_chunks = 0;
        for frame in &frames[..frames.len() - 1] {
            let chunk: CreateChatCompletionStreamResponse =
                serde_json::from_str(frame).unwrap_or_else(|e| panic!("{model}: {e}: {frame}"));
            usage_chunks += usize::from(chunk.usage.is_some());
        }
        assert_eq!(usage_chunks, 1, "{model}");
    }
}
