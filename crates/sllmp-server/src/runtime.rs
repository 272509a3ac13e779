//! The async runtime a server runs on.

use std::num::NonZeroUsize;

/// Builds the tokio runtime for a server with `workers` threads serving requests (the
/// machine's core count when `None`).
///
/// One worker gets tokio's current-thread runtime: no work stealing and no wake-ups
/// across threads, the cheapest way to serve on a single core (the same choice
/// linkerd2-proxy makes on one core). On the benchmark machine it cut SLLMP's CPU time per
/// request by about a quarter against a two-thread work-stealing runtime (see
/// docs/benchmarks.md). More workers get tokio's multi-thread runtime with that many
/// threads, which spreads requests over the cores.
///
/// ```
/// let runtime = sllmp_server::runtime(std::num::NonZeroUsize::new(1))?;
/// runtime.block_on(async { /* Server::serve(...) */ });
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn runtime(workers: Option<NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = workers
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all().thread_name("sllmp-worker").build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_is_a_current_thread_runtime() {
        let runtime = runtime(NonZeroUsize::new(1)).unwrap();
        assert_eq!(
            runtime.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
    }

    #[test]
    fn more_workers_are_a_multi_thread_runtime_with_that_many_threads() {
        let runtime = runtime(NonZeroUsize::new(3)).unwrap();
        assert_eq!(
            runtime.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        );
        assert_eq!(runtime.metrics().num_workers(), 3);
    }
}
