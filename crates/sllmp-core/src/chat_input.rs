//! [`ChatInput`]: a chat request with the client's own bytes while it is unchanged, and
//! [`UpstreamRequest`]: the request as routed for one provider call.

use std::fmt;
use std::ops::{Deref, DerefMut};

use bytes::Bytes;

use crate::splice::{splice_model, splice_routed};
use crate::{ChatRequest, Error, JsonMap, StreamOptions};

/// A [`ChatRequest`] and, for as long as nobody changed it, the JSON the client sent.
///
/// The request-side twin of [`Completion`](crate::Completion). The server parses the body
/// with [`ChatInput::from_json`] and keeps its bytes; an OpenAI-compatible provider then sends
/// those bytes upstream with only the routed fields rewritten
/// ([`UpstreamRequest::to_json`]) instead of encoding the whole request again, which saves
/// the encoding (it grows with the prompt) and keeps every field exactly as the client wrote
/// it. Reading goes through [`Deref`]; the first mutable access ([`DerefMut`]) drops the
/// bytes, so a middleware that rewrites the request is always what the provider receives.
/// [`ChatInput::set_model`] keeps them: the model is rewritten on the way upstream anyway.
///
/// ```
/// use sllmp_core::ChatInput;
///
/// let json = br#"{"model":"openai:gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
/// let mut req = ChatInput::from_json(json.as_slice().into()).unwrap();
/// assert_eq!(req.messages.len(), 1); // reads keep the bytes
/// req.set_model("openai:gpt-4o-mini"); // so does choosing another model
/// assert!(req.wire().is_some());
/// req.temperature = Some(0.0); // any other write drops them
/// assert!(req.wire().is_none());
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct ChatInput {
    value: ChatRequest,
    wire: Option<Bytes>,
}

impl ChatInput {
    /// A request with no client bytes: providers encode it from the value.
    pub fn new(value: ChatRequest) -> ChatInput {
        ChatInput { value, wire: None }
    }

    /// Parses a request body ([`ChatRequest::from_slice`], with its errors) and keeps the
    /// bytes it came from.
    pub fn from_json(wire: Bytes) -> Result<ChatInput, Error> {
        let value = ChatRequest::from_slice(&wire)?;
        Ok(ChatInput {
            value,
            wire: Some(wire),
        })
    }

    /// The bytes the client sent, if the request has not been changed since (other than
    /// its model).
    pub fn wire(&self) -> Option<&Bytes> {
        self.wire.as_ref()
    }

    /// Sets the model, keeping the client's bytes (routing rewrites the model in them).
    pub fn set_model(&mut self, model: impl Into<String>) {
        self.value.model = model.into();
    }

    /// The value, without the client's bytes.
    pub fn into_inner(self) -> ChatRequest {
        self.value
    }

    /// Routes the request for one provider call: `model` is the provider's own model name;
    /// the client's `metadata` is taken out (it is for the proxy); and when `streaming`,
    /// `stream` is `true` and `stream_options.include_usage` is `true`, so that every stream
    /// reports its usage (the pipeline drops the usage chunk a client did not ask for).
    ///
    /// The returned guard puts back what it replaced when dropped (a cancelled call
    /// included), so a retry starts from the request as it was.
    pub fn route(&mut self, model: String, streaming: bool) -> Routed<'_> {
        let req = &mut self.value;
        let replaced = Replaced {
            model: std::mem::replace(&mut req.model, model),
            metadata: req.metadata.take(),
            stream: req.stream,
            include_usage: req.stream_options.as_ref().map(|o| o.include_usage),
        };
        if streaming {
            req.stream = Some(true);
            req.stream_options
                .get_or_insert_with(StreamOptions::default)
                .include_usage = Some(true);
        }
        Routed {
            req: self,
            replaced: Some(replaced),
        }
    }
}

impl From<ChatRequest> for ChatInput {
    fn from(value: ChatRequest) -> ChatInput {
        ChatInput::new(value)
    }
}

impl Deref for ChatInput {
    type Target = ChatRequest;

    fn deref(&self) -> &ChatRequest {
        &self.value
    }
}

impl DerefMut for ChatInput {
    /// Mutable access: the client's bytes no longer describe the value, so they are dropped.
    fn deref_mut(&mut self) -> &mut ChatRequest {
        self.wire = None;
        &mut self.value
    }
}

impl fmt::Debug for ChatInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatInput")
            .field("value", &self.value)
            .field("wire_bytes", &self.wire.as_ref().map(Bytes::len))
            .finish()
    }
}

/// The fields routing replaced, as they were.
pub(crate) struct Replaced {
    pub(crate) model: String,
    pub(crate) metadata: Option<JsonMap>,
    pub(crate) stream: Option<bool>,
    /// `None` when the request had no `stream_options`; else its `include_usage`.
    pub(crate) include_usage: Option<Option<bool>>,
}

/// A [`ChatInput`] routed for one call ([`ChatInput::route`]); dropping it puts back what
/// routing replaced.
pub struct Routed<'a> {
    req: &'a mut ChatInput,
    replaced: Option<Replaced>,
}

impl Routed<'_> {
    /// The request as the provider receives it.
    pub fn upstream(&self) -> UpstreamRequest<'_> {
        UpstreamRequest {
            value: &self.req.value,
            client: self.req.wire.as_ref().zip(self.replaced.as_ref()),
        }
    }
}

impl Deref for Routed<'_> {
    type Target = ChatRequest;

    fn deref(&self) -> &ChatRequest {
        &self.req.value
    }
}

impl Drop for Routed<'_> {
    fn drop(&mut self) {
        let Some(replaced) = self.replaced.take() else {
            return;
        };
        let req = &mut self.req.value;
        req.model = replaced.model;
        req.metadata = replaced.metadata;
        req.stream = replaced.stream;
        match replaced.include_usage {
            None => req.stream_options = None,
            Some(include_usage) => {
                if let Some(options) = &mut req.stream_options {
                    options.include_usage = include_usage;
                }
            }
        }
    }
}

/// The request a [`Provider`](crate::Provider) receives: routed ([`ChatInput::route`]), and
/// with the client's bytes when no middleware changed the request.
///
/// Read it as a [`ChatRequest`] (it derefs to one); a provider speaking OpenAI's format
/// sends [`UpstreamRequest::to_json`].
#[derive(Clone, Copy)]
pub struct UpstreamRequest<'a> {
    value: &'a ChatRequest,
    /// The client's bytes, and the fields routing replaced in the value.
    client: Option<(&'a Bytes, &'a Replaced)>,
}

impl<'a> UpstreamRequest<'a> {
    /// A request encoded from `value` alone (what tests and direct callers of a provider
    /// use; `value.model` should already be the provider's own model name).
    pub fn new(value: &'a ChatRequest) -> UpstreamRequest<'a> {
        UpstreamRequest {
            value,
            client: None,
        }
    }

    /// Whether [`UpstreamRequest::to_json`] forwards the client's bytes.
    pub fn is_forwarded(&self) -> bool {
        self.client.is_some()
    }

    /// The request as OpenAI's JSON.
    ///
    /// With the client's bytes, those bytes with the members routing decides (`model`,
    /// `metadata`, `stream`, `stream_options`) written from the routed value, at their
    /// place, and every other member as the client wrote it; otherwise the value encoded.
    pub fn to_json(&self) -> Bytes {
        if let Some((wire, replaced)) = self.client {
            // Most requests only need their model replaced, found without a scan; the
            // others have their members scanned.
            let spliced = splice_model(wire, replaced, self.value)
                .or_else(|| splice_routed(wire, self.value));
            if let Some(spliced) = spliced {
                return Bytes::from(spliced);
            }
        }
        Bytes::from(serde_json::to_vec(self.value).expect("a chat request always serializes"))
    }
}

impl<'a> From<&'a ChatRequest> for UpstreamRequest<'a> {
    fn from(value: &'a ChatRequest) -> UpstreamRequest<'a> {
        UpstreamRequest::new(value)
    }
}

impl Deref for UpstreamRequest<'_> {
    type Target = ChatRequest;

    fn deref(&self) -> &ChatRequest {
        self.value
    }
}

impl fmt::Debug for UpstreamRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamRequest")
            .field("value", self.value)
            .field("forwarded", &self.is_forwarded())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parse(json: &str) -> ChatInput {
        ChatInput::from_json(Bytes::copy_from_slice(json.as_bytes())).unwrap()
    }

    #[test]
    fn routing_is_undone_when_the_call_ends() {
        let with_options = json!({
            "model": "openai:gpt-4o", "messages": [], "stream": true,
            "stream_options": {"include_usage": false}, "metadata": {"feature": "x"}
        });
        let plain = json!({"model": "openai:gpt-4o", "messages": []});
        for original in [with_options, plain] {
            let original = parse(&original.to_string());
            for streaming in [false, true] {
                let mut req = original.clone();
                {
                    let routed = req.route("gpt-4o".into(), streaming);
                    assert_eq!(routed.model, "gpt-4o");
                    assert_eq!(routed.metadata, None);
                    assert!(routed.upstream().is_forwarded());
                    if streaming {
                        assert_eq!(routed.stream, Some(true));
                        assert_eq!(
                            routed.stream_options.as_ref().unwrap().include_usage,
                            Some(true)
                        );
                    }
                }
                assert_eq!(req, original, "streaming: {streaming}");
            }
        }
    }

    /// Routing the client's bytes gives the same request as encoding the routed value.
    #[test]
    fn forwarded_bytes_mean_what_the_routed_value_means() {
        let bodies = [
            r#"{"model":"openai:gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"metadata":{"feature":"a"},"model":"openai:gpt-4o","messages":[],"stream":true}"#,
            r#" { "messages" : [ ] , "metadata" : { "x" : [1, {"y": "}"}] } , "model" : "openai:m" } "#,
            r#"{"model":"p:m","messages":[],"stream":true,"stream_options":{"include_usage":false,"x":1},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}"#,
            r#"{"model":"p:m","n":null,"seed":12345678901234567890,"temperature":1e0,"messages":[{"role":"user","content":"a \"quoted\" \\ } ] { [ text"}]}"#,
            r#"{"model":"p:m","stream":false,"metadata":null,"messages":[]}"#,
        ];
        for body in bodies {
            for streaming in [false, true] {
                let mut req = parse(body);
                let routed = req.route("m2".into(), streaming);
                let forwarded = routed.upstream().to_json();
                let encoded = UpstreamRequest::new(&routed).to_json();
                let forwarded: Value = serde_json::from_slice(&forwarded).unwrap();
                let mut encoded: Value = serde_json::from_slice(&encoded).unwrap();
                // The value drops what the client set to null; the bytes keep it.
                if let Some(client) = serde_json::from_str::<Value>(body).unwrap().as_object() {
                    for (key, value) in client {
                        if value.is_null() && key != "metadata" {
                            encoded[key] = Value::Null;
                        }
                    }
                }
                assert_eq!(forwarded, encoded, "{body} streaming: {streaming}");
            }
        }
    }

    /// The quick splice (the model found by a search) takes the requests it can, and writes
    /// what the scan writes.
    #[test]
    fn the_quick_splice_agrees_with_the_scan() {
        // (body, quick when not streaming, quick when streaming)
        let cases = [
            (
                r#"{"model":"p:m","messages":[{"role":"user","content":"hi"}]}"#,
                true,
                true,
            ),
            (
                r#"{ "messages": [], "model" : "p:m" , "stream":true }"#,
                true,
                true,
            ),
            (
                r#"{"model":"p:m","stream":true,"stream_options":{"include_usage":true}}"#,
                true,
                true,
            ),
            (
                r#"{"model":"p:m","stream":true,"stream_options":{"include_usage":false}}"#,
                true,
                false,
            ),
            // Taken out, rewritten, or ambiguous: scanned.
            (r#"{"model":"p:m","metadata":{"a":1}}"#, false, false),
            (r#"{"model":"p:m","metadata":null}"#, false, false),
            (
                r#"{"model":"p:m","messages":[{"role":"user","content":"model"}]}"#,
                false,
                false,
            ),
            (
                r#"{"model":"p:m","messages":[{"role":"user","content":"caf\u00e9"}]}"#,
                false,
                false,
            ),
        ];
        for (body, quick, quick_streaming) in cases {
            for streaming in [false, true] {
                let mut req = parse(body);
                if streaming && !req.is_stream() {
                    continue;
                }
                let quick = if streaming { quick_streaming } else { quick };
                let routed = req.route("m".into(), streaming);
                let wire = routed.req.wire.as_ref().unwrap();
                let replaced = routed.replaced.as_ref().unwrap();
                let fast = crate::splice::splice_model(wire, replaced, &routed);
                assert_eq!(fast.is_some(), quick, "{body}");
                let scanned = splice_routed(wire, &routed).unwrap();
                if let Some(fast) = fast {
                    let fast: Value = serde_json::from_slice(&fast).unwrap();
                    let scanned: Value = serde_json::from_slice(&scanned).unwrap();
                    assert_eq!(fast, scanned, "{body}");
                }
            }
        }
    }

    #[test]
    fn forwarded_bytes_keep_the_clients_text() {
        let mut req = parse(
            r#"{"model":"openai:gpt-4o", "temperature":0.70, "metadata":{"user":"u"}, "messages":[{"content":"hi","role":"user"}]}"#,
        );
        let routed = req.route("gpt-4o".into(), true);
        insta::assert_snapshot!(
            String::from_utf8(routed.upstream().to_json().to_vec()).unwrap(),
            @r#"{"model":"gpt-4o","temperature":0.70,"messages":[{"content":"hi","role":"user"}],"stream":true,"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn a_write_drops_the_clients_bytes_and_the_provider_gets_the_value() {
        let mut req = parse(r#"{"model":"openai:gpt-4o","messages":[],"temperature":0.70}"#);
        req.temperature = Some(0.5);
        let routed = req.route("gpt-4o".into(), false);
        assert!(!routed.upstream().is_forwarded());
        assert_eq!(
            routed.upstream().to_json(),
            r#"{"model":"gpt-4o","messages":[],"temperature":0.5}"#
        );
    }

    #[test]
    fn keys_written_with_escapes_are_encoded_from_the_value() {
        // `mod\u0065l` is `model`: forwarding it would send the client's model twice, and
        // the literal `"model"` below is not the top-level key.
        let mut req =
            parse(r#"{"mod\u0065l":"openai:gpt-4o","messages":[],"x":{"model":"openai:gpt-4o"}}"#);
        let routed = req.route("gpt-4o".into(), false);
        assert_eq!(
            routed.upstream().to_json(),
            r#"{"model":"gpt-4o","messages":[],"x":{"model":"openai:gpt-4o"}}"#
        );
    }

    #[test]
    fn debug_shows_the_size_of_the_clients_bytes_not_their_text() {
        let req = parse(r#"{"model":"m","messages":[]}"#);
        assert!(format!("{req:?}").contains("wire_bytes: Some(27)"));
    }
}
