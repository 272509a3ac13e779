//! The built-in `mock` provider: answers without a key or a network.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::Value;
use sllmp_core::{
    ChatCompletion, ChatRequest, Choice, ChunkStream, Completion, Error, Extra, Message, Provider,
    UpstreamRequest, Usage, estimate_tokens,
};

/// A provider that echoes the last user message, deterministically, with realistic usage
/// numbers, and streams the same answer in several chunks.
///
/// It is what the default configuration and the quick start use, so that SLLMP can be tried
/// and tested with no API key. Any model name works (`mock:echo`, `mock:anything`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use sllmp_core::{ChatRequest, Message, Provider, UpstreamRequest};
/// use sllmp_providers::Mock;
///
/// let req = ChatRequest { model: "echo".into(), messages: vec![Message::new("user", "Hello!")], ..Default::default() };
/// let answer = Mock::new("mock").chat(&UpstreamRequest::new(&req)).await.unwrap();
/// assert_eq!(answer.choices[0].message.text(), "Hello!");
/// assert_eq!(answer.usage.as_ref().unwrap().completion_tokens, 2);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Mock {
    name: String,
}

impl Mock {
    /// A mock provider called `name`.
    pub fn new(name: impl Into<String>) -> Mock {
        Mock { name: name.into() }
    }

    fn answer(&self, req: &ChatRequest) -> ChatCompletion {
        let text = req
            .last_user_text()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "Hello from the SLLMP mock provider.".to_string());
        let prompt_tokens = req
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.text()) + 3)
            .sum::<u64>()
            + 3;
        let completion_tokens = estimate_tokens(&text);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut extra = Extra::new();
        extra.insert("system_fingerprint", Value::from("fp_sllmp_mock"));
        ChatCompletion {
            id: format!("chatcmpl-mock-{:016x}", fnv1a(text.as_bytes())),
            object: "chat.completion".into(),
            created,
            model: req.model.clone(),
            choices: vec![Choice {
                index: 0,
                message: Message::new("assistant", text),
                finish_reason: Some("stop".into()),
                extra: Extra::new(),
            }],
            usage: Some(Usage::new(prompt_tokens, completion_tokens)),
            extra,
        }
    }
}

#[async_trait::async_trait]
impl Provider for Mock {
    fn name(&self) -> &str {
        &self.name
    }

    fn models(&self) -> Vec<String> {
        vec!["echo".to_string()]
    }

    async fn chat(&self, req: &UpstreamRequest<'_>) -> Result<Completion, Error> {
        Ok(self.answer(req).into())
    }

    async fn chat_stream(&self, req: &UpstreamRequest<'_>) -> Result<ChunkStream, Error> {
        let chunks = self.answer(req).to_chunks(req.wants_stream_usage());
        Ok(futures_util::stream::iter(chunks.into_iter().map(Ok)).boxed())
    }
}

/// FNV-1a: a stable hash for deterministic ids.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
