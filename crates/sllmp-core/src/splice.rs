//! Writing a routed request from the client's bytes: every member as the client wrote it,
//! except the few that routing decides ([`UpstreamRequest::to_json`](crate::UpstreamRequest::to_json)).
//!
//! The scan only finds where the top-level members start and end: the bytes were parsed
//! into the request already, so they are valid JSON. Strings are skipped with `memchr`, so
//! a long prompt costs little more than its copy.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde::Serialize;

use crate::ChatRequest;
use crate::chat_input::Replaced;

/// Where `"model"` and `"metadata"` may start: one search finds both.
static QUOTE_M: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"m"));

/// The quick splice, for a request routing changed little: no `metadata` to take out (not
/// even a `null` one), `stream` as the client sent it, and `stream_options` either as sent
/// or to be added. The model's value is found by a search instead of a scan, and replaced;
/// `None` when the request is not such a one (then [`splice_routed`] scans it).
///
/// Without `\u` escapes in the bytes every key is written as itself, so when `"model"`
/// occurs once it is the top-level key (a nested key or a value spelled `"model"` makes
/// two, and the request is scanned).
pub(crate) fn splice_model(wire: &[u8], client: &Replaced, req: &ChatRequest) -> Option<Vec<u8>> {
    if client.metadata.is_some() || client.stream != req.stream {
        return None;
    }
    let add_options = match (client.include_usage, &req.stream_options) {
        (None, None) => None,
        (None, Some(options)) => Some(options),
        (Some(before), Some(now)) if before == now.include_usage => None,
        _ => return None,
    };
    let sent_model = client.model.as_bytes();
    if sent_model
        .iter()
        .any(|&b| b == b'"' || b == b'\\' || b < 0x20)
        || memchr::memchr_iter(b'\\', wire).any(|at| wire.get(at + 1) == Some(&b'u'))
    {
        return None;
    }
    let mut key = None;
    for at in QUOTE_M.find_iter(wire) {
        let rest = &wire[at + 2..];
        if rest.starts_with(b"etadata\"") {
            return None;
        }
        if rest.starts_with(b"odel\"") {
            if key.is_some() {
                return None;
            }
            key = Some(at);
        }
    }
    let mut at = skip_ws(wire, key? + b"\"model\"".len());
    if wire.get(at) != Some(&b':') {
        return None;
    }
    at = skip_ws(wire, at + 1);
    let (open, start) = (at, at + 1);
    let end = start + sent_model.len();
    if wire.get(open) != Some(&b'"')
        || wire.get(start..end) != Some(sent_model)
        || wire.get(end) != Some(&b'"')
    {
        return None;
    }
    let mut out = Vec::with_capacity(wire.len() + req.model.len() + 48);
    out.extend_from_slice(&wire[..open]);
    serde_json::to_writer(&mut out, &req.model).ok()?;
    let rest = &wire[end + 1..];
    match add_options {
        None => out.extend_from_slice(rest),
        Some(options) => {
            let close = memchr::memrchr(b'}', rest)?;
            out.extend_from_slice(&rest[..close]);
            out.extend_from_slice(b",\"stream_options\":");
            serde_json::to_writer(&mut out, options).ok()?;
            out.extend_from_slice(&rest[close..]);
        }
    }
    Some(out)
}

fn skip_ws(json: &[u8], mut at: usize) -> usize {
    while matches!(json.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The members routing decides, in the order they are added when the client left them out.
const ROUTED: [&[u8]; 4] = [b"model", b"metadata", b"stream", b"stream_options"];

/// The client's JSON object `wire` with its routed members written from `req`, in place
/// (added at the end when absent; left out when `req` has none), and every other member
/// copied. `None` when the bytes are not as expected (a key written with escapes, which
/// could spell a routed key in disguise): the caller encodes the value instead.
pub(crate) fn splice_routed(wire: &[u8], req: &ChatRequest) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(wire.len() + 48);
    let mut written = [false; ROUTED.len()];
    let mut scan = Scanner { json: wire, at: 0 };
    out.push(b'{');
    scan.skip_ws();
    scan.eat(b'{')?;
    scan.skip_ws();
    if scan.peek()? == b'}' {
        scan.at += 1;
    } else {
        loop {
            let start = scan.at;
            let key = scan.key()?;
            scan.skip_ws();
            scan.eat(b':')?;
            scan.skip_ws();
            scan.skip_value()?;
            let end = scan.at;
            match ROUTED.iter().position(|routed| *routed == key) {
                Some(index) if !written[index] => {
                    written[index] = true;
                    write_routed(&mut out, index, req)?;
                }
                // A routed key given twice: the value holds the one that counts.
                Some(_) => {}
                None => {
                    separate(&mut out);
                    out.extend_from_slice(&wire[start..end]);
                }
            }
            scan.skip_ws();
            match scan.next()? {
                b',' => scan.skip_ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    scan.skip_ws();
    if scan.at != wire.len() {
        return None;
    }
    for (index, done) in written.into_iter().enumerate() {
        if !done {
            write_routed(&mut out, index, req)?;
        }
    }
    out.push(b'}');
    Some(out)
}

/// Writes routed member `index` of `req`, or nothing when the request has none.
fn write_routed(out: &mut Vec<u8>, index: usize, req: &ChatRequest) -> Option<()> {
    match index {
        0 => write_member(out, "model", &req.model),
        1 => req
            .metadata
            .as_ref()
            .map_or(Some(()), |m| write_member(out, "metadata", m)),
        2 => req
            .stream
            .as_ref()
            .map_or(Some(()), |s| write_member(out, "stream", s)),
        _ => req
            .stream_options
            .as_ref()
            .map_or(Some(()), |o| write_member(out, "stream_options", o)),
    }
}

fn write_member<T: Serialize>(out: &mut Vec<u8>, key: &str, value: &T) -> Option<()> {
    separate(out);
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    serde_json::to_writer(&mut *out, value).ok()
}

/// A comma, unless this is the object's first member.
fn separate(out: &mut Vec<u8>) {
    if out.len() > 1 {
        out.push(b',');
    }
}

struct Scanner<'a> {
    json: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.json.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn eat(&mut self, expected: u8) -> Option<()> {
        (self.next()? == expected).then_some(())
    }

    fn skip_ws(&mut self) {
        self.at = skip_ws(self.json, self.at);
    }

    /// A member's key, without its quotes; `None` if it has escapes.
    fn key(&mut self) -> Option<&'a [u8]> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.at + 1;
        self.skip_string()?;
        let key = self.json.get(start..self.at - 1)?;
        (!key.contains(&b'\\')).then_some(key)
    }

    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => self.skip_nested(),
            _ => {
                let rest = self.json.get(self.at..)?;
                let len = rest
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                    .unwrap_or(rest.len());
                self.at += len;
                (len > 0).then_some(())
            }
        }
    }

    /// From an opening quote to just past the closing one.
    fn skip_string(&mut self) -> Option<()> {
        self.at += 1;
        loop {
            let found = memchr::memchr2(b'"', b'\\', self.json.get(self.at..)?)?;
            self.at += found;
            if self.json[self.at] == b'\\' {
                self.at += 2;
            } else {
                self.at += 1;
                return Some(());
            }
        }
    }

    /// From an opening bracket to just past its closing one.
    fn skip_nested(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.skip_string()?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        self.at += 1;
                        return Some(());
                    }
                }
                _ => {}
            }
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(model: &str) -> ChatRequest {
        ChatRequest {
            model: model.into(),
            ..ChatRequest::default()
        }
    }

    #[test]
    fn members_are_copied_and_routed_ones_rewritten_in_place() {
        let out = splice_routed(
            br#"{"temperature":0.5,"model":"p:m","metadata":{"a":"}"},"messages":[{"content":"x\"]"}]}"#,
            &routed("m"),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"temperature":0.5,"model":"m","messages":[{"content":"x\"]"}]}"#
        );
    }

    #[test]
    fn an_empty_object_gets_the_routed_members() {
        let out = splice_routed(b" {} ", &routed("m")).unwrap();
        assert_eq!(out, br#"{"model":"m"}"#);
    }

    #[test]
    fn a_routed_key_given_twice_is_written_once() {
        let out = splice_routed(br#"{"model":"a","model":"b","n":1}"#, &routed("m")).unwrap();
        assert_eq!(out, br#"{"model":"m","n":1}"#);
    }

    #[test]
    fn unexpected_bytes_give_up() {
        for wire in [
            &br#"{"model":"m""#[..],
            br#"{"model" "m"}"#,
            br#"{"model":"m"} x"#,
            br#"["model"]"#,
            br#"{"a":[1,2}"#,
            br#"{"a":"\"#,
            b"",
        ] {
            assert_eq!(splice_routed(wire, &routed("m")), None, "{wire:?}");
        }
    }
}
