//! [`Pipeline`]: one request's middleware, and the state machine that drives them.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{FutureExt, StreamExt};
use sllmp_core::{
    ChatChunk, ChatCompletion, ChatRequest, ChunkStream, Completion, Error, Provider, Request,
    StreamAssembler, UpstreamRequest, Usage, estimate_prompt_tokens, estimate_tokens,
};
use tokio::sync::{mpsc, oneshot};

use crate::ctx::TargetInfo;
use crate::{
    AttemptRequest, Ctx, ErrorAction, Flow, HookSet, Middleware, Outcome, ResponseView, RetryWindow,
};

/// Builds the pipeline of each request: the Python original's `pipeline_factory`.
///
/// It is called once per request, after the built-in validation middleware was added, and
/// adds the middleware this request needs. Any `Fn(&mut Pipeline)` closure is a factory.
pub trait PipelineFactory: Send + Sync + 'static {
    /// Adds middleware to `pipeline`; [`Pipeline::ctx`] tells which request it is for.
    fn build(&self, pipeline: &mut Pipeline);
}

impl<F> PipelineFactory for F
where
    F: Fn(&mut Pipeline) + Send + Sync + 'static,
{
    fn build(&self, pipeline: &mut Pipeline) {
        self(pipeline)
    }
}

/// Limits the pipeline enforces whatever its middleware ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The most attempts of the provider call one request may make, retries included.
    pub max_attempts: u32,
    /// Chunks buffered between the pipeline and a slow client; when full, reading from the
    /// provider waits (back-pressure).
    pub stream_buffer: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_attempts: 10,
            stream_buffer: 16,
        }
    }
}

/// One request's pipeline: its [`Ctx`] and its middleware, in order.
///
/// ```
/// use std::sync::Arc;
/// use sllmp_core::{ChatRequest, Message, ProviderRegistry};
/// use sllmp_pipeline::{Ctx, Flow, Hooks, Output, Pipeline};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let request = ChatRequest {
///     model: "cache:any".into(),
///     messages: vec![Message::new("user", "hi")],
///     ..ChatRequest::default()
/// };
/// let ctx = Ctx::new("req_1", &request, Arc::new(ProviderRegistry::new()));
/// let mut pipeline = Pipeline::new(ctx);
/// // A middleware that answers without calling any provider.
/// pipeline.add(Hooks::new("canned").on_request(|_ctx, _req| {
///     Ok(Flow::Respond(serde_json::from_value(serde_json::json!({
///         "id": "canned", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}]
///     })).unwrap()))
/// }));
/// let Ok(Output::Complete(resp)) = pipeline.run(request).await else { panic!() };
/// assert_eq!(resp.choices[0].message.text(), "hello");
/// # }
/// ```
pub struct Pipeline {
    ctx: Ctx,
    middleware: Vec<Box<dyn Middleware>>,
    settings: Settings,
}

impl Pipeline {
    /// An empty pipeline for the request `ctx` describes.
    pub fn new(ctx: Ctx) -> Pipeline {
        Pipeline {
            ctx,
            // Room for a typical pipeline without growing (a configured feature adds about
            // five, besides validation).
            middleware: Vec::with_capacity(8),
            settings: Settings::default(),
        }
    }

    /// Adds a middleware after those already added.
    pub fn add(&mut self, middleware: impl Middleware) -> &mut Pipeline {
        self.middleware.push(Box::new(middleware));
        self
    }

    /// Adds a boxed middleware after those already added.
    pub fn add_boxed(&mut self, middleware: Box<dyn Middleware>) -> &mut Pipeline {
        self.middleware.push(middleware);
        self
    }

    /// The request's context.
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// The request's context, mutably.
    pub fn ctx_mut(&mut self) -> &mut Ctx {
        &mut self.ctx
    }

    /// The names of the middleware, in order.
    pub fn middleware_names(&self) -> Vec<&'static str> {
        self.middleware.iter().map(|m| m.name()).collect()
    }

    /// Replaces the pipeline's [`Settings`].
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Starts the request and returns a handle that resolves to the answer.
    ///
    /// A non-streamed request runs in the task that polls the handle (no hand-off between
    /// tasks on the way to the answer); its `on_complete` hooks then run in a spawned task, so
    /// the answer is not delayed by them. A stream runs in a spawned task that feeds the
    /// [`ResponseStream`].
    ///
    /// Dropping the handle, or the [`ResponseStream`] it yields, before the answer is complete
    /// means the client went away: the provider call is stopped and `on_complete` runs with
    /// [`Outcome::Cancelled`]. Must be called within a tokio runtime.
    ///
    /// `req` is a [`ChatRequest`], or a [`Request`] that keeps the client's bytes for the
    /// provider to forward ([`Request::from_json`]).
    pub fn start(self, req: impl Into<Request>) -> Running {
        let req = req.into();
        // Boxed once: it moves into the `on_complete` task as a pointer, not by copy.
        let driver = Box::new(Driver {
            ctx: self.ctx,
            middleware: self.middleware,
            settings: self.settings,
            completed: false,
        });
        if req.is_stream() {
            let (head_tx, head_rx) = oneshot::channel();
            // Boxed: an async fn keeps its arguments for its whole life, and this one lives
            // as long as the stream.
            tokio::spawn(driver.drive(Box::new(req), head_tx));
            Running {
                inner: RunningInner::Spawned(head_rx),
            }
        } else {
            Running {
                inner: RunningInner::Inline(Box::pin(driver.run_inline(req))),
            }
        }
    }

    /// Runs the request and waits for the answer: [`Pipeline::start`], awaited.
    pub async fn run(self, req: impl Into<Request>) -> Result<Output, Error> {
        self.start(req).await
    }
}

/// The answer of a pipeline.
// Moved once per request or chunk; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Output {
    /// A non-streamed completion (shared with the `on_complete` hooks, which may still be
    /// running when the client receives it); [`Completion::to_json`] is its body.
    Complete(Arc<Completion>),
    /// A stream of chunks; the first is already in hand.
    Stream(ResponseStream),
}

/// One item of a [`ResponseStream`].
// Moved once per request or chunk; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum StreamItem {
    /// A chunk for the client.
    Chunk(ChatChunk),
    /// An error after chunks were sent; it is the last item.
    Error(Error),
}

/// The chunks of a streamed answer. The stream ends after the last chunk (the server then
/// writes `data: [DONE]`) or after an [`StreamItem::Error`]. Dropping it stops the request.
///
/// A stream that stops without the pipeline saying it is complete (a bug, a panic) ends with
/// an internal error, never with what would look like a complete answer.
#[derive(Debug)]
pub struct ResponseStream {
    rx: mpsc::Receiver<Frame>,
    finished: bool,
}

/// What the pipeline task sends down a stream. Chunks are boxed: a channel allocates its
/// slots 32 at a time, and an open stream should not hold 32 chunks' worth of memory.
#[derive(Debug)]
enum Frame {
    Chunk(Box<ChatChunk>),
    Error(Error),
    /// The stream is complete: every chunk was sent.
    End,
}

impl ResponseStream {
    fn new(rx: mpsc::Receiver<Frame>) -> ResponseStream {
        ResponseStream {
            rx,
            finished: false,
        }
    }
}

impl futures_util::Stream for ResponseStream {
    type Item = StreamItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamItem>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Frame::Chunk(chunk))) => Poll::Ready(Some(StreamItem::Chunk(*chunk))),
            Poll::Ready(Some(Frame::Error(err))) => {
                self.finished = true;
                Poll::Ready(Some(StreamItem::Error(err)))
            }
            Poll::Ready(Some(Frame::End)) => {
                self.finished = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(Some(StreamItem::Error(Error::internal(
                    "the response stream stopped unexpectedly",
                ))))
            }
        }
    }
}

/// A running pipeline; resolves to its answer. Dropping it cancels the request.
pub struct Running {
    inner: RunningInner,
}

enum RunningInner {
    /// A stream, driven by a spawned task that sends its head here.
    Spawned(oneshot::Receiver<Result<Output, Error>>),
    /// A non-streamed request, driven by whoever polls the handle.
    Inline(Pin<Box<dyn Future<Output = Result<Output, Error>> + Send>>),
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            RunningInner::Spawned(_) => "stream",
            RunningInner::Inline(_) => "complete",
        };
        f.debug_struct("Running").field("kind", &kind).finish()
    }
}

impl Future for Running {
    type Output = Result<Output, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            RunningInner::Inline(future) => future.as_mut().poll(cx),
            RunningInner::Spawned(head_rx) => Pin::new(head_rx).poll(cx).map(|answer| {
                answer.unwrap_or_else(|_| {
                    Err(Error::internal(
                        "the request pipeline stopped without an answer",
                    ))
                })
            }),
        }
    }
}

/// How a phase failed: with an error for the client, or because the client left.
enum Stop {
    Error(Error),
    Cancelled,
}

impl From<Error> for Stop {
    fn from(err: Error) -> Stop {
        Stop::Error(err)
    }
}

/// What an attempt produced.
// Moved once per request; boxing the completion would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Complete(Completion),
    Stream {
        /// Boxed, like every chunk on its way to the client: a chunk is a few hundred bytes
        /// and the stream's task would otherwise keep room for it while the stream lasts.
        first: Option<Box<ChatChunk>>,
        rest: ChunkStream,
    },
}

/// Owns the middleware and drives one request through its phases.
struct Driver {
    ctx: Ctx,
    middleware: Vec<Box<dyn Middleware>>,
    settings: Settings,
    /// Whether `on_complete` ran (or is running); checked on drop.
    completed: bool,
}

/// A driver dropped before its request completed belongs to a client that went away (the
/// future polling an inline request was dropped, or a task was aborted): its `on_complete`
/// hooks still run, with [`Outcome::Cancelled`], in a task of their own.
impl Drop for Driver {
    fn drop(&mut self) {
        if self.completed || self.middleware.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut driver = self.hand_off();
        runtime.spawn(async move { driver.complete(&Outcome::Cancelled).await });
    }
}

impl Driver {
    /// Moves the context and middleware into a new driver, for `on_complete` in another task;
    /// `self` is left completed and empty.
    fn hand_off(&mut self) -> Driver {
        self.completed = true;
        Driver {
            ctx: std::mem::replace(&mut self.ctx, Ctx::detached()),
            middleware: std::mem::take(&mut self.middleware),
            settings: self.settings,
            // If its task never runs (the runtime is shutting down), dropping it must not
            // hand it off again.
            completed: true,
        }
    }
}

/// How a request ended, owned, for completion in another task.
enum Ended {
    Success(Arc<Completion>),
    Failed(Error),
}

type HeadSender = oneshot::Sender<Result<Output, Error>>;

impl Driver {
    /// A non-streamed request, in the caller's task; `on_complete` runs in a spawned task.
    async fn run_inline(mut self: Box<Self>, mut req: Request) -> Result<Output, Error> {
        let answer = self.answer_inline(&mut req).await;
        let ended = match &answer {
            Ok(response) => Ended::Success(Arc::clone(response)),
            Err(err) => Ended::Failed(err.clone()),
        };
        // The driver itself moves to the task (no empty one is left behind); if the task
        // never runs (the runtime is shutting down), dropping it must not hand it off again.
        let mut driver = self;
        driver.completed = true;
        tokio::spawn(async move {
            let outcome = match &ended {
                Ended::Success(response) => Outcome::Success(response),
                Ended::Failed(err) => Outcome::Failed(err),
            };
            driver.complete(&outcome).await;
        });
        answer.map(Output::Complete)
    }

    async fn answer_inline(&mut self, req: &mut Request) -> Result<Arc<Completion>, Error> {
        match self.request_phase(req).await {
            Ok(Some(response)) => {
                self.ctx.usage = response.usage.clone();
                return Ok(Arc::new(Completion::new(response)));
            }
            Ok(None) => {}
            Err(err) => {
                self.observe_error(&err).await;
                return Err(err);
            }
        }
        match self.attempt_loop(req, false, None).await {
            Ok(Answer::Complete(response)) => self.response_phase(req, response).await,
            Ok(Answer::Stream { .. }) | Err(Stop::Cancelled) => Err(Error::internal(
                "the pipeline lost track of a non-streamed request",
            )),
            Err(Stop::Error(err)) => Err(err),
        }
    }

    /// Usage, then `on_response` in reverse order, for a non-streamed response.
    async fn response_phase(
        &mut self,
        req: &ChatRequest,
        mut response: Completion,
    ) -> Result<Arc<Completion>, Error> {
        match &response.usage {
            Some(usage) => self.ctx.usage = Some(usage.clone()),
            None => {
                self.ctx.usage = Some(estimate_usage(req, &response));
                self.ctx.usage_estimated = true;
            }
        }
        let mut failed = None;
        for middleware in declaring(&mut self.middleware, HookSet::RESPONSE).rev() {
            let name = middleware.name();
            let result = guard(
                name,
                middleware.on_response(&mut self.ctx, ResponseView::Complete(&mut response)),
            )
            .await;
            if let Err(err) = result.and_then(|r| r) {
                failed = Some(err);
                break;
            }
        }
        if let Some(err) = failed {
            self.observe_error(&err).await;
            return Err(err);
        }
        Ok(Arc::new(response))
    }

    /// A stream, in a spawned task: the head goes back through `head`, chunks through the
    /// [`ResponseStream`].
    ///
    /// The phases are boxed: this task lives as long as the stream, and its future would
    /// otherwise be as large as all phases together, for every open stream.
    async fn drive(mut self: Box<Self>, mut req: Box<Request>, mut head: HeadSender) {
        let streaming = req.is_stream();
        let answer = match Box::pin(self.request_phase(&mut req)).await {
            Ok(Some(response)) => {
                Box::pin(self.respond_short_circuit(response, streaming, head)).await;
                return;
            }
            Ok(None) => Box::pin(self.attempt_loop(&mut req, streaming, Some(&mut head))).await,
            Err(err) => {
                self.observe_error(&err).await;
                Err(Stop::Error(err))
            }
        };
        match answer {
            Ok(Answer::Complete(response)) => {
                match Box::pin(self.response_phase(&req, response)).await {
                    Ok(response) => {
                        if head
                            .send(Ok(Output::Complete(Arc::clone(&response))))
                            .is_err()
                        {
                            return self.complete(&Outcome::Cancelled).await;
                        }
                        self.complete(&Outcome::Success(&response)).await
                    }
                    Err(err) => {
                        let _ = head.send(Err(err.clone()));
                        self.complete(&Outcome::Failed(&err)).await
                    }
                }
            }
            Ok(Answer::Stream { first, rest }) => {
                // The request is not needed while the stream runs, only its size.
                let prompt_tokens = estimate_prompt_tokens(&req);
                drop(req);
                Box::pin(self.stream(prompt_tokens, first, rest, head)).await
            }
            Err(Stop::Error(err)) => {
                let _ = head.send(Err(err.clone()));
                self.complete(&Outcome::Failed(&err)).await;
            }
            Err(Stop::Cancelled) => self.complete(&Outcome::Cancelled).await,
        }
    }

    /// `on_request`, in order. `Some` is a short-circuit response.
    async fn request_phase(&mut self, req: &mut Request) -> Result<Option<ChatCompletion>, Error> {
        for middleware in declaring(&mut self.middleware, HookSet::REQUEST) {
            let name = middleware.name();
            let flow = guard(name, middleware.on_request(&mut self.ctx, req)).await??;
            if let Flow::Respond(response) = flow {
                return Ok(Some(response));
            }
        }
        Ok(None)
    }

    async fn respond_short_circuit(
        &mut self,
        response: ChatCompletion,
        streaming: bool,
        head: HeadSender,
    ) {
        self.ctx.usage = response.usage.clone();
        if streaming {
            let (tx, rx) = mpsc::channel(self.settings.stream_buffer);
            if head
                .send(Ok(Output::Stream(ResponseStream::new(rx))))
                .is_err()
            {
                return self.complete(&Outcome::Cancelled).await;
            }
            for chunk in response.to_chunks(self.ctx.wants_stream_usage()) {
                if tx.send(Frame::Chunk(Box::new(chunk))).await.is_err() {
                    return self.complete(&Outcome::Cancelled).await;
                }
            }
            let _ = tx.send(Frame::End).await;
        } else {
            // The response leaves with the head; on_complete sees the same value.
            let response = Arc::new(Completion::new(response));
            if head
                .send(Ok(Output::Complete(Arc::clone(&response))))
                .is_err()
            {
                return self.complete(&Outcome::Cancelled).await;
            }
            return self.complete(&Outcome::Success(&response)).await;
        }
        self.complete(&Outcome::Success(&response)).await;
    }

    /// Attempts the provider call until it succeeds, a middleware stops retrying, the cap is
    /// reached, or the client leaves. For streams, success means the first chunk arrived.
    async fn attempt_loop(
        &mut self,
        base: &mut Request,
        streaming: bool,
        mut head: Option<&mut HeadSender>,
    ) -> Result<Answer, Stop> {
        loop {
            self.ctx.attempt += 1;
            let attempt = self.ctx.attempt;
            let result = tokio::select! {
                biased;
                _ = closed(&mut head) => return Err(Stop::Cancelled),
                result = self.attempt(base, streaming) => result,
            };
            let err = match result {
                Ok(answer) => return Ok(answer),
                Err(err) => err,
            };
            let action = self.on_error(&err, RetryWindow::Open { attempt }).await;
            match action {
                ErrorAction::Retry { after } if attempt < self.settings.max_attempts => {
                    tokio::select! {
                        biased;
                        _ = closed(&mut head) => return Err(Stop::Cancelled),
                        _ = tokio::time::sleep(after) => {}
                    }
                }
                _ => return Err(Stop::Error(err)),
            }
        }
    }

    /// One attempt: `on_attempt` hooks, routing, the provider call. The provider borrows
    /// the request itself unless a hook wrote to it ([`AttemptRequest`]).
    async fn attempt(&mut self, base: &mut Request, streaming: bool) -> Result<Answer, Error> {
        let mut view = AttemptRequest::new(base);
        for middleware in declaring(&mut self.middleware, HookSet::ATTEMPT) {
            let name = middleware.name();
            guard(name, middleware.on_attempt(&mut self.ctx, &mut view)).await??;
        }
        let copy = view.into_copy();
        let model = copy.as_ref().map_or(&base.model, |copy| &copy.model);
        let target = self.ctx.providers().resolve(model)?;
        self.ctx.target = Some(TargetInfo {
            provider: target.provider_name.clone(),
            model: target.model.clone(),
        });
        let provider = target.provider;
        let provider_name = target.provider_name;
        let mut copied;
        let req = match copy {
            Some(copy) => {
                copied = Box::new(Request::new(*copy));
                &mut *copied
            }
            None => base,
        };
        // Routing changes a few fields of the request itself for this call; the guard puts
        // them back when dropped (the call cancelled included), so a retry starts from the
        // request as `on_request` left it.
        let routed = req.route(target.model, streaming);
        self.call(&provider, &provider_name, &routed.upstream(), streaming)
            .await
    }

    async fn call(
        &mut self,
        provider: &Arc<dyn Provider>,
        provider_name: &str,
        req: &UpstreamRequest<'_>,
        streaming: bool,
    ) -> Result<Answer, Error> {
        if streaming {
            let mut rest = guard(provider_name, provider.chat_stream(req)).await??;
            let first = match guard(provider_name, rest.next()).await? {
                Some(first) => Some(Box::new(first?)),
                None => None,
            };
            self.ctx.first_chunk_at = Some(std::time::Instant::now());
            Ok(Answer::Stream { first, rest })
        } else {
            Ok(Answer::Complete(
                guard(provider_name, provider.chat(req)).await??,
            ))
        }
    }

    async fn stream(
        &mut self,
        prompt_tokens: u64,
        first: Option<Box<ChatChunk>>,
        mut rest: ChunkStream,
        head: HeadSender,
    ) {
        let (tx, rx) = mpsc::channel(self.settings.stream_buffer);
        if head
            .send(Ok(Output::Stream(ResponseStream::new(rx))))
            .is_err()
        {
            drop(rest);
            return self.complete(&Outcome::Cancelled).await;
        }
        let client_wants_usage = self.ctx.wants_stream_usage();
        let provider = self
            .ctx
            .target()
            .map_or_else(String::new, |t| t.provider.clone());
        let mut assembler = StreamAssembler::default();
        let mut next = first;
        let ended: Result<(), Stop> = loop {
            let mut chunk = match next.take() {
                Some(chunk) => chunk,
                None => {
                    let item = tokio::select! {
                        biased;
                        _ = tx.closed() => break Err(Stop::Cancelled),
                        item = guard(&provider, rest.next()) => item.unwrap_or_else(|panic| Some(Err(panic))),
                    };
                    match item {
                        None => break Ok(()),
                        Some(Err(err)) => break Err(Stop::Error(err)),
                        Some(Ok(chunk)) => Box::new(chunk),
                    }
                }
            };
            if let Err(err) = self.on_chunk(&mut chunk) {
                break Err(Stop::Error(err));
            }
            assembler.push(&chunk);
            if !client_wants_usage {
                if chunk.choices.is_empty() && chunk.usage().is_some() {
                    continue;
                }
                chunk.usage = None;
            }
            if tx.send(Frame::Chunk(chunk)).await.is_err() {
                break Err(Stop::Cancelled);
            }
        };
        // Stop the upstream call before anything else: the client is done with it.
        drop(rest);
        self.ctx.usage = Some(assembler.usage_or_estimate(prompt_tokens));
        self.ctx.usage_estimated = assembler.usage().is_none();
        let response = assembler.finish();
        let ended = match ended {
            Ok(()) => self.stream_response(&response).await.map_err(Stop::Error),
            other => other,
        };
        match ended {
            Ok(()) => {
                let _ = tx.send(Frame::End).await;
                drop(tx);
                self.complete(&Outcome::Success(&response)).await;
            }
            Err(Stop::Error(err)) => {
                self.observe_error(&err).await;
                let _ = tx.send(Frame::Error(err.clone())).await;
                drop(tx);
                self.complete(&Outcome::Failed(&err)).await;
            }
            Err(Stop::Cancelled) => self.complete(&Outcome::Cancelled).await,
        }
    }

    async fn stream_response(&mut self, response: &ChatCompletion) -> Result<(), Error> {
        for middleware in declaring(&mut self.middleware, HookSet::RESPONSE).rev() {
            let name = middleware.name();
            guard(
                name,
                middleware.on_response(&mut self.ctx, ResponseView::Streamed(response)),
            )
            .await??;
        }
        Ok(())
    }

    fn on_chunk(&mut self, chunk: &mut ChatChunk) -> Result<(), Error> {
        for middleware in declaring(&mut self.middleware, HookSet::CHUNK).rev() {
            let name = middleware.name();
            let ctx = &mut self.ctx;
            std::panic::catch_unwind(AssertUnwindSafe(|| middleware.on_chunk(ctx, chunk)))
                .map_err(|_| panicked(name))??;
        }
        Ok(())
    }

    /// `on_error` in reverse order; the first `Retry` wins, but every middleware sees the error.
    async fn on_error(&mut self, err: &Error, window: RetryWindow) -> ErrorAction {
        let mut decision = ErrorAction::Propagate;
        for middleware in declaring(&mut self.middleware, HookSet::ERROR).rev() {
            let name = middleware.name();
            let action = match guard(name, middleware.on_error(&mut self.ctx, err, window)).await {
                Ok(action) => action,
                Err(panic) => {
                    tracing::error!(
                        request_id = self.ctx.request_id(),
                        middleware = name,
                        error = panic.message(),
                        "on_error panicked; the error propagates"
                    );
                    ErrorAction::Propagate
                }
            };
            if decision == ErrorAction::Propagate && window != RetryWindow::Closed {
                decision = action;
            }
        }
        decision
    }

    /// Lets every middleware see an error no retry can fix.
    async fn observe_error(&mut self, err: &Error) {
        self.on_error(err, RetryWindow::Closed).await;
    }

    /// `on_complete` in reverse order, exactly once.
    async fn complete(&mut self, outcome: &Outcome<'_>) {
        self.completed = true;
        for middleware in declaring(&mut self.middleware, HookSet::COMPLETE).rev() {
            let name = middleware.name();
            if guard(name, middleware.on_complete(&self.ctx, outcome))
                .await
                .is_err()
            {
                tracing::error!(
                    request_id = self.ctx.request_id(),
                    middleware = name,
                    "on_complete panicked"
                );
            }
        }
    }
}

/// Resolves when the client dropped the handle; never when there is no handle to watch (an
/// inline request is cancelled by dropping its future instead).
async fn closed(head: &mut Option<&mut HeadSender>) {
    match head {
        Some(head) => head.closed().await,
        None => std::future::pending().await,
    }
}

/// The middleware that declare `hook` ([`Middleware::hooks`]), in the order they were added;
/// the others are never called for it.
fn declaring(
    middleware: &mut [Box<dyn Middleware>],
    hook: HookSet,
) -> impl DoubleEndedIterator<Item = &mut Box<dyn Middleware>> {
    middleware
        .iter_mut()
        .filter(move |m| m.hooks().contains(hook))
}

/// Runs a hook or provider future, turning a panic into an internal error.
async fn guard<F: Future>(name: &str, future: F) -> Result<F::Output, Error> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|_| panicked(name))
}

fn panicked(name: &str) -> Error {
    Error::internal(format!("'{name}' panicked while handling the request"))
}

/// Usage for a response that reported none.
fn estimate_usage(req: &ChatRequest, response: &ChatCompletion) -> Usage {
    let completion = response
        .choices
        .iter()
        .map(|c| estimate_tokens(&c.message.text()))
        .sum();
    Usage::new(estimate_prompt_tokens(req), completion)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open stream keeps its task's future, the boxed stream phase and the boxed driver
    /// for as long as it lasts: 1 000 streams multiply them by 1 000. The bounds are loose
    /// (compilers change layouts) but catch a phase that stops being boxed (the unboxed
    /// future was 4.5 KiB).
    #[test]
    fn an_open_stream_holds_small_futures() {
        let req = ChatRequest::default();
        let ctx = Ctx::new("r", &req, Arc::new(sllmp_core::ProviderRegistry::new()));
        let mut driver = Driver {
            ctx,
            middleware: Vec::new(),
            settings: Settings::default(),
            completed: true,
        };
        let (head, _head_rx) = oneshot::channel();
        let drive = Box::new(driver.hand_off()).drive(Box::new(req.into()), head);
        assert!(
            std::mem::size_of_val(&drive) <= 1536,
            "{}",
            std::mem::size_of_val(&drive)
        );
        let (head, _head_rx) = oneshot::channel();
        let rest: ChunkStream = Box::pin(futures_util::stream::empty());
        let stream = driver.stream(0, None, rest, head);
        assert!(
            std::mem::size_of_val(&stream) <= 1536,
            "{}",
            std::mem::size_of_val(&stream)
        );
    }
}
