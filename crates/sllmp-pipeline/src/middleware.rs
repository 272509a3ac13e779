//! The [`Middleware`] trait and the values its hooks return.

use std::time::Duration;

use bytes::Bytes;
use sllmp_core::{ChatChunk, ChatCompletion, Completion, Error, Request, Response};

use crate::{AttemptRequest, Ctx};

/// A request-scoped middleware: one instance per request, so its per-request state lives in
/// `&mut self`. Every hook has a no-op default; implement the phases you need.
///
/// Declare the hooks you implement in [`Middleware::hooks`]: the pipeline skips the others.
///
/// A middleware runs for every operation (chat completions, embeddings): `on_request`,
/// `on_attempt`, `on_error` and `on_complete` see any request; `on_chunk` and `on_response`
/// exist only for chat.
///
/// Order: `on_request` and `on_attempt` run in the order middleware were added;
/// `on_chunk`, `on_response`, `on_error` and `on_complete` run in reverse (the onion).
/// See the crate docs for the life of a request.
///
/// ```
/// use sllmp_core::{Error, Request};
/// use sllmp_pipeline::{Ctx, Flow, HookSet, Middleware, Outcome};
///
/// /// Counts the characters a request sends and logs them when it is over.
/// #[derive(Default)]
/// struct PromptSize { chars: usize }
///
/// #[async_trait::async_trait]
/// impl Middleware for PromptSize {
///     fn name(&self) -> &'static str { "prompt_size" }
///
///     fn hooks(&self) -> HookSet { HookSet::REQUEST | HookSet::COMPLETE }
///
///     async fn on_request(&mut self, _ctx: &mut Ctx, req: &mut Request) -> Result<Flow, Error> {
///         if let Some(chat) = req.chat() {
///             self.chars = chat.messages.iter().map(|m| m.text().len()).sum();
///         }
///         Ok(Flow::Continue)
///     }
///
///     async fn on_complete(&mut self, ctx: &Ctx, _outcome: &Outcome<'_>) {
///         println!("{} sent {} characters", ctx.request_id(), self.chars);
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Middleware: Send + 'static {
    /// A short snake_case name for logs and error messages.
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// The hooks this middleware implements. The pipeline calls only these: a hook left out
    /// costs nothing per request (no boxed future, no unwind guard). The default, every
    /// hook, is always correct; narrow it when you implement few.
    fn hooks(&self) -> HookSet {
        HookSet::ALL
    }

    /// Before anything is sent, once per request (not per retry): validate, check limits,
    /// choose the route ([`Ctx::set_route`]), fallbacks, retries and timeouts, rewrite the
    /// request, or answer without calling a provider ([`Flow::Respond`], [`Flow::Replay`]).
    /// An error stops the request. Reading `req` is free; the first write to a chat request
    /// makes the provider encode it instead of forwarding the client's bytes
    /// ([`ChatInput`](sllmp_core::ChatInput)), except [`Request::set_model`].
    async fn on_request(&mut self, ctx: &mut Ctx, req: &mut Request) -> Result<Flow, Error> {
        let _ = (ctx, req);
        Ok(Flow::Continue)
    }

    /// Before each attempt of the provider call, on the request as `on_request` left it:
    /// re-route, add upstream headers, start an attempt span. A write makes this attempt's
    /// own copy ([`AttemptRequest`]), so every attempt starts from the same request.
    /// `req.model()` is still what the client wrote; [`Ctx::target`] is not yet set.
    async fn on_attempt(
        &mut self,
        ctx: &mut Ctx,
        req: &mut AttemptRequest<'_>,
    ) -> Result<(), Error> {
        let _ = (ctx, req);
        Ok(())
    }

    /// Chat only: each streamed chunk, before it is sent to the client. May rewrite it; an
    /// error ends the stream with an error frame.
    fn on_chunk(&mut self, ctx: &mut Ctx, chunk: &mut ChatChunk) -> Result<(), Error> {
        let _ = (ctx, chunk);
        Ok(())
    }

    /// Chat only: the final response, the provider's (rewritable) for non-streamed requests,
    /// or the one assembled from the chunks (read-only: they were sent) at the end of a stream.
    async fn on_response(&mut self, ctx: &mut Ctx, resp: ResponseView<'_>) -> Result<(), Error> {
        let _ = (ctx, resp);
        Ok(())
    }

    /// An error. While `window` is [`RetryWindow::Open`] (nothing has reached the client yet
    /// and the error came from an attempt), returning [`ErrorAction::Retry`] runs the attempt
    /// again on the same target, whatever the [`RetryPolicy`](crate::RetryPolicy) says;
    /// otherwise the answer is ignored and the hook only observes. Retries by policy and
    /// fallbacks need no hook: set them on the [`Ctx`].
    async fn on_error(&mut self, ctx: &mut Ctx, err: &Error, window: RetryWindow) -> ErrorAction {
        let _ = (ctx, err, window);
        ErrorAction::Propagate
    }

    /// Exactly once per request, whatever happened: success, error, short-circuit, or the
    /// client going away (even during a graceful shutdown: the server waits for it).
    /// Charge budgets and flush traces here.
    async fn on_complete(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) {
        let _ = (ctx, outcome);
    }
}

/// A set of [`Middleware`] hooks, for [`Middleware::hooks`].
///
/// ```
/// use sllmp_pipeline::HookSet;
///
/// let hooks = HookSet::REQUEST | HookSet::COMPLETE;
/// assert!(hooks.contains(HookSet::COMPLETE));
/// assert!(!hooks.contains(HookSet::CHUNK));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HookSet(u8);

impl HookSet {
    /// No hook.
    pub const NONE: HookSet = HookSet(0);
    /// `on_request`.
    pub const REQUEST: HookSet = HookSet(1);
    /// `on_attempt`.
    pub const ATTEMPT: HookSet = HookSet(1 << 1);
    /// `on_chunk`.
    pub const CHUNK: HookSet = HookSet(1 << 2);
    /// `on_response`.
    pub const RESPONSE: HookSet = HookSet(1 << 3);
    /// `on_error`.
    pub const ERROR: HookSet = HookSet(1 << 4);
    /// `on_complete`.
    pub const COMPLETE: HookSet = HookSet(1 << 5);
    /// Every hook.
    pub const ALL: HookSet = HookSet(0b11_1111);

    /// Whether every hook of `other` is in `self`.
    pub const fn contains(self, other: HookSet) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the hooks of `other` added (`|`, usable in `const`).
    pub const fn union(self, other: HookSet) -> HookSet {
        HookSet(self.0 | other.0)
    }
}

impl std::ops::BitOr for HookSet {
    type Output = HookSet;

    fn bitor(self, other: HookSet) -> HookSet {
        self.union(other)
    }
}

impl std::ops::BitOrAssign for HookSet {
    fn bitor_assign(&mut self, other: HookSet) {
        *self = self.union(other);
    }
}

impl std::fmt::Debug for HookSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [&str; 6] = [
            "on_request",
            "on_attempt",
            "on_chunk",
            "on_response",
            "on_error",
            "on_complete",
        ];
        f.debug_set()
            .entries(
                NAMES
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| self.0 & (1 << bit) != 0)
                    .map(|(_, name)| name),
            )
            .finish()
    }
}

/// What `on_request` decided.
// Moved once per request or chunk; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Flow {
    /// Go on to the next middleware and then the provider.
    Continue,
    /// Answer with this response and call no provider (a cache hit). The remaining
    /// `on_request`, `on_attempt`, `on_chunk` and `on_response` hooks are skipped;
    /// `on_complete` runs. A non-streaming client gets its bytes as they are (a
    /// [`Completion`] read with `from_json` keeps them); a streaming client receives a chat
    /// completion as chunks.
    Respond(Response),
    /// Answer a chat request with a recorded stream ([`Ctx::recorded_stream`]): each item
    /// is one chunk's JSON. A streaming client gets them as they are, one `data:` frame
    /// each (the usage chunk only if it asked for usage); a non-streaming client gets them
    /// assembled into one completion.
    Replay(Vec<Bytes>),
}

/// What `on_error` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// Let the error through (the default).
    Propagate,
    /// Run the attempt again after this delay. The first middleware (in reverse order) to
    /// ask for a retry wins; the pipeline caps the number of attempts.
    Retry {
        /// How long to wait first.
        after: Duration,
    },
}

/// Whether a retry is still possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryWindow {
    /// The error came from attempt number `attempt` (from 1) and nothing has reached the client.
    Open {
        /// The attempt that failed.
        attempt: u32,
    },
    /// A chunk has reached the client, or the error did not come from an attempt.
    Closed,
}

/// The response `on_response` sees.
#[derive(Debug)]
pub enum ResponseView<'a> {
    /// A non-streamed response, not yet sent: it may be rewritten (through
    /// [`DerefMut`](std::ops::DerefMut); reading alone keeps the provider's bytes, see
    /// [`Completion`]).
    Complete(&'a mut Completion),
    /// The response assembled from the chunks of a stream that was sent.
    Streamed(&'a ChatCompletion),
}

impl ResponseView<'_> {
    /// The response, read-only.
    pub fn response(&self) -> &ChatCompletion {
        match self {
            ResponseView::Complete(resp) => resp,
            ResponseView::Streamed(resp) => resp,
        }
    }
}

/// How a request ended, as `on_complete` sees it.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// The client received this response (assembled, for a stream; with the provider's
    /// bytes when it sent them and nothing changed them).
    Success(&'a Response),
    /// The client received this error (as an HTTP error, or as a stream's error frame).
    Failed(&'a Error),
    /// The client went away before the answer was complete.
    Cancelled,
}

impl Outcome<'_> {
    /// A stable label: `success`, `error` or `cancelled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success(_) => "success",
            Outcome::Failed(_) => "error",
            Outcome::Cancelled => "cancelled",
        }
    }
}
