//! A hand-written reader for the common shapes of requests, completions and stream chunks.
//!
//! serde_json spends most of a chat document's parse on its generality: every token goes
//! through the visitor machinery, every key and string through its escape scanner. This
//! reader walks the objects itself, reads plain strings and integers directly (`memchr` to
//! the closing quote), and hands everything else (strings with escapes, fractions, nested
//! unknown values, tool calls) to serde_json, on that value's own slice. It gives up
//! (`None`) at anything it does not expect, and the caller parses the document with serde
//! then, which also reports the errors: so it accepts only what serde accepts, and yields
//! the same value (the tests check both on mutated documents).

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{
    ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice, Delta, Extra, Message, Usage,
};

/// A request, or `None` to let serde parse it.
pub(crate) fn request(text: &str) -> Option<ChatRequest> {
    let mut reader = Reader::new(text);
    let mut req = ChatRequest::open_init();
    reader.object(|r, key| {
        match key {
            "model" => req.model = r.string()?,
            "messages" => req.messages = r.array(message)?,
            "stream" => req.stream = r.optional(Reader::bool)?,
            "stream_options" => req.stream_options = r.value()?,
            "temperature" => req.temperature = r.optional(Reader::f64)?,
            "top_p" => req.top_p = r.optional(Reader::f64)?,
            "n" => req.n = r.optional(Reader::i64)?,
            "max_tokens" => req.max_tokens = r.optional(Reader::i64)?,
            "max_completion_tokens" => req.max_completion_tokens = r.optional(Reader::i64)?,
            "presence_penalty" => req.presence_penalty = r.optional(Reader::f64)?,
            "frequency_penalty" => req.frequency_penalty = r.optional(Reader::f64)?,
            "user" => req.user = r.optional(Reader::string)?,
            "metadata" => req.metadata = r.value()?,
            _ => {
                r.extra(&mut req.extra, key)?;
            }
        }
        Some(())
    })?;
    reader.end()?;
    Some(req)
}

/// A completion, or `None` to let serde parse it.
pub(crate) fn completion(text: &str) -> Option<ChatCompletion> {
    let mut reader = Reader::new(text);
    let mut completion = ChatCompletion::open_init();
    reader.object(|r, key| {
        match key {
            "id" => completion.id = r.string()?,
            "object" => completion.object = r.string()?,
            "created" => completion.created = r.u64()?,
            "model" => completion.model = r.string()?,
            "choices" => completion.choices = r.array(choice)?,
            "usage" => completion.usage = r.optional(usage)?,
            _ => {
                r.extra(&mut completion.extra, key)?;
            }
        }
        Some(())
    })?;
    reader.end()?;
    Some(completion)
}

/// A stream chunk, or `None` to let serde parse it.
pub(crate) fn chunk(text: &str) -> Option<ChatChunk> {
    let mut reader = Reader::new(text);
    let mut chunk = ChatChunk::open_init();
    reader.object(|r, key| {
        match key {
            "id" => chunk.id = r.string()?,
            "object" => chunk.object = r.string()?,
            "created" => chunk.created = r.u64()?,
            "model" => chunk.model = r.string()?,
            "choices" => chunk.choices = r.array(chunk_choice)?,
            // Present: `null` is `Some(None)`.
            "usage" => chunk.usage = Some(r.optional(usage)?),
            _ => r.extra(&mut chunk.extra, key)?,
        }
        Some(())
    })?;
    reader.end()?;
    Some(chunk)
}

fn chunk_choice(r: &mut Reader<'_>) -> Option<ChunkChoice> {
    let mut choice = ChunkChoice::open_init();
    r.object(|r, key| {
        match key {
            "index" => choice.index = u32::try_from(r.u64()?).ok()?,
            "delta" => choice.delta = delta(r)?,
            "finish_reason" => choice.finish_reason = r.optional(Reader::string)?,
            _ => r.extra(&mut choice.extra, key)?,
        }
        Some(())
    })?;
    Some(choice)
}

fn delta(r: &mut Reader<'_>) -> Option<Delta> {
    let mut delta = Delta::open_init();
    r.object(|r, key| {
        match key {
            "role" => delta.role = r.optional(Reader::string)?,
            "content" => delta.content = r.optional(Reader::string)?,
            "tool_calls" => delta.tool_calls = r.value()?,
            _ => r.extra(&mut delta.extra, key)?,
        }
        Some(())
    })?;
    Some(delta)
}

fn message(r: &mut Reader<'_>) -> Option<Message> {
    let mut message = Message::open_init();
    r.object(|r, key| {
        match key {
            "role" => message.role = r.string()?,
            // `null` and absent are the same.
            "content" => message.content = Some(r.any()?).filter(|v| !v.is_null()),
            "name" => message.name = r.optional(Reader::string)?,
            "tool_calls" => message.tool_calls = r.value()?,
            "tool_call_id" => message.tool_call_id = r.optional(Reader::string)?,
            _ => {
                r.extra(&mut message.extra, key)?;
            }
        }
        Some(())
    })?;
    Some(message)
}

fn choice(r: &mut Reader<'_>) -> Option<Choice> {
    let mut choice = Choice::open_init();
    r.object(|r, key| {
        match key {
            "index" => choice.index = u32::try_from(r.u64()?).ok()?,
            "message" => choice.message = message(r)?,
            "finish_reason" => choice.finish_reason = r.optional(Reader::string)?,
            _ => {
                r.extra(&mut choice.extra, key)?;
            }
        }
        Some(())
    })?;
    Some(choice)
}

fn usage(r: &mut Reader<'_>) -> Option<Usage> {
    let mut usage = Usage::open_init();
    r.object(|r, key| {
        match key {
            "prompt_tokens" => usage.prompt_tokens = r.u64()?,
            "completion_tokens" => usage.completion_tokens = r.u64()?,
            "total_tokens" => usage.total_tokens = r.u64()?,
            _ => {
                r.extra(&mut usage.extra, key)?;
            }
        }
        Some(())
    })?;
    Some(usage)
}

/// How far [`plain_end`] looks before a string is searched with `memchr` instead.
const SHORT: usize = 32;

/// Where the plain string starting at `start` ends (its closing quote, an escape, a control
/// character), looking at most [`SHORT`] bytes: `start + SHORT` if none of those came.
///
/// Keys and most values are short: eight bytes at a time, with the zero-byte trick (the
/// lowest flagged byte of a word is always a true match), ends them before `memchr` would
/// have set up.
fn plain_end(bytes: &[u8], start: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let limit = (start + SHORT).min(bytes.len());
    let mut at = start;
    while at + 8 <= limit {
        let word = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let found = ((word.wrapping_sub(ONES * 0x20) & !word)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash))
            & HIGH;
        if found != 0 {
            return at + found.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    while at < limit && !ENDS_PLAIN[usize::from(bytes[at])] {
        at += 1;
    }
    at
}

/// The bytes that end a plain string: its closing quote, an escape, a control character.
static ENDS_PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// How deep a value handed to serde_json may nest: with the levels above it, well within
/// serde_json's limit of 128 for the whole document.
const MAX_DEPTH: usize = 64;

/// A cursor over a JSON text.
struct Reader<'a> {
    text: &'a str,
    at: usize,
    /// Whether a value skipped since this was cleared had what serde_json may refuse to
    /// parse into a [`Value`] though its syntax is right: a `\u` escape (a lone surrogate),
    /// an exponent or a very long number (out of `f64`'s range).
    unusual: bool,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Reader<'a> {
        Reader {
            text,
            at: 0,
            unusual: false,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Option<()> {
        self.ws();
        (self.at == self.text.len()).then_some(())
    }

    /// An object, calling `member` with each key (written without escapes) to read its value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.ws();
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.plain_string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            member(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.ws();
                }
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array of what `item` reads.
    fn array<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        self.eat(b'[')?;
        self.ws();
        let mut items = Vec::new();
        if self.eat(b']').is_some() {
            return Some(items);
        }
        loop {
            self.ws();
            items.push(item(self)?);
            self.ws();
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(items);
                }
                _ => return None,
            }
        }
    }

    /// `null` as `None`, else what `read` reads.
    fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.literal("null") {
            return Some(None);
        }
        read(self).map(Some)
    }

    fn literal(&mut self, word: &str) -> bool {
        let found = self.text[self.at..].starts_with(word);
        if found {
            self.at += word.len();
        }
        found
    }

    fn bool(&mut self) -> Option<bool> {
        if self.literal("true") {
            Some(true)
        } else if self.literal("false") {
            Some(false)
        } else {
            None
        }
    }

    /// A string without escapes or control characters, borrowed.
    fn plain_string(&mut self) -> Option<&'a str> {
        if self.peek()? != b'"' {
            return None;
        }
        let bytes = self.bytes();
        let start = self.at + 1;
        let mut end = plain_end(bytes, start);
        if end == start + SHORT && end < bytes.len() {
            // A long string (a message's content): searched, then checked whole.
            let len = memchr::memchr2(b'"', b'\\', &bytes[end..])?;
            // No early exit: the check compiles to vector code.
            let control = bytes[end..end + len]
                .iter()
                .fold(false, |found, &b| found | (b < 0x20));
            if control {
                return None;
            }
            end += len;
        }
        if bytes.get(end) != Some(&b'"') {
            return None;
        }
        self.at = end + 1;
        Some(&self.text[start..end])
    }

    /// A string; serde_json unescapes one that has escapes.
    fn string(&mut self) -> Option<String> {
        if let Some(plain) = self.plain_string() {
            return Some(plain.to_owned());
        }
        self.value()
    }

    /// A non-negative integer, written as JSON writes them (no sign, fraction or exponent).
    fn u64(&mut self) -> Option<u64> {
        let digits = self.digits()?;
        let mut value: u64 = 0;
        for &digit in digits {
            value = value
                .checked_mul(10)?
                .checked_add(u64::from(digit - b'0'))?;
        }
        Some(value)
    }

    fn i64(&mut self) -> Option<i64> {
        let negative = self.eat(b'-').is_some();
        let magnitude = self.u64()?;
        if negative {
            // `-0` is serde_json's to read (it may read it as a float).
            (magnitude != 0).then_some(())?;
            0i64.checked_sub_unsigned(magnitude)
        } else {
            i64::try_from(magnitude).ok()
        }
    }

    /// The digits of an integer, which must end there (a fraction or an exponent is left to
    /// serde); no leading zeros.
    fn digits(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        let digits = &self.bytes()[start..self.at];
        let ends = !matches!(self.peek(), Some(b'.' | b'e' | b'E' | b'0'..=b'9'));
        let leading_zero = digits.len() > 1 && digits[0] == b'0';
        (!digits.is_empty() && ends && !leading_zero).then_some(digits)
    }

    fn f64(&mut self) -> Option<f64> {
        let start = self.at;
        if let Some(number) = self.decimal() {
            return Some(number);
        }
        self.at = start;
        self.value()
    }

    /// A number without an exponent and with at most 19 digits, computed as serde_json
    /// computes it (the digits as one integer, converted, divided once by a power of ten);
    /// anything else is left to serde.
    fn decimal(&mut self) -> Option<f64> {
        /// Powers of ten, each exactly an `f64`.
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        ];
        let bytes = self.bytes();
        let negative = self.eat(b'-').is_some();
        let integer_start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        let integer = &bytes[integer_start..self.at];
        let mut fraction: &[u8] = &[];
        if self.eat(b'.').is_some() {
            let fraction_start = self.at;
            while let Some(b'0'..=b'9') = self.peek() {
                self.at += 1;
            }
            fraction = &bytes[fraction_start..self.at];
            if fraction.is_empty() {
                return None;
            }
        }
        let leading_zero = integer.len() > 1 && integer[0] == b'0';
        let exponent = matches!(self.peek(), Some(b'e' | b'E'));
        // `-0` may be read by serde as a float or an integer: left to it.
        let negative_zero = negative && fraction.is_empty() && integer == b"0";
        if integer.is_empty()
            || leading_zero
            || exponent
            || negative_zero
            || integer.len() + fraction.len() > 19
        {
            return None;
        }
        let significand = integer
            .iter()
            .chain(fraction)
            .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0'));
        let value = significand as f64 / POW10[fraction.len()];
        Some(if negative { -value } else { value })
    }

    /// Any value: scalars read here, objects and arrays by serde_json.
    fn any(&mut self) -> Option<Value> {
        match self.peek()? {
            b'"' => self.string().map(Value::String),
            b'n' if self.literal("null") => Some(Value::Null),
            b't' | b'f' => self.bool().map(Value::Bool),
            _ => self.value(),
        }
    }

    /// An unknown field's value into `extra`: an object or an array kept as its checked
    /// JSON text (parsed only if something looks at it), anything else parsed.
    fn extra(&mut self, extra: &mut Extra, key: &str) -> Option<()> {
        if let b'{' | b'[' = self.peek()? {
            let start = self.at;
            self.unusual = false;
            self.skip()?;
            let text = &self.text[start..self.at];
            if self.unusual {
                // Parsed now, so that looking at it later cannot fail.
                extra.insert(key, serde_json::from_str(text).ok()?);
            } else {
                extra.insert_raw(key, RawValue::from_string(text.to_owned()).ok()?);
            }
        } else {
            extra.insert(key, self.any()?);
        }
        Some(())
    }

    /// The next value, parsed by serde_json from its own slice.
    fn value<T: DeserializeOwned>(&mut self) -> Option<T> {
        let start = self.at;
        self.skip()?;
        serde_json::from_str(&self.text[start..self.at]).ok()
    }

    /// Past the next value: a string, a bracketed value (strings inside skipped whole), or
    /// a scalar. Only finds where the value ends; serde_json checks it. Values nested
    /// deeper than [`MAX_DEPTH`] are left to serde, whose limit counts the whole document.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut digits = 0usize;
                loop {
                    let byte = self.peek()?;
                    match byte {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => {
                            depth += 1;
                            if depth > MAX_DEPTH {
                                return None;
                            }
                        }
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    if byte.is_ascii_digit() {
                        digits += 1;
                        self.unusual |= digits > 300;
                    } else {
                        // `1e5`, `2.5E-3`: after a digit (`true` has an `e` after a `u`).
                        self.unusual |= digits > 0 && (byte == b'e' || byte == b'E');
                        digits = 0;
                    }
                    self.at += 1;
                }
            }
            _ => {
                let start = self.at;
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.at += 1;
                }
                (self.at > start).then_some(())
            }
        }
    }

    fn skip_string(&mut self) -> Option<()> {
        self.at += 1;
        loop {
            let found = memchr::memchr2(b'"', b'\\', self.bytes().get(self.at..)?)?;
            self.at += found;
            if self.bytes()[self.at] == b'\\' {
                self.unusual |= self.bytes().get(self.at + 1) == Some(&b'u');
                self.at += 2;
            } else {
                self.at += 1;
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Documents of the shapes the reader takes, and some it hands to serde.
    const REQUESTS: &[&str] = &[
        r#"{"model":"upstream:gpt-4o-mini","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"Explain what a reverse proxy does."}],"temperature":0.7,"max_tokens":256,"user":"bench-user-1","mock":{"latency_ms":0}}"#,
        r#" { "model" : "openai:gpt-4o" , "messages" : [ { "role" : "user" , "content" : "caf\u00e9 \"quoted\" \\ \n" , "name" : null } ] , "stream" : true , "stream_options" : { "include_usage" : true } , "n" : 1 , "seed" : -12 , "metadata" : { "feature" : "chat" } } "#,
        r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},{"role":"tool","tool_call_id":"c1","content":[{"type":"text","text":"r"}]}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"b":{},"a":{}}}}}],"top_p":0.95,"presence_penalty":-1.999,"frequency_penalty":2e-1,"temperature":0.123456789012345678,"max_completion_tokens":9223372036854775807,"stop":["\n"],"logit_bias":{"50256":-100},"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"emoji":{"const":"\ud83e\udd80"},"n":{"maximum":1e3,"minimum":-2}}}}}}"#,
        r#"{"messages":[],"model":"a","model":"b","temperature":1,"temperature":null,"top_p":1,"presence_penalty":-0.5,"frequency_penalty":12345678901234567.89,"x":1,"x":[true,false,null,1.5e300,-0.0,"s"]}"#,
        r#"{}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false,"user":null,"max_tokens":null,"extra_float":0.1,"big":123456789012345678901234567890}"#,
    ];

    const COMPLETIONS: &[&str] = &[
        r#"{"id":"chatcmpl-mock-1","object":"chat.completion","created":1796031347,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Mock reply to: Explain in two sentences what a reverse proxy does.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":46,"completion_tokens":29,"total_tokens":75},"system_fingerprint":"fp_mock"}"#,
        "{\n  \"id\": \"chatcmpl-B9\",\n  \"object\": \"chat.completion\",\n  \"created\": 1741570283,\n  \"model\": \"gpt-4o-2024-08-06\",\n  \"choices\": [\n    {\n      \"index\": 0,\n      \"message\": {\n        \"role\": \"assistant\",\n        \"content\": \"Hello! How can I help?\",\n        \"refusal\": null,\n        \"annotations\": []\n      },\n      \"logprobs\": null,\n      \"finish_reason\": \"stop\"\n    }\n  ],\n  \"usage\": {\n    \"prompt_tokens\": 9,\n    \"completion_tokens\": 7,\n    \"total_tokens\": 16,\n    \"prompt_tokens_details\": {\"cached_tokens\": 0, \"audio_tokens\": 0}\n  },\n  \"service_tier\": \"default\",\n  \"system_fingerprint\": \"fp_fc9f1d7035\"\n}\n",
        r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":1,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"},{"index":2,"message":{"role":"assistant","content":"line\nbreak \ud83e\udd80"},"finish_reason":null}],"usage":null}"#,
        r#"{"choices":[],"id":"x"}"#,
    ];

    const CHUNKS: &[&str] = &[
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":" a \"reverse\" proxy\n"},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]},"finish_reason":null}]}"#,
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}"#,
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16,"completion_tokens_details":{"reasoning_tokens":0}}}"#,
        r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
    ];

    fn same<T: DeserializeOwned + PartialEq + std::fmt::Debug>(
        fast: Option<T>,
        text: &str,
    ) -> bool {
        let serde = serde_json::from_str::<T>(text);
        match (&fast, &serde) {
            (Some(fast), Ok(serde)) => assert_eq!(fast, serde, "{text}"),
            (Some(fast), Err(err)) => panic!("took what serde refuses ({err}): {text}\n{fast:?}"),
            (None, _) => {}
        }
        fast.is_some()
    }

    /// Strings of every length up to well past the word-at-a-time part, ended by each kind
    /// of byte at each position.
    #[test]
    fn plain_strings_end_at_their_first_special_byte() {
        for len in 0..80 {
            let body = "é".repeat(len / 2) + &"a".repeat(len % 2);
            for (end, plain) in [("\"", true), ("\\n\"", false), ("\u{1}\"", false)] {
                let text = format!("\"{body}{end} tail \"more\"");
                let mut reader = Reader::new(&text);
                let read = reader.plain_string();
                assert_eq!(read, plain.then_some(body.as_str()), "{text:?}");
            }
        }
    }

    /// Decimals of every length the reader computes itself come out bit for bit as
    /// serde_json's.
    #[test]
    fn decimals_are_computed_as_serde_computes_them() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let integer_digits = (next() % 8) as usize;
            let fraction_digits = 1 + (next() % 18) as usize;
            let integer = if integer_digits == 0 {
                "0".to_string()
            } else {
                (next() % 10u64.pow(integer_digits as u32)).to_string()
            };
            let fraction: String = (0..fraction_digits)
                .map(|_| char::from(b'0' + (next() % 10) as u8))
                .collect();
            let sign = if next() % 2 == 0 { "" } else { "-" };
            let text = format!("{sign}{integer}.{fraction}");
            let ours = Reader::new(&text).f64().unwrap();
            let serde: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(ours.to_bits(), serde.to_bits(), "{text}");
        }
    }

    #[test]
    fn the_common_shapes_are_read_as_serde_reads_them() {
        for text in REQUESTS {
            assert!(same(request(text), text), "handed to serde: {text}");
        }
        for text in COMPLETIONS {
            assert!(same(completion(text), text), "handed to serde: {text}");
        }
        for text in CHUNKS {
            assert!(same(chunk(text), text), "handed to serde: {text}");
        }
    }

    /// Every one-byte change or insertion in every document: the reader gives up, or reads what serde
    /// reads; it never takes what serde refuses.
    #[test]
    fn mutated_documents_are_refused_or_read_as_serde_reads_them() {
        let replacements: [&[u8]; 18] = [
            b"", b" ", b"\"", b"\\", b"{", b"}", b"[", b"]", b",", b":", b"0", b"-", b".", b"e",
            b"n", b"t", b"\x01", b"x",
        ];
        for (documents, kind) in [(REQUESTS, 0), (COMPLETIONS, 1), (CHUNKS, 2)] {
            for text in documents {
                for at in 0..text.len() {
                    for (replacement, width) in replacements.iter().flat_map(|r| [(r, 0), (r, 1)]) {
                        // `width` 0 inserts, 1 replaces (or, with nothing, deletes).
                        let mut bytes = text.as_bytes().to_vec();
                        bytes.splice(at..at + width, replacement.iter().copied());
                        let Ok(mutated) = std::str::from_utf8(&bytes) else {
                            continue;
                        };
                        match kind {
                            0 => same(request(mutated), mutated),
                            1 => same(completion(mutated), mutated),
                            _ => same(chunk(mutated), mutated),
                        };
                    }
                }
            }
        }
    }
}
