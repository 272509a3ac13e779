//! The vocabulary every SLLMP crate shares: OpenAI-shaped chat types, the one [`Error`] type,
//! the [`Provider`] trait and [`Secret`].
//!
//! Depend on this crate (not on `sllmp`) when you write a provider adapter or a middleware
//! that should not pull in the server. It does no IO and knows nothing of tokio, axum,
//! reqwest, Redis or YAML.
//!
//! The chat types are **lossless**: every field the proxy does not model is kept in an
//! [`Extra`] map, in order, and written back out, so a parameter OpenAI ships tomorrow passes through
//! the proxy today. Better still, while nothing changes them, bytes are forwarded as they
//! came: a [`ChatInput`] keeps the client's JSON (a provider sends it with only the routed
//! members rewritten, [`UpstreamRequest::to_json`]) and a [`Completion`] the provider's.
//!
//! ```
//! use sllmp_core::ChatRequest;
//!
//! let body = br#"{"model":"openai:gpt-4o","messages":[{"role":"user","content":"hi"}],"new_param":1}"#;
//! let req = ChatRequest::from_slice(body).expect("a valid request");
//! assert_eq!(req.model, "openai:gpt-4o");
//! assert_eq!(req.extra["new_param"], 1);
//! // Unknown fields survive the round trip.
//! let out = serde_json::to_value(&req).unwrap();
//! assert_eq!(out["new_param"], 1);
//! ```

mod assemble;
mod call;
mod chat;
mod chat_input;
mod completion;
mod embeddings;
mod error;
mod extra;
mod open_struct;
mod operation;
mod provider;
mod route;
mod secret;
mod splice;

pub use assemble::{StreamAssembler, estimate_prompt_tokens, estimate_tokens};
pub use call::Call;
pub use chat::{
    ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice, Delta, FunctionCall,
    FunctionCallDelta, Message, StreamOptions, ToolCall, ToolCallDelta, Usage,
};
pub use chat_input::{ChatInput, Routed, UpstreamRequest};
pub use completion::Completion;
pub use embeddings::{
    Embedding, Embeddings, EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage,
};
pub use error::{Error, ErrorBody, ErrorKind};
pub use extra::{Extra, ExtraIntoIter, ExtraIter};
pub use operation::{Operation, Request, Response};
pub use provider::{ChunkStream, ModelInfo, Provider, ProviderRegistry, unsupported};
pub use route::Route;
pub use secret::Secret;

/// A JSON object (`metadata`, provider options).
pub type JsonMap = serde_json::Map<String, serde_json::Value>;
