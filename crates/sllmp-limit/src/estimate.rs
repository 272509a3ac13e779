//! What a request will cost at most: its input tokens, estimated from the request, and its
//! output cap.

use sllmp_core::Request;

/// The output tokens assumed for a chat request that sets neither `max_completion_tokens`
/// nor `max_tokens`.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 1024;

/// The input and output tokens a request may use: input estimated from its messages (one
/// token per four bytes of text, plus three per message) and tools (their JSON, likewise);
/// output its `max_completion_tokens`, else `max_tokens`, else `default_output` (0 for
/// embeddings).
pub fn estimate_tokens(req: &Request, default_output: u64) -> (u64, u64) {
    let input = req.estimate_prompt_tokens();
    match req {
        Request::Chat(chat) => {
            let tools = chat
                .extra
                .get("tools")
                .map_or(0, |tools| (tools.to_string().len() as u64).div_ceil(4));
            let output = chat
                .max_completion_tokens
                .or(chat.max_tokens)
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(default_output);
            (input + tools, output)
        }
        Request::Embeddings(_) => (input, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sllmp_core::{ChatInput, EmbeddingsRequest};

    #[test]
    fn output_is_the_cap_the_client_set_or_the_default() {
        let chat = |json: &str| {
            Request::Chat(ChatInput::from_json(json.as_bytes().to_vec().into()).unwrap())
        };
        let plain = chat(r#"{"model":"m:x","messages":[{"role":"user","content":"12345678"}]}"#);
        assert_eq!(estimate_tokens(&plain, 1024), (2 + 3, 1024));
        let capped = chat(
            r#"{"model":"m:x","max_tokens":50,"max_completion_tokens":20,"messages":[{"role":"user","content":"12345678"}]}"#,
        );
        assert_eq!(estimate_tokens(&capped, 1024).1, 20);
        let tools = chat(
            r#"{"model":"m:x","messages":[{"role":"user","content":"1234"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#,
        );
        assert!(estimate_tokens(&tools, 0).0 > 4);
        let embeddings: EmbeddingsRequest =
            serde_json::from_str(r#"{"model":"m:e","input":["12345678","1234"]}"#).unwrap();
        assert_eq!(
            estimate_tokens(&Request::Embeddings(embeddings), 1024),
            (3, 0)
        );
    }
}
