//! Middleware every gateway needs: request validation (always on) and retry with backoff.

mod retry;
mod validation;

pub use retry::Retry;
pub use validation::Validation;
