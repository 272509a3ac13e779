//! [`LineFormat`]: the text log line, written without `fmt` machinery on the hot path.

use std::fmt::{self, Write as _};
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
/// message, then `key=value` fields with strings quoted. (One difference: a float exactly
/// halfway between two shortest decimal forms ends in an even digit; see `write_f64`.) The default formatter spends about
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
        // The line is built in a buffer of this thread's (plain pushes, no `dyn Write` call
        // per piece) and handed to the writer in one piece.
        with_line(|line| {
            format_line(line, ctx, writer.has_ansi_escapes(), event)
                .and_then(|()| writer.write_str(line))
        })
    }
}

thread_local! {
    /// The line being built; kept between lines so that logging does not allocate.
    static LINE: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
}

/// Runs `build` with this thread's line buffer, emptied (lines are built in it with plain
/// pushes, then handed on in one piece).
pub(crate) fn with_line<R>(build: impl FnOnce(&mut String) -> R) -> R {
    let mut line = LINE.take();
    line.clear();
    let result = build(&mut line);
    LINE.set(line);
    result
}

fn format_line<S, N>(
    line: &mut String,
    ctx: &FmtContext<'_, S, N>,
    ansi: bool,
    event: &Event<'_>,
) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    write_timestamp(line, SystemTime::now())?;
    let meta = event.metadata();
    let level = match *meta.level() {
        Level::ERROR => "ERROR",
        Level::WARN => " WARN",
        Level::INFO => " INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    };
    if ansi {
        let color = match *meta.level() {
            Level::ERROR => "31",
            Level::WARN => "33",
            Level::INFO => "32",
            Level::DEBUG => "34",
            Level::TRACE => "35",
        };
        write!(line, " \x1b[{color}m{level}\x1b[0m ")?;
    } else {
        line.push(' ');
        line.push_str(level);
        line.push(' ');
    }
    if let Some(scope) = ctx.event_scope() {
        let mut any = false;
        for span in scope.from_root() {
            line.push_str(span.name());
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>()
                && !fields.is_empty()
            {
                write!(line, "{{{fields}}}")?;
            }
            line.push(':');
            any = true;
        }
        if any {
            line.push(' ');
        }
    }
    line.push_str(meta.target());
    line.push_str(": ");
    let mut fields = Fields {
        line,
        first: true,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    line.push('\n');
    Ok(())
}

/// Writes an event's fields: the message bare, then ` key=value`.
struct Fields<'a> {
    line: &'a mut String,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_> {
    /// Starts a `key=value` field: the separating space, the name, `=`.
    fn key(&mut self, field: &Field) {
        if !std::mem::take(&mut self.first) {
            self.line.push(' ');
        }
        let name = field.name();
        self.line.push_str(name.strip_prefix("r#").unwrap_or(name));
        self.line.push('=');
    }

    /// Starts the message (written bare, no `message=`): the separating space if any.
    fn message(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.line.push(' ');
        }
    }

    fn record(&mut self, write: impl FnOnce(&mut Self) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = write(self);
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(|f| {
            if field.name() == "message" {
                f.message();
                f.line.push_str(value);
                return Ok(());
            }
            f.key(field);
            write_quoted(f.line, value)
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(|f| {
            f.key(field);
            f.line.push_str(itoa::Buffer::new().format(value));
            Ok(())
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(|f| {
            f.key(field);
            f.line.push_str(itoa::Buffer::new().format(value));
            Ok(())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(|f| {
            f.key(field);
            f.line.push_str(if value { "true" } else { "false" });
            Ok(())
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(|f| {
            f.key(field);
            write_f64(f.line, value)
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record(|f| {
            f.key(field);
            write!(f.line, "{value}")?;
            let mut source = value.source();
            while let Some(err) = source {
                write!(f.line, ": {err}")?;
                source = err.source();
            }
            Ok(())
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(|f| {
            if field.name() == "message" {
                f.message();
            } else {
                f.key(field);
            }
            write!(f.line, "{value:?}")
        });
    }
}

/// A string in double quotes, escaped as `{:?}` would; one copy when nothing needs escaping.
pub(crate) fn write_quoted(line: &mut String, value: &str) -> fmt::Result {
    // No early exit: the check then compiles to vector code.
    let plain = value.bytes().fold(true, |plain, b| {
        plain & (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\')
    });
    if plain {
        line.reserve(value.len() + 2);
        line.push('"');
        line.push_str(value);
        line.push('"');
        Ok(())
    } else {
        write!(line, "{value:?}")
    }
}

/// `value` as `{:?}` writes it: the shortest digits that read back as `value`, `1.0` for
/// whole numbers.
///
/// Where `{:?}` writes plain decimals, zmij writes them, several times cheaper than
/// `core::fmt`. The two differ only when `value` lies exactly halfway between two shortest
/// candidates (`13095775.6767578125`): zmij rounds the last digit to even (`…812`),
/// `{:?}` up (`…813`); both read back as `value`. Exponent notation, infinities and NaN
/// are written by `{:?}` itself.
pub(crate) fn write_f64(line: &mut String, value: f64) -> fmt::Result {
    let magnitude = value.abs();
    if magnitude == 0.0 || (1e-4..1e16).contains(&magnitude) {
        line.push_str(zmij::Buffer::new().format_finite(value));
        Ok(())
    } else {
        write!(line, "{value:?}")
    }
}

/// `2026-11-30T03:27:42.043492Z`: RFC 3339, UTC, microseconds.
pub(crate) fn write_timestamp(writer: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    thread_local! {
        /// The last second written, and its text: lines of the same second reuse it.
        static LAST: std::cell::Cell<(u64, [u8; 27])> =
            const { std::cell::Cell::new((u64::MAX, [0; 27])) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let mut buf = LAST.with(|last| match last.get() {
        (at, buf) if at == secs => buf,
        _ => {
            let buf = second_text(secs);
            last.set((secs, buf));
            buf
        }
    });
    put(&mut buf[20..26], u64::from(since.subsec_micros()));
    writer.write_str(std::str::from_utf8(&buf).expect("ASCII digits"))
}

/// `YYYY-MM-DDTHH:MM:SS.000000Z` for a count of seconds since 1970.
fn second_text(secs: u64) -> [u8; 27] {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    put(&mut buf[0..4], year as u64);
    put(&mut buf[5..7], month);
    put(&mut buf[8..10], day);
    put(&mut buf[11..13], of_day / 3600);
    put(&mut buf[14..16], of_day / 60 % 60);
    put(&mut buf[17..19], of_day % 60);
    buf
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
    use std::time::Duration;

    use super::*;
    use sllmp_test_support::LogCapture as Capture;

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

    #[test]
    fn floats_are_written_as_debug_writes_them() {
        let mut samples = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            1.93,
            12.5,
            100.0,
            1e-4,
            9.99e-5,
            1e15,
            9.999e15,
            1e16,
            123_456.789,
            0.000_123,
            2.5e-7,
            1e300,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        // Latencies in milliseconds as `as_secs_f64() * 1000.0` produces them, and a spread
        // of magnitudes.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push(Duration::from_nanos(x % 10_000_000_000).as_secs_f64() * 1000.0);
            samples.push(f64::from_bits(x));
            // Every magnitude the fast path takes, with all 52 mantissa bits random.
            let exponent = 1010 + (x >> 52) % 40; // 2^-13 .. 2^27
            samples.push(f64::from_bits((exponent << 52) | (x & ((1 << 52) - 1))));
        }
        let mut ties = 0;
        let total = samples.len();
        for value in samples {
            let mut ours = String::new();
            write_f64(&mut ours, value).unwrap();
            let debug = format!("{value:?}");
            if ours == debug {
                continue;
            }
            // Only an exact tie may differ, and only in its last digit, by one.
            let (ours_head, ours_last) = ours.split_at(ours.len() - 1);
            let (debug_head, debug_last) = debug.split_at(debug.len() - 1);
            let last = |s: &str| s.as_bytes()[0] as i32;
            assert!(
                ours_head == debug_head && (last(ours_last) - last(debug_last)).abs() == 1,
                "bits {:#x}: {ours} vs {debug}",
                value.to_bits()
            );
            assert_eq!(
                ours.parse::<f64>().unwrap().to_bits(),
                value.to_bits(),
                "{ours}"
            );
            ties += 1;
        }
        // Exact ties are rare (about 1 in 12 000 random values of this range).
        assert!(ties * 1000 < total, "{ties} ties in {total}");
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
        let text = capture.text();
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
