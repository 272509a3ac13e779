//! [`CompletionTracker`]: counts the requests whose completion work is still running, so
//! that a shutdown can wait for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
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
    aborted: AtomicBool,
    /// The tasks waiting for an abort, woken by it.
    waiting: Mutex<Waiters>,
}

/// Wakers in slots that are reused, so memory stays bounded by the requests in flight.
#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
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
        let mut waiting = self.inner.lock_waiters();
        for waker in waiting.slots.iter_mut().filter_map(Option::take) {
            waker.wake();
        }
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

impl Inner {
    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
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

    /// A future resolving at the abort. It registers its task once and, polled again by
    /// the same task, only reads a flag: no lock per poll (a `Notify` takes one on every
    /// poll of a waiting future).
    pub(crate) fn wait(&self) -> AbortWait<'_> {
        AbortWait {
            inner: self.0.as_deref(),
            slot: None,
            waker: None,
        }
    }
}

/// See [`AbortSignal::wait`].
pub(crate) struct AbortWait<'a> {
    inner: Option<&'a Inner>,
    slot: Option<usize>,
    /// The waker registered in `slot`, to tell whether a poll comes from the same task.
    waker: Option<Waker>,
}

impl Future for AbortWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(inner) = self.inner else {
            return Poll::Pending;
        };
        if inner.aborted.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        let waker = cx.waker().clone();
        {
            let mut waiting = inner.lock_waiters();
            let slot = match self.slot {
                Some(slot) => slot,
                None => match waiting.free.pop() {
                    Some(slot) => slot,
                    None => {
                        waiting.slots.push(None);
                        waiting.slots.len() - 1
                    }
                },
            };
            waiting.slots[slot] = Some(waker.clone());
            self.slot = Some(slot);
        }
        self.waker = Some(waker);
        // An abort between the first check and the registration is not missed.
        if inner.aborted.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for AbortWait<'_> {
    fn drop(&mut self) {
        if let (Some(inner), Some(slot)) = (self.inner, self.slot) {
            let mut waiting = inner.lock_waiters();
            waiting.slots[slot] = None;
            waiting.free.push(slot);
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
