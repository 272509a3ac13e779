//! The validation middleware, always the first of every pipeline.

use serde_json::Value;
use sllmp_core::{ChatRequest, EmbeddingsRequest, Error, Message, Request};

use crate::{Ctx, Flow, HookSet, Middleware};

/// Rejects requests a provider would reject anyway, before any is called, with OpenAI's
/// `invalid_request_error` and `param` naming the field.
///
/// Rules: `model` is a non-empty string; `messages` is a non-empty array of message objects,
/// each with a `role` and with `content` unless it is an assistant message carrying
/// `tool_calls`; `content` is a string or an array of parts; `temperature` is within 0–2,
/// `top_p` 0–1, `presence_penalty` and `frequency_penalty` −2–2; `n`, `max_tokens` and
/// `max_completion_tokens` are at least 1. Wrongly typed fields never get this far: parsing
/// rejects them (`invalid_type`).
///
/// Embeddings ([`Validation::check_embeddings`]): `model` is a non-empty string; `input` is a
/// non-empty string, a non-empty array of non-empty strings, a non-empty array of token ids
/// (integers from 0), or a non-empty array of such arrays; `dimensions` is at least 1;
/// `encoding_format` is `float` or `base64`.
///
/// ```
/// use sllmp_core::{ChatRequest, Message};
/// use sllmp_pipeline::Validation;
///
/// let mut req = ChatRequest { model: "mock:echo".into(), messages: vec![Message::new("user", "hi")], ..Default::default() };
/// assert!(Validation::check(&req).is_ok());
/// req.temperature = Some(2.5);
/// let err = Validation::check(&req).unwrap_err();
/// assert_eq!(err.param(), Some("temperature"));
/// assert_eq!(err.message(), "Invalid value for 'temperature': 2.5 is not between 0 and 2.");
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Validation;

impl Validation {
    /// Checks `req` against the rules above.
    pub fn check(req: &ChatRequest) -> Result<(), Error> {
        if req.model.is_empty() {
            return Err(missing("model"));
        }
        if req.messages.is_empty() {
            return Err(Error::invalid_request(
                "missing_required_parameter",
                Some("messages".into()),
                "Missing required parameter: 'messages' must be a non-empty array of messages.",
            ));
        }
        for (index, message) in req.messages.iter().enumerate() {
            check_message(index, message)?;
        }
        range_f64("temperature", req.temperature, 0.0, 2.0)?;
        range_f64("top_p", req.top_p, 0.0, 1.0)?;
        range_f64("presence_penalty", req.presence_penalty, -2.0, 2.0)?;
        range_f64("frequency_penalty", req.frequency_penalty, -2.0, 2.0)?;
        at_least_one("n", req.n)?;
        at_least_one("max_tokens", req.max_tokens)?;
        at_least_one("max_completion_tokens", req.max_completion_tokens)?;
        Ok(())
    }
}

impl Validation {
    /// Checks an embeddings request against the rules above.
    pub fn check_embeddings(req: &EmbeddingsRequest) -> Result<(), Error> {
        if req.model.is_empty() {
            return Err(missing("model"));
        }
        check_input(&req.input)?;
        at_least_one("dimensions", req.dimensions)?;
        match req.encoding_format.as_deref() {
            None | Some("float" | "base64") => {}
            Some(other) => {
                return Err(Error::invalid_request(
                    "invalid_value",
                    Some("encoding_format".into()),
                    format!(
                        "Invalid value for 'encoding_format': '{other}' is not one of 'float', 'base64'."
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn check_input(input: &Value) -> Result<(), Error> {
    let invalid = |param: String, what: &str| {
        Error::invalid_request(
            "invalid_value",
            Some(param.clone()),
            format!("Invalid value for '{param}': {what}"),
        )
    };
    let token_ids =
        |items: &[Value], param: &str| match items.iter().position(|v| v.as_u64().is_none()) {
            Some(i) => Err(invalid(
                format!("{param}[{i}]"),
                "expected a token id (an integer from 0).",
            )),
            None => Ok(()),
        };
    match input {
        Value::Null => Err(missing("input")),
        Value::String(text) if text.is_empty() => {
            Err(invalid("input".into(), "the input must not be empty."))
        }
        Value::String(_) => Ok(()),
        Value::Array(items) if items.is_empty() => Err(invalid(
            "input".into(),
            "the input must not be an empty array.",
        )),
        Value::Array(items) if items[0].is_number() => token_ids(items, "input"),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let param = format!("input[{i}]");
                match item {
                    Value::String(text) if text.is_empty() => {
                        return Err(invalid(param, "the input must not be empty."));
                    }
                    Value::String(_) => {}
                    Value::Array(tokens) if tokens.is_empty() => {
                        return Err(invalid(param, "the input must not be an empty array."));
                    }
                    Value::Array(tokens) => token_ids(tokens, &param)?,
                    _ => {
                        return Err(Error::invalid_request(
                            "invalid_type",
                            Some(param.clone()),
                            format!(
                                "Invalid type for '{param}': expected a string or an array of token ids."
                            ),
                        ));
                    }
                }
            }
            Ok(())
        }
        _ => Err(Error::invalid_request(
            "invalid_type",
            Some("input".into()),
            "Invalid type for 'input': expected a string, an array of strings, or an array of token ids.",
        )),
    }
}

#[async_trait::async_trait]
impl Middleware for Validation {
    fn name(&self) -> &'static str {
        "validation"
    }

    fn hooks(&self) -> HookSet {
        HookSet::REQUEST
    }

    async fn on_request(&mut self, _ctx: &mut Ctx, req: &mut Request) -> Result<Flow, Error> {
        match req {
            Request::Chat(chat) => Validation::check(chat)?,
            Request::Embeddings(embeddings) => Validation::check_embeddings(embeddings)?,
        }
        Ok(Flow::Continue)
    }
}

fn check_message(index: usize, message: &Message) -> Result<(), Error> {
    if message.role.is_empty() {
        return Err(missing(&format!("messages[{index}].role")));
    }
    match &message.content {
        None => {
            let has_calls = message.tool_calls.as_ref().is_some_and(|c| !c.is_empty())
                || message.extra.contains_key("function_call");
            if !(message.role == "assistant" && has_calls) {
                return Err(missing(&format!("messages[{index}].content")));
            }
        }
        Some(Value::String(_) | Value::Array(_)) => {}
        Some(_) => {
            let param = format!("messages[{index}].content");
            return Err(Error::invalid_request(
                "invalid_type",
                Some(param.clone()),
                format!(
                    "Invalid type for '{param}': expected a string or an array of content parts."
                ),
            ));
        }
    }
    Ok(())
}

fn missing(param: &str) -> Error {
    Error::invalid_request(
        "missing_required_parameter",
        Some(param.to_string()),
        format!("Missing required parameter: '{param}'."),
    )
}

fn range_f64(param: &'static str, value: Option<f64>, min: f64, max: f64) -> Result<(), Error> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(Error::invalid_request(
            "invalid_value",
            Some(param.to_string()),
            format!("Invalid value for '{param}': {v} is not between {min} and {max}."),
        )),
        _ => Ok(()),
    }
}

fn at_least_one(param: &'static str, value: Option<i64>) -> Result<(), Error> {
    match value {
        Some(v) if v < 1 => Err(Error::invalid_request(
            "invalid_value",
            Some(param.to_string()),
            format!("Invalid value for '{param}': {v} is less than the minimum of 1."),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(body: serde_json::Value) -> Result<(), (String, String, String)> {
        let req = ChatRequest::from_slice(body.to_string().as_bytes()).expect("parses");
        Validation::check(&req).map_err(|e| {
            (
                e.code().unwrap_or_default().to_string(),
                e.param().unwrap_or_default().to_string(),
                e.message().to_string(),
            )
        })
    }

    fn base() -> serde_json::Value {
        json!({"model": "mock:echo", "messages": [{"role": "user", "content": "hi"}]})
    }

    fn with(key: &str, value: serde_json::Value) -> serde_json::Value {
        let mut body = base();
        body[key] = value;
        body
    }

    #[test]
    fn accepts_a_plain_request_and_boundaries() {
        assert_eq!(check(base()), Ok(()));
        for (key, value) in [
            ("temperature", json!(0)),
            ("temperature", json!(2)),
            ("top_p", json!(1)),
            ("presence_penalty", json!(-2)),
            ("frequency_penalty", json!(2.0)),
            ("n", json!(1)),
            ("max_tokens", json!(1)),
            ("max_completion_tokens", json!(1)),
        ] {
            assert_eq!(check(with(key, value.clone())), Ok(()), "{key}={value}");
        }
    }

    #[test]
    fn rejects_out_of_range_parameters() {
        let cases = [
            (
                "temperature",
                json!(2.01),
                "Invalid value for 'temperature': 2.01 is not between 0 and 2.",
            ),
            (
                "temperature",
                json!(-0.1),
                "Invalid value for 'temperature': -0.1 is not between 0 and 2.",
            ),
            (
                "top_p",
                json!(1.5),
                "Invalid value for 'top_p': 1.5 is not between 0 and 1.",
            ),
            (
                "presence_penalty",
                json!(-3),
                "Invalid value for 'presence_penalty': -3 is not between -2 and 2.",
            ),
            (
                "frequency_penalty",
                json!(2.5),
                "Invalid value for 'frequency_penalty': 2.5 is not between -2 and 2.",
            ),
            (
                "n",
                json!(0),
                "Invalid value for 'n': 0 is less than the minimum of 1.",
            ),
            (
                "max_tokens",
                json!(0),
                "Invalid value for 'max_tokens': 0 is less than the minimum of 1.",
            ),
            (
                "max_completion_tokens",
                json!(-5),
                "Invalid value for 'max_completion_tokens': -5 is less than the minimum of 1.",
            ),
        ];
        for (key, value, message) in cases {
            assert_eq!(
                check(with(key, value)),
                Err(("invalid_value".into(), key.into(), message.into()))
            );
        }
    }

    #[test]
    fn embeddings_inputs_are_checked() {
        let check = |input: serde_json::Value| {
            let body = json!({"model": "mock:embed", "input": input});
            let req = EmbeddingsRequest::from_slice(body.to_string().as_bytes()).unwrap();
            Validation::check_embeddings(&req).map_err(|e| {
                (
                    e.param().unwrap_or_default().to_string(),
                    e.message().to_string(),
                )
            })
        };
        for ok in [
            json!("a"),
            json!(["a", "b"]),
            json!([1, 2]),
            json!([[1], [2, 3]]),
        ] {
            assert_eq!(check(ok.clone()), Ok(()), "{ok}");
        }
        assert_eq!(check(json!(null)).unwrap_err().0, "input");
        assert_eq!(
            check(json!("")).unwrap_err(),
            (
                "input".into(),
                "Invalid value for 'input': the input must not be empty.".into()
            )
        );
        assert_eq!(check(json!([])).unwrap_err().0, "input");
        assert_eq!(check(json!(["a", ""])).unwrap_err().0, "input[1]");
        assert_eq!(check(json!([1, -2])).unwrap_err().0, "input[1]");
        assert_eq!(check(json!([[1], ["x"]])).unwrap_err().0, "input[1][0]");
        assert_eq!(check(json!({"a": 1})).unwrap_err().0, "input");
        let bad_format = EmbeddingsRequest::from_slice(
            br#"{"model":"m:e","input":"a","encoding_format":"int8"}"#,
        )
        .unwrap();
        assert_eq!(
            Validation::check_embeddings(&bad_format)
                .unwrap_err()
                .param(),
            Some("encoding_format")
        );
    }

    #[test]
    fn requires_model_and_messages() {
        assert_eq!(
            check(json!({"messages": [{"role": "user", "content": "hi"}]})),
            Err((
                "missing_required_parameter".into(),
                "model".into(),
                "Missing required parameter: 'model'.".into()
            ))
        );
        assert_eq!(
            check(json!({"model": "", "messages": [{"role": "user", "content": "hi"}]}))
                .unwrap_err()
                .1,
            "model"
        );
        assert_eq!(check(json!({"model": "m"})).unwrap_err().1, "messages");
        assert_eq!(
            check(json!({"model": "m", "messages": []})).unwrap_err().1,
            "messages"
        );
    }

    #[test]
    fn requires_role_and_content() {
        assert_eq!(
            check(json!({"model": "m", "messages": [{"content": "hi"}]})),
            Err((
                "missing_required_parameter".into(),
                "messages[0].role".into(),
                "Missing required parameter: 'messages[0].role'.".into()
            ))
        );
        assert_eq!(
            check(json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user"}]}))
                .unwrap_err()
                .1,
            "messages[1].content"
        );
        assert_eq!(
            check(json!({"model": "m", "messages": [{"role": "user", "content": null}]}))
                .unwrap_err()
                .1,
            "messages[0].content"
        );
        assert_eq!(
            check(json!({"model": "m", "messages": [{"role": "user", "content": 5}]}))
                .unwrap_err()
                .0,
            "invalid_type"
        );
    }

    #[test]
    fn an_assistant_tool_call_message_needs_no_content() {
        let body = json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ]});
        assert_eq!(check(body), Ok(()));
        // A user message cannot hide behind tool_calls.
        let body = json!({"model": "m", "messages": [
            {"role": "user", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": "{}"}}]}
        ]});
        assert_eq!(check(body).unwrap_err().1, "messages[0].content");
    }
}
