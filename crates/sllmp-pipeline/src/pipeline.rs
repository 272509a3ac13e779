//! [`Pipeline`]: one request's middleware, and the state machine that drives them.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use sllmp_core::{
    Call, ChatChunk, ChatCompletion, ChunkStream, Completion, Error, ErrorKind, Provider, Request,
    Response, Route, StreamAssembler, UpstreamRequest, Usage,
};
use tokio::sync::{mpsc, oneshot};

use crate::policy::random_unit;
use crate::tracker::{AbortSignal, Token};
use crate::{
    AttemptRequest, CompletionTracker, Ctx, ErrorAction, Flow, HookSet, Middleware, Outcome,
    ResponseView, RetryWindow,
};

/// Builds the pipeline of each request: the Python original's `pipeline_factory`.
///
/// It is called once per request, after the built-in validation middleware was added, and
/// adds the middleware this request needs. Any `Fn(&mut Pipeline)` closure is a factory.
/// A factory that also knows its providers and models (a configuration's `Gateway`)
/// says so through [`PipelineFactory::providers`] and [`PipelineFactory::models`], and a
/// server can then be built from it alone.
pub trait PipelineFactory: Send + Sync + 'static {
    /// Adds middleware to `pipeline`; [`Pipeline::ctx`] tells which request it is for.
    fn build(&self, pipeline: &mut Pipeline);

    /// The providers requests start with, if this factory has its own.
    fn providers(&self) -> Option<Arc<sllmp_core::ProviderRegistry>> {
        None
    }

    /// Models to list on `GET /v1/models` besides those the providers advertise.
    fn models(&self) -> Vec<sllmp_core::ModelInfo> {
        Vec::new()
    }
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
    /// The most attempts of the provider call one request may make, retries and fallbacks
    /// included.
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
/// use sllmp_core::{ChatCompletion, ChatRequest, Message, ProviderRegistry, Request};
/// use sllmp_pipeline::{Ctx, Flow, Hooks, Output, Pipeline};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let request = Request::from(ChatRequest {
///     model: "cache:any".into(),
///     messages: vec![Message::new("user", "hi")],
///     ..ChatRequest::default()
/// });
/// let ctx = Ctx::new("req_1", &request, Arc::new(ProviderRegistry::new()));
/// let mut pipeline = Pipeline::new(ctx);
/// // A middleware that answers without calling any provider.
/// pipeline.add(Hooks::new("canned").on_request(|_ctx, _req| {
///     let answer: ChatCompletion = serde_json::from_value(serde_json::json!({
///         "id": "canned", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}]
///     })).unwrap();
///     Ok(Flow::Respond(answer.into()))
/// }));
/// let Ok(Output::Complete(resp)) = pipeline.run(request).await else { panic!() };
/// assert_eq!(resp.chat().unwrap().choices[0].message.text(), "hello");
/// # }
/// ```
pub struct Pipeline {
    ctx: Ctx,
    middleware: Vec<Box<dyn Middleware>>,
    settings: Settings,
    token: Option<Token>,
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
            token: None,
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

    /// Counts this request in `tracker` until its `on_complete` hooks have run.
    pub fn track(&mut self, tracker: &CompletionTracker) {
        self.token = Some(tracker.enter());
    }

    /// Starts the request and returns a handle that resolves to the [`Reply`].
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
    /// `req` is a [`Request`] of any operation, or a chat request
    /// ([`ChatRequest`](sllmp_core::ChatRequest), or a [`ChatInput`](sllmp_core::ChatInput)
    /// that keeps the client's bytes for the provider to forward).
    pub fn start(self, req: impl Into<Request>) -> Running {
        let req = req.into();
        // Boxed once: it moves into the `on_complete` task as a pointer, not by copy.
        let driver = Box::new(Driver {
            ctx: self.ctx,
            middleware: self.middleware,
            settings: self.settings,
            completed: false,
            prompt_estimate: 0,
            _token: self.token,
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

    /// Runs the request and waits for the answer: [`Pipeline::start`], awaited, without the
    /// route.
    pub async fn run(self, req: impl Into<Request>) -> Result<Output, Error> {
        self.start(req).await.result
    }
}

/// What a pipeline answers: the result, and the route of the attempt that produced it (the
/// last one tried, on an error; `None` when no provider was called).
#[derive(Debug)]
pub struct Reply {
    /// The provider and model that answered (the server's `x-sllmp-model`).
    pub route: Option<Route>,
    /// Headers middleware set for the client's response ([`Ctx::response_headers_mut`]).
    pub headers: http::HeaderMap,
    /// The answer, or the error for the client.
    pub result: Result<Output, Error>,
}

/// The answer of a pipeline.
#[derive(Debug)]
pub enum Output {
    /// A non-streamed answer (shared with the `on_complete` hooks, which may still be
    /// running when the client receives it); [`Response::to_json`] is its body.
    Complete(Arc<Response>),
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
    /// A chunk for the client, already JSON (a replayed stream's, sent as recorded).
    Json(Bytes),
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
    Json(Bytes),
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
            Poll::Ready(Some(Frame::Json(json))) => Poll::Ready(Some(StreamItem::Json(json))),
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

/// A running pipeline; resolves to its [`Reply`]. Dropping it cancels the request.
pub struct Running {
    inner: RunningInner,
}

enum RunningInner {
    /// A stream, driven by a spawned task that sends its head here.
    Spawned(oneshot::Receiver<Reply>),
    /// A non-streamed request, driven by whoever polls the handle.
    Inline(Pin<Box<dyn Future<Output = Reply> + Send>>),
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
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        match &mut self.inner {
            RunningInner::Inline(future) => future.as_mut().poll(cx),
            RunningInner::Spawned(head_rx) => Pin::new(head_rx).poll(cx).map(|reply| {
                reply.unwrap_or_else(|_| Reply {
                    route: None,
                    headers: http::HeaderMap::new(),
                    result: Err(Error::internal(
                        "the request pipeline stopped without an answer",
                    )),
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
// Moved once per request; boxing the response would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Complete(Response),
    Stream {
        /// Boxed, like every chunk on its way to the client: a chunk is a few hundred bytes
        /// and the stream's task would otherwise keep room for it while the stream lasts.
        first: Option<Box<ChatChunk>>,
        rest: ChunkStream,
        /// When the attempt must be over.
        deadline: Instant,
    },
}

/// An answer given by a middleware instead of a provider.
enum ShortCircuit {
    Respond(Response),
    Replay(Vec<Bytes>),
}

/// Owns the middleware and drives one request through its phases.
struct Driver {
    ctx: Ctx,
    middleware: Vec<Box<dyn Middleware>>,
    settings: Settings,
    /// Whether `on_complete` ran (or is running); checked on drop.
    completed: bool,
    /// The request's estimated input tokens, for a request cancelled before any usage.
    prompt_estimate: u64,
    /// Counts the request in the server's tracker until the driver is dropped.
    _token: Option<Token>,
}

/// A driver dropped before its request completed belongs to a client that went away (the
/// future polling an inline request was dropped, or a task was aborted): its `on_complete`
/// hooks still run, with [`Outcome::Cancelled`], in a task of their own.
impl Drop for Driver {
    fn drop(&mut self) {
        if self.completed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut driver = self.hand_off();
        driver.estimate_cancelled_usage();
        runtime.spawn(async move { driver.complete(&Outcome::Cancelled).await });
    }
}

impl Driver {
    /// Moves the context, middleware and tracking token into a new driver, for
    /// `on_complete` in another task; `self` is left completed and empty.
    fn hand_off(&mut self) -> Driver {
        self.completed = true;
        Driver {
            ctx: std::mem::replace(&mut self.ctx, Ctx::detached()),
            middleware: std::mem::take(&mut self.middleware),
            settings: self.settings,
            // If its task never runs (the runtime is shutting down), dropping it must not
            // hand it off again.
            completed: true,
            prompt_estimate: self.prompt_estimate,
            _token: self._token.take(),
        }
    }

    /// A request the client left after a provider was called, with no usage reported: the
    /// provider billed its input at least.
    fn estimate_cancelled_usage(&mut self) {
        if self.ctx.usage.is_none() && self.ctx.attempt > 0 {
            self.ctx.usage = Some(Usage::new(self.prompt_estimate, 0));
            self.ctx.usage_estimated = true;
        }
    }

    /// Resolves when the server stops the requests still running at the end of a shutdown.
    fn abort_signal(&self) -> AbortSignal {
        self._token
            .as_ref()
            .map_or_else(AbortSignal::none, Token::abort_signal)
    }

    fn reply(&mut self, result: Result<Output, Error>) -> Reply {
        Reply {
            route: self.ctx.target.clone(),
            headers: self
                .ctx
                .response_headers
                .take()
                .map_or_else(http::HeaderMap::new, |headers| *headers),
            result,
        }
    }
}

/// How a request ended, owned, for completion in another task.
enum Ended {
    Success(Arc<Response>),
    Failed(Error),
}

type HeadSender = oneshot::Sender<Reply>;

impl Driver {
    /// A non-streamed request, in the caller's task; `on_complete` runs in a spawned task.
    async fn run_inline(mut self: Box<Self>, mut req: Request) -> Reply {
        let answer = self.answer_inline(&mut req).await;
        let ended = match &answer {
            Ok(response) => Ended::Success(Arc::clone(response)),
            Err(err) => Ended::Failed(err.clone()),
        };
        let reply = self.reply(answer.map(Output::Complete));
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
        reply
    }

    async fn answer_inline(&mut self, req: &mut Request) -> Result<Arc<Response>, Error> {
        match self.request_phase(req).await {
            Ok(Some(short)) => return self.short_circuit_complete(short).map(Arc::new),
            Ok(None) => {}
            Err(err) => {
                self.observe_error(&err).await;
                return Err(err);
            }
        }
        self.prompt_estimate = req.estimate_prompt_tokens();
        match self.attempt_loop(req, false, None).await {
            Ok(Answer::Complete(response)) => self.response_phase(response).await,
            Ok(Answer::Stream { .. }) | Err(Stop::Cancelled) => Err(Error::internal(
                "the pipeline lost track of a non-streamed request",
            )),
            Err(Stop::Error(err)) => Err(err),
        }
    }

    /// Usage, then (chat) `on_response` in reverse order, for a non-streamed response.
    async fn response_phase(&mut self, mut response: Response) -> Result<Arc<Response>, Error> {
        match response.usage() {
            Some(usage) => self.ctx.usage = Some(usage),
            None => {
                self.ctx.usage = Some(estimate_usage(self.prompt_estimate, &response));
                self.ctx.usage_estimated = true;
            }
        }
        if let Response::Chat(completion) = &mut response {
            let mut failed = None;
            for middleware in declaring(&mut self.middleware, HookSet::RESPONSE).rev() {
                let name = middleware.name();
                let result = guard(
                    name,
                    middleware.on_response(&mut self.ctx, ResponseView::Complete(completion)),
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
            Ok(Some(short)) => {
                Box::pin(self.respond_short_circuit(short, head)).await;
                return;
            }
            Ok(None) => {
                self.prompt_estimate = req.estimate_prompt_tokens();
                Box::pin(self.attempt_loop(&mut req, streaming, Some(&mut head))).await
            }
            Err(err) => {
                self.observe_error(&err).await;
                Err(Stop::Error(err))
            }
        };
        // The request is not needed any more, only its size (kept in `prompt_estimate`).
        drop(req);
        match answer {
            Ok(Answer::Complete(response)) => match Box::pin(self.response_phase(response)).await {
                Ok(response) => {
                    let reply = self.reply(Ok(Output::Complete(Arc::clone(&response))));
                    if head.send(reply).is_err() {
                        return self.complete(&Outcome::Cancelled).await;
                    }
                    self.complete(&Outcome::Success(&response)).await
                }
                Err(err) => {
                    let _ = head.send(self.reply(Err(err.clone())));
                    self.complete(&Outcome::Failed(&err)).await
                }
            },
            Ok(Answer::Stream {
                first,
                rest,
                deadline,
            }) => Box::pin(self.stream(first, rest, deadline, head)).await,
            Err(Stop::Error(err)) => {
                let _ = head.send(self.reply(Err(err.clone())));
                self.complete(&Outcome::Failed(&err)).await;
            }
            Err(Stop::Cancelled) => {
                self.estimate_cancelled_usage();
                self.complete(&Outcome::Cancelled).await
            }
        }
    }

    /// `on_request`, in order. `Some` is a middleware's own answer.
    async fn request_phase(&mut self, req: &mut Request) -> Result<Option<ShortCircuit>, Error> {
        for middleware in declaring(&mut self.middleware, HookSet::REQUEST) {
            let name = middleware.name();
            let flow = guard(name, middleware.on_request(&mut self.ctx, req)).await??;
            match flow {
                Flow::Continue => {}
                Flow::Respond(response) => return Ok(Some(ShortCircuit::Respond(response))),
                Flow::Replay(frames) => return Ok(Some(ShortCircuit::Replay(frames))),
            }
        }
        Ok(None)
    }

    /// A middleware's answer for a non-streaming client: the response as it is, or a
    /// replayed stream assembled.
    fn short_circuit_complete(&mut self, short: ShortCircuit) -> Result<Response, Error> {
        self.ctx.short_circuited = true;
        let response = match short {
            ShortCircuit::Respond(response) => response,
            ShortCircuit::Replay(frames) => {
                let mut assembler = StreamAssembler::default();
                for chunk in replayed_chunks(&frames)? {
                    assembler.push(&chunk);
                }
                Response::Chat(Completion::new(assembler.finish()))
            }
        };
        self.ctx.usage = response.usage();
        Ok(response)
    }

    /// A middleware's answer for a streaming client (a non-streamed request never gets
    /// here: it runs inline, [`Driver::answer_inline`]).
    async fn respond_short_circuit(&mut self, short: ShortCircuit, head: HeadSender) {
        self.ctx.short_circuited = true;
        let wants_usage = self.ctx.wants_stream_usage();
        // Every frame is read before the head goes out: a broken recording is an error, not
        // half a stream.
        let frames: Vec<Frame> = match short {
            ShortCircuit::Respond(Response::Chat(completion)) => completion
                .to_chunks(wants_usage)
                .into_iter()
                .map(|chunk| Frame::Chunk(Box::new(chunk)))
                .collect(),
            ShortCircuit::Respond(other) => {
                let err = Error::internal(format!(
                    "a middleware answered a stream with a {} response",
                    other.operation().as_str()
                ));
                let _ = head.send(self.reply(Err(err.clone())));
                return self.complete(&Outcome::Failed(&err)).await;
            }
            ShortCircuit::Replay(recorded) => match replayed_chunks(&recorded) {
                Ok(chunks) => chunks
                    .into_iter()
                    .zip(recorded)
                    .filter_map(|(chunk, json)| replay_frame(chunk, json, wants_usage))
                    .collect(),
                Err(err) => {
                    let _ = head.send(self.reply(Err(err.clone())));
                    return self.complete(&Outcome::Failed(&err)).await;
                }
            },
        };
        let (tx, rx) = mpsc::channel(self.settings.stream_buffer);
        if head
            .send(self.reply(Ok(Output::Stream(ResponseStream::new(rx)))))
            .is_err()
        {
            return self.complete(&Outcome::Cancelled).await;
        }
        let mut assembler = StreamAssembler::default();
        for frame in frames {
            match &frame {
                Frame::Chunk(chunk) => assembler.push(chunk),
                Frame::Json(json) => {
                    if let Ok(chunk) = ChatChunk::from_json(&String::from_utf8_lossy(json)) {
                        assembler.push(&chunk);
                    }
                }
                Frame::Error(_) | Frame::End => {}
            }
            if tx.send(frame).await.is_err() {
                return self.complete(&Outcome::Cancelled).await;
            }
        }
        let _ = tx.send(Frame::End).await;
        self.ctx.usage = assembler.usage().cloned();
        let response = Response::Chat(Completion::new(assembler.finish()));
        self.complete(&Outcome::Success(&response)).await;
    }

    /// Attempts the provider call until it succeeds, the retry policy and the fallbacks are
    /// spent, a middleware stops retrying, the cap is reached, or the client leaves. For
    /// streams, success means the first chunk arrived.
    async fn attempt_loop(
        &mut self,
        base: &mut Request,
        streaming: bool,
        mut head: Option<&mut HeadSender>,
    ) -> Result<Answer, Stop> {
        // Attempts at the current target (the request's own, or a fallback).
        let mut at_target = 0;
        let abort = self.abort_signal();
        let aborted = abort.wait();
        tokio::pin!(aborted);
        loop {
            self.ctx.attempt += 1;
            at_target += 1;
            let attempt = self.ctx.attempt;
            let result = tokio::select! {
                biased;
                _ = closed(&mut head) => return Err(Stop::Cancelled),
                () = &mut aborted => return Err(Stop::Error(shutting_down())),
                result = self.attempt(base, streaming) => result,
            };
            let err = match result {
                Ok(answer) => return Ok(answer),
                Err(err) => err,
            };
            let action = self.on_error(&err, RetryWindow::Open { attempt }).await;
            if attempt >= self.settings.max_attempts {
                return Err(Stop::Error(err));
            }
            let policy = *self.ctx.retry_policy();
            let wait = match action {
                ErrorAction::Retry { after } => Some(after),
                ErrorAction::Propagate if err.is_retryable() && at_target < policy.max_attempts => {
                    policy.delay(at_target, err.retry_after(), random_unit())
                }
                ErrorAction::Propagate => None,
            };
            if let Some(after) = wait {
                tracing::debug!(
                    request_id = self.ctx.request_id(),
                    attempt,
                    delay_ms = after.as_millis() as u64,
                    error = err.message(),
                    "retrying the provider call"
                );
                tokio::select! {
                    biased;
                    _ = closed(&mut head) => return Err(Stop::Cancelled),
                    () = &mut aborted => return Err(Stop::Error(shutting_down())),
                    _ = tokio::time::sleep(after) => {}
                }
                continue;
            }
            if err.is_retryable() && self.ctx.fallback_index < self.ctx.fallbacks().len() {
                self.ctx.fallback_index += 1;
                at_target = 0;
                tracing::info!(
                    request_id = self.ctx.request_id(),
                    failed = %self.ctx.target().map(ToString::to_string).unwrap_or_default(),
                    next = %self.ctx.fallbacks()[self.ctx.fallback_index - 1],
                    error = err.message(),
                    "falling back to the next model"
                );
                continue;
            }
            return Err(Stop::Error(err));
        }
    }

    /// The route of the next attempt: the current fallback's, the one a middleware chose,
    /// or the request's model.
    fn next_route(&self, model: &str) -> Result<Route, Error> {
        match self.ctx.fallback_index {
            0 => match self.ctx.route() {
                Some(route) => Ok(route.clone()),
                None => self.ctx.providers().route(model),
            },
            n => Ok(self.ctx.fallbacks()[n - 1].clone()),
        }
    }

    /// One attempt: `on_attempt` hooks, routing, the provider call within the timeouts. The
    /// provider borrows the request itself unless a hook wrote to it ([`AttemptRequest`]).
    async fn attempt(&mut self, base: &mut Request, streaming: bool) -> Result<Answer, Error> {
        let mut view = AttemptRequest::new(base);
        for middleware in declaring(&mut self.middleware, HookSet::ATTEMPT) {
            let name = middleware.name();
            guard(name, middleware.on_attempt(&mut self.ctx, &mut view)).await??;
        }
        let copy = view.into_copy();
        let model = copy.as_ref().map_or(base.model(), |copy| copy.model());
        let route = self.next_route(model)?;
        let provider = Arc::clone(self.ctx.providers().provider(&route)?);
        self.ctx.target = Some(route.clone());
        let mut copied;
        let req = match copy {
            Some(copy) => {
                copied = copy;
                &mut *copied
            }
            None => base,
        };
        let started = Instant::now();
        let timeouts = *self.ctx.timeouts();
        let deadline = started + timeouts.total;
        let call = Call {
            route: &route,
            request_id: self.ctx.request_id(),
            deadline: Some(deadline),
            first_token: Some(timeouts.first_token),
            connect_timeout: Some(timeouts.connect),
            headers: self.ctx.upstream_headers(),
            client_headers: self.ctx.headers(),
        };
        let answer = match req {
            Request::Chat(chat) => {
                // Routing changes a few fields of the request itself for this call; the
                // guard puts them back when dropped (the call cancelled included), so a
                // retry starts from the request as `on_request` left it.
                let routed = chat.route(route.model().to_string(), streaming);
                call_chat(&provider, &call, &routed.upstream(), streaming).await
            }
            Request::Embeddings(embeddings) => {
                let mut routed = embeddings.clone();
                routed.model = route.model().to_string();
                routed.metadata = None;
                let embed = async {
                    guard(provider.name(), provider.embeddings(&call, &routed))
                        .await?
                        .map(|answer| Answer::Complete(Response::Embeddings(answer)))
                };
                if provider.enforces_deadlines() {
                    embed.await
                } else {
                    within(&call, "an answer", timeouts.total, embed).await
                }
            }
        };
        let now = Instant::now();
        self.ctx.provider_time += now - started;
        if let Ok(Answer::Stream { .. }) = &answer {
            self.ctx.first_chunk_at = Some(now);
        }
        answer
    }

    async fn stream(
        &mut self,
        first: Option<Box<ChatChunk>>,
        mut rest: ChunkStream,
        deadline: Instant,
        head: HeadSender,
    ) {
        let (tx, rx) = mpsc::channel(self.settings.stream_buffer);
        if head
            .send(self.reply(Ok(Output::Stream(ResponseStream::new(rx)))))
            .is_err()
        {
            drop(rest);
            self.estimate_cancelled_usage();
            return self.complete(&Outcome::Cancelled).await;
        }
        let client_wants_usage = self.ctx.wants_stream_usage();
        let record = self.ctx.records_stream();
        let provider = self
            .ctx
            .target()
            .map_or_else(String::new, |t| t.provider().to_string());
        let silence = self.ctx.timeouts().first_token;
        let total = self.ctx.timeouts().total;
        let mut assembler = StreamAssembler::default();
        let mut next = first;
        // The longest wait for the next chunk: the first-token limit, or the deadline.
        let mut waited_from = Instant::now();
        let idle = tokio::time::sleep_until((waited_from + silence).min(deadline).into());
        tokio::pin!(idle);
        let abort = self.abort_signal();
        let aborted = abort.wait();
        tokio::pin!(aborted);
        let ended: Result<(), Stop> = loop {
            let mut chunk = match next.take() {
                Some(chunk) => chunk,
                None => {
                    let item = tokio::select! {
                        biased;
                        _ = tx.closed() => break Err(Stop::Cancelled),
                        () = &mut aborted => break Err(Stop::Error(shutting_down())),
                        item = guard(&provider, rest.next()) => item.unwrap_or_else(|panic| Some(Err(panic))),
                        () = &mut idle => {
                            break Err(Stop::Error(if Instant::now() >= deadline {
                                timeout_error(&provider, "its whole answer", total)
                            } else {
                                timeout_error(&provider, "its next chunk", silence)
                            }))
                        }
                    };
                    let now = Instant::now();
                    self.ctx.provider_time += now - waited_from;
                    waited_from = now;
                    idle.as_mut().reset((now + silence).min(deadline).into());
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
            if record {
                self.ctx.recorded.push(Bytes::from(
                    serde_json::to_vec(&*chunk).expect("a chunk serializes"),
                ));
            }
            if !client_wants_usage {
                if chunk.choices.is_empty() && chunk.usage().is_some() {
                    continue;
                }
                chunk.usage = None;
            }
            let sent = tokio::select! {
                biased;
                sent = tx.send(Frame::Chunk(chunk)) => sent.is_ok(),
                () = &mut aborted => break Err(Stop::Error(shutting_down())),
            };
            if !sent {
                break Err(Stop::Cancelled);
            }
        };
        // Stop the upstream call before anything else: the client is done with it.
        drop(rest);
        self.ctx.usage = Some(assembler.usage_or_estimate(self.prompt_estimate));
        self.ctx.usage_estimated = assembler.usage().is_none();
        let response = Response::Chat(Completion::new(assembler.finish()));
        let ended = match ended {
            Ok(()) => self.stream_response(&response).await.map_err(Stop::Error),
            other => other,
        };
        match ended {
            Ok(()) => {
                deliver(&tx, Frame::End, &abort).await;
                drop(tx);
                self.complete(&Outcome::Success(&response)).await;
            }
            Err(Stop::Error(err)) => {
                self.ctx.recorded.clear();
                self.observe_error(&err).await;
                deliver(&tx, Frame::Error(err.clone()), &abort).await;
                drop(tx);
                self.complete(&Outcome::Failed(&err)).await;
            }
            Err(Stop::Cancelled) => {
                self.ctx.recorded.clear();
                self.complete(&Outcome::Cancelled).await
            }
        }
    }

    async fn stream_response(&mut self, response: &Response) -> Result<(), Error> {
        let Some(completion) = response.chat() else {
            return Ok(());
        };
        for middleware in declaring(&mut self.middleware, HookSet::RESPONSE).rev() {
            let name = middleware.name();
            guard(
                name,
                middleware.on_response(&mut self.ctx, ResponseView::Streamed(completion)),
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

/// One chat call within the attempt's limits: for a stream, the call and its first chunk
/// within the first-token limit; otherwise the whole answer by the deadline (the provider
/// bounds the response head by the first-token limit itself, [`Call::head_timeout`]).
async fn call_chat(
    provider: &Arc<dyn Provider>,
    call: &Call<'_>,
    req: &UpstreamRequest<'_>,
    streaming: bool,
) -> Result<Answer, Error> {
    let name = provider.name();
    let deadline = call.deadline.unwrap_or_else(far_future);
    if streaming {
        let first_token = call.first_token.unwrap_or(Duration::MAX);
        within(call, "its first chunk", first_token, async {
            let mut rest = guard(name, provider.chat_stream(call, req)).await??;
            let first = match guard(name, rest.next()).await? {
                Some(first) => Some(Box::new(first?)),
                None => None,
            };
            Ok(Answer::Stream {
                first,
                rest,
                deadline,
            })
        })
        .await
    } else if provider.enforces_deadlines() {
        Ok(Answer::Complete(Response::Chat(
            guard(name, provider.chat(call, req)).await??,
        )))
    } else {
        let total = deadline.saturating_duration_since(Instant::now());
        within(call, "an answer", total, async {
            Ok(Answer::Complete(Response::Chat(
                guard(name, provider.chat(call, req)).await??,
            )))
        })
        .await
    }
}

/// Runs `future` for at most `limit` (and never past the call's deadline); over it, a
/// `provider_timeout` naming what did not arrive.
async fn within<T>(
    call: &Call<'_>,
    what: &str,
    limit: Duration,
    future: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let now = Instant::now();
    let deadline = call.deadline.unwrap_or_else(far_future);
    let until = now.checked_add(limit).unwrap_or(deadline).min(deadline);
    match tokio::time::timeout_at(until.into(), future).await {
        Ok(result) => result,
        Err(_) => Err(timeout_error(call.route.provider(), what, until - now)),
    }
}

/// Sends the last frame of a stream, unless the server stops the request first (a client
/// that does not read must not hold a shutdown up).
async fn deliver(tx: &mpsc::Sender<Frame>, frame: Frame, abort: &AbortSignal) {
    tokio::select! {
        biased;
        _ = tx.send(frame) => {}
        () = abort.wait() => {}
    }
}

/// The error of a request the server stopped at the end of a shutdown's grace period.
fn shutting_down() -> Error {
    Error::custom(
        503,
        "service_unavailable_error",
        Some("server_shutting_down"),
        "the server is shutting down; retry the request",
    )
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// The error of a time limit: 504 `timeout_error` `provider_timeout`, retryable.
fn timeout_error(provider: &str, what: &str, limit: Duration) -> Error {
    Error::new(
        ErrorKind::ProviderTimeout,
        format!(
            "{provider} did not send {what} within {}",
            format_duration(limit)
        ),
    )
    .with_provider(provider)
}

/// `250ms`, `5s`, `1.5s`, `2m`.
fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

/// The chunks of a recorded stream; one that is not a chunk is an internal error (the
/// recording is the proxy's own).
fn replayed_chunks(frames: &[Bytes]) -> Result<Vec<ChatChunk>, Error> {
    frames
        .iter()
        .map(|json| {
            std::str::from_utf8(json)
                .ok()
                .and_then(|text| ChatChunk::from_json(text).ok())
                .ok_or_else(|| {
                    Error::internal("a replayed stream holds a frame that is not a chunk")
                })
        })
        .collect()
}

/// A recorded chunk as the client should get it: as recorded, or without the usage the
/// client did not ask for.
fn replay_frame(mut chunk: ChatChunk, json: Bytes, wants_usage: bool) -> Option<Frame> {
    if wants_usage || chunk.usage().is_none() {
        return Some(Frame::Json(json));
    }
    if chunk.choices.is_empty() {
        return None;
    }
    chunk.usage = None;
    Some(Frame::Chunk(Box::new(chunk)))
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
fn estimate_usage(prompt_tokens: u64, response: &Response) -> Usage {
    let completion = match response {
        Response::Chat(completion) => chat_output_tokens(completion),
        _ => 0,
    };
    Usage::new(prompt_tokens, completion)
}

fn chat_output_tokens(completion: &ChatCompletion) -> u64 {
    completion
        .choices
        .iter()
        .map(|c| (c.message.text_len() as u64).div_ceil(4))
        .sum()
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
        let req = Request::from(sllmp_core::ChatRequest::default());
        let ctx = Ctx::new("r", &req, Arc::new(sllmp_core::ProviderRegistry::new()));
        let mut driver = Driver {
            ctx,
            middleware: Vec::new(),
            settings: Settings::default(),
            completed: true,
            prompt_estimate: 0,
            _token: None,
        };
        let (head, _head_rx) = oneshot::channel();
        let drive = Box::new(driver.hand_off()).drive(Box::new(req), head);
        assert!(
            std::mem::size_of_val(&drive) <= 1536,
            "{}",
            std::mem::size_of_val(&drive)
        );
        let (head, _head_rx) = oneshot::channel();
        let rest: ChunkStream = Box::pin(futures_util::stream::empty());
        let stream = driver.stream(None, rest, Instant::now(), head);
        assert!(
            std::mem::size_of_val(&stream) <= 1536,
            "{}",
            std::mem::size_of_val(&stream)
        );
    }

    #[test]
    fn durations_read_as_configured() {
        let cases = [
            (250, "250ms"),
            (5000, "5s"),
            (1500, "1.5s"),
            (120_000, "2m"),
        ];
        for (ms, text) in cases {
            assert_eq!(format_duration(Duration::from_millis(ms)), text);
        }
    }
}
