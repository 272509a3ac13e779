//! [`Hooks`]: a middleware made of closures, for small jobs and tests.

use sllmp_core::{ChatChunk, Error, Request};

use crate::{
    AttemptRequest, Ctx, ErrorAction, Flow, HookSet, Middleware, Outcome, ResponseView, RetryWindow,
};

type RequestHook = Box<dyn FnMut(&mut Ctx, &mut Request) -> Result<Flow, Error> + Send>;
type AttemptHook = Box<dyn FnMut(&mut Ctx, &mut AttemptRequest<'_>) -> Result<(), Error> + Send>;
type ChunkHook = Box<dyn FnMut(&mut Ctx, &mut ChatChunk) -> Result<(), Error> + Send>;
type ResponseHook = Box<dyn FnMut(&mut Ctx, ResponseView<'_>) -> Result<(), Error> + Send>;
type ErrorHook = Box<dyn FnMut(&mut Ctx, &Error, RetryWindow) -> ErrorAction + Send>;
type CompleteHook = Box<dyn FnMut(&Ctx, &Outcome<'_>) + Send>;

/// A [`Middleware`] built from closures, one per hook you need: the Rust spelling of the
/// Python original's `ctx.pipeline.llm_call.add_pre(...)` / `add_post(...)`.
///
/// The closures are synchronous; for a hook that awaits (Redis, HTTP), implement
/// [`Middleware`] instead.
///
/// ```
/// use sllmp_pipeline::{Hooks, Outcome, Pipeline};
///
/// fn custom_middleware(pipeline: &mut Pipeline) {
///     pipeline.add(
///         Hooks::new("custom")
///             .on_attempt(|_ctx, req| {
///                 println!("Processing request to {}", req.model());
///                 Ok(())
///             })
///             .on_complete(|ctx, outcome| {
///                 println!("Request completed for {}: {}", ctx.request_id(), outcome.as_str());
///             }),
///     );
/// }
/// ```
#[derive(Default)]
pub struct Hooks {
    name: &'static str,
    request: Option<RequestHook>,
    attempt: Option<AttemptHook>,
    chunk: Option<ChunkHook>,
    response: Option<ResponseHook>,
    error: Option<ErrorHook>,
    complete: Option<CompleteHook>,
}

impl Hooks {
    /// A middleware called `name` with no hooks yet.
    pub fn new(name: &'static str) -> Hooks {
        Hooks {
            name,
            ..Hooks::default()
        }
    }

    /// Sets the `on_request` hook.
    pub fn on_request(
        mut self,
        hook: impl FnMut(&mut Ctx, &mut Request) -> Result<Flow, Error> + Send + 'static,
    ) -> Hooks {
        self.request = Some(Box::new(hook));
        self
    }

    /// Sets the `on_attempt` hook (before each provider call).
    pub fn on_attempt(
        mut self,
        hook: impl FnMut(&mut Ctx, &mut AttemptRequest<'_>) -> Result<(), Error> + Send + 'static,
    ) -> Hooks {
        self.attempt = Some(Box::new(hook));
        self
    }

    /// Sets the `on_chunk` hook.
    pub fn on_chunk(
        mut self,
        hook: impl FnMut(&mut Ctx, &mut ChatChunk) -> Result<(), Error> + Send + 'static,
    ) -> Hooks {
        self.chunk = Some(Box::new(hook));
        self
    }

    /// Sets the `on_response` hook.
    pub fn on_response(
        mut self,
        hook: impl FnMut(&mut Ctx, ResponseView<'_>) -> Result<(), Error> + Send + 'static,
    ) -> Hooks {
        self.response = Some(Box::new(hook));
        self
    }

    /// Sets the `on_error` hook.
    pub fn on_error(
        mut self,
        hook: impl FnMut(&mut Ctx, &Error, RetryWindow) -> ErrorAction + Send + 'static,
    ) -> Hooks {
        self.error = Some(Box::new(hook));
        self
    }

    /// Sets the `on_complete` hook.
    pub fn on_complete(mut self, hook: impl FnMut(&Ctx, &Outcome<'_>) + Send + 'static) -> Hooks {
        self.complete = Some(Box::new(hook));
        self
    }
}

#[async_trait::async_trait]
impl Middleware for Hooks {
    fn name(&self) -> &'static str {
        self.name
    }

    fn hooks(&self) -> HookSet {
        let mut hooks = HookSet::NONE;
        let set = [
            (self.request.is_some(), HookSet::REQUEST),
            (self.attempt.is_some(), HookSet::ATTEMPT),
            (self.chunk.is_some(), HookSet::CHUNK),
            (self.response.is_some(), HookSet::RESPONSE),
            (self.error.is_some(), HookSet::ERROR),
            (self.complete.is_some(), HookSet::COMPLETE),
        ];
        for (present, hook) in set {
            if present {
                hooks |= hook;
            }
        }
        hooks
    }

    async fn on_request(&mut self, ctx: &mut Ctx, req: &mut Request) -> Result<Flow, Error> {
        match &mut self.request {
            Some(hook) => hook(ctx, req),
            None => Ok(Flow::Continue),
        }
    }

    async fn on_attempt(
        &mut self,
        ctx: &mut Ctx,
        req: &mut AttemptRequest<'_>,
    ) -> Result<(), Error> {
        match &mut self.attempt {
            Some(hook) => hook(ctx, req),
            None => Ok(()),
        }
    }

    fn on_chunk(&mut self, ctx: &mut Ctx, chunk: &mut ChatChunk) -> Result<(), Error> {
        match &mut self.chunk {
            Some(hook) => hook(ctx, chunk),
            None => Ok(()),
        }
    }

    async fn on_response(&mut self, ctx: &mut Ctx, resp: ResponseView<'_>) -> Result<(), Error> {
        match &mut self.response {
            Some(hook) => hook(ctx, resp),
            None => Ok(()),
        }
    }

    async fn on_error(&mut self, ctx: &mut Ctx, err: &Error, window: RetryWindow) -> ErrorAction {
        match &mut self.error {
            Some(hook) => hook(ctx, err, window),
            None => ErrorAction::Propagate,
        }
    }

    async fn on_complete(&mut self, ctx: &Ctx, outcome: &Outcome<'_>) {
        if let Some(hook) = &mut self.complete {
            hook(ctx, outcome)
        }
    }
}
