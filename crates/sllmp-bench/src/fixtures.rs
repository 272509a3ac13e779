//! Realistic inputs for the micro-benchmarks: a chat request with tools, and an OpenAI
//! streaming transcript byte for byte in OpenAI's shape.

use serde_json::json;

/// A chat-completions request body of about 2 KB as agents send them: a system prompt, a
/// user turn, an assistant tool call and its result, a follow-up, two tools with JSON
/// schemas, sampling parameters and `stream_options`.
pub fn chat_request_body() -> Vec<u8> {
    let body = json!({
        "model": "openai:gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful travel assistant for an airline. Answer briefly, \
              quote prices in the customer's currency, and call a tool whenever live data is needed. \
              Never invent flight numbers; if a tool fails, say so and offer to try again."},
            {"role": "user", "content": "Hi! I need to get from Amsterdam to Lisbon next Friday morning, \
              and back on Sunday evening. What are my options, and is the weather going to be nice?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_7Yq2", "type": "function", "function": {"name": "search_flights",
                  "arguments": "{\"from\":\"AMS\",\"to\":\"LIS\",\"date\":\"2025-06-13\",\"time_window\":\"morning\"}"}},
                {"id": "call_8Zr3", "type": "function", "function": {"name": "get_weather",
                  "arguments": "{\"city\":\"Lisbon\",\"days\":3}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_7Yq2", "content": "[{\"flight\":\"TP663\",\"dep\":\"07:05\",\"arr\":\"09:00\",\"price_eur\":129},{\"flight\":\"KL1691\",\"dep\":\"09:40\",\"arr\":\"11:35\",\"price_eur\":164}]"},
            {"role": "tool", "tool_call_id": "call_8Zr3", "content": "{\"forecast\":[{\"day\":\"Fri\",\"high_c\":27,\"sky\":\"sunny\"},{\"day\":\"Sat\",\"high_c\":26,\"sky\":\"sunny\"},{\"day\":\"Sun\",\"high_c\":24,\"sky\":\"cloudy\"}]}"},
            {"role": "user", "content": [{"type": "text", "text": "The 07:05 one sounds good. Can you also check Sunday evening flights back?"}]}
        ],
        "tools": [
            {"type": "function", "function": {
                "name": "search_flights",
                "description": "Search scheduled flights between two airports on a date.",
                "parameters": {"type": "object", "properties": {
                    "from": {"type": "string", "description": "IATA code of the departure airport"},
                    "to": {"type": "string", "description": "IATA code of the arrival airport"},
                    "date": {"type": "string", "format": "date"},
                    "time_window": {"type": "string", "enum": ["morning", "afternoon", "evening", "any"]}
                }, "required": ["from", "to", "date"], "additionalProperties": false}}},
            {"type": "function", "function": {
                "name": "get_weather",
                "description": "The weather forecast for a city, a few days ahead.",
                "parameters": {"type": "object", "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7}
                }, "required": ["city"], "additionalProperties": false}}}
        ],
        "tool_choice": "auto",
        "temperature": 0.3,
        "max_tokens": 512,
        "user": "customer-1841",
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    serde_json::to_vec(&body).expect("a JSON value serializes")
}

/// An OpenAI streaming transcript of `content_chunks` content chunks: the role chunk, the
/// content chunks (a few words each), the finish chunk, the usage chunk and `[DONE]`, every
/// chunk with `"usage":null` as OpenAI sends them when usage was asked for.
pub fn openai_transcript(content_chunks: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        " The", " 07:05", " flight", " (TP663)", " lands", " at", " 09:00,", " and",
    ];
    let mut out = Vec::new();
    let mut frame = |chunk: serde_json::Value| {
        out.extend_from_slice(b"data: ");
        serde_json::to_writer(&mut out, &chunk).expect("a JSON value serializes");
        out.extend_from_slice(b"\n\n");
    };
    let head = |choices: serde_json::Value, usage: serde_json::Value| {
        json!({
            "id": "chatcmpl-BcD3fGh5jKl7mNp9qRs1tUv3wXy5z",
            "object": "chat.completion.chunk",
            "created": 1_749_000_000,
            "model": "gpt-4o-mini-2024-07-18",
            "service_tier": "default",
            "system_fingerprint": "fp_34a54ae93c",
            "choices": choices,
            "usage": usage,
        })
    };
    frame(head(
        json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]),
        json!(null),
    ));
    for i in 0..content_chunks {
        let piece = format!("{}{}", WORDS[i % WORDS.len()], WORDS[(i + 3) % WORDS.len()]);
        frame(head(
            json!([{"index": 0, "delta": {"content": piece}, "logprobs": null, "finish_reason": null}]),
            json!(null),
        ));
    }
    frame(head(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
        json!(null),
    ));
    frame(head(
        json!([]),
        json!({"prompt_tokens": 412, "completion_tokens": content_chunks * 2, "total_tokens": 412 + content_chunks * 2,
               "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                   "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}),
    ));
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

/// The `data:` payloads of a transcript's chunks (without `[DONE]`).
pub fn chunk_payloads(transcript: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(transcript)
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(str::to_string)
        .collect()
}

/// Read sizes between 1 and 4 KiB, in a fixed order, as a socket hands them over.
pub const READ_SIZES: [usize; 6] = [1024, 4096, 1536, 2048, 3072, 1200];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_have_the_intended_shape() {
        let body = chat_request_body();
        assert!((1800..2800).contains(&body.len()), "{}", body.len());
        let request = sllmp::ChatRequest::from_slice(&body).unwrap();
        sllmp::Validation::check(&request).unwrap();

        let transcript = openai_transcript(50);
        let payloads = chunk_payloads(&transcript);
        assert_eq!(payloads.len(), 53);
        for payload in &payloads {
            let _: sllmp::ChatChunk = serde_json::from_str(payload).unwrap();
        }
    }
}
