//! The default behaviour: answer a chat-completion request the way OpenAI
//! does, byte for byte in shape, steered by the request's `"mock"` object.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::server::{
    ErrorBody, Shared, broken_response, error_response, injected_error, json_response,
};
use crate::sse;

/// `system_fingerprint` of every reply.
const FINGERPRINT: &str = "fp_mock";
/// Model name used when the request has none.
const DEFAULT_MODEL: &str = "mock-model";
/// Content chunks of a streamed reply when `mock.chunks` is absent.
const DEFAULT_CHUNKS: u32 = 5;

/// The parts of a chat-completion request the mock looks at; everything else
/// is ignored.
#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    mock: Option<MockControl>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<MessageText>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// The request's `"mock"` control object; see the crate docs.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MockControl {
    latency_ms: Option<u64>,
    chunks: Option<u32>,
    chunk_interval_ms: Option<u64>,
    status: Option<u16>,
    fail_after_chunks: Option<u32>,
    content: Option<String>,
}

/// The text of a message's `content`: the string itself, or the `text` of
/// every content part joined without separator (as `sllmp-core` does).
#[derive(Default)]
struct MessageText(String);

impl<'de> Deserialize<'de> for MessageText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<MessageText, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = MessageText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, an array of content parts, or null")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<MessageText, E> {
                Ok(MessageText(text.to_owned()))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<MessageText, E> {
                Ok(MessageText(text))
            }

            fn visit_unit<E: de::Error>(self) -> Result<MessageText, E> {
                Ok(MessageText::default())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut parts: A) -> Result<MessageText, A::Error> {
                let mut text = String::new();
                while let Some(part) = parts.next_element::<ContentPart>()? {
                    if let Some(part_text) = part.text {
                        text.push_str(&part_text);
                    }
                }
                Ok(MessageText(text))
            }
        }

        deserializer.deserialize_any(TextVisitor)
    }
}

/// One element of an array `content`; only its `text` matters.
#[derive(Deserialize)]
struct ContentPart {
    #[serde(default)]
    text: Option<String>,
}

/// The `usage` object.
#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

/// A non-streamed reply, fields in OpenAI's order.
#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: Usage,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: (),
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: (),
}

/// One `chat.completion.chunk`, fields in OpenAI's order.
#[derive(Serialize)]
struct ChatCompletionChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent without `include_usage`; `null` on ordinary chunks with it; the
    /// usage object on the final chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: (),
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Delta<'a> {
    /// First chunk: `{"role":"assistant","content":"","refusal":null}`.
    Role {
        role: &'static str,
        content: &'static str,
        refusal: (),
    },
    /// `{"content":piece}`.
    Content { content: &'a str },
    /// Finish chunk: `{}`.
    Empty {},
}

/// Answers a chat-completions request that no scripted reply claimed.
pub(crate) async fn default_reply(shared: &Arc<Shared>, body: &[u8]) -> Response {
    let request: ChatRequest = match serde_json::from_slice(body) {
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
    let mut control = request.mock.unwrap_or_default();
    let latency = Duration::from_millis(control.latency_ms.unwrap_or(0));

    // Status injection.
    if let Some(status) = control.status.filter(|&status| status != 200) {
        let status = match StatusCode::from_u16(status) {
            Ok(status) if (200..600).contains(&status.as_u16()) => status,
            _ => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &format!("mock.status must be within 200..=599, not {status}"),
                    None,
                );
            }
        };
        if !shared.sleep(latency).await {
            return broken_response();
        }
        return injected_error(status);
    }

    // Usage counts the prompt before `content` may take the last message.
    let prompt_chars: usize = request
        .messages
        .iter()
        .map(|m| m.content.as_ref().map_or(0, |c| c.0.chars().count()))
        .sum();
    let content = control.content.take().unwrap_or_else(|| {
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role.as_deref() == Some("user"))
            .and_then(|m| m.content.as_ref())
            .map_or("", |c| c.0.as_str());
        format!("Mock reply to: {last_user}")
    });
    let prompt_tokens = tokens(prompt_chars) + 3 * request.messages.len() as u64;
    let completion_tokens = tokens(content.chars().count());
    let usage = Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    };

    let reply = Completion {
        id: shared.next_completion_id(),
        created: unix_now(),
        model: request.model.as_deref().unwrap_or(DEFAULT_MODEL),
        content: &content,
        usage,
    };

    if request.stream == Some(true) {
        let include_usage = request
            .stream_options
            .and_then(|options| options.include_usage)
            .unwrap_or(false);
        let frames = reply.frames(&control, latency, include_usage);
        sse::response(shared, frames)
    } else {
        if !shared.sleep(latency).await {
            return broken_response();
        }
        json_response(StatusCode::OK, &reply.completion())
    }
}

/// `chars / 4`, rounded up.
fn tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// What a default reply says, in either format.
struct Completion<'a> {
    id: String,
    created: u64,
    model: &'a str,
    content: &'a str,
    usage: Usage,
}

impl Completion<'_> {
    /// The non-streamed `chat.completion` object.
    fn completion(&self) -> ChatCompletion<'_> {
        ChatCompletion {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: self.model,
            choices: [CompletionChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: self.content,
                    refusal: (),
                },
                logprobs: (),
                finish_reason: "stop",
            }],
            usage: self.usage,
            system_fingerprint: FINGERPRINT,
        }
    }

    /// One `data: <chunk>\n\n` frame.
    fn chunk(&self, choices: &[ChunkChoice<'_>], usage: Option<Option<Usage>>) -> Bytes {
        sse_data(&ChatCompletionChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model,
            system_fingerprint: FINGERPRINT,
            choices,
            usage,
        })
    }

    /// The whole streamed reply as `(delay before, frame)` pairs.
    fn frames(
        &self,
        control: &MockControl,
        latency: Duration,
        include_usage: bool,
    ) -> Vec<(Duration, Bytes)> {
        let interval = Duration::from_millis(control.chunk_interval_ms.unwrap_or(0));
        let pieces = split_even(self.content, control.chunks.unwrap_or(DEFAULT_CHUNKS));
        // A failure point past the last piece fails right after it.
        let fail_after = control
            .fail_after_chunks
            .map(|k| (k as usize).min(pieces.len()));
        // With include_usage every ordinary chunk says `"usage":null`.
        let usage_null = include_usage.then_some(None);
        let choice = |delta, finish_reason| ChunkChoice {
            index: 0,
            delta,
            logprobs: (),
            finish_reason,
        };

        let mut frames = Vec::with_capacity(pieces.len() + 4);
        let role = Delta::Role {
            role: "assistant",
            content: "",
            refusal: (),
        };
        frames.push((latency, self.chunk(&[choice(role, None)], usage_null)));
        for (i, piece) in pieces.iter().enumerate() {
            let delay = if i == 0 { Duration::ZERO } else { interval };
            if fail_after == Some(i) {
                frames.push((delay, mid_stream_error()));
                return frames;
            }
            let delta = Delta::Content { content: piece };
            frames.push((delay, self.chunk(&[choice(delta, None)], usage_null)));
        }
        if fail_after.is_some() {
            // Only reached when failing after the last piece.
            let delay = if pieces.is_empty() {
                Duration::ZERO
            } else {
                interval
            };
            frames.push((delay, mid_stream_error()));
            return frames;
        }
        let finish = choice(Delta::Empty {}, Some("stop"));
        frames.push((Duration::ZERO, self.chunk(&[finish], usage_null)));
        if include_usage {
            frames.push((Duration::ZERO, self.chunk(&[], Some(Some(self.usage)))));
        }
        frames.push((Duration::ZERO, Bytes::from_static(b"data: [DONE]\n\n")));
        frames
    }
}

/// The error event of `fail_after_chunks`.
fn mid_stream_error() -> Bytes {
    sse_data(&ErrorBody::new(
        "server_error",
        "mock upstream failed mid-stream",
        None,
    ))
}

/// `data: <compact json>\n\n`.
fn sse_data(value: &impl Serialize) -> Bytes {
    let mut frame = Vec::with_capacity(256);
    frame.extend_from_slice(b"data: ");
    // Serializing these plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut frame, value);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// Splits `text` into `pieces` parts at char boundaries, as evenly as
/// possible (earlier parts get the extra chars); `0` counts as `1`. When there
/// are more pieces than chars, the trailing pieces are empty.
fn split_even(text: &str, pieces: u32) -> Vec<&str> {
    let pieces = pieces.max(1) as usize;
    let chars = text.chars().count();
    let (base, extra) = (chars / pieces, chars % pieces);
    let mut out = Vec::with_capacity(pieces);
    let mut rest = text;
    for i in 0..pieces {
        let take = base + usize::from(i < extra);
        let end = rest
            .char_indices()
            .nth(take)
            .map_or(rest.len(), |(at, _)| at);
        let (piece, tail) = rest.split_at(end);
        out.push(piece);
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split_even;

    #[test]
    fn splits_evenly_at_char_boundaries() {
        assert_eq!(split_even("abcdefg", 3), ["abc", "de", "fg"]);
        assert_eq!(split_even("héllo", 2), ["hél", "lo"]);
        assert_eq!(split_even("ab", 4), ["a", "b", "", ""]);
        assert_eq!(split_even("abc", 0), ["abc"]);
        assert_eq!(split_even("", 2), ["", ""]);
    }
}
