//! [`Completion`]: a non-streamed answer, with the provider's own bytes while it is unchanged.

use std::fmt;
use std::ops::{Deref, DerefMut};

use bytes::Bytes;

use crate::ChatCompletion;

/// A [`ChatCompletion`] and, for as long as nobody changed it, the exact OpenAI JSON it was
/// read from.
///
/// A provider that receives OpenAI's wire format keeps the upstream's bytes
/// ([`Completion::from_json`]); the server then sends those bytes to the client untouched
/// instead of writing the value out again, which saves the encoding and keeps the answer
/// byte for byte what the provider sent. Reading goes through [`Deref`]; the first mutable
/// access ([`DerefMut`]) drops the bytes, so a middleware that rewrites the response is
/// always what the client sees.
///
/// ```
/// use sllmp_core::Completion;
///
/// let json = br#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[]}"#;
/// let mut completion = Completion::from_json(json.as_slice().into()).unwrap();
/// assert_eq!(completion.id, "c1"); // reads keep the bytes
/// assert_eq!(completion.to_json(), json.as_slice());
/// completion.id = "c2".into(); // a write drops them
/// assert!(completion.wire().is_none());
/// assert!(completion.to_json().starts_with(br#"{"id":"c2""#));
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Completion {
    value: ChatCompletion,
    wire: Option<Bytes>,
}

impl Completion {
    /// A completion with no wire bytes: it is written out from the value.
    pub fn new(value: ChatCompletion) -> Completion {
        Completion { value, wire: None }
    }

    /// Parses OpenAI's JSON and keeps the bytes it came from.
    pub fn from_json(wire: Bytes) -> Result<Completion, serde_json::Error> {
        // Checking the UTF-8 of the whole body at once is cheaper than string by string; a
        // body that is not UTF-8 goes through `from_slice` for serde_json's own error.
        let value = match std::str::from_utf8(&wire) {
            Ok(text) => match crate::chat::fast::completion(text) {
                Some(value) => value,
                None => serde_json::from_str(text)?,
            },
            Err(_) => serde_json::from_slice(&wire)?,
        };
        Ok(Completion {
            value,
            wire: Some(wire),
        })
    }

    /// The bytes the value was read from, if it has not been changed since.
    pub fn wire(&self) -> Option<&Bytes> {
        self.wire.as_ref()
    }

    /// The completion as OpenAI's JSON: the wire bytes when there are some, else the value
    /// written out.
    pub fn to_json(&self) -> Bytes {
        match &self.wire {
            Some(wire) => wire.clone(),
            None => Bytes::from(
                serde_json::to_vec(&self.value).expect("a chat completion always serializes"),
            ),
        }
    }

    /// The value, without the wire bytes.
    pub fn into_inner(self) -> ChatCompletion {
        self.value
    }
}

impl From<ChatCompletion> for Completion {
    fn from(value: ChatCompletion) -> Completion {
        Completion::new(value)
    }
}

impl Deref for Completion {
    type Target = ChatCompletion;

    fn deref(&self) -> &ChatCompletion {
        &self.value
    }
}

impl DerefMut for Completion {
    /// Mutable access: the wire bytes no longer describe the value, so they are dropped.
    fn deref_mut(&mut self) -> &mut ChatCompletion {
        self.wire = None;
        &mut self.value
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("value", &self.value)
            .field("wire_bytes", &self.wire.as_ref().map(Bytes::len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &[u8] = br#"{"model":"m","id":"c1","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"created":1,"object":"chat.completion","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

    #[test]
    fn unchanged_completion_is_sent_as_received() {
        let completion = Completion::from_json(Bytes::from_static(JSON)).unwrap();
        assert_eq!(completion.choices[0].message.text(), "hi");
        assert_eq!(completion.usage.as_ref().unwrap().total_tokens, 2);
        // Field order and all: the provider's bytes, not a re-encoding.
        assert_eq!(completion.to_json(), JSON);
    }

    #[test]
    fn any_mutable_access_drops_the_wire_bytes() {
        let mut completion = Completion::from_json(Bytes::from_static(JSON)).unwrap();
        completion.usage = None;
        assert!(completion.wire().is_none());
        let out: serde_json::Value = serde_json::from_slice(&completion.to_json()).unwrap();
        assert!(out.get("usage").is_none());
        assert_eq!(out["id"], "c1");
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(Completion::from_json(Bytes::from_static(b"{\"id\":")).is_err());
        let not_utf8 = Completion::from_json(Bytes::from_static(b"{\"id\":\"\xff\"}"));
        assert!(
            not_utf8
                .unwrap_err()
                .to_string()
                .contains("invalid unicode code point")
        );
    }

    #[test]
    fn debug_shows_the_size_of_the_wire_bytes_not_their_text() {
        let completion = Completion::from_json(Bytes::from_static(JSON)).unwrap();
        let debug = format!("{completion:?}");
        assert!(debug.contains(&format!("wire_bytes: Some({})", JSON.len())));
    }
}
