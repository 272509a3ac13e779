//! The built-in `mock` provider: answers without a key or a network.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use futures_util::StreamExt;
use serde_json::Value;
use sllmp_core::{
    Call, ChatCompletion, ChatRequest, Choice, ChunkStream, Completion, Embedding, Embeddings,
    EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage, Error, Extra, Message, Provider,
    UpstreamRequest, Usage, estimate_tokens,
};

/// A provider that echoes the last user message, deterministically, with realistic usage
/// numbers, and streams the same answer in several chunks. For embeddings it answers a
/// deterministic unit vector per input (16 dimensions, or `dimensions`), derived from the
/// input's text, as floats or base64 (`encoding_format`).
///
/// It is what the default configuration and the quick start use, so that SLLMP can be tried
/// and tested with no API key. Any model name works (`mock:echo`, `mock:anything`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use sllmp_core::{Call, ChatRequest, Message, Provider, Route, UpstreamRequest};
/// use sllmp_providers::Mock;
///
/// let req = ChatRequest { model: "echo".into(), messages: vec![Message::new("user", "Hello!")], ..Default::default() };
/// let route = Route::new("mock", "echo");
/// let call = Call::new(&route, "req_1");
/// let answer = Mock::new("mock").chat(&call, &UpstreamRequest::new(&req)).await.unwrap();
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

    fn enforces_deadlines(&self) -> bool {
        true // it answers at once
    }

    async fn chat(&self, _call: &Call<'_>, req: &UpstreamRequest<'_>) -> Result<Completion, Error> {
        Ok(self.answer(req).into())
    }

    async fn chat_stream(
        &self,
        _call: &Call<'_>,
        req: &UpstreamRequest<'_>,
    ) -> Result<ChunkStream, Error> {
        let chunks = self.answer(req).to_chunks(req.wants_stream_usage());
        Ok(futures_util::stream::iter(chunks.into_iter().map(Ok)).boxed())
    }

    async fn embeddings(
        &self,
        _call: &Call<'_>,
        req: &EmbeddingsRequest,
    ) -> Result<Embeddings, Error> {
        let dimensions = req
            .dimensions
            .and_then(|d| usize::try_from(d).ok())
            .filter(|d| *d > 0)
            .unwrap_or(16)
            .min(4096);
        let base64 = req.encoding_format.as_deref() == Some("base64");
        let texts: Vec<String> = match &req.input {
            Value::Array(items) if !items.iter().all(Value::is_number) => {
                items.iter().map(Value::to_string).collect()
            }
            other => vec![other.to_string()],
        };
        let data = texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let vector = unit_vector(text.as_bytes(), dimensions);
                let embedding = if base64 {
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Value::from(BASE64_STANDARD.encode(&bytes))
                } else {
                    Value::from(vector.iter().map(|x| f64::from(*x)).collect::<Vec<_>>())
                };
                Embedding {
                    object: "embedding".into(),
                    index: index as u64,
                    embedding,
                    extra: Extra::new(),
                }
            })
            .collect();
        Ok(EmbeddingsResponse {
            object: "list".into(),
            data,
            model: req.model.clone(),
            usage: Some(EmbeddingsUsage::new(req.estimate_tokens().max(1))),
            extra: Extra::new(),
        }
        .into())
    }
}

/// A deterministic unit vector for `seed`: each coordinate from a hash of the seed and its
/// position, then normalised.
fn unit_vector(seed: &[u8], dimensions: usize) -> Vec<f32> {
    let base = fnv1a(seed);
    let raw: Vec<f32> = (0..dimensions as u64)
        .map(|i| {
            let hash = fnv1a(&(base ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
            (hash >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    raw.iter().map(|x| x / norm).collect()
}

/// FNV-1a: a stable hash for deterministic ids.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
