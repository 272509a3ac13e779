//! OpenAI embeddings wire types: [`EmbeddingsRequest`], [`EmbeddingsResponse`], and
//! [`Embeddings`], a response with the provider's own bytes while it is unchanged.

use std::fmt;
use std::ops::{Deref, DerefMut};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::chat::request_error;
use crate::open_struct::open_struct;
use crate::{Error, Extra, JsonMap, Usage};

/// A `POST /v1/embeddings` request body.
///
/// `input` is kept as the client wrote it (a string, an array of strings, an array of
/// tokens or an array of token arrays); the validation middleware checks its shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EmbeddingsRequest {
    /// The model, `provider:model` at the proxy and the provider's own name upstream.
    pub model: String,
    /// What to embed. `Null` when the client sent none.
    pub input: Value,
    /// `float` or `base64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// The number of dimensions of each vector, for models that support it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<i64>,
    /// The end user's id, as OpenAI defines it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Client metadata for the proxy; **not** forwarded to providers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonMap>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

impl EmbeddingsRequest {
    /// Parses a request body, with the errors of [`ChatRequest::from_slice`](crate::ChatRequest::from_slice)
    /// (`invalid_json`, or `invalid_type` with the field's path as `param`).
    pub fn from_slice(body: &[u8]) -> Result<EmbeddingsRequest, Error> {
        if let Ok(req) = serde_json::from_slice(body) {
            return Ok(req);
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let req: EmbeddingsRequest =
            serde_path_to_error::deserialize(&mut de).map_err(request_error)?;
        de.end().map_err(|err| {
            Error::invalid_request(
                "invalid_json",
                None,
                format!("the request body is not valid JSON: {err}"),
            )
        })?;
        Ok(req)
    }

    /// The texts (or token arrays) to embed, one per input: a string counts as one.
    pub fn inputs(&self) -> usize {
        match &self.input {
            Value::Array(items) if items.iter().all(Value::is_number) => 1,
            Value::Array(items) => items.len(),
            Value::Null => 0,
            _ => 1,
        }
    }

    /// A rough count of the input's tokens (one per four bytes of text, one per token id).
    pub fn estimate_tokens(&self) -> u64 {
        fn count(value: &Value) -> u64 {
            match value {
                Value::String(text) => crate::estimate_tokens(text),
                Value::Number(_) => 1,
                Value::Array(items) => items.iter().map(count).sum(),
                _ => 0,
            }
        }
        count(&self.input)
    }
}

open_struct!(EmbeddingsRequest, expecting "struct EmbeddingsRequest", init EmbeddingsRequest::default(), {
    "model" => model,
    "input" => input,
    "encoding_format" => encoding_format,
    "dimensions" => dimensions,
    "user" => user,
    "metadata" => metadata,
});

/// A `POST /v1/embeddings` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    pub object: String,
    /// One vector per input, in input order.
    pub data: Vec<Embedding>,
    /// The model that answered, as the provider names it.
    pub model: String,
    /// Token usage (`prompt_tokens`, `total_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<EmbeddingsUsage>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One vector of an [`EmbeddingsResponse`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Embedding {
    /// Always `embedding`.
    pub object: String,
    /// The input it belongs to.
    pub index: u64,
    /// An array of floats, or a base64 string with `encoding_format: base64`.
    pub embedding: Value,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The usage of an embeddings call: there are no completion tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EmbeddingsUsage {
    /// Tokens in the input.
    pub prompt_tokens: u64,
    /// The same number.
    pub total_tokens: u64,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

impl EmbeddingsUsage {
    /// Usage for `prompt_tokens` input tokens.
    pub fn new(prompt_tokens: u64) -> EmbeddingsUsage {
        EmbeddingsUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
            extra: Extra::new(),
        }
    }

    /// As the [`Usage`] every operation reports (no completion tokens).
    pub fn to_usage(&self) -> Usage {
        Usage::new(self.prompt_tokens, 0)
    }
}

fn list_object() -> String {
    "list".to_string()
}

fn embedding_object() -> String {
    "embedding".to_string()
}

open_struct!(EmbeddingsResponse, expecting "struct EmbeddingsResponse", init EmbeddingsResponse { object: list_object(), ..EmbeddingsResponse::default() }, {
    "object" => object,
    "data" => data,
    "model" => model,
    "usage" => usage,
});
open_struct!(Embedding, expecting "struct Embedding", init Embedding { object: embedding_object(), ..Embedding::default() }, {
    "object" => object,
    "index" => index,
    "embedding" => embedding,
});
open_struct!(EmbeddingsUsage, expecting "struct EmbeddingsUsage", init EmbeddingsUsage::default(), {
    "prompt_tokens" => prompt_tokens,
    "total_tokens" => total_tokens,
});

/// An [`EmbeddingsResponse`] and, while nobody changed it, the provider's JSON: the client
/// gets those bytes (vectors are long; their numbers are never written out again).
/// The first mutable access drops them, as with [`Completion`](crate::Completion).
#[derive(Clone, Default, PartialEq)]
pub struct Embeddings {
    value: EmbeddingsResponse,
    wire: Option<Bytes>,
}

impl Embeddings {
    /// An answer with no wire bytes: it is written out from the value.
    pub fn new(value: EmbeddingsResponse) -> Embeddings {
        Embeddings { value, wire: None }
    }

    /// Parses OpenAI's JSON and keeps the bytes it came from.
    pub fn from_json(wire: Bytes) -> Result<Embeddings, serde_json::Error> {
        let value = serde_json::from_slice(&wire)?;
        Ok(Embeddings {
            value,
            wire: Some(wire),
        })
    }

    /// The bytes the value was read from, if it has not been changed since.
    pub fn wire(&self) -> Option<&Bytes> {
        self.wire.as_ref()
    }

    /// The answer as OpenAI's JSON: the wire bytes when there are some.
    pub fn to_json(&self) -> Bytes {
        match &self.wire {
            Some(wire) => wire.clone(),
            None => Bytes::from(
                serde_json::to_vec(&self.value).expect("an embeddings answer always serializes"),
            ),
        }
    }

    /// The value, without the wire bytes.
    pub fn into_inner(self) -> EmbeddingsResponse {
        self.value
    }
}

impl From<EmbeddingsResponse> for Embeddings {
    fn from(value: EmbeddingsResponse) -> Embeddings {
        Embeddings::new(value)
    }
}

impl Deref for Embeddings {
    type Target = EmbeddingsResponse;

    fn deref(&self) -> &EmbeddingsResponse {
        &self.value
    }
}

impl DerefMut for Embeddings {
    /// Mutable access: the wire bytes no longer describe the value, so they are dropped.
    fn deref_mut(&mut self) -> &mut EmbeddingsResponse {
        self.wire = None;
        &mut self.value
    }
}

impl fmt::Debug for Embeddings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Embeddings")
            .field("model", &self.value.model)
            .field("vectors", &self.value.data.len())
            .field("wire_bytes", &self.wire.as_ref().map(Bytes::len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_unknown_fields_and_count_inputs() {
        let req = EmbeddingsRequest::from_slice(
            br#"{"model":"openai:text-embedding-3-small","input":["a","bb"],"dimensions":8,"x":1}"#,
        )
        .unwrap();
        assert_eq!(req.inputs(), 2);
        assert_eq!(req.dimensions, Some(8));
        assert_eq!(req.extra["x"], 1);
        let tokens = EmbeddingsRequest::from_slice(br#"{"model":"m","input":[1,2,3]}"#).unwrap();
        assert_eq!((tokens.inputs(), tokens.estimate_tokens()), (1, 3));
        let err = EmbeddingsRequest::from_slice(br#"{"model":"m","input":"a","dimensions":"8"}"#)
            .unwrap_err();
        assert_eq!(err.param(), Some("dimensions"));
    }

    #[test]
    fn an_unchanged_answer_is_sent_as_received() {
        let json = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-2e-3]}],"model":"m","usage":{"prompt_tokens":2,"total_tokens":2}}"#;
        let mut answer = Embeddings::from_json(Bytes::from_static(json)).unwrap();
        assert_eq!(answer.to_json(), json.as_slice());
        assert_eq!(answer.usage.as_ref().unwrap().to_usage().prompt_tokens, 2);
        answer.model = "n".into();
        assert!(answer.wire().is_none());
    }
}
