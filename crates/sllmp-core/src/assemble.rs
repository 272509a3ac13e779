//! Turning a stream of chunks into the completion it spells, and a completion into chunks.

use serde_json::Value;

use crate::{
    ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice, Delta, Extra, FunctionCall,
    FunctionCallDelta, Message, ToolCall, ToolCallDelta, Usage,
};

/// Accumulates streamed chunks into the [`ChatCompletion`] they add up to: content,
/// tool calls (arguments concatenated per call), finish reasons and usage.
///
/// ```
/// use sllmp_core::{ChatChunk, StreamAssembler};
///
/// let mut assembler = StreamAssembler::default();
/// for piece in ["Hel", "lo"] {
///     let chunk: ChatChunk = serde_json::from_value(serde_json::json!({
///         "id": "c1", "model": "m", "created": 1,
///         "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]
///     })).unwrap();
///     assembler.push(&chunk);
/// }
/// let completion = assembler.finish();
/// assert_eq!(completion.choices[0].message.text(), "Hello");
/// ```
#[derive(Debug, Default, Clone)]
pub struct StreamAssembler {
    id: String,
    created: u64,
    model: String,
    extra: Extra,
    choices: Vec<ChoiceState>,
    usage: Option<Usage>,
    chunks: usize,
}

#[derive(Debug, Default, Clone)]
struct ChoiceState {
    index: u32,
    role: Option<String>,
    content: Option<String>,
    tool_calls: Vec<ToolCallState>,
    finish_reason: Option<String>,
    extra: Extra,
}

#[derive(Debug, Default, Clone)]
struct ToolCallState {
    index: u32,
    id: String,
    kind: Option<String>,
    name: String,
    arguments: String,
}

impl StreamAssembler {
    /// Adds one chunk.
    pub fn push(&mut self, chunk: &ChatChunk) {
        self.chunks += 1;
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
            self.created = chunk.created;
            self.model.clone_from(&chunk.model);
            self.extra.clone_from(&chunk.extra);
        }
        if let Some(usage) = chunk.usage() {
            self.usage = Some(usage.clone());
        }
        for choice in &chunk.choices {
            self.push_choice(choice);
        }
    }

    fn push_choice(&mut self, choice: &ChunkChoice) {
        let state = match self
            .choices
            .iter_mut()
            .position(|c| c.index == choice.index)
        {
            Some(at) => &mut self.choices[at],
            None => {
                self.choices.push(ChoiceState {
                    index: choice.index,
                    ..ChoiceState::default()
                });
                self.choices.last_mut().expect("just pushed")
            }
        };
        let delta = &choice.delta;
        if let Some(role) = &delta.role {
            state.role = Some(role.clone());
        }
        if let Some(piece) = &delta.content {
            state
                .content
                .get_or_insert_with(String::new)
                .push_str(piece);
        }
        for (key, value) in &delta.extra {
            // String fields such as `refusal` or `reasoning_content` arrive in pieces too.
            match (state.extra.get_mut(key), value) {
                (Some(Value::String(acc)), Value::String(piece)) => acc.push_str(piece),
                (Some(_), Value::Null) => {}
                _ => {
                    state.extra.insert(key.clone(), value.clone());
                }
            }
        }
        for call in delta.tool_calls.iter().flatten() {
            let entry = match state
                .tool_calls
                .iter_mut()
                .position(|t| t.index == call.index)
            {
                Some(at) => &mut state.tool_calls[at],
                None => {
                    state.tool_calls.push(ToolCallState {
                        index: call.index,
                        ..ToolCallState::default()
                    });
                    state.tool_calls.last_mut().expect("just pushed")
                }
            };
            if let Some(id) = &call.id {
                entry.id.clone_from(id);
            }
            if let Some(kind) = &call.kind {
                entry.kind = Some(kind.clone());
            }
            if let Some(function) = &call.function {
                if let Some(name) = &function.name {
                    entry.name.push_str(name);
                }
                if let Some(arguments) = &function.arguments {
                    entry.arguments.push_str(arguments);
                }
            }
        }
        if choice.finish_reason.is_some() {
            state.finish_reason.clone_from(&choice.finish_reason);
        }
    }

    /// How many chunks were pushed.
    pub fn chunk_count(&self) -> usize {
        self.chunks
    }

    /// The usage reported so far, if any.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The text generated so far, all choices together.
    pub fn text_len(&self) -> usize {
        self.choices
            .iter()
            .map(|c| {
                c.content.as_ref().map_or(0, String::len)
                    + c.tool_calls
                        .iter()
                        .map(|t| t.arguments.len())
                        .sum::<usize>()
            })
            .sum()
    }

    /// The completion the chunks add up to.
    pub fn finish(&self) -> ChatCompletion {
        let mut choices: Vec<Choice> = self
            .choices
            .iter()
            .map(|state| {
                let tool_calls: Vec<ToolCall> = state
                    .tool_calls
                    .iter()
                    .map(|call| ToolCall {
                        id: call.id.clone(),
                        kind: call.kind.clone().unwrap_or_else(|| "function".to_string()),
                        function: Some(FunctionCall {
                            name: call.name.clone(),
                            arguments: call.arguments.clone(),
                            extra: Extra::new(),
                        }),
                        extra: Extra::new(),
                    })
                    .collect();
                Choice {
                    index: state.index,
                    message: Message {
                        role: state
                            .role
                            .clone()
                            .unwrap_or_else(|| "assistant".to_string()),
                        content: state.content.clone().map(Value::String),
                        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                        extra: state.extra.clone(),
                        ..Message::default()
                    },
                    finish_reason: state.finish_reason.clone(),
                    extra: Extra::new(),
                }
            })
            .collect();
        choices.sort_by_key(|c| c.index);
        ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".to_string(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: self.usage.clone(),
            extra: self.extra.clone(),
        }
    }

    /// Usage for a stream that ended without reporting it (the client went away, or the
    /// provider failed): `prompt_tokens` (see [`estimate_prompt_tokens`]) and the completion
    /// estimated from the text received. Reported usage is returned as is.
    pub fn usage_or_estimate(&self, prompt_tokens: u64) -> Usage {
        match &self.usage {
            Some(usage) => usage.clone(),
            None => Usage::new(prompt_tokens, (self.text_len() as u64).div_ceil(4)),
        }
    }
}

/// A rough count of the prompt tokens of `request`, for estimates only.
pub fn estimate_prompt_tokens(request: &ChatRequest) -> u64 {
    request
        .messages
        .iter()
        .map(|m| (m.text_len() as u64).div_ceil(4) + 3)
        .sum()
}

/// A rough token count for `text` (one token per four bytes), for estimates only.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

impl ChatCompletion {
    /// The chunks a provider would have streamed for this completion: a role chunk, the
    /// content in word-sized pieces, tool calls, a finish chunk per choice, and — when
    /// `include_usage` — a final chunk with empty `choices` and the usage (the other chunks
    /// then carry `"usage": null`, as OpenAI's do).
    pub fn to_chunks(&self, include_usage: bool) -> Vec<ChatChunk> {
        let usage_field = include_usage.then_some(None);
        let chunk = |choices: Vec<ChunkChoice>| ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_string(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: usage_field.clone(),
            extra: self.extra.clone(),
        };
        let choice = |index: u32, delta: Delta, finish_reason: Option<String>| ChunkChoice {
            index,
            delta,
            finish_reason,
            extra: Extra::new(),
        };
        let mut chunks = Vec::new();
        for c in &self.choices {
            chunks.push(chunk(vec![choice(
                c.index,
                Delta {
                    role: Some(c.message.role.clone()),
                    content: Some(String::new()),
                    ..Delta::default()
                },
                None,
            )]));
            let text = c.message.text();
            for piece in split_words(&text) {
                chunks.push(chunk(vec![choice(
                    c.index,
                    Delta {
                        content: Some(piece.to_string()),
                        ..Delta::default()
                    },
                    None,
                )]));
            }
            for (i, call) in c.message.tool_calls.iter().flatten().enumerate() {
                chunks.push(chunk(vec![choice(
                    c.index,
                    Delta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index: i as u32,
                            id: Some(call.id.clone()),
                            kind: Some(call.kind.clone()),
                            function: call.function.as_ref().map(|f| FunctionCallDelta {
                                name: Some(f.name.clone()),
                                arguments: Some(f.arguments.clone()),
                                extra: Extra::new(),
                            }),
                            extra: Extra::new(),
                        }]),
                        ..Delta::default()
                    },
                    None,
                )]));
            }
            chunks.push(chunk(vec![choice(
                c.index,
                Delta::default(),
                Some(
                    c.finish_reason
                        .clone()
                        .unwrap_or_else(|| "stop".to_string()),
                ),
            )]));
        }
        if include_usage {
            let mut last = chunk(Vec::new());
            last.usage = Some(Some(self.usage.clone().unwrap_or_default()));
            chunks.push(last);
        }
        chunks
    }
}

/// Splits text into pieces that each start at a word boundary and keep their leading space.
fn split_words(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (at, ch) in text.char_indices() {
        if ch == ' ' && at > start {
            pieces.push(&text[start..at]);
            start = at;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn assembles_content_and_tool_calls_across_chunks() {
        let frames = [
            json!({"id":"c","created":7,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}),
            json!({"id":"c","created":7,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}),
            json!({"id":"c","created":7,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]}),
            json!({"id":"c","created":7,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
            json!({"id":"c","created":7,"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14}}),
        ];
        let mut assembler = StreamAssembler::default();
        for frame in frames {
            assembler.push(&serde_json::from_value(frame).unwrap());
        }
        let completion = assembler.finish();
        let value = serde_json::to_value(&completion).unwrap();
        assert_eq!(
            value,
            json!({
                "id":"c","object":"chat.completion","created":7,"model":"m",
                "choices":[{"index":0,"finish_reason":"tool_calls","message":{
                    "role":"assistant","content":null,
                    "tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]
                }}],
                "usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14}
            })
        );
    }

    #[test]
    fn to_chunks_reassembles_to_the_same_completion() {
        let completion: ChatCompletion = serde_json::from_value(json!({
            "id":"c","object":"chat.completion","created":7,"model":"m",
            "choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"Hello there world"}}],
            "usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}
        }))
        .unwrap();
        let chunks = completion.to_chunks(true);
        assert_eq!(chunks.len(), 1 + 3 + 1 + 1);
        assert_eq!(chunks[0].usage, Some(None));
        let mut assembler = StreamAssembler::default();
        chunks.iter().for_each(|c| assembler.push(c));
        assert_eq!(assembler.finish(), completion);
    }

    #[test]
    fn estimates_usage_when_the_stream_reported_none() {
        let mut assembler = StreamAssembler::default();
        assembler.push(
            &serde_json::from_value(
                json!({"id":"c","choices":[{"index":0,"delta":{"content":"12345678"}}]}),
            )
            .unwrap(),
        );
        let request: ChatRequest = serde_json::from_value(
            json!({"model":"m","messages":[{"role":"user","content":"abcd"}]}),
        )
        .unwrap();
        assert_eq!(
            assembler.usage_or_estimate(estimate_prompt_tokens(&request)),
            Usage::new(4, 2)
        );
    }
}
