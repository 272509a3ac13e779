//! The pipeline's guarantees, against a scripted provider: phase order, retries only before
//! the first chunk, `on_complete` exactly once (disconnects included), errors never swallowed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use sllmp_core::{
    Call, ChatChunk, ChatCompletion, ChatRequest, ChunkStream, Completion, EmbeddingsRequest,
    Error, ErrorKind, Message, Provider, ProviderRegistry, Request, Route, UpstreamRequest,
};
use sllmp_pipeline::{
    AttemptRequest, Ctx, ErrorAction, Flow, HookSet, Hooks, Middleware, Outcome, Output, Pipeline,
    ResponseView, Retry, RetryWindow, StreamItem, Validation,
};

#[allow(clippy::large_enum_variant)]
enum Script {
    Complete(ChatCompletion),
    Fail(Error),
    /// Items of a stream; when `hang` is set the stream never ends after them.
    Stream {
        items: Vec<Result<ChatChunk, Error>>,
        hang: bool,
    },
    /// Chunks, then a panic inside the provider's stream.
    StreamThenPanic(Vec<ChatChunk>),
    /// A non-streamed call that never answers.
    Hang,
}

#[derive(Default)]
struct Scripted {
    scripts: Mutex<VecDeque<Script>>,
    calls: Mutex<Vec<ChatRequest>>,
    /// The route of each call, `provider:model`.
    routes: Mutex<Vec<String>>,
    streams_dropped: Arc<AtomicUsize>,
}

struct Shared(Arc<Scripted>);

#[async_trait::async_trait]
impl Provider for Shared {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn chat(&self, call: &Call<'_>, req: &UpstreamRequest<'_>) -> Result<Completion, Error> {
        self.0.calls.lock().unwrap().push((**req).clone());
        self.0.routes.lock().unwrap().push(call.route.to_string());
        let script = self.0.scripts.lock().unwrap().pop_front();
        match script.expect("a script") {
            Script::Complete(resp) => Ok(resp.into()),
            Script::Fail(err) => Err(err),
            Script::Hang => {
                let _guard = DropCounter(Arc::clone(&self.0.streams_dropped));
                std::future::pending().await
            }
            _ => panic!("stream script for a non-stream call"),
        }
    }

    async fn chat_stream(
        &self,
        call: &Call<'_>,
        req: &UpstreamRequest<'_>,
    ) -> Result<ChunkStream, Error> {
        self.0.calls.lock().unwrap().push((**req).clone());
        self.0.routes.lock().unwrap().push(call.route.to_string());
        match self
            .0
            .scripts
            .lock()
            .unwrap()
            .pop_front()
            .expect("a script")
        {
            Script::Fail(err) => Err(err),
            Script::Stream { items, hang } => {
                let guard = DropCounter(Arc::clone(&self.0.streams_dropped));
                let head = futures_util::stream::iter(items);
                let stream = if hang {
                    head.chain(futures_util::stream::pending()).boxed()
                } else {
                    head.boxed()
                };
                Ok(stream
                    .map(move |item| {
                        let _keep = &guard;
                        item
                    })
                    .boxed())
            }
            Script::StreamThenPanic(chunks) => {
                let items = chunks.into_iter().map(Some).chain(std::iter::once(None));
                Ok(futures_util::stream::iter(items)
                    .map(|item| Ok(item.expect("a bug in the provider")))
                    .boxed())
            }
            Script::Complete(_) | Script::Hang => panic!("complete script for a stream call"),
        }
    }
}

struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn completion(text: &str) -> ChatCompletion {
    serde_json::from_value(json!({
        "id": "resp", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    }))
    .unwrap()
}

fn chunk(text: &str) -> ChatChunk {
    serde_json::from_value(json!({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]
    }))
    .unwrap()
}

fn usage_chunk() -> ChatChunk {
    serde_json::from_value(json!({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
        "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    }))
    .unwrap()
}

fn unavailable() -> Error {
    Error::new(
        ErrorKind::ProviderUnavailable,
        "scripted returned 503: busy",
    )
}

fn request(stream: bool) -> ChatRequest {
    ChatRequest {
        model: "scripted:m".into(),
        messages: vec![Message::new("user", "hello")],
        stream: stream.then_some(true),
        metadata: Some(json!({"feature": "x"}).as_object().unwrap().clone()),
        ..ChatRequest::default()
    }
}

type Log = Arc<Mutex<Vec<String>>>;

/// A middleware that logs every hook it sees as "<name>.<hook>".
fn recorder(name: &'static str, log: &Log) -> Hooks {
    let (l1, l2, l3, l4, l5, l6) = (
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
    );
    Hooks::new(name)
        .on_request(move |_, _| {
            l1.lock().unwrap().push(format!("{name}.request"));
            Ok(Flow::Continue)
        })
        .on_attempt(move |ctx, _| {
            l2.lock()
                .unwrap()
                .push(format!("{name}.attempt{}", ctx.attempt()));
            Ok(())
        })
        .on_chunk(move |_, _| {
            l3.lock().unwrap().push(format!("{name}.chunk"));
            Ok(())
        })
        .on_response(move |_, resp| {
            let kind = match resp {
                ResponseView::Complete(_) => "complete",
                ResponseView::Streamed(_) => "streamed",
            };
            l4.lock().unwrap().push(format!("{name}.response:{kind}"));
            Ok(())
        })
        .on_error(move |_, err, window| {
            let window = match window {
                RetryWindow::Open { attempt } => format!("open{attempt}"),
                RetryWindow::Closed => "closed".into(),
            };
            l5.lock()
                .unwrap()
                .push(format!("{name}.error:{}:{window}", err.kind().as_str()));
            ErrorAction::Propagate
        })
        .on_complete(move |_, outcome| {
            l6.lock()
                .unwrap()
                .push(format!("{name}.complete:{}", outcome.as_str()));
        })
}

struct Setup {
    provider: Arc<Scripted>,
    log: Log,
}

impl Setup {
    fn new(scripts: Vec<Script>) -> Setup {
        Setup {
            provider: Arc::new(Scripted {
                scripts: Mutex::new(scripts.into()),
                ..Scripted::default()
            }),
            log: Log::default(),
        }
    }

    fn pipeline(&self, req: &ChatRequest) -> Pipeline {
        let mut registry = ProviderRegistry::new();
        registry.insert("scripted", Arc::new(Shared(Arc::clone(&self.provider))));
        // The same script answers a second name, for fallbacks.
        registry.insert("backup", Arc::new(Shared(Arc::clone(&self.provider))));
        let ctx = Ctx::new("req_test", &Request::from(req.clone()), Arc::new(registry));
        let mut pipeline = Pipeline::new(ctx);
        pipeline.add(Validation);
        pipeline.add(recorder("a", &self.log));
        pipeline.add(recorder("b", &self.log));
        pipeline
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The log once the request completed: `on_complete` of a non-streamed request runs in a
    /// task of its own, after the answer is returned.
    async fn settled(&self) -> Vec<String> {
        for _ in 0..400 {
            if self.log().iter().any(|l| l.starts_with("a.complete")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.log()
    }

    fn calls(&self) -> usize {
        self.provider.calls.lock().unwrap().len()
    }
}

fn fast_retry() -> Retry {
    Retry::new().base_delay(Duration::from_millis(1))
}

async fn collect(stream: sllmp_pipeline::ResponseStream) -> Vec<String> {
    stream
        .map(|item| match item {
            StreamItem::Chunk(chunk) => serde_json::to_string(&chunk).unwrap(),
            StreamItem::Json(json) => String::from_utf8(json.to_vec()).unwrap(),
            StreamItem::Error(err) => format!("error: {}", err.message()),
        })
        .collect()
        .await
}

#[tokio::test]
async fn hooks_run_in_onion_order_and_complete_once() {
    let setup = Setup::new(vec![Script::Complete(completion("hi"))]);
    let req = request(false);
    let Output::Complete(resp) = setup.pipeline(&req).run(req).await.unwrap() else {
        panic!("expected a completion")
    };
    assert_eq!(resp.chat().unwrap().choices[0].message.text(), "hi");
    assert_eq!(
        setup.settled().await,
        [
            "a.request",
            "b.request",
            "a.attempt1",
            "b.attempt1",
            "b.response:complete",
            "a.response:complete",
            "b.complete:success",
            "a.complete:success"
        ]
    );
    // The provider saw its own model name and no client metadata.
    let sent = setup.provider.calls.lock().unwrap()[0].clone();
    assert_eq!(sent.model, "m");
    assert_eq!(sent.metadata, None);
}

#[tokio::test]
async fn an_attempt_hook_that_writes_changes_only_its_own_attempt() {
    let setup = Setup::new(vec![
        Script::Fail(unavailable()),
        Script::Complete(completion("hi")),
    ]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry());
    pipeline.add(Hooks::new("first_attempt_cold").on_attempt(|ctx, req| {
        if ctx.attempt() == 1 {
            req.chat_mut().unwrap().temperature = Some(0.0);
        }
        Ok(())
    }));
    pipeline.run(req).await.unwrap();
    let calls = setup.provider.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    // The first attempt sent the hook's copy; the second started from the request again.
    assert_eq!(calls[0].temperature, Some(0.0));
    assert_eq!(calls[1].temperature, None);
    for sent in &calls {
        assert_eq!(sent.model, "m");
        assert_eq!(sent.metadata, None);
        assert_eq!(sent.messages, [Message::new("user", "hello")]);
    }
}

#[tokio::test]
async fn retries_before_the_first_chunk() {
    let setup = Setup::new(vec![
        Script::Fail(unavailable()),
        Script::Stream {
            items: vec![Err(unavailable())],
            hang: false,
        },
        Script::Stream {
            items: vec![Ok(chunk("He")), Ok(chunk("llo")), Ok(usage_chunk())],
            hang: false,
        },
    ]);
    let req = request(true);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry());
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert_eq!(
        frames.len(),
        2,
        "the usage chunk the client did not ask for is dropped"
    );
    assert_eq!(setup.calls(), 3);
    // The provider was asked for usage although the client did not ask.
    let sent = setup.provider.calls.lock().unwrap()[2].clone();
    assert_eq!(sent.stream_options.unwrap().include_usage, Some(true));
    let log = setup.log();
    assert!(log.contains(&"a.error:provider_unavailable:open1".to_string()));
    assert!(log.contains(&"a.error:provider_unavailable:open2".to_string()));
    assert!(log.contains(&"a.attempt3".to_string()));
    assert_eq!(log.last().unwrap(), "a.complete:success");
}

#[tokio::test]
async fn never_retries_after_the_first_chunk() {
    let setup = Setup::new(vec![
        Script::Stream {
            items: vec![Ok(chunk("He")), Err(unavailable())],
            hang: false,
        },
        Script::Stream {
            items: vec![Ok(chunk("never"))],
            hang: false,
        },
    ]);
    let req = request(true);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry());
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[1], "error: scripted returned 503: busy");
    assert_eq!(setup.calls(), 1, "no second call once a chunk was sent");
    let log = setup.log();
    assert!(log.contains(&"a.error:provider_unavailable:closed".to_string()));
    assert_eq!(log.last().unwrap(), "a.complete:error");
}

#[tokio::test]
async fn retry_gives_up_after_max_retries_and_skips_non_retryable_errors() {
    let setup = Setup::new(vec![
        Script::Fail(unavailable()),
        Script::Fail(unavailable()),
        Script::Fail(unavailable()),
    ]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry().max_attempts(3));
    let err = pipeline.run(req).await.unwrap_err();
    assert_eq!(err.status(), 503);
    assert_eq!(setup.calls(), 3);

    let setup = Setup::new(vec![Script::Fail(Error::new(
        ErrorKind::ProviderBadRequest,
        "scripted returned 400: bad",
    ))]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry());
    let err = pipeline.run(req).await.unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(setup.calls(), 1);
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_stops_the_provider_and_completes_once() {
    let setup = Setup::new(vec![Script::Stream {
        items: vec![Ok(chunk("He"))],
        hang: true,
    }]);
    let req = request(true);
    let Output::Stream(mut stream) = setup.pipeline(&req).run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    assert!(matches!(stream.next().await, Some(StreamItem::Chunk(_))));
    drop(stream);
    for _ in 0..200 {
        if setup.log().last().map(String::as_str) == Some("a.complete:cancelled") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(setup.provider.streams_dropped.load(Ordering::SeqCst), 1);
    let completes: Vec<_> = setup
        .log()
        .into_iter()
        .filter(|l| l.contains("complete"))
        .collect();
    assert_eq!(completes, ["b.complete:cancelled", "a.complete:cancelled"]);
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_cancels_the_request() {
    let setup = Setup::new(vec![Script::Stream {
        items: vec![],
        hang: true,
    }]);
    let req = request(true);
    let running = setup.pipeline(&req).start(req);
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(running);
    for _ in 0..200 {
        if setup.log().last().map(String::as_str) == Some("a.complete:cancelled") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(setup.log().last().unwrap(), "a.complete:cancelled");
    assert_eq!(setup.provider.streams_dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_short_circuit_skips_the_provider_and_streams_as_chunks() {
    let setup = Setup::new(vec![]);
    let req = request(true);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(
        Hooks::new("cache")
            .on_request(|_, _| Ok(Flow::Respond(completion("cached answer").into()))),
    );
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert_eq!(frames.len(), 1 + 2 + 1);
    assert_eq!(setup.calls(), 0);
    assert_eq!(setup.log().last().unwrap(), "a.complete:success");
    assert!(!setup.log().iter().any(|l| l.contains("attempt")));
}

#[tokio::test]
async fn hook_errors_are_never_swallowed() {
    let setup = Setup::new(vec![Script::Complete(completion("hi"))]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(Hooks::new("strict").on_response(|_, _| {
        Err(Error::custom(
            422,
            "policy_error",
            Some("blocked"),
            "blocked by policy",
        ))
    }));
    let err = pipeline.run(req).await.unwrap_err();
    assert_eq!((err.status(), err.error_type()), (422, "policy_error"));
    assert_eq!(setup.settled().await.last().unwrap(), "a.complete:error");
    assert!(setup.log().contains(&"a.error:custom:closed".to_string()));
}

#[tokio::test]
async fn a_panicking_hook_becomes_an_internal_error_and_completion_still_runs() {
    let setup = Setup::new(vec![]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(Hooks::new("buggy").on_request(|_, _| panic!("bug")));
    let err = pipeline.run(req).await.unwrap_err();
    assert_eq!(err.status(), 500);
    assert_eq!(err.message(), "'buggy' panicked while handling the request");
    assert_eq!(setup.settled().await.last().unwrap(), "a.complete:error");
}

#[tokio::test]
async fn stream_usage_is_recorded_and_passed_on_only_when_asked() {
    let script = || Script::Stream {
        items: vec![Ok(chunk("Hi")), Ok(usage_chunk())],
        hang: false,
    };
    let setup = Setup::new(vec![script()]);
    let mut req = request(true);
    req.stream_options = Some(sllmp_core::StreamOptions {
        include_usage: Some(true),
        ..Default::default()
    });
    let usage_seen = Arc::new(Mutex::new(None));
    let seen = usage_seen.clone();
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(Hooks::new("usage").on_complete(move |ctx, _| {
        *seen.lock().unwrap() = ctx.usage().map(|u| u.total_tokens);
    }));
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert_eq!(frames.len(), 2);
    assert!(frames[1].contains(r#""choices":[],"usage":{"prompt_tokens":4"#));
    assert_eq!(*usage_seen.lock().unwrap(), Some(10));
}

#[tokio::test]
async fn an_unknown_provider_is_model_not_found() {
    let setup = Setup::new(vec![]);
    let mut req = request(false);
    req.model = "nope:m".into();
    let err = setup.pipeline(&req).run(req).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (404, Some("model_not_found")));
    assert_eq!(
        err.message(),
        "unknown provider 'nope' in model 'nope:m'; configured providers: backup, scripted"
    );
}

#[tokio::test]
async fn a_provider_stream_that_panics_ends_with_an_error_not_with_done() {
    let setup = Setup::new(vec![Script::StreamThenPanic(vec![chunk("He")])]);
    let req = request(true);
    let Output::Stream(stream) = setup.pipeline(&req).run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert_eq!(frames.len(), 2);
    assert_eq!(
        frames[1],
        "error: 'scripted' panicked while handling the request"
    );
    assert_eq!(setup.log().last().unwrap(), "a.complete:error");
}

#[tokio::test]
async fn hooks_rewrite_requests_chunks_and_responses() {
    // A stream: on_chunk rewrites each chunk; the client and the assembled response both see
    // the rewritten text.
    let setup = Setup::new(vec![Script::Stream {
        items: vec![Ok(chunk("he")), Ok(chunk("llo"))],
        hang: false,
    }]);
    let req = request(true);
    let assembled = Arc::new(Mutex::new(String::new()));
    let seen = assembled.clone();
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(
        Hooks::new("shout")
            .on_request(|_, req| {
                req.chat_mut().unwrap().temperature = Some(0.0);
                Ok(Flow::Continue)
            })
            .on_chunk(|_, chunk| {
                for choice in &mut chunk.choices {
                    choice.delta.content = choice.delta.content.as_ref().map(|c| c.to_uppercase());
                }
                Ok(())
            })
            .on_response(move |_, resp| {
                *seen.lock().unwrap() = resp.response().choices[0].message.text();
                Ok(())
            }),
    );
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert!(frames[0].contains(r#""content":"HE""#), "{frames:?}");
    assert_eq!(*assembled.lock().unwrap(), "HELLO");
    assert_eq!(
        setup.provider.calls.lock().unwrap()[0].temperature,
        Some(0.0)
    );

    // A non-streamed response rewritten in on_response reaches the client rewritten.
    let setup = Setup::new(vec![Script::Complete(completion("hi"))]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(Hooks::new("sign").on_response(|_, resp| {
        if let ResponseView::Complete(resp) = resp {
            resp.choices[0].message = Message::new("assistant", "hi (checked)");
        }
        Ok(())
    }));
    let Output::Complete(resp) = pipeline.run(req).await.unwrap() else {
        panic!("expected a completion")
    };
    assert_eq!(
        resp.chat().unwrap().choices[0].message.text(),
        "hi (checked)"
    );
}

#[tokio::test]
async fn a_client_that_leaves_a_non_streamed_request_cancels_it_and_completes_once() {
    let setup = Setup::new(vec![Script::Hang]);
    let req = request(false);
    let running = setup.pipeline(&req).start(req);
    // Poll the request until it reaches the provider, then drop it as a server would.
    let polled = tokio::time::timeout(Duration::from_millis(50), running).await;
    assert!(polled.is_err(), "the provider never answers");
    for _ in 0..200 {
        if setup.log().last().map(String::as_str) == Some("a.complete:cancelled") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let completes: Vec<_> = setup
        .log()
        .into_iter()
        .filter(|l| l.contains("complete"))
        .collect();
    assert_eq!(completes, ["b.complete:cancelled", "a.complete:cancelled"]);
    assert_eq!(
        setup.provider.streams_dropped.load(Ordering::SeqCst),
        1,
        "the provider call was dropped"
    );
}

/// Declares only `on_complete`, and logs "only.<hook>" from every hook: the pipeline must
/// call no other.
struct OnlyComplete(Log);

impl OnlyComplete {
    fn called(&self, hook: &str) {
        self.0.lock().unwrap().push(format!("only.{hook}"));
    }
}

#[async_trait::async_trait]
impl Middleware for OnlyComplete {
    fn name(&self) -> &'static str {
        "only_complete"
    }

    fn hooks(&self) -> HookSet {
        HookSet::COMPLETE
    }

    async fn on_request(&mut self, _: &mut Ctx, _: &mut Request) -> Result<Flow, Error> {
        self.called("request");
        Ok(Flow::Continue)
    }

    async fn on_attempt(&mut self, _: &mut Ctx, _: &mut AttemptRequest<'_>) -> Result<(), Error> {
        self.called("attempt");
        Ok(())
    }

    fn on_chunk(&mut self, _: &mut Ctx, _: &mut ChatChunk) -> Result<(), Error> {
        self.called("chunk");
        Ok(())
    }

    async fn on_response(&mut self, _: &mut Ctx, _: ResponseView<'_>) -> Result<(), Error> {
        self.called("response");
        Ok(())
    }

    async fn on_error(&mut self, _: &mut Ctx, _: &Error, _: RetryWindow) -> ErrorAction {
        self.called("error");
        ErrorAction::Propagate
    }

    async fn on_complete(&mut self, _: &Ctx, outcome: &Outcome<'_>) {
        self.called(&format!("complete:{}", outcome.as_str()));
    }
}

#[tokio::test]
async fn only_the_hooks_a_middleware_declares_are_called() {
    for (stream, scripts) in [
        (
            false,
            vec![
                Script::Fail(unavailable()),
                Script::Complete(completion("hi")),
            ],
        ),
        (
            true,
            vec![
                Script::Fail(unavailable()),
                Script::Stream {
                    items: vec![Ok(chunk("hi")), Ok(usage_chunk())],
                    hang: false,
                },
            ],
        ),
    ] {
        let setup = Setup::new(scripts);
        let req = request(stream);
        let mut pipeline = setup.pipeline(&req);
        pipeline.add(fast_retry());
        pipeline.add(OnlyComplete(Arc::clone(&setup.log)));
        match pipeline.run(req).await.unwrap() {
            Output::Complete(resp) => {
                assert_eq!(resp.chat().unwrap().choices[0].message.text(), "hi")
            }
            Output::Stream(stream) => assert_eq!(collect(stream).await.len(), 1),
        }
        let log = setup.settled().await;
        // Every hook ran for the recorders (a retry included), and only on_complete for it.
        assert!(log.contains(&"a.chunk".to_string()) == stream, "{log:?}");
        assert!(log.iter().any(|l| l.starts_with("a.error")), "{log:?}");
        let only: Vec<&String> = log.iter().filter(|l| l.starts_with("only.")).collect();
        assert_eq!(only, ["only.complete:success"], "stream: {stream}");
    }
}

#[test]
fn hooks_declare_the_closures_they_hold() {
    let hooks = Hooks::new("h")
        .on_request(|_, _| Ok(Flow::Continue))
        .on_complete(|_, _| {});
    assert_eq!(hooks.hooks(), HookSet::REQUEST | HookSet::COMPLETE);
    assert_eq!(
        format!("{:?}", hooks.hooks()),
        r#"{"on_request", "on_complete"}"#
    );
    assert_eq!(Hooks::new("none").hooks(), HookSet::NONE);
    assert!(HookSet::ALL.contains(HookSet::CHUNK | HookSet::ERROR));
}

fn routes(setup: &Setup) -> Vec<String> {
    setup.provider.routes.lock().unwrap().clone()
}

#[tokio::test]
async fn each_target_gets_its_retries_then_the_next_fallback_is_tried() {
    let setup = Setup::new(vec![
        Script::Fail(unavailable()),
        Script::Fail(unavailable()),
        Script::Fail(unavailable()),
        Script::Complete(completion("from the fallback")),
    ]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry().max_attempts(2));
    pipeline.add(sllmp_pipeline::Fallbacks::new([
        Route::new("backup", "b1"),
        Route::new("backup", "b2"),
    ]));
    let reply = pipeline.start(req).await;
    let Output::Complete(resp) = reply.result.unwrap() else {
        panic!("expected a completion")
    };
    assert_eq!(
        resp.chat().unwrap().choices[0].message.text(),
        "from the fallback"
    );
    // Two attempts at the request's target, then the first fallback's two (the second
    // succeeds): the second fallback is never needed.
    assert_eq!(
        routes(&setup),
        ["scripted:m", "scripted:m", "backup:b1", "backup:b1"]
    );
    assert_eq!(reply.route, Some(Route::new("backup", "b1")));
    let errors: Vec<_> = setup
        .log()
        .into_iter()
        .filter(|l| l.starts_with("a.error"))
        .collect();
    assert_eq!(
        errors,
        [
            "a.error:provider_unavailable:open1",
            "a.error:provider_unavailable:open2",
            "a.error:provider_unavailable:open3"
        ]
    );
}

#[tokio::test]
async fn a_request_error_is_neither_retried_nor_sent_to_a_fallback() {
    let setup = Setup::new(vec![Script::Fail(Error::new(
        ErrorKind::ProviderBadRequest,
        "scripted returned 400: bad",
    ))]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry());
    pipeline.add(sllmp_pipeline::Fallbacks::new([Route::new("backup", "b1")]));
    let reply = pipeline.start(req).await;
    assert_eq!(reply.result.unwrap_err().status(), 400);
    assert_eq!(routes(&setup), ["scripted:m"]);
    assert_eq!(reply.route, Some(Route::new("scripted", "m")));
}

#[tokio::test]
async fn a_route_set_by_a_middleware_replaces_the_model_without_touching_the_request() {
    let setup = Setup::new(vec![Script::Complete(completion("hi"))]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(Hooks::new("route").on_request(|ctx, req| {
        ctx.set_route(Route::new("backup", "gpt-x"));
        assert_eq!(req.model(), "scripted:m");
        Ok(Flow::Continue)
    }));
    pipeline.run(req).await.unwrap();
    assert_eq!(routes(&setup), ["backup:gpt-x"]);
    assert_eq!(setup.provider.calls.lock().unwrap()[0].model, "gpt-x");
}

#[tokio::test]
async fn a_retry_after_longer_than_max_delay_returns_the_error_at_once() {
    let setup = Setup::new(vec![Script::Fail(
        Error::new(
            ErrorKind::ProviderRateLimited,
            "scripted returned 429: slow down",
        )
        .with_retry_after(Duration::from_secs(60)),
    )]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry().max_delay(Duration::from_secs(5)));
    let started = std::time::Instant::now();
    let err = pipeline.run(req).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(err.status(), 429);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(setup.calls(), 1);
}

#[tokio::test]
async fn a_silent_stream_ends_with_a_timeout_frame() {
    let setup = Setup::new(vec![Script::Stream {
        items: vec![Ok(chunk("He"))],
        hang: true,
    }]);
    let req = request(true);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(sllmp_pipeline::SetTimeouts(sllmp_pipeline::Timeouts {
        first_token: Duration::from_millis(100),
        ..Default::default()
    }));
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(
        frames[1],
        "error: scripted did not send its next chunk within 100ms"
    );
    assert_eq!(setup.provider.streams_dropped.load(Ordering::SeqCst), 1);

    // The whole answer's limit ends a stream that is slow but never silent for long.
    let setup = Setup::new(vec![Script::Stream {
        items: vec![Ok(chunk("He"))],
        hang: true,
    }]);
    let req = request(true);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(sllmp_pipeline::SetTimeouts(sllmp_pipeline::Timeouts {
        first_token: Duration::from_secs(5),
        total: Duration::from_millis(150),
        ..Default::default()
    }));
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert_eq!(
        frames[1],
        "error: scripted did not send its whole answer within 150ms"
    );
}

#[tokio::test]
async fn a_first_chunk_that_never_comes_is_a_retryable_timeout() {
    let setup = Setup::new(vec![
        Script::Stream {
            items: vec![],
            hang: true,
        },
        Script::Stream {
            items: vec![Ok(chunk("late but here"))],
            hang: false,
        },
    ]);
    let req = request(true);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(fast_retry());
    pipeline.add(sllmp_pipeline::SetTimeouts(sllmp_pipeline::Timeouts {
        first_token: Duration::from_millis(100),
        ..Default::default()
    }));
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    let frames = collect(stream).await;
    assert!(frames[0].contains("late but here"), "{frames:?}");
    assert!(
        setup
            .log()
            .contains(&"a.error:provider_timeout:open1".to_string())
    );
}

/// A recorded stream replayed by a middleware reaches the client frame for frame as it was
/// sent the first time; a non-streaming client gets it assembled.
#[tokio::test]
async fn a_recorded_stream_is_replayed_as_it_was_sent() {
    let setup = Setup::new(vec![Script::Stream {
        items: vec![Ok(chunk("He")), Ok(chunk("llo")), Ok(usage_chunk())],
        hang: false,
    }]);
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let mut req = request(true);
    req.stream_options = Some(sllmp_core::StreamOptions {
        include_usage: Some(true),
        ..Default::default()
    });
    let mut pipeline = setup.pipeline(&req);
    let store = Arc::clone(&recorded);
    pipeline.add(
        Hooks::new("recorder")
            .on_request(|ctx, _| {
                ctx.record_stream();
                Ok(Flow::Continue)
            })
            .on_complete(move |ctx, _| {
                *store.lock().unwrap() = ctx.recorded_stream().to_vec();
            }),
    );
    let Output::Stream(stream) = pipeline.run(req.clone()).await.unwrap() else {
        panic!("expected a stream")
    };
    let first = collect(stream).await;
    for _ in 0..200 {
        if !recorded.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let frames = recorded.lock().unwrap().clone();
    assert_eq!(frames.len(), 3);

    // Replayed to a streaming client: the same frames, byte for byte.
    let mut pipeline = setup.pipeline(&req);
    let replay = frames.clone();
    pipeline.add(Hooks::new("cache").on_request(move |_, _| Ok(Flow::Replay(replay.clone()))));
    let Output::Stream(stream) = pipeline.run(req.clone()).await.unwrap() else {
        panic!("expected a stream")
    };
    assert_eq!(collect(stream).await, first);
    assert_eq!(setup.calls(), 1, "the replay called no provider");

    // A client that did not ask for usage does not get the usage chunk.
    let mut no_usage = req.clone();
    no_usage.stream_options = None;
    let mut pipeline = setup.pipeline(&no_usage);
    let replay = frames.clone();
    pipeline.add(Hooks::new("cache").on_request(move |_, _| Ok(Flow::Replay(replay.clone()))));
    let Output::Stream(stream) = pipeline.run(no_usage).await.unwrap() else {
        panic!("expected a stream")
    };
    assert_eq!(collect(stream).await, first[..2]);

    // A non-streaming client gets the stream assembled, with its usage.
    let plain = request(false);
    let mut pipeline = setup.pipeline(&plain);
    let replay = frames;
    let usage = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&usage);
    pipeline.add(
        Hooks::new("cache")
            .on_request(move |_, _| Ok(Flow::Replay(replay.clone())))
            .on_complete(move |ctx, _| *seen.lock().unwrap() = ctx.usage().cloned()),
    );
    let Output::Complete(resp) = pipeline.run(plain).await.unwrap() else {
        panic!("expected a completion")
    };
    assert_eq!(resp.chat().unwrap().choices[0].message.text(), "Hello");
    for _ in 0..200 {
        if usage.lock().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(usage.lock().unwrap().as_ref().unwrap().total_tokens, 10);
}

/// A short-circuit with a completion's bytes serves those very bytes.
#[tokio::test]
async fn a_short_circuit_with_bytes_serves_them_as_they_are() {
    let setup = Setup::new(vec![]);
    let req = request(false);
    let mut pipeline = setup.pipeline(&req);
    let stored = br#"{"id":"x", "object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"stored"},"finish_reason":"stop"}]}"#;
    pipeline.add(Hooks::new("cache").on_request(move |_, _| {
        let completion = Completion::from_json(bytes::Bytes::from_static(stored)).unwrap();
        Ok(Flow::Respond(completion.into()))
    }));
    let Output::Complete(resp) = pipeline.run(req).await.unwrap() else {
        panic!("expected a completion")
    };
    assert_eq!(resp.to_json(), stored.as_slice());
}

/// A client that leaves a non-streamed request after the provider was called has its usage
/// estimated for the completion hooks.
#[tokio::test]
async fn a_cancelled_request_gets_a_usage_estimate() {
    let setup = Setup::new(vec![Script::Hang]);
    let req = request(false);
    let usage = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&usage);
    let mut pipeline = setup.pipeline(&req);
    pipeline.add(Hooks::new("usage").on_complete(move |ctx, outcome| {
        *seen.lock().unwrap() = Some((
            outcome.as_str(),
            ctx.usage().map(|u| u.prompt_tokens),
            ctx.usage_is_estimated(),
        ));
    }));
    let running = pipeline.start(req);
    let _ = tokio::time::timeout(Duration::from_millis(50), running).await;
    for _ in 0..200 {
        if usage.lock().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // "hello" is two tokens, plus three for the message.
    assert_eq!(*usage.lock().unwrap(), Some(("cancelled", Some(5), true)));
}

/// A tracker counts the requests until their completion hooks ran; aborting it ends the
/// requests still running with a 503 (a stream with that error frame), hooks included.
#[tokio::test]
async fn the_tracker_waits_for_completions_and_aborts_what_outlives_a_shutdown() {
    let tracker = sllmp_pipeline::CompletionTracker::new();
    let setup = Setup::new(vec![Script::Stream {
        items: vec![Ok(chunk("He"))],
        hang: true,
    }]);
    let req = request(true);
    let mut pipeline = setup.pipeline(&req);
    pipeline.track(&tracker);
    let Output::Stream(stream) = pipeline.run(req).await.unwrap() else {
        panic!("expected a stream")
    };
    assert_eq!(tracker.active(), 1);
    assert!(!tracker.wait_idle(Duration::from_millis(50)).await);
    tracker.abort();
    let frames = collect(stream).await;
    assert_eq!(
        frames.last().unwrap(),
        "error: the server is shutting down; retry the request"
    );
    assert!(tracker.wait_idle(Duration::from_secs(2)).await);
    assert_eq!(tracker.active(), 0);
    assert_eq!(setup.log().last().unwrap(), "a.complete:error");
}

/// Embeddings go through the same pipeline; a provider that does not serve them says so.
#[tokio::test]
async fn embeddings_run_through_the_same_pipeline() {
    let setup = Setup::new(vec![]);
    let embeddings: EmbeddingsRequest =
        serde_json::from_value(json!({"model": "scripted:e", "input": "hi"})).unwrap();
    let req = Request::from(embeddings);
    let mut registry = ProviderRegistry::new();
    registry.insert("scripted", Arc::new(Shared(Arc::clone(&setup.provider))));
    let mut pipeline = Pipeline::new(Ctx::new("req_e", &req, Arc::new(registry)));
    pipeline.add(Validation);
    pipeline.add(recorder("a", &setup.log));
    let err = pipeline.run(req).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (400, Some("unsupported_operation"))
    );
    assert_eq!(
        err.message(),
        "provider 'scripted' does not serve embeddings (model 'scripted:e')"
    );
    let log = setup.settled().await;
    assert_eq!(log[..2], ["a.request", "a.attempt1"]);
    assert!(
        !log.iter().any(|l| l.contains("response")),
        "no chat-only hooks: {log:?}"
    );
}
