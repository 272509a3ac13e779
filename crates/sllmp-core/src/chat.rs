//! OpenAI chat-completion wire types: request, response and stream chunk.
//!
//! Every struct keeps the fields it does not model in `extra` (read in one pass by a
//! hand-written visitor, written with `#[serde(flatten)]`), and
//! open-ended values (roles, finish reasons, tool types) are plain strings, so nothing a
//! client or a provider sends is lost on the way through.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::open_struct::open_struct;
use crate::{Error, Extra, JsonMap};

/// A `POST /v1/chat/completions` request body.
///
/// `model` and `messages` default to empty so that a missing field reaches the validation
/// middleware, which reports it with the right `param`; wrongly typed fields are rejected by
/// [`ChatRequest::from_slice`] with the JSON path of the field.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatRequest {
    /// The model, written `provider:model` when it reaches the proxy (`openai:gpt-4o`),
    /// and the provider's own name (`gpt-4o`) when it reaches a provider.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Whether to answer as a server-sent-event stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options (`include_usage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Sampling temperature, 0 to 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Number of choices, at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<i64>,
    /// Maximum tokens to generate (legacy name), at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// Maximum tokens to generate, reasoning included, at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<i64>,
    /// Presence penalty, -2 to 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Frequency penalty, -2 to 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// The end user's id, as OpenAI defines it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Client metadata for the proxy (feature selection, limit dimensions, logs).
    /// It is **not** forwarded to providers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonMap>,
    /// Every other field, forwarded to the provider untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatRequest {
    /// Parses a request body, reporting a malformed body as `invalid_json` and a wrongly
    /// typed field as `invalid_type` with `param` naming its path (`messages[0].role`).
    pub fn from_slice(body: &[u8]) -> Result<ChatRequest, Error> {
        // The fast paths: most requests are valid, and of a shape `fast` reads (several
        // times faster than serde). Only a failure is parsed again, with the path tracking
        // that names the field (it costs a third more). JSON is UTF-8: checking the whole
        // body at once is cheaper than having serde_json check each string in it.
        if let Ok(text) = std::str::from_utf8(body) {
            if let Some(req) = fast::request(text) {
                return Ok(req);
            }
            if let Ok(req) = serde_json::from_str(text) {
                return Ok(req);
            }
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let req: ChatRequest = serde_path_to_error::deserialize(&mut de).map_err(request_error)?;
        // Trailing garbage after the object is a syntax error too.
        de.end().map_err(|err| {
            Error::invalid_request(
                "invalid_json",
                None,
                format!("the request body is not valid JSON: {err}"),
            )
        })?;
        Ok(req)
    }

    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for the final usage chunk of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The text of the last `user` message, its text parts joined when it has several.
    pub fn last_user_text(&self) -> Option<String> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(Message::text)
    }
}

pub(crate) fn request_error(err: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return Error::invalid_request(
            "invalid_json",
            None,
            format!("the request body is not valid JSON: {inner}"),
        );
    }
    let text = strip_position(&inner.to_string());
    if path == "." {
        return Error::invalid_request(
            "invalid_type",
            None,
            format!("the request body must be a JSON object: {text}"),
        );
    }
    Error::invalid_request(
        "invalid_type",
        Some(path.clone()),
        format!("invalid type for '{path}': {text}"),
    )
}

/// serde_json appends " at line 1 column 42" to data errors; the `param` already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// `stream_options` of a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamOptions {
    /// Ask for a final chunk with empty `choices` carrying the usage of the whole stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Every other option.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One message of a conversation, or the message of a response choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Message {
    /// `system`, `developer`, `user`, `assistant`, `tool`, …
    pub role: String,
    /// A string, an array of content parts, or null. Always written out (as `null` when absent).
    pub content: Option<Value>,
    /// An optional participant name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls made by an assistant message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a `tool` message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Every other field (`refusal`, `audio`, `annotations`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

impl Message {
    /// A message with a role and text content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: Some(Value::String(content.into())),
            ..Message::default()
        }
    }

    /// The text of the message: the content string, or its `text` parts joined.
    pub fn text(&self) -> String {
        match &self.content {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        }
    }

    /// The length in bytes of [`Message::text`], without building it.
    pub fn text_len(&self) -> usize {
        match &self.content {
            Some(Value::String(text)) => text.len(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .map(str::len)
                .sum(),
            _ => 0,
        }
    }
}

/// A message's `content`: `null` and absent are the same.
struct NullAsNone(Option<Value>);

impl<'de> Deserialize<'de> for NullAsNone {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Ok(NullAsNone(match Value::deserialize(de)? {
            Value::Null => None,
            other => Some(other),
        }))
    }
}

/// A tool call of an assistant message.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ToolCall {
    /// The call id, echoed by the `tool` message that answers it.
    pub id: String,
    /// `function`, or another tool type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function called, for `function` tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCall>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

fn function_type() -> String {
    "function".to_string()
}

/// The function and JSON-encoded arguments of a tool call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// The arguments, a JSON document encoded as a string.
    pub arguments: String,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Token usage of a completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
    /// Details (`prompt_tokens_details`, `completion_tokens_details`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

impl Usage {
    /// Usage with the given prompt and completion tokens, and their total.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            extra: Extra::new(),
        }
    }
}

/// A non-streamed chat completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatCompletion {
    /// The completion id.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered, as the provider names it.
    pub model: String,
    /// The choices.
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Every other field (`system_fingerprint`, `service_tier`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

fn completion_object() -> String {
    "chat.completion".to_string()
}

/// One choice of a completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Choice {
    /// The choice's index.
    pub index: u32,
    /// The generated message.
    pub message: Message,
    /// Why generation stopped: `stop`, `length`, `tool_calls`, `content_filter`, … Always written.
    pub finish_reason: Option<String>,
    /// Every other field (`logprobs`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One chunk of a streamed completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatChunk {
    /// The completion id, the same in every chunk.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// The choice deltas; empty in the final usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// `None`: no `usage` field; `Some(None)`: `"usage": null` (what OpenAI sends on every
    /// chunk but the last when usage was asked for); `Some(Some(_))`: the usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    /// Every other field (`system_fingerprint`, `service_tier`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_string()
}

/// A chunk's `usage` when the key is present: `null` is `Some(None)`.
struct PresentOrNull(Option<Option<Usage>>);

impl<'de> Deserialize<'de> for PresentOrNull {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Option::<Usage>::deserialize(de).map(|usage| PresentOrNull(Some(usage)))
    }
}

impl ChatChunk {
    /// Parses one chunk of OpenAI's stream (a `data:` payload): by the fast reader when it
    /// has a shape it takes, else by serde_json, whose error it returns.
    pub fn from_json(text: &str) -> Result<ChatChunk, serde_json::Error> {
        match fast::chunk(text) {
            Some(chunk) => Ok(chunk),
            None => serde_json::from_str(text),
        }
    }

    /// The usage this chunk carries, if any.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref().and_then(Option::as_ref)
    }
}

/// One choice's delta in a chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChunkChoice {
    /// The choice's index.
    pub index: u32,
    /// What this chunk adds.
    pub delta: Delta,
    /// Set on the choice's last chunk. Always written (`null` before that).
    pub finish_reason: Option<String>,
    /// Every other field (`logprobs`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// The incremental part of a chunk's choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Delta {
    /// Present in the first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A piece of the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Pieces of tool calls, keyed by `index`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Every other field (`refusal`, `reasoning_content`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// A piece of a tool call in a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ToolCallDelta {
    /// Which tool call of the choice this piece belongs to.
    pub index: u32,
    /// The call id, in the call's first piece.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tool type, in the call's first piece.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The function name and a piece of the arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A piece of a function call in a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FunctionCallDelta {
    /// The function name, in the call's first piece.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A piece of the JSON-encoded arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

open_struct!(ChatRequest, expecting "struct ChatRequest", init ChatRequest::default(), {
    "model" => model,
    "messages" => messages,
    "stream" => stream,
    "stream_options" => stream_options,
    "temperature" => temperature,
    "top_p" => top_p,
    "n" => n,
    "max_tokens" => max_tokens,
    "max_completion_tokens" => max_completion_tokens,
    "presence_penalty" => presence_penalty,
    "frequency_penalty" => frequency_penalty,
    "user" => user,
    "metadata" => metadata,
});
open_struct!(StreamOptions, expecting "struct StreamOptions", init StreamOptions::default(), {
    "include_usage" => include_usage,
});
open_struct!(Message, expecting "a message object", init Message::default(), {
    "role" => role,
    "content" => content via NullAsNone,
    "name" => name,
    "tool_calls" => tool_calls,
    "tool_call_id" => tool_call_id,
});
open_struct!(ToolCall, expecting "struct ToolCall", init ToolCall { kind: function_type(), ..ToolCall::default() }, {
    "id" => id,
    "type" => kind,
    "function" => function,
});
open_struct!(FunctionCall, expecting "struct FunctionCall", init FunctionCall::default(), {
    "name" => name,
    "arguments" => arguments,
});
open_struct!(Usage, expecting "struct Usage", init Usage::default(), {
    "prompt_tokens" => prompt_tokens,
    "completion_tokens" => completion_tokens,
    "total_tokens" => total_tokens,
});
open_struct!(ChatCompletion, expecting "struct ChatCompletion", init ChatCompletion { object: completion_object(), ..ChatCompletion::default() }, {
    "id" => id,
    "object" => object,
    "created" => created,
    "model" => model,
    "choices" => choices,
    "usage" => usage,
});
open_struct!(Choice, expecting "struct Choice", init Choice::default(), {
    "index" => index,
    "message" => message,
    "finish_reason" => finish_reason,
});
open_struct!(ChatChunk, expecting "struct ChatChunk", init ChatChunk { object: chunk_object(), ..ChatChunk::default() }, {
    "id" => id,
    "object" => object,
    "created" => created,
    "model" => model,
    "choices" => choices,
    "usage" => usage via PresentOrNull,
});
open_struct!(ChunkChoice, expecting "struct ChunkChoice", init ChunkChoice::default(), {
    "index" => index,
    "delta" => delta,
    "finish_reason" => finish_reason,
});
open_struct!(Delta, expecting "struct Delta", init Delta::default(), {
    "role" => role,
    "content" => content,
    "tool_calls" => tool_calls,
});
open_struct!(ToolCallDelta, expecting "struct ToolCallDelta", init ToolCallDelta::default(), {
    "index" => index,
    "id" => id,
    "type" => kind,
    "function" => function,
});
open_struct!(FunctionCallDelta, expecting "struct FunctionCallDelta", init FunctionCallDelta::default(), {
    "name" => name,
    "arguments" => arguments,
});

pub(crate) mod fast;
#[cfg(test)]
mod tests;
