//! [`LineFormat`]: the text log line, written without `fmt` machinery on the hot path.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The text format of [`init_logging`](crate::init_logging): the same line as
/// tracing-subscriber's default format, written directly.
///
/// ```text
/// 2026-11-30T03:27:42.043492Z  INFO sllmp::request: request completed request_id="…" status=200 latency_ms=1.93
/// ```
///
/// Timestamp (UTC, microseconds), level, the spans in scope (`name{fields}:`), target,
/// message, then `key=value` fields with strings quoted. The default formatter spends about
/// as many instructions on one request-log event as the whole JSON parse of the request
/// (callgrind, see docs/benchmarks.md); this one writes numbers with `itoa` and quoted
/// strings with one copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineFormat;

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write_timestamp(&mut writer, SystemTime::now())?;
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => "ERROR",
            Level::WARN => " WARN",
            Level::INFO => " INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        if writer.has_ansi_escapes() {
            let color = match *meta.level() {
                Level::ERROR => "31",
                Level::WARN => "33",
                Level::INFO => "32",
                Level::DEBUG => "34",
                Level::TRACE => "35",
            };
            write!(writer, " \x1b[{color}m{level}\x1b[0m ")?;
        } else {
            writer.write_char(' ')?;
            writer.write_str(level)?;
            writer.write_char(' ')?;
        }
        if let Some(scope) = ctx.event_scope() {
            let mut any = false;
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                writer.write_char(':')?;
                any = true;
            }
            if any {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = Fields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// Writes an event's fields: the message bare, then ` key=value`.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    /// Starts a `key=value` field: the separating space, the name, `=`.
    fn key(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        let name = field.name();
        self.writer
            .write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.writer.write_char('=')
    }

    /// Writes the message bare (no `message=`), after the separating space if any.
    fn message(&mut self, write: impl FnOnce(&mut Writer<'_>) -> fmt::Result) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        write(self.writer)
    }

    fn record(&mut self, write: impl FnOnce(&mut Self) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = write(self);
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(|f| {
            if field.name() == "message" {
                return f.message(|w| w.write_str(value));
            }
            f.key(field)?;
            write_quoted(f.writer, value)
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(|f| {
            f.key(field)?;
            f.writer.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(|f| {
            f.key(field)?;
            f.writer.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(|f| {
            f.key(field)?;
            f.writer.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(|f| {
            f.key(field)?;
            write!(f.writer, "{value:?}")
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record(|f| {
            f.key(field)?;
            write!(f.writer, "{value}")?;
            let mut source = value.source();
            while let Some(err) = source {
                write!(f.writer, ": {err}")?;
                source = err.source();
            }
            Ok(())
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(|f| {
            if field.name() == "message" {
                return f.message(|w| write!(w, "{value:?}"));
            }
            f.key(field)?;
            write!(f.writer, "{value:?}")
        });
    }
}

/// A string in double quotes, escaped as `{:?}` would; one copy when nothing needs escaping.
fn write_quoted(writer: &mut Writer<'_>, value: &str) -> fmt::Result {
    let plain = value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        writer.write_char('"')?;
        writer.write_str(value)?;
        writer.write_char('"')
    } else {
        write!(writer, "{value:?}")
    }
}

/// `2026-11-30T03:27:42.043492Z`: RFC 3339, UTC, microseconds.
fn write_timestamp(writer: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    put(&mut buf[0..4], year as u64);
    put(&mut buf[5..7], month);
    put(&mut buf[8..10], day);
    put(&mut buf[11..13], of_day / 3600);
    put(&mut buf[14..16], of_day / 60 % 60);
    put(&mut buf[17..19], of_day % 60);
    put(&mut buf[20..26], u64::from(since.subsec_micros()));
    writer.write_str(std::str::from_utf8(&buf).expect("ASCII digits"))
}

/// Writes `value` as zero-padded decimal digits filling `out`.
fn put(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 123_456, "2000-02-29T00:00:00.123456Z"),
            (1_796_009_262, 43_492, "2026-11-30T03:27:42.043492Z"),
            (4_107_542_399, 999_999, "2100-02-28T23:59:59.999999Z"),
        ];
        for (secs, micros, expected) in cases {
            let at = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
            let mut out = String::new();
            write_timestamp(&mut out, at).unwrap();
            assert_eq!(out, expected);
        }
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    /// Logs one event with every kind of field inside a span, through `subscriber`.
    fn log_sample() {
        let span = tracing::info_span!("conn", peer = "10.0.0.1");
        let _entered = span.enter();
        let err = std::io::Error::other("upstream closed");
        tracing::warn!(
            target: "sllmp::request",
            request_id = "req-1",
            quoted = "say \"hi\"\n",
            r#type = "x",
            status = 502u64,
            delta = -3i64,
            stream = true,
            latency_ms = 1.0,
            error = &err as &(dyn std::error::Error + 'static),
            detail = ?Some(7),
            "request {} completed",
            "abc"
        );
    }

    /// The sample line, after its timestamp, in `LineFormat` or the default format.
    fn render(line_format: bool) -> String {
        let capture = Capture::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(capture.clone());
        if line_format {
            tracing::subscriber::with_default(
                builder.event_format(LineFormat).finish(),
                log_sample,
            );
        } else {
            tracing::subscriber::with_default(builder.finish(), log_sample);
        }
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let (timestamp, rest) = text.split_at(27);
        assert!(
            timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
            "{text}"
        );
        rest.to_string()
    }

    #[test]
    fn lines_are_the_default_format() {
        let ours = render(true);
        assert_eq!(
            ours,
            "  WARN conn{peer=\"10.0.0.1\"}: sllmp::request: request abc completed \
             request_id=\"req-1\" quoted=\"say \\\"hi\\\"\\n\" type=\"x\" status=502 delta=-3 \
             stream=true latency_ms=1.0 error=upstream closed detail=Some(7)\n"
        );
        assert_eq!(ours, render(false));
    }
}
