//! [`CompletionTracker`]: counts the requests whose completion work is still running, so
//! that a shutdown can wait for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Counts pipelines from their start until their `on_complete` hooks have run, and stops
/// them when a shutdown's grace period is over.
///
/// A server hands one tracker to every pipeline it starts ([`Pipeline::track`](crate::Pipeline::track)).
/// At shutdown, once the grace period is over, it calls [`CompletionTracker::abort`]: the
/// requests still running end with a 503 `server_shutting_down` (a stream with that error
/// frame), and their completion hooks run. It then waits for
/// [`CompletionTracker::wait_idle`], so that what completion hooks record (logs, budget
/// settlements, traces) is not lost with the process. Clones share the count.
#[derive(Clone, Default)]
pub struct CompletionTracker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    active: AtomicUsize,
    idle: Notify,
    aborted: std::sync::atomic::AtomicBool,
    abort: Notify,
}

impl CompletionTracker {
    /// A tracker with nothing in flight.
    pub fn new() -> CompletionTracker {
        CompletionTracker::default()
    }

    /// Pipelines started and not yet completed.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Waits until no pipeline is in flight, for at most `limit`; `true` if none is.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                tokio::pin!(notified);
                // Registered before the check: a completion between the two is not missed.
                notified.as_mut().enable();
                if self.active() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Stops every pipeline still running (and any started later): each ends with a 503
    /// `server_shutting_down` and runs its completion hooks.
    pub fn abort(&self) {
        self.inner.aborted.store(true, Ordering::Release);
        self.inner.abort.notify_waiters();
    }

    pub(crate) fn enter(&self) -> Token {
        self.inner.active.fetch_add(1, Ordering::AcqRel);
        Token {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl std::fmt::Debug for CompletionTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionTracker")
            .field("active", &self.active())
            .finish()
    }
}

/// One pipeline in flight; dropped when its completion work is done.
pub(crate) struct Token {
    inner: Arc<Inner>,
}

impl Token {
    /// A signal that resolves when the tracker aborts its pipelines.
    pub(crate) fn abort_signal(&self) -> AbortSignal {
        AbortSignal(Some(Arc::clone(&self.inner)))
    }
}

/// Resolves when the pipeline must stop ([`CompletionTracker::abort`]); never without a
/// tracker.
pub(crate) struct AbortSignal(Option<Arc<Inner>>);

impl AbortSignal {
    pub(crate) fn none() -> AbortSignal {
        AbortSignal(None)
    }

    pub(crate) async fn wait(&self) {
        let Some(inner) = &self.0 else {
            return std::future::pending().await;
        };
        loop {
            let notified = inner.abort.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if inner.aborted.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if self.inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}
