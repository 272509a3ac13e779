//! Observability middleware for SLLMP.
//!
//! Today: [`RequestLog`], one structured `tracing` event per request when it completes (the
//! Python original's `logging_middleware`); [`BatchWriter`], the log sink that writes those
//! events in the background without a system call or a thread wake-up per line; and
//! [`init_logging`], which installs both the way the `sllmp` binary runs them.
//! OpenTelemetry traces, Langfuse generations and Prometheus metrics land here next. Depends on `sllmp-pipeline` and `sllmp-core` only;
//! never on axum, a provider or the limits crate. Exporters batch in the background: nothing
//! here blocks the request path.
//!
//! ```
//! use sllmp_observe::RequestLog;
//! use sllmp_pipeline::Pipeline;
//!
//! fn factory(pipeline: &mut Pipeline) {
//!     pipeline.add(RequestLog::new());
//! }
//! ```

mod batch_writer;
mod line_format;
mod logging;
mod request_log;

pub use batch_writer::{BatchWriter, BatchWriterGuard};
pub use line_format::LineFormat;
pub use logging::{LogFormat, LogGuard, init_logging};
pub use request_log::RequestLog;
