//! Middleware every gateway needs: request validation (always on), and the policies of the
//! attempts (retries, fallbacks, timeouts).

mod fallbacks;
mod retry;
mod timeouts;
mod validation;

pub use fallbacks::Fallbacks;
pub use retry::Retry;
pub use timeouts::SetTimeouts;
pub use validation::Validation;
