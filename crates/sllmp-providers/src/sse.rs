//! A server-sent-events reader that survives any byte boundary.
//!
//! It follows the WHATWG event-stream rules: lines end in LF, CRLF or CR (a CRLF split
//! across two reads is one line end); a blank line dispatches the event; `:` starts a
//! comment; several `data:` lines join with `\n`; one space after the colon is dropped.
//! Unlike a browser it also dispatches an event left open when the stream ends without a
//! final newline, because an upstream that forgets it still meant the event.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;

/// One event of an event stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; empty for the default `message` type.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field, if the event had one.
    pub id: Option<String>,
}

/// An incremental event-stream decoder: feed it bytes as they arrive, take events out.
///
/// ```
/// use sllmp_providers::sse::SseDecoder;
///
/// let mut decoder = SseDecoder::default();
/// let mut events = Vec::new();
/// decoder.feed(b"data: {\"a\":", &mut events);
/// decoder.feed(b"1}\r\n\r", &mut events);
/// decoder.feed(b"\n: keep-alive\n\ndata: [DONE]", &mut events);
/// events.extend(decoder.finish());
/// assert_eq!(events[0].data, r#"{"a":1}"#);
/// assert_eq!(events[1].data, "[DONE]");
/// ```
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// The most bytes one event may hold (its open line and its data); 0 for no limit.
    limit: usize,
    /// An event went over the limit; nothing more is decoded.
    oversized: bool,
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// The previous read ended in CR: a leading LF now belongs to that line end.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
}

impl SseDecoder {
    /// A decoder refusing events over `limit` bytes ([`SseDecoder::is_oversized`]).
    pub fn with_limit(limit: usize) -> SseDecoder {
        SseDecoder {
            limit,
            ..SseDecoder::default()
        }
    }

    /// Whether an event went over the limit: the stream is broken, and nothing more is
    /// decoded.
    pub fn is_oversized(&self) -> bool {
        self.oversized
    }

    /// Decodes `bytes`, appending every event they complete to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) {
        // An empty read must not forget that the last one ended in CR.
        if bytes.is_empty() || self.oversized {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(at) = memchr::memchr2(b'\n', b'\r', bytes) {
            let line_end = bytes[at];
            if self.line.is_empty() {
                self.take_line(&bytes[..at], out);
            } else {
                self.line.extend_from_slice(&bytes[..at]);
                let line = std::mem::take(&mut self.line);
                self.take_line(&line, out);
            }
            bytes = &bytes[at + 1..];
            if line_end == b'\r' {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.over_limit(0) {
                return;
            }
        }
        if !self.over_limit(bytes.len()) {
            self.line.extend_from_slice(bytes);
        }
    }

    /// Whether the event being read, with `more` bytes of its line to come, is over the
    /// limit; if so, the decoder stops.
    fn over_limit(&mut self, more: usize) -> bool {
        if self.limit > 0 && self.line.len() + self.data.len() + more > self.limit {
            self.oversized = true;
            self.line = Vec::new();
            self.data = String::new();
        }
        self.oversized
    }

    /// Ends the stream: a last line without a line end, and an event without its blank
    /// line, are still delivered.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.oversized {
            return None;
        }
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.take_line(&line, &mut out);
        }
        self.dispatch(&mut out);
        out.pop()
    }

    fn take_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            return self.dispatch(out);
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8_lossy(value).into_owned());
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent {
                event: std::mem::take(&mut self.event),
                data: std::mem::take(&mut self.data),
                id: self.id.clone(),
            });
        } else {
            self.event.clear();
        }
        self.has_data = false;
    }
}

/// An event of a stream was over its size limit ([`SseStream::with_limit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLarge {
    /// The limit, in bytes.
    pub limit: usize,
}

impl std::fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a stream event is larger than the limit of {} bytes",
            self.limit
        )
    }
}

impl std::error::Error for EventTooLarge {}

/// Events decoded from a stream of byte chunks (such as [`HttpResponse::into_stream`](crate::HttpResponse::into_stream)).
pub struct SseStream<S> {
    inner: S,
    decoder: SseDecoder,
    ready: std::collections::VecDeque<SseEvent>,
    scratch: Vec<SseEvent>,
    done: bool,
}

impl<S> SseStream<S> {
    /// Wraps a byte stream.
    pub fn new(inner: S) -> SseStream<S> {
        SseStream::with_limit(inner, 0)
    }

    /// Wraps a byte stream whose events may be at most `limit` bytes (0: no limit); a larger
    /// one ends the stream with an [`EventTooLarge`] error.
    pub fn with_limit(inner: S, limit: usize) -> SseStream<S> {
        SseStream {
            inner,
            decoder: SseDecoder::with_limit(limit),
            ready: Default::default(),
            scratch: Vec::new(),
            done: false,
        }
    }

    /// The byte stream back, for what remains of it after the events read so far.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, E> Stream for SseStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: From<EventTooLarge>,
{
    type Item = Result<SseEvent, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(event) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(Some(Ok(bytes))) => {
                    this.decoder.feed(&bytes, &mut this.scratch);
                    this.ready.extend(this.scratch.drain(..));
                    if this.decoder.is_oversized() {
                        this.done = true;
                        this.ready.clear();
                        let limit = this.decoder.limit;
                        return Poll::Ready(Some(Err(EventTooLarge { limit }.into())));
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    this.ready.extend(this.decoder.finish());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode_all(parts: &[&[u8]]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::default();
        let mut out = Vec::new();
        for part in parts {
            decoder.feed(part, &mut out);
        }
        out.extend(decoder.finish());
        out
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn reads_openai_frames() {
        let events = decode_all(&[b"data: {\"x\":1}\n\ndata: {\"x\":2}\n\ndata: [DONE]\n\n"]);
        assert_eq!(data(&events), [r#"{"x":1}"#, r#"{"x":2}"#, "[DONE]"]);
    }

    #[test]
    fn joins_multi_line_data_and_skips_comments() {
        let events = decode_all(&[b": ping\n\nevent: delta\ndata: a\ndata:b\nid: 7\n\n"]);
        assert_eq!(
            events,
            [SseEvent {
                event: "delta".into(),
                data: "a\nb".into(),
                id: Some("7".into()),
            }]
        );
    }

    #[test]
    fn handles_crlf_cr_and_a_missing_final_newline() {
        let events = decode_all(&[b"data: a\r\n\r\ndata: b\r\rdata: c"]);
        assert_eq!(data(&events), ["a", "b", "c"]);
    }

    #[test]
    fn a_crlf_split_across_reads_is_one_line_end() {
        let events = decode_all(&[b"data: a\r", b"\n", b"\r", b"\ndata: b\n\n"]);
        assert_eq!(data(&events), ["a", "b"]);
    }

    #[test]
    fn an_empty_read_between_cr_and_lf_changes_nothing() {
        let events = decode_all(&[b"data: a\r", b"", b"\ndata: b\r\n\r\n"]);
        assert_eq!(
            events,
            [SseEvent {
                event: String::new(),
                data: "a\nb".into(),
                id: None,
            }]
        );
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        let events = decode_all(&[b"event: ping\n\ndata: x\n\n"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "");
    }

    fn transcript() -> impl Strategy<Value = Vec<u8>> {
        let line_end = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
        let event = (
            prop::collection::vec("[a-zA-Z0-9{}\":, é€]{0,20}", 1..3),
            line_end.clone(),
            prop::bool::ANY,
        )
            .prop_map(|(lines, end, comment)| {
                let mut s = String::new();
                if comment {
                    s.push_str(": comment");
                    s.push_str(end);
                }
                for line in lines {
                    s.push_str("data: ");
                    s.push_str(&line);
                    s.push_str(end);
                }
                s.push_str(end);
                s
            });
        prop::collection::vec(event, 0..8).prop_map(|events| events.concat().into_bytes())
    }

    proptest! {
        /// Splitting a transcript at arbitrary byte boundaries never changes its events.
        #[test]
        fn random_splits_decode_like_the_whole(
            bytes in transcript(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let whole = decode_all(&[&bytes]);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut parts = Vec::new();
            let mut start = 0;
            for point in points {
                parts.push(&bytes[start..point]);
                start = point;
            }
            parts.push(&bytes[start..]);
            prop_assert_eq!(decode_all(&parts), whole);
        }
    }
}
