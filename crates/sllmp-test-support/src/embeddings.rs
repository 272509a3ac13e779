//! The default answer to an embeddings request: OpenAI's shape, deterministic vectors.

use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::server::{error_response, json_response};

/// Dimensions of a vector when the request names none.
const DEFAULT_DIMENSIONS: usize = 8;

/// The parts of an embeddings request the mock looks at.
#[derive(Deserialize)]
struct EmbeddingsRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    dimensions: Option<usize>,
}

#[derive(Serialize)]
struct EmbeddingsResponse<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vec<f64>,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// Answers an embeddings request no scripted reply claimed: one vector per input (a string
/// or a token array counts as one), `dimensions` long (8 by default), each coordinate
/// derived from the input's JSON text and its position, so equal inputs get equal vectors;
/// `prompt_tokens` is the inputs' JSON characters divided by 4, rounded up.
pub(crate) fn default_reply(body: &[u8]) -> Response {
    let request: EmbeddingsRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("mock upstream cannot parse the request: {err}"),
                None,
            );
        }
    };
    let inputs: Vec<String> = match &request.input {
        Value::Array(items) if !items.iter().all(Value::is_number) => {
            items.iter().map(Value::to_string).collect()
        }
        Value::Null => Vec::new(),
        other => vec![other.to_string()],
    };
    let dimensions = request.dimensions.unwrap_or(DEFAULT_DIMENSIONS).min(4096);
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| Embedding {
            object: "embedding",
            index,
            embedding: vector(text, dimensions),
        })
        .collect();
    let chars: usize = inputs.iter().map(|text| text.chars().count()).sum();
    let tokens = chars.div_ceil(4) as u64;
    json_response(
        StatusCode::OK,
        &EmbeddingsResponse {
            object: "list",
            data,
            model: request.model.as_deref().unwrap_or("mock-embedding"),
            usage: Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        },
    )
}

/// Coordinates in [-1, 1) with three decimals, from an FNV-1a hash of `text` and the
/// position.
fn vector(text: &str, dimensions: usize) -> Vec<f64> {
    (0..dimensions)
        .map(|i| {
            let hash = text
                .bytes()
                .chain((i as u64).to_le_bytes())
                .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
                    (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
                });
            (hash % 2000) as f64 / 1000.0 - 1.0
        })
        .collect()
}
