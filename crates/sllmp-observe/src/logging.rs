//! [`init_logging`]: the process's `tracing` subscriber, writing through a [`BatchWriter`].

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::{BatchWriter, BatchWriterGuard, LineFormat};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps the background log writer running; dropping it flushes what is buffered.
pub struct LogGuard {
    _guard: BatchWriterGuard<Box<dyn Write + Send>>,
}

/// Installs the global `tracing` subscriber: level from `RUST_LOG` (default `info`), lines
/// in `format`, written to `file` (appended) or to stderr through a [`BatchWriter`] flushed
/// every 100 ms, so logging never blocks or wakes a thread per request.
pub fn init_logging(file: Option<&Path>, format: LogFormat) -> std::io::Result<LogGuard> {
    let (out, ansi): (Box<dyn Write + Send>, bool) = match file {
        Some(path) => (
            Box::new(File::options().create(true).append(true).open(path)?),
            false,
        ),
        // Colours only for a terminal: not in a file or a pipe stderr was redirected to.
        None => (
            Box::new(std::io::stderr()),
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ),
    };
    let (writer, guard) = BatchWriter::spawn(out, Duration::from_millis(100), 16 << 20);
    if format == LogFormat::Text && !ansi {
        // Request lines skip `tracing`'s field-by-field dispatch; same line, same writer.
        crate::request_log::write_lines_to(writer.clone());
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(move || writer.clone());
    match format {
        LogFormat::Text => builder.event_format(LineFormat).init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(LogGuard { _guard: guard })
}
