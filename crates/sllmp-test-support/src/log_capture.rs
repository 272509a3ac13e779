//! [`LogCapture`]: a `tracing` writer that keeps what it is given, to assert on log lines.

use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::Registry;
use tracing_subscriber::fmt::format::DefaultFields;
use tracing_subscriber::fmt::{FormatEvent, MakeWriter};
use tracing_subscriber::util::SubscriberInitExt;

/// Collects everything a `tracing` subscriber writes; clones share the buffer.
///
/// ```
/// use sllmp_test_support::LogCapture;
///
/// let capture = LogCapture::default();
/// let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(capture.clone()).finish();
/// tracing::subscriber::with_default(subscriber, || tracing::info!(answer = 42, "hello"));
/// assert!(capture.text().contains("hello answer=42"));
/// ```
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// The process's capture: on the first call, installs the global `tracing` subscriber
    /// (`INFO` and above, no colours, events formatted by what `format` returns) writing
    /// into a new capture; later calls return the same capture and ignore `format`. For
    /// events emitted in spawned tasks, on any thread. If another global subscriber was
    /// installed first, the capture stays empty.
    pub fn global<E>(format: impl FnOnce() -> E) -> &'static LogCapture
    where
        E: FormatEvent<Registry, DefaultFields> + Send + Sync + 'static,
    {
        static GLOBAL: OnceLock<LogCapture> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let capture = LogCapture::default();
            let _ = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(capture.clone())
                .event_format(format())
                .finish()
                .try_init();
            capture
        })
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}
