use serde_json::json;

use super::*;

fn parse(value: serde_json::Value) -> Result<ChatRequest, Error> {
    ChatRequest::from_slice(value.to_string().as_bytes())
}

#[test]
fn unknown_fields_survive_a_round_trip() {
    let body = json!({
        "model": "openai:gpt-4o",
        "messages": [{"role": "user", "content": "hi", "future_message_field": true}],
        "reasoning_effort": "high",
        "response_format": {"type": "json_object"},
        "stream_options": {"include_usage": true, "future_option": 1}
    });
    let req = parse(body.clone()).unwrap();
    assert_eq!(serde_json::to_value(&req).unwrap(), body);
}

#[test]
fn not_json_is_invalid_json() {
    let err = ChatRequest::from_slice(b"{not json").unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(err.code(), Some("invalid_json"));
    assert_eq!(err.param(), None);
}

#[test]
fn a_non_object_body_is_invalid_type() {
    let err = ChatRequest::from_slice(b"[1,2]").unwrap_err();
    assert_eq!(err.code(), Some("invalid_type"));
    assert_eq!(
        err.message(),
        "the request body must be a JSON object: invalid type: sequence, expected struct ChatRequest"
    );
}

#[test]
fn wrongly_typed_fields_name_their_path() {
    let err = parse(json!({"model": "m", "messages": [], "temperature": "hot"})).unwrap_err();
    assert_eq!(err.code(), Some("invalid_type"));
    assert_eq!(err.param(), Some("temperature"));
    assert_eq!(
        err.message(),
        "invalid type for 'temperature': invalid type: string \"hot\", expected f64"
    );

    let err = parse(json!({"model": "m", "messages": ["hi"]})).unwrap_err();
    assert_eq!(err.param(), Some("messages[0]"));
    assert_eq!(
        err.message(),
        "invalid type for 'messages[0]': invalid type: string \"hi\", expected a message object"
    );

    let err = parse(json!({"model": "m", "messages": [{"role": 1, "content": "x"}]})).unwrap_err();
    assert_eq!(err.param(), Some("messages[0].role"));
}

#[test]
fn a_body_that_is_not_utf8_is_invalid_json_with_its_position() {
    let err = ChatRequest::from_slice(b"{\"model\":\"m\xff\",\"messages\":[]}").unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(err.code(), Some("invalid_json"));
    assert_eq!(
        err.message(),
        "the request body is not valid JSON: invalid unicode code point at line 1 column 12"
    );
    // UTF-8 beyond ASCII is, of course, fine.
    let req =
        ChatRequest::from_slice("{\"model\":\"m\",\"messages\":[],\"note\":\"Zoë 🦀\"}".as_bytes())
            .unwrap();
    assert_eq!(req.extra["note"], "Zoë 🦀");
}

#[test]
fn trailing_garbage_is_invalid_json() {
    let err = ChatRequest::from_slice(br#"{"model":"m"} x"#).unwrap_err();
    assert_eq!(err.code(), Some("invalid_json"));
}

#[test]
fn chunk_usage_distinguishes_absent_null_and_present() {
    let absent: ChatChunk = serde_json::from_value(json!({"id": "c", "choices": []})).unwrap();
    assert_eq!(absent.usage, None);
    let null: ChatChunk =
        serde_json::from_value(json!({"id": "c", "choices": [], "usage": null})).unwrap();
    assert_eq!(null.usage, Some(None));
    assert_eq!(serde_json::to_value(&null).unwrap()["usage"], json!(null));
    let present: ChatChunk = serde_json::from_value(
        json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}),
    )
    .unwrap();
    assert_eq!(present.usage(), Some(&Usage::new(1, 2)));
}

#[test]
fn openai_chunks_round_trip_byte_for_byte() {
    let raw = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#;
    let chunk: ChatChunk = serde_json::from_str(raw).unwrap();
    let back: serde_json::Value = serde_json::to_value(&chunk).unwrap();
    assert_eq!(
        back,
        serde_json::from_str::<serde_json::Value>(raw).unwrap()
    );
}

#[test]
fn escaped_keys_are_matched_and_kept() {
    // `\u006dodel` is `model` written with an escape: serde_json hands it over as an owned
    // string rather than a slice of the input; both must be recognised.
    let body = br#"{"\u006dodel":"openai:gpt-4o","messages":[],"x\"y":1,"zeta":2,"alpha":3}"#;
    let req = ChatRequest::from_slice(body).unwrap();
    assert_eq!(req.model, "openai:gpt-4o");
    let keys: Vec<&str> = req.extra.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["x\"y", "zeta", "alpha"],
        "unknown keys keep their order"
    );
}

#[test]
fn missing_fields_take_their_defaults() {
    let call: ToolCall = serde_json::from_str(r#"{"id":"call_1"}"#).unwrap();
    assert_eq!(call.kind, "function");
    let completion: ChatCompletion = serde_json::from_str("{}").unwrap();
    assert_eq!(completion.object, "chat.completion");
    let chunk: ChatChunk = serde_json::from_str("{}").unwrap();
    assert_eq!(chunk.object, "chat.completion.chunk");
    let message: Message = serde_json::from_str(r#"{"role":"assistant","content":null}"#).unwrap();
    assert_eq!(message.content, None);
    let json = serde_json::to_string(&message).unwrap();
    assert_eq!(json, r#"{"role":"assistant","content":null}"#);
}

#[test]
fn a_wrongly_typed_nested_field_names_its_path() {
    let err = ChatRequest::from_slice(
        br#"{"model":"m","messages":[{"role":"user","content":"hi","tool_calls":[{"function":{"name":7}}]}]}"#,
    )
    .unwrap_err();
    assert_eq!(err.param(), Some("messages[0].tool_calls[0].function.name"));
}
